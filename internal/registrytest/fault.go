package registrytest

import (
	"context"
	"errors"
	"net/http"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
)

// Fault is a misbehaviour the registry shows to matching requests. Faults are
// checked in the order they were added and the first one that matches is
// applied; the others are not consulted for that request.
//
// A fault is either a status fault (Status set: the request is answered with
// that status and an OCI error body, nothing is served) or a body fault
// (ResetAfter, Corrupt, BytesPerSec, which may be combined: the real response
// is served and its body is damaged on the way out). Status takes precedence.
//
// Faults are applied after authentication: a request without a valid token
// gets its 401 and does not use up a fault. Status faults apply wherever they
// first match, including a registry response that would be a redirect; body
// faults apply only where the bytes are served (the storage host when the
// request is redirected), since a redirect has no body to damage.
type Fault struct {
	// Match selects the requests the fault applies to. nil matches every
	// /v2/<name>/... request on the registry and on the storage host. A Match
	// may also select /v2/ or token-server requests (see OnServer). It must
	// not call methods of the Registry.
	Match func(*http.Request) bool
	// Status answers with this HTTP status and an OCI error JSON body, e.g.
	// 429, 500, 503.
	Status int
	// Code is the OCI error code of a status fault. Default: derived from
	// Status (429 TOOMANYREQUESTS, 503 UNAVAILABLE, 404 BLOB_UNKNOWN or
	// MANIFEST_UNKNOWN, 401 UNAUTHORIZED, 403 DENIED, otherwise UNKNOWN).
	Code string
	// RetryAfter is sent as the Retry-After header of a status fault
	// (seconds or an HTTP date, verbatim).
	RetryAfter string
	// ResetAfter aborts the connection after this many body bytes
	// (panic(http.ErrAbortHandler) after flushing them), with the original
	// Content-Length already sent, so a Go client reads io.ErrUnexpectedEOF
	// (client-compat §6.3). -1 disables it. 0 means "reset right after the
	// headers" only when the fault has no other effect; combined with Corrupt
	// or BytesPerSec, write a positive count or -1.
	ResetAfter int64
	// Corrupt serves the real response with the same length but different
	// bytes: a few bytes in the middle of every 2xx body are inverted. A
	// client only notices through the digest.
	Corrupt bool
	// BytesPerSec throttles the body to about this rate, flushing after every
	// piece so the client sees progress. Throttling ends after maxThrottle
	// (the rest is sent at full speed), when the client goes away, or when
	// the Registry shuts down.
	BytesPerSec int64
	// Times is how many requests the fault applies to before it stops
	// matching; 0 means forever.
	Times int
}

// maxThrottle bounds the time one response spends in a BytesPerSec fault, so
// that a mistaken rate cannot hang a test.
const maxThrottle = 30 * time.Second

// activeFault is a Fault with its remaining uses.
type activeFault struct {
	Fault
	left int // -1: unlimited
}

func (f *activeFault) resets() bool {
	return f.ResetAfter > 0 || f.ResetAfter == 0 && !f.Corrupt && f.BytesPerSec <= 0
}

// AddFault appends f to the fault list.
func (r *Registry) AddFault(f Fault) {
	left := f.Times
	if left <= 0 {
		left = -1
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = append(r.faults, &activeFault{Fault: f, left: left})
}

// ClearFaults removes every fault.
func (r *Registry) ClearFaults() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.faults = nil
}

// takeFault finds the first fault matching req and uses it up once. Match
// functions run without the lock held; a fault another request used up in
// the meantime is skipped. statusOnly restricts the search to status faults
// (a redirect has no body to damage). repoPath says whether req is a
// /v2/<name>/... request, which a nil Match selects.
func (r *Registry) takeFault(req *http.Request, repoPath, statusOnly bool) *activeFault {
	r.mu.Lock()
	faults := append([]*activeFault(nil), r.faults...)
	r.mu.Unlock()
	for _, f := range faults {
		if statusOnly && f.Status == 0 {
			continue
		}
		if f.Match == nil && !repoPath || f.Match != nil && !f.Match(req) {
			continue
		}
		r.mu.Lock()
		ok := f.left != 0
		if f.left > 0 {
			f.left--
		}
		r.mu.Unlock()
		if ok {
			return f
		}
	}
	return nil
}

