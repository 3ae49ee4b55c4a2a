package adminapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Sentinel errors an *APIError matches with errors.Is, one per error code,
// so callers branch on the kind of answer without comparing strings.
var (
	ErrUnauthorized = errors.New("admin API: unauthorized")
	ErrNotFound     = errors.New("admin API: not found")
	ErrInvalid      = errors.New("admin API: invalid request")
	ErrInUse        = errors.New("admin API: in use")
	ErrUnavailable  = errors.New("admin API: unavailable")
	ErrInternal     = errors.New("admin API: internal error")
)

// APIError is an error answer of the admin API: its HTTP status and the
// first error of its body. An answer whose body is not the admin API's
// error JSON (a proxy's error page, say) gets the code its status implies
// and the start of its body as the message.
type APIError struct {
	Status  int
	Code    string
	Message string
}

// Error returns "code: message".
func (e *APIError) Error() string { return e.Code + ": " + e.Message }

// Is matches the sentinel of e's code (ErrNotFound for NOT_FOUND, …).
func (e *APIError) Is(target error) bool {
	switch target {
	case ErrUnauthorized:
		return e.Code == CodeUnauthorized
	case ErrNotFound:
		return e.Code == CodeNotFound
	case ErrInvalid:
		return e.Code == CodeInvalid
	case ErrInUse:
		return e.Code == CodeInUse
	case ErrUnavailable:
		return e.Code == CodeUnavailable
	case ErrInternal:
		return e.Code == CodeInternal
	}
	return false
}

// Limits on what the client reads into memory: JSON answers are bounded by
// pagination (at most 1000 items a page), error bodies are short.
const (
	maxJSONBody  = 32 << 20
	maxErrorBody = 64 << 10
)

// Client speaks the admin API. The zero value is not usable: BaseURL is
// required. A Client is safe for concurrent use.
type Client struct {
	// BaseURL is the admin listener's URL, e.g. "http://127.0.0.1:5080";
	// a path ("https://host/wharf") is kept as a prefix.
	BaseURL string
	// Token, when set, is sent as "Authorization: Bearer <Token>" with
	// every /api/v1/ request (not with Healthz).
	Token string
	// HTTP sends the requests; nil means http.DefaultClient.
	HTTP *http.Client
}

// Healthz asks GET /healthz; any answer but 200 is an error.
func (c *Client) Healthz(ctx context.Context) error {
	resp, err := c.do(ctx, http.MethodGet, "/healthz", nil, nil, -1, "", false)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	return nil
}

// Stats returns the overview: GET /api/v1/stats.
func (c *Client) Stats(ctx context.Context) (Stats, error) {
	var s Stats
	return s, c.getJSON(ctx, "/api/v1/stats", nil, &s)
}

// Upstreams lists the configured upstreams: GET /api/v1/upstreams. With
// probe the server pings each upstream before answering.
func (c *Client) Upstreams(ctx context.Context, probe bool) ([]Upstream, error) {
	q := url.Values{}
	if probe {
		q.Set("probe", "1")
	}
	var u []Upstream
	return u, c.getJSON(ctx, "/api/v1/upstreams", q, &u)
}

// Repositories returns one page of cached repositories whose
// "upstream/name" contains q, of upstream ("" for all), starting at cursor
// ("" for the first page); limit 0 takes the server's default.
func (c *Client) Repositories(ctx context.Context, q, upstream, cursor string, limit int) (RepositoryPage, error) {
	v := url.Values{}
	setNonEmpty(v, "q", q)
	setNonEmpty(v, "upstream", upstream)
	setNonEmpty(v, "cursor", cursor)
	setLimit(v, limit)
	var p RepositoryPage
	return p, c.getJSON(ctx, "/api/v1/repositories", v, &p)
}

// Tags lists the cached tags of upstream/repo; ErrNotFound when the
// repository is not cached.
func (c *Client) Tags(ctx context.Context, upstream, repo string) ([]Tag, error) {
	v := url.Values{"upstream": {upstream}, "repo": {repo}}
	var t []Tag
	return t, c.getJSON(ctx, "/api/v1/tags", v, &t)
}

// Blobs returns one page of cached blobs starting at cursor.
func (c *Client) Blobs(ctx context.Context, cursor string, limit int) (BlobPage, error) {
	v := url.Values{}
	setNonEmpty(v, "cursor", cursor)
	setLimit(v, limit)
	var p BlobPage
	return p, c.getJSON(ctx, "/api/v1/blobs", v, &p)
}

