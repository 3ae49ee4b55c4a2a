package admin

import (
	"context"
	"encoding/base64"
	"errors"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/meta"
)

func (h *Handler) stats(w http.ResponseWriter, r *http.Request) {
	s, err := h.cfg.Stats(r.Context())
	if err != nil {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, s)
}

func (h *Handler) upstreams(w http.ResponseWriter, r *http.Request) {
	probe := r.URL.Query().Get("probe")
	writeJSON(w, http.StatusOK, h.cfg.Upstreams(r.Context(), probe == "1" || probe == "true"))
}

// Repository cursors are opaque to clients: base64url of upstream NUL name.
func encodeRepoCursor(upstream, name string) string {
	return base64.RawURLEncoding.EncodeToString([]byte(upstream + "\x00" + name))
}

func decodeRepoCursor(s string) (upstream, name string, err error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return "", "", invalid("cursor %q is not one this API returned", s)
	}
	up, name, ok := strings.Cut(string(b), "\x00")
	if !ok {
		return "", "", invalid("cursor %q is not one this API returned", s)
	}
	return up, name, nil
}

func (h *Handler) repositories(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	limit, err := pageLimit(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	query := meta.RepositoryQuery{Upstream: q.Get("upstream"), Match: q.Get("q"), Limit: limit + 1}
	if c := q.Get("cursor"); c != "" {
		if query.AfterUpstream, query.AfterName, err = decodeRepoCursor(c); err != nil {
			h.fail(w, r, err)
			return
		}
	}
	if err := h.cfg.Mirror.FlushAccess(r.Context()); err != nil {
		h.fail(w, r, err)
		return
	}
	repos, err := h.cfg.Index.Repositories(r.Context(), query)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	page := adminapi.RepositoryPage{Repositories: []adminapi.Repository{}}
	if len(repos) > limit {
		repos = repos[:limit]
		last := repos[limit-1]
		page.Next = encodeRepoCursor(last.Upstream, last.Name)
	}
	for _, x := range repos {
		page.Repositories = append(page.Repositories, adminapi.Repository{
			Upstream: x.Upstream, Name: x.Name, Tags: x.Tags, Manifests: x.Manifests,
			Bytes: x.Bytes, LastAccess: x.LastAccess.UTC(),
		})
	}
	writeJSON(w, http.StatusOK, page)
}

// repoParams reads the upstream and repo query parameters, both required.
func repoParams(r *http.Request) (upstream, repo string, err error) {
	q := r.URL.Query()
	upstream, repo = q.Get("upstream"), q.Get("repo")
	if upstream == "" || repo == "" {
		return "", "", invalid("upstream and repo are required, e.g. ?upstream=docker.io&repo=library/nginx")
	}
	return upstream, repo, nil
}

func (h *Handler) tags(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	up, repo, err := repoParams(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.cfg.Mirror.FlushAccess(ctx); err != nil {
		h.fail(w, r, err)
		return
	}
	tags, err := h.cfg.Index.Tags(ctx, up, repo)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if len(tags) == 0 {
		// A repository known only by links (pulled by digest) exists
		// but has no tags; anything else is not cached.
		repos, err := h.cfg.Index.Repositories(ctx, meta.RepositoryQuery{Upstream: up, Match: up + "/" + repo})
		if err != nil {
			h.fail(w, r, err)
			return
		}
		found := false
		for _, x := range repos {
			found = found || (x.Upstream == up && x.Name == repo)
		}
		if !found {
			h.fail(w, r, notFound("repository %s/%s is not cached", up, repo))
			return
		}
	}
	out := make([]adminapi.Tag, 0, len(tags))
	for _, t := range tags {
		at := adminapi.Tag{
			Upstream: t.Upstream, Repo: t.Repo, Name: t.Name, Digest: t.Digest.String(),
			CheckedAt: t.CheckedAt.UTC(), Reference: t.Upstream + "/" + t.Repo + ":" + t.Name,
		}
		if m, err := h.cfg.Index.Manifest(ctx, t.Digest); err == nil {
			at.MediaType = m.MediaType
		}
		if at.Bytes, err = h.imageBytes(ctx, t.Digest); err != nil {
			h.fail(w, r, err)
			return
		}
		if la, err := h.cfg.Index.LastAccess(ctx, t.Digest); err == nil {
			at.LastAccess = la.UTC()
		}
		out = append(out, at)
	}
	writeJSON(w, http.StatusOK, out)
}

// imageBytes is the cached size of d and everything it references,
// recursively, each digest once.
func (h *Handler) imageBytes(ctx context.Context, root digest.Digest) (int64, error) {
	seen := map[digest.Digest]bool{}
	var total int64
	var walk func(d digest.Digest, depth int) error
	walk = func(d digest.Digest, depth int) error {
		if seen[d] || depth > 8 {
			return nil
		}
		seen[d] = true
		m, err := h.cfg.Index.Manifest(ctx, d)
		switch {
		case err == nil:
			total += m.Size
			for _, ref := range m.Refs {
				if err := walk(ref, depth+1); err != nil {
					return err
				}
			}
			return nil
		case !errors.Is(err, meta.ErrNotFound):
			return err
		}
		b, err := h.cfg.Index.Blob(ctx, d)
		switch {
		case err == nil:
			total += b.Size
		case !errors.Is(err, meta.ErrNotFound):
			return err
		}
		return nil
	}
	err := walk(root, 0)
	return total, err
}

func (h *Handler) blobs(w http.ResponseWriter, r *http.Request) {
	limit, err := pageLimit(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	var after digest.Digest
	if c := r.URL.Query().Get("cursor"); c != "" {
		d, err := digest.Parse(c)
		if err != nil {
			h.fail(w, r, invalid("cursor %q is not one this API returned", c))
			return
		}
		after = d
	}
	if err := h.cfg.Mirror.FlushAccess(r.Context()); err != nil {
		h.fail(w, r, err)
		return
	}
	bs, err := h.cfg.Index.BlobPage(r.Context(), after, limit+1)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	page := adminapi.BlobPage{Blobs: []adminapi.Blob{}}
	if len(bs) > limit {
		bs = bs[:limit]
		page.Next = bs[limit-1].Digest.String()
	}
	for _, b := range bs {
		page.Blobs = append(page.Blobs, adminapi.Blob{Digest: b.Digest.String(), Bytes: b.Size, LastAccess: b.LastAccess.UTC()})
	}
	writeJSON(w, http.StatusOK, page)
}
