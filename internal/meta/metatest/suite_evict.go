package metatest

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/meta"
)

func mustDo(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func testListManifests(t *testing.T, x meta.Index) {
	ctx := t.Context()
	if ms, err := x.Manifests(ctx); err != nil || len(ms) != 0 {
		t.Fatalf("Manifests of an empty index = %v, %v; want empty, nil", ms, err)
	}
	old, mid, recent, never, never2 := dg("old"), dg("mid"), dg("recent"), dg("never"), dg("never2")
	layer := dg("layer")
	recs := map[digest.Digest]meta.Manifest{
		old:    {Digest: old, MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 10, Refs: []digest.Digest{dg("config"), layer, dg("b"), layer}},
		mid:    {Digest: mid, MediaType: "application/vnd.oci.image.index.v1+json", Size: 20, Refs: []digest.Digest{old, recent}},
		recent: {Digest: recent, MediaType: "m", Size: 30},
		never:  {Digest: never, MediaType: "m", Size: 40, Refs: []digest.Digest{layer}},
		never2: {Digest: never2, MediaType: "m", Size: 50},
	}
	for _, m := range recs {
		mustDo(t, x.PutManifest(ctx, m))
	}
	// A blob record and touches of other digests do not make manifests.
	mustDo(t, x.PutBlob(ctx, meta.Blob{Digest: layer, Size: 7}))
	mustDo(t, x.Touch(ctx, base.Add(time.Hour), layer, dg("untracked")))
	mustDo(t, x.Touch(ctx, base, old))
	mustDo(t, x.Touch(ctx, base.Add(2*time.Minute), recent))
	mustDo(t, x.Touch(ctx, base.Add(time.Minute), mid))
	mustDo(t, x.Touch(ctx, base.Add(-time.Hour), recent)) // older touch: ignored

	// never and never2 first, by digest; then by time.
	nevers := []digest.Digest{never, never2}
	if nevers[0] > nevers[1] {
		nevers[0], nevers[1] = nevers[1], nevers[0]
	}
	want := []meta.ManifestAccess{
		{Manifest: recs[nevers[0]]},
		{Manifest: recs[nevers[1]]},
		{Manifest: recs[old], LastAccess: base},
		{Manifest: recs[mid], LastAccess: base.Add(time.Minute)},
		{Manifest: recs[recent], LastAccess: base.Add(2 * time.Minute)},
	}
	got, err := x.Manifests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, approxTime, cmpopts.EquateEmpty()); diff != "" {
		t.Errorf("Manifests (-want +got):\n%s", diff)
	}
	for _, m := range got {
		if m.LastAccess.IsZero() {
			continue
		}
		if m.LastAccess.Location() != time.UTC {
			t.Errorf("LastAccess of %s in %v, want UTC", m.Digest, m.LastAccess.Location())
		}
	}

	// The listing is a copy.
	got[2].Refs[0] = dg("caller modifies the listing")
	if m, err := x.Manifest(ctx, old); err != nil || m.Refs[0] != dg("config") {
		t.Errorf("Manifest after modifying the listing: %+v, %v", m, err)
	}

	// A tie in time falls back to the digest.
	mustDo(t, x.Touch(ctx, base.Add(time.Hour), old, mid))
	got, err = x.Manifests(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tied := []digest.Digest{old, mid}
	if tied[0] > tied[1] {
		tied[0], tied[1] = tied[1], tied[0]
	}
	var order []digest.Digest
	for _, m := range got {
		order = append(order, m.Digest)
	}
	if diff := cmp.Diff([]digest.Digest{nevers[0], nevers[1], recent, tied[0], tied[1]}, order); diff != "" {
		t.Errorf("Manifests order after a tie (-want +got):\n%s", diff)
	}
}

func testListBlobs(t *testing.T, x meta.Index) {
	ctx := t.Context()
	if bs, err := x.Blobs(ctx); err != nil || len(bs) != 0 {
		t.Fatalf("Blobs of an empty index = %v, %v; want empty, nil", bs, err)
	}
	a, b, c := dg("a"), dg("b"), dg("c")
	mustDo(t, x.PutBlob(ctx, meta.Blob{Digest: a, Size: 1}))
	mustDo(t, x.PutBlob(ctx, meta.Blob{Digest: b, Size: 2 << 40}))
	mustDo(t, x.PutBlob(ctx, meta.Blob{Digest: c, Size: 0}))
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: dg("m"), MediaType: "m", Size: 5, Refs: []digest.Digest{a}}))
	mustDo(t, x.Touch(ctx, base.Add(time.Minute), a))
	mustDo(t, x.Touch(ctx, base, b, dg("m")))
	want := []meta.BlobAccess{
		{Blob: meta.Blob{Digest: c, Size: 0}},
		{Blob: meta.Blob{Digest: b, Size: 2 << 40}, LastAccess: base},
		{Blob: meta.Blob{Digest: a, Size: 1}, LastAccess: base.Add(time.Minute)},
	}
	got, err := x.Blobs(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, approxTime); diff != "" {
		t.Errorf("Blobs (-want +got):\n%s", diff)
	}
}

