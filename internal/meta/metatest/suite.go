// Package metatest holds the conformance suite that defines the semantics of
// meta.Index, and an in-memory Index for tests of packages that consume one.
//
// Every implementation runs the suite from a one-line test:
//
//	func TestIndex(t *testing.T) { metatest.Run(t, newIndex) }
//
// Semantics the suite pins down beyond the interface's doc comments:
//   - Times come back in UTC, equal to what was stored to at least the
//     millisecond.
//   - Tags of a repository with no tags is an empty list, not an error;
//     Linked of an unseen digest is false, not an error.
//   - Refs keep their order and duplicates (an image may use the same layer
//     twice); a manifest without refs may come back with nil or empty Refs.
//   - Reconcile asks present about every digest that any record names
//     (manifest, blob, tag, link, last access; not the Refs of a manifest)
//     and, for each absent one, removes the manifest record with its Refs,
//     the blob record, the tags pointing to it, its links and its last
//     access. The count is of removed manifest, blob, tag, link and access
//     records.
//   - Manifests and Blobs list records with their last access (zero when
//     never touched), never-touched first, then oldest first, ties by
//     digest; Refs in the listing are as Manifest returns them.
//   - Usage counts a digest recorded both as a manifest and as a blob once.
//   - Evict removes the same records as Reconcile does for absent content,
//     except for digests a manifest outside the evicted set references
//     (transitively through kept manifests); it returns what it evicted in
//     the order asked, once each, including digests that had no records.
//   - Repositories: a repository is an (upstream, name) with a tag or a
//     link. Manifests and Bytes count the linked digests that have a
//     manifest or blob record (a digest recorded as both once, with the
//     larger size, as in Usage); LastAccess is the latest access of linked
//     digests and of the digests its tags point to. Match folds ASCII
//     letters only and is a literal substring (no wildcards). Pages resume
//     strictly after (AfterUpstream, AfterName), which need not exist.
//   - DeleteRepository leaves every content record, last access, and the
//     tags and links of other repositories (a longer or shorter name is
//     another repository).
//   - BlobPage and Repositories treat a limit of 0 or less as no limit.
//   - Record rejects a batch that fails Batch.Validate with an error
//     wrapping meta.ErrInvalid and writes none of it, not even the valid
//     records listed before the invalid one.
package metatest

import (
	// digest.FromString and friends need the hash implementations.
	_ "crypto/sha256"
	_ "crypto/sha512"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/meta"
)

