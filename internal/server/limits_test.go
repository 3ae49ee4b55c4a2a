package server_test

import (
	"context"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/server"
)

// limits.client_rate: a client beyond its burst gets 429 TOOMANYREQUESTS
// with Retry-After, on every endpoint of the registry listener.
func TestClientRateLimit(t *testing.T) {
	o := defaultOptions()
	o.configure = func(c *config.Config) {
		c.Limits.ClientRate = 0.5 // one request every 2 s after the burst
		c.Limits.ClientBurst = 3
	}
	h := newHarness(t, o)
	for range 3 {
		expectStatus(t, h.do("GET", "/v2/"), http.StatusOK)
	}
	for _, path := range []string{"/v2/", "/v2/library/nginx/manifests/latest", "/ca.crt"} {
		r := h.do("GET", path)
		expectError(t, r, http.StatusTooManyRequests, "TOOMANYREQUESTS")
		if r.Header.Get("Retry-After") == "" {
			t.Errorf("GET %s: 429 without Retry-After", path)
		}
	}
	if n := len(h.hub.Requests()); n != 0 {
		t.Errorf("a rate-limited request reached the upstream (%d requests)", n)
	}
}

// limits.max_header_bytes bounds the request header block of the real
// listeners: a larger one gets 431 and the server keeps serving.
func TestMaxHeaderBytes(t *testing.T) {
	o := defaultOptions()
	o.configure = func(c *config.Config) { c.Limits.MaxHeaderBytes = 8 << 10 }
	h := newHarness(t, o)
	api, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- h.inst.ServeListeners(ctx, server.Listeners{API: api}) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
	}()
	client := &http.Client{}
	defer client.CloseIdleConnections()
	get := func(hdr string) int {
		t.Helper()
		req, _ := http.NewRequest("GET", "http://"+api.Addr().String()+"/v2/", nil)
		if hdr != "" {
			req.Header.Set("X-Big", hdr)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if s := get(strings.Repeat("a", 16<<10)); s != http.StatusRequestHeaderFieldsTooLarge {
		t.Errorf("16 KiB header: %d, want 431", s)
	}
	if s := get(strings.Repeat("a", 2<<10)); s != http.StatusOK {
		t.Errorf("2 KiB header: %d, want 200", s)
	}
}
