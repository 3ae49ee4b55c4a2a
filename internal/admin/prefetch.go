package admin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/mirror"
)

// Prefetch limits.
const (
	defaultPrefetchConcurrency = 4
	maxPrefetchConcurrency     = 16
	maxPrefetchRefs            = 10000
	// blobsPerImage is how many blobs of one image are fetched at once,
	// as clients do (Docker's max-concurrent-downloads is 3).
	blobsPerImage = 3
	// keptJobs is how many finished jobs GET /api/v1/prefetch remembers.
	keptJobs = 50
	// maxManifestDepth bounds index → index nesting.
	maxManifestDepth = 4
)

// jobs owns the prefetch jobs: they run detached from the request that
// started them, until done, cancelled, or Close.
type jobs struct {
	h      *Handler
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu   sync.Mutex
	list []*job // most recent last
}

func newJobs(h *Handler) *jobs {
	ctx, cancel := context.WithCancel(context.Background())
	return &jobs{h: h, ctx: ctx, cancel: cancel}
}

func (js *jobs) close() {
	js.cancel()
	js.wg.Wait()
}

// job is one prefetch. Its state is read by status requests while workers
// update it, under mu.
type job struct {
	mu     sync.Mutex
	state  adminapi.PrefetchJob
	cancel context.CancelFunc
}

func (j *job) snapshot() adminapi.PrefetchJob {
	j.mu.Lock()
	defer j.mu.Unlock()
	s := j.state
	s.Items = append([]adminapi.PrefetchItem(nil), j.state.Items...)
	s.Bytes, s.TotalBytes, s.Done, s.Failed = 0, 0, 0, 0
	for _, it := range s.Items {
		s.Bytes += it.Bytes
		s.TotalBytes += it.TotalBytes
		switch it.State {
		case adminapi.StateDone:
			s.Done++
		case adminapi.StateFailed:
			s.Failed++
		}
	}
	return s
}

// update changes item i under the job's lock.
func (j *job) update(i int, fn func(*adminapi.PrefetchItem)) {
	j.mu.Lock()
	fn(&j.state.Items[i])
	j.mu.Unlock()
}

