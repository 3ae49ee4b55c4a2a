// Package upstream is wharf's client for the registries it mirrors: it
// fetches manifests and blobs, passes tags/list and referrers requests
// through, and handles authentication, redirects, retries and Docker Hub's
// rate-limit headers (client-compat.md §4–§6).
//
// Invariants:
//   - The upstream sees what a well-behaved client sends: the full manifest
//     Accept list on every manifest request (§5.1), HEAD for checks, no
//     Accept-Encoding (the transport never asks for compression, so no
//     intermediary can hand back a transfer-compressed variant whose
//     decoding would change the bytes, §6.1), and a User-Agent.
//   - Credentials and tokens for the registry are attached only to requests
//     whose scheme, host and port equal the registry's; redirect targets,
//     subdomains included, never receive them (§6.1). A redirect target
//     that challenges gets its own anonymous token.
//   - Redirects are followed here, at most 10 hops, only to http(s) URLs,
//     and not from a public registry to an internal address.
//   - Content fetched by digest is verified before it is returned
//     (manifests here; blobs by the caller, who streams them).
//   - Bodies that are only inspected (errors, tokens, manifests) are read
//     with a bound.
//   - Errors: *ResponseError for upstream answers, ErrUnreachable when no
//     answer came back, sentinels for content problems.
package upstream

import (
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/wharf-mirror/wharf/internal/upstream/auth"
)

// Defaults for zero Config fields.
const (
	DefaultConnectTimeout = 10 * time.Second
	DefaultHeaderTimeout  = 30 * time.Second
	DefaultUserAgent      = "wharf"

	// maxRedirects matches net/http's limit.
	maxRedirects = 10
	// firstBackoff and maxBackoff shape the delay between retries.
	firstBackoff = 100 * time.Millisecond
	maxBackoff   = 5 * time.Second
)

// Config configures a Client. Only URL is required.
type Config struct {
	// Name identifies the upstream in errors and logs, e.g. "docker.io";
	// default: the host of URL.
	Name string
	// URL is the registry's API base, e.g. "https://registry-1.docker.io";
	// requests go to URL + "/v2/...". A path prefix is kept.
	URL string
	// Username and Password, when set, are sent as HTTP Basic to the token
	// realm (or to the registry itself when it challenges with Basic).
	Username, Password string
	// TokenRealms lists realm hosts that are accepted although they are on
	// loopback, private or link-local addresses (see auth.CheckRealm).
	TokenRealms []string
	// RedirectHosts lists hosts on loopback, private or link-local
	// addresses that redirects may lead to although the registry's own
	// host is not such an address (e.g. a registry with a public name
	// whose storage redirects to an internal S3 endpoint by IP). Entries
	// take the forms of TokenRealms.
	RedirectHosts []string
	// Transport carries all requests. nil means a transport built from
	// ConnectTimeout and HeaderTimeout with compression disabled, HTTP/2
	// allowed, the environment's proxy settings and 32 idle connections per
	// host. A given *http.Transport that does not disable compression is
	// cloned with compression disabled; any other RoundTripper must not add
	// Accept-Encoding itself.
	Transport http.RoundTripper
	// ConnectTimeout bounds connecting, and then the TLS handshake, when
	// Transport is nil; default DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// HeaderTimeout bounds the wait for response headers after a request
	// was sent, when Transport is nil; default DefaultHeaderTimeout.
	HeaderTimeout time.Duration
	// Retries is how many extra attempts an idempotent request gets after a
	// transient failure: no response at all (except a missing DNS name or a
	// bad certificate), or 502/503/504. Attempts are spaced by exponential
	// backoff with jitter from 100ms up to 5s. 429 is never retried: the
	// caller serves stale content or relays it. 0 means no retries.
	Retries int
	// UserAgent is sent with every request; default "wharf". The binary
	// sets "wharf/<version>".
	UserAgent string
	// Logger receives debug records about retries and redirects; nil
	// discards them.
	Logger *slog.Logger
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
	// Observer, when set, is told about every HTTP exchange (metrics).
	Observer Observer
}

// Client talks to one upstream registry. It is safe for concurrent use.
type Client struct {
	name      string
	base      *url.URL // scheme, host, path prefix without trailing slash
	origin    string   // scheme://host:port of base, for host comparisons
	internal  bool     // the registry's own host is loopback/private
	redirects []string // Config.RedirectHosts
	http      *http.Client
	tokens    *auth.Cache
	cred      auth.Credentials
	userAgent string
	retries   int
	backoff   time.Duration // first retry delay; tests shorten it
	log       *slog.Logger
	now       func() time.Time
	observer  Observer

	mu         sync.Mutex
	challenges map[string]challenge // by origin of the challenging host

	rate atomic.Pointer[RateLimit]
}