// Run runs the conformance suite against indexes made by newIndex, which is
// called once per subtest and must return an empty index. The suite closes
// every index it gets. Subtests run in parallel.
func Run(t *testing.T, newIndex func(t *testing.T) meta.Index) {
	t.Helper()
	tests := []struct {
		name string
		fn   func(t *testing.T, x meta.Index)
	}{
		{"Tags", testTags},
		{"Manifests", testManifests},
		{"Blobs", testBlobs},
		{"Links", testLinks},
		{"Access", testAccess},
		{"Times", testTimes},
		{"Reconcile", testReconcile},
		{"ReconcileAllPresent", testReconcileAllPresent},
		{"ListManifests", testListManifests},
		{"ListBlobs", testListBlobs},
		{"Usage", testUsage},
		{"Evict", testEvict},
		{"EvictKeepsReferenced", testEvictKeepsReferenced},
		{"Repositories", testRepositories},
		{"RepositoriesPaging", testRepositoriesPaging},
		{"TagsOf", testTagsOf},
		{"DeleteRepository", testDeleteRepository},
		{"BlobPage", testBlobPage},
		{"Record", testRecord},
		{"RecordInvalid", testRecordInvalid},
		{"Concurrent", testConcurrent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			x := newIndex(t)
			t.Cleanup(func() {
				if err := x.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tt.fn(t, x)
		})
	}
}

// base is a fixed time with sub-millisecond digits, in a zone that is not
// UTC, so that precision and zone handling are exercised everywhere.
var base = time.Date(2025, 3, 14, 15, 9, 26, 535897932, time.FixedZone("UTC+5:30", 5*3600+1800))

// approxTime compares times to the millisecond, the precision the suite
// promises.
var approxTime = cmpopts.EquateApproxTime(time.Millisecond)

func dg(s string) digest.Digest { return digest.FromString(s) }

func mustPutTag(t *testing.T, x meta.Index, tag meta.Tag) {
	t.Helper()
	if err := x.PutTag(t.Context(), tag); err != nil {
		t.Fatalf("PutTag(%+v): %v", tag, err)
	}
}

func testTags(t *testing.T, x meta.Index) {
	ctx := t.Context()
	if _, err := x.Tag(ctx, "docker.io", "library/nginx", "latest"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("Tag of an empty index = %v, want ErrNotFound", err)
	}
	if ts, err := x.Tags(ctx, "docker.io", "library/nginx"); err != nil || len(ts) != 0 {
		t.Errorf("Tags of an empty index = %v, %v; want empty, nil", ts, err)
	}

	// Inserted out of order; listed in byte order of the name.
	names := []string{"latest", "1.9", "1.10", "Latest", "1.27-alpine", "a_b", "1"}
	want := []meta.Tag{}
	for i, name := range names {
		tag := meta.Tag{
			Upstream:  "docker.io",
			Repo:      "library/nginx",
			Name:      name,
			Digest:    dg(name),
			CheckedAt: base.Add(time.Duration(i) * time.Minute),
		}
		mustPutTag(t, x, tag)
		want = append(want, tag)
	}
	// The same names elsewhere must not leak into the listing.
	mustPutTag(t, x, meta.Tag{Upstream: "docker.io", Repo: "library/redis", Name: "latest", Digest: dg("redis"), CheckedAt: base})
	mustPutTag(t, x, meta.Tag{Upstream: "ghcr.io", Repo: "library/nginx", Name: "latest", Digest: dg("ghcr"), CheckedAt: base})
	mustPutTag(t, x, meta.Tag{Upstream: "docker.io", Repo: "library/nginx/sub", Name: "zzz", Digest: dg("sub"), CheckedAt: base})

	sortTags := cmpopts.SortSlices(func(a, b meta.Tag) bool { return a.Name < b.Name })
	got, err := x.Tags(ctx, "docker.io", "library/nginx")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got, approxTime, sortTags); diff != "" {
		t.Errorf("Tags (-want +got):\n%s", diff)
	}
	for i := 1; i < len(got); i++ {
		if got[i-1].Name >= got[i].Name {
			t.Errorf("Tags not sorted by name: %q before %q", got[i-1].Name, got[i].Name)
		}
	}

	// DeleteTag removes exactly one mapping; a missing one is no error.
	mustPutTag(t, x, meta.Tag{Upstream: "docker.io", Repo: "library/nginx", Name: "gone", Digest: dg("gone"), CheckedAt: base})
	if err := x.DeleteTag(ctx, "docker.io", "library/nginx", "gone"); err != nil {
		t.Fatalf("DeleteTag: %v", err)
	}
	if _, err := x.Tag(ctx, "docker.io", "library/nginx", "gone"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("Tag after DeleteTag = %v, want ErrNotFound", err)
	}
	if err := x.DeleteTag(ctx, "docker.io", "library/nginx", "never-there"); err != nil {
		t.Errorf("DeleteTag of a missing tag: %v", err)
	}

	for _, tt := range []struct{ upstream, repo, name, want string }{
		{"docker.io", "library/nginx", "latest", "latest"},
		{"docker.io", "library/nginx", "Latest", "Latest"},
		{"docker.io", "library/redis", "latest", "redis"},
		{"ghcr.io", "library/nginx", "latest", "ghcr"},
	} {
		tag, err := x.Tag(ctx, tt.upstream, tt.repo, tt.name)
		if err != nil {
			t.Errorf("Tag(%s, %s, %s): %v", tt.upstream, tt.repo, tt.name, err)
			continue
		}
		if tag.Digest != dg(tt.want) || tag.Upstream != tt.upstream || tag.Repo != tt.repo || tag.Name != tt.name {
			t.Errorf("Tag(%s, %s, %s) = %+v, want digest of %q", tt.upstream, tt.repo, tt.name, tag, tt.want)
		}
	}
	for _, k := range [][3]string{
		{"docker.io", "library/nginx", "missing"},
		{"docker.io", "library/missing", "latest"},
		{"quay.io", "library/nginx", "latest"},
		{"docker.io", "library", "nginx"},
	} {
		if _, err := x.Tag(ctx, k[0], k[1], k[2]); !errors.Is(err, meta.ErrNotFound) {
			t.Errorf("Tag(%q) = %v, want ErrNotFound", k, err)
		}
	}

	// Replacing moves the digest and the time, in both directions of time.
	for _, at := range []time.Time{base.Add(time.Hour), base.Add(-time.Hour)} {
		repl := meta.Tag{Upstream: "docker.io", Repo: "library/nginx", Name: "latest", Digest: dg("new " + at.String()), CheckedAt: at}
		mustPutTag(t, x, repl)
		got, err := x.Tag(ctx, "docker.io", "library/nginx", "latest")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(repl, got, approxTime); diff != "" {
			t.Errorf("Tag after replace (-want +got):\n%s", diff)
		}
	}
	if ts, err := x.Tags(ctx, "docker.io", "library/nginx"); err != nil || len(ts) != len(names) {
		t.Errorf("Tags after replace: %d tags, %v; want %d", len(ts), err, len(names))
	}
}

