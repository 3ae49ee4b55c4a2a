package gc

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/wharf-mirror/wharf/internal/blob"
	"github.com/wharf-mirror/wharf/internal/blob/blobtest"
	"github.com/wharf-mirror/wharf/internal/meta"
	"github.com/wharf-mirror/wharf/internal/meta/metatest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// t0 is "now" in every test; content is accessed before it.
var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func ago(d time.Duration) time.Time { return t0.Add(-d) }

// fakeGuard pins digests by hand and checks that every reservation is
// released.
type fakeGuard struct {
	mu        sync.Mutex
	pinned    map[digest.Digest]bool
	reserved  map[digest.Digest]bool
	flushes   int
	onReserve func(ds []digest.Digest) // runs while the reservation is held
}

func (g *fakeGuard) FlushAccess(context.Context) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.flushes++
	return nil
}

func (g *fakeGuard) Reserve(ds ...digest.Digest) (func(), bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, d := range ds {
		if g.pinned[d] || g.reserved[d] {
			return nil, false
		}
	}
	for _, d := range ds {
		g.reserved[d] = true
	}
	if g.onReserve != nil {
		g.onReserve(ds)
	}
	return sync.OnceFunc(func() {
		g.mu.Lock()
		defer g.mu.Unlock()
		for _, d := range ds {
			delete(g.reserved, d)
		}
	}), true
}

// fixture is a cache (memory blob store and index) with helpers to fill it.
type fixture struct {
	t     *testing.T
	blobs blob.Store
	index meta.Index
	guard *fakeGuard
	now   time.Time
	seq   int
}

func newFixture(t *testing.T) *fixture {
	f := &fixture{
		t:     t,
		blobs: blobtest.NewMemory(),
		index: metatest.NewMemory(),
		guard: &fakeGuard{pinned: map[digest.Digest]bool{}, reserved: map[digest.Digest]bool{}},
		now:   t0,
	}
	t.Cleanup(func() {
		f.index.Close()
		if len(f.guard.reserved) > 0 {
			t.Errorf("reservations not released: %v", f.guard.reserved)
		}
	})
	return f
}

func (f *fixture) collector(maxSize int64, maxAge time.Duration) *Collector {
	f.t.Helper()
	c, err := New(Config{
		Blobs: f.blobs, Index: f.index, Guard: f.guard, MaxSize: maxSize, MaxAge: maxAge,
		Logger: slog.New(slog.NewTextHandler(testWriter{f.t}, nil)),
		Now:    func() time.Time { return f.now },
	})
	if err != nil {
		f.t.Fatal(err)
	}
	return c
}

// store commits size bytes unique to this call and returns their digest.
func (f *fixture) store(size int) digest.Digest {
	f.t.Helper()
	f.seq++
	data := bytes.Repeat([]byte{byte(f.seq)}, size)
	copy(data, fmt.Sprint(f.seq, "/")) // unique even when the fill byte repeats
	d := digest.FromBytes(data)
	w, err := f.blobs.Create(f.t.Context(), d, int64(size))
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := w.Write(data); err != nil {
		f.t.Fatal(err)
	}
	if err := w.Commit(f.t.Context()); err != nil {
		f.t.Fatal(err)
	}
	return d
}

// layer records a blob of size bytes, last accessed at (zero: never).
func (f *fixture) layer(size int, at time.Time) digest.Digest {
	f.t.Helper()
	d := f.store(size)
	f.must(f.index.PutBlob(f.t.Context(), meta.Blob{Digest: d, Size: int64(size)}))
	f.touch(d, at)
	return d
}

// manifest records a manifest of size bytes referencing refs, last
// accessed at (zero: never), tagged upstream/repo:tag when tag is set.
func (f *fixture) manifest(size int, at time.Time, tag string, refs ...digest.Digest) digest.Digest {
	f.t.Helper()
	d := f.store(size)
	f.must(f.index.PutManifest(f.t.Context(), meta.Manifest{Digest: d, MediaType: "m", Size: int64(size), Refs: refs}))
	f.must(f.index.Link(f.t.Context(), "u", "repo", append([]digest.Digest{d}, refs...)...))
	f.touch(d, at)
	if tag != "" {
		f.must(f.index.PutTag(f.t.Context(), meta.Tag{Upstream: "u", Repo: "repo", Name: tag, Digest: d, CheckedAt: at}))
	}
	return d
}