// DeleteRepository removes every tag of upstream/repo and the content only
// they kept.
func (c *Client) DeleteRepository(ctx context.Context, upstream, repo string) (Deletion, error) {
	v := url.Values{"upstream": {upstream}, "repo": {repo}}
	var d Deletion
	return d, c.doJSON(ctx, http.MethodDelete, "/api/v1/repositories", v, nil, &d)
}

// DeleteTag removes the tag upstream/repo:tag and the content only it kept.
func (c *Client) DeleteTag(ctx context.Context, upstream, repo, tag string) (Deletion, error) {
	v := url.Values{"upstream": {upstream}, "repo": {repo}, "tag": {tag}}
	var d Deletion
	return d, c.doJSON(ctx, http.MethodDelete, "/api/v1/tags", v, nil, &d)
}

// DeleteContent removes the manifest or blob with digest dgst
// ("sha256:…").
func (c *Client) DeleteContent(ctx context.Context, dgst string) (Deletion, error) {
	var d Deletion
	return d, c.doJSON(ctx, http.MethodDelete, "/api/v1/content/"+url.PathEscape(dgst), nil, nil, &d)
}

// GC runs an eviction now and returns its report.
func (c *Client) GC(ctx context.Context) (GCReport, error) {
	var r GCReport
	return r, c.doJSON(ctx, http.MethodPost, "/api/v1/gc", nil, nil, &r)
}

// Prefetch starts a prefetch job; the server answers at once with the
// job, which then runs in the background (poll it with PrefetchJob).
func (c *Client) Prefetch(ctx context.Context, req PrefetchRequest) (PrefetchJob, error) {
	body, err := json.Marshal(req)
	if err != nil {
		return PrefetchJob{}, fmt.Errorf("adminapi: encode prefetch request: %w", err)
	}
	var j PrefetchJob
	return j, c.doJSON(ctx, http.MethodPost, "/api/v1/prefetch", nil, body, &j)
}

// PrefetchJobs lists the prefetch jobs the server remembers, most recent
// first.
func (c *Client) PrefetchJobs(ctx context.Context) ([]PrefetchJob, error) {
	var j []PrefetchJob
	return j, c.getJSON(ctx, "/api/v1/prefetch", nil, &j)
}

// PrefetchJob returns the prefetch job id as it is now.
func (c *Client) PrefetchJob(ctx context.Context, id string) (PrefetchJob, error) {
	var j PrefetchJob
	return j, c.getJSON(ctx, "/api/v1/prefetch/"+url.PathEscape(id), nil, &j)
}

// CancelPrefetch cancels the prefetch job id and returns it.
func (c *Client) CancelPrefetch(ctx context.Context, id string) (PrefetchJob, error) {
	var j PrefetchJob
	return j, c.doJSON(ctx, http.MethodDelete, "/api/v1/prefetch/"+url.PathEscape(id), nil, nil, &j)
}

// ExportBody is the stream of an export answer: a tar of an OCI image
// layout. Reading it to EOF proves it complete: the transport fails a
// body shorter than its Content-Length.
type ExportBody struct {
	io.ReadCloser
	// Images is the number of images the archive holds (the
	// Wharf-Export-Images header); -1 when the server did not say.
	Images int
}

// Export streams an archive of refs (image references; none: the whole
// cache). size is the archive's length from Content-Length, -1 when
// unknown. The reader is an *ExportBody; the caller closes it.
func (c *Client) Export(ctx context.Context, refs []string) (io.ReadCloser, int64, error) {
	v := url.Values{}
	for _, r := range refs {
		v.Add("ref", r)
	}
	resp, err := c.do(ctx, http.MethodGet, "/api/v1/export", v, nil, -1, "", true)
	if err != nil {
		return nil, 0, err
	}
	images := -1
	if n, err := strconv.Atoi(resp.Header.Get(HeaderExportImages)); err == nil && n >= 0 {
		images = n
	}
	return &ExportBody{ReadCloser: resp.Body, Images: images}, resp.ContentLength, nil
}

// Import sends an archive written by Export (or any OCI image layout tar)
// and returns what the server recorded. size is r's length, -1 when
// unknown (the body is then sent chunked). The server rejects an archive
// it cannot verify with ErrInvalid, recording nothing.
func (c *Client) Import(ctx context.Context, r io.Reader, size int64) (ImportReport, error) {
	resp, err := c.do(ctx, http.MethodPost, "/api/v1/import", nil, r, size, "application/x-tar", true)
	if err != nil {
		return ImportReport{}, err
	}
	defer resp.Body.Close()
	var rep ImportReport
	return rep, decode(resp, "/api/v1/import", &rep)
}

