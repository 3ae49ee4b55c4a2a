package server_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/registrytest"
)

const (
	ociIndex    = "application/vnd.oci.image.index.v1+json"
	ociManifest = "application/vnd.oci.image.manifest.v1+json"
	d2Manifest  = "application/vnd.docker.distribution.manifest.v2+json"
)

func withConfig(f func(*config.Config)) harnessOptions {
	o := defaultOptions()
	o.configure = f
	return o
}

func TestManifestHeadersAndBytes(t *testing.T) {
	h := newHarness(t, defaultOptions())
	d := h.ghcr.PushImage(t, "foo/bar", "1", registrytest.RandomImage(t, 10, 64))

	head := h.do("HEAD", "/v2/ghcr.io/foo/bar/manifests/1")
	expectStatus(t, head, 200)
	if len(head.body) != 0 {
		t.Fatalf("HEAD has a body")
	}
	get := h.do("GET", "/v2/ghcr.io/foo/bar/manifests/1")
	expectStatus(t, get, 200)
	for _, r := range []*response{head, get} {
		if got := r.Header.Get("Docker-Content-Digest"); got != d.String() {
			t.Errorf("%s: Docker-Content-Digest %q, want %s", r.Request.Method, got, d)
		}
		if got := r.Header.Get("Content-Type"); got != d2Manifest {
			t.Errorf("%s: Content-Type %q", r.Request.Method, got)
		}
		if got := r.Header.Get("Content-Length"); got != strconv.Itoa(len(get.body)) {
			t.Errorf("%s: Content-Length %q, body %d bytes", r.Request.Method, got, len(get.body))
		}
		if got := r.Header.Get("ETag"); got != `"`+d.String()+`"` {
			t.Errorf("%s: ETag %q", r.Request.Method, got)
		}
	}
	if sha(get.body) != d {
		t.Fatalf("body does not hash to the digest")
	}
	// By digest, a narrow Accept still gets the stored bytes (crane).
	r := h.do("GET", "/v2/ghcr.io/foo/bar/manifests/"+d.String(), "Accept", "application/vnd.oci.image.index.v1+json")
	expectStatus(t, r, 200)
	if !bytes.Equal(r.body, get.body) {
		t.Fatalf("by-digest body differs")
	}
	// If-None-Match with the digest answers 304.
	r = h.do("GET", "/v2/ghcr.io/foo/bar/manifests/1", "If-None-Match", `"`+d.String()+`"`)
	expectStatus(t, r, http.StatusNotModified)
}

