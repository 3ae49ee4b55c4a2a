package admin

import (
	"archive/tar"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/blob"
	"github.com/wharf-mirror/wharf/internal/meta"
	"github.com/wharf-mirror/wharf/internal/ocilayout"
)

// export streams an OCI image layout tarball of the images named by the
// ref parameters, or of every tagged image when there is none. The plan
// is made first, so the answer has an exact Content-Length (clients show
// progress) and a reference that is not cached fails before any byte.
func (h *Handler) export(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	refs := r.URL.Query()["ref"]
	var images []ocilayout.Image
	var err error
	if len(refs) == 0 {
		images, err = h.allImages(ctx)
	} else {
		images, err = h.imagesOf(ctx, refs)
	}
	if err != nil {
		h.fail(w, r, err)
		return
	}
	plan, err := ocilayout.NewPlan(ctx, h.cfg.Blobs, h.cfg.Index, images)
	if errors.Is(err, ocilayout.ErrNotCached) {
		h.fail(w, r, notFound("%v", err))
		return
	} else if err != nil {
		h.fail(w, r, err)
		return
	}
	for _, im := range plan.Incomplete {
		h.log.LogAttrs(ctx, slog.LevelWarn, "export: image skipped, not every layer is cached",
			slog.String("upstream", im.Upstream), slog.String("repo", im.Repo), slog.String("tag", im.Tag),
			slog.String("digest", im.Digest.String()))
	}
	hd := w.Header()
	hd.Set("Content-Type", "application/x-tar")
	hd.Set("Content-Length", strconv.FormatInt(plan.Size, 10))
	hd.Set("Content-Disposition", `attachment; filename="wharf-export.tar"`)
	hd.Set(adminapi.HeaderExportImages, strconv.Itoa(len(plan.Images)))
	hd.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	start := time.Now()
	if err := plan.Write(ctx, w, nil); err != nil {
		// Headers are gone: abort the body so the client sees a
		// truncated download, never a short archive that looks whole.
		h.log.LogAttrs(ctx, slog.LevelError, "export failed", slog.String("error", err.Error()))
		panic(http.ErrAbortHandler)
	}
	h.log.LogAttrs(ctx, slog.LevelInfo, "export done",
		slog.Int("images", len(plan.Images)), slog.Int("manifests", plan.Manifests), slog.Int("blobs", plan.Blobs),
		slog.Int64("bytes", plan.Size), slog.Duration("duration", time.Since(start)))
}

// imagesOf resolves refs to cached images.
func (h *Handler) imagesOf(ctx context.Context, refs []string) ([]ocilayout.Image, error) {
	var out []ocilayout.Image
	for _, ref := range refs {
		t, err := h.resolve(ref)
		if err != nil {
			return nil, err
		}
		im := ocilayout.Image{Upstream: t.Upstream, Repo: t.Repo, Tag: t.Tag, Digest: t.Digest}
		if t.Digest == "" {
			tag, err := h.cfg.Index.Tag(ctx, t.Upstream, t.Repo, t.Tag)
			if errors.Is(err, meta.ErrNotFound) {
				return nil, errNotCached(t)
			} else if err != nil {
				return nil, err
			}
			im.Digest = tag.Digest
		}
		out = append(out, im)
	}
	return out, nil
}

// allImages lists every tagged image of every cached repository.
func (h *Handler) allImages(ctx context.Context) ([]ocilayout.Image, error) {
	repos, err := h.cfg.Index.Repositories(ctx, meta.RepositoryQuery{})
	if err != nil {
		return nil, err
	}
	var out []ocilayout.Image
	for _, repo := range repos {
		tags, err := h.cfg.Index.Tags(ctx, repo.Upstream, repo.Name)
		if err != nil {
			return nil, err
		}
		for _, t := range tags {
			out = append(out, ocilayout.Image{Upstream: t.Upstream, Repo: t.Repo, Tag: t.Name, Digest: t.Digest})
		}
	}
	return out, nil
}

// newImporter builds the one Importer of the handler: imports through one
// Importer take turns, so that a failing import's clean-up never deletes a
// blob another import is about to record.
func (h *Handler) newImporter() *ocilayout.Importer {
	return &ocilayout.Importer{
		Blobs: h.cfg.Blobs,
		Index: h.cfg.Index,
		Name: func(ref string) (string, string, string, error) {
			t, err := h.resolve(ref)
			if err != nil {
				return "", "", "", err
			}
			return t.Upstream, t.Repo, t.Tag, nil
		},
		Known:   h.cfg.Known,
		Reserve: h.cfg.Mirror.Reserve,
		Now:     h.cfg.Now,
	}
}

// importLayout records an OCI image layout tarball from the body. Every
// blob is verified while it is written; nothing is recorded unless the
// whole archive was read and is consistent.
func (h *Handler) importLayout(w http.ResponseWriter, r *http.Request) {
	ctx := r.Context()
	start := time.Now()
	rep, err := h.importer.Import(ctx, r.Body)
	if err != nil {
		switch {
		case errors.Is(err, ocilayout.ErrNotLayout), errors.Is(err, ocilayout.ErrIncomplete),
			errors.Is(err, blob.ErrDigestMismatch), errors.Is(err, blob.ErrSizeMismatch),
			errors.Is(err, blob.ErrUnsupportedDigest), errors.Is(err, digest.ErrDigestInvalidFormat),
			errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, tar.ErrHeader):
			h.fail(w, r, invalid("import rejected, nothing recorded: %v", err))
		default:
			h.fail(w, r, err)
		}
		return
	}
	h.log.LogAttrs(ctx, slog.LevelInfo, "import done",
		slog.Int("images", len(rep.Images)), slog.Int("manifests", rep.Manifests), slog.Int("blobs", rep.Blobs),
		slog.Int("skipped", rep.Skipped), slog.Int64("bytes", rep.Bytes), slog.Duration("duration", time.Since(start)))
	images := rep.Images
	if images == nil {
		images = []string{}
	}
	writeJSON(w, http.StatusOK, adminapi.ImportReport{
		Images: images, Manifests: rep.Manifests, Blobs: rep.Blobs, Bytes: rep.Bytes, Skipped: rep.Skipped,
	})
}
