package metatest

import (
	"cmp"
	"context"
	"slices"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/meta"
)

type repoKey struct{ upstream, repo string }

func compareRepoKeys(a, b repoKey) int {
	return cmp.Or(cmp.Compare(a.upstream, b.upstream), cmp.Compare(a.repo, b.repo))
}

// asciiLower folds ASCII letters only, byte by byte, as SQLite's lower()
// does: meta promises no more for RepositoryQuery.Match, and the fake must
// not select what the real index does not. Other bytes, invalid UTF-8
// included, stay as they are.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

func (x *memIndex) Repositories(ctx context.Context, q meta.RepositoryQuery) ([]meta.Repository, error) {
	if err := x.rlock(); err != nil {
		return nil, err
	}
	defer x.mu.RUnlock()

	after := repoKey{q.AfterUpstream, q.AfterName}
	match := asciiLower(q.Match)
	selected := func(k repoKey) bool {
		switch {
		case q.Upstream != "" && k.upstream != q.Upstream:
			return false
		case match != "" && !strings.Contains(asciiLower(k.upstream+"/"+k.repo), match):
			return false
		case after != (repoKey{}) && compareRepoKeys(k, after) <= 0:
			return false
		}
		return true
	}
	// The content of each selected repository: its linked digests, and the
	// digests its tags point to (for the last access only).
	type content struct {
		tags   int
		linked []digest.Digest
		tagged []digest.Digest
	}
	repos := make(map[repoKey]*content)
	get := func(k repoKey) *content {
		c := repos[k]
		if c == nil {
			c = &content{}
			repos[k] = c
		}
		return c
	}
	for k, t := range x.tags {
		if rk := (repoKey{k.upstream, k.repo}); selected(rk) {
			c := get(rk)
			c.tags++
			c.tagged = append(c.tagged, t.Digest)
		}
	}
	for k := range x.links {
		if rk := (repoKey{k.upstream, k.repo}); selected(rk) {
			get(rk).linked = append(get(rk).linked, k.d)
		}
	}

	keys := make([]repoKey, 0, len(repos))
	for k := range repos {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, compareRepoKeys)
	if q.Limit > 0 && len(keys) > q.Limit {
		keys = keys[:q.Limit]
	}
	rs := make([]meta.Repository, 0, len(keys))
	for _, k := range keys {
		c := repos[k]
		r := meta.Repository{Upstream: k.upstream, Name: k.repo, Tags: c.tags}
		latest := func(d digest.Digest) {
			if at, ok := x.access[d]; ok && (r.LastAccess.IsZero() || at.After(r.LastAccess)) {
				r.LastAccess = at
			}
		}
		// Links are unique per repository, so each digest counts once.
		for _, d := range c.linked {
			m, isManifest := x.manifests[d]
			b, isBlob := x.blobs[d]
			if isManifest {
				r.Manifests++
			}
			switch {
			case isManifest && isBlob:
				r.Bytes += max(m.Size, b.Size)
			case isManifest:
				r.Bytes += m.Size
			case isBlob:
				r.Bytes += b.Size
			}
			latest(d)
		}
		for _, d := range c.tagged {
			latest(d)
		}
		rs = append(rs, r)
	}
	return rs, nil
}

func (x *memIndex) TagsOf(ctx context.Context, d digest.Digest) ([]meta.Tag, error) {
	if err := x.rlock(); err != nil {
		return nil, err
	}
	defer x.mu.RUnlock()
	var ts []meta.Tag
	for _, t := range x.tags {
		if t.Digest == d {
			ts = append(ts, t)
		}
	}
	slices.SortFunc(ts, func(a, b meta.Tag) int {
		return cmp.Or(cmp.Compare(a.Upstream, b.Upstream), cmp.Compare(a.Repo, b.Repo), cmp.Compare(a.Name, b.Name))
	})
	return ts, nil
}

func (x *memIndex) DeleteRepository(ctx context.Context, upstream, repo string) ([]digest.Digest, error) {
	if err := x.lock(); err != nil {
		return nil, err
	}
	defer x.mu.Unlock()
	seen := make(map[digest.Digest]bool)
	for k, t := range x.tags {
		if k.upstream == upstream && k.repo == repo {
			seen[t.Digest] = true
			delete(x.tags, k)
		}
	}
	for k := range x.links {
		if k.upstream == upstream && k.repo == repo {
			seen[k.d] = true
			delete(x.links, k)
		}
	}
	ds := make([]digest.Digest, 0, len(seen))
	for d := range seen {
		ds = append(ds, d)
	}
	slices.Sort(ds)
	return ds, nil
}

func (x *memIndex) BlobPage(ctx context.Context, after digest.Digest, limit int) ([]meta.BlobAccess, error) {
	if err := x.rlock(); err != nil {
		return nil, err
	}
	defer x.mu.RUnlock()
	var bs []meta.BlobAccess
	for d, b := range x.blobs {
		if d > after {
			bs = append(bs, meta.BlobAccess{Blob: b, LastAccess: x.access[d]})
		}
	}
	slices.SortFunc(bs, func(a, b meta.BlobAccess) int { return cmp.Compare(a.Digest, b.Digest) })
	if limit > 0 && len(bs) > limit {
		bs = bs[:limit]
	}
	return bs, nil
}

// Record validates the whole batch before changing anything, and then
// cannot fail: all or nothing.
func (x *memIndex) Record(ctx context.Context, b meta.Batch) error {
	if err := b.Validate(); err != nil {
		return err
	}
	if err := x.lock(); err != nil {
		return err
	}
	defer x.mu.Unlock()
	for _, bl := range b.Blobs {
		x.blobs[bl.Digest] = bl
	}
	for _, m := range b.Manifests {
		m.Refs = slices.Clone(m.Refs)
		x.manifests[m.Digest] = m
	}
	for _, l := range b.Links {
		x.links[linkKey{l.Upstream, l.Repo, l.Digest}] = struct{}{}
	}
	for _, t := range b.Tags {
		t.CheckedAt = normTime(t.CheckedAt)
		x.tags[tagKey{t.Upstream, t.Repo, t.Name}] = t
	}
	return nil
}
