package api_test

import (
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/bifrost-mq/bifrost/api"
	"github.com/bifrost-mq/bifrost/mqtt"
)

// newBare is an API server whose broker and stores are never called.
func newBare(t *testing.T, token string, ui http.Handler) *api.Server {
	t.Helper()
	srv, err := api.New(api.Config{Addr: "127.0.0.1:0", Token: token, Broker: &mqtt.Server{}, UI: ui,
		StoreAddr: func() (string, error) { return "127.0.0.1:1", nil }})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	return srv
}

// TestOpenAPIMatchesRoutes: the OpenAPI document names exactly the calls
// the server registers (method and path), and the server serves it.
func TestOpenAPIMatchesRoutes(t *testing.T) {
	var doc struct {
		OpenAPI string                                `json:"openapi"`
		Paths   map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(api.OpenAPI, &doc); err != nil {
		t.Fatalf("openapi.json: %v", err)
	}
	if !strings.HasPrefix(doc.OpenAPI, "3.") {
		t.Errorf("openapi %q, want 3.x", doc.OpenAPI)
	}
	var documented []string
	for path, ops := range doc.Paths {
		for method := range ops {
			documented = append(documented, strings.ToUpper(method)+" "+path)
		}
	}
	srv := newBare(t, "", nil)
	var served []string
	for _, r := range srv.Routes() {
		served = append(served, r[0]+" "+r[1])
	}
	slices.Sort(documented)
	slices.Sort(served)
	if !slices.Equal(documented, served) {
		t.Errorf("documented %v\nserved %v", documented, served)
	}
	resp, err := http.Get("http://" + srv.Addr().String() + "/api/openapi.json")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(body) != string(api.OpenAPI) {
		t.Errorf("GET /api/openapi.json: %d, %d bytes", resp.StatusCode, len(body))
	}
}

// TestUIMounted: Config.UI serves / and /api/v1/status, the status behind
// the token like every /api/v1/ call.
func TestUIMounted(t *testing.T) {
	ui := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ui "+r.URL.Path) })
	srv := newBare(t, "tok", ui)
	get := func(path, token string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+srv.Addr().String()+path, nil)
		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/", ""); code != 200 || body != "ui /" {
		t.Errorf("GET /: %d %q", code, body)
	}
	if code, _ := get("/api/v1/status", ""); code != 401 {
		t.Errorf("GET /api/v1/status without the token: %d", code)
	}
	if code, body := get("/api/v1/status", "tok"); code != 200 || body != "ui /api/v1/status" {
		t.Errorf("GET /api/v1/status: %d %q", code, body)
	}
	bare := newBare(t, "", nil)
	resp, err := http.Get("http://" + bare.Addr().String() + "/api/v1/status")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Errorf("GET /api/v1/status without a UI: %d", resp.StatusCode)
	}
}

// TestExposedAddressNeedsToken: an API on a non-loopback address is
// refused without a token.
func TestExposedAddressNeedsToken(t *testing.T) {
	for _, c := range []struct {
		addr, token string
		ok          bool
	}{
		{"127.0.0.1:8090", "", true}, {"[::1]:8090", "", true}, {"localhost:8090", "", true}, {"", "", true},
		{"0.0.0.0:8090", "", false}, {":8090", "", false}, {"10.1.2.3:8090", "", false},
		{"0.0.0.0:8090", "t", true}, {"nonsense", "t", false},
	} {
		if err := api.CheckAddr(c.addr, c.token); (err == nil) != c.ok {
			t.Errorf("CheckAddr(%q, %q) = %v", c.addr, c.token, err)
		}
	}
}