func testManifests(t *testing.T, x meta.Index) {
	ctx := t.Context()
	d := dg("manifest")
	if _, err := x.Manifest(ctx, d); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("Manifest of an empty index = %v, want ErrNotFound", err)
	}
	layer := dg("layer")
	refs := []digest.Digest{dg("config"), layer, dg("other layer"), layer, dg("a first in byte order")}
	m := meta.Manifest{
		Digest:    d,
		MediaType: "application/vnd.oci.image.manifest.v1+json",
		Size:      1234,
		Refs:      refs,
	}
	if err := x.PutManifest(ctx, m); err != nil {
		t.Fatal(err)
	}
	want := meta.Manifest{Digest: d, MediaType: m.MediaType, Size: m.Size, Refs: append([]digest.Digest(nil), refs...)}
	refs[0] = dg("caller reuses its slice") // must not reach the index
	got, err := x.Manifest(ctx, d)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Manifest (-want +got):\n%s", diff)
	}
	got.Refs[1] = dg("caller modifies the result") // must not reach the index either

	// A second manifest is independent.
	idx := meta.Manifest{Digest: dg("index"), MediaType: "application/vnd.oci.image.index.v1+json", Size: 99, Refs: []digest.Digest{d}}
	if err := x.PutManifest(ctx, idx); err != nil {
		t.Fatal(err)
	}
	if got, err := x.Manifest(ctx, d); err != nil {
		t.Fatal(err)
	} else if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Manifest after another put (-want +got):\n%s", diff)
	}

	// Re-putting replaces every field, Refs included.
	for _, repl := range []meta.Manifest{
		{Digest: d, MediaType: "application/vnd.docker.distribution.manifest.v2+json", Size: 4321, Refs: []digest.Digest{dg("only")}},
		{Digest: d, MediaType: "application/vnd.oci.image.manifest.v1+json", Size: 1},
	} {
		if err := x.PutManifest(ctx, repl); err != nil {
			t.Fatal(err)
		}
		got, err := x.Manifest(ctx, d)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(repl, got, cmpopts.EquateEmpty()); diff != "" {
			t.Errorf("Manifest after replace (-want +got):\n%s", diff)
		}
	}
	if got, err := x.Manifest(ctx, idx.Digest); err != nil {
		t.Fatal(err)
	} else if diff := cmp.Diff(idx, got); diff != "" {
		t.Errorf("other Manifest after replace (-want +got):\n%s", diff)
	}
}

func testBlobs(t *testing.T, x meta.Index) {
	ctx := t.Context()
	d := dg("blob")
	if _, err := x.Blob(ctx, d); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("Blob of an empty index = %v, want ErrNotFound", err)
	}
	for _, b := range []meta.Blob{
		{Digest: d, Size: 0},
		{Digest: d, Size: 1 << 40},
		{Digest: digest.SHA512.FromString("blob"), Size: 7},
	} {
		if err := x.PutBlob(ctx, b); err != nil {
			t.Fatal(err)
		}
		got, err := x.Blob(ctx, b.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(b, got); diff != "" {
			t.Errorf("Blob (-want +got):\n%s", diff)
		}
	}
	if _, err := x.Blob(ctx, dg("missing")); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("Blob(missing) = %v, want ErrNotFound", err)
	}
	// Blob and manifest records are separate.
	if _, err := x.Manifest(ctx, d); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("Manifest of a blob's digest = %v, want ErrNotFound", err)
	}
}

