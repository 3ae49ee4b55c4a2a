package gc

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/meta"
)

// put records a manifest of size bytes referencing refs, linked to
// u/repo with everything it references, and tagged u/repo:tag for each tag.
func (f *fixture) put(repo string, size int, tags []string, refs ...digest.Digest) digest.Digest {
	f.t.Helper()
	d := f.store(size)
	ctx := f.t.Context()
	f.must(f.index.PutManifest(ctx, meta.Manifest{Digest: d, MediaType: "m", Size: int64(size), Refs: refs}))
	f.must(f.index.Link(ctx, "u", repo, append([]digest.Digest{d}, refs...)...))
	f.touch(d, ago(time.Minute))
	for _, tag := range tags {
		f.tag(repo, tag, d)
	}
	return d
}

func (f *fixture) tag(repo, name string, d digest.Digest) {
	f.t.Helper()
	f.must(f.index.PutTag(f.t.Context(), meta.Tag{Upstream: "u", Repo: repo, Name: name, Digest: d, CheckedAt: t0}))
}

// stored lists the digests in the blob store.
func (f *fixture) stored() map[digest.Digest]int64 {
	f.t.Helper()
	files := make(map[digest.Digest]int64)
	f.must(f.blobs.Walk(f.t.Context(), func(d digest.Digest, size int64) error {
		files[d] = size
		return nil
	}))
	return files
}

func sortedStrings(ds ...digest.Digest) []string {
	s := make([]string, len(ds))
	for i, d := range ds {
		s[i] = d.String()
	}
	slices.Sort(s)
	return s
}

// removeWant is what a Remove must do: the digests whose records and
// files go, those that stay, and the roots reported kept.
type removeWant struct {
	gone, stay []digest.Digest
	kept       []Kept
	// check, when set, checks more (tags) after Remove.
	check func(t *testing.T, f *fixture)
}

