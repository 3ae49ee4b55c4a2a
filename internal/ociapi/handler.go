// Package ociapi serves the OCI distribution API (the read side: /v2/,
// manifests, blobs, tags/list, referrers) on top of the mirror.
//
// It owns HTTP concerns only: parsing and routing a request (through the
// route package), headers and status codes exactly as the distribution spec
// and real clients expect them (client-compat §5.2, §6.2), Range requests,
// the one mapping from errors to OCI error JSON, and the request log.
//
// Invariants: every error response is OCI error JSON; a blob response always
// announces its Content-Length and is aborted, never completed, when its
// bytes cannot be delivered verified; nothing is written after headers went
// out except the body.
package ociapi

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/mirror"
	"github.com/wharf-mirror/wharf/internal/route"
)

// Config configures a Handler.
type Config struct {
	Routes *route.Table
	Mirror *mirror.Service
	Logger *slog.Logger
	// Observer, when set, is told about every request (metrics).
	Observer Observer
	// Authorizer, when set, decides who may do what; nil serves everyone.
	Authorizer Authorizer
}

// Authorizer decides whether a request may be served. Authorize is called
// for the base endpoint (/v2/) with upstream "" and for every other
// request once it is routed, with the upstream it goes to and the
// repository name as the client wrote it (for the challenge's scope). It
// returns who the client is, for the request log, or an error — an
// *AccessError to refuse with 401, 403 or 429.
type Authorizer interface {
	Authorize(r *http.Request, upstream, name string) (client string, err error)
}

// Handler serves the registry API.
type Handler struct {
	routes *route.Table
	mirror *mirror.Service
	log    *slog.Logger
	obs    Observer
	authz  Authorizer
}

// New returns the registry API handler.
func New(cfg Config) *Handler {
	l := cfg.Logger
	if l == nil {
		l = slog.New(slog.DiscardHandler)
	}
	return &Handler{routes: cfg.Routes, mirror: cfg.Mirror, log: l, obs: cfg.Observer, authz: cfg.Authorizer}
}

// request is what the request log records about one request.
type request struct {
	kind     route.Kind
	upstream string
	repo     string
	ref      string
	result   mirror.Result
	client   string // who, when an Authorizer said so
}

func (h *Handler) ServeHTTP(rw http.ResponseWriter, r *http.Request) {
	start := time.Now()
	w := &responseWriter{ResponseWriter: rw}
	var req request
	err := h.serve(w, r, &req)
	var ae *Error
	aborted := false
	if err != nil {
		ae = toAPIError(req.kind, err)
		if w.wroteHeader && !w.resetHeader() {
			aborted = true
		} else {
			writeError(w, r, ae)
		}
	}
	h.logRequest(r, w, &req, start, ae, aborted)
	h.observe(w, &req, start, ae != nil)
	if aborted {
		// Headers (and maybe part of the body) are out: the only honest
		// thing left is to cut the connection so the client sees a
		// truncated response, never a complete one.
		panic(http.ErrAbortHandler)
	}
}

func (h *Handler) logRequest(r *http.Request, w *responseWriter, req *request, start time.Time, ae *Error, aborted bool) {
	level := slog.LevelInfo
	attrs := []slog.Attr{
		slog.String("method", r.Method),
		slog.String("host", r.Host),
		slog.String("path", r.URL.Path),
	}
	if r.URL.RawQuery != "" {
		attrs = append(attrs, slog.String("query", r.URL.RawQuery))
	}
	attrs = append(attrs,
		slog.Int("status", w.status),
		slog.Int64("bytes", w.written),
		slog.Duration("duration", time.Since(start)),
	)
	if req.upstream != "" {
		attrs = append(attrs, slog.String("upstream", req.upstream), slog.String("repo", req.repo))
	}
	if req.ref != "" {
		attrs = append(attrs, slog.String("ref", req.ref))
	}
	if req.client != "" {
		attrs = append(attrs, slog.String("client", req.client))
	}
	if req.result != "" {
		attrs = append(attrs, slog.String("cache", string(req.result)))
	}
	if ae != nil {
		attrs = append(attrs, slog.String("error", ae.Error()))
		if ae.Status >= 500 {
			level = slog.LevelWarn
		}
		if aborted {
			level = slog.LevelWarn
			attrs = append(attrs, slog.Bool("aborted", true))
		}
	}
	h.log.LogAttrs(r.Context(), level, "request", attrs...)
}