func (c *Client) getJSON(ctx context.Context, path string, q url.Values, out any) error {
	return c.doJSON(ctx, http.MethodGet, path, q, nil, out)
}

func (c *Client) doJSON(ctx context.Context, method, path string, q url.Values, body []byte, out any) error {
	var r io.Reader
	size := int64(-1)
	if body != nil {
		r, size = bytes.NewReader(body), int64(len(body))
	}
	resp, err := c.do(ctx, method, path, q, r, size, "application/json", true)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	return decode(resp, path, out)
}

func decode(resp *http.Response, path string, out any) error {
	dec := json.NewDecoder(io.LimitReader(resp.Body, maxJSONBody))
	if err := dec.Decode(out); err != nil {
		return fmt.Errorf("adminapi: %s %s: decode answer: %w", resp.Request.Method, path, err)
	}
	// Drain what is left (whitespace) so the connection can be reused.
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorBody))
	return nil
}

// do sends one request and returns a 2xx response, whose body the caller
// closes; any other answer becomes an *APIError. Transport errors are
// wrapped with the method and path.
func (c *Client) do(ctx context.Context, method, path string, q url.Values, body io.Reader, size int64, contentType string, auth bool) (*http.Response, error) {
	u, err := c.url(path, q)
	if err != nil {
		return nil, err
	}
	req, err := http.NewRequestWithContext(ctx, method, u, body)
	if err != nil {
		return nil, fmt.Errorf("adminapi: %s %s: %w", method, path, err)
	}
	if body != nil {
		// NewRequest knows the length of in-memory readers only; an
		// archive read from a file or pipe gets the caller's size, or is
		// sent chunked when it is unknown.
		req.ContentLength = size
		if size == 0 {
			req.Body = http.NoBody
		}
		req.Header.Set("Content-Type", contentType)
	}
	req.Header.Set("Accept", "application/json")
	if auth && c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	hc := c.HTTP
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("adminapi: %s %s: %w", method, path, err)
	}
	if resp.StatusCode/100 != 2 {
		defer resp.Body.Close()
		return nil, readError(resp)
	}
	return resp, nil
}

func (c *Client) url(path string, q url.Values) (string, error) {
	if c.BaseURL == "" {
		return "", errors.New("adminapi: no BaseURL")
	}
	base, err := url.Parse(c.BaseURL)
	if err != nil {
		return "", fmt.Errorf("adminapi: base URL: %w", err)
	}
	if base.Scheme != "http" && base.Scheme != "https" || base.Host == "" {
		return "", fmt.Errorf("adminapi: base URL %q: want http://host[:port] or https://host[:port]", c.BaseURL)
	}
	s := strings.TrimSuffix(base.Scheme+"://"+base.Host+base.EscapedPath(), "/") + path
	if len(q) > 0 {
		s += "?" + q.Encode()
	}
	return s, nil
}

// readError turns a non-2xx answer into an *APIError, reading at most
// maxErrorBody bytes of its body.
func readError(resp *http.Response) *APIError {
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	e := &APIError{Status: resp.StatusCode, Code: codeOf(resp.StatusCode)}
	var body ErrorBody
	if json.Unmarshal(b, &body) == nil && len(body.Errors) > 0 && body.Errors[0].Code != "" {
		e.Code, e.Message = body.Errors[0].Code, body.Errors[0].Message
		return e
	}
	e.Message = strings.TrimSpace(string(b))
	if i := strings.IndexByte(e.Message, '\n'); i >= 0 {
		e.Message = e.Message[:i]
	}
	if len(e.Message) > 200 {
		e.Message = strings.ToValidUTF8(e.Message[:200], "")
	}
	if e.Message == "" {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// codeOf is the error code an answer without an error body implies.
func codeOf(status int) string {
	switch {
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		return CodeUnauthorized
	case status == http.StatusNotFound:
		return CodeNotFound
	case status == http.StatusConflict:
		return CodeInUse
	case status == http.StatusServiceUnavailable:
		return CodeUnavailable
	case status >= 400 && status < 500:
		return CodeInvalid
	default:
		return CodeInternal
	}
}

func setNonEmpty(v url.Values, key, val string) {
	if val != "" {
		v.Set(key, val)
	}
}

func setLimit(v url.Values, limit int) {
	if limit > 0 {
		v.Set("limit", strconv.Itoa(limit))
	}
}