func TestRemove(t *testing.T) {
	tests := []struct {
		name       string
		keepTagged bool
		// build fills the cache and returns the roots and what Remove
		// must do with them.
		build func(f *fixture) (roots []digest.Digest, want removeWant)
	}{
		{
			name: "shared layer survives removing one image", keepTagged: true,
			build: func(f *fixture) ([]digest.Digest, removeWant) {
				shared := f.layer(1000, ago(time.Hour))
				aOwn := []digest.Digest{f.layer(100, ago(time.Hour)), f.layer(500, ago(time.Hour))}
				a := f.put("repo", 200, nil, append(aOwn, shared)...)
				bOwn := []digest.Digest{f.layer(100, ago(time.Hour))}
				b := f.put("repo", 200, []string{"b"}, append(bOwn, shared)...)
				return []digest.Digest{a}, removeWant{
					gone: append(aOwn, a),
					stay: append(bOwn, b, shared),
				}
			},
		},
		{
			name: "an index goes with its children and their blobs", keepTagged: true,
			build: func(f *fixture) ([]digest.Digest, removeWant) {
				amd, amdOwn := f.image(ago(time.Hour), "", 300)
				arm, armOwn := f.image(ago(time.Hour), "", 400)
				idx := f.put("repo", 300, nil, amd, arm)
				other, otherOwn := f.image(ago(time.Hour), "other", 300)
				return []digest.Digest{idx}, removeWant{
					gone: append(append(amdOwn, armOwn...), idx, amd, arm),
					stay: append(otherOwn, other),
				}
			},
		},
		{
			name: "an index and its child as roots, child first", keepTagged: true,
			build: func(f *fixture) ([]digest.Digest, removeWant) {
				child, childOwn := f.image(ago(time.Hour), "", 300)
				idx := f.put("repo", 300, nil, child)
				return []digest.Digest{child, idx}, removeWant{gone: append(childOwn, child, idx)}
			},
		},
		{
			name: "index child referenced by another index is kept", keepTagged: true,
			build: func(f *fixture) ([]digest.Digest, removeWant) {
				child, childOwn := f.image(ago(time.Hour), "", 300)
				own, ownOwn := f.image(ago(time.Hour), "", 300)
				old := f.put("repo", 300, nil, child, own)
				newer := f.put("repo", 300, []string{"v2"}, child)
				return []digest.Digest{old, child}, removeWant{
					gone: append(ownOwn, old, own),
					stay: append(childOwn, child, newer),
					kept: []Kept{{Digest: child, Reason: KeptReferenced, By: sortedStrings(newer)}},
				}
			},
		},
		{
			name: "what a kept root references is kept, transitively", keepTagged: true,
			build: func(f *fixture) ([]digest.Digest, removeWant) {
				layer := f.layer(1000, ago(time.Hour))
				img := f.put("repo", 200, nil, layer)
				idx := f.put("repo", 300, nil, img)
				outer := f.put("repo", 300, []string{"v1"}, idx) // keeps idx
				tagged := f.put("repo", 300, []string{"v2"})
				return []digest.Digest{layer, img, idx, tagged}, removeWant{
					stay: []digest.Digest{layer, img, idx, outer, tagged},
					kept: []Kept{
						{Digest: layer, Reason: KeptReferenced, By: sortedStrings(img)},
						{Digest: img, Reason: KeptReferenced, By: sortedStrings(idx)},
						{Digest: idx, Reason: KeptReferenced, By: sortedStrings(outer)},
						{Digest: tagged, Reason: KeptTagged, By: []string{"u/repo:v2"}},
					},
				}
			},
		},
		{
			name: "the child of a tagged index is referenced", keepTagged: true,
			build: func(f *fixture) ([]digest.Digest, removeWant) {
				child, childOwn := f.image(ago(time.Hour), "", 300)
				idx := f.put("repo", 300, []string{"latest"}, child)
				return []digest.Digest{idx, child}, removeWant{
					stay: append(childOwn, idx, child),
					kept: []Kept{
						{Digest: idx, Reason: KeptTagged, By: []string{"u/repo:latest"}},
						{Digest: child, Reason: KeptReferenced, By: sortedStrings(idx)},
					},
				}
			},
		},
		{
			name: "a blob a manifest references is kept, whatever keepTagged says", keepTagged: false,
			build: func(f *fixture) ([]digest.Digest, removeWant) {
				m, own := f.image(ago(time.Hour), "v1", 300)
				m2 := f.put("repo", 200, nil, own[1])
				return []digest.Digest{own[1]}, removeWant{
					stay: append(own, m, m2),
					kept: []Kept{{Digest: own[1], Reason: KeptReferenced, By: sortedStrings(m, m2)}},
				}
			},
		},
		{
			name: "tagged elsewhere is kept with keepTagged", keepTagged: true,
			build: func(f *fixture) ([]digest.Digest, removeWant) {
				m, own := f.image(ago(time.Hour), "v1", 300)
				f.tag("other", "latest", m)
				f.tag("repo", "stable", m)
				// The caller deleted the tag being deleted.
				f.must(f.index.DeleteTag(f.t.Context(), "u", "repo", "v1"))
				return []digest.Digest{m}, removeWant{
					stay: append(own, m),
					kept: []Kept{{Digest: m, Reason: KeptTagged, By: []string{"u/other:latest", "u/repo:stable"}}},
				}
			},
		},
		{
			name: "keepTagged=false removes the tags with the manifest", keepTagged: false,
			build: func(f *fixture) ([]digest.Digest, removeWant) {
				m, own := f.image(ago(time.Hour), "v1", 300)
				f.tag("other", "latest", m)
				other, otherOwn := f.image(ago(time.Hour), "v2", 300)
				return []digest.Digest{m}, removeWant{
					gone: append(own, m),
					stay: append(otherOwn, other),
					check: func(t *testing.T, f *fixture) {
						if ts, err := f.index.TagsOf(t.Context(), m); err != nil || len(ts) != 0 {
							t.Errorf("tags of the removed manifest: %v, %v; want none", ts, err)
						}
						if _, err := f.index.Tag(t.Context(), "u", "repo", "v2"); err != nil {
							t.Errorf("tag of the other image: %v", err)
						}
					},
				}
			},
		},
		{
			name: "a tagged child stays when its index goes", keepTagged: false,
			build: func(f *fixture) ([]digest.Digest, removeWant) {
				amd, amdOwn := f.image(ago(time.Hour), "", 300)
				arm, armOwn := f.image(ago(time.Hour), "", 400)
				f.tag("repo", "latest-arm64", arm)
				idx := f.put("repo", 300, []string{"latest"}, amd, arm)
				return []digest.Digest{idx}, removeWant{
					gone: append(amdOwn, idx, amd),
					stay: append(armOwn, arm),
					check: func(t *testing.T, f *fixture) {
						if _, err := f.index.Tag(t.Context(), "u", "repo", "latest-arm64"); err != nil {
							t.Errorf("tag of the kept child: %v", err)
						}
						if _, err := f.index.Tag(t.Context(), "u", "repo", "latest"); !errors.Is(err, meta.ErrNotFound) {
							t.Errorf("tag of the removed index: %v, want ErrNotFound", err)
						}
					},
				}
			},
		},
		{
			name: "content in use is skipped, the rest goes", keepTagged: true,
			build: func(f *fixture) ([]digest.Digest, removeWant) {
				busy, busyOwn := f.image(ago(time.Hour), "", 300)
				idle, idleOwn := f.image(ago(time.Hour), "", 300)
				f.guard.pinned[busyOwn[1]] = true // a layer being served
				return []digest.Digest{busy, idle}, removeWant{
					gone: append(idleOwn, idle),
					stay: append(busyOwn, busy),
					kept: []Kept{{Digest: busy, Reason: KeptInUse}},
				}
			},
		},
		{
			name: "a child root in an index in use is in use too", keepTagged: true,
			build: func(f *fixture) ([]digest.Digest, removeWant) {
				child, childOwn := f.image(ago(time.Hour), "", 300)
				idx := f.put("repo", 300, nil, child)
				f.guard.pinned[idx] = true
				return []digest.Digest{idx, child}, removeWant{
					stay: append(childOwn, idx, child),
					kept: []Kept{{Digest: idx, Reason: KeptInUse}, {Digest: child, Reason: KeptInUse}},
				}
			},
		},
		{
			name: "orphan blob root is removed", keepTagged: true,
			build: func(f *fixture) ([]digest.Digest, removeWant) {
				orphan := f.layer(1000, ago(time.Hour))
				m, own := f.image(ago(time.Hour), "v1", 300)
				return []digest.Digest{orphan}, removeWant{gone: []digest.Digest{orphan}, stay: append(own, m)}
			},
		},
		{
			name: "an unknown root among others is skipped", keepTagged: false,
			build: func(f *fixture) ([]digest.Digest, removeWant) {
				orphan := f.layer(1000, ago(time.Hour))
				return []digest.Digest{digest.FromString("never cached"), orphan, orphan}, removeWant{gone: []digest.Digest{orphan}}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			roots, want := tt.build(f)
			ctx := t.Context()

			// What the gone digests are, before they go.
			var wantRep Report
			for _, d := range want.gone {
				m, merr := f.index.Manifest(ctx, d)
				b, berr := f.index.Blob(ctx, d)
				switch {
				case merr == nil:
					wantRep.Manifests++
					wantRep.Bytes += m.Size
				case berr == nil:
					wantRep.Blobs++
					wantRep.Bytes += b.Size
				default:
					t.Fatalf("fixture: %s is not recorded", d)
				}
			}
			for _, k := range want.kept {
				if k.Reason == KeptInUse {
					wantRep.InUse++
				}
			}
			wantRep.SizeBefore = f.usage()
			wantRep.SizeAfter = wantRep.SizeBefore - wantRep.Bytes
			before := f.stored()

			var observed []Report
			c := f.collector(0, 0)
			c.observe = func(r Report, err error) {
				if err != nil {
					t.Errorf("observed error %v", err)
				}
				observed = append(observed, r)
			}
			got, err := c.Remove(ctx, roots, tt.keepTagged)
			if err != nil {
				t.Fatalf("Remove: %v", err)
			}
			if diff := cmp.Diff(Removal{Report: wantRep, Kept: want.kept}, got, ignoreDuration, cmpopts.EquateEmpty()); diff != "" {
				t.Errorf("Removal (-want +got):\n%s", diff)
			}
			f.expect("gone", false, want.gone...)
			f.expect("stay", true, want.stay...)

			// Exactly the files of the evicted digests were deleted.
			for _, d := range want.gone {
				delete(before, d)
			}
			if diff := cmp.Diff(before, f.stored()); diff != "" {
				t.Errorf("files after Remove (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff([]Report{got.Report}, observed); diff != "" {
				t.Errorf("observed (-want +got):\n%s", diff)
			}
			if f.guard.flushes != 1 {
				t.Errorf("%d access flushes, want 1", f.guard.flushes)
			}
			if want.check != nil {
				want.check(t, f)
			}
		})
	}
}

// Deleting a repository: its tags and links go, then its content by the
// rule; what another repository still uses stays, and the report says why.
func TestRemoveRepository(t *testing.T) {
	f := newFixture(t)
	ctx := t.Context()
	baseLayer := f.layer(1000, ago(time.Hour))
	base := f.put("base", 200, []string{"latest"}, baseLayer)

	app1Cfg, app1Layer := f.layer(100, ago(time.Hour)), f.layer(500, ago(time.Hour))
	app1 := f.put("app", 200, []string{"v1", "latest"}, app1Cfg, baseLayer, app1Layer)
	app2Cfg, app2Layer := f.layer(100, ago(time.Hour)), f.layer(600, ago(time.Hour))
	app2 := f.put("app", 200, []string{"v2"}, app2Cfg, baseLayer, app2Layer)
	f.tag("mirror", "v2", app2) // the same image under another name
	byDigest := f.layer(50, ago(time.Hour))
	f.must(f.index.Link(ctx, "u", "app", byDigest)) // pulled by digest alone

	ds, err := f.index.DeleteRepository(ctx, "u", "app")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(sortedStrings(app1, app1Cfg, app1Layer, app2, app2Cfg, app2Layer, baseLayer, byDigest), sortedStrings(ds...)); diff != "" {
		t.Fatalf("DeleteRepository (-want +got):\n%s", diff)
	}
	rem, err := f.collector(0, 0).Remove(ctx, ds, true)
	if err != nil {
		t.Fatal(err)
	}

	f.expect("app1", false, app1, app1Cfg, app1Layer, byDigest)
	f.expect("app2 and the base", true, app2, app2Cfg, app2Layer, base, baseLayer)
	wantKept := map[digest.Digest]Kept{
		app2:      {Digest: app2, Reason: KeptTagged, By: []string{"u/mirror:v2"}},
		app2Cfg:   {Digest: app2Cfg, Reason: KeptReferenced, By: sortedStrings(app2)},
		app2Layer: {Digest: app2Layer, Reason: KeptReferenced, By: sortedStrings(app2)},
		baseLayer: {Digest: baseLayer, Reason: KeptReferenced, By: sortedStrings(app2, base)},
	}
	var want []Kept
	for _, d := range ds { // in the order given
		if k, ok := wantKept[d]; ok {
			want = append(want, k)
		}
	}
	if diff := cmp.Diff(want, rem.Kept); diff != "" {
		t.Errorf("Kept (-want +got):\n%s", diff)
	}
	if rem.Manifests != 1 || rem.Blobs != 3 || rem.Bytes != 200+100+500+50 {
		t.Errorf("Removal %+v, want app1 with its own blobs and the blob pulled by digest", rem.Report)
	}
	if rs, err := f.index.Repositories(ctx, meta.RepositoryQuery{Match: "u/app"}); err != nil || len(rs) != 0 {
		t.Errorf("Repositories after deleting u/app = %+v, %v; want none", rs, err)
	}
	if _, err := f.index.Tag(ctx, "u", "mirror", "v2"); err != nil {
		t.Errorf("tag of the kept image: %v", err)
	}
}

func TestRemoveNotCached(t *testing.T) {
	f := newFixture(t)
	f.image(ago(time.Hour), "v1", 300)
	observed := 0
	c := f.collector(0, 0)
	c.observe = func(Report, error) { observed++ }
	for _, roots := range [][]digest.Digest{
		{digest.FromString("never cached")},
		{digest.FromString("never cached"), digest.FromString("never cached")},
	} {
		rem, err := c.Remove(t.Context(), roots, false)
		if !errors.Is(err, ErrNotCached) {
			t.Errorf("Remove(%v) = %v, want ErrNotCached", roots, err)
		}
		if rem.Manifests+rem.Blobs != 0 || len(rem.Kept) != 0 {
			t.Errorf("Remove(%v) = %+v, want nothing done", roots, rem)
		}
	}
	if rem, err := c.Remove(t.Context(), nil, false); err != nil || len(rem.Kept) != 0 {
		t.Errorf("Remove(nil) = %+v, %v; want nothing", rem, err)
	}
	if observed != 0 {
		t.Errorf("observed %d removals of nothing", observed)
	}
}

// A manifest recorded while Remove decides keeps the root it references:
// the index re-checks in its transaction.
func TestRemoveConcurrentlyReferenced(t *testing.T) {
	f := newFixture(t)
	m, own := f.image(ago(time.Hour), "", 300)
	var fresh digest.Digest
	f.guard.onReserve = func([]digest.Digest) {
		if fresh == "" {
			fresh = f.manifest(200, t0, "", own[1])
		}
	}
	rem, err := f.collector(0, 0).Remove(t.Context(), []digest.Digest{m, own[1]}, true)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]Kept{{Digest: own[1], Reason: KeptReferenced}}, rem.Kept); diff != "" {
		t.Errorf("Kept (-want +got):\n%s", diff)
	}
	f.expect("removed", false, m, own[0])
	f.expect("referenced since", true, own[1], fresh)
}