func (h *Handler) serve(w *responseWriter, r *http.Request, req *request) error {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	p, err := route.ParsePath(r.URL.EscapedPath())
	if err != nil {
		return err
	}
	req.kind = p.Kind
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		return apiError(http.StatusMethodNotAllowed, codeUnsupported,
			"this mirror is read-only: "+r.Method+" is not supported", nil)
	}
	if p.Kind == route.KindBase {
		if err := h.authorize(r, "", "", req); err != nil {
			return err
		}
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Content-Length", "2")
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodGet {
			w.Write([]byte("{}"))
		}
		return nil
	}
	query := r.URL.Query()
	t, err := h.routes.Match(r.Host, query.Get("ns"), p.Prefix, p.Name)
	if err != nil {
		return err
	}
	req.upstream, req.repo, req.ref = t.Upstream, t.Repo, p.Reference
	if err := h.authorize(r, t.Upstream, p.Name, req); err != nil {
		return err
	}
	ctx := r.Context()
	switch p.Kind {
	case route.KindManifest:
		return h.manifest(ctx, w, r, t, p, req)
	case route.KindBlob:
		return h.blob(ctx, w, r, t, digest.Digest(p.Reference), req)
	case route.KindTags:
		if err := checkPagination(query); err != nil {
			return err
		}
		l, err := h.mirror.Tags(ctx, t.Upstream, t.Repo, upstreamQuery(query))
		if err != nil {
			return err
		}
		req.result = l.Result
		return h.listing(w, r, l, p.Kind)
	case route.KindReferrers:
		l, err := h.mirror.Referrers(ctx, t.Upstream, t.Repo, digest.Digest(p.Reference), upstreamQuery(query))
		if err != nil {
			return err
		}
		req.result = l.Result
		return h.listing(w, r, l, p.Kind)
	}
	return route.ErrNotFound
}

func (h *Handler) authorize(r *http.Request, upstream, name string, req *request) error {
	if h.authz == nil {
		return nil
	}
	client, err := h.authz.Authorize(r, upstream, name)
	req.client = client
	return err
}