// image records a manifest with a config and layers of the given sizes,
// all of them (the layers too) last accessed at.
func (f *fixture) image(at time.Time, tag string, layers ...int) (m digest.Digest, own []digest.Digest) {
	f.t.Helper()
	own = append(own, f.layer(100, at))
	for _, size := range layers {
		own = append(own, f.layer(size, at))
	}
	return f.manifest(200, at, tag, own...), own
}

func (f *fixture) touch(d digest.Digest, at time.Time) {
	f.t.Helper()
	if !at.IsZero() {
		f.must(f.index.Touch(f.t.Context(), at, d))
	}
}

func (f *fixture) must(err error) {
	f.t.Helper()
	if err != nil {
		f.t.Fatal(err)
	}
}

func (f *fixture) run(c *Collector) Report {
	f.t.Helper()
	rep, err := c.Run(f.t.Context())
	if err != nil {
		f.t.Fatalf("Run: %v", err)
	}
	return rep
}

// cached reports whether d is both recorded and stored; it fails the test
// when only one of them is true.
func (f *fixture) cached(d digest.Digest) bool {
	f.t.Helper()
	ctx := f.t.Context()
	_, serr := f.blobs.Stat(ctx, d)
	_, merr := f.index.Manifest(ctx, d)
	_, berr := f.index.Blob(ctx, d)
	recorded := merr == nil || berr == nil
	if recorded != (serr == nil) {
		f.t.Fatalf("%s: recorded %v but stored %v", d, recorded, serr == nil)
	}
	return recorded
}

func (f *fixture) expect(what string, want bool, ds ...digest.Digest) {
	f.t.Helper()
	for _, d := range ds {
		if got := f.cached(d); got != want {
			f.t.Errorf("%s %s: cached = %v, want %v", what, d, got, want)
		}
	}
}

func (f *fixture) usage() int64 {
	f.t.Helper()
	u, err := f.index.Usage(f.t.Context())
	if err != nil {
		f.t.Fatal(err)
	}
	return u.Bytes
}

var ignoreDuration = cmpopts.IgnoreFields(Report{}, "Duration")

// An image that shares a layer with a remaining image loses only its own
// blobs; tags of the evicted image go, tags of the other stay.
func TestSharedBlobsSurvive(t *testing.T) {
	f := newFixture(t)
	shared := f.layer(1000, ago(time.Hour))
	old, oldOwn := f.image(ago(3*time.Hour), "old", 1000)
	f.must(f.index.PutManifest(t.Context(), meta.Manifest{Digest: old, MediaType: "m", Size: 200, Refs: append(oldOwn, shared)}))
	recent, recentOwn := f.image(ago(time.Hour), "recent", 1000)
	f.must(f.index.PutManifest(t.Context(), meta.Manifest{Digest: recent, MediaType: "m", Size: 200, Refs: append(recentOwn, shared)}))

	total := f.usage() // 3 blobs of 1000, 2 configs of 100, 2 manifests of 200
	if total != 3600 {
		t.Fatalf("fixture holds %d bytes", total)
	}
	rep := f.run(f.collector(3000, 0))
	want := Report{Manifests: 1, Blobs: 2, Bytes: 1300, SizeBefore: 3600, SizeAfter: 2300}
	if diff := cmp.Diff(want, rep, ignoreDuration); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	f.expect("old image", false, append(oldOwn, old)...)
	f.expect("shared layer", true, shared)
	f.expect("recent image", true, append(recentOwn, recent)...)
	if _, err := f.index.Tag(t.Context(), "u", "repo", "old"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("tag of the evicted image: %v, want ErrNotFound", err)
	}
	if _, err := f.index.Tag(t.Context(), "u", "repo", "recent"); err != nil {
		t.Errorf("tag of the remaining image: %v", err)
	}
	if ok, err := f.index.Linked(t.Context(), "u", "repo", oldOwn[1]); err != nil || ok {
		t.Errorf("link of an evicted layer = %v, %v", ok, err)
	}
	if f.guard.flushes != 1 {
		t.Errorf("%d access flushes, want 1 per run", f.guard.flushes)
	}
}