// TestMultiArchPullCounts pulls a multi-arch image the way containerd does
// (HEAD tag, GET index, GET platform manifest, GET config and layers), cold
// and then warm, and reports the upstream requests each pull caused.
func TestMultiArchPullCounts(t *testing.T) {
	h := newHarness(t, defaultOptions())
	idx := registrytest.RandomIndex(t, 20, "linux/amd64", "linux/arm64")
	idxDigest := h.hub.PushIndex(t, "library/multi", "latest", idx)
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	child := im.Manifests[0].Digest.String()

	pull := func() {
		t.Helper()
		r := h.do("HEAD", "/v2/library/multi/manifests/latest?ns=docker.io", "Accept", strings.Join([]string{d2Manifest, ociIndex, ociManifest, "*/*"}, ", "))
		expectStatus(t, r, 200)
		if r.Header.Get("Docker-Content-Digest") != idxDigest.String() {
			t.Fatalf("tag resolved to %s", r.Header.Get("Docker-Content-Digest"))
		}
		expectStatus(t, h.do("GET", "/v2/library/multi/manifests/"+idxDigest.String()+"?ns=docker.io"), 200)
		m := h.do("GET", "/v2/library/multi/manifests/"+child+"?ns=docker.io")
		expectStatus(t, m, 200)
		var man struct {
			Config struct{ Digest string }
			Layers []struct{ Digest string }
		}
		if err := json.Unmarshal(m.body, &man); err != nil {
			t.Fatal(err)
		}
		for _, d := range append([]string{man.Config.Digest}, func() []string {
			var ds []string
			for _, l := range man.Layers {
				ds = append(ds, l.Digest)
			}
			return ds
		}()...) {
			b := h.do("GET", "/v2/library/multi/blobs/"+d+"?ns=docker.io")
			expectStatus(t, b, 200)
			if sha(b.body).String() != d {
				t.Fatalf("blob %s: wrong bytes", d)
			}
		}
	}

	pull()
	cold := h.hub.Requests()
	// Docker Hub counts a pull per manifest GET it serves; the first
	// request of a scope is answered 401 (challenge) and does not count.
	coldManifestGETs := h.hub.Count(authorized(registrytest.ManifestGETs()))
	if coldManifestGETs != 2 { // the index by tag, the platform manifest by digest
		t.Errorf("cold pull: %d upstream manifest GETs, want 2", coldManifestGETs)
	}
	if n := h.hub.Count(registrytest.ManifestHEADs()); n != 0 {
		t.Errorf("cold pull: %d upstream manifest HEADs, want 0", n)
	}
	t.Logf("cold pull of a 2-platform image: %d upstream requests (%d manifest GETs, %d token requests)",
		len(cold), coldManifestGETs, h.hub.Count(registrytest.TokenRequests()))

	h.hub.ResetRequests()
	pull()
	if n := len(h.hub.Requests()); n != 0 {
		t.Errorf("warm pull within the tag TTL: %d upstream requests, want 0: %+v", n, h.hub.Requests())
	}
	t.Logf("warm pull: %d upstream requests", len(h.hub.Requests()))
}

func TestTagRevalidation(t *testing.T) {
	h := newHarness(t, withConfig(func(c *config.Config) { c.TagTTL = 0 }))
	first := h.hub.PushImage(t, "library/app", "stable", registrytest.RandomImage(t, 30, 32))

	r := h.do("GET", "/v2/library/app/manifests/stable")
	expectStatus(t, r, 200)
	if r.Header.Get("X-Wharf-Cache") != "miss" {
		t.Errorf("first pull cache result %q", r.Header.Get("X-Wharf-Cache"))
	}

	// TTL elapsed (0): the tag is revalidated with a HEAD, not a GET.
	h.hub.ResetRequests()
	r = h.do("GET", "/v2/library/app/manifests/stable")
	expectStatus(t, r, 200)
	if got := r.Header.Get("Docker-Content-Digest"); got != first.String() {
		t.Fatalf("digest %s", got)
	}
	if n := h.hub.Count(registrytest.ManifestGETs()); n != 0 {
		t.Errorf("unchanged tag: %d upstream manifest GETs, want 0", n)
	}
	if n := h.hub.Count(registrytest.ManifestHEADs()); n != 1 {
		t.Errorf("unchanged tag: %d upstream manifest HEADs, want 1", n)
	}
	if r.Header.Get("X-Wharf-Cache") != "revalidated" {
		t.Errorf("cache result %q", r.Header.Get("X-Wharf-Cache"))
	}

	// The tag moves upstream: the next request returns the new digest,
	// fetched by digest after the HEAD.
	second := h.hub.PushImage(t, "library/app", "stable", registrytest.RandomImage(t, 31, 32))
	h.hub.ResetRequests()
	r = h.do("GET", "/v2/library/app/manifests/stable")
	expectStatus(t, r, 200)
	if got := r.Header.Get("Docker-Content-Digest"); got != second.String() || sha(r.body) != second {
		t.Fatalf("after the move: digest %s, want %s", got, second)
	}
	if n := h.hub.Count(registrytest.ManifestGETs()); n != 1 {
		t.Errorf("moved tag: %d manifest GETs, want 1 (by digest)", n)
	}
	for _, req := range h.hub.Requests() {
		if req.Method == "GET" && strings.HasSuffix(req.Path, "/manifests/stable") {
			t.Errorf("moved tag fetched by tag with GET; want HEAD then GET by digest")
		}
	}
	// Cosign-style tags are tags like any other: revalidated.
	sig := h.hub.PushManifest(t, "library/app", "sha256-"+second.Encoded()+".sig", ociManifest, artifactManifest(t, h.hub, "library/app", "application/vnd.dev.cosign.artifact.sig.v1+json", nil))
	expectStatus(t, h.do("GET", "/v2/library/app/manifests/sha256-"+second.Encoded()+".sig"), 200)
	h.hub.ResetRequests()
	r = h.do("GET", "/v2/library/app/manifests/sha256-"+second.Encoded()+".sig")
	expectStatus(t, r, 200)
	if r.Header.Get("Docker-Content-Digest") != sig.String() || h.hub.Count(registrytest.ManifestHEADs()) != 1 {
		t.Errorf("signature tag not revalidated with one HEAD")
	}
}

