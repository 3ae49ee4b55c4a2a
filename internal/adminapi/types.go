// Package adminapi is the wire format of wharf's admin API, served on the
// admin listener under /api/v1/, and a client for it. The server side is
// package admin; the CLI, the web UI and tests speak this format.
//
// Conventions:
//   - Bodies are JSON; times are RFC 3339 in UTC and omitted when unknown;
//     sizes are bytes.
//   - Errors use the OCI distribution error body ({"errors":[{"code",
//     "message"}]}) with these codes: UNAUTHORIZED (401, missing or wrong
//     bearer token), NOT_FOUND (404), INVALID (400, a parameter names the
//     problem), IN_USE (409), UNAVAILABLE (503), INTERNAL (500).
//   - Lists are paginated with limit (default 100, at most 1000) and an
//     opaque cursor: a page that has more carries Next, to pass back as
//     ?cursor=.
//   - When the server has an admin token, every /api/v1/ request carries
//     "Authorization: Bearer <token>".
//
// Endpoints:
//
//	GET    /api/v1/stats                          Stats
//	GET    /api/v1/upstreams[?probe=1]            []Upstream (probe pings each upstream first)
//	GET    /api/v1/repositories?q=&upstream=&limit=&cursor=   RepositoryPage
//	GET    /api/v1/tags?upstream=&repo=           []Tag (404 when the repository is not cached)
//	GET    /api/v1/blobs?limit=&cursor=           BlobPage
//	DELETE /api/v1/repositories?upstream=&repo=   Deletion
//	DELETE /api/v1/tags?upstream=&repo=&tag=      Deletion
//	DELETE /api/v1/content/{digest}               Deletion (a manifest or a blob)
//	POST   /api/v1/gc                             GCReport (runs eviction now)
//	POST   /api/v1/prefetch  PrefetchRequest  →  202 PrefetchJob
//	GET    /api/v1/prefetch                       []PrefetchJob (most recent first)
//	GET    /api/v1/prefetch/{id}                  PrefetchJob
//	DELETE /api/v1/prefetch/{id}                  PrefetchJob (cancels it)
//	GET    /api/v1/export?ref=...&ref=...         application/x-tar, an OCI image layout
//	                                               (no ref: the whole cache); Content-Length exact
//	POST   /api/v1/import   (body: the tar)       ImportReport
package adminapi

import (
	"time"
)

// Error codes of the admin API.
const (
	CodeUnauthorized = "UNAUTHORIZED"
	CodeNotFound     = "NOT_FOUND"
	CodeInvalid      = "INVALID"
	CodeInUse        = "IN_USE"
	CodeUnavailable  = "UNAVAILABLE"
	CodeInternal     = "INTERNAL"
)

// ErrorBody is the body of every error answer.
type ErrorBody struct {
	Errors []ErrorItem `json:"errors"`
}

// ErrorItem is one error.
type ErrorItem struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Stats is the overview of a running wharf.
type Stats struct {
	Version string    `json:"version"`
	Started time.Time `json:"started"`
	Cache   Cache     `json:"cache"`
	// Traffic counts since the server started.
	Traffic Traffic `json:"traffic"`
}

// Cache is the cache's size against its limits.
type Cache struct {
	Bytes     int64 `json:"bytes"`
	MaxBytes  int64 `json:"max_bytes"` // 0: unbounded
	Manifests int   `json:"manifests"`
	Blobs     int   `json:"blobs"`
	// MaxAge is cache.max_age as a Go duration string; "" when unset.
	MaxAge string `json:"max_age,omitempty"`
	// LastGC is the latest eviction run, if any ran.
	LastGC *GCReport `json:"last_gc,omitempty"`
}

// Traffic counts requests and bytes since the server started.
type Traffic struct {
	Requests int64 `json:"requests"` // manifest and blob requests answered
	Hits     int64 `json:"hits"`     // answered from the cache (fresh or stale)
	Misses   int64 `json:"misses"`   // fetched from upstream
	// HitRatio is Hits / (Hits + Misses), 0 when there were none.
	HitRatio float64 `json:"hit_ratio"`
	// BytesFromCache is blob bytes served from the cache: bytes saved
	// upstream.
	BytesFromCache int64 `json:"bytes_from_cache"`
	// BytesFromUpstream is blob bytes served while being fetched.
	BytesFromUpstream int64 `json:"bytes_from_upstream"`
	// BytesFetched is bytes downloaded from upstreams.
	BytesFetched int64 `json:"bytes_fetched"`
	StaleServes  int64 `json:"stale_serves"`
}

// Upstream is one configured upstream and how it is doing.
type Upstream struct {
	Name    string   `json:"name"`
	URL     string   `json:"url"`
	Aliases []string `json:"aliases,omitempty"`
	// Health is "ok" (the latest request or probe succeeded), "down"
	// (the latest failed; Error says how) or "unknown" (nothing asked
	// yet).
	Health    string    `json:"health"`
	Error     string    `json:"error,omitempty"`
	LastOK    time.Time `json:"last_ok,omitzero"`
	LastError time.Time `json:"last_error,omitzero"`
	// RateLimit is the latest Docker Hub-style rate-limit headers seen;
	// nil when this upstream never sent them.
	RateLimit *RateLimit `json:"rate_limit,omitempty"`
}

// RateLimit is an upstream's pull quota as it last reported it.
type RateLimit struct {
	Limit     int       `json:"limit"`     // pulls per window; -1 unknown
	Remaining int       `json:"remaining"` // -1 unknown
	Window    string    `json:"window,omitempty"`
	Source    string    `json:"source,omitempty"`
	Seen      time.Time `json:"seen"`
}