// A child manifest of a remaining index is never evicted, however old its
// own access; an index counts as used when any child was; once an index
// goes, its children follow in LRU order.
func TestIndexChildren(t *testing.T) {
	f := newFixture(t)
	pulled, pulledOwn := f.image(ago(10*time.Minute), "", 1000) // the platform in use
	idle, idleOwn := f.image(ago(48*time.Hour), "", 1000)       // another platform
	idx := f.manifest(300, ago(48*time.Hour), "multi", pulled, idle)
	other, otherOwn := f.image(ago(5*time.Hour), "other", 1000)

	// By age: idle is older than a day but its index was used through
	// pulled, so nothing of the index goes; other is younger than a day.
	rep := f.run(f.collector(0, 24*time.Hour))
	if rep.Manifests+rep.Blobs != 0 {
		t.Errorf("evicted %+v, want nothing", rep)
	}
	f.expect("index", true, idx, idle, pulled)
	f.expect("idle child", true, idleOwn...)

	// By size: other is least recently used (the index's effective access
	// is pulled's), so it goes first, and that is enough.
	rep = f.run(f.collector(f.usage()-1, 0))
	if rep.Manifests != 1 {
		t.Errorf("evicted %+v, want one manifest", rep)
	}
	f.expect("other", false, append(otherOwn, other)...)
	f.expect("index", true, append(append(idleOwn, pulledOwn...), idx, idle, pulled)...)

	// Once the index goes, so do its children: everything is older than
	// a minute.
	f.now = t0.Add(time.Hour)
	rep = f.run(f.collector(0, time.Minute))
	if rep.Manifests != 3 || rep.Blobs != 4 || rep.SizeAfter != 0 {
		t.Errorf("evicted %+v, want 3 manifests, 4 blobs, nothing left", rep)
	}
	f.expect("index", false, append(append(idleOwn, pulledOwn...), idx, idle, pulled)...)
	if _, err := f.index.Tag(t.Context(), "u", "repo", "multi"); !errors.Is(err, meta.ErrNotFound) {
		t.Errorf("tag of the evicted index: %v", err)
	}
}

// A child shared by two indexes stays while either remains.
func TestChildOfTwoIndexes(t *testing.T) {
	f := newFixture(t)
	child, childOwn := f.image(ago(72*time.Hour), "", 500)
	oldIdx := f.manifest(300, ago(48*time.Hour), "v1", child)
	newIdx := f.manifest(300, ago(time.Minute), "v2", child)
	rep := f.run(f.collector(0, 24*time.Hour))
	// The child's effective access is its own (old), but newIdx holds it.
	if rep.Manifests != 1 {
		t.Errorf("evicted %+v, want the old index only", rep)
	}
	f.expect("old index", false, oldIdx)
	f.expect("shared child", true, append(childOwn, child, newIdx)...)
}

// Orphan blobs go by their own last access; a layer's old access does not
// evict it while its image is in use.
func TestOrphansByAge(t *testing.T) {
	f := newFixture(t)
	oldOrphan := f.layer(1000, ago(40*24*time.Hour))
	newOrphan := f.layer(1000, ago(24*time.Hour))
	img, own := f.image(ago(time.Hour), "v1", 1000)
	f.touch(own[1], ago(60*24*time.Hour)) // no effect: touches only move forward
	staleLayer := f.layer(1000, ago(90*24*time.Hour))
	f.must(f.index.PutManifest(t.Context(), meta.Manifest{Digest: img, MediaType: "m", Size: 200, Refs: append(own, staleLayer)}))

	rep := f.run(f.collector(0, 30*24*time.Hour))
	want := Report{Blobs: 1, Bytes: 1000, SizeBefore: 4300, SizeAfter: 3300}
	if diff := cmp.Diff(want, rep, ignoreDuration); diff != "" {
		t.Errorf("report (-want +got):\n%s", diff)
	}
	f.expect("old orphan", false, oldOrphan)
	f.expect("recent orphan", true, newOrphan)
	f.expect("image", true, append(own, img, staleLayer)...)
}