func (h *Handler) manifest(ctx context.Context, w *responseWriter, r *http.Request, t route.Target, p route.Path, req *request) error {
	m, err := h.mirror.Manifest(ctx, t.Upstream, t.Repo, p.Reference, r.Method == http.MethodGet)
	if err != nil {
		return err
	}
	req.result = m.Result
	_, byDigest := p.Digest()
	// By digest the bytes are fixed whatever the client accepts (crane asks
	// for children with a narrow Accept). By tag, honour an Accept that
	// excludes the stored type, as a registry would, instead of handing a
	// client a format it said it cannot read.
	if !byDigest && !accepts(r.Header.Values("Accept"), m.MediaType) {
		return apiError(http.StatusNotFound, codeManifestUnknown,
			"the manifest is a "+m.MediaType+", which the request's Accept header excludes", nil)
	}
	hd := w.Header()
	hd.Set("Content-Type", m.MediaType)
	hd.Set("Content-Length", strconv.FormatInt(m.Size, 10))
	hd.Set("Docker-Content-Digest", m.Digest.String())
	hd.Set("ETag", `"`+m.Digest.String()+`"`)
	setCacheHeaders(hd, m.Result)
	if inm := r.Header.Get("If-None-Match"); inm != "" && etagMatch(inm, m.Digest) {
		hd.Del("Content-Length")
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodGet {
		_, err := w.Write(m.Body)
		return err
	}
	return nil
}

func (h *Handler) blob(ctx context.Context, w *responseWriter, r *http.Request, t route.Target, d digest.Digest, req *request) error {
	hd := w.Header()
	if r.Method == http.MethodHead {
		size, res, err := h.mirror.StatBlob(ctx, t.Upstream, t.Repo, d)
		if err != nil {
			return err
		}
		req.result = res
		setBlobHeaders(hd, d, size, res)
		w.WriteHeader(http.StatusOK)
		return nil
	}
	b, err := h.mirror.OpenBlob(ctx, t.Upstream, t.Repo, d)
	if err != nil {
		return err
	}
	defer b.Close()
	req.result = b.Result
	start, n, status := parseRange(r.Header.Get("Range"), b.Size)
	switch status {
	case http.StatusRequestedRangeNotSatisfiable:
		hd.Set("Content-Range", "bytes */"+strconv.FormatInt(b.Size, 10))
		e := apiError(status, codeBlobUnknown, "requested range is not satisfiable", nil)
		writeError(w, r, e)
		return nil
	case http.StatusPartialContent:
		setBlobHeaders(hd, d, n, b.Result)
		hd.Set("Content-Range", "bytes "+strconv.FormatInt(start, 10)+"-"+
			strconv.FormatInt(start+n-1, 10)+"/"+strconv.FormatInt(b.Size, 10))
	default:
		setBlobHeaders(hd, d, b.Size, b.Result)
	}
	w.deferHeader = true
	w.WriteHeader(status)
	if err := b.WriteRange(ctx, w, start, n); err != nil {
		return err
	}
	w.flushHeader() // an empty range writes no byte
	return nil
}

func setBlobHeaders(hd http.Header, d digest.Digest, length int64, res mirror.Result) {
	hd.Set("Content-Type", "application/octet-stream")
	hd.Set("Content-Length", strconv.FormatInt(length, 10))
	hd.Set("Docker-Content-Digest", d.String())
	hd.Set("Accept-Ranges", "bytes")
	hd.Set("ETag", `"`+d.String()+`"`)
	setCacheHeaders(hd, res)
}

// setCacheHeaders says how wharf answered. A stale answer also carries the
// Warning header of RFC 7234 §5.5.1 so generic HTTP tooling notices it.
func setCacheHeaders(hd http.Header, res mirror.Result) {
	hd.Set("X-Wharf-Cache", string(res))
	if res == mirror.ResultStale {
		hd.Set("Warning", `110 wharf "Response is Stale"`)
	}
}

// listing writes a relayed tags/list or referrers answer, rewriting the
// pagination Link so that it points back at this mirror, at the same path
// the client used (with its ns and prefix), and never at upstream.
func (h *Handler) listing(w *responseWriter, r *http.Request, l *mirror.Listing, kind route.Kind) error {
	if l.Status >= 400 {
		// Our own error JSON, same status class: a 404 stays a 404 (for
		// referrers that means "no referrers API": clients fall back to
		// the tag schema).
		return upstreamStatusError(kind, l.Status, l.Header.Get("Retry-After"), nil)
	}
	hd := w.Header()
	for k, v := range l.Header {
		hd[k] = v
	}
	if links := hd.Values("Link"); len(links) > 0 {
		hd.Del("Link")
		if next, ok := nextLink(links, r); ok {
			hd.Set("Link", next)
		}
	}
	hd.Set("Content-Length", strconv.Itoa(len(l.Body)))
	setCacheHeaders(hd, l.Result)
	w.WriteHeader(l.Status)
	if r.Method == http.MethodGet {
		_, err := w.Write(l.Body)
		return err
	}
	return nil
}

// nextLink finds the rel="next" link among an upstream's Link header
// values and returns it rewritten onto the client's own path (see
// rewriteLink). Every other link is dropped, as is a next link that does
// not parse: a client is never pointed at another host, upstream's or any.
func nextLink(values []string, r *http.Request) (string, bool) {
	for _, v := range values {
		for len(v) > 0 {
			open := strings.IndexByte(v, '<')
			if open < 0 {
				break
			}
			close := strings.IndexByte(v[open:], '>')
			if close < 0 {
				break
			}
			close += open
			target := v[open+1 : close]
			params := v[close+1:]
			if k := strings.IndexByte(params, '<'); k >= 0 {
				params = params[:k]
			}
			v = v[close+1:]
			if !isNextRel(params) {
				continue
			}
			if out, ok := rewriteLink("<"+target+`>; rel="next"`, r); ok {
				return out, true
			}
			return "", false
		}
	}
	return "", false
}

// isNextRel reports whether link parameters carry rel="next" (RFC 8288
// §3.3: rel may list several relation types).
func isNextRel(params string) bool {
	for _, p := range strings.Split(params, ";") {
		name, value, ok := strings.Cut(strings.TrimSpace(p), "=")
		if !ok || !strings.EqualFold(strings.TrimSpace(name), "rel") {
			continue
		}
		for _, rel := range strings.Fields(strings.Trim(strings.TrimSpace(strings.TrimRight(value, ", ")), `"`)) {
			if strings.EqualFold(rel, "next") {
				return true
			}
		}
	}
	return false
}

// rewriteLink turns an upstream `<url>; rel="next"` into one on the client's
// own path: the query of the upstream URL (n, last, artifactType…) plus the
// client's ns. It reports false when the link has no <url> or the URL does
// not parse.
func rewriteLink(link string, r *http.Request) (string, bool) {
	open, close := strings.IndexByte(link, '<'), strings.IndexByte(link, '>')
	if open < 0 || close < open {
		return "", false
	}
	u, err := url.Parse(link[open+1 : close])
	if err != nil {
		return "", false
	}
	q := u.Query()
	q.Del("ns")
	if ns := r.URL.Query().Get("ns"); ns != "" {
		q.Set("ns", ns)
	}
	target := r.URL.EscapedPath()
	if enc := q.Encode(); enc != "" {
		target += "?" + enc
	}
	return link[:open+1] + target + link[close:], true
}

// maxPageSize caps tags/list's n: a larger page is asked for as this many
// (the spec lets a registry return fewer than n, with a Link to the rest).
const maxPageSize = 10000

// checkPagination validates tags/list's n and last (distribution spec,
// "Listing Tags") and caps n, so that nothing absurd is forwarded upstream.
func checkPagination(q url.Values) error {
	if vs, ok := q["n"]; ok {
		if len(vs) != 1 {
			return apiError(http.StatusBadRequest, codePaginationInvalid, "n must be given once", nil)
		}
		n, err := strconv.ParseUint(vs[0], 10, 64)
		if err != nil {
			return apiError(http.StatusBadRequest, codePaginationInvalid, "n must be a non-negative integer", nil)
		}
		if n > maxPageSize {
			q.Set("n", strconv.Itoa(maxPageSize))
		}
	}
	if vs, ok := q["last"]; ok {
		if len(vs) != 1 || !validTag(vs[0]) {
			return apiError(http.StatusBadRequest, codePaginationInvalid, "last must be one tag: [A-Za-z0-9_][A-Za-z0-9._-]{0,127}", nil)
		}
	}
	return nil
}

// validTag is the distribution spec's tag grammar.
func validTag(s string) bool {
	if len(s) == 0 || len(s) > 128 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9', c == '_':
		case (c == '.' || c == '-') && i > 0:
		default:
			return false
		}
	}
	return true
}