// writeStatusFault answers a request with a status fault.
func writeStatusFault(w http.ResponseWriter, req *http.Request, f *activeFault, rt route) {
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	code, msg := f.Code, "injected fault"
	if code == "" {
		switch f.Status {
		case http.StatusTooManyRequests:
			code, msg = "TOOMANYREQUESTS", "You have reached your pull rate limit."
		case http.StatusServiceUnavailable:
			code = "UNAVAILABLE"
		case http.StatusUnauthorized:
			code = "UNAUTHORIZED"
		case http.StatusForbidden:
			code = "DENIED"
		case http.StatusNotFound:
			code = "NAME_UNKNOWN"
			switch rt.kind {
			case kindBlob:
				code = "BLOB_UNKNOWN"
			case kindManifest:
				code = "MANIFEST_UNKNOWN"
			}
		default:
			code = "UNKNOWN"
		}
	}
	writeError(w, req, f.Status, code, msg)
}

// corruptSpan is how many bytes Corrupt inverts.
const corruptSpan = 8

var errShutdown = errors.New("registrytest: registry shut down")

// faultWriter applies body faults to a response on its way out. It does not
// implement io.ReaderFrom, so every byte passes through Write.
type faultWriter struct {
	http.ResponseWriter
	ctx  context.Context
	quit <-chan struct{}
	f    *activeFault

	resetAt    int64 // abort once this many body bytes are out; -1: never
	rate       int64 // bytes per second; 0: unthrottled
	step       int   // bytes per throttled write
	corruptLo  int64 // body offsets [corruptLo, corruptHi) are inverted
	corruptHi  int64
	headerSent bool
	written    int64
	start      time.Time
}

func newFaultWriter(w http.ResponseWriter, req *http.Request, f *activeFault, quit <-chan struct{}) *faultWriter {
	fw := &faultWriter{ResponseWriter: w, ctx: req.Context(), quit: quit, f: f, resetAt: -1}
	if f.resets() {
		fw.resetAt = max(f.ResetAfter, 0)
	}
	if f.BytesPerSec > 0 {
		fw.rate = f.BytesPerSec
		fw.step = int(max(1, min(f.BytesPerSec/16, 1<<20)))
	}
	return fw
}

func (w *faultWriter) WriteHeader(status int) {
	if w.headerSent {
		w.ResponseWriter.WriteHeader(status)
		return
	}
	w.headerSent = true
	if w.f.Corrupt && status >= 200 && status < 300 {
		if n, err := strconv.ParseInt(w.Header().Get("Content-Length"), 10, 64); err == nil {
			w.corruptLo = n / 2
			w.corruptHi = min(n, w.corruptLo+corruptSpan)
		} else {
			w.corruptLo, w.corruptHi = 0, corruptSpan // length unknown: damage the first bytes
		}
	}
	w.start = time.Now()
	w.ResponseWriter.WriteHeader(status)
}

func (w *faultWriter) Write(p []byte) (int, error) {
	if !w.headerSent {
		w.WriteHeader(http.StatusOK)
	}
	total := 0
	for len(p) > 0 {
		if w.resetAt >= 0 && w.written >= w.resetAt {
			w.abort()
		}
		n := len(p)
		if w.rate > 0 {
			n = min(n, w.step)
		}
		if w.resetAt >= 0 {
			n = int(min(int64(n), w.resetAt-w.written))
		}
		m, err := w.ResponseWriter.Write(w.damage(p[:n]))
		w.written += int64(m)
		total += m
		if err != nil {
			return total, err
		}
		p = p[n:]
		if w.rate > 0 {
			w.Flush()
			if err := w.pace(); err != nil {
				return total, err
			}
		}
	}
	if w.resetAt >= 0 && w.written >= w.resetAt {
		w.abort()
	}
	return total, nil
}