// Content in use is never evicted; the run skips it, counts it and evicts
// the next unit instead.
func TestPinnedSurvive(t *testing.T) {
	f := newFixture(t)
	oldest, oldestOwn := f.image(ago(3*time.Hour), "", 1000)
	older, olderOwn := f.image(ago(2*time.Hour), "", 1000)
	recent, recentOwn := f.image(ago(time.Hour), "", 1000)
	orphan := f.layer(1000, ago(4*time.Hour))
	f.guard.pinned[oldestOwn[1]] = true // a layer being served
	f.guard.pinned[orphan] = true       // a blob being fetched

	rep := f.run(f.collector(f.usage()-1, 0))
	if rep.InUse != 2 || rep.Manifests != 1 {
		t.Errorf("report %+v, want 2 skipped in use and 1 manifest evicted", rep)
	}
	f.expect("pinned image", true, append(oldestOwn, oldest, orphan)...)
	f.expect("next image", false, append(olderOwn, older)...)
	f.expect("recent image", true, append(recentOwn, recent)...)
}

// When in-use content keeps the cache over its bound, the run evicts what
// it may and reports the rest.
func TestPinnedKeepCacheOverBound(t *testing.T) {
	f := newFixture(t)
	a, aOwn := f.image(ago(2*time.Hour), "", 1000)
	b, bOwn := f.image(ago(time.Hour), "", 1000)
	f.guard.pinned[a] = true
	f.guard.pinned[b] = true
	rep := f.run(f.collector(1000, 0))
	if rep.InUse != 2 || rep.Manifests+rep.Blobs != 0 || rep.SizeAfter != rep.SizeBefore {
		t.Errorf("report %+v, want both skipped, nothing evicted", rep)
	}
	f.expect("pinned", true, append(append(aOwn, bOwn...), a, b)...)

	clear(f.guard.pinned)
	rep = f.run(f.collector(1000, 0))
	if rep.SizeAfter > 900 || rep.InUse != 0 {
		t.Errorf("after unpinning: %+v, want at most 90%% of 1000 bytes", rep)
	}
}

func TestMaxAge(t *testing.T) {
	f := newFixture(t)
	type img struct {
		d    digest.Digest
		own  []digest.Digest
		keep bool
	}
	var imgs []img
	for i, age := range []time.Duration{31 * 24 * time.Hour, 30*24*time.Hour + time.Second, 30 * 24 * time.Hour, 29 * 24 * time.Hour, time.Minute} {
		d, own := f.image(ago(age), fmt.Sprint("v", i), 1000)
		imgs = append(imgs, img{d, own, age <= 30*24*time.Hour})
	}
	rep := f.run(f.collector(0, 30*24*time.Hour))
	if rep.Manifests != 2 || rep.Blobs != 4 || rep.Bytes != 2*1300 {
		t.Errorf("report %+v, want the two images older than 30d", rep)
	}
	for _, im := range imgs {
		f.expect("image", im.keep, append(im.own, im.d)...)
	}
}

