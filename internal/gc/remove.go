package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
)

// ErrNotCached reports that the only digest Remove was asked to delete has
// no manifest or blob record: there is nothing of it to delete.
var ErrNotCached = errors.New("not in the cache")

// Reasons a root of Remove is kept.
const (
	KeptTagged     = "tagged"     // a tag still points to it
	KeptReferenced = "referenced" // a remaining manifest references it
	KeptInUse      = "in_use"     // being served, fetched or stored; retry later
)

// Removal is what Remove did.
type Removal struct {
	// Report counts the manifests, blobs and bytes evicted; InUse counts
	// the roots kept because they were in use.
	Report
	// Kept lists the roots (and only roots) left in place, in the order
	// given.
	Kept []Kept
}

// Kept is a root Remove left in place, and why.
type Kept struct {
	Digest digest.Digest
	Reason string // KeptTagged, KeptReferenced or KeptInUse
	// By lists what keeps it: the tags ("upstream/repo:tag") for
	// KeptTagged, the manifest digests for KeptReferenced, sorted. It is
	// empty for KeptInUse, and for KeptReferenced when the manifest was
	// recorded while Remove ran.
	By []string
}

// Remove deletes the given roots — manifests or blobs — now, with the content
// only they reference, by the rule in the package documentation (Deleting).
//
// A root is kept, and listed in Removal.Kept, when keepTagged is set and a
// tag points to it (KeptTagged); otherwise when a manifest that is not being
// removed references it (KeptReferenced); otherwise when the Guard refuses to
// reserve the content that goes with it (KeptInUse). With keepTagged unset,
// the tags pointing to a removed root are removed with it.
//
// A root with no manifest or blob record is ErrNotCached (wrapped) when it is
// the only root; among several roots it is skipped, and not listed. Repeated
// roots count once.
//
// Remove takes its turn with Run. Files that could not be deleted are
// reported in the error, as Run does, with the Removal of everything else.
// Observe sees every Remove but one that ends in ErrNotCached.
func (c *Collector) Remove(ctx context.Context, roots []digest.Digest, keepTagged bool) (rem Removal, err error) {
	roots = unique(roots)
	if len(roots) == 0 {
		return Removal{}, nil
	}
	if err := c.takeTurn(ctx); err != nil {
		return Removal{}, fmt.Errorf("gc: remove: %w", err)
	}
	defer c.endTurn()
	start := time.Now()
	defer func() {
		rem.Duration = time.Since(start)
		if err != nil {
			err = fmt.Errorf("gc: remove: %w", err)
		} else {
			c.logRemoval(ctx, len(roots), rem)
		}
		if errors.Is(err, ErrNotCached) {
			return // a request for nothing, not a removal
		}
		if c.observe != nil {
			c.observe(rem.Report, err)
		}
	}()

	// Content served since the last flush is refused by Reserve; flushing
	// first lets idle content go now.
	if err := c.guard.FlushAccess(ctx); err != nil {
		return rem, fmt.Errorf("flush access times: %w", err)
	}
	g, err := c.snapshot(ctx)
	if err != nil {
		return rem, err
	}
	rem.SizeBefore = g.size

	p := &removal{c: c, g: g, keepTagged: keepTagged, kept: map[*node]Kept{}, tags: map[*node][]string{}}
	for _, d := range roots {
		n := g.nodes[d]
		if n == nil {
			if len(roots) == 1 {
				return rem, fmt.Errorf("%s: %w", d, ErrNotCached)
			}
			continue
		}
		p.roots = append(p.roots, n)
	}
	if err := p.decide(ctx); err != nil {
		return rem, err
	}
	err = p.delete(ctx, &rem)
	if u, uerr := c.index.Usage(ctx); uerr == nil {
		rem.SizeAfter = u.Bytes
	} else if err == nil {
		err = fmt.Errorf("usage: %w", uerr)
	}
	return rem, err
}

func (c *Collector) logRemoval(ctx context.Context, roots int, rem Removal) {
	c.log.LogAttrs(ctx, slog.LevelInfo, "cache content removed",
		slog.Int("roots", roots),
		slog.Int("manifests_evicted", rem.Manifests),
		slog.Int("blobs_evicted", rem.Blobs),
		slog.Int64("bytes_freed", rem.Bytes),
		slog.Int("kept", len(rem.Kept)),
		slog.Int("kept_in_use", rem.InUse),
		slog.Int64("size_before", rem.SizeBefore),
		slog.Int64("size_after", rem.SizeAfter),
		slog.Duration("duration", rem.Duration))
}

// removal decides and carries out one Remove on a snapshot of the index.
type removal struct {
	c          *Collector
	g          *graph
	keepTagged bool
	roots      []*node // recorded roots, in the order given, once each

	kept  map[*node]Kept     // roots kept before deleting, and why
	going map[*node]bool     // the roots that go with the content only they reference
	tags  map[*node][]string // tags of the nodes asked about so far
	// referrers are the manifests that reference each node.
	referrers map[*node][]*node
}