func testUsage(t *testing.T, x meta.Index) {
	ctx := t.Context()
	if u, err := x.Usage(ctx); err != nil || u != (meta.Usage{}) {
		t.Fatalf("Usage of an empty index = %+v, %v; want zero, nil", u, err)
	}
	both := dg("both") // a manifest also fetched through the blobs endpoint
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: dg("m1"), MediaType: "m", Size: 100, Refs: []digest.Digest{dg("b1")}}))
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: both, MediaType: "m", Size: 20}))
	mustDo(t, x.PutBlob(ctx, meta.Blob{Digest: dg("b1"), Size: 1000}))
	mustDo(t, x.PutBlob(ctx, meta.Blob{Digest: dg("b2"), Size: 3 << 40}))
	mustDo(t, x.PutBlob(ctx, meta.Blob{Digest: both, Size: 20}))
	// Tags, links and touches are not content.
	mustPutTag(t, x, meta.Tag{Upstream: "u", Repo: "r", Name: "t", Digest: dg("elsewhere"), CheckedAt: base})
	mustDo(t, x.Link(ctx, "u", "r", dg("elsewhere")))
	mustDo(t, x.Touch(ctx, base, dg("elsewhere")))

	want := meta.Usage{Manifests: 2, Blobs: 3, Bytes: 100 + 20 + 1000 + 3<<40}
	if u, err := x.Usage(ctx); err != nil || u != want {
		t.Errorf("Usage = %+v, %v; want %+v", u, err, want)
	}
}

// testEvict checks what Evict removes and what it leaves alone.
func testEvict(t *testing.T, x meta.Index) {
	ctx := t.Context()
	if ev, err := x.Evict(ctx); err != nil || len(ev) != 0 {
		t.Errorf("Evict() = %v, %v; want nothing", ev, err)
	}
	img, cfg, layer := dg("image"), dg("config"), dg("layer")
	other, otherLayer := dg("other image"), dg("other layer")
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: img, MediaType: "m", Size: 10, Refs: []digest.Digest{cfg, layer}}))
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: other, MediaType: "m", Size: 11, Refs: []digest.Digest{otherLayer}}))
	for _, b := range []meta.Blob{{Digest: cfg, Size: 1}, {Digest: layer, Size: 2}, {Digest: otherLayer, Size: 3}} {
		mustDo(t, x.PutBlob(ctx, b))
	}
	mustPutTag(t, x, meta.Tag{Upstream: "u", Repo: "r", Name: "v1", Digest: img, CheckedAt: base})
	mustPutTag(t, x, meta.Tag{Upstream: "u", Repo: "r2", Name: "latest", Digest: img, CheckedAt: base})
	mustPutTag(t, x, meta.Tag{Upstream: "u", Repo: "r", Name: "v2", Digest: other, CheckedAt: base})
	mustDo(t, x.Link(ctx, "u", "r", img, cfg, layer, other, otherLayer))
	mustDo(t, x.Link(ctx, "u", "r2", img, cfg, layer))
	mustDo(t, x.Touch(ctx, base, img, cfg, layer, other, otherLayer))

	never := dg("never recorded")
	got, err := x.Evict(ctx, img, layer, cfg, layer, never)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]digest.Digest{img, layer, cfg, never}, got); diff != "" {
		t.Errorf("Evict returned (-want +got):\n%s", diff)
	}

	// Gone: records, tags, links, access of the evicted digests.
	for _, d := range []digest.Digest{img, cfg, layer} {
		if _, err := x.Manifest(ctx, d); !errors.Is(err, meta.ErrNotFound) {
			t.Errorf("Manifest(%s) after Evict = %v, want ErrNotFound", d, err)
		}
		if _, err := x.Blob(ctx, d); !errors.Is(err, meta.ErrNotFound) {
			t.Errorf("Blob(%s) after Evict = %v, want ErrNotFound", d, err)
		}
		if _, err := x.LastAccess(ctx, d); !errors.Is(err, meta.ErrNotFound) {
			t.Errorf("LastAccess(%s) after Evict = %v, want ErrNotFound", d, err)
		}
		for _, repo := range []string{"r", "r2"} {
			if ok, err := x.Linked(ctx, "u", repo, d); err != nil || ok {
				t.Errorf("Linked(%s, %s) after Evict = %v, %v; want false", repo, d, ok, err)
			}
		}
	}
	for _, k := range [][2]string{{"r", "v1"}, {"r2", "latest"}} {
		if _, err := x.Tag(ctx, "u", k[0], k[1]); !errors.Is(err, meta.ErrNotFound) {
			t.Errorf("Tag %v after Evict = %v, want ErrNotFound", k, err)
		}
	}

	// Kept: everything of the other image.
	if m, err := x.Manifest(ctx, other); err != nil || len(m.Refs) != 1 {
		t.Errorf("other Manifest after Evict = %+v, %v", m, err)
	}
	if _, err := x.Blob(ctx, otherLayer); err != nil {
		t.Errorf("other Blob after Evict: %v", err)
	}
	if _, err := x.Tag(ctx, "u", "r", "v2"); err != nil {
		t.Errorf("other Tag after Evict: %v", err)
	}
	if ok, err := x.Linked(ctx, "u", "r", otherLayer); err != nil || !ok {
		t.Errorf("other link after Evict = %v, %v", ok, err)
	}
	if _, err := x.LastAccess(ctx, other); err != nil {
		t.Errorf("other access after Evict: %v", err)
	}
	if u, err := x.Usage(ctx); err != nil || u != (meta.Usage{Manifests: 1, Blobs: 1, Bytes: 11 + 3}) {
		t.Errorf("Usage after Evict = %+v, %v", u, err)
	}
	if ms, err := x.Manifests(ctx); err != nil || len(ms) != 1 || ms[0].Digest != other {
		t.Errorf("Manifests after Evict = %+v, %v", ms, err)
	}

	// Evicting again finds nothing recorded; the digests still come back,
	// so a caller can delete bytes the index never knew.
	if got, err := x.Evict(ctx, img); err != nil || len(got) != 1 || got[0] != img {
		t.Errorf("second Evict = %v, %v; want [%s]", got, err, img)
	}
	// The evicted manifest's refs went with it: recorded again without
	// refs, it has none.
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: img, MediaType: "m", Size: 10}))
	if m, err := x.Manifest(ctx, img); err != nil || len(m.Refs) != 0 {
		t.Errorf("re-recorded manifest: %+v, %v; want no refs", m, err)
	}
}