// damage returns piece (the bytes at offset w.written) with the corrupt
// window inverted. It copies: the caller's slice may be the stored blob
// itself (bytes.Reader.WriteTo hands it over directly).
func (w *faultWriter) damage(piece []byte) []byte {
	lo, hi := max(w.corruptLo, w.written), min(w.corruptHi, w.written+int64(len(piece)))
	if lo >= hi {
		return piece
	}
	out := append([]byte(nil), piece...)
	for i := lo; i < hi; i++ {
		out[i-w.written] ^= 0xff
	}
	return out
}

// pace sleeps until the bytes written so far are due at the configured rate.
func (w *faultWriter) pace() error {
	elapsed := time.Since(w.start)
	if elapsed > maxThrottle {
		w.rate = 0
		return nil
	}
	due := time.Duration(float64(w.written) / float64(w.rate) * float64(time.Second))
	if due <= elapsed {
		return nil
	}
	t := time.NewTimer(due - elapsed)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-w.ctx.Done():
		return w.ctx.Err()
	case <-w.quit:
		return errShutdown
	}
}

// Flush sends what has been written so far.
func (w *faultWriter) Flush() { _ = http.NewResponseController(w.ResponseWriter).Flush() }

// Unwrap lets http.ResponseController reach the underlying writer.
func (w *faultWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// abort flushes the bytes written so far (headers included) and ends the
// connection without completing the response.
func (w *faultWriter) abort() {
	if !w.headerSent {
		w.WriteHeader(http.StatusOK)
	}
	w.Flush()
	panic(http.ErrAbortHandler)
}

// finish runs after the handler returned: a reset fault aborts even a body
// that was shorter than ResetAfter (or a HEAD response), so the fault always
// shows as a dropped connection.
func (w *faultWriter) finish() {
	if w.resetAt >= 0 {
		w.abort()
	}
}

// Matchers for Fault.Match.

// IsBlobGET matches GET /v2/<name>/blobs/<d> on any server.
func IsBlobGET(d digest.Digest) func(*http.Request) bool {
	return func(req *http.Request) bool { return req.Method == http.MethodGet && IsBlob(d)(req) }
}

// IsBlob matches GET and HEAD /v2/<name>/blobs/<d> on any server.
func IsBlob(d digest.Digest) func(*http.Request) bool {
	return func(req *http.Request) bool {
		rt, ok := parsePath(req.URL.Path)
		return ok && rt.kind == kindBlob && rt.ref == d.String() && isRead(req.Method)
	}
}

// IsManifest matches GET and HEAD /v2/<name>/manifests/<ref> on any server;
// ref "" matches every reference.
func IsManifest(ref string) func(*http.Request) bool {
	return func(req *http.Request) bool {
		rt, ok := parsePath(req.URL.Path)
		return ok && rt.kind == kindManifest && (ref == "" || rt.ref == ref) && isRead(req.Method)
	}
}

// IsManifestGET matches GET /v2/<name>/manifests/<ref>; ref "" matches every
// reference.
func IsManifestGET(ref string) func(*http.Request) bool {
	return func(req *http.Request) bool { return req.Method == http.MethodGet && IsManifest(ref)(req) }
}

// IsTagList matches GET /v2/<name>/tags/list.
func IsTagList() func(*http.Request) bool {
	return func(req *http.Request) bool {
		rt, ok := parsePath(req.URL.Path)
		return ok && rt.kind == kindTags && req.Method == http.MethodGet
	}
}

// OnServer restricts match to requests that reached the named server
// (ServerRegistry, ServerStorage or ServerToken).
func OnServer(server string, match func(*http.Request) bool) func(*http.Request) bool {
	return func(req *http.Request) bool { return ServerOf(req) == server && match(req) }
}

// ServerOf names the server a request being handled reached.
func ServerOf(req *http.Request) string {
	s, _ := req.Context().Value(serverKey{}).(string)
	return s
}

type serverKey struct{}

func isRead(method string) bool { return method == http.MethodGet || method == http.MethodHead }