// decide computes which roots stay (kept) and what goes (going). A root a
// remaining manifest references stays, which may make what it references
// stay in turn and so another root referenced: the check repeats until
// nothing more stays, at most once per root.
func (p *removal) decide(ctx context.Context) error {
	if p.keepTagged {
		for _, r := range p.roots {
			tags, err := p.tagsOf(ctx, r)
			if err != nil {
				return err
			}
			if len(tags) > 0 {
				p.kept[r] = Kept{Digest: r.d, Reason: KeptTagged, By: tags}
			}
		}
	}
	p.referrers = make(map[*node][]*node)
	for _, n := range p.g.nodes {
		for _, r := range n.refs {
			p.referrers[r] = append(p.referrers[r], n)
		}
	}
	// Each round but the last keeps one more root: at most len+1 rounds.
	for range len(p.roots) + 1 {
		if err := p.closure(ctx); err != nil {
			return err
		}
		more := false
		for _, r := range p.roots {
			if _, ok := p.kept[r]; ok {
				continue
			}
			var by []string
			for _, m := range p.referrers[r] {
				if !p.going[m] {
					by = append(by, m.d.String())
				}
			}
			if len(by) > 0 {
				slices.Sort(by)
				p.kept[r] = Kept{Digest: r.d, Reason: KeptReferenced, By: by}
				more = true
			}
		}
		if !more {
			return nil
		}
	}
	return errors.New("deciding what stays did not converge")
}

// closure sets going to the roots not kept and, recursively, the content
// all of whose referrers are going: the content only they reference. A
// manifest a tag points to is not among it, whatever keepTagged says (a
// tagged child of an index stays, and keeps what it references); neither is
// a kept root.
func (p *removal) closure(ctx context.Context) error {
	p.going = make(map[*node]bool)
	var queue []*node
	for _, r := range p.roots {
		if _, ok := p.kept[r]; !ok && !p.going[r] {
			p.going[r] = true
			queue = append(queue, r)
		}
	}
	held := make(map[*node]int) // referrers of a node found going so far
	for len(queue) > 0 {
		n := queue[0]
		queue = queue[1:]
		for _, r := range n.refs {
			if p.going[r] {
				continue
			}
			held[r]++
			if held[r] < r.parents {
				continue
			}
			if _, ok := p.kept[r]; ok {
				continue
			}
			if r.manifest {
				tags, err := p.tagsOf(ctx, r)
				if err != nil {
					return err
				}
				if len(tags) > 0 {
					continue
				}
			}
			p.going[r] = true
			queue = append(queue, r)
		}
	}
	return nil
}

// tagsOf returns the tags pointing to n as "upstream/repo:tag", asking the
// index once per node.
func (p *removal) tagsOf(ctx context.Context, n *node) ([]string, error) {
	if tags, ok := p.tags[n]; ok {
		return tags, nil
	}
	ts, err := p.c.index.TagsOf(ctx, n.d)
	if err != nil {
		return nil, fmt.Errorf("tags of %s: %w", n.d, err)
	}
	tags := make([]string, len(ts))
	for i, t := range ts {
		tags[i] = t.Upstream + "/" + t.Repo + ":" + t.Name
	}
	p.tags[n] = tags
	return tags, nil
}

// delete deletes what decide let go, one unit per top root (a root going
// that no manifest references) in the order given: the root with the
// content going that it reaches. Content two units reach is in both; the
// index keeps it while the other unit's manifest remains, so it goes with
// the last of them. It fills rem with what went and what stayed.
func (p *removal) delete(ctx context.Context, rem *Removal) error {
	inUse := make(map[*node]bool)
	var errs []error
	for _, top := range p.roots {
		if !p.going[top] || len(p.referrers[top]) > 0 {
			continue
		}
		if err := ctx.Err(); err != nil {
			return errors.Join(append(errs, context.Cause(ctx))...)
		}
		unit := p.unit(top)
		release, ok := p.c.guard.Reserve(digests(unit)...)
		if !ok {
			for _, n := range unit {
				inUse[n] = true
			}
			continue
		}
		_, failed, err := p.c.deleteUnit(ctx, unit, &rem.Report)
		release()
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		errs = append(errs, failed...)
	}

	for _, r := range p.roots {
		if k, ok := p.kept[r]; ok {
			rem.Kept = append(rem.Kept, k)
			continue
		}
		switch {
		case r.evicted:
		case inUse[r]:
			rem.Kept = append(rem.Kept, Kept{Digest: r.d, Reason: KeptInUse})
			rem.InUse++
		default:
			// The index refused to let it go: a manifest recorded
			// since the snapshot references it. (Or no top root
			// reaches it, which only a reference cycle in the
			// records, ruled out by content addressing, could do.)
			rem.Kept = append(rem.Kept, Kept{Digest: r.d, Reason: KeptReferenced})
		}
	}
	return errors.Join(errs...)
}

// unit lists top and the content going that it reaches, depth first, each
// once, leaving out what an earlier unit evicted.
func (p *removal) unit(top *node) []*node {
	var unit []*node
	seen := make(map[*node]bool)
	var walk func(n *node)
	walk = func(n *node) {
		if seen[n] || !p.going[n] || n.evicted {
			return
		}
		seen[n] = true
		unit = append(unit, n)
		for _, r := range n.refs {
			walk(r)
		}
	}
	walk(top)
	return unit
}

// unique returns ds without repeats, in the order of first appearance.
func unique(ds []digest.Digest) []digest.Digest {
	seen := make(map[digest.Digest]bool, len(ds))
	out := make([]digest.Digest, 0, len(ds))
	for _, d := range ds {
		if !seen[d] {
			seen[d] = true
			out = append(out, d)
		}
	}
	return out
}