func TestTagWithinTTLIsNotRevalidated(t *testing.T) {
	h := newHarness(t, withConfig(func(c *config.Config) { c.TagTTL = config.Duration(time.Hour) }))
	h.hub.PushImage(t, "library/app", "v1", registrytest.RandomImage(t, 32, 32))
	expectStatus(t, h.do("GET", "/v2/library/app/manifests/v1"), 200)
	h.hub.ResetRequests()
	for range 5 {
		r := h.do("HEAD", "/v2/library/app/manifests/v1")
		expectStatus(t, r, 200)
		if r.Header.Get("X-Wharf-Cache") != "hit" {
			t.Fatalf("cache result %q", r.Header.Get("X-Wharf-Cache"))
		}
	}
	if n := len(h.hub.Requests()); n != 0 {
		t.Fatalf("%d upstream requests within the TTL", n)
	}
}

// TestStaleIfError: when upstream fails (unreachable, 5xx, 429, 401), the last
// known tag mapping is served with a header saying it is stale; beyond
// max_stale it is not.
func TestStaleIfError(t *testing.T) {
	faults := []struct {
		name  string
		fault *registrytest.Fault
		down  bool
	}{
		{name: "unreachable", down: true},
		{name: "503", fault: &registrytest.Fault{Status: 503}},
		{name: "429", fault: &registrytest.Fault{Status: 429, RetryAfter: "30"}},
		{name: "401", fault: &registrytest.Fault{Status: 401}},
	}
	for _, f := range faults {
		t.Run(f.name, func(t *testing.T) {
			h := newHarness(t, withConfig(func(c *config.Config) { c.TagTTL = 0 }))
			d := h.ghcr.PushImage(t, "foo/bar", "1", registrytest.RandomImage(t, 40, 32))
			expectStatus(t, h.do("GET", "/v2/ghcr.io/foo/bar/manifests/1"), 200)
			if f.down {
				h.ghcr.Down()
				defer h.ghcr.Up()
			} else {
				h.ghcr.AddFault(*f.fault)
			}
			for _, m := range []string{"GET", "HEAD"} {
				r := h.do(m, "/v2/ghcr.io/foo/bar/manifests/1")
				expectStatus(t, r, 200)
				if r.Header.Get("Docker-Content-Digest") != d.String() {
					t.Fatalf("stale digest %s", r.Header.Get("Docker-Content-Digest"))
				}
				if r.Header.Get("X-Wharf-Cache") != "stale" || !strings.Contains(r.Header.Get("Warning"), "110") {
					t.Fatalf("stale answer not marked: X-Wharf-Cache %q, Warning %q", r.Header.Get("X-Wharf-Cache"), r.Header.Get("Warning"))
				}
			}
		})
	}
	t.Run("beyond max_stale", func(t *testing.T) {
		h := newHarness(t, withConfig(func(c *config.Config) { c.TagTTL = 0; c.MaxStale = 0 }))
		h.ghcr.PushImage(t, "foo/bar", "1", registrytest.RandomImage(t, 41, 32))
		expectStatus(t, h.do("GET", "/v2/ghcr.io/foo/bar/manifests/1"), 200)
		h.ghcr.AddFault(registrytest.Fault{Status: 503})
		expectError(t, h.do("GET", "/v2/ghcr.io/foo/bar/manifests/1"), 503, "UNAVAILABLE")
	})
}