// upstreamQuery is the client's query minus ns, which selects the upstream
// and must never be forwarded (client-compat §0 rule 5).
func upstreamQuery(q url.Values) string {
	if _, ok := q["ns"]; !ok {
		return encodeQuery(q)
	}
	c := make(url.Values, len(q))
	for k, v := range q {
		if k != "ns" {
			c[k] = v
		}
	}
	return encodeQuery(c)
}

func encodeQuery(q url.Values) string {
	if len(q) == 0 {
		return ""
	}
	return q.Encode()
}

func etagMatch(header string, d digest.Digest) bool {
	for _, t := range strings.Split(header, ",") {
		t = strings.TrimSpace(t)
		if t == "*" || strings.Trim(strings.TrimPrefix(t, "W/"), `"`) == d.String() {
			return true
		}
	}
	return false
}

// responseWriter records the status and body size and whether headers went
// out. It forwards ReadFrom so that copying a cached file can use sendfile.
//
// With deferHeader set, WriteHeader only records the status; the header is
// sent with the first body byte (or by flushHeader). A blob response that
// fails before its first byte can then still become a proper error
// response instead of a cut connection.
type responseWriter struct {
	http.ResponseWriter
	status      int
	wroteHeader bool // WriteHeader was called
	sent        bool // the header went to the connection
	deferHeader bool
	written     int64
}

func (w *responseWriter) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	w.status, w.wroteHeader = code, true
	if !w.deferHeader {
		w.flushHeader()
	}
}

func (w *responseWriter) flushHeader() {
	if !w.sent {
		w.sent = true
		w.ResponseWriter.WriteHeader(w.status)
	}
}

// resetHeader forgets a recorded status that was never sent, so an error
// response can replace it.
func (w *responseWriter) resetHeader() bool {
	if w.sent {
		return false
	}
	w.status, w.wroteHeader, w.deferHeader = 0, false, false
	return true
}

func (w *responseWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.flushHeader()
	n, err := w.ResponseWriter.Write(p)
	w.written += int64(n)
	return n, err
}

func (w *responseWriter) ReadFrom(src io.Reader) (int64, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	w.flushHeader()
	n, err := io.Copy(w.ResponseWriter, src)
	w.written += n
	return n, err
}

func (w *responseWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