func testLinks(t *testing.T, x meta.Index) {
	ctx := t.Context()
	a, b, c := dg("a"), dg("b"), dg("c")
	if err := x.Link(ctx, "docker.io", "library/nginx", a, b); err != nil {
		t.Fatal(err)
	}
	if err := x.Link(ctx, "docker.io", "library/nginx", a); err != nil { // again: no error
		t.Fatal(err)
	}
	if err := x.Link(ctx, "docker.io", "library/nginx"); err != nil { // nothing: no error
		t.Fatal(err)
	}
	if err := x.Link(ctx, "ghcr.io", "library/redis", c); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		upstream, repo string
		d              digest.Digest
		want           bool
	}{
		{"docker.io", "library/nginx", a, true},
		{"docker.io", "library/nginx", b, true},
		{"docker.io", "library/nginx", c, false},
		{"docker.io", "library/redis", a, false},   // same digest, other repo
		{"ghcr.io", "library/nginx", a, false},     // same digest and repo, other upstream
		{"docker.io", "library/nginx/x", a, false}, // a longer repo is another repo
		{"docker.io", "library", a, false},         // so is a shorter one
		{"ghcr.io", "library/redis", c, true},
		{"docker.io", "library/redis", c, false},
	}
	for _, tt := range tests {
		got, err := x.Linked(ctx, tt.upstream, tt.repo, tt.d)
		if err != nil || got != tt.want {
			t.Errorf("Linked(%s, %s, %s) = %v, %v; want %v, nil", tt.upstream, tt.repo, tt.d, got, err, tt.want)
		}
	}

	// Many digests in one call.
	var many []digest.Digest
	for i := range 300 {
		many = append(many, dg(fmt.Sprint("many ", i)))
	}
	if err := x.Link(ctx, "docker.io", "big/repo", many...); err != nil {
		t.Fatal(err)
	}
	for _, d := range many {
		if ok, err := x.Linked(ctx, "docker.io", "big/repo", d); err != nil || !ok {
			t.Fatalf("Linked(%s) after a batch Link = %v, %v", d, ok, err)
		}
	}
}

func testAccess(t *testing.T, x meta.Index) {
	ctx := t.Context()
	a, b := dg("a"), dg("b")
	if _, err := x.LastAccess(ctx, a); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("LastAccess of an empty index = %v, want ErrNotFound", err)
	}
	if err := x.Touch(ctx, base); err != nil { // nothing: no error
		t.Fatal(err)
	}
	steps := []struct {
		at          time.Time
		ds          []digest.Digest
		wantA       time.Time
		wantB       time.Time
		description string
	}{
		{base, []digest.Digest{a, b}, base, base, "first touch"},
		{base.Add(time.Hour), []digest.Digest{a}, base.Add(time.Hour), base, "later touch moves a only"},
		{base.Add(-time.Hour), []digest.Digest{a, b}, base.Add(time.Hour), base, "earlier touch moves nothing back"},
		{base.Add(time.Millisecond), []digest.Digest{b, b}, base.Add(time.Hour), base.Add(time.Millisecond), "a millisecond later counts"},
	}
	for _, s := range steps {
		if err := x.Touch(ctx, s.at, s.ds...); err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			d    digest.Digest
			want time.Time
		}{{a, s.wantA}, {b, s.wantB}} {
			got, err := x.LastAccess(ctx, c.d)
			if err != nil {
				t.Fatalf("%s: LastAccess: %v", s.description, err)
			}
			if diff := cmp.Diff(c.want, got, approxTime); diff != "" {
				t.Errorf("%s: LastAccess (-want +got):\n%s", s.description, diff)
			}
		}
	}
	if _, err := x.LastAccess(ctx, dg("never")); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("LastAccess(never touched) = %v, want ErrNotFound", err)
	}

	var many []digest.Digest
	for i := range 300 {
		many = append(many, dg(fmt.Sprint("many ", i)))
	}
	if err := x.Touch(ctx, base, many...); err != nil {
		t.Fatal(err)
	}
	for _, d := range many {
		if _, err := x.LastAccess(ctx, d); err != nil {
			t.Fatalf("LastAccess(%s) after a batch Touch: %v", d, err)
		}
	}
}

