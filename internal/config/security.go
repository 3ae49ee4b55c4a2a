package config

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Auth configures who may pull from the registry listener (and from the
// proxy and transparent listeners, which serve the same API).
//
// With neither htpasswd_file nor tokens set, authentication is off: every
// client is anonymous, and only upstreams that allow anonymous pulls are
// served. With either set, wharf answers the Docker token flow: a request
// without credentials to content that needs them gets 401 with
// `WWW-Authenticate: Bearer realm=".../token",service="wharf"`, the client
// fetches a token from wharf's own /token endpoint with its user name and
// password, and presents it on every request.
type Auth struct {
	// HtpasswdFile is an htpasswd file of users with bcrypt passwords
	// (`htpasswd -B`); it is re-read when it changes. Default "".
	HtpasswdFile string `yaml:"htpasswd_file"`

	// Tokens are static secrets for scripts and CI: a client sends one as
	// its password (with any user name) or as a Bearer token.
	Tokens []StaticToken `yaml:"tokens"`

	// Anonymous lets clients without credentials pull from the upstreams
	// that hold no private credentials (and from any upstream whose
	// access.anonymous is true). Default true.
	Anonymous *bool `yaml:"anonymous"`

	// TokenTTL is how long a token issued by /token is valid. Default 15m.
	TokenTTL Duration `yaml:"token_ttl"`

	// Realm is the token endpoint's URL announced in challenges, for a
	// wharf behind a reverse proxy that changes scheme or path, e.g.
	// "https://mirror.example.com/token". Default: the scheme and Host the
	// client used, path /token.
	Realm string `yaml:"realm"`
}

// StaticToken is one static credential.
type StaticToken struct {
	// Name identifies the token in logs and in upstream access lists.
	Name string `yaml:"name"`
	// Token is the secret, at least 16 characters; prefer TokenFile.
	Token string `yaml:"token,omitempty"`
	// TokenFile is a file whose content (trailing newlines removed) is
	// the secret.
	TokenFile string `yaml:"token_file,omitempty"`

	resolved string
}

// Secret is the token's secret: after Resolve, the one read from
// token_file (or token); before it, Token.
func (t *StaticToken) Secret() string {
	if t.resolved != "" {
		return t.resolved
	}
	return t.Token
}

// Enabled reports whether clients can authenticate at all.
func (a *Auth) Enabled() bool { return a.HtpasswdFile != "" || len(a.Tokens) > 0 }

// AnonymousAllowed is auth.anonymous with its default (true).
func (a *Auth) AnonymousAllowed() bool { return a.Anonymous == nil || *a.Anonymous }

// Access is an upstream's pull policy.
type Access struct {
	// Anonymous lets clients without credentials pull this upstream's
	// content. Default: auth.anonymous for an upstream without
	// credentials; false for one with credentials, whose content may be
	// private — set it to true explicitly to share it with every client
	// (e.g. Docker Hub credentials held only for the higher rate limit).
	Anonymous *bool `yaml:"anonymous"`
	// Users are the authenticated clients (htpasswd users and static
	// token names) allowed to pull; empty allows every authenticated
	// client.
	Users []string `yaml:"users,omitempty"`
}

// HasCredentials reports whether wharf authenticates to the upstream, so
// that what it fetches may be private.
func (u *Upstream) HasCredentials() bool { return u.Username != "" }

// AnonymousAccess reports whether clients without credentials may pull
// from this upstream (see Access.Anonymous).
func (u *Upstream) AnonymousAccess(c *Config) bool {
	if u.Access.Anonymous != nil {
		return *u.Access.Anonymous
	}
	if u.HasCredentials() {
		return false
	}
	return c.Auth.AnonymousAllowed()
}

// Transparent configures a TLS listener that answers for registry host
// names directly, for a DNS override or an iptables REDIRECT of
// "quay.io:443" to wharf: it picks the certificate by SNI — from the files
// in Certificates whose names cover it, else minted by wharf's CA for an
// upstream name, alias, virtual host or proxy.intercept_hosts entry — and
// routes by Host like the registry listener.
type Transparent struct {
	// Listen is the address, typically ":443"; "" disables it.
	// Environment: WHARF_TRANSPARENT_LISTEN.
	Listen string `yaml:"listen"`
	// Certificates are certificate/key file pairs, re-read when they
	// change; each serves the names it carries.
	Certificates []CertificatePair `yaml:"certificates"`
}

// CertificatePair is a PEM certificate (with its chain) and its key.
type CertificatePair struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Limits bound what one client, and what wharf as a whole, may cost.
type Limits struct {
	// ClientRate is how many requests per second one client (by source
	// address) may make to the registry, proxy and transparent listeners;
	// requests beyond it get 429 TOOMANYREQUESTS with Retry-After. 0
	// disables the limit. Default 0.
	ClientRate float64 `yaml:"client_rate"`
	// ClientBurst is how many requests a client may make at once before
	// ClientRate applies. Default: twice ClientRate, at least 1.
	ClientBurst int `yaml:"client_burst"`
	// MaxHeaderBytes bounds a request's header block on every listener;
	// a larger one gets 431. Default 64KiB.
	MaxHeaderBytes ByteSize `yaml:"max_header_bytes"`
	// AuthFailures is how many failed authentications one client may make
	// per minute before it gets 429 for the rest of the minute, against
	// password guessing. Default 10.
	AuthFailures int `yaml:"auth_failures"`
}

// EffectiveClientBurst is client_burst with its default.
func (l Limits) EffectiveClientBurst() int {
	if l.ClientBurst > 0 {
		return l.ClientBurst
	}
	b := int(2 * l.ClientRate)
	if b < 1 {
		b = 1
	}
	return b
}

// minTokenLength is the shortest static token accepted: guessable secrets
// would turn the mirror's upstream credentials into everyone's.
const minTokenLength = 16

func (c *Config) validateSecurity(add func(*FieldError)) {
	a := c.Auth
	if a.HtpasswdFile == "" && a.Anonymous != nil && !*a.Anonymous && len(a.Tokens) == 0 {
		add(invalid("auth.anonymous", "is false but no client can authenticate: set auth.htpasswd_file or auth.tokens"))
	}
	names := map[string]bool{}
	for i, t := range a.Tokens {
		field := "auth.tokens[" + strconv.Itoa(i) + "]"
		switch {
		case t.Name == "":
			add(invalid(field+".name", "must not be empty"))
		case strings.ContainsAny(t.Name, ": \t\r\n"):
			add(invalid(field+".name", "%q may not contain ':' or white space", t.Name))
		case names[t.Name]:
			add(invalid(field+".name", "%q is used twice", t.Name))
		}
		names[t.Name] = true
		switch {
		case t.Token != "" && t.TokenFile != "":
			add(invalid(field, "set token or token_file, not both"))
		case t.Token == "" && t.TokenFile == "":
			add(invalid(field, "needs token or token_file"))
		case t.Token != "" && len(t.Token) < minTokenLength:
			add(invalid(field+".token", "is %d characters; use at least %d (e.g. openssl rand -hex 32)", len(t.Token), minTokenLength))
		}
	}
	if a.TokenTTL < 0 || (a.TokenTTL != 0 && time.Duration(a.TokenTTL) < time.Minute) {
		add(invalid("auth.token_ttl", "%s must be at least 1m", a.TokenTTL))
	}
	if a.Realm != "" {
		if u, err := url.Parse(a.Realm); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.Fragment != "" {
			add(invalid("auth.realm", "%q is not an absolute http(s) URL, e.g. \"https://mirror.example.com/token\"", a.Realm))
		}
	}
	for _, name := range c.EnabledUpstreams() {
		u := c.Upstreams[name]
		if len(u.Access.Users) > 0 && !a.Enabled() {
			add(invalid(upstreamField(name, "access.users"), "needs authenticated clients: set auth.htpasswd_file or auth.tokens"))
		}
		for i, user := range u.Access.Users {
			if user == "" || strings.ContainsAny(user, ": \t\r\n") {
				add(invalid(upstreamField(name, "access.users["+strconv.Itoa(i)+"]"), "%q is not a user name", user))
			}
		}
		if u.Access.Anonymous != nil && !*u.Access.Anonymous && !a.Enabled() {
			add(invalid(upstreamField(name, "access.anonymous"), "is false but no client can authenticate: set auth.htpasswd_file or auth.tokens"))
		}
		if u.HasCredentials() && u.Access.Anonymous == nil && !a.Enabled() {
			add(invalid(upstreamField(name, "access"), "the upstream has credentials, so what it serves may be private: set auth.htpasswd_file or auth.tokens so clients authenticate, or access.anonymous: true to serve it to every client"))
		}
	}

	if t := c.Transparent; t.Listen != "" || len(t.Certificates) > 0 {
		if t.Listen == "" {
			add(invalid("transparent.listen", "is empty but transparent.certificates are set"))
		} else {
			add(fieldErr("transparent.listen", checkListen(t.Listen)))
			for _, other := range []struct{ field, addr string }{{"listen", c.Listen}, {"admin_listen", c.AdminListen}, {"proxy.listen", c.Proxy.Listen}, {"tls.redirect_listen", c.TLS.RedirectListen}} {
				if other.addr != "" && listenOverlap(t.Listen, other.addr) {
					add(invalid("transparent.listen", "%q overlaps %s %q; the transparent listener needs its own port", t.Listen, other.field, other.addr))
				}
			}
		}
		for i, p := range t.Certificates {
			if p.CertFile == "" || p.KeyFile == "" {
				add(invalid("transparent.certificates["+strconv.Itoa(i)+"]", "needs both cert_file and key_file"))
			}
		}
	}

	l := c.Limits
	if l.ClientRate < 0 {
		add(invalid("limits.client_rate", "%v must not be negative", l.ClientRate))
	}
	if l.ClientBurst < 0 {
		add(invalid("limits.client_burst", "%d must not be negative", l.ClientBurst))
	}
	if l.MaxHeaderBytes != 0 && (l.MaxHeaderBytes < 4<<10 || l.MaxHeaderBytes > 1<<20) {
		add(invalid("limits.max_header_bytes", "%d is out of range 4KiB..1MiB", int64(l.MaxHeaderBytes)))
	}
	if l.AuthFailures < 0 {
		add(invalid("limits.auth_failures", "%d must not be negative", l.AuthFailures))
	}
	if c.Fetch.MaxConcurrent < 0 {
		add(invalid("fetch.max_concurrent", "%d must not be negative", c.Fetch.MaxConcurrent))
	}
}

// resolveTokens reads every static token's token_file.
func (c *Config) resolveTokens(readFile func(string) ([]byte, error)) []error {
	var errs []error
	for i := range c.Auth.Tokens {
		t := &c.Auth.Tokens[i]
		if t.TokenFile == "" {
			continue
		}
		field := "auth.tokens[" + strconv.Itoa(i) + "].token_file"
		if readFile == nil {
			errs = append(errs, invalid(field, "cannot be read: no file reader"))
			continue
		}
		b, err := readFile(t.TokenFile)
		if err != nil {
			errs = append(errs, &FieldError{Field: field, Err: fmt.Errorf("read %s: %w", t.TokenFile, err)})
			continue
		}
		s := trimNewlines(string(b))
		if len(s) < minTokenLength {
			errs = append(errs, invalid(field, "%s holds %d characters; use at least %d", t.TokenFile, len(s), minTokenLength))
			continue
		}
		t.resolved = s
	}
	return errs
}
