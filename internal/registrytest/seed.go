package registrytest

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/distribution/reference"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
)

// Seeding writes straight into the stores: no authentication, no faults, no
// request log.

// PushImage stores img's config, layers and manifest in repo and tags it
// (tag "" pushes by digest only). It returns the manifest digest. Layers of a
// RandomImage are stored as their generator, not as bytes.
func (r *Registry) PushImage(t testing.TB, repo, tag string, img v1.Image) digest.Digest {
	t.Helper()
	r.pushImageBlobs(t, repo, img)
	raw, err := img.RawManifest()
	if err != nil {
		t.Fatalf("PushImage: manifest: %v", err)
	}
	mt, err := img.MediaType()
	if err != nil {
		t.Fatalf("PushImage: media type: %v", err)
	}
	return r.PushManifest(t, repo, tag, string(mt), raw)
}

func (r *Registry) pushImageBlobs(t testing.TB, repo string, img v1.Image) {
	t.Helper()
	checkRepo(t, repo)
	m, err := img.Manifest()
	if err != nil {
		t.Fatalf("PushImage: manifest: %v", err)
	}
	cfg, err := img.RawConfigFile()
	if err != nil {
		t.Fatalf("PushImage: config: %v", err)
	}
	if d := digest.FromBytes(cfg); d.String() != m.Config.Digest.String() {
		t.Fatalf("PushImage: config hashes to %s, manifest says %s", d, m.Config.Digest)
	}
	r.blobs.put(repo, digest.FromBytes(cfg), bytesContent(cfg))
	layers, err := img.Layers()
	if err != nil {
		t.Fatalf("PushImage: layers: %v", err)
	}
	for _, l := range layers {
		if rl, ok := l.(*randomLayer); ok {
			r.blobs.put(repo, digest.Digest(rl.digest.String()), rl.blob)
			continue
		}
		if mt, err := l.MediaType(); err == nil && !mt.IsDistributable() {
			continue // foreign layer: fetched from its urls, never from a registry (client-compat §5.7)
		}
		h, err := l.Digest()
		if err != nil {
			t.Fatalf("PushImage: layer digest: %v", err)
		}
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("PushImage: layer %s: %v", h, err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("PushImage: layer %s: %v", h, err)
		}
		if d := digest.FromBytes(data); d.String() != h.String() {
			t.Fatalf("PushImage: layer hashes to %s, claims %s", d, h)
		}
		r.blobs.put(repo, digest.Digest(h.String()), bytesContent(data))
	}
}

// PushIndex stores every image and index idx refers to (by digest) and then
// idx itself under tag ("" for by digest only). It returns the index digest.
// Children of other media types (artifacts) are not pushed.
func (r *Registry) PushIndex(t testing.TB, repo, tag string, idx v1.ImageIndex) digest.Digest {
	t.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatalf("PushIndex: %v", err)
	}
	for _, desc := range im.Manifests {
		switch {
		case desc.MediaType.IsImage():
			img, err := idx.Image(desc.Digest)
			if err != nil {
				t.Fatalf("PushIndex: %v", err)
			}
			r.PushImage(t, repo, "", img)
		case desc.MediaType.IsIndex():
			child, err := idx.ImageIndex(desc.Digest)
			if err != nil {
				t.Fatalf("PushIndex: %v", err)
			}
			r.PushIndex(t, repo, "", child)
		}
	}
	raw, err := idx.RawManifest()
	if err != nil {
		t.Fatalf("PushIndex: %v", err)
	}
	mt, err := idx.MediaType()
	if err != nil {
		t.Fatalf("PushIndex: %v", err)
	}
	return r.PushManifest(t, repo, tag, string(mt), raw)
}

// PushManifest stores body verbatim as a manifest of mediaType in repo under
// ref, a tag or the body's digest ("" for the digest). Nothing is checked
// beyond what the registry checks on a PUT (an index's image children must
// exist), so it takes anything: an artifact with a subject, a schema1
// manifest, a manifest whose blobs are missing. It returns the body's digest.
func (r *Registry) PushManifest(t testing.TB, repo, ref, mediaType string, body []byte) digest.Digest {
	t.Helper()
	checkRepo(t, repo)
	d := digest.FromBytes(body)
	if ref == "" {
		ref = d.String()
	}
	if _, err := digest.Parse(ref); err == nil && ref != d.String() {
		t.Fatalf("PushManifest: reference %s is not the body's digest %s", ref, d)
	}
	req := httptest.NewRequest(http.MethodPut, "/v2/"+repo+"/manifests/"+ref, bytes.NewReader(body))
	req.Header.Set("Content-Type", mediaType)
	rec := httptest.NewRecorder()
	r.api.ServeHTTP(rec, req)
	if rec.Code != http.StatusCreated {
		t.Fatalf("PushManifest %s:%s: %d %s", repo, ref, rec.Code, rec.Body)
	}
	return d
}

// PushBlob stores data as a blob of repo and returns its digest.
func (r *Registry) PushBlob(t testing.TB, repo string, data []byte) digest.Digest {
	t.Helper()
	checkRepo(t, repo)
	d := digest.FromBytes(data)
	r.blobs.put(repo, d, bytesContent(bytes.Clone(data)))
	return d
}

// DeleteTag removes tag from repo; the manifest stays reachable by digest.
// To move a tag, push again under the same tag instead.
func (r *Registry) DeleteTag(t testing.TB, repo, tag string) {
	t.Helper()
	checkRepo(t, repo)
	rec := httptest.NewRecorder()
	r.api.ServeHTTP(rec, httptest.NewRequest(http.MethodDelete, "/v2/"+repo+"/manifests/"+tag, nil))
	if rec.Code != http.StatusAccepted {
		t.Fatalf("DeleteTag %s:%s: %d %s", repo, tag, rec.Code, rec.Body)
	}
}

// checkRepo rejects names that could not appear in a /v2/ path.
func checkRepo(t testing.TB, repo string) {
	t.Helper()
	if _, err := reference.WithName(repo); err != nil {
		t.Fatalf("registrytest: repository %q: %v", repo, err)
	}
	if _, ok := parsePath("/v2/" + repo + "/tags/list"); !ok {
		t.Fatalf("registrytest: repository %q is not a valid name", repo)
	}
}