func newJobID() string {
	var b [8]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

func (h *Handler) startPrefetch(w http.ResponseWriter, r *http.Request) {
	var req adminapi.PrefetchRequest
	if err := readJSON(r, &req); err != nil {
		h.fail(w, r, err)
		return
	}
	job, err := h.jobs.start(req)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/v1/prefetch/"+job.ID)
	writeJSON(w, http.StatusAccepted, job)
}

func (h *Handler) listPrefetch(w http.ResponseWriter, r *http.Request) {
	h.jobs.mu.Lock()
	list := append([]*job(nil), h.jobs.list...)
	h.jobs.mu.Unlock()
	out := make([]adminapi.PrefetchJob, 0, len(list))
	for i := len(list) - 1; i >= 0; i-- {
		out = append(out, list[i].snapshot())
	}
	writeJSON(w, http.StatusOK, out)
}

func (js *jobs) find(id string) *job {
	js.mu.Lock()
	defer js.mu.Unlock()
	for _, j := range js.list {
		if j.state.ID == id {
			return j
		}
	}
	return nil
}

func (h *Handler) getPrefetch(w http.ResponseWriter, r *http.Request) {
	j := h.jobs.find(r.PathValue("id"))
	if j == nil {
		h.fail(w, r, notFound("no prefetch job %q", r.PathValue("id")))
		return
	}
	writeJSON(w, http.StatusOK, j.snapshot())
}

func (h *Handler) cancelPrefetch(w http.ResponseWriter, r *http.Request) {
	j := h.jobs.find(r.PathValue("id"))
	if j == nil {
		h.fail(w, r, notFound("no prefetch job %q", r.PathValue("id")))
		return
	}
	j.cancel()
	writeJSON(w, http.StatusOK, j.snapshot())
}

// parsePlatform reads "os/arch[/variant]".
func parsePlatform(s string) (ocispec.Platform, error) {
	parts := strings.Split(strings.TrimSpace(s), "/")
	if len(parts) < 2 || len(parts) > 3 || parts[0] == "" || parts[1] == "" || (len(parts) == 3 && parts[2] == "") {
		return ocispec.Platform{}, invalid("platform %q: want os/arch or os/arch/variant, e.g. linux/amd64", s)
	}
	p := ocispec.Platform{OS: parts[0], Architecture: parts[1]}
	if len(parts) == 3 {
		p.Variant = parts[2]
	}
	return p, nil
}

// start validates a request, resolving every reference first so that a
// typo fails the request instead of one item, and starts the job.
func (js *jobs) start(req adminapi.PrefetchRequest) (adminapi.PrefetchJob, error) {
	if len(req.Refs) == 0 {
		return adminapi.PrefetchJob{}, invalid("refs is empty: give at least one image reference")
	}
	if len(req.Refs) > maxPrefetchRefs {
		return adminapi.PrefetchJob{}, invalid("%d refs; at most %d per job", len(req.Refs), maxPrefetchRefs)
	}
	conc := req.Concurrency
	switch {
	case conc == 0:
		conc = defaultPrefetchConcurrency
	case conc < 0 || conc > maxPrefetchConcurrency:
		return adminapi.PrefetchJob{}, invalid("concurrency %d: want 1 to %d", conc, maxPrefetchConcurrency)
	}
	var platforms []ocispec.Platform
	for _, s := range req.Platforms {
		p, err := parsePlatform(s)
		if err != nil {
			return adminapi.PrefetchJob{}, err
		}
		platforms = append(platforms, p)
	}
	targets := make([]Target, len(req.Refs))
	var errs []string
	for i, ref := range req.Refs {
		t, err := js.h.resolve(ref)
		if err != nil {
			var ae *apiError
			if !errors.As(err, &ae) {
				return adminapi.PrefetchJob{}, err
			}
			errs = append(errs, ae.msg)
			continue
		}
		targets[i] = t
	}
	if len(errs) > 0 {
		return adminapi.PrefetchJob{}, invalid("%s", strings.Join(errs, "; "))
	}

	ctx, cancel := context.WithCancel(js.ctx)
	j := &job{cancel: cancel}
	j.state = adminapi.PrefetchJob{ID: newJobID(), State: adminapi.StateQueued, Created: js.h.cfg.Now().UTC()}
	for i, ref := range req.Refs {
		j.state.Items = append(j.state.Items, adminapi.PrefetchItem{Ref: ref, Reference: targets[i].Ref(), State: adminapi.StateQueued})
	}
	js.mu.Lock()
	if js.ctx.Err() != nil {
		js.mu.Unlock()
		cancel()
		return adminapi.PrefetchJob{}, &apiError{http.StatusServiceUnavailable, adminapi.CodeUnavailable, "shutting down"}
	}
	js.list = append(js.list, j)
	js.trimLocked()
	js.wg.Add(1)
	js.mu.Unlock()

	go func() {
		defer js.wg.Done()
		defer cancel()
		js.run(ctx, j, targets, platforms, conc)
	}()
	return j.snapshot(), nil
}

// trimLocked forgets the oldest finished jobs beyond keptJobs.
func (js *jobs) trimLocked() {
	for len(js.list) > keptJobs {
		k := -1
		for i, j := range js.list {
			j.mu.Lock()
			fin := !j.state.Finished.IsZero()
			j.mu.Unlock()
			if fin {
				k = i
				break
			}
		}
		if k < 0 {
			return
		}
		js.list = append(js.list[:k], js.list[k+1:]...)
	}
}

func (js *jobs) run(ctx context.Context, j *job, targets []Target, platforms []ocispec.Platform, conc int) {
	h := js.h
	start := time.Now()
	j.mu.Lock()
	j.state.State = adminapi.StateRunning
	j.mu.Unlock()

	g := errgroup.Group{}
	g.SetLimit(conc)
	for i, t := range targets {
		g.Go(func() error {
			if ctx.Err() != nil {
				j.update(i, func(it *adminapi.PrefetchItem) { it.State = adminapi.StateCanceled })
				return nil
			}
			j.update(i, func(it *adminapi.PrefetchItem) { it.State = adminapi.StateRunning })
			p := &itemProgress{j: j, i: i}
			d, err := h.prefetchOne(ctx, t, platforms, p)
			j.update(i, func(it *adminapi.PrefetchItem) {
				it.Digest = d.String()
				switch {
				case err == nil:
					it.State = adminapi.StateDone
				case ctx.Err() != nil:
					it.State, it.Error = adminapi.StateCanceled, "canceled"
				default:
					it.State, it.Error = adminapi.StateFailed, err.Error()
				}
			})
			return nil
		})
	}
	g.Wait()

	j.mu.Lock()
	j.state.Finished = h.cfg.Now().UTC()
	j.state.State = adminapi.StateDone
	for _, it := range j.state.Items {
		switch it.State {
		case adminapi.StateFailed:
			j.state.State = adminapi.StateFailed
		case adminapi.StateCanceled:
			if j.state.State == adminapi.StateDone {
				j.state.State = adminapi.StateCanceled
			}
		}
	}
	j.mu.Unlock()
	s := j.snapshot()
	h.log.LogAttrs(context.Background(), slog.LevelInfo, "prefetch finished",
		slog.String("job", s.ID), slog.String("state", s.State), slog.Int("images", len(s.Items)),
		slog.Int("done", s.Done), slog.Int("failed", s.Failed), slog.Int64("bytes", s.Bytes),
		slog.Duration("duration", time.Since(start)))
}

// itemProgress updates one item's byte counts.
type itemProgress struct {
	j *job
	i int
}

func (p *itemProgress) need(n int64) {
	p.j.update(p.i, func(it *adminapi.PrefetchItem) { it.TotalBytes += n })
}

func (p *itemProgress) got(n int64, cached bool) {
	p.j.update(p.i, func(it *adminapi.PrefetchItem) {
		it.Bytes += n
		if cached {
			it.Cached += n
		}
	})
}

// Write counts streamed bytes (io.Writer for Blob.WriteRange).
func (p *itemProgress) Write(b []byte) (int, error) {
	p.got(int64(len(b)), false)
	return len(b), nil
}

// prefetchOne pulls one image through the mirror as a client would: the
// manifest by tag or digest, for an index the children of the wanted
// platforms, for an image its config and layers. It returns the digest the
// reference resolved to.
func (h *Handler) prefetchOne(ctx context.Context, t Target, platforms []ocispec.Platform, p *itemProgress) (digest.Digest, error) {
	ref := t.Tag
	if t.Digest != "" {
		ref = t.Digest.String()
	}
	m, err := h.cfg.Mirror.Manifest(ctx, t.Upstream, t.Repo, ref, true)
	if err != nil {
		return "", err
	}
	return m.Digest, h.prefetchManifest(ctx, t, m, platforms, p, 0)
}

func (h *Handler) prefetchManifest(ctx context.Context, t Target, m *mirror.Manifest, platforms []ocispec.Platform, p *itemProgress, depth int) error {
	p.need(m.Size)
	p.got(m.Size, m.Result == mirror.ResultHit)
	var doc struct {
		Manifests []ocispec.Descriptor `json:"manifests"`
		Config    *ocispec.Descriptor  `json:"config"`
		Layers    []ocispec.Descriptor `json:"layers"`
	}
	if err := json.Unmarshal(m.Body, &doc); err != nil {
		return fmt.Errorf("manifest %s: %w", m.Digest, err)
	}
	if len(doc.Manifests) > 0 {
		if depth >= maxManifestDepth {
			return fmt.Errorf("manifest %s: indexes nested deeper than %d", m.Digest, maxManifestDepth)
		}
		matched := 0
		for _, child := range doc.Manifests {
			if !platformWanted(child.Platform, platforms) {
				continue
			}
			matched++
			cm, err := h.cfg.Mirror.Manifest(ctx, t.Upstream, t.Repo, child.Digest.String(), true)
			if err != nil {
				return err
			}
			if err := h.prefetchManifest(ctx, t, cm, platforms, p, depth+1); err != nil {
				return err
			}
		}
		if matched == 0 && len(platforms) > 0 {
			return fmt.Errorf("no manifest for platform %s in the index", platformList(platforms))
		}
		return nil
	}
	var blobs []ocispec.Descriptor
	if doc.Config != nil && doc.Config.Digest != "" {
		blobs = append(blobs, *doc.Config)
	}
	blobs = append(blobs, doc.Layers...)
	for _, b := range blobs {
		p.need(b.Size)
	}
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(blobsPerImage)
	for _, desc := range blobs {
		g.Go(func() error { return h.prefetchBlob(gctx, t, desc, p) })
	}
	return g.Wait()
}

func (h *Handler) prefetchBlob(ctx context.Context, t Target, desc ocispec.Descriptor, p *itemProgress) error {
	b, err := h.cfg.Mirror.OpenBlob(ctx, t.Upstream, t.Repo, desc.Digest)
	if err != nil {
		return fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	defer b.Close()
	if b.Result == mirror.ResultHit {
		p.got(b.Size, true)
		return nil
	}
	// Reading the fill to its end is what waits for the blob to be
	// verified and committed: the last byte comes only after that.
	if err := b.WriteRange(ctx, p, 0, b.Size); err != nil {
		return fmt.Errorf("blob %s: %w", desc.Digest, err)
	}
	return nil
}

func platformWanted(p *ocispec.Platform, want []ocispec.Platform) bool {
	if len(want) == 0 {
		return true
	}
	if p == nil {
		return false
	}
	for _, w := range want {
		if p.OS == w.OS && p.Architecture == w.Architecture && (w.Variant == "" || p.Variant == w.Variant) {
			return true
		}
	}
	return false
}

func platformList(ps []ocispec.Platform) string {
	var s []string
	for _, p := range ps {
		x := p.OS + "/" + p.Architecture
		if p.Variant != "" {
			x += "/" + p.Variant
		}
		s = append(s, x)
	}
	return strings.Join(s, ", ")
}

var _ io.Writer = (*itemProgress)(nil)
