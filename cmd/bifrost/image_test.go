package main

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestDockerfileBuildsLikeMakeStatic: the image is built by the same
// command as `make static`, which is run natively and checked to give a
// static binary (no container engine needs to run for that check), and the
// image runs that binary on scratch as a user other than root, with /data
// as a volume and the ports of docs/deploy.md exposed.
func TestDockerfileBuildsLikeMakeStatic(t *testing.T) {
	read := func(path string) string {
		t.Helper()
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	dockerfile, makefile := read("../../Dockerfile"), read("../../Makefile")
	buildArgs := regexp.MustCompile(`(?:go|\$\(GO\)) build (.*) -o \S+ (\./cmd/bifrost)`)
	inImage := buildArgs.FindStringSubmatch(dockerfile)
	native := buildArgs.FindStringSubmatch(makefile)
	if inImage == nil || native == nil {
		t.Fatalf("no go build of ./cmd/bifrost: Dockerfile %q, Makefile %q", inImage, native)
	}
	if inImage[1] != native[1] {
		t.Errorf("the Dockerfile builds with %q, make static with %q", inImage[1], native[1])
	}
	if !strings.Contains(dockerfile, "CGO_ENABLED=0") || !strings.Contains(makefile, "CGO_ENABLED=0 $(GO) build") {
		t.Error("both builds must set CGO_ENABLED=0: the runtime stage has no libc")
	}
	var last string
	var user string
	exposed := map[string]bool{}
	volumeData := false
	for _, line := range strings.Split(dockerfile, "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		switch f[0] {
		case "FROM":
			last = f[1]
		case "USER":
			user = f[1]
		case "VOLUME":
			volumeData = volumeData || f[1] == "/data"
		case "EXPOSE":
			for _, p := range f[1:] {
				port, _, _ := strings.Cut(p, "/")
				exposed[port] = true
			}
		}
	}
	if last != "scratch" && !strings.HasPrefix(last, "gcr.io/distroless/static") {
		t.Errorf("runtime stage FROM %s, want scratch or distroless/static", last)
	}
	if uid, _, _ := strings.Cut(user, ":"); uid == "" || uid == "0" || uid == "root" {
		t.Errorf("USER %q: want a user other than root", user)
	}
	if !volumeData {
		t.Error("no VOLUME /data")
	}
	for _, p := range []string{"1883", "8883", "8083", "8084", "7946", "7947", "7948", "7958", "8091", "8090"} {
		if !exposed[p] {
			t.Errorf("port %s not exposed", p)
		}
	}
}