// testEvictKeepsReferenced checks the guard: nothing a remaining manifest
// references is evicted, transitively.
func testEvictKeepsReferenced(t *testing.T, x meta.Index) {
	ctx := t.Context()
	idx, child, shared, own, childOwn := dg("index"), dg("child"), dg("shared layer"), dg("own layer"), dg("child layer")
	img := dg("image")
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: idx, MediaType: "i", Size: 1, Refs: []digest.Digest{child}}))
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: child, MediaType: "m", Size: 2, Refs: []digest.Digest{childOwn, shared}}))
	mustDo(t, x.PutManifest(ctx, meta.Manifest{Digest: img, MediaType: "m", Size: 3, Refs: []digest.Digest{shared, own}}))
	for _, d := range []digest.Digest{shared, own, childOwn} {
		mustDo(t, x.PutBlob(ctx, meta.Blob{Digest: d, Size: 10}))
	}
	mustPutTag(t, x, meta.Tag{Upstream: "u", Repo: "r", Name: "child", Digest: child, CheckedAt: base})

	// The child of a remaining index stays, and with it its layers.
	got, err := x.Evict(ctx, child, childOwn, shared)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 0 {
		t.Errorf("Evict of an index's child evicted %v, want nothing", got)
	}
	if _, err := x.Tag(ctx, "u", "r", "child"); err != nil {
		t.Errorf("tag of a kept manifest: %v", err)
	}

	// An image's shared layer stays while the other image remains.
	got, err = x.Evict(ctx, img, shared, own)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]digest.Digest{img, own}, got); diff != "" {
		t.Errorf("Evict with a shared layer (-want +got):\n%s", diff)
	}
	if _, err := x.Blob(ctx, shared); err != nil {
		t.Errorf("shared layer after Evict: %v", err)
	}

	// The index and its child together: all of it goes.
	got, err = x.Evict(ctx, idx, child, childOwn, shared)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]digest.Digest{idx, child, childOwn, shared}, got); diff != "" {
		t.Errorf("Evict of an index with its child (-want +got):\n%s", diff)
	}
	if u, err := x.Usage(ctx); err != nil || u != (meta.Usage{}) {
		t.Errorf("Usage after evicting everything = %+v, %v; want zero", u, err)
	}
	if _, err := x.Tag(ctx, "u", "r", "child"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("tag of the evicted child = %v, want ErrNotFound", err)
	}
}