// testTimes checks that times come back in UTC and to the millisecond,
// whatever zone and precision they were given in.
func testTimes(t *testing.T, x meta.Index) {
	ctx := t.Context()
	tests := []time.Time{
		base,
		base.UTC(),
		time.Date(2024, 2, 29, 23, 59, 59, 999_999_999, time.UTC),
		time.Date(1999, 12, 31, 23, 59, 59, 1_000_000, time.FixedZone("UTC-8", -8*3600)),
		time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Now(), // has a monotonic reading
	}
	for i, in := range tests {
		name := fmt.Sprint("t", i)
		mustPutTag(t, x, meta.Tag{Upstream: "u", Repo: "r", Name: name, Digest: dg(name), CheckedAt: in})
		if err := x.Touch(ctx, in, dg(name)); err != nil {
			t.Fatal(err)
		}
		tag, err := x.Tag(ctx, "u", "r", name)
		if err != nil {
			t.Fatal(err)
		}
		at, err := x.LastAccess(ctx, dg(name))
		if err != nil {
			t.Fatal(err)
		}
		for what, got := range map[string]time.Time{"CheckedAt": tag.CheckedAt, "LastAccess": at} {
			if got.Location() != time.UTC {
				t.Errorf("%s of %v is in %v, want UTC", what, in, got.Location())
			}
			if d := got.Sub(in).Abs(); d >= time.Millisecond {
				t.Errorf("%s = %v, stored %v: off by %v", what, got, in, d)
			}
		}
	}
}

