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
//   - Never to loopback or private ranges unless the upstream itself is
//     there: redirect targets and token realms that are internal by name
//     are refused before the request (ErrRedirect,
//     auth.ErrRealmNotAllowed), and the default transport checks the
//     address every connection actually goes to (ErrInternalAddress), so
//     that a public name resolving to an internal address is refused too.
//     The registry's own host is never restricted; hosts listed in
//     RedirectHosts or TokenRealms are exempt.
//   - At most MaxConcurrent logical requests (one call, with its retries,
//     redirects and token fetches) are in flight per upstream; each holds
//     exactly one slot, from before its first byte is sent until its
//     response body is closed or it fails, so a token fetch or a redirect
//     never waits for a second slot.
//   - Response headers are bounded (256 KiB on the default transport).
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

	// MaxResponseHeaderBytes bounds the header block of an upstream
	// response on the default transport: an upstream sending huge headers
	// must not cost memory. Real registries send a few KiB.
	MaxResponseHeaderBytes = 256 << 10

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
	// ConnectTimeout, HeaderTimeout and Resolver with compression disabled,
	// HTTP/2 allowed, the environment's proxy settings, 32 idle connections
	// per host, response headers bounded by MaxResponseHeaderBytes, and a
	// dialer that refuses internal addresses for hosts other than the
	// registry's (ErrInternalAddress). Through a proxy, only the connection
	// to the proxy is checked; what the proxy connects to is its own
	// policy. A given *http.Transport that does not disable compression is
	// cloned with compression disabled; any other RoundTripper must not add
	// Accept-Encoding itself. A given transport dials as it likes: the
	// dial-time check is the default transport's.
	Transport http.RoundTripper
	// Resolver resolves host names for the default transport's dialer;
	// nil means net.DefaultResolver.
	Resolver *net.Resolver
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
	// MaxConcurrent bounds the logical requests in flight to this upstream
	// at once: a manifest, blob, tags or referrers request, with its
	// retries, redirects and token fetches, counts once, from its start
	// until its response body is closed (a blob body may stream for long)
	// or it fails. A further request waits for a slot until its context
	// ends. 0 means unbounded.
	MaxConcurrent int
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

	// slots has MaxConcurrent places, one taken per logical request in
	// flight; nil when unbounded.
	slots    chan struct{}
	inFlight atomic.Int64
	onWait   func() // tests: called when a request starts waiting for a slot
	// guard is the default transport's dialer; nil with Config.Transport.
	guard *dialGuard
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
	if cfg.MaxConcurrent < 0 {
		errs = append(errs, fmt.Errorf("MaxConcurrent %d: must not be negative", cfg.MaxConcurrent))
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
	if cfg.MaxConcurrent > 0 {
		c.slots = make(chan struct{}, cfg.MaxConcurrent)
	}
	transport := cfg.Transport
	switch t := transport.(type) {
	case nil:
		var tr *http.Transport
		tr, c.guard = defaultTransport(cfg, base.Hostname(), c.internal)
		transport = tr
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
// few hosts, bounded waits and headers, bytes exactly as the upstream sent
// them, and no connections to internal addresses except the registry's
// own (see dialGuard).
func defaultTransport(cfg Config, registryHost string, internal bool) (*http.Transport, *dialGuard) {
	connect := cfg.ConnectTimeout
	if connect == 0 {
		connect = DefaultConnectTimeout
	}
	header := cfg.HeaderTimeout
	if header == 0 {
		header = DefaultHeaderTimeout
	}
	allow := slices.Concat(cfg.RedirectHosts, cfg.TokenRealms)
	guard := newDialGuard(net.Dialer{Timeout: connect, KeepAlive: 30 * time.Second, Resolver: cfg.Resolver},
		registryHost, internal, allow)
	return &http.Transport{
		Proxy:                  guard.proxy(http.ProxyFromEnvironment),
		DialContext:            guard.DialContext,
		ForceAttemptHTTP2:      true,
		TLSHandshakeTimeout:    connect,
		ResponseHeaderTimeout:  header,
		MaxResponseHeaderBytes: MaxResponseHeaderBytes,
		ExpectContinueTimeout:  time.Second,
		IdleConnTimeout:        90 * time.Second,
		MaxIdleConns:           128,
		MaxIdleConnsPerHost:    32,
		DisableCompression:     true,
	}, guard
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
		port = defaultPort(scheme)
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
