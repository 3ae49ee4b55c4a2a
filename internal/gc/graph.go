package gc

import (
	"cmp"
	"container/heap"
	"context"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
)

// node is one piece of recorded content: a manifest, a blob, or both (a
// manifest also fetched through the blobs endpoint is one file).
type node struct {
	d        digest.Digest
	size     int64
	manifest bool
	access   time.Time // own last access
	// effective is the access eviction orders by: for a manifest, the
	// latest of its own and its child manifests' effective access.
	effective time.Time
	// refs are the recorded digests this manifest references, once each.
	refs []*node
	// parents counts the remaining manifests that reference this node; a
	// node is a unit of its own only at zero.
	parents int

	evicted bool
	kept    bool // the index refused to evict it: referenced by newer content
	visit   uint8
}

// digests lists the digests of ns, in order.
func digests(ns []*node) []digest.Digest {
	ds := make([]digest.Digest, len(ns))
	for i, n := range ns {
		ds[i] = n.d
	}
	return ds
}

// unit is n with the blobs only n references: what one eviction deletes.
func (n *node) unit() []*node {
	unit := []*node{n}
	for _, r := range n.refs {
		if !r.manifest && r.parents == 1 && !r.evicted && !r.kept {
			unit = append(unit, r)
		}
	}
	return unit
}

// graph is a snapshot of the index: every node, the cached size, and, for
// eviction, the units that may go now (parents == 0) in LRU order.
type graph struct {
	nodes map[digest.Digest]*node
	size  int64
	queue lru
}

// snapshot builds the graph of what the index records: every node with its
// references and parent counts, and the cached size. Eviction orders it
// (load); Remove walks it.
func (c *Collector) snapshot(ctx context.Context) (*graph, error) {
	ms, err := c.index.Manifests(ctx)
	if err != nil {
		return nil, fmt.Errorf("list manifests: %w", err)
	}
	bs, err := c.index.Blobs(ctx)
	if err != nil {
		return nil, fmt.Errorf("list blobs: %w", err)
	}
	g := &graph{nodes: make(map[digest.Digest]*node, len(ms)+len(bs))}
	get := func(d digest.Digest, size int64, at time.Time) *node {
		n := g.nodes[d]
		if n == nil {
			n = &node{d: d}
			g.nodes[d] = n
		}
		n.size = max(n.size, size)
		if at.After(n.access) {
			n.access = at
		}
		return n
	}
	for _, m := range ms {
		get(m.Digest, m.Size, m.LastAccess).manifest = true
	}
	for _, b := range bs {
		get(b.Digest, b.Size, b.LastAccess)
	}
	for _, n := range g.nodes {
		g.size += n.size
	}

	// References between recorded content only: a manifest may reference
	// blobs that were never pulled.
	for _, m := range ms {
		n := g.nodes[m.Digest]
		seen := make(map[digest.Digest]bool, len(m.Refs))
		for _, ref := range m.Refs {
			r, ok := g.nodes[ref]
			if !ok || seen[ref] || ref == m.Digest {
				continue
			}
			seen[ref] = true
			n.refs = append(n.refs, r)
			r.parents++
		}
	}
	return g, nil
}

// load builds the graph from the index and queues the units that may go
// now in LRU order. Records with no last access get now, which is also
// recorded, so that they age from the first time a run saw them.
func (c *Collector) load(ctx context.Context, now time.Time) (*graph, error) {
	g, err := c.snapshot(ctx)
	if err != nil {
		return nil, err
	}
	var unseen []digest.Digest
	for _, n := range g.nodes {
		if n.access.IsZero() {
			n.access = now
			unseen = append(unseen, n.d)
		}
	}
	if len(unseen) > 0 {
		if err := c.index.Touch(ctx, now, unseen...); err != nil {
			return nil, fmt.Errorf("record first access: %w", err)
		}
	}
	for _, n := range g.nodes {
		n.resolveEffective()
		if n.parents == 0 {
			g.queue = append(g.queue, n)
		}
	}
	heap.Init(&g.queue)
	return g, nil
}

// resolveEffective computes n.effective, depth first. Content addressing
// makes reference cycles impossible, but a cycle in the records would only
// cut the recursion short, never loop.
func (n *node) resolveEffective() time.Time {
	const (
		unvisited = iota
		visiting
		done
	)
	switch n.visit {
	case done:
		return n.effective
	case visiting:
		return n.access
	}
	n.visit = visiting
	n.effective = n.access
	for _, r := range n.refs {
		if !r.manifest {
			continue // a layer's access does not keep the image
		}
		if t := r.resolveEffective(); t.After(n.effective) {
			n.effective = t
		}
	}
	n.visit = done
	return n.effective
}

// lru is a heap of nodes, least recently used first, ties broken by digest
// so that runs are deterministic.
type lru []*node

func (q lru) Len() int { return len(q) }
func (q lru) Less(i, j int) bool {
	if c := q[i].effective.Compare(q[j].effective); c != 0 {
		return c < 0
	}
	return cmp.Less(q[i].d, q[j].d)
}
func (q lru) Swap(i, j int) { q[i], q[j] = q[j], q[i] }
func (q *lru) Push(x any)   { *q = append(*q, x.(*node)) }
func (q *lru) Pop() any {
	old := *q
	n := old[len(old)-1]
	old[len(old)-1] = nil
	*q = old[:len(old)-1]
	return n
}
