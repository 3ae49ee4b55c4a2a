package auth

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// ErrRealmNotAllowed is returned (wrapped) when a challenge names a token
// realm, or a token request is redirected to a URL, that CheckRealm refuses.
var ErrRealmNotAllowed = errors.New("token realm not allowed")

// CheckRealm decides whether a token may be requested from realm on behalf
// of the server at origin (scheme://host[:port], the server whose challenge
// named the realm). It returns the parsed realm on success.
//
// A malicious or compromised registry could otherwise point its challenge at
// a cloud metadata endpoint or an internal service and have wharf fetch it
// (SSRF), possibly with the configured credentials attached. The rules:
//
//   - the realm is an absolute http or https URL without user info;
//   - an https origin never sends us to an http realm (the credentials
//     would travel in clear text);
//   - the realm is on the origin's own host, or in the origin's own site:
//     the same registrable domain (public suffix plus one label), so Docker
//     Hub's realm auth.docker.io serves registry-1.docker.io and
//     gitlab.com serves registry.gitlab.com, but a registry cannot send
//     wharf (and the credentials it holds for that registry) to any other
//     host — the credential leak of CVE-2026-33540 in distribution's proxy.
//     A registry on a loopback or private address may name a realm on any
//     such address (one local network; localhost and 127.0.0.1 alike);
//   - a realm whose host is an IP literal in a loopback, private, shared
//     (CGNAT), link-local or unspecified range, or is localhost, is refused
//     unless the origin's host is such a host as well (a registry on the
//     local network legitimately has its token service there too).
//
// A realm whose host matches an entry of allow (a host name, host:port, or a
// URL whose scheme and host must match) is accepted without the last three
// checks: that is how a registry whose token service lives elsewhere
// (nvcr.io's authn.nvidia.com) is configured.
// Host names are not resolved here; a public name resolving to a private
// address is refused when the connection is made, by the upstream client's
// default transport (upstream.ErrInternalAddress), with the same exemptions.
func CheckRealm(realm, origin string, allow []string) (*url.URL, error) {
	u, err := url.Parse(realm)
	if err != nil {
		return nil, fmt.Errorf("%w: %q does not parse: %w", ErrRealmNotAllowed, realm, err)
	}
	scheme := strings.ToLower(u.Scheme)
	if scheme != "http" && scheme != "https" {
		return nil, fmt.Errorf("%w: %q is not an http(s) URL", ErrRealmNotAllowed, realm)
	}
	if u.Host == "" || u.Hostname() == "" {
		return nil, fmt.Errorf("%w: %q has no host", ErrRealmNotAllowed, realm)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: %q carries user info", ErrRealmNotAllowed, realm)
	}
	if HostAllowed(u, allow) {
		return u, nil
	}
	o, err := url.Parse(origin)
	if err != nil || o.Host == "" {
		return nil, fmt.Errorf("%w: origin %q is not a URL", ErrRealmNotAllowed, origin)
	}
	if scheme == "http" && strings.EqualFold(o.Scheme, "https") {
		return nil, fmt.Errorf("%w: %q is plain http but %s uses https", ErrRealmNotAllowed, realm, o.Host)
	}
	internal := IsInternalHost(u.Hostname()) && IsInternalHost(o.Hostname())
	if !internal && !sameSite(u.Hostname(), o.Hostname()) {
		return nil, fmt.Errorf("%w: %q is neither on %s nor in its domain; list the host in the upstream's token_realms if it is the registry's token service", ErrRealmNotAllowed, realm, o.Hostname())
	}
	if IsInternalHost(u.Hostname()) && !IsInternalHost(o.Hostname()) {
		return nil, fmt.Errorf("%w: %q is on a loopback, private or link-local host", ErrRealmNotAllowed, realm)
	}
	return u, nil
}

// sameSite reports whether host a is b or shares b's registrable domain
// (eTLD+1 by the public suffix list). IP literals match only themselves;
// a name that is itself a public suffix matches only itself.
func sameSite(a, b string) bool {
	a = strings.TrimSuffix(strings.ToLower(a), ".")
	b = strings.TrimSuffix(strings.ToLower(b), ".")
	if a == b {
		return true
	}
	if _, err := netip.ParseAddr(a); err == nil {
		return false
	}
	if _, err := netip.ParseAddr(b); err == nil {
		return false
	}
	da, err := publicsuffix.EffectiveTLDPlusOne(a)
	if err != nil {
		return false
	}
	db, err := publicsuffix.EffectiveTLDPlusOne(b)
	return err == nil && da == db
}

// HostAllowed reports whether u's host matches an entry of allow: a host
// name (any port), host:port, or a URL whose scheme and host:port must
// match. Comparison ignores case.
func HostAllowed(u *url.URL, allow []string) bool {
	for _, a := range allow {
		a = strings.TrimSpace(a)
		if a == "" {
			continue
		}
		if strings.Contains(a, "://") {
			au, err := url.Parse(a)
			if err == nil && strings.EqualFold(au.Scheme, u.Scheme) && strings.EqualFold(au.Host, u.Host) {
				return true
			}
			continue
		}
		if strings.EqualFold(a, u.Host) || strings.EqualFold(a, u.Hostname()) {
			return true
		}
	}
	return false
}

// cgnat is the shared address space of RFC 6598, used inside carrier and
// cloud networks and never reachable from the public internet.
var cgnat = netip.MustParsePrefix("100.64.0.0/10")

// IsInternalHost reports whether hostname (as returned by url.URL.Hostname)
// names the local machine or a non-public network: localhost and its
// subdomains, or an IP literal in a loopback, private, shared, link-local,
// interface-local or unspecified range (IPv4-mapped IPv6 included).
// Host names made only of numeric labels that are not canonical IP literals,
// such as "2130706433" or "0x7f.1", are treated as internal as well: some
// resolvers read them as IPv4 addresses.
func IsInternalHost(hostname string) bool {
	h := strings.TrimSuffix(strings.ToLower(hostname), ".")
	if h == "" || h == "localhost" || strings.HasSuffix(h, ".localhost") {
		return true
	}
	if a, err := netip.ParseAddr(strings.Trim(h, "[]")); err == nil {
		a = a.Unmap()
		return a.IsLoopback() || a.IsPrivate() || a.IsLinkLocalUnicast() ||
			a.IsLinkLocalMulticast() || a.IsInterfaceLocalMulticast() ||
			a.IsUnspecified() || cgnat.Contains(a)
	}
	// inet_aton-style forms: every label decimal or 0x-hex. Resolvers that
	// accept them would turn the name into an address.
	for label := range strings.SplitSeq(h, ".") {
		if !isNumericLabel(label) {
			return false
		}
	}
	return true
}

func isNumericLabel(l string) bool {
	if rest, ok := strings.CutPrefix(l, "0x"); ok {
		return strings.Trim(rest, "0123456789abcdef") == ""
	}
	return l != "" && strings.Trim(l, "0123456789") == ""
}
