package upstream

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"time"
)

// Observer is told about every HTTP exchange with the upstream, for
// metrics; *metrics.Metrics implements it. Every hop counts on its own: a
// redirect, the 401 that starts an authentication round, a retry, a token
// request.
type Observer interface {
	// UpstreamRequest reports one exchange. upstream is Config.Name; kind
	// is one of the Kind constants; status is the response status, or 0
	// when no response came back, and then err says why (a cancelled
	// context included); elapsed runs until the response headers arrived
	// or the request failed.
	UpstreamRequest(upstream, kind string, status int, elapsed time.Duration, err error)
}

// Kinds of exchanges reported to an Observer.
const (
	KindManifest  = "manifest"
	KindBlob      = "blob"
	KindTags      = "tags"
	KindReferrers = "referrers"
	KindPing      = "ping"  // GET /v2/
	KindToken     = "token" // a request to a token realm
	KindOther     = "other"
)

// requestKind names what a request path below the base URL addresses. The
// API object is the next-to-last path segment, whatever the repository
// name: /v2/<name>/manifests/<ref>, /v2/<name>/blobs/<digest>,
// /v2/<name>/tags/list, /v2/<name>/referrers/<digest>.
func requestKind(path string) string {
	if path == "/v2/" {
		return KindPing
	}
	i := strings.LastIndexByte(path, '/')
	if i < 0 {
		return KindOther
	}
	dir := path[:i]
	switch dir[strings.LastIndexByte(dir, '/')+1:] {
	case "manifests":
		return KindManifest
	case "blobs":
		return KindBlob
	case "tags":
		return KindTags
	case "referrers":
		return KindReferrers
	}
	return KindOther
}

// sendObserved is send, reported to the Observer under the kind of the
// logical request's path (a redirect hop to a CDN is still a blob).
func (c *Client) sendObserved(ctx context.Context, path, method string, u *url.URL, header http.Header, authorization string) (*http.Response, error) {
	if c.observer == nil {
		return c.send(ctx, method, u, header, authorization)
	}
	start := time.Now()
	resp, err := c.send(ctx, method, u, header, authorization)
	status := 0
	if resp != nil {
		status = resp.StatusCode
	}
	c.observer.UpstreamRequest(c.name, requestKind(path), status, time.Since(start), err)
	return resp, err
}

// observeTokens wraps the transport of token requests so that they are
// reported too: the token cache sends them itself.
func (c *Client) observeTokens(rt http.RoundTripper) http.RoundTripper {
	if c.observer == nil {
		return rt
	}
	return &tokenTransport{next: rt, c: c}
}

type tokenTransport struct {
	next http.RoundTripper
	c    *Client
}

func (t *tokenTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	start := time.Now()
	resp, err := t.next.RoundTrip(req)
	status := 0
	if err == nil {
		status = resp.StatusCode
	}
	t.c.observer.UpstreamRequest(t.c.name, KindToken, status, time.Since(start), err)
	return resp, err
}
