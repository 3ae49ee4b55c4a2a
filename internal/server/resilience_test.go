package server_test

import (
	"encoding/json"
	"net/http"
	"testing"

	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/registrytest"
)

// pullAll pulls a tag and everything it references through path prefix
// base ("/v2/ghcr.io/foo/bar") and returns the digests it fetched. Every
// body is checked against its digest.
func pullAll(t *testing.T, h *harness, base, tag string) []string {
	t.Helper()
	var fetched []string
	var walk func(ref string)
	walk = func(ref string) {
		r := h.do("GET", base+"/manifests/"+ref)
		expectStatus(t, r, http.StatusOK)
		d := r.Header.Get("Docker-Content-Digest")
		if sha(r.body).String() != d {
			t.Fatalf("%s: manifest body does not match %s", ref, d)
		}
		fetched = append(fetched, d)
		var m struct {
			Manifests []struct{ Digest string }
			Config    *struct{ Digest string }
			Layers    []struct{ Digest string }
		}
		if err := json.Unmarshal(r.body, &m); err != nil {
			t.Fatal(err)
		}
		for _, c := range m.Manifests {
			walk(c.Digest)
		}
		var blobs []string
		if m.Config != nil {
			blobs = append(blobs, m.Config.Digest)
		}
		for _, l := range m.Layers {
			blobs = append(blobs, l.Digest)
		}
		for _, b := range blobs {
			br := h.do("GET", base+"/blobs/"+b)
			expectStatus(t, br, http.StatusOK)
			if sha(br.body).String() != b {
				t.Fatalf("blob %s: wrong bytes", b)
			}
			fetched = append(fetched, b)
		}
	}
	walk(tag)
	return fetched
}

// TestUpstreamStopped: with every upstream stopped, every cached tag and
// digest still pulls — also after a restart of wharf.
func TestUpstreamStopped(t *testing.T) {
	h := newHarness(t, withConfig(func(c *config.Config) { c.TagTTL = 0 }))
	h.hub.PushIndex(t, "library/multi", "latest", registrytest.RandomIndex(t, 800, "linux/amd64", "linux/arm64"))
	h.ghcr.PushImage(t, "foo/bar", "1", registrytest.RandomImage(t, 801, 1000, 200000))
	h.k8s.PushImage(t, "pause", "3.9", registrytest.RandomImage(t, 802, 500))

	pulls := []struct{ base, tag string }{
		{"/v2/docker.io/library/multi", "latest"},
		{"/v2/ghcr.io/foo/bar", "1"},
		{"/v2/k8s.gcr.io/pause", "3.9"},
	}
	fetched := map[string][]string{}
	for _, p := range pulls {
		fetched[p.base] = pullAll(t, h, p.base, p.tag)
	}
	h.hub.Down()
	h.ghcr.Down()
	h.k8s.Down()
	t.Cleanup(func() { h.hub.Up(); h.ghcr.Up(); h.k8s.Up() })

	for round := range 2 {
		for _, p := range pulls {
			got := pullAll(t, h, p.base, p.tag)
			if len(got) != len(fetched[p.base]) {
				t.Fatalf("round %d %s: pulled %d objects, want %d", round, p.base, len(got), len(fetched[p.base]))
			}
			for _, d := range fetched[p.base] {
				r := h.do("HEAD", p.base+"/blobs/"+d)
				if r.StatusCode != 200 {
					// d is a manifest
					expectStatus(t, h.do("HEAD", p.base+"/manifests/"+d), 200)
				}
			}
		}
		h.restart() // the cache survives a restart
	}
}

// TestUpstreamAuthFlows covers the upstream-auth checklist end to end:
// anonymous bearer tokens reused across requests, configured credentials,
// and a redirect target with its own challenge.
func TestUpstreamAuthFlows(t *testing.T) {
	t.Run("tokens reused", func(t *testing.T) {
		h := newHarness(t, defaultOptions())
		h.hub.PushImage(t, "library/app", "v1", registrytest.RandomImage(t, 900, 10, 20, 30))
		pullAll(t, h, "/v2/library/app", "v1")
		if n := h.hub.Count(registrytest.TokenRequests()); n != 1 {
			t.Errorf("%d token requests for one repository, want 1", n)
		}
		// The cached token is revoked (as if expired upstream): the next
		// upstream request gets a 401, wharf fetches one new token and
		// retries, invisibly to the client.
		h.hub.RevokeTokens()
		h.hub.PushImage(t, "library/app", "v2", registrytest.RandomImage(t, 904, 40))
		pullAll(t, h, "/v2/library/app", "v2")
		if n := h.hub.Count(registrytest.TokenRequests()); n != 2 {
			t.Errorf("%d token requests after a revocation, want 2", n)
		}
	})
	t.Run("credentials", func(t *testing.T) {
		o := defaultOptions()
		o.hub = registrytest.Options{Auth: true, Username: "bob", Password: "s3cret", Redirect: registrytest.RedirectBlobs}
		o.configure = func(c *config.Config) {
			c.Upstreams["docker.io"].Username = "bob"
			c.Upstreams["docker.io"].Password = "s3cret"
			yes := true
			c.Upstreams["docker.io"].Access.Anonymous = &yes
		}
		h := newHarness(t, o)
		h.hub.PushImage(t, "bob/private", "v1", registrytest.RandomImage(t, 901, 100))
		pullAll(t, h, "/v2/bob/private", "v1")
		for _, req := range h.hub.Requests() {
			if req.Server == registrytest.ServerStorage && req.Header.Get("Authorization") != "" {
				t.Errorf("credentials sent to the CDN host")
			}
		}
	})
	t.Run("wrong credentials", func(t *testing.T) {
		o := defaultOptions()
		o.hub = registrytest.Options{Auth: true, Username: "bob", Password: "s3cret"}
		o.configure = func(c *config.Config) {
			c.Upstreams["docker.io"].Username = "bob"
			c.Upstreams["docker.io"].Password = "wrong"
			yes := true
			c.Upstreams["docker.io"].Access.Anonymous = &yes
		}
		h := newHarness(t, o)
		h.hub.PushImage(t, "bob/private", "v1", registrytest.RandomImage(t, 902, 100))
		r := h.do("GET", "/v2/bob/private/manifests/v1")
		if r.StatusCode < 400 {
			t.Fatalf("wrong credentials: status %d", r.StatusCode)
		}
		ociCode(t, r.body)
	})
	t.Run("redirect target with its own challenge", func(t *testing.T) {
		o := defaultOptions()
		o.k8s = registrytest.Options{Redirect: registrytest.RedirectAll, StorageAuth: true}
		h := newHarness(t, o)
		h.k8s.PushImage(t, "pause", "3.9", registrytest.RandomImage(t, 903, 100, 200))
		pullAll(t, h, "/v2/registry.k8s.io/pause", "3.9")
	})
}
