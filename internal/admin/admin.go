// Package admin serves wharf's admin API (the wire format is package
// adminapi): the overview, upstream health, the cached repositories, tags
// and blobs, deleting by repository, tag or digest, running eviction,
// prefetching images, and exporting and importing the cache as an OCI
// image layout.
//
// It reads the metadata index and calls the mirror and the eviction
// collector through small interfaces; the server wires the real ones and
// guards the handler with the admin token. The CLI and the web UI speak
// only this API, so a CLI command working on a data directory directly
// runs the very same code.
//
// Invariants:
//   - Deleting goes through the collector's rule (gc.Collector.Remove): a
//     blob a remaining manifest references is never deleted, content in use
//     is never deleted under a reader, index records go before bytes.
//   - Prefetch jobs are owned by the Handler, not by the request that
//     started them; Close cancels them and waits.
//   - Every error answer is an adminapi.ErrorBody.
package admin

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/blob"
	"github.com/wharf-mirror/wharf/internal/gc"
	"github.com/wharf-mirror/wharf/internal/meta"
	"github.com/wharf-mirror/wharf/internal/mirror"
	"github.com/wharf-mirror/wharf/internal/ocilayout"
)

// Mirror is what prefetch and import need from the mirror; *mirror.Service
// implements it.
type Mirror interface {
	Manifest(ctx context.Context, up, repo, ref string, withBody bool) (*mirror.Manifest, error)
	OpenBlob(ctx context.Context, up, repo string, d digest.Digest) (*mirror.Blob, error)
	Reserve(ds ...digest.Digest) (release func(), ok bool)
	// FlushAccess writes batched last-access times to the index, so that
	// listings show every pull served so far.
	FlushAccess(ctx context.Context) error
}

// Collector is the eviction collector; *gc.Collector implements it.
type Collector interface {
	Run(ctx context.Context) (gc.Report, error)
	Remove(ctx context.Context, roots []digest.Digest, keepTagged bool) (gc.Removal, error)
}

// Config wires a Handler.
type Config struct {
	Index     meta.Index
	Blobs     blob.Store
	Mirror    Mirror
	Collector Collector
	// Route maps a repository name as a client writes it after the
	// registry ("docker.io/library/nginx", "registry.k8s.io/pause") to a
	// configured upstream and its repository; an unknown registry is an
	// error.
	Route func(name string) (upstream, repo string, err error)
	// Known reports whether an upstream name is configured.
	Known func(upstream string) bool
	// Stats returns the overview; Upstreams the upstreams, pinging each
	// first when probe is set.
	Stats     func(ctx context.Context) (adminapi.Stats, error)
	Upstreams func(ctx context.Context, probe bool) []adminapi.Upstream
	Logger    *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Handler serves /api/v1/. Close it to stop prefetch jobs.
type Handler struct {
	cfg  Config
	log  *slog.Logger
	mux  *http.ServeMux
	jobs *jobs

	importer *ocilayout.Importer
}

// New creates a Handler.
func New(cfg Config) (*Handler, error) {
	switch {
	case cfg.Index == nil || cfg.Blobs == nil || cfg.Mirror == nil || cfg.Collector == nil:
		return nil, errors.New("admin: Index, Blobs, Mirror and Collector are required")
	case cfg.Route == nil || cfg.Stats == nil || cfg.Upstreams == nil:
		return nil, errors.New("admin: Route, Stats and Upstreams are required")
	}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.Known == nil {
		cfg.Known = func(string) bool { return true }
	}
	h := &Handler{cfg: cfg, log: cfg.Logger}
	h.jobs = newJobs(h)
	h.importer = h.newImporter()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/v1/stats", h.stats)
	mux.HandleFunc("GET /api/v1/upstreams", h.upstreams)
	mux.HandleFunc("GET /api/v1/repositories", h.repositories)
	mux.HandleFunc("GET /api/v1/tags", h.tags)
	mux.HandleFunc("GET /api/v1/blobs", h.blobs)
	mux.HandleFunc("DELETE /api/v1/repositories", h.deleteRepository)
	mux.HandleFunc("DELETE /api/v1/tags", h.deleteTag)
	mux.HandleFunc("DELETE /api/v1/content/{digest}", h.deleteContent)
	mux.HandleFunc("POST /api/v1/gc", h.runGC)
	mux.HandleFunc("POST /api/v1/prefetch", h.startPrefetch)
	mux.HandleFunc("GET /api/v1/prefetch", h.listPrefetch)
	mux.HandleFunc("GET /api/v1/prefetch/{id}", h.getPrefetch)
	mux.HandleFunc("DELETE /api/v1/prefetch/{id}", h.cancelPrefetch)
	mux.HandleFunc("GET /api/v1/export", h.export)
	mux.HandleFunc("POST /api/v1/import", h.importLayout)
	mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, adminapi.CodeNotFound, fmt.Sprintf("no admin API endpoint %s %s", r.Method, r.URL.Path))
	})
	h.mux = mux
	return h, nil
}

// ServeHTTP implements http.Handler.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// A known path with another method falls through to the "/api/"
	// catch-all too, so every answer is JSON.
	h.mux.ServeHTTP(w, r)
}

// Close cancels running prefetch jobs and waits for them.
func (h *Handler) Close() { h.jobs.close() }

// apiError is an error with its answer.
type apiError struct {
	status int
	code   string
	msg    string
}

func (e *apiError) Error() string { return e.code + ": " + e.msg }

func invalid(format string, args ...any) error {
	return &apiError{http.StatusBadRequest, adminapi.CodeInvalid, fmt.Sprintf(format, args...)}
}

func notFound(format string, args ...any) error {
	return &apiError{http.StatusNotFound, adminapi.CodeNotFound, fmt.Sprintf(format, args...)}
}

// fail answers err: an *apiError as it says, anything else 500 (logged).
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, err error) {
	var ae *apiError
	switch {
	case errors.As(err, &ae):
		writeError(w, ae.status, ae.code, ae.msg)
	case errors.Is(err, context.Canceled) && r.Context().Err() != nil:
		// The client left; nobody reads the answer.
	default:
		h.log.LogAttrs(r.Context(), slog.LevelError, "admin API request failed",
			slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("error", err.Error()))
		writeError(w, http.StatusInternalServerError, adminapi.CodeInternal, err.Error())
	}
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	writeJSON(w, status, adminapi.ErrorBody{Errors: []adminapi.ErrorItem{{Code: code, Message: msg}}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

// readJSON decodes a request body of at most 1 MiB strictly.
func readJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(io.LimitReader(r.Body, 1<<20))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return invalid("request body: %v", err)
	}
	return nil
}

// Pagination limits.
const (
	defaultLimit = 100
	maxLimit     = 1000
)

func pageLimit(r *http.Request) (int, error) {
	s := r.URL.Query().Get("limit")
	if s == "" {
		return defaultLimit, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		return 0, invalid("limit %q: want a number from 1 to %d", s, maxLimit)
	}
	return min(n, maxLimit), nil
}