func TestManifestErrors(t *testing.T) {
	h := newHarness(t, defaultOptions())
	h.hub.PushImage(t, "library/app", "v1", registrytest.RandomImage(t, 50, 32))

	expectError(t, h.do("GET", "/v2/library/app/manifests/nope"), 404, "MANIFEST_UNKNOWN")
	unknown := digest.FromString("nothing")
	expectError(t, h.do("GET", "/v2/library/app/manifests/"+unknown.String()), 404, "MANIFEST_UNKNOWN")
	r := h.do("HEAD", "/v2/library/app/manifests/nope")
	expectStatus(t, r, 404)

	// A 404 is remembered briefly: a burst for a missing tag asks once.
	h.hub.ResetRequests()
	for range 3 {
		expectError(t, h.do("GET", "/v2/library/app/manifests/missing"), 404, "MANIFEST_UNKNOWN")
	}
	if n := h.hub.Count(registrytest.ManifestGETs()); n != 1 {
		t.Errorf("3 requests for a missing tag: %d upstream GETs, want 1", n)
	}

	// 429 on an uncached manifest: 429 TOOMANYREQUESTS with Retry-After.
	h.hub.AddFault(registrytest.Fault{Status: 429, RetryAfter: "42", Match: registrytest.IsManifest("ratelimited")})
	r = h.do("GET", "/v2/library/app/manifests/ratelimited")
	expectError(t, r, 429, "TOOMANYREQUESTS")
	if r.Header.Get("Retry-After") != "42" {
		t.Errorf("Retry-After %q", r.Header.Get("Retry-After"))
	}

	// Upstream down, nothing cached: 503, never a hang or a 200.
	h.ghcr.Down()
	defer h.ghcr.Up()
	expectError(t, h.do("GET", "/v2/ghcr.io/foo/bar/manifests/1"), 503, "UNAVAILABLE")
}

func TestLargeManifests(t *testing.T) {
	h := newHarness(t, defaultOptions())
	// Just under 4 MiB of annotations (the conformance "large manifest"
	// fixture is ~3.9 MB) is accepted and served byte for byte.
	big := artifactManifest(t, h.ghcr, "foo/big", "application/vnd.example.big", map[string]string{"pad": strings.Repeat("x", 4<<20-4096)})
	d := h.ghcr.PushManifest(t, "foo/big", "ok", ociManifest, big)
	r := h.do("GET", "/v2/ghcr.io/foo/big/manifests/ok")
	expectStatus(t, r, 200)
	if sha(r.body) != d {
		t.Fatalf("large manifest altered")
	}
	// Over 4 MiB is refused with a clear error and nothing is cached.
	huge := artifactManifest(t, h.ghcr, "foo/big", "application/vnd.example.big", map[string]string{"pad": strings.Repeat("x", 5<<20)})
	h.ghcr.PushManifest(t, "foo/big", "huge", ociManifest, huge)
	r = h.do("GET", "/v2/ghcr.io/foo/big/manifests/huge")
	expectError(t, r, http.StatusBadGateway, "MANIFEST_INVALID")
	if !strings.Contains(string(r.body), "4 MiB") {
		t.Errorf("error does not explain the limit: %s", r.body)
	}
}

