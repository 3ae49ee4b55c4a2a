package auth

import (
	"net/http"
	"strings"
)

// maxChallengeName bounds the repository name echoed in a challenge.
const maxChallengeName = 1024

// Challenge sets WWW-Authenticate on h for a request r to the repository
// called name as the client wrote it ("" for none, e.g. the /v2/ ping):
//
//	Bearer realm="<realm>",service="<service>"[,scope="repository:<name>:pull"]
//
// (distribution spec/auth/token.md, "How to authenticate"). The realm is
// Config.Realm, else scheme (https when r.TLS is set) + "://" + r.Host +
// "/token". A Host that is not a plain host[:port] is never echoed: the
// challenge then carries Config.Realm or no realm at all, which fails the
// client rather than sending its credentials somewhere odd. A name that
// is not printable ASCII is left out of the scope.
func (a *Authenticator) Challenge(h http.Header, r *http.Request, name string) {
	var b strings.Builder
	b.WriteString("Bearer ")
	realm := a.realm
	if realm == "" && validHost(r.Host) {
		scheme := "http"
		if r.TLS != nil {
			scheme = "https"
		}
		realm = scheme + "://" + r.Host + "/token"
	}
	if realm != "" {
		b.WriteString("realm=")
		b.WriteString(quote(realm))
		b.WriteByte(',')
	}
	b.WriteString("service=")
	b.WriteString(quote(a.service))
	if name != "" && validName(name) {
		b.WriteString(",scope=")
		b.WriteString(quote("repository:" + name + ":pull"))
	}
	h.Set("WWW-Authenticate", b.String())
}

// quote is an RFC 9110 §5.6.4 quoted-string: '"' and '\' escaped, control
// characters (which a quoted-string cannot hold) dropped.
func quote(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// validHost reports whether host is a plausible host[:port] (a name, an
// IPv4 address or a bracketed IPv6 address, with an optional port): only
// letters, digits, '.', '-', ':', '[' and ']'.
func validHost(host string) bool {
	if host == "" || len(host) > 262 {
		return false
	}
	for i := 0; i < len(host); i++ {
		c := host[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == ':' || c == '[' || c == ']') {
			return false
		}
	}
	return true
}

// validName reports whether a repository name may be echoed in a scope:
// bounded, printable ASCII without spaces.
func validName(name string) bool {
	if len(name) > maxChallengeName {
		return false
	}
	for i := 0; i < len(name); i++ {
		if name[i] <= ' ' || name[i] >= 0x7f {
			return false
		}
	}
	return true
}
