package metatest

import (
	"cmp"
	"context"
	"fmt"
	"slices"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/meta"
)

// NewMemory returns a meta.Index that keeps everything in memory. It passes
// Run and is meant for tests of packages that consume a meta.Index. Like the
// SQLite index, it returns times in UTC truncated to the microsecond, so a
// test that passes against it does not depend on more precision than the
// real index keeps.
func NewMemory() meta.Index {
	return &memIndex{
		tags:      make(map[tagKey]meta.Tag),
		manifests: make(map[digest.Digest]meta.Manifest),
		blobs:     make(map[digest.Digest]meta.Blob),
		links:     make(map[linkKey]struct{}),
		access:    make(map[digest.Digest]time.Time),
	}
}

type tagKey struct{ upstream, repo, name string }

type linkKey struct {
	upstream, repo string
	d              digest.Digest
}

type memIndex struct {
	mu        sync.RWMutex
	tags      map[tagKey]meta.Tag
	manifests map[digest.Digest]meta.Manifest // Refs owned by the map, copied in and out
	blobs     map[digest.Digest]meta.Blob
	links     map[linkKey]struct{}
	access    map[digest.Digest]time.Time
	closed    bool
}

// normTime is the precision the index keeps: UTC, microseconds, no
// monotonic reading.
func normTime(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func (x *memIndex) rlock() error {
	x.mu.RLock()
	if x.closed {
		x.mu.RUnlock()
		return errClosed
	}
	return nil
}

func (x *memIndex) lock() error {
	x.mu.Lock()
	if x.closed {
		x.mu.Unlock()
		return errClosed
	}
	return nil
}

var errClosed = fmt.Errorf("metatest: index is closed")

func (x *memIndex) Tag(ctx context.Context, upstream, repo, name string) (meta.Tag, error) {
	if err := x.rlock(); err != nil {
		return meta.Tag{}, err
	}
	defer x.mu.RUnlock()
	t, ok := x.tags[tagKey{upstream, repo, name}]
	if !ok {
		return meta.Tag{}, fmt.Errorf("%w: tag %s/%s:%s", meta.ErrNotFound, upstream, repo, name)
	}
	return t, nil
}

func (x *memIndex) PutTag(ctx context.Context, t meta.Tag) error {
	if err := x.lock(); err != nil {
		return err
	}
	defer x.mu.Unlock()
	t.CheckedAt = normTime(t.CheckedAt)
	x.tags[tagKey{t.Upstream, t.Repo, t.Name}] = t
	return nil
}

func (x *memIndex) DeleteTag(ctx context.Context, upstream, repo, name string) error {
	if err := x.lock(); err != nil {
		return err
	}
	defer x.mu.Unlock()
	delete(x.tags, tagKey{upstream, repo, name})
	return nil
}

func (x *memIndex) Tags(ctx context.Context, upstream, repo string) ([]meta.Tag, error) {
	if err := x.rlock(); err != nil {
		return nil, err
	}
	defer x.mu.RUnlock()
	var ts []meta.Tag
	for k, t := range x.tags {
		if k.upstream == upstream && k.repo == repo {
			ts = append(ts, t)
		}
	}
	slices.SortFunc(ts, func(a, b meta.Tag) int { return cmp.Compare(a.Name, b.Name) })
	return ts, nil
}

func (x *memIndex) Manifest(ctx context.Context, d digest.Digest) (meta.Manifest, error) {
	if err := x.rlock(); err != nil {
		return meta.Manifest{}, err
	}
	defer x.mu.RUnlock()
	m, ok := x.manifests[d]
	if !ok {
		return meta.Manifest{}, fmt.Errorf("%w: manifest %s", meta.ErrNotFound, d)
	}
	m.Refs = slices.Clone(m.Refs)
	return m, nil
}

func (x *memIndex) PutManifest(ctx context.Context, m meta.Manifest) error {
	if err := x.lock(); err != nil {
		return err
	}
	defer x.mu.Unlock()
	m.Refs = slices.Clone(m.Refs)
	x.manifests[m.Digest] = m
	return nil
}

func (x *memIndex) Blob(ctx context.Context, d digest.Digest) (meta.Blob, error) {
	if err := x.rlock(); err != nil {
		return meta.Blob{}, err
	}
	defer x.mu.RUnlock()
	b, ok := x.blobs[d]
	if !ok {
		return meta.Blob{}, fmt.Errorf("%w: blob %s", meta.ErrNotFound, d)
	}
	return b, nil
}

func (x *memIndex) PutBlob(ctx context.Context, b meta.Blob) error {
	if err := x.lock(); err != nil {
		return err
	}
	defer x.mu.Unlock()
	x.blobs[b.Digest] = b
	return nil
}

func (x *memIndex) Link(ctx context.Context, upstream, repo string, ds ...digest.Digest) error {
	if err := x.lock(); err != nil {
		return err
	}
	defer x.mu.Unlock()
	for _, d := range ds {
		x.links[linkKey{upstream, repo, d}] = struct{}{}
	}
	return nil
}

func (x *memIndex) Linked(ctx context.Context, upstream, repo string, d digest.Digest) (bool, error) {
	if err := x.rlock(); err != nil {
		return false, err
	}
	defer x.mu.RUnlock()
	_, ok := x.links[linkKey{upstream, repo, d}]
	return ok, nil
}

func (x *memIndex) Touch(ctx context.Context, at time.Time, ds ...digest.Digest) error {
	if err := x.lock(); err != nil {
		return err
	}
	defer x.mu.Unlock()
	at = normTime(at)
	for _, d := range ds {
		if prev, ok := x.access[d]; !ok || at.After(prev) {
			x.access[d] = at
		}
	}
	return nil
}

func (x *memIndex) LastAccess(ctx context.Context, d digest.Digest) (time.Time, error) {
	if err := x.rlock(); err != nil {
		return time.Time{}, err
	}
	defer x.mu.RUnlock()
	at, ok := x.access[d]
	if !ok {
		return time.Time{}, fmt.Errorf("%w: access of %s", meta.ErrNotFound, d)
	}
	return at, nil
}

func (x *memIndex) Reconcile(ctx context.Context, present func(digest.Digest) bool) (int, error) {
	if err := x.lock(); err != nil {
		return 0, err
	}
	defer x.mu.Unlock()

	// Every digest a record names, asked about once.
	absent := make(map[digest.Digest]bool)
	check := func(d digest.Digest) {
		if _, seen := absent[d]; !seen {
			absent[d] = !present(d)
		}
	}
	for d := range x.manifests {
		check(d)
	}
	for d := range x.blobs {
		check(d)
	}
	for _, t := range x.tags {
		check(t.Digest)
	}
	for k := range x.links {
		check(k.d)
	}
	for d := range x.access {
		check(d)
	}

	removed := 0
	for d := range x.manifests {
		if absent[d] {
			delete(x.manifests, d)
			removed++
		}
	}
	for d := range x.blobs {
		if absent[d] {
			delete(x.blobs, d)
			removed++
		}
	}
	for k, t := range x.tags {
		if absent[t.Digest] {
			delete(x.tags, k)
			removed++
		}
	}
	for k := range x.links {
		if absent[k.d] {
			delete(x.links, k)
			removed++
		}
	}
	for d := range x.access {
		if absent[d] {
			delete(x.access, d)
			removed++
		}
	}
	return removed, nil
}

func (x *memIndex) Close() error {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.closed = true
	return nil
}