// New validates cfg and returns a client. It does not contact the
// upstream.
func New(cfg Config) (*Client, error) {
	var errs []error
	base, err := url.Parse(cfg.URL)
	switch {
	case cfg.URL == "":
		errs = append(errs, errors.New("URL is required"))
	case err != nil:
		errs = append(errs, fmt.Errorf("URL: %w", err))
	case base.Scheme != "http" && base.Scheme != "https":
		errs = append(errs, fmt.Errorf("URL %q: scheme must be http or https", cfg.URL))
	case base.Host == "" || base.Hostname() == "":
		errs = append(errs, fmt.Errorf("URL %q: no host", cfg.URL))
	case base.User != nil:
		errs = append(errs, fmt.Errorf("URL %q: put credentials in Username and Password", cfg.URL))
	case base.RawQuery != "" || base.Fragment != "":
		errs = append(errs, fmt.Errorf("URL %q: no query or fragment allowed", cfg.URL))
	}
	if cfg.Retries < 0 {
		errs = append(errs, fmt.Errorf("Retries %d: must not be negative", cfg.Retries))
	}
	if cfg.ConnectTimeout < 0 || cfg.HeaderTimeout < 0 {
		errs = append(errs, errors.New("timeouts must not be negative"))
	}
	if strings.ContainsAny(cfg.UserAgent, "\r\n") {
		errs = append(errs, errors.New("UserAgent must be one line"))
	}
	if len(errs) > 0 {
		return nil, fmt.Errorf("upstream %s: %w", cfg.Name, errors.Join(errs...))
	}

	base = &url.URL{Scheme: base.Scheme, Host: strings.ToLower(base.Host), Path: strings.TrimRight(base.Path, "/")}
	c := &Client{
		name:       cfg.Name,
		base:       base,
		origin:     origin(base),
		internal:   auth.IsInternalHost(base.Hostname()),
		redirects:  slices.Clone(cfg.RedirectHosts),
		cred:       auth.Credentials{Username: cfg.Username, Password: cfg.Password},
		userAgent:  cfg.UserAgent,
		retries:    cfg.Retries,
		backoff:    firstBackoff,
		log:        cfg.Logger,
		now:        cfg.Now,
		observer:   cfg.Observer,
		challenges: map[string]challenge{},
	}
	if c.name == "" {
		c.name = base.Host
	}
	if c.userAgent == "" {
		c.userAgent = DefaultUserAgent
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	if c.now == nil {
		c.now = time.Now
	}
	transport := cfg.Transport
	switch t := transport.(type) {
	case nil:
		transport = defaultTransport(cfg)
	case *http.Transport:
		if !t.DisableCompression {
			t = t.Clone()
			t.DisableCompression = true
			transport = t
		}
	}
	c.http = &http.Client{
		Transport: transport,
		// Redirects are followed by Client.follow, which decides per hop
		// whether credentials may go along.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	c.tokens = auth.NewCache(auth.Config{
		Transport:     c.observeTokens(transport),
		UserAgent:     c.userAgent,
		AllowedRealms: slices.Clone(cfg.TokenRealms),
		Now:           c.now,
	})
	return c, nil
}

// defaultTransport is tuned for a mirror: many parallel blob fetches from
// few hosts, bounded waits, and bytes exactly as the upstream sent them.
func defaultTransport(cfg Config) *http.Transport {
	connect := cfg.ConnectTimeout
	if connect == 0 {
		connect = DefaultConnectTimeout
	}
	header := cfg.HeaderTimeout
	if header == 0 {
		header = DefaultHeaderTimeout
	}
	return &http.Transport{
		Proxy:                 http.ProxyFromEnvironment,
		DialContext:           (&net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second}).DialContext,
		ForceAttemptHTTP2:     true,
		TLSHandshakeTimeout:   connect,
		ResponseHeaderTimeout: header,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       90 * time.Second,
		MaxIdleConns:          128,
		MaxIdleConnsPerHost:   32,
		DisableCompression:    true,
	}
}

// Name returns the upstream's name as configured.
func (c *Client) Name() string { return c.name }

// CloseIdleConnections closes idle connections of the client's transport
// (when it supports that), e.g. at shutdown.
func (c *Client) CloseIdleConnections() { c.http.CloseIdleConnections() }

// origin returns scheme://host:port with the default port made explicit,
// so that "https://r.io" and "https://r.io:443" compare equal and
// "http://r.io" differs from both.
func origin(u *url.URL) string {
	scheme := strings.ToLower(u.Scheme)
	port := u.Port()
	if port == "" {
		switch scheme {
		case "https":
			port = "443"
		case "http":
			port = "80"
		}
	}
	return scheme + "://" + net.JoinHostPort(strings.ToLower(u.Hostname()), port)
}

// onRegistry reports whether u is on the registry's own origin, the only
// place credentials and the registry's tokens may go.
func (c *Client) onRegistry(u *url.URL) bool { return origin(u) == c.origin }

// displayURL renders u for errors and logs: the query is dropped unless u
// is on the registry (redirect targets carry signatures in it).
func (c *Client) displayURL(u *url.URL) string {
	v := *u
	v.User, v.Fragment, v.RawFragment = nil, "", ""
	if !c.onRegistry(u) {
		v.RawQuery, v.ForceQuery = "", false
	}
	return v.String()
}
