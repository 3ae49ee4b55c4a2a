package admin

import (
	"errors"
	"net/http"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/gc"
	"github.com/wharf-mirror/wharf/internal/meta"
)

// The delete rule (README "Deleting"), carried out by gc.Collector.Remove:
//   - a tag: the tag goes; the manifest it pointed to goes too, with the
//     blobs only it references (for an index, its children nothing else
//     references), unless another tag still points to it or a cached
//     index references it;
//   - a repository: every tag and link of it go; then every manifest and
//     blob it had goes by the same rule as a tag's;
//   - a digest: that manifest or blob goes with the tags pointing to it,
//     unless a remaining cached manifest references it.
// A blob another cached manifest references is never deleted, and content
// being served or fetched is kept (reason in_use) and can be deleted again
// later.

func (h *Handler) deleteTag(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	up, repo, err := repoParams(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	name := r.URL.Query().Get("tag")
	if name == "" {
		h.fail(w, r, invalid("tag is required"))
		return
	}
	t, err := h.cfg.Index.Tag(ctx, up, repo, name)
	if errors.Is(err, meta.ErrNotFound) {
		h.fail(w, r, notFound("tag %s/%s:%s is not cached", up, repo, name))
		return
	} else if err != nil {
		h.fail(w, r, err)
		return
	}
	if err := h.cfg.Index.DeleteTag(ctx, up, repo, name); err != nil {
		h.fail(w, r, err)
		return
	}
	h.remove(w, r, []digest.Digest{t.Digest}, true, 1, "tag", up+"/"+repo+":"+name)
}

func (h *Handler) deleteRepository(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	up, repo, err := repoParams(r)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	tags, err := h.cfg.Index.Tags(ctx, up, repo)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	ds, err := h.cfg.Index.DeleteRepository(ctx, up, repo)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	if len(ds) == 0 && len(tags) == 0 {
		h.fail(w, r, notFound("repository %s/%s is not cached", up, repo))
		return
	}
	h.remove(w, r, ds, true, len(tags), "repository", up+"/"+repo)
}

func (h *Handler) deleteContent(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	d, err := digest.Parse(r.PathValue("digest"))
	if err != nil {
		h.fail(w, r, invalid("%q is not a digest (want sha256:<64 hex>)", r.PathValue("digest")))
		return
	}
	tags, err := h.cfg.Index.TagsOf(ctx, d)
	if err != nil {
		h.fail(w, r, err)
		return
	}
	h.remove(w, r, []digest.Digest{d}, false, len(tags), "digest", d.String())
}

// remove runs the collector's Remove and answers with the Deletion.
// tagsRemoved counts the tags the operation removed (or will, for a
// digest: those of a manifest that goes).
func (h *Handler) remove(w http.ResponseWriter, r *http.Request, roots []digest.Digest, keepTagged bool, tagsRemoved int, what, name string) {
	ctx := r.Context()
	start := time.Now()
	rem, err := h.cfg.Collector.Remove(ctx, roots, keepTagged)
	if errors.Is(err, gc.ErrNotCached) && tagsRemoved > 0 && keepTagged {
		// The tags (or the repository) went; what they pointed to was
		// not cached (a tag recorded before its manifest was evicted).
		writeJSON(w, http.StatusOK, adminapi.Deletion{Tags: tagsRemoved})
		return
	}
	if errors.Is(err, gc.ErrNotCached) {
		h.fail(w, r, notFound("%s %s is not cached", what, name))
		return
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	out := adminapi.Deletion{Manifests: rem.Manifests, Blobs: rem.Blobs, Bytes: rem.Bytes, Tags: tagsRemoved}
	keptRoot := false
	for _, k := range rem.Kept {
		out.Kept = append(out.Kept, adminapi.Kept{Digest: k.Digest.String(), Reason: k.Reason, By: k.By})
		keptRoot = keptRoot || (what == "digest" && k.Digest == roots[0])
	}
	if keptRoot {
		// The digest stayed, and so did its tags.
		out.Tags = 0
	}
	h.log.LogAttrs(ctx, slogInfo, "cache content deleted",
		attr("what", what), attr("name", name),
		attrInt("manifests", out.Manifests), attrInt("blobs", out.Blobs), attrInt64("bytes", out.Bytes),
		attrInt("kept", len(out.Kept)), attrDur("duration", time.Since(start)))
	writeJSON(w, http.StatusOK, out)
}

func (h *Handler) runGC(w http.ResponseWriter, r *http.Request) {
	started := h.cfg.Now()
	rep, err := h.cfg.Collector.Run(r.Context())
	out := GCReport(rep, started, err)
	if err != nil && rep.Manifests == 0 && rep.Blobs == 0 {
		h.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, out)
}

// GCReport converts an eviction report for the API.
func GCReport(rep gc.Report, started time.Time, err error) adminapi.GCReport {
	out := adminapi.GCReport{
		Manifests: rep.Manifests, Blobs: rep.Blobs, Bytes: rep.Bytes, InUse: rep.InUse,
		SizeBefore: rep.SizeBefore, SizeAfter: rep.SizeAfter,
		Started: started.UTC(), Duration: rep.Duration.String(),
	}
	if err != nil {
		out.Error = err.Error()
	}
	return out
}
