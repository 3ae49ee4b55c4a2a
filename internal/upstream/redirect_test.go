package upstream_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/wharf-mirror/wharf/internal/upstream"
)

// redirectSetup: registry.test requires tokens from auth.registry.test and
// redirects blobs and manifests to a CDN host.
type redirectSetup struct {
	reg, cdn *fakeRegistry
	tokens   *tokenServer
	client   *upstream.Client
}

func newRedirectSetup(t *testing.T, cdnHost string, cfg upstream.Config) *redirectSetup {
	t.Helper()
	s := &redirectSetup{reg: newFakeRegistry(), cdn: newFakeRegistry(), tokens: newTokenServer("tok")}
	s.reg.tokens = s.tokens
	s.reg.challenge = []string{`Bearer realm="http://auth.registry.test/token",service="registry.test"`}
	s.reg.redirect = func(r *http.Request) string {
		if strings.Contains(r.URL.Path, "/redirected/") {
			return "http://" + cdnHost + r.URL.Path + "?sig=secret"
		}
		return ""
	}
	hosts := map[string]*httptest.Server{
		"registry.test":      serve(t, s.reg),
		"auth.registry.test": serve(t, s.tokens),
		cdnHost:              serve(t, s.cdn),
		// A CDN's own token service, in the CDN's domain.
		"auth." + cdnHost: serve(t, s.tokens),
	}
	cfg.URL = "http://registry.test"
	cfg.Transport = namedHosts(t, hosts)
	s.client = newClient(t, cfg)
	return s
}

func TestRedirectDropsAuthorization(t *testing.T) {
	for _, cdnHost := range []string{"cdn.registry.test", "production.cdn.example"} {
		t.Run(cdnHost, func(t *testing.T) {
			s := newRedirectSetup(t, cdnHost, upstream.Config{Username: "alice", Password: "pw"})
			blob := []byte("layer bytes")
			d := s.cdn.putBlob(blob)
			s.cdn.putManifest("library/redirected/app", "v1", fakeManifest{contentType: ociManifestType, body: []byte(testManifest)})
			ctx := t.Context()

			rc, size, err := s.client.GetBlob(ctx, "library/redirected/app", d)
			if err != nil {
				t.Fatalf("GetBlob: %v", err)
			}
			got, err := io.ReadAll(rc)
			rc.Close()
			if err != nil || string(got) != string(blob) || size != int64(len(blob)) {
				t.Fatalf("GetBlob = %q (%d), %v", got, size, err)
			}
			if n, err := s.client.HeadBlob(ctx, "library/redirected/app", d); err != nil || n != int64(len(blob)) {
				t.Fatalf("HeadBlob = %d, %v", n, err)
			}
			if _, _, err := s.client.GetManifest(ctx, "library/redirected/app", "v1"); err != nil {
				t.Fatalf("GetManifest: %v", err)
			}

			if countAuthorization(s.reg.requests()) == 0 {
				t.Fatalf("registry never received a token")
			}
			cdnReqs := s.cdn.requests()
			if len(cdnReqs) != 3 {
				t.Fatalf("CDN saw %d requests, want 3", len(cdnReqs))
			}
			for _, r := range cdnReqs {
				if h := r.Header.Get("Authorization"); h != "" {
					t.Errorf("%s %s at the CDN carried Authorization %q", r.Method, r.Path, h)
				}
				if r.RawQuery != "sig=secret" {
					t.Errorf("CDN query %q, want the signed query", r.RawQuery)
				}
				if ua := r.Header.Get("User-Agent"); ua != "wharf" {
					t.Errorf("CDN User-Agent %q", ua)
				}
			}
			if cdnReqs[1].Method != http.MethodHead {
				t.Errorf("HEAD became %s across the redirect", cdnReqs[1].Method)
			}
			if got := cdnReqs[2].Header.Values("Accept"); len(got) != 1 || got[0] != strings.Join(upstream.ManifestAccept, ", ") {
				t.Errorf("manifest Accept at the redirect target = %q", got)
			}
		})
	}
}

