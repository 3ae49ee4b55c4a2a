// Package gc evicts content from the cache so that it stays within its
// configured size and age (PRODUCT item 9), and deletes content on demand.
// It owns the eviction rule and the delete rule; the index (meta.Index) and
// the blob store (blob.Store) hold what it decides on, and the mirror
// (Guard) says what is in use.
//
// Evicting (Collector.Run, Collector.Loop):
//
//   - The unit of eviction is a manifest — an image manifest or an index —
//     together with the blobs that only it references (its config and
//     layers). A blob any remaining manifest references is never deleted,
//     and neither is a child manifest of a remaining index: once an index
//     is evicted, each child no other index references becomes a unit of
//     its own. Tags pointing to an evicted manifest are deleted with it,
//     and so are the repository links and last access of everything
//     evicted.
//   - An orphan blob (recorded, but referenced by no manifest: fetched by
//     digest alone) is a unit of its own, judged by its own last access.
//   - Least recently used goes first. A manifest's effective last access is
//     the latest of its own and, for an index, its children's (recursively):
//     pulling one platform of a multi-arch image keeps the whole index. A
//     layer's own access does not count, or one popular base layer would
//     keep every image built on it.
//   - Content with no recorded access (adopted from the data directory at
//     start, or recorded a moment ago and not yet flushed) counts as
//     accessed when a run first sees it, and the run records that time.
//   - A run evicts every unit whose effective last access is older than
//     MaxAge; and when the cache holds more than MaxSize, further units, in
//     LRU order, until it holds at most LowWater of MaxSize, so that the
//     next pulls do not set off eviction again at once.
//   - Never what is in use: a unit is deleted only after the Guard reserved
//     all its digests, which it refuses while any of them is being served,
//     fetched or stored, or was served since access times were last
//     flushed; a refused unit is skipped (Report.InUse) and the run goes
//     on with the next one. The cache can therefore stay above MaxSize
//     while clients pull more than MaxSize at once.
//
// Deleting (Collector.Remove; the admin API's deletes):
//
//   - Deleting removes the content asked for — manifests or blobs — at once,
//     whatever its age, with the content only it references: the unit is
//     the same as eviction's, an image manifest with its config and layers
//     that no other cached manifest references, an index with its child
//     manifests that no other cached manifest references, and theirs.
//   - Content that another cached manifest still references is never
//     deleted: it is kept and reported as "referenced", with the manifests
//     that reference it.
//   - Deleting a tag deletes the tag, then the manifest it pointed to by
//     this rule; deleting a repository deletes its tags and links, then
//     every manifest and blob it had, by the same rule. Either way, content
//     another tag still points to is kept and reported as "tagged", with
//     those tags. Deleting a digest deletes the tags pointing to it along
//     with it instead.
//   - A child manifest that a tag points to is never deleted with its
//     index; it stays with what it references.
//   - Content being served, fetched or stored is kept and reported as
//     "in_use"; deleting it again later succeeds.
//
// Invariants:
//   - Index records go before bytes: a unit's records are removed
//     (meta.Index.Evict, one transaction) and only then its files, so the
//     index never describes absent content. A crash in between leaves files
//     the index does not know, which the server adopts at start.
//   - meta.Index.Evict re-checks, in that transaction, that no manifest
//     outside the unit references what is being evicted, so a manifest
//     recorded while a run was deciding keeps its layers.
//   - One run at a time per Collector; a background Loop, on-demand Runs
//     and Removes take turns.
package gc

import (
	"container/heap"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/blob"
	"github.com/wharf-mirror/wharf/internal/meta"
)

// LowWater is the fraction of MaxSize a run that had to evict for size
// brings the cache down to.
const LowWater = 0.9

// Guard is what the collector needs from the component serving the cache;
// *mirror.Service implements it.
type Guard interface {
	// FlushAccess writes batched last-access times to the index, so that
	// the run sees every request served so far.
	FlushAccess(ctx context.Context) error
	// Reserve reserves ds for deletion, all or nothing, unless one of them
	// is in use; requests for them wait until release.
	Reserve(ds ...digest.Digest) (release func(), ok bool)
}

