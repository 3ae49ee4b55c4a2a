package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/gc"
	"github.com/wharf-mirror/wharf/internal/registrytest"
	"github.com/wharf-mirror/wharf/internal/server"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m,
		// Idle keep-alive connections of http.DefaultTransport-like clients
		// and the sqlite driver's connection opener outlive single tests.
		goleak.IgnoreTopFunction("net/http.(*persistConn).readLoop"),
		goleak.IgnoreTopFunction("net/http.(*persistConn).writeLoop"),
		goleak.IgnoreTopFunction("internal/poll.runtime_pollWait"),
		goleak.IgnoreTopFunction("database/sql.(*DB).connectionOpener"),
	)
}

// harness is a wharf instance served by a real http.Server, in front of
// three fake upstreams: docker.io (Docker Hub's token flow, blobs redirected
// to a CDN host, rate-limit headers), ghcr.io (plain) and registry.k8s.io
// (every request redirected to a storage host), plus myreg.io:5000.
type harness struct {
	t       testing.TB
	hub     *registrytest.Registry
	ghcr    *registrytest.Registry
	k8s     *registrytest.Registry
	myreg   *registrytest.Registry
	cfg     *config.Config
	inst    *server.Instance
	srv     *httptest.Server
	client  *http.Client
	dataDir string

	onCollect func(gc.Report, error) // see harnessOptions
}

type harnessOptions struct {
	hub, ghcr, k8s registrytest.Options
	configure      func(*config.Config)
	// onCollect receives the report of every eviction run.
	onCollect func(gc.Report, error)
}

func defaultOptions() harnessOptions {
	return harnessOptions{
		hub:  registrytest.Options{Auth: true, Redirect: registrytest.RedirectBlobs, RateLimit: true},
		ghcr: registrytest.Options{Auth: true, NoReferrers: true},
		k8s:  registrytest.Options{Redirect: registrytest.RedirectAll},
	}
}

func newHarness(t testing.TB, o harnessOptions) *harness {
	t.Helper()
	h := &harness{
		t:       t,
		hub:     registrytest.New(t, o.hub),
		ghcr:    registrytest.New(t, o.ghcr),
		k8s:     registrytest.New(t, o.k8s),
		myreg:   registrytest.New(t, registrytest.Options{}),
		dataDir: t.TempDir(),

		onCollect: o.onCollect,
	}
	cfg := config.Default()
	cfg.DataDir = h.dataDir
	cfg.SetUpstreamURL("docker.io", h.hub.URL())
	cfg.SetUpstreamURL("ghcr.io", h.ghcr.URL())
	cfg.SetUpstreamURL("registry.k8s.io", h.k8s.URL())
	cfg.SetUpstreamURL("myreg.io:5000", h.myreg.URL())
	cfg.Upstreams["ghcr.io"].VirtualHosts = []string{"ghcr.mirror.test"}
	cfg.Fetch.Retries = 0 // fault tests count exact upstream requests
	if o.configure != nil {
		o.configure(cfg)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	if err := cfg.Resolve(nil, func(string) (string, bool) { return "", false }); err != nil {
		t.Fatalf("resolve: %v", err)
	}
	h.cfg = cfg
	h.start()
	h.client = &http.Client{Transport: &http.Transport{DisableCompression: true, MaxIdleConnsPerHost: 128}}
	t.Cleanup(func() {
		h.stop()
		h.client.CloseIdleConnections()
	})
	return h
}

func (h *harness) start() {
	h.t.Helper()
	inst, err := server.New(context.Background(), h.cfg, server.Options{Logger: testLogger(h.t), OnCollect: h.onCollect})
	if err != nil {
		h.t.Fatalf("server.New: %v", err)
	}
	h.inst = inst
	h.srv = httptest.NewServer(inst.Handler())
}

func (h *harness) stop() {
	if h.srv != nil {
		h.srv.Close()
		h.srv = nil
	}
	if h.inst != nil {
		if err := h.inst.Close(); err != nil {
			h.t.Errorf("close: %v", err)
		}
		h.inst = nil
	}
}

// restart stops wharf and starts it again on the same data directory.
func (h *harness) restart() {
	h.t.Helper()
	h.stop()
	h.start()
}

type response struct {
	*http.Response
	body []byte
}

// do sends a request to wharf and reads the whole body (a read error is
// kept in readErr, not fatal: some tests expect aborted bodies).
func (h *harness) do(method, path string, hdr ...string) *response {
	h.t.Helper()
	resp, err := h.send(method, path, hdr...)
	if err != nil {
		h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		h.t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return &response{resp, body}
}

// send returns the response with its body unread. hdr is name, value pairs;
// the name "Host" sets the Host header.
func (h *harness) send(method, path string, hdr ...string) (*http.Response, error) {
	req, err := http.NewRequest(method, h.srv.URL+path, nil)
	if err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if strings.EqualFold(hdr[i], "Host") {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Add(hdr[i], hdr[i+1])
	}
	return h.client.Do(req)
}

// ociCode returns the first error code of an OCI error body.
func ociCode(t *testing.T, body []byte) string {
	t.Helper()
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) == 0 {
		t.Fatalf("not an OCI error body: %q", body)
	}
	return e.Errors[0].Code
}

func expectStatus(t *testing.T, r *response, status int) {
	t.Helper()
	if r.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %.300s", r.Request.Method, r.Request.URL, r.StatusCode, status, r.body)
	}
}

func expectError(t *testing.T, r *response, status int, code string) {
	t.Helper()
	expectStatus(t, r, status)
	if got := ociCode(t, r.body); got != code {
		t.Fatalf("%s %s: code %s, want %s", r.Request.Method, r.Request.URL, got, code)
	}
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("error Content-Type %q", ct)
	}
}

func sha(b []byte) digest.Digest {
	s := sha256.Sum256(b)
	return digest.Digest("sha256:" + hex.EncodeToString(s[:]))
}
