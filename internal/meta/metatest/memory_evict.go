package metatest

import (
	"cmp"
	"context"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/meta"
)

// byAccess orders like the SQLite index: never touched (zero) first, then
// by time, then by digest.
func byAccess(a, b time.Time, da, db digest.Digest) int {
	if c := a.Compare(b); c != 0 {
		return c
	}
	return cmp.Compare(da, db)
}

func (x *memIndex) Manifests(ctx context.Context) ([]meta.ManifestAccess, error) {
	if err := x.rlock(); err != nil {
		return nil, err
	}
	defer x.mu.RUnlock()
	ms := make([]meta.ManifestAccess, 0, len(x.manifests))
	for d, m := range x.manifests {
		m.Refs = slices.Clone(m.Refs)
		ms = append(ms, meta.ManifestAccess{Manifest: m, LastAccess: x.access[d]})
	}
	slices.SortFunc(ms, func(a, b meta.ManifestAccess) int { return byAccess(a.LastAccess, b.LastAccess, a.Digest, b.Digest) })
	return ms, nil
}

func (x *memIndex) Blobs(ctx context.Context) ([]meta.BlobAccess, error) {
	if err := x.rlock(); err != nil {
		return nil, err
	}
	defer x.mu.RUnlock()
	bs := make([]meta.BlobAccess, 0, len(x.blobs))
	for d, b := range x.blobs {
		bs = append(bs, meta.BlobAccess{Blob: b, LastAccess: x.access[d]})
	}
	slices.SortFunc(bs, func(a, b meta.BlobAccess) int { return byAccess(a.LastAccess, b.LastAccess, a.Digest, b.Digest) })
	return bs, nil
}

func (x *memIndex) Usage(ctx context.Context) (meta.Usage, error) {
	if err := x.rlock(); err != nil {
		return meta.Usage{}, err
	}
	defer x.mu.RUnlock()
	u := meta.Usage{Manifests: len(x.manifests), Blobs: len(x.blobs)}
	for d, m := range x.manifests {
		size := m.Size
		if b, ok := x.blobs[d]; ok {
			size = max(size, b.Size)
		}
		u.Bytes += size
	}
	for d, b := range x.blobs {
		if _, ok := x.manifests[d]; !ok {
			u.Bytes += b.Size
		}
	}
	return u, nil
}

func (x *memIndex) Evict(ctx context.Context, ds ...digest.Digest) ([]digest.Digest, error) {
	if len(ds) == 0 {
		return nil, nil
	}
	if err := x.lock(); err != nil {
		return nil, err
	}
	defer x.mu.Unlock()

	// Who references what, among the manifests recorded now.
	referrers := make(map[digest.Digest][]digest.Digest)
	for m, rec := range x.manifests {
		for _, r := range rec.Refs {
			referrers[r] = append(referrers[r], m)
		}
	}
	evicting := make(map[digest.Digest]bool, len(ds))
	for _, d := range ds {
		evicting[d] = true
	}
	// Keep what a manifest outside the set references, to a fixed point.
	for changed := true; changed; {
		changed = false
		for _, d := range ds {
			if evicting[d] && slices.ContainsFunc(referrers[d], func(m digest.Digest) bool { return !evicting[m] }) {
				evicting[d] = false
				changed = true
			}
		}
	}

	var evicted []digest.Digest
	for _, d := range ds {
		if !evicting[d] {
			continue
		}
		evicting[d] = false // once, even if ds repeats it
		evicted = append(evicted, d)
		delete(x.manifests, d)
		delete(x.blobs, d)
		delete(x.access, d)
		for k, t := range x.tags {
			if t.Digest == d {
				delete(x.tags, k)
			}
		}
		for k := range x.links {
			if k.d == d {
				delete(x.links, k)
			}
		}
	}
	return evicted, nil
}
