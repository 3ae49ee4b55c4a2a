package ociapi

import (
	"net/http"
	"time"
)

// Observer is told about every request when its response is complete, for
// metrics; *metrics.Metrics implements it. It receives label-safe values
// only: the API object kind, the configured upstream name, the cache
// result and the status, never a repository, tag or digest.
type Observer interface {
	// Request reports one request. kind is "base", "manifest", "blob",
	// "tags", "referrers", or "other" for a path that is not part of the
	// API; upstream is "" when the request was not routed to one; result is
	// the cache result (X-Wharf-Cache), "error" when the response is an
	// error or was aborted, or "" when there was no cache lookup.
	Request(kind, upstream, result string, status int, elapsed time.Duration)
}

// observe reports a finished request, in the same place as the request log.
func (h *Handler) observe(w *responseWriter, req *request, start time.Time, failed bool) {
	if h.obs == nil {
		return
	}
	kind := "other"
	if req.kind != 0 {
		kind = req.kind.String()
	}
	result := string(req.result)
	if failed {
		result = "error"
	}
	status := w.status
	if status == 0 {
		status = http.StatusOK // what net/http sends for a handler that wrote nothing
	}
	h.obs.Request(kind, req.upstream, result, status, time.Since(start))
}
