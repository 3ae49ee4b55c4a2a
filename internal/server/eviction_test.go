package server_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/gc"
	"github.com/wharf-mirror/wharf/internal/registrytest"
)

// pulled is what one pull through wharf fetched: the X-Wharf-Cache result
// of every manifest and blob request, by digest.
type pulled map[digest.Digest]string

// pullVerified pulls repo:ref through wharf the way a client does — the
// manifest, then for an index every child, then every config and layer —
// and checks every body against its digest and Content-Length. It is safe
// to call from several goroutines; failures are returned, not reported.
func pullVerified(ctx context.Context, h *harness, repo, ref string, got pulled) error {
	get := func(kind, ref string) ([]byte, string, digest.Digest, error) {
		req, err := http.NewRequestWithContext(ctx, "GET", h.srv.URL+"/v2/"+repo+"/"+kind+"/"+ref, nil)
		if err != nil {
			return nil, "", "", err
		}
		resp, err := h.client.Do(req)
		if err != nil {
			return nil, "", "", fmt.Errorf("GET %s %s: %w", kind, ref, err)
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		if err != nil {
			return nil, "", "", fmt.Errorf("GET %s %s: reading body: %w", kind, ref, err)
		}
		if resp.StatusCode != http.StatusOK {
			return nil, "", "", fmt.Errorf("GET %s %s: status %d: %.200s", kind, ref, resp.StatusCode, body)
		}
		if cl := resp.Header.Get("Content-Length"); cl != strconv.Itoa(len(body)) {
			return nil, "", "", fmt.Errorf("GET %s %s: Content-Length %s, body %d bytes", kind, ref, cl, len(body))
		}
		d := sha(body)
		if want := resp.Header.Get("Docker-Content-Digest"); want != d.String() {
			return nil, "", "", fmt.Errorf("GET %s %s: body is %s, Docker-Content-Digest says %s", kind, ref, d, want)
		}
		if kind == "blobs" && d.String() != ref {
			return nil, "", "", fmt.Errorf("GET blob %s: got bytes of %s", ref, d)
		}
		return body, resp.Header.Get("X-Wharf-Cache"), d, nil
	}
	var walk func(ref string, depth int) error
	walk = func(ref string, depth int) error {
		body, res, d, err := get("manifests", ref)
		if err != nil {
			return err
		}
		got[d] = res
		var m struct {
			Manifests []struct{ Digest string }
			Config    *struct{ Digest string }
			Layers    []struct{ Digest string }
		}
		if err := json.Unmarshal(body, &m); err != nil {
			return fmt.Errorf("manifest %s: %w", d, err)
		}
		for _, c := range m.Manifests {
			if depth > 2 {
				return fmt.Errorf("manifest %s: indexes nested too deep", d)
			}
			if err := walk(c.Digest, depth+1); err != nil {
				return err
			}
		}
		var blobs []string
		if m.Config != nil {
			blobs = append(blobs, m.Config.Digest)
		}
		for _, l := range m.Layers {
			blobs = append(blobs, l.Digest)
		}
		for _, b := range blobs {
			_, res, d, err := get("blobs", b)
			if err != nil {
				return err
			}
			got[d] = res
		}
		return nil
	}
	return walk(ref, 0)
}

// TestEvictionUnderConcurrentPulls fills a small cache far past its bound
// with concurrent pulls of many images while eviction runs in the
// background, then on demand, and checks that every pull succeeded with
// verified bytes, that every run brought the cache within its bound, and
// that the most recently used images survived: they pull again entirely
// from the cache, with no upstream request.
func TestEvictionUnderConcurrentPulls(t *testing.T) {
	const (
		images   = 40
		indexes  = 4
		workers  = 8
		hot      = 4       // the most recently used images, which must survive
		maxSize  = 3 << 20 // a dozen images fit
		interval = 20 * time.Millisecond
	)
	var (
		mu      sync.Mutex
		reports []gc.Report
	)
	o := defaultOptions()
	o.configure = func(c *config.Config) {
		c.Cache.MaxSize = maxSize
		c.Cache.GCInterval = config.Duration(interval)
	}
	o.onCollect = func(r gc.Report, err error) {
		if errors.Is(err, context.Canceled) {
			return // the background run that Close cancelled
		}
		if err != nil {
			t.Errorf("eviction run failed: %v", err)
		}
		mu.Lock()
		reports = append(reports, r)
		mu.Unlock()
	}
	h := newHarness(t, o)
	runsSoFar := func() []gc.Report {
		mu.Lock()
		defer mu.Unlock()
		return append([]gc.Report(nil), reports...)
	}

	// Upstream: 40 images of two layers (96 and 160 KiB, ~257 KiB with
	// config and manifest) and 4 two-platform indexes.
	type pullable struct {
		repo  string
		bytes int64
	}
	var all []pullable
	var total int64
	for i := range images {
		img := registrytest.RandomImage(t, uint64(7000+i), 96<<10, 160<<10)
		repo := fmt.Sprintf("library/app%02d", i)
		h.hub.PushImage(t, repo, "v1", img)
		raw, err := img.RawManifest()
		if err != nil {
			t.Fatal(err)
		}
		cfg, err := img.RawConfigFile()
		if err != nil {
			t.Fatal(err)
		}
		size := int64(len(raw)+len(cfg)) + 96<<10 + 160<<10
		all = append(all, pullable{repo, size})
		total += size
	}
	for i := range indexes {
		idx := registrytest.RandomIndex(t, uint64(9000+i), "linux/amd64", "linux/arm64")
		repo := fmt.Sprintf("library/multi%d", i)
		h.hub.PushIndex(t, repo, "v1", idx)
		all = append(all, pullable{repo, 0}) // small; counted by the run reports
	}
	imageSize := all[0].bytes

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Minute)
	defer cancel()

	// 1. Every image and index pulled, 8 at a time, in order, while
	// eviction runs every 20 ms; after image i, image i-8 is pulled again,
	// so that pulls meet eviction of the least recently used content (a
	// pull waits for an eviction in progress and fetches again; an eviction
	// skips content being pulled).
	const back = 8
	work := make(chan int)
	errs := make(chan error, 2*len(all))
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for i := range work {
				if err := pullVerified(ctx, h, all[i].repo, "v1", pulled{}); err != nil {
					errs <- fmt.Errorf("pull %s: %w", all[i].repo, err)
				}
				if i >= back && i < images {
					if err := pullVerified(ctx, h, all[i-back].repo, "v1", pulled{}); err != nil {
						errs <- fmt.Errorf("pull %s again: %w", all[i-back].repo, err)
					}
				}
			}
		})
	}
	for i := range all {
		work <- i
	}
	close(work)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if t.Failed() {
		t.FailNow()
	}
	during := runsSoFar()

	// Every run evicted enough of what it found to be within the bound,
	// except for content in use by the concurrent pulls.
	for i, r := range during {
		if r.SizeBefore-r.Bytes > maxSize && r.InUse == 0 {
			t.Errorf("background run %d: %d bytes before, %d freed, nothing in use: over the %d-byte bound", i, r.SizeBefore, r.Bytes, maxSize)
		}
	}

	// 2. With the pulls done, the next background run gets the cache
	// within its bound.
	var settled gc.Report
	for range 2000 {
		if rs := runsSoFar(); len(rs) > len(during) {
			if r := rs[len(rs)-1]; r.InUse == 0 && r.SizeAfter <= maxSize {
				settled = r
				break
			}
		}
		time.Sleep(5 * time.Millisecond)
	}
	if settled.SizeBefore == 0 {
		t.Fatalf("no background run got the cache within %d bytes after the pulls", maxSize)
	}

	// 3. The newest images are used again: they are now the most recently
	// used, whether still cached or fetched again.
	hotImages := all[images-hot : images]
	for _, p := range hotImages {
		if err := pullVerified(ctx, h, p.repo, "v1", pulled{}); err != nil {
			t.Fatalf("pull %s: %v", p.repo, err)
		}
	}
	onDemand, err := h.inst.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if onDemand.SizeAfter > maxSize || onDemand.InUse != 0 {
		t.Errorf("on-demand run: %+v, want at most %d bytes and nothing in use", onDemand, maxSize)
	}

	// 4. The most recently used images survived: pulled again, every
	// manifest and blob is a hit and upstream sees no request at all.
	h.hub.ResetRequests()
	for _, p := range hotImages {
		got := pulled{}
		if err := pullVerified(ctx, h, p.repo, "v1", got); err != nil {
			t.Fatalf("pull %s: %v", p.repo, err)
		}
		for d, res := range got {
			if res != "hit" {
				t.Errorf("%s: %s was a %s after eviction, want a hit", p.repo, d, res)
			}
		}
	}
	if reqs := h.hub.Requests(); len(reqs) != 0 {
		t.Errorf("pulling the most recently used images made %d upstream requests, e.g. %s %s", len(reqs), reqs[0].Method, reqs[0].Path)
	}

	// 5. The least recently used image was evicted: it is fetched again,
	// verified, and the cache is within its bound after another run.
	got := pulled{}
	if err := pullVerified(ctx, h, all[0].repo, "v1", got); err != nil {
		t.Fatalf("pull %s again: %v", all[0].repo, err)
	}
	misses := 0
	for _, res := range got {
		if res == "miss" {
			misses++
		}
	}
	if misses != len(got) {
		t.Errorf("the least recently used image pulled again: %v, want every request a miss", got)
	}
	last, err := h.inst.Collect(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if last.SizeAfter > maxSize {
		t.Errorf("last run: %+v, over %d bytes", last, maxSize)
	}

	// Everything pulled was stored, and the cache holds at most maxSize:
	// at least the difference was freed.
	var freed int64
	var manifests, blobs, evicting, inUse int
	for _, r := range runsSoFar() {
		freed += r.Bytes
		manifests += r.Manifests
		blobs += r.Blobs
		inUse += r.InUse
		if r.Manifests+r.Blobs > 0 {
			evicting++
		}
	}
	if freed < total-maxSize {
		t.Errorf("freed %d bytes in all, want at least %d (pulled %d, bound %d)", freed, total-maxSize, total, maxSize)
	}

	rs := runsSoFar()
	t.Logf("bound %d bytes (%.1f MiB), low water %.0f%%; pulled %d images of ~%d KiB and %d indexes: %d bytes (%.1f MiB), %d workers, %d images pulled twice",
		maxSize, float64(maxSize)/(1<<20), gc.LowWater*100, images, imageSize>>10, indexes, total, float64(total)/(1<<20), workers, images-back)
	t.Logf("%d runs (%d during the pulls, every %v), %d of them evicted: %d manifests, %d blobs, %d bytes (%.1f MiB) freed in all; %d unit skips while in use",
		len(rs), len(during), interval, evicting, manifests, blobs, freed, float64(freed)/(1<<20), inUse)
	for i, r := range during {
		if r.Manifests+r.Blobs+r.InUse > 0 {
			t.Logf("  run %2d during pulls: %8d → %8d bytes, evicted %2d manifests %2d blobs (%d bytes), %d skipped in use, %v",
				i, r.SizeBefore, r.SizeAfter, r.Manifests, r.Blobs, r.Bytes, r.InUse, r.Duration)
		}
	}
	for _, x := range []struct {
		name string
		r    gc.Report
	}{{"settled (background)", settled}, {"on demand", onDemand}, {"after re-pull", last}} {
		t.Logf("  %-20s %8d → %8d bytes, evicted %2d manifests %2d blobs (%d bytes), %v",
			x.name, x.r.SizeBefore, x.r.SizeAfter, x.r.Manifests, x.r.Blobs, x.r.Bytes, x.r.Duration)
	}
}