// Repository is one cached repository.
type Repository struct {
	Upstream   string    `json:"upstream"`
	Name       string    `json:"name"`
	Tags       int       `json:"tags"`
	Manifests  int       `json:"manifests"`
	Bytes      int64     `json:"bytes"`
	LastAccess time.Time `json:"last_access,omitzero"`
}

// RepositoryPage is a page of repositories.
type RepositoryPage struct {
	Repositories []Repository `json:"repositories"`
	Next         string       `json:"next,omitempty"`
}

// Tag is one cached tag.
type Tag struct {
	Upstream string `json:"upstream"`
	Repo     string `json:"repo"`
	Name     string `json:"name"`
	Digest   string `json:"digest"`
	// MediaType of the manifest the tag points to.
	MediaType string `json:"media_type,omitempty"`
	// Bytes is the cached size of the image: the manifest and every
	// cached manifest and blob it references, recursively, each once.
	Bytes      int64     `json:"bytes"`
	CheckedAt  time.Time `json:"checked_at"`
	LastAccess time.Time `json:"last_access,omitzero"`
	// Reference is the full name a client pulls, e.g.
	// "docker.io/library/nginx:1.27".
	Reference string `json:"reference"`
}

// Blob is one cached blob.
type Blob struct {
	Digest     string    `json:"digest"`
	Bytes      int64     `json:"bytes"`
	LastAccess time.Time `json:"last_access,omitzero"`
}

// BlobPage is a page of blobs.
type BlobPage struct {
	Blobs []Blob `json:"blobs"`
	Next  string `json:"next,omitempty"`
}

// Deletion says what a delete removed and what it kept.
type Deletion struct {
	Manifests int    `json:"manifests"` // manifest records removed
	Blobs     int    `json:"blobs"`     // blob records removed
	Bytes     int64  `json:"bytes"`     // bytes freed
	Tags      int    `json:"tags"`      // tags removed
	Kept      []Kept `json:"kept,omitempty"`
}

// Kept is content a delete left in place, and why.
type Kept struct {
	Digest string `json:"digest"`
	// Reason is "tagged" (another tag still points to it),
	// "referenced" (a cached manifest still references it) or "in_use"
	// (being served or fetched; retry later).
	Reason string `json:"reason"`
	// By lists the tags ("upstream/repo:tag") or manifests that keep it.
	By []string `json:"by,omitempty"`
}

// Reasons content is kept.
const (
	KeptTagged     = "tagged"
	KeptReferenced = "referenced"
	KeptInUse      = "in_use"
)

// GCReport is what one eviction run did.
type GCReport struct {
	Manifests  int       `json:"manifests"`
	Blobs      int       `json:"blobs"`
	Bytes      int64     `json:"bytes"`
	InUse      int       `json:"in_use"` // units skipped while in use
	SizeBefore int64     `json:"size_before"`
	SizeAfter  int64     `json:"size_after"`
	Started    time.Time `json:"started"`
	Duration   string    `json:"duration"` // Go duration
	Error      string    `json:"error,omitempty"`
}

// PrefetchRequest asks the server to pull references into the cache.
type PrefetchRequest struct {
	// Refs are image references as a client writes them: "nginx",
	// "nginx:1.27", "registry.k8s.io/pause:3.10", "ghcr.io/o/r@sha256:…".
	// Docker Hub is the default registry, "latest" the default tag.
	Refs []string `json:"refs"`
	// Platforms limits multi-platform images to these ("linux/amd64",
	// "linux/arm64/v8"); empty fetches every platform of an index.
	Platforms []string `json:"platforms,omitempty"`
	// Concurrency is how many references are fetched at once; 0 means 4,
	// at most 16.
	Concurrency int `json:"concurrency,omitempty"`
}

// Prefetch job and item states.
const (
	StateQueued   = "queued"
	StateRunning  = "running"
	StateDone     = "done"
	StateFailed   = "failed" // job: at least one item failed
	StateCanceled = "canceled"
)

// PrefetchJob is a prefetch and its progress.
type PrefetchJob struct {
	ID       string         `json:"id"`
	State    string         `json:"state"` // queued, running, done, failed, canceled
	Created  time.Time      `json:"created"`
	Finished time.Time      `json:"finished,omitzero"`
	Items    []PrefetchItem `json:"items"`
	// Totals over Items.
	Bytes      int64 `json:"bytes"`       // bytes of content fetched or found so far
	TotalBytes int64 `json:"total_bytes"` // bytes known to be needed so far
	Done       int   `json:"done"`        // items finished successfully
	Failed     int   `json:"failed"`      // items that failed
}

// PrefetchItem is one reference of a prefetch.
type PrefetchItem struct {
	Ref string `json:"ref"`
	// Reference is Ref normalised: "docker.io/library/nginx:latest".
	Reference string `json:"reference,omitempty"`
	State     string `json:"state"` // queued, running, done, failed, canceled
	Digest    string `json:"digest,omitempty"`
	// Bytes of the image's content fetched or already cached; TotalBytes
	// as far as the manifests read so far tell (grows while manifests of
	// an index are read).
	Bytes      int64 `json:"bytes"`
	TotalBytes int64 `json:"total_bytes"`
	// Cached is bytes that were already in the cache (no upstream fetch).
	Cached int64  `json:"cached"`
	Error  string `json:"error,omitempty"`
}

// ImportReport is what an import recorded.
type ImportReport struct {
	Images    []string `json:"images"` // references recorded, e.g. "docker.io/library/nginx:1.27"
	Manifests int      `json:"manifests"`
	Blobs     int      `json:"blobs"`
	Bytes     int64    `json:"bytes"`   // bytes read from the archive's blobs
	Skipped   int      `json:"skipped"` // blobs already cached (verified, not rewritten)
}

// Header of an export answer: the number of images it holds.
const HeaderExportImages = "Wharf-Export-Images"