func testReconcile(t *testing.T, x meta.Index) {
	ctx := t.Context()
	var (
		mPresent = dg("manifest present")
		mAbsent  = dg("manifest absent")
		bPresent = dg("blob present")
		bAbsent  = dg("blob absent")
		// Content that has no manifest or blob record but is named
		// by a tag, a link or an access record.
		unrecordedPresent = dg("unrecorded present")
		unrecordedAbsent  = dg("unrecorded absent")
		refOnly           = dg("named only in Refs")
	)
	isPresent := map[digest.Digest]bool{mPresent: true, bPresent: true, unrecordedPresent: true}

	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	must(x.PutManifest(ctx, meta.Manifest{Digest: mPresent, MediaType: "m", Size: 1, Refs: []digest.Digest{bPresent, bAbsent, refOnly}}))
	must(x.PutManifest(ctx, meta.Manifest{Digest: mAbsent, MediaType: "m", Size: 2, Refs: []digest.Digest{bPresent}}))
	must(x.PutBlob(ctx, meta.Blob{Digest: bPresent, Size: 3}))
	must(x.PutBlob(ctx, meta.Blob{Digest: bAbsent, Size: 4}))
	tags := []meta.Tag{
		{Upstream: "u", Repo: "r", Name: "keep", Digest: mPresent, CheckedAt: base},
		{Upstream: "u", Repo: "r", Name: "gone", Digest: mAbsent, CheckedAt: base},     // removed
		{Upstream: "u", Repo: "other", Name: "gone", Digest: mAbsent, CheckedAt: base}, // removed
		{Upstream: "u", Repo: "r", Name: "unrecorded", Digest: unrecordedPresent, CheckedAt: base},
		{Upstream: "u", Repo: "r", Name: "dangling", Digest: unrecordedAbsent, CheckedAt: base}, // removed
	}
	for _, tag := range tags {
		mustPutTag(t, x, tag)
	}
	must(x.Link(ctx, "u", "r", mPresent, mAbsent, bPresent, bAbsent, unrecordedPresent)) // 2 removed
	must(x.Link(ctx, "u2", "r", bAbsent, unrecordedAbsent))                              // 2 removed
	must(x.Touch(ctx, base, mPresent, bAbsent, unrecordedAbsent))                        // 2 removed
	const wantRemoved = 1 + 1 + 3 + 4 + 2                                                // manifests, blobs, tags, links, access

	asked := make(map[digest.Digest]int)
	var mu sync.Mutex
	removed, err := x.Reconcile(ctx, func(d digest.Digest) bool {
		mu.Lock()
		defer mu.Unlock()
		asked[d]++
		return isPresent[d]
	})
	if err != nil {
		t.Fatalf("Reconcile: %v", err)
	}
	if removed != wantRemoved {
		t.Errorf("Reconcile removed %d records, want %d", removed, wantRemoved)
	}
	for _, d := range []digest.Digest{mPresent, mAbsent, bPresent, bAbsent, unrecordedPresent, unrecordedAbsent} {
		if asked[d] == 0 {
			t.Errorf("Reconcile did not ask about %s", d)
		}
	}

	// Kept.
	if m, err := x.Manifest(ctx, mPresent); err != nil || len(m.Refs) != 3 {
		t.Errorf("present manifest: %+v, %v", m, err)
	}
	if _, err := x.Blob(ctx, bPresent); err != nil {
		t.Errorf("present blob: %v", err)
	}
	for _, name := range []string{"keep", "unrecorded"} {
		if _, err := x.Tag(ctx, "u", "r", name); err != nil {
			t.Errorf("tag %q of present content: %v", name, err)
		}
	}
	for _, d := range []digest.Digest{mPresent, bPresent, unrecordedPresent} {
		if ok, err := x.Linked(ctx, "u", "r", d); err != nil || !ok {
			t.Errorf("link to present %s: %v, %v", d, ok, err)
		}
	}
	if _, err := x.LastAccess(ctx, mPresent); err != nil {
		t.Errorf("access of present content: %v", err)
	}

	// Removed.
	if _, err := x.Manifest(ctx, mAbsent); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("absent manifest: %v, want ErrNotFound", err)
	}
	if _, err := x.Blob(ctx, bAbsent); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("absent blob: %v, want ErrNotFound", err)
	}
	for _, k := range [][2]string{{"r", "gone"}, {"other", "gone"}, {"r", "dangling"}} {
		if _, err := x.Tag(ctx, "u", k[0], k[1]); !errors.Is(err, meta.ErrNotFound) {
			t.Errorf("tag %q of absent content: %v, want ErrNotFound", k, err)
		}
	}
	for _, l := range []struct {
		upstream string
		d        digest.Digest
	}{{"u", mAbsent}, {"u", bAbsent}, {"u2", bAbsent}, {"u2", unrecordedAbsent}} {
		if ok, err := x.Linked(ctx, l.upstream, "r", l.d); err != nil || ok {
			t.Errorf("link %s to absent %s: %v, %v", l.upstream, l.d, ok, err)
		}
	}
	for _, d := range []digest.Digest{bAbsent, unrecordedAbsent} {
		if _, err := x.LastAccess(ctx, d); !errors.Is(err, meta.ErrNotFound) {
			t.Errorf("access of absent %s: %v, want ErrNotFound", d, err)
		}
	}
	if ts, err := x.Tags(ctx, "u", "r"); err != nil || len(ts) != 2 {
		t.Errorf("Tags after Reconcile: %d tags, %v; want 2", len(ts), err)
	}

	// The removed manifest's Refs went with it: recording it again
	// without refs does not bring them back.
	must(x.PutManifest(ctx, meta.Manifest{Digest: mAbsent, MediaType: "m", Size: 2}))
	if m, err := x.Manifest(ctx, mAbsent); err != nil || len(m.Refs) != 0 {
		t.Errorf("re-recorded manifest: %+v, %v; want no refs", m, err)
	}

	// Reconciling again removes nothing more.
	isPresent[mAbsent] = true
	if removed, err := x.Reconcile(ctx, func(d digest.Digest) bool { return isPresent[d] }); err != nil || removed != 0 {
		t.Errorf("second Reconcile = %d, %v; want 0, nil", removed, err)
	}
}

func testReconcileAllPresent(t *testing.T, x meta.Index) {
	ctx := t.Context()
	all := func(digest.Digest) bool { return true }
	if removed, err := x.Reconcile(ctx, all); err != nil || removed != 0 {
		t.Errorf("Reconcile of an empty index = %d, %v; want 0, nil", removed, err)
	}
	d := dg("m")
	if err := x.PutManifest(ctx, meta.Manifest{Digest: d, MediaType: "m", Size: 1, Refs: []digest.Digest{dg("l")}}); err != nil {
		t.Fatal(err)
	}
	if err := x.PutBlob(ctx, meta.Blob{Digest: dg("l"), Size: 1}); err != nil {
		t.Fatal(err)
	}
	mustPutTag(t, x, meta.Tag{Upstream: "u", Repo: "r", Name: "t", Digest: d, CheckedAt: base})
	if err := x.Link(ctx, "u", "r", d, dg("l")); err != nil {
		t.Fatal(err)
	}
	if err := x.Touch(ctx, base, d); err != nil {
		t.Fatal(err)
	}
	if removed, err := x.Reconcile(ctx, all); err != nil || removed != 0 {
		t.Errorf("Reconcile with everything present = %d, %v; want 0, nil", removed, err)
	}
	if m, err := x.Manifest(ctx, d); err != nil || len(m.Refs) != 1 {
		t.Errorf("Manifest after Reconcile: %+v, %v", m, err)
	}
	if _, err := x.Tag(ctx, "u", "r", "t"); err != nil {
		t.Errorf("Tag after Reconcile: %v", err)
	}
}

