package upstream

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/wharf-mirror/wharf/internal/upstream/auth"
)

// Sentinel errors; they are returned wrapped, test with errors.Is.
var (
	// ErrUnreachable: no HTTP response came back (connection refused or
	// reset, DNS failure, TLS failure, timeout), or the connection broke
	// while a manifest body was read. The upstream is down or cut off from
	// us, as opposed to answering with an error status.
	ErrUnreachable = errors.New("upstream unreachable")
	// ErrManifestTooLarge: the manifest exceeds MaxManifestSize.
	ErrManifestTooLarge = errors.New("manifest too large")
	// ErrDigestMismatch: the content does not match the requested digest,
	// or the upstream's Docker-Content-Digest does not match the content.
	ErrDigestMismatch = errors.New("digest mismatch")
	// ErrInvalidName: a repository name, reference or path suffix is not
	// well-formed; nothing was sent.
	ErrInvalidName = errors.New("invalid repository name or reference")
	// ErrRedirect: the upstream redirected too often, to a URL that is not
	// http(s), or to an internal address while itself being public.
	ErrRedirect = errors.New("unacceptable upstream redirect")
	// ErrTooManyRedirects is returned with ErrRedirect when a request was
	// redirected more than 10 times (a loop).
	ErrTooManyRedirects = errors.New("too many redirects")
)

// maxErrorBody bounds how much of an error response body is read.
const maxErrorBody = 64 << 10

// ErrorInfo is one entry of an OCI error document (distribution-spec,
// "Error Codes").
type ErrorInfo struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// ResponseError is an upstream answer with an unexpected status. The mirror
// relays it (404, 429 with Retry-After) or falls back to stale content
// (IsTransient).
type ResponseError struct {
	// Registry is the configured upstream name (Config.Name).
	Registry string
	Method   string
	// URL is the URL that answered; its query is dropped when that is not
	// the registry itself, because redirect targets carry signatures there.
	URL        string
	StatusCode int
	Header     http.Header
	// Errors is parsed from the body when it is an OCI error document.
	Errors []ErrorInfo
	// received is when the response arrived, the reference for an HTTP-date
	// Retry-After.
	received time.Time
}

// Error returns one line: registry, request, status and the first error
// code and message.
func (e *ResponseError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "upstream %s: %s %s: %d %s", e.Registry, e.Method, e.URL, e.StatusCode, http.StatusText(e.StatusCode))
	if len(e.Errors) > 0 {
		if c := e.Errors[0].Code; c != "" {
			b.WriteString(": " + oneLine(c))
		}
		if m := e.Errors[0].Message; m != "" {
			b.WriteString(": " + oneLine(m))
		}
	}
	return b.String()
}

// RetryAfter returns the delay the upstream asked for with Retry-After
// (delta-seconds or HTTP-date, RFC 9110 §10.2.3), or 0 when there is none
// or it is unreadable or in the past.
func (e *ResponseError) RetryAfter() time.Duration {
	v := strings.TrimSpace(e.Header.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		return time.Duration(min(secs, int64(24*time.Hour/time.Second))) * time.Second
	}
	if at, err := http.ParseTime(v); err == nil && !e.received.IsZero() {
		if d := at.Sub(e.received); d > 0 {
			return d
		}
	}
	return 0
}

// IsNotFound reports whether err is an upstream 404.
func IsNotFound(err error) bool {
	var re *ResponseError
	return errors.As(err, &re) && re.StatusCode == http.StatusNotFound
}

// IsTransient reports whether err is an upstream failure after which the
// mirror may serve a stale tag mapping (client-compat.md §5.3): the upstream
// is unreachable, answers 5xx, 429 or 408, refuses us (401/403, e.g.
// expired credentials), or its token service fails. A 404 and the caller's
// own context ending are not transient.
func IsTransient(err error) bool {
	if err == nil {
		return false
	}
	if errors.Is(err, ErrUnreachable) {
		return true
	}
	var re *ResponseError
	if errors.As(err, &re) {
		switch s := re.StatusCode; {
		case s >= 500, s == http.StatusTooManyRequests, s == http.StatusRequestTimeout,
			s == http.StatusUnauthorized, s == http.StatusForbidden:
			return true
		}
		return false
	}
	var te *auth.TokenError
	if errors.As(err, &te) || errors.Is(err, auth.ErrNoToken) {
		return true
	}
	return false
}

// newResponseError consumes and closes resp's body (bounded) and describes
// the response.
func (c *Client) newResponseError(resp *http.Response) *ResponseError {
	defer resp.Body.Close()
	e := &ResponseError{
		Registry:   c.name,
		StatusCode: resp.StatusCode,
		Header:     resp.Header,
		received:   c.now(),
	}
	if req := resp.Request; req != nil {
		e.Method = req.Method
		e.URL = c.displayURL(req.URL)
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
	var doc struct {
		Errors []ErrorInfo `json:"errors"`
	}
	if json.Unmarshal(body, &doc) == nil {
		e.Errors = doc.Errors
	}
	return e
}

// transportError wraps an error of http.Client.Do. When ctx ended the
// error says so (and is not ErrUnreachable: the caller gave up, the
// upstream did not fail); a refused internal address is ErrInternalAddress
// alone (the upstream answered, with somewhere we will not go); otherwise
// it wraps ErrUnreachable.
func (c *Client) transportError(ctx context.Context, err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		if u, perr := url.Parse(ue.URL); perr == nil {
			ue.URL = c.displayURL(u)
		}
	}
	if ctx.Err() != nil || errors.Is(err, ErrInternalAddress) {
		return fmt.Errorf("upstream %s: %w", c.name, err)
	}
	return fmt.Errorf("upstream %s: %w: %w", c.name, ErrUnreachable, err)
}

// permanent reports whether an ErrUnreachable error will not go away by
// retrying at once: the name does not exist, the certificate is bad, or
// the address was refused as internal.
func permanent(err error) bool {
	if errors.Is(err, ErrInternalAddress) {
		return true
	}
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return true
	}
	var certErr *tls.CertificateVerificationError
	return errors.As(err, &certErr)
}

// oneLine keeps a remote-supplied message on one bounded line.
func oneLine(s string) string {
	const max = 256
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) <= max {
		return s
	}
	for i := range s {
		if i > max {
			return s[:i] + "…"
		}
	}
	return s
}