// A file that cannot be deleted is reported in the error; the index forgot
// it, and the rest went.
func TestRemoveDeleteFailure(t *testing.T) {
	f := newFixture(t)
	m, own := f.image(ago(time.Hour), "", 1000)
	c, err := New(Config{Blobs: failingStore{f.blobs, map[digest.Digest]bool{own[1]: true}}, Index: f.index})
	if err != nil {
		t.Fatal(err)
	}
	rem, err := c.Remove(t.Context(), []digest.Digest{m}, true)
	if !errors.Is(err, errDisk) {
		t.Fatalf("Remove = %v, want the delete error", err)
	}
	if rem.Manifests != 1 || rem.Blobs != 2 || rem.Bytes != 200+100 {
		t.Errorf("Removal %+v, want everything evicted, the layer's bytes not freed", rem.Report)
	}
	if _, err := f.index.Blob(t.Context(), own[1]); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("the undeletable layer is still recorded: %v", err)
	}
}

// Remove waits for a run in progress, and gives up when its context ends.
func TestRemoveTakesTurns(t *testing.T) {
	f := newFixture(t)
	orphan := f.layer(1000, ago(time.Hour))
	c := f.collector(0, 0)
	if err := c.takeTurn(t.Context()); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.Remove(ctx, []digest.Digest{orphan}, false); !errors.Is(err, context.Canceled) {
		t.Errorf("Remove while a run holds the turn = %v, want context.Canceled", err)
	}
	f.expect("orphan", true, orphan)
	c.endTurn()
	if _, err := c.Remove(t.Context(), []digest.Digest{orphan}, false); err != nil {
		t.Fatal(err)
	}
	f.expect("orphan", false, orphan)
}