func TestRedirectTargetWithOwnChallenge(t *testing.T) {
	// registry.k8s.io style: the registry redirects to another registry
	// (Artifact Registry) that has its own token service.
	reg, target := newFakeRegistry(), newFakeRegistry()
	regTokens, targetTokens := newTokenServer("reg"), newTokenServer("ar")
	reg.tokens = regTokens
	reg.challenge = []string{`Bearer realm="http://auth.registry.test/token",service="registry.test"`}
	reg.redirect = func(r *http.Request) string {
		return "http://ar.test/v2/k8s-artifacts/" + strings.TrimPrefix(r.URL.Path, "/v2/")
	}
	target.tokens = targetTokens
	target.challenge = []string{`Bearer realm="http://auth.ar.test/token",service="ar.test"`}
	target.putManifest("k8s-artifacts/pause", "3.9", fakeManifest{contentType: ociManifestType, body: []byte(testManifest)})
	tr := namedHosts(t, map[string]*httptest.Server{
		"registry.test":      serve(t, reg),
		"auth.registry.test": serve(t, regTokens),
		"ar.test":            serve(t, target),
		"auth.ar.test":       serve(t, targetTokens),
	})
	c := newClient(t, upstream.Config{URL: "http://registry.test", Transport: tr, Username: "alice", Password: "pw"})

	for range 3 {
		if _, _, err := c.GetManifest(t.Context(), "pause", "3.9"); err != nil {
			t.Fatalf("GetManifest: %v", err)
		}
	}
	if got := regTokens.count(); got != 1 {
		t.Errorf("registry token fetches %d, want 1", got)
	}
	arReqs := targetTokens.requests()
	if len(arReqs) != 1 {
		t.Fatalf("target token fetches %d, want 1", len(arReqs))
	}
	if h := arReqs[0].Header.Get("Authorization"); h != "" {
		t.Errorf("registry credentials went to the target's realm: %q", h)
	}
	if want := "scope=repository%3Ak8s-artifacts%2Fpause%3Apull&service=ar.test"; arReqs[0].RawQuery != want {
		t.Errorf("target token query %q, want %q", arReqs[0].RawQuery, want)
	}
	for _, r := range target.requests() {
		if h := r.Header.Get("Authorization"); strings.HasPrefix(h, "Bearer reg-") || strings.HasPrefix(h, "Basic") {
			t.Errorf("target received the registry's credentials: %q", h)
		}
	}
	// One challenge at each host; afterwards tokens are sent proactively.
	if got := countAnonymous(target.requests()); got != 1 {
		t.Errorf("target challenged %d times, want 1", got)
	}
	if got := countAnonymous(reg.requests()); got != 1 {
		t.Errorf("registry challenged %d times, want 1", got)
	}
}

func TestRedirectLimits(t *testing.T) {
	tests := []struct {
		name     string
		location func(r *http.Request) string
		wantErr  error
	}{
		{"loop", func(r *http.Request) string { return r.URL.Path }, upstream.ErrRedirect},
		{"ftp", func(*http.Request) string { return "ftp://cdn.example/blob" }, upstream.ErrRedirect},
		{"to loopback from a public registry", func(*http.Request) string { return "http://127.0.0.1:1/blob" }, upstream.ErrRedirect},
		{"to metadata service", func(*http.Request) string { return "http://169.254.169.254/latest/meta-data/" }, upstream.ErrRedirect},
		{"relative, same host", func(r *http.Request) string {
			if strings.Contains(r.URL.Path, "/moved/") {
				return ""
			}
			return "/v2/moved/" + strings.TrimPrefix(r.URL.Path, "/v2/")
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newFakeRegistry()
			reg.redirect = tt.location
			reg.putManifest("moved/app", "v1", fakeManifest{contentType: ociManifestType, body: []byte(testManifest)})
			tr := namedHosts(t, map[string]*httptest.Server{"registry.test": serve(t, reg)})
			c := newClient(t, upstream.Config{URL: "http://registry.test", Transport: tr})
			_, _, err := c.GetManifest(t.Context(), "app", "v1")
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("GetManifest: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if tt.name == "loop" && reg.count() != 11 {
				t.Errorf("%d requests for a redirect loop, want 11", reg.count())
			}
		})
	}
}

func TestRedirectToAllowedInternalHost(t *testing.T) {
	storage := newFakeRegistry()
	d := storage.putBlob([]byte("stored"))
	storageSrv := serve(t, storage)
	reg := newFakeRegistry()
	reg.redirect = func(r *http.Request) string { return storageSrv.URL + r.URL.Path }
	tr := namedHosts(t, map[string]*httptest.Server{"registry.test": serve(t, reg)})

	c := newClient(t, upstream.Config{URL: "http://registry.test", Transport: tr})
	if _, err := c.HeadBlob(t.Context(), "app", d); !errors.Is(err, upstream.ErrRedirect) {
		t.Fatalf("redirect to loopback: %v, want ErrRedirect", err)
	}
	c = newClient(t, upstream.Config{URL: "http://registry.test", Transport: tr, RedirectHosts: []string{"127.0.0.1"}})
	if size, err := c.HeadBlob(t.Context(), "app", d); err != nil || size != 6 {
		t.Fatalf("allowed redirect: %d, %v", size, err)
	}
}