// Over the bound, the least recently used images go until the cache is at
// LowWater of MaxSize; the most recently used survive.
func TestSizeBound(t *testing.T) {
	f := newFixture(t)
	const n = 20
	var imgs []digest.Digest
	for i := range n {
		// Image i was last used (n-i) minutes ago: later images are newer.
		d, _ := f.image(ago(time.Duration(n-i)*time.Minute), "", 1000)
		imgs = append(imgs, d)
	}
	total := f.usage() // 20 × 1300
	if rep := f.run(f.collector(total, 0)); rep.Manifests+rep.Blobs != 0 {
		t.Fatalf("at the bound exactly: evicted %+v", rep)
	}
	maxSize := total / 2
	rep := f.run(f.collector(maxSize, 0))
	target := int64(float64(maxSize) * LowWater)
	if rep.SizeAfter > target || rep.SizeBefore != total || rep.SizeBefore-rep.Bytes != rep.SizeAfter {
		t.Fatalf("report %+v, want at most %d bytes left", rep, target)
	}
	kept := int(rep.SizeAfter / 1300)
	if kept != int(target/1300) {
		t.Errorf("%d images kept, want %d: no more evicted than needed", kept, target/1300)
	}
	f.expect("least recently used", false, imgs[:n-kept]...)
	f.expect("most recently used", true, imgs[n-kept:]...)

	// Within the bound, a second run evicts nothing.
	if rep := f.run(f.collector(maxSize, 0)); rep.Manifests+rep.Blobs != 0 {
		t.Errorf("second run evicted %+v", rep)
	}
}

// Content with no recorded access (adopted at start) counts as accessed
// when a run first sees it, so it ages from then on.
func TestUnseenContentAgesFromFirstRun(t *testing.T) {
	f := newFixture(t)
	adopted := f.layer(1000, time.Time{})
	m := f.manifest(200, time.Time{}, "t")
	c := f.collector(0, time.Hour)
	if rep := f.run(c); rep.Manifests+rep.Blobs != 0 {
		t.Fatalf("first run evicted never-accessed content: %+v", rep)
	}
	for _, d := range []digest.Digest{adopted, m} {
		if at, err := f.index.LastAccess(t.Context(), d); err != nil || !at.Equal(t0) {
			t.Errorf("LastAccess(%s) after the first run = %v, %v; want %v", d, at, err, t0)
		}
	}
	f.now = t0.Add(30 * time.Minute)
	if rep := f.run(c); rep.Manifests+rep.Blobs != 0 {
		t.Fatalf("evicted before max age: %+v", rep)
	}
	f.now = t0.Add(2 * time.Hour)
	if rep := f.run(c); rep.Manifests != 1 || rep.Blobs != 1 {
		t.Fatalf("after max age: %+v, want both evicted", rep)
	}
}

// A manifest recorded while a run decides keeps the layers it shares with
// the unit being evicted (the index re-checks in its transaction).
func TestConcurrentlyRecordedManifestKeepsLayers(t *testing.T) {
	f := newFixture(t)
	old, own := f.image(ago(2*time.Hour), "", 1000)
	var fresh digest.Digest
	f.guard.onReserve = func(ds []digest.Digest) {
		if fresh == "" {
			fresh = f.manifest(200, t0, "", own[1]) // shares the old image's layer
		}
	}
	rep := f.run(f.collector(0, time.Hour))
	if rep.Manifests != 1 || rep.Blobs != 1 {
		t.Errorf("report %+v, want the old manifest and its config only", rep)
	}
	f.expect("old image", false, old, own[0])
	f.expect("shared layer", true, own[1], fresh)
}

func TestUnbounded(t *testing.T) {
	f := newFixture(t)
	f.image(ago(365*24*time.Hour), "", 1<<20)
	c := f.collector(0, 0)
	if c.Bounded() {
		t.Error("Bounded() of an unbounded collector")
	}
	rep := f.run(c)
	if rep.Manifests+rep.Blobs != 0 || rep.SizeBefore != rep.SizeAfter || rep.SizeAfter != 1<<20+300 {
		t.Errorf("report %+v, want nothing evicted", rep)
	}
}

// failingStore fails Delete of the digests in fail.
type failingStore struct {
	blob.Store
	fail map[digest.Digest]bool
}

var errDisk = errors.New("disk on fire")

func (s failingStore) Delete(ctx context.Context, d digest.Digest) error {
	if s.fail[d] {
		return errDisk
	}
	return s.Store.Delete(ctx, d)
}

