package server_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/wharf-mirror/wharf/internal/registrytest"
)

// TestAcceptHandling: clients send Accept as one comma-joined line
// (containerd, crane) or one line per type (Docker, containers/image); by
// tag, a type the client excludes is not handed out; upstream always gets
// the full list, whatever the client sent.
func TestAcceptHandling(t *testing.T) {
	h := newHarness(t, defaultOptions())
	idx := h.hub.PushIndex(t, "library/multi", "latest", registrytest.RandomIndex(t, 1000, "linux/amd64"))

	multiLine := []string{
		"Accept", d2Manifest,
		"Accept", "application/vnd.docker.distribution.manifest.list.v2+json",
		"Accept", ociIndex + ";q=0.9",
		"Accept", ociManifest,
	}
	r := h.do("GET", "/v2/library/multi/manifests/latest", multiLine...)
	expectStatus(t, r, 200)
	if r.Header.Get("Docker-Content-Digest") != idx.String() {
		t.Fatalf("digest %s", r.Header.Get("Docker-Content-Digest"))
	}
	// A client that accepts only single-platform Docker manifests is not
	// handed an OCI index by tag.
	expectError(t, h.do("GET", "/v2/library/multi/manifests/latest", "Accept", d2Manifest), 404, "MANIFEST_UNKNOWN")
	// By digest, the stored bytes are served whatever the Accept.
	expectStatus(t, h.do("GET", "/v2/library/multi/manifests/"+idx.String(), "Accept", d2Manifest), 200)

	for _, req := range h.hub.Requests() {
		if !strings.Contains(req.Path, "/manifests/") {
			continue
		}
		accept := strings.Join(req.Header.Values("Accept"), ",")
		for _, mt := range []string{ociIndex, ociManifest, d2Manifest,
			"application/vnd.docker.distribution.manifest.list.v2+json",
			"application/vnd.docker.distribution.manifest.v1+prettyjws"} {
			if !strings.Contains(accept, mt) {
				t.Errorf("upstream %s %s: Accept lacks %s: %q", req.Method, req.Path, mt, accept)
			}
		}
	}
}

// TestCorruptManifestNotCached: a manifest whose bytes do not match the
// requested digest is refused and not cached.
func TestCorruptManifestNotCached(t *testing.T) {
	h := newHarness(t, defaultOptions())
	d := h.ghcr.PushImage(t, "foo/bar", "", registrytest.RandomImage(t, 1001, 100))
	h.ghcr.AddFault(registrytest.Fault{Match: registrytest.IsManifestGET(d.String()), ResetAfter: -1, Corrupt: true, Times: 1})
	r := h.do("GET", "/v2/ghcr.io/foo/bar/manifests/"+d.String())
	expectError(t, r, http.StatusBadGateway, "UNAVAILABLE")
	r = h.do("GET", "/v2/ghcr.io/foo/bar/manifests/"+d.String())
	expectStatus(t, r, 200)
	if sha(r.body) != d || r.Header.Get("X-Wharf-Cache") != "miss" {
		t.Fatalf("after a corrupt answer: cache %q", r.Header.Get("X-Wharf-Cache"))
	}
}

// TestOCIArtifactManifestType: the short-lived
// application/vnd.oci.artifact.manifest.v1+json passes through unmodified.
func TestOCIArtifactManifestType(t *testing.T) {
	h := newHarness(t, defaultOptions())
	const mt = "application/vnd.oci.artifact.manifest.v1+json"
	body := []byte(`{"mediaType":"` + mt + `","artifactType":"application/vnd.example.sig","blobs":[]}`)
	d := h.ghcr.PushManifest(t, "foo/bar", "sig", mt, body)
	for _, ref := range []string{"sig", d.String()} {
		r := h.do("GET", "/v2/ghcr.io/foo/bar/manifests/"+ref)
		expectStatus(t, r, 200)
		if string(r.body) != string(body) || r.Header.Get("Content-Type") != mt {
			t.Fatalf("%s: altered: %q %s", ref, r.Header.Get("Content-Type"), r.body)
		}
	}
}

// TestClientCredentialsNotForwarded: credentials a client sends to wharf
// (dockerd sends the user's Docker Hub login to the mirror's realm) never
// reach an upstream.
func TestClientCredentialsNotForwarded(t *testing.T) {
	h := newHarness(t, defaultOptions())
	img := registrytest.RandomImage(t, 1002, 100)
	h.hub.PushImage(t, "library/app", "v1", img)
	d, _ := layerOf(t, img, 0)
	const secret = "Basic dXNlcjpodWItcGFzc3dvcmQ="
	expectStatus(t, h.do("GET", "/v2/library/app/manifests/v1", "Authorization", secret), 200)
	expectStatus(t, h.do("GET", "/v2/library/app/blobs/"+d.String(), "Authorization", secret), 200)
	for _, req := range h.hub.Requests() {
		if req.Header.Get("Authorization") == secret {
			t.Fatalf("client credentials forwarded: %s %s (%s)", req.Method, req.Path, req.Server)
		}
	}
}

// TestSchema1Signed: signed schema1 is refused with a clear error rather
// than cached under a digest that does not match its bytes.
func TestSchema1Signed(t *testing.T) {
	h := newHarness(t, defaultOptions())
	const mt = "application/vnd.docker.distribution.manifest.v1+prettyjws"
	body := []byte(`{"schemaVersion":1,"name":"foo/old","tag":"v1","fsLayers":[],"history":[],"signatures":[{"header":{},"signature":"x","protected":"e30"}]}`)
	h.ghcr.PushManifest(t, "foo/old", "v1", mt, body)
	r := h.do("GET", "/v2/ghcr.io/foo/old/manifests/v1")
	if r.StatusCode < 400 || !strings.Contains(string(r.body), "schema1") {
		t.Fatalf("signed schema1: status %d body %s", r.StatusCode, r.body)
	}
	ociCode(t, r.body)
}
