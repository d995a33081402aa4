package cluster

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// NamePrefix starts the name of every namespace, link and bridge the
// harness creates, so that CleanLeftovers can find what a crashed run left.
const NamePrefix = "bfj"

// ownerDir holds one file per live cluster, named by its ID, holding the
// PID of the harness that owns it.
const ownerDir = "/run/bifrost-jepsen"

// run runs a command and returns its error with its output.
func run(ctx context.Context, name string, args ...string) error {
	out, err := exec.CommandContext(ctx, name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %w: %s", name, strings.Join(args, " "), err, bytes.TrimSpace(out))
	}
	return nil
}

func output(ctx context.Context, name string, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, name, args...).Output()
	if err != nil {
		return "", fmt.Errorf("%s %s: %w", name, strings.Join(args, " "), err)
	}
	return string(out), nil
}

// RequireTools checks that ip and iptables are installed and that this
// process may create network namespaces (it must run as root).
func RequireTools() error {
	for _, tool := range []string{"ip", "iptables"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s is missing (apt-get install -y iproute2 iptables): %w", tool, err)
		}
	}
	if os.Geteuid() != 0 {
		return errors.New("network namespaces need root")
	}
	return nil
}

func newID() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)[:5]
}

// pickSubnet returns a /24 prefix ("10.77.X") that no address or route of
// the host uses.
func pickSubnet(ctx context.Context, id string) (string, error) {
	addrs, err := output(ctx, "ip", "-4", "-o", "addr")
	if err != nil {
		return "", err
	}
	routes, err := output(ctx, "ip", "-4", "route")
	if err != nil {
		return "", err
	}
	seed, _ := strconv.ParseUint(id, 16, 64)
	for i := uint64(0); i < 250; i++ {
		prefix := fmt.Sprintf("10.77.%d", 1+(seed+i)%250)
		if !strings.Contains(addrs, prefix+".") && !strings.Contains(routes, prefix+".") {
			return prefix, nil
		}
	}
	return "", errors.New("no free 10.77.X.0/24 subnet")
}

func writeOwner(id string) error {
	if err := os.MkdirAll(ownerDir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(ownerDir, id), []byte(strconv.Itoa(os.Getpid())), 0o644)
}

func removeOwner(id string) { _ = os.Remove(filepath.Join(ownerDir, id)) }

// ownerAlive reports whether the harness that created cluster id still runs.
func ownerAlive(id string) bool {
	b, err := os.ReadFile(filepath.Join(ownerDir, id))
	if err != nil {
		return false
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return false
	}
	return syscall.Kill(pid, 0) == nil
}

// idOf extracts the cluster ID from a name made by this package.
func idOf(name string) string {
	rest, ok := strings.CutPrefix(name, NamePrefix)
	if !ok || len(rest) < 5 {
		return ""
	}
	return rest[:5]
}

// CleanLeftovers removes the namespaces (and the processes in them), links
// and bridges that a harness which is no longer running left behind. It
// leaves alone what a live harness owns. It returns what it removed.
func CleanLeftovers(ctx context.Context) ([]string, error) {
	var removed []string
	var errs []error
	nsList, err := output(ctx, "ip", "netns", "list")
	if err != nil {
		return nil, err
	}
	for _, line := range strings.Split(nsList, "\n") {
		fields := strings.Fields(line)
		if len(fields) == 0 || !strings.HasPrefix(fields[0], NamePrefix) || ownerAlive(idOf(fields[0])) {
			continue
		}
		ns := fields[0]
		killNamespace(ctx, ns)
		if err := run(ctx, "ip", "netns", "del", ns); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, "netns "+ns)
	}
	links, err := output(ctx, "ip", "-o", "link")
	if err != nil {
		return removed, err
	}
	ids := map[string]bool{}
	for _, line := range strings.Split(links, "\n") {
		// "7: bfjab12ch1@if6: <...": the name ends at '@' or ':'.
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		name := strings.TrimSuffix(fields[1], ":")
		if i := strings.IndexByte(name, '@'); i >= 0 {
			name = name[:i]
		}
		if !strings.HasPrefix(name, NamePrefix) || ownerAlive(idOf(name)) {
			continue
		}
		ids[idOf(name)] = true
		// Deleting one end of a veth pair deletes the other; the bridge goes last.
		if err := run(ctx, "ip", "link", "del", name); err != nil {
			if !gone(err) {
				errs = append(errs, err)
			}
			continue
		}
		removed = append(removed, "link "+name)
	}
	for id := range ids {
		removeOwner(id)
	}
	return removed, errors.Join(errs...)
}

// gone reports whether a failed deletion failed because the thing is
// already gone, which is what the deletion wanted. ip says so in two ways
// for a link: "Cannot find device" when the name does not resolve, and
// "RTNETLINK answers: No such device" when it resolved but the kernel
// removed the link before the delete arrived (a veth pair goes with its
// namespace, asynchronously, once the namespace's last user is gone).
func gone(err error) bool {
	msg := err.Error()
	for _, s := range []string{"Cannot find device", "No such device", "No such file or directory"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// killNamespace kills every process left in a namespace.
func killNamespace(ctx context.Context, ns string) {
	pids, err := output(ctx, "ip", "netns", "pids", ns)
	if err != nil {
		return
	}
	for _, f := range strings.Fields(pids) {
		if pid, err := strconv.Atoi(f); err == nil && pid > 1 {
			_ = syscall.Kill(pid, syscall.SIGCONT)
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
	// Give the kernel a moment to reap them before the namespace goes.
	time.Sleep(50 * time.Millisecond)
}