// A file that cannot be deleted is reported; the index forgot it (so it
// never describes absent content), and the run goes on.
func TestDeleteFailure(t *testing.T) {
	f := newFixture(t)
	a, aOwn := f.image(ago(3*time.Hour), "", 1000)
	b, bOwn := f.image(ago(2*time.Hour), "", 1000)
	c, err := New(Config{Blobs: failingStore{f.blobs, map[digest.Digest]bool{aOwn[1]: true}}, Index: f.index, MaxAge: time.Hour, Now: func() time.Time { return t0 }})
	if err != nil {
		t.Fatal(err)
	}
	rep, err := c.Run(t.Context())
	if !errors.Is(err, errDisk) {
		t.Fatalf("Run = %v, want the delete error", err)
	}
	if rep.Manifests != 2 || rep.Blobs != 4 || rep.Bytes != 2*1300-1000 {
		t.Errorf("report %+v, want everything evicted, 1000 bytes not freed", rep)
	}
	for _, d := range append(append(bOwn, aOwn...), a, b) {
		if _, err := f.index.Blob(t.Context(), d); !errors.Is(err, meta.ErrNotFound) {
			if _, err := f.index.Manifest(t.Context(), d); !errors.Is(err, meta.ErrNotFound) {
				t.Errorf("%s still recorded", d)
			}
		}
	}
	if _, err := f.blobs.Stat(t.Context(), aOwn[1]); err != nil {
		t.Errorf("the undeletable file: %v", err)
	}
}

// failingIndex fails listing manifests.
type failingIndex struct{ meta.Index }

func (failingIndex) Manifests(context.Context) ([]meta.ManifestAccess, error) { return nil, errDisk }

func TestIndexFailure(t *testing.T) {
	f := newFixture(t)
	var observed []error
	c, err := New(Config{Blobs: f.blobs, Index: failingIndex{f.index}, MaxAge: time.Hour,
		Observe: func(_ Report, err error) { observed = append(observed, err) }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Run(t.Context()); !errors.Is(err, errDisk) {
		t.Fatalf("Run = %v, want the index error", err)
	}
	if len(observed) != 1 || !errors.Is(observed[0], errDisk) {
		t.Errorf("observed %v, want the one failed run", observed)
	}
}

func TestNewRejects(t *testing.T) {
	f := newFixture(t)
	for _, cfg := range []Config{
		{Index: f.index},
		{Blobs: f.blobs},
		{Blobs: f.blobs, Index: f.index, MaxSize: -1},
		{Blobs: f.blobs, Index: f.index, MaxAge: -time.Second},
	} {
		if _, err := New(cfg); err == nil {
			t.Errorf("New(%+v) succeeded", cfg)
		}
	}
}

// Loop runs at once and on every tick, reports each run to Observe, and
// returns when its context ends.
func TestLoop(t *testing.T) {
	f := newFixture(t)
	f.image(ago(2*time.Hour), "", 1000)
	runs := make(chan Report, 100)
	c, err := New(Config{Blobs: f.blobs, Index: f.index, Guard: f.guard, MaxAge: time.Hour,
		Now: func() time.Time { return t0 }, Observe: func(r Report, err error) {
			if err != nil {
				t.Errorf("run failed: %v", err)
			}
			select {
			case runs <- r:
			default: // the test stopped reading
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan struct{})
	go func() {
		defer close(done)
		c.Loop(ctx, time.Millisecond)
	}()
	first := <-runs
	if first.Manifests != 1 {
		t.Errorf("first run %+v, want the old image evicted", first)
	}
	for range 3 {
		if r := <-runs; r.Manifests+r.Blobs != 0 {
			t.Errorf("later run evicted %+v", r)
		}
	}
	// An on-demand run takes its turn between background runs.
	if _, err := c.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	cancel()
	<-done
}

// testWriter sends log lines to the test log.
type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(bytes.TrimRight(p, "\n")))
	return len(p), nil
}