// artifactManifest builds an OCI artifact manifest with an artifactType and
// a pushed config blob, optionally with annotations.
func artifactManifest(t *testing.T, reg *registrytest.Registry, repo, artifactType string, annotations map[string]string) []byte {
	t.Helper()
	cfg := []byte("{}")
	cd := reg.PushBlob(t, repo, cfg)
	layer := []byte("payload of " + artifactType)
	ld := reg.PushBlob(t, repo, layer)
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     ociManifest,
		"artifactType":  artifactType,
		"config":        map[string]any{"mediaType": "application/vnd.oci.empty.v1+json", "digest": cd, "size": len(cfg)},
		"layers":        []any{map[string]any{"mediaType": "application/octet-stream", "digest": ld, "size": len(layer)}},
	}
	if annotations != nil {
		m["annotations"] = annotations
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestArtifactsAndReferrers(t *testing.T) {
	h := newHarness(t, defaultOptions())
	subject := h.hub.PushImage(t, "library/app", "v1", registrytest.RandomImage(t, 60, 32))
	art := artifactManifest(t, h.hub, "library/app", "application/vnd.example.sbom", nil)
	var m map[string]any
	json.Unmarshal(art, &m)
	m["subject"] = map[string]any{"mediaType": d2Manifest, "digest": subject, "size": 100}
	art, _ = json.Marshal(m)
	artDigest := h.hub.PushManifest(t, "library/app", "", ociManifest, art)

	// The artifact passes through byte for byte.
	r := h.do("GET", "/v2/library/app/manifests/"+artDigest.String())
	expectStatus(t, r, 200)
	if !bytes.Equal(r.body, art) || r.Header.Get("Content-Type") != ociManifest {
		t.Fatalf("artifact altered: %s", r.Header.Get("Content-Type"))
	}

	// Referrers are relayed, with the artifactType filter preserved.
	r = h.do("GET", "/v2/library/app/referrers/"+subject.String()+"?artifactType=application/vnd.example.sbom")
	expectStatus(t, r, 200)
	if !strings.Contains(string(r.body), artDigest.String()) {
		t.Fatalf("referrers index lacks the artifact: %s", r.body)
	}
	var sawFilter bool
	for _, req := range h.hub.Requests() {
		if strings.Contains(req.Path, "/referrers/") && strings.Contains(req.RawQuery, "artifactType=") {
			sawFilter = true
		}
	}
	if !sawFilter {
		t.Errorf("artifactType not forwarded upstream")
	}

	// An upstream without the referrers API answers 404, passed through as
	// 404 so clients fall back to the tag schema.
	ghcrSubject := h.ghcr.PushImage(t, "foo/bar", "1", registrytest.RandomImage(t, 61, 32))
	r = h.do("GET", "/v2/ghcr.io/foo/bar/referrers/"+ghcrSubject.String())
	expectStatus(t, r, 404)
}

func TestTagsList(t *testing.T) {
	h := newHarness(t, defaultOptions())
	for _, tag := range []string{"a", "b", "c", "d"} {
		h.ghcr.PushImage(t, "foo/bar", tag, registrytest.RandomImage(t, 70, 16))
	}
	r := h.do("GET", "/v2/foo/bar/tags/list?n=2&ns=ghcr.io")
	expectStatus(t, r, 200)
	var l struct {
		Name string
		Tags []string
	}
	if err := json.Unmarshal(r.body, &l); err != nil {
		t.Fatal(err)
	}
	if strings.Join(l.Tags, ",") != "a,b" {
		t.Fatalf("tags %v", l.Tags)
	}
	link := r.Header.Get("Link")
	if !strings.HasPrefix(link, "</v2/foo/bar/tags/list?") || !strings.Contains(link, "ns=ghcr.io") || !strings.Contains(link, "last=b") {
		t.Fatalf("Link not rewritten to the client's path: %q", link)
	}
	next := link[1:strings.IndexByte(link, '>')]
	r = h.do("GET", next)
	expectStatus(t, r, 200)
	json.Unmarshal(r.body, &l)
	if strings.Join(l.Tags, ",") != "c,d" {
		t.Fatalf("second page %v", l.Tags)
	}
	expectError(t, h.do("GET", "/v2/ghcr.io/nobody/here/tags/list"), 404, "NAME_UNKNOWN")
}

// authorized restricts a request matcher to requests that carried
// credentials (on Docker Hub, those are the ones that count as pulls).
func authorized(match func(registrytest.Request) bool) func(registrytest.Request) bool {
	return func(r registrytest.Request) bool {
		return match(r) && r.Header.Get("Authorization") != ""
	}
}