// testConcurrent hammers every method from many goroutines; run under the
// race detector it checks that the index is safe for concurrent use, and
// the final state checks that no write was lost.
func testConcurrent(t *testing.T, x meta.Index) {
	ctx := t.Context()
	const workers, rounds = 16, 25
	var wg sync.WaitGroup
	errs := make(chan error, workers*rounds*10)
	report := func(err error) {
		if err != nil {
			errs <- err
		}
	}
	for w := range workers {
		wg.Go(func() {
			repo := fmt.Sprint("repo", w%4) // workers share repos
			for i := range rounds {
				d := dg(fmt.Sprint(w, "/", i))
				name := fmt.Sprint("w", w, "-", i)
				report(x.PutBlob(ctx, meta.Blob{Digest: d, Size: int64(i)}))
				report(x.PutManifest(ctx, meta.Manifest{Digest: d, MediaType: "m", Size: int64(i), Refs: []digest.Digest{d, d}}))
				report(x.PutTag(ctx, meta.Tag{Upstream: "u", Repo: repo, Name: name, Digest: d, CheckedAt: base}))
				report(x.Link(ctx, "u", repo, d))
				report(x.Touch(ctx, base.Add(time.Duration(w*rounds+i)*time.Second), dg("shared"), d))
				if _, err := x.Tag(ctx, "u", repo, name); err != nil {
					report(fmt.Errorf("Tag right after PutTag: %w", err))
				}
				if ok, err := x.Linked(ctx, "u", repo, d); err != nil || !ok {
					report(fmt.Errorf("Linked right after Link = %v, %w", ok, err))
				}
				_, err := x.Tags(ctx, "u", repo)
				report(err)
				_, err = x.Manifest(ctx, d)
				report(err)
				if i%10 == 5 {
					_, err := x.Manifests(ctx)
					report(err)
					_, err = x.Blobs(ctx)
					report(err)
					_, err = x.Usage(ctx)
					report(err)
				}
				if i%10 == 0 {
					_, err := x.Reconcile(ctx, func(digest.Digest) bool { return true })
					report(err)
				}
				if i%10 == 7 {
					report(x.Record(ctx, meta.Batch{
						Blobs: []meta.Blob{{Digest: d, Size: int64(i)}},
						Links: []meta.Link{{Upstream: "u", Repo: repo, Digest: dg("shared")}},
					}))
					_, err := x.Repositories(ctx, meta.RepositoryQuery{Match: "repo", Limit: 2})
					report(err)
					_, err = x.TagsOf(ctx, d)
					report(err)
					_, err = x.BlobPage(ctx, d, 10)
					report(err)
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}

	if u, err := x.Usage(ctx); err != nil || u.Manifests != workers*rounds || u.Blobs != workers*rounds {
		t.Errorf("Usage after concurrent puts = %+v, %v; want %d manifests and blobs", u, err, workers*rounds)
	}
	total := 0
	for r := range 4 {
		ts, err := x.Tags(ctx, "u", fmt.Sprint("repo", r))
		if err != nil {
			t.Fatal(err)
		}
		total += len(ts)
	}
	if total != workers*rounds {
		t.Errorf("%d tags after concurrent puts, want %d", total, workers*rounds)
	}
	last, err := x.LastAccess(ctx, dg("shared"))
	if err != nil {
		t.Fatal(err)
	}
	if want := base.Add(time.Duration(workers*rounds-1) * time.Second); !cmp.Equal(want, last, approxTime) {
		t.Errorf("LastAccess after concurrent touches = %v, want the latest, %v", last, want)
	}
}
