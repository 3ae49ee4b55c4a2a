package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/registrytest"
)

// TestRouting covers every routing mode of client-compat §0 / §8 "Routing"
// on one listener: each case must be answered by the upstream (and
// repository) the rule selects, told apart by distinct image digests.
func TestRouting(t *testing.T) {
	h := newHarness(t, defaultOptions())
	hubHello := h.hub.PushImage(t, "library/hello", "latest", registrytest.RandomImage(t, 1, 100))
	hubOrg := h.hub.PushImage(t, "someorg/tool", "v1", registrytest.RandomImage(t, 2, 100))
	ghcrBar := h.ghcr.PushImage(t, "foo/bar", "1", registrytest.RandomImage(t, 3, 100))
	k8sPause := h.k8s.PushImage(t, "pause", "3.9", registrytest.RandomImage(t, 4, 100))
	myregBar := h.myreg.PushImage(t, "foo/bar", "1", registrytest.RandomImage(t, 5, 100))
	myregNested := h.myreg.PushImage(t, "docker.io/library/hello", "x", registrytest.RandomImage(t, 6, 100))

	tests := []struct {
		name string
		path string
		host string
		want digest.Digest
	}{
		{"default upstream", "/v2/library/hello/manifests/latest", "", hubHello},
		{"docker hub library normalisation", "/v2/hello/manifests/latest", "", hubHello},
		{"ns docker.io", "/v2/library/hello/manifests/latest?ns=docker.io", "", hubHello},
		{"ns ghcr.io", "/v2/foo/bar/manifests/1?ns=ghcr.io", "", ghcrBar},
		{"ns with encoded port", "/v2/foo/bar/manifests/1?ns=myreg.io%3A5000", "", myregBar},
		{"path prefix docker.io", "/v2/docker.io/library/hello/manifests/latest", "", hubHello},
		{"path prefix docker.io short name", "/v2/docker.io/hello/manifests/latest", "", hubHello},
		{"path prefix alias index.docker.io", "/v2/index.docker.io/someorg/tool/manifests/v1", "", hubOrg},
		{"path prefix ghcr.io", "/v2/ghcr.io/foo/bar/manifests/1", "", ghcrBar},
		{"override_path: prefix and ns", "/v2/ghcr.io/foo/bar/manifests/1?ns=ghcr.io", "", ghcrBar},
		{"ns wins over a prefix-looking name", "/v2/docker.io/library/hello/manifests/x?ns=myreg.io:5000", "", myregNested},
		{"alias k8s.gcr.io", "/v2/k8s.gcr.io/pause/manifests/3.9", "", k8sPause},
		{"registry.k8s.io with redirects", "/v2/registry.k8s.io/pause/manifests/3.9", "", k8sPause},
		{"mirror path before /v2", "/docker.io/v2/library/hello/manifests/latest", "", hubHello},
		{"virtual host", "/v2/foo/bar/manifests/1", "ghcr.mirror.test", ghcrBar},
		{"virtual host with port", "/v2/foo/bar/manifests/1", "ghcr.mirror.test:443", ghcrBar},
		{"host header is the upstream itself", "/v2/foo/bar/manifests/1", "ghcr.io", ghcrBar},
		{"ns beats virtual host", "/v2/library/hello/manifests/latest?ns=docker.io", "ghcr.mirror.test", hubHello},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var hdr []string
			if tt.host != "" {
				hdr = []string{"Host", tt.host}
			}
			r := h.do(http.MethodGet, tt.path, hdr...)
			expectStatus(t, r, http.StatusOK)
			if got := digest.Digest(r.Header.Get("Docker-Content-Digest")); got != tt.want {
				t.Fatalf("digest %s, want %s", got, tt.want)
			}
			if sha(r.body) != tt.want {
				t.Fatalf("body does not hash to %s", tt.want)
			}
		})
	}

	// ns selects the upstream and is never forwarded.
	for _, reg := range []*registrytest.Registry{h.hub, h.ghcr, h.k8s, h.myreg} {
		for _, req := range reg.Requests() {
			if strings.Contains(req.RawQuery, "ns=") {
				t.Errorf("ns forwarded upstream: %s %s?%s", req.Method, req.Path, req.RawQuery)
			}
		}
	}
}

func TestRoutingErrors(t *testing.T) {
	h := newHarness(t, defaultOptions())
	tests := []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v2/unknown.example/foo/manifests/1", 404, "NAME_UNKNOWN"},
		{"GET", "/v2/foo/manifests/1?ns=evil.example", 404, "NAME_UNKNOWN"},
		{"GET", "/v2/foo/manifests/1?ns=127.0.0.1:22", 404, "NAME_UNKNOWN"},
		{"GET", "/evil.example/v2/foo/manifests/1", 404, "NAME_UNKNOWN"},
		{"GET", "/v2/library/hello/manifests/sha256:baddigeststring", 400, "DIGEST_INVALID"},
		{"GET", "/v2/library/hello/blobs/latest", 400, "DIGEST_INVALID"},
		{"GET", "/v2/Library/hello/manifests/latest", 400, "NAME_INVALID"},
		{"GET", "/v2/library/../etc/manifests/latest", 400, "NAME_INVALID"},
		{"GET", "/v2/library/%2e%2e/manifests/latest", 400, "NAME_INVALID"},
		{"GET", "/v2/library%2Fhello/manifests/latest", 400, "NAME_INVALID"},
		{"PUT", "/v2/library/hello/manifests/latest", 405, "UNSUPPORTED"},
		{"DELETE", "/v2/library/hello/manifests/latest", 405, "UNSUPPORTED"},
		{"POST", "/v2/library/hello/blobs/uploads/", 405, "UNSUPPORTED"},
		{"GET", "/v2/_catalog", 405, "UNSUPPORTED"},
		{"GET", "/nothing-here", 404, "UNSUPPORTED"},
	}
	for _, tt := range tests {
		t.Run(tt.method+" "+tt.path, func(t *testing.T) {
			r := h.do(tt.method, tt.path)
			expectError(t, r, tt.status, tt.code)
		})
	}
	// No request reached any upstream: unknown names are lookup keys, never
	// hosts to dial.
	for _, reg := range []*registrytest.Registry{h.hub, h.ghcr, h.k8s, h.myreg} {
		if n := len(reg.Requests()); n != 0 {
			t.Errorf("%d requests reached an upstream: %+v", n, reg.Requests())
		}
	}
}

func TestBase(t *testing.T) {
	h := newHarness(t, defaultOptions())
	for _, p := range []string{"/v2/", "/v2", "/docker.io/v2/"} {
		for _, m := range []string{"GET", "HEAD"} {
			r := h.do(m, p)
			expectStatus(t, r, http.StatusOK)
			if v := r.Header.Get("Docker-Distribution-API-Version"); v != "registry/2.0" {
				t.Errorf("%s %s: Docker-Distribution-API-Version %q", m, p, v)
			}
		}
	}
}
