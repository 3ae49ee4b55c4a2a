package tlsserve

import (
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
)

// acmeChallengePath is where an ACME CA fetches http-01 key authorizations
// (RFC 8555 §8.3).
const acmeChallengePath = "/.well-known/acme-challenge/"

// hstsValue asks browsers and other HSTS-aware clients to use HTTPS for this
// host for a year (RFC 6797 §6.1.1). No includeSubDomains: wharf cannot know
// that every subdomain of its name speaks HTTPS.
const hstsValue = "max-age=31536000"

// RedirectHandler is the handler of a plain-HTTP listener beside a TLS one.
// It answers every request with 308 Permanent Redirect to the same host,
// path and query over https, on httpsPort unless that is "443" (or ""), so
// that a client that followed the redirect repeats its method and body
// (RFC 9110 §15.4.9). A request without a Host is answered 400: there is no
// name to redirect to.
//
// When next is not nil, GET and HEAD requests for ACME's http-01 path
// (/.well-known/acme-challenge/, RFC 8555 §8.3) go to next instead — pass
// ACME.HTTPHandler there. The CA fetches that path over plain HTTP and
// must not be redirected away from it.
//
// RedirectHandler panics if httpsPort is not "" or a decimal port number:
// that is a wiring mistake, found at startup.
func RedirectHandler(httpsPort string, next http.Handler) http.Handler {
	if httpsPort == "" {
		httpsPort = "443"
	}
	if n, err := strconv.ParseUint(httpsPort, 10, 16); err != nil || n == 0 {
		panic(fmt.Sprintf("tlsserve: RedirectHandler: invalid HTTPS port %q", httpsPort))
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if next != nil && (r.Method == http.MethodGet || r.Method == http.MethodHead) &&
			strings.HasPrefix(r.URL.Path, acmeChallengePath) {
			next.ServeHTTP(w, r)
			return
		}
		target, ok := redirectTarget(r.Host, httpsPort, r.URL)
		if !ok {
			http.Error(w, "missing or invalid Host header", http.StatusBadRequest)
			return
		}
		http.Redirect(w, r, target, http.StatusPermanentRedirect)
	})
}

// redirectTarget returns the https URL for a request to host (a Host header,
// with or without port) and u. It reports false for an empty or malformed
// host.
func redirectTarget(host, httpsPort string, u *url.URL) (string, bool) {
	name := host
	if h, _, err := net.SplitHostPort(host); err == nil {
		name = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		name = host[1 : len(host)-1] // IPv6 literal without port
	}
	if !validRedirectHost(name) {
		return "", false
	}
	if httpsPort != "443" {
		name = net.JoinHostPort(name, httpsPort)
	} else if strings.Contains(name, ":") {
		name = "[" + name + "]"
	}
	// A raw '#' can reach RawQuery from a request line (no client sends a
	// fragment, but nothing stops one); escaped, it stays part of the query.
	query := strings.ReplaceAll(u.RawQuery, "#", "%23")
	t := url.URL{Scheme: "https", Host: name, Path: u.Path, RawPath: u.RawPath, RawQuery: query}
	if t.Path == "" {
		t.Path = "/"
	}
	return t.String(), true
}

// validRedirectHost reports whether name (a Host without port and brackets)
// is an IP address or a DNS name of letters, digits, '-', '.', '_' and '~'
// (RFC 3986 §3.2.2 unreserved characters): nothing that could make the
// Location point elsewhere (userinfo, path, zone IDs).
func validRedirectHost(name string) bool {
	if name == "" {
		return false
	}
	if strings.Contains(name, ":") {
		a, err := netip.ParseAddr(name)
		return err == nil && a.Is6() && a.Zone() == ""
	}
	for _, c := range []byte(name) {
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9',
			c == '-', c == '.', c == '_', c == '~':
		default:
			return false
		}
	}
	return true
}

// HSTS wraps h to send Strict-Transport-Security: max-age=31536000 on every
// response to a request that came over TLS. Over plain HTTP the header is
// never sent (RFC 6797 §7.2): an attacker on the path could forge or strip
// it, and RedirectHandler answers plain HTTP anyway. h may override the
// header.
func HSTS(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.TLS != nil {
			w.Header().Set("Strict-Transport-Security", hstsValue)
		}
		h.ServeHTTP(w, r)
	})
}