// Config configures a Collector.
type Config struct {
	Blobs blob.Store
	Index meta.Index
	// Guard protects content in use; nil means nothing is in use (no server
	// runs on the data directory).
	Guard Guard
	// MaxSize is the most bytes of content the cache may hold; 0 is
	// unbounded.
	MaxSize int64
	// MaxAge evicts content whose effective last access is older; 0 keeps
	// content regardless of age.
	MaxAge time.Duration
	// Logger receives one line per run, and the errors of Loop.
	Logger *slog.Logger
	// Observe, when set, is called after every run and every Remove
	// (except one that found nothing cached) with its report and error
	// (metrics, tests).
	Observe func(Report, error)
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Report says what one run did.
type Report struct {
	Manifests int   // manifest records evicted (images, indexes, artifacts)
	Blobs     int   // other content evicted: layers, configs, orphan blobs
	Bytes     int64 // bytes freed in the blob store
	// InUse counts units skipped because some of their content was in use.
	InUse int
	// SizeBefore is the content size the run started from; SizeAfter the
	// content size when it ended, including what was added meanwhile.
	SizeBefore, SizeAfter int64
	Duration              time.Duration
}

// Collector evicts and deletes content by the rules in the package
// documentation.
type Collector struct {
	blobs   blob.Store
	index   meta.Index
	guard   Guard
	maxSize int64
	maxAge  time.Duration
	log     *slog.Logger
	observe func(Report, error)
	now     func() time.Time

	turn chan struct{} // holds a token while a run is going on
}

// New creates a Collector.
func New(cfg Config) (*Collector, error) {
	switch {
	case cfg.Blobs == nil || cfg.Index == nil:
		return nil, errors.New("gc: blob store and index are required")
	case cfg.MaxSize < 0:
		return nil, fmt.Errorf("gc: negative maximum size %d", cfg.MaxSize)
	case cfg.MaxAge < 0:
		return nil, fmt.Errorf("gc: negative maximum age %v", cfg.MaxAge)
	}
	c := &Collector{
		blobs:   cfg.Blobs,
		index:   cfg.Index,
		guard:   cfg.Guard,
		maxSize: cfg.MaxSize,
		maxAge:  cfg.MaxAge,
		log:     cfg.Logger,
		observe: cfg.Observe,
		now:     cfg.Now,
		turn:    make(chan struct{}, 1),
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	if c.guard == nil {
		c.guard = noGuard{}
	}
	return c, nil
}

// Bounded reports whether the collector has anything to enforce.
func (c *Collector) Bounded() bool { return c.maxSize > 0 || c.maxAge > 0 }

// Loop runs Run at once and then every interval until ctx is done. A failed
// run is logged, and the next one tries again. It returns when ctx is done
// and the run in progress (which ctx cancels) has ended.
func (c *Collector) Loop(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		if _, err := c.Run(ctx); err != nil && ctx.Err() == nil {
			c.log.LogAttrs(ctx, slog.LevelWarn, "cache eviction failed", slog.String("error", err.Error()))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Run evicts what the rule says must go now and reports what it did. On an
// error the report covers what was done before it.
func (c *Collector) Run(ctx context.Context) (rep Report, err error) {
	if err := c.takeTurn(ctx); err != nil {
		return Report{}, err
	}
	defer c.endTurn()
	start := time.Now()
	defer func() {
		rep.Duration = time.Since(start)
		if err != nil {
			err = fmt.Errorf("gc: %w", err)
		} else {
			c.logReport(ctx, rep)
		}
		if c.observe != nil {
			c.observe(rep, err)
		}
	}()

	if err := c.guard.FlushAccess(ctx); err != nil {
		return rep, fmt.Errorf("flush access times: %w", err)
	}
	now := c.now()
	g, err := c.load(ctx, now)
	if err != nil {
		return rep, err
	}
	rep.SizeBefore = g.size
	err = c.evict(ctx, g, now, &rep)
	if u, uerr := c.index.Usage(ctx); uerr == nil {
		rep.SizeAfter = u.Bytes
	} else if err == nil {
		err = fmt.Errorf("usage: %w", uerr)
	}
	return rep, err
}

// takeTurn waits until no other run or removal is going on, or ctx is done.
// A successful call is followed by endTurn.
func (c *Collector) takeTurn(ctx context.Context) error {
	select {
	case c.turn <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

func (c *Collector) endTurn() { <-c.turn }

func (c *Collector) logReport(ctx context.Context, rep Report) {
	level := slog.LevelDebug
	if rep.Manifests+rep.Blobs+rep.InUse > 0 {
		level = slog.LevelInfo
	}
	c.log.LogAttrs(ctx, level, "cache eviction",
		slog.Int("manifests_evicted", rep.Manifests),
		slog.Int("blobs_evicted", rep.Blobs),
		slog.Int64("bytes_freed", rep.Bytes),
		slog.Int("skipped_in_use", rep.InUse),
		slog.Int64("size_before", rep.SizeBefore),
		slog.Int64("size_after", rep.SizeAfter),
		slog.Int64("max_size", c.maxSize),
		slog.Duration("max_age", c.maxAge),
		slog.Duration("duration", rep.Duration))
}

// evict pops units in LRU order while the rule asks for more, and deletes
// each one the guard lets it.
func (c *Collector) evict(ctx context.Context, g *graph, now time.Time, rep *Report) error {
	size := g.size
	overSize := c.maxSize > 0 && size > c.maxSize
	target := int64(float64(c.maxSize) * LowWater)
	cutoff := now.Add(-c.maxAge)
	var errs []error
	for g.queue.Len() > 0 {
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, context.Cause(ctx))...)
		}
		n := heap.Pop(&g.queue).(*node)
		tooBig := overSize && size > target
		tooOld := c.maxAge > 0 && n.effective.Before(cutoff)
		if !tooBig && !tooOld {
			break // the queue is in LRU order: nothing after n is older
		}
		unit := n.unit()
		release, ok := c.guard.Reserve(digests(unit)...)
		if !ok {
			rep.InUse++
			continue
		}
		gone, failed, err := c.deleteUnit(ctx, unit, rep)
		release()
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		errs = append(errs, failed...)
		size -= gone
		if n.evicted {
			for _, r := range n.refs {
				r.parents--
				if r.manifest && r.parents == 0 && !r.evicted && !r.kept {
					heap.Push(&g.queue, r) // a child no remaining index holds
				}
			}
		}
	}
	return errors.Join(errs...)
}

// deleteUnit deletes unit, which the caller reserved, through delete. Each
// node is marked evicted, or kept when the index refused to let it go (a
// manifest recorded since the snapshot references it), and rep counts what
// went. gone is the recorded size of what went; failed and err are
// delete's.
func (c *Collector) deleteUnit(ctx context.Context, unit []*node, rep *Report) (gone int64, failed []error, err error) {
	freed, failed, err := c.delete(ctx, digests(unit))
	if err != nil {
		return 0, nil, err
	}
	for _, u := range unit {
		bytes, ok := freed[u.d]
		if !ok {
			u.kept = true
			continue
		}
		u.evicted = true
		gone += u.size
		rep.Bytes += bytes
		if u.manifest {
			rep.Manifests++
		} else {
			rep.Blobs++
		}
	}
	return gone, failed, nil
}

// delete removes the records of ds, then the bytes of what the index let
// go. freed maps each evicted digest to the bytes deleted (0 when its file
// was missing or could not be deleted); failed lists files that could not
// be deleted, whose bytes stay on disk unknown to the index until the next
// start adopts them.
func (c *Collector) delete(ctx context.Context, ds []digest.Digest) (freed map[digest.Digest]int64, failed []error, err error) {
	evicted, err := c.index.Evict(ctx, ds...)
	if err != nil {
		return nil, nil, fmt.Errorf("index: %w", err)
	}
	freed = make(map[digest.Digest]int64, len(evicted))
	for _, d := range evicted {
		freed[d] = 0
		size, err := c.blobs.Stat(ctx, d)
		if errors.Is(err, blob.ErrNotFound) {
			continue
		}
		if err == nil {
			err = c.blobs.Delete(ctx, d)
		}
		switch {
		case err == nil:
			freed[d] = size
		case !errors.Is(err, blob.ErrNotFound):
			failed = append(failed, fmt.Errorf("delete %s: %w", d, err))
		}
	}
	return freed, failed, nil
}

// noGuard is the Guard when no server runs: nothing is in use.
type noGuard struct{}

func (noGuard) FlushAccess(context.Context) error { return nil }
func (noGuard) Reserve(...digest.Digest) (func(), bool) {
	return func() {}, true
}
