//go:build e2e

package e2e

import (
	"bytes"
	"encoding/json"
	"net/http"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// TestCraneDirect: crane has no mirror configuration, so users address
// wharf directly (client-compat §3.5): 127.0.0.1:PORT/ghcr.io/org/img by tag
// and by digest, the tag list, an artifact referrer and the referrers API, a Docker Hub
// short name with and without the docker.io prefix (library/ added by
// wharf), and a registry.k8s.io image whose upstream redirects everything.
func TestCraneDirect(t *testing.T) {
	cr := newCrane(t)
	oci := seedImage(t, suite.ghcr, "e2e/crane-oci", "1", buildImage(t, "crane-oci", ociImage, amd64, 2))
	artDigest, artRaw := seedReferrer(t, suite.ghcr, oci.Repo, oci)
	hubShort := seedImage(t, suite.hub, "library/crane-short", "1", buildImage(t, "crane-short", dockerImage, amd64, 2))
	k8s := seedIndex(t, suite.k8s, "e2e/crane-k8s", "v1", buildIndex(t, "crane-k8s", 1))

	ghcrMark, hubMark, k8sMark := suite.ghcr.mark(), suite.hub.mark(), suite.k8s.mark()

	// ghcr.io by tag and by digest, the path-prefix route.
	base := mirrorBase(suite.ghcr)
	if got := cr.digest(t, oci.ref(base)); got != oci.Digest {
		t.Errorf("crane digest %s = %s, want %s", oci.ref(base), got, oci.Digest)
	}
	if raw := cr.run(t, "manifest", oci.refDigest(base)); raw != string(oci.Raw) {
		t.Errorf("crane manifest %s: bytes differ from upstream's:\n%s\nwant\n%s", oci.refDigest(base), raw, oci.Raw)
	}
	if tags := strings.Fields(cr.run(t, "ls", base+"/"+oci.Repo)); !slices.Contains(tags, oci.Tag) {
		t.Errorf("crane ls %s/%s = %v, want %q among them", base, oci.Repo, tags, oci.Tag)
	}
	expectTarball(t, cr.pull(t, oci.ref(base), "oci-tag"))
	expectTarball(t, cr.pull(t, oci.refDigest(base), "oci-digest"))

	// The referrer: its manifest by digest, and the referrers API listing
	// it with its artifactType (distribution-spec 1.1 "Listing Referrers").
	if raw := cr.run(t, "manifest", base+"/"+oci.Repo+"@"+artDigest.String()); raw != string(artRaw) {
		t.Errorf("crane manifest of the referrer: bytes differ from upstream's")
	}
	status, hdr, body := suite.wharf.get(t, "", "/v2/ghcr.io/"+oci.Repo+"/referrers/"+oci.Digest.String())

	// Docker Hub short names: path prefix without library/, and the
	// default route with a one-component name.
	for _, ref := range []string{
		suite.wharf.addr + "/docker.io/crane-short:1",
		suite.wharf.addr + "/crane-short:1",
		suite.wharf.addr + "/docker.io/library/crane-short:1",
	} {
		if got := cr.digest(t, ref); got != hubShort.Digest {
			t.Errorf("crane digest %s = %s, want %s", ref, got, hubShort.Digest)
		}
	}
	expectTarball(t, cr.pull(t, suite.wharf.addr+"/crane-short:1", "short"))

	// registry.k8s.io: manifests and blobs redirected upstream.
	kbase := mirrorBase(suite.k8s)
	if got := cr.digest(t, k8s.ref(kbase)); got != k8s.Digest {
		t.Errorf("crane digest %s = %s, want %s", k8s.ref(kbase), got, k8s.Digest)
	}
	expectTarball(t, cr.pull(t, k8s.ref(kbase), "k8s"))

	ghcrReqs, hubReqs, k8sReqs := suite.ghcr.since(ghcrMark), suite.hub.since(hubMark), suite.k8s.since(k8sMark)
	for _, x := range []struct {
		u *upstream
		r reqs
		f fixture
	}{{suite.ghcr, ghcrReqs, oci}, {suite.hub, hubReqs, hubShort}, {suite.k8s, k8sReqs, k8s}} {
		expectNoBypass(t, x.u, x.r)
		expectFetchedOnce(t, x.u, x.r, x.f)
		// Each manifest GET by digest at most once: a second crane command
		// is served from the cache.
		for _, d := range []digest.Digest{x.f.Digest, x.f.Image} {
			if n := len(x.r.where(onRegistry, get, manifestRef(d.String()))); n > 1 {
				t.Errorf("%s: manifest %s fetched %d times", x.u.name, short(d), n)
			}
		}
	}
	expectCount(t, "referrer manifest GETs", ghcrReqs, 1, onRegistry, get, manifestRef(artDigest.String()))
	expectAtLeast(t, "referrers requests relayed", ghcrReqs, 1, onRegistry, byWharf, referrersOf(oci.Digest))

	// The referrers API through wharf listed the artifact with its type
	// (distribution-spec 1.1 "Listing Referrers").
	if status != http.StatusOK {
		t.Fatalf("referrers via wharf: %d %s", status, body)
	}
	var idx ocispec.Index
	if err := json.Unmarshal(body, &idx); err != nil {
		t.Fatalf("referrers via wharf: %v: %s", err, body)
	}
	if ct := hdr.Get("Content-Type"); ct != ocispec.MediaTypeImageIndex {
		t.Errorf("referrers Content-Type %q, want %q", ct, ocispec.MediaTypeImageIndex)
	}
	if len(idx.Manifests) != 1 || idx.Manifests[0].Digest != artDigest || idx.Manifests[0].ArtifactType != artifactType {
		t.Errorf("referrers of %s via wharf: %s, want one entry %s of type %s", oci.Digest, body, artDigest, artifactType)
	}

	// wharf relays the upstream's answer byte for byte.
	if ustatus, _, ubody := suite.ghcr.get(t, oci.Repo, "/v2/"+oci.Repo+"/referrers/"+oci.Digest.String()); ustatus != http.StatusOK || !bytes.Equal(ubody, body) {
		t.Errorf("referrers via wharf differ from upstream's (%d):\n%s\nwant\n%s", ustatus, body, ubody)
	}
}

// expectTarball checks that crane wrote a non-empty image tarball.
func expectTarball(t *testing.T, path string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(b, []byte("manifest.json")) {
		t.Errorf("%s is not an image tarball", path)
	}
}
