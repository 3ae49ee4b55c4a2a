package server

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/wharf-mirror/wharf/internal/upstream"
)

// health remembers, per upstream, how its latest exchanges went, for the
// admin API's upstream list. It sees every exchange as an
// upstream.Observer and passes it on to next (the metrics).
type health struct {
	next upstream.Observer
	now  func() time.Time

	mu sync.Mutex
	by map[string]*upstreamHealth
}

type upstreamHealth struct {
	lastOK, lastErr time.Time
	err             string
}

func newHealth(next upstream.Observer) *health {
	return &health{next: next, now: time.Now, by: map[string]*upstreamHealth{}}
}

// UpstreamRequest implements upstream.Observer. A response other than a
// 5xx or a 429 means the registry is up (a 404 or 401 is an answer); no
// response, a 5xx or a 429 is a failure. A request cancelled by its client
// says nothing.
func (h *health) UpstreamRequest(name, kind string, status int, elapsed time.Duration, err error) {
	if h.next != nil {
		h.next.UpstreamRequest(name, kind, status, elapsed, err)
	}
	if status == 0 && errors.Is(err, context.Canceled) {
		return
	}
	now := h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	u := h.by[name]
	if u == nil {
		u = &upstreamHealth{}
		h.by[name] = u
	}
	switch {
	case status == 0:
		u.lastErr, u.err = now, kind+" request: "+errText(err)
	case status >= 500 || status == http.StatusTooManyRequests:
		u.lastErr, u.err = now, kind+" request: HTTP "+strconv.Itoa(status)+" "+http.StatusText(status)
	default:
		u.lastOK = now
	}
}

func errText(err error) string {
	if err == nil {
		return "no response"
	}
	return err.Error()
}

// state returns "ok", "down" or "unknown", the latest error and the times.
func (h *health) state(name string) (state, msg string, lastOK, lastErr time.Time) {
	h.mu.Lock()
	defer h.mu.Unlock()
	u := h.by[name]
	switch {
	case u == nil:
		return "unknown", "", time.Time{}, time.Time{}
	case u.lastErr.After(u.lastOK):
		return "down", u.err, u.lastOK, u.lastErr
	default:
		return "ok", "", u.lastOK, u.lastErr
	}
}
