package upstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"github.com/wharf-mirror/wharf/internal/upstream/auth"
)

// ErrInternalAddress: the default transport refused to connect to a host
// other than the registry's own because the address it resolved to is
// loopback, private, shared (CGNAT), link-local or unspecified, while the
// registry itself is not on such an address and the host is not listed in
// Config.RedirectHosts or Config.TokenRealms. It catches what the checks
// by name (ErrRedirect, auth.ErrRealmNotAllowed) cannot see: a public-
// looking name that resolves to an internal address (DNS rebinding, or
// names such as 127.0.0.1.nip.io, or one pointing at 169.254.169.254).
// It is not retried, and it is not ErrUnreachable: the upstream answered,
// with somewhere we will not go.
var ErrInternalAddress = errors.New("connection to an internal address refused")

// dialGuard dials for the default transport and checks, in the dialer's
// Control hook, the address each connection actually goes to: names are
// resolved by the dialer itself, so there is no window between the check
// and the connect for a second, different DNS answer.
type dialGuard struct {
	dialer   net.Dialer // template; Control is set per dial
	registry string     // lower-case host name of the registry's base URL
	// internalByName: the registry's own host is internal by name
	// (auth.IsInternalHost); then every target may be internal too.
	internalByName bool
	// allow: Config.RedirectHosts and Config.TokenRealms.
	allow []string
	// registryInternal records whether the latest connection to the
	// registry's own host went to an internal address: an upstream that is
	// there legitimately has its storage and token service there too.
	registryInternal atomic.Bool
	// isInternal classifies an address; tests replace it to make a
	// loopback listener look public.
	isInternal func(netip.AddrPort) bool

	mu      sync.Mutex
	proxies map[string]bool // host names the Proxy function returned
}

func newDialGuard(d net.Dialer, registry string, internalByName bool, allow []string) *dialGuard {
	return &dialGuard{
		dialer:         d,
		registry:       normalizeHost(registry),
		internalByName: internalByName,
		allow:          allow,
		isInternal:     func(ap netip.AddrPort) bool { return auth.IsInternalHost(ap.Addr().String()) },
		proxies:        map[string]bool{},
	}
}

// DialContext is the transport's DialContext. addr is the host and port
// of the URL being fetched, or of the proxy carrying the request.
func (g *dialGuard) DialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("%w: dial address %q: %w", ErrInternalAddress, addr, err)
	}
	host = normalizeHost(host)
	d := g.dialer
	d.ControlContext = func(_ context.Context, _, address string, _ syscall.RawConn) error {
		return g.check(host, port, address)
	}
	conn, err := d.DialContext(ctx, network, addr)
	if err == nil && host == g.registry {
		if ap, perr := netip.ParseAddrPort(conn.RemoteAddr().String()); perr == nil {
			g.registryInternal.Store(g.isInternal(ap))
		}
	}
	return conn, err
}

// check decides about one connection attempt from the URL host host to
// address (ip:port), before the connect.
func (g *dialGuard) check(host, port, address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		// The dialer passes resolved addresses; anything else is not
		// something we can judge, so it is refused.
		return fmt.Errorf("%w: %s: unreadable address %q", ErrInternalAddress, host, address)
	}
	switch {
	case host == g.registry, !g.isInternal(ap):
		return nil
	case g.internalByName, g.registryInternal.Load(), g.allowed(host, port), g.isProxy(host):
		return nil
	}
	return fmt.Errorf("%w: %s resolves to %s, but the registry %s is not on an internal network "+
		"(list the host in the upstream's redirect hosts or token realms to allow it)",
		ErrInternalAddress, host, ap.Addr(), g.registry)
}

// allowed reports whether host:port matches an entry of Config.RedirectHosts
// or TokenRealms: a host name (any port), host:port, or a URL, whose
// scheme only decides the default port (the scheme itself was checked by
// name before the request was sent).
func (g *dialGuard) allowed(host, port string) bool {
	for _, a := range g.allow {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if strings.Contains(a, "://") {
			u, err := url.Parse(a)
			if err != nil {
				continue
			}
			p := u.Port()
			if p == "" {
				p = defaultPort(u.Scheme)
			}
			if normalizeHost(u.Hostname()) == host && p == port {
				return true
			}
			continue
		}
		if h, p, err := net.SplitHostPort(a); err == nil {
			if normalizeHost(h) == host && p == port {
				return true
			}
			continue
		}
		if normalizeHost(a) == host {
			return true
		}
	}
	return false
}

// proxy wraps a Proxy function of the transport so that the guard knows
// the proxies: a connection to the proxy is the operator's choice, and what
// the proxy connects to is out of our sight (its own policy applies).
func (g *dialGuard) proxy(next func(*http.Request) (*url.URL, error)) func(*http.Request) (*url.URL, error) {
	return func(req *http.Request) (*url.URL, error) {
		u, err := next(req)
		if u != nil && err == nil {
			g.mu.Lock()
			g.proxies[normalizeHost(u.Hostname())] = true
			g.mu.Unlock()
		}
		return u, err
	}
}

func (g *dialGuard) isProxy(host string) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.proxies[host]
}

// normalizeHost makes host names comparable: lower case, no brackets
// around IPv6 literals, no trailing dot.
func normalizeHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(strings.Trim(h, "[]")), ".")
}

func defaultPort(scheme string) string {
	switch strings.ToLower(scheme) {
	case "https":
		return "443"
	case "http":
		return "80"
	}
	return ""
}
