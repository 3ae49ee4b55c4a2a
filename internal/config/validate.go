package config

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"sort"
	"strconv"
	"strings"
)

// ErrInvalid is matched (errors.Is) by every configuration mistake Load,
// Validate and Resolve report, so a caller can tell "fix the configuration"
// from an I/O failure.
var ErrInvalid = errors.New("invalid configuration")

// FieldError is one problem with one configuration value. Its message is a
// single line: "<Field>: <problem>".
type FieldError struct {
	// Field names the value: a field path as written in the YAML file
	// (`upstreams["ghcr.io"].url`, `fetch.retries`), an environment
	// variable (`WHARF_TAG_TTL`), or the config file's path for a decoding
	// error (whose message then starts with the line number).
	Field string
	// Err is the problem. It matches ErrInvalid unless the problem is an
	// I/O failure (for example, an unreadable password_file).
	Err error
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Err.Error() }
func (e *FieldError) Unwrap() error { return e.Err }

// problem is a configuration mistake: it matches ErrInvalid and may wrap a
// cause (a parse error) without adding the cause's text twice.
type problem struct {
	msg   string
	cause error
}

func (p *problem) Error() string        { return p.msg }
func (p *problem) Is(target error) bool { return target == ErrInvalid }
func (p *problem) Unwrap() error        { return p.cause }

// invalid builds a *FieldError for a configuration mistake.
func invalid(field, format string, args ...any) *FieldError {
	err := fmt.Errorf(format, args...)
	return &FieldError{Field: field, Err: &problem{msg: err.Error(), cause: errors.Unwrap(err)}}
}

// fieldErr turns a check's error into a *FieldError for field; nil stays
// nil.
func fieldErr(field string, err error) *FieldError {
	if err == nil {
		return nil
	}
	return &FieldError{Field: field, Err: &problem{msg: err.Error(), cause: err}}
}

// upstreamField is the path of a field of the upstream called name, in the
// form used in error messages: upstreams["ghcr.io"].url.
func upstreamField(name, field string) string {
	p := "upstreams[" + strconv.Quote(name) + "]"
	if field != "" {
		p += "." + field
	}
	return p
}

// Validate checks the whole configuration and reports every problem it
// finds, joined with errors.Join; nil means the configuration is usable.
// Each problem is a *FieldError. Validate does not change c.
func (c *Config) Validate() error {
	var errs []error
	add := func(e *FieldError) {
		if e != nil {
			errs = append(errs, e)
		}
	}

	add(fieldErr("listen", checkListen(c.Listen)))
	add(fieldErr("admin_listen", checkListen(c.AdminListen)))
	if listenOverlap(c.Listen, c.AdminListen) {
		add(invalid("admin_listen", "%q overlaps listen %q; the admin listener needs its own port", c.AdminListen, c.Listen))
	}
	if c.AdminToken == "" && c.AdminTokenFile == "" && checkListen(c.AdminListen) == nil && !loopbackListen(c.AdminListen) {
		add(invalid("admin_listen", "%q is reachable from the network: set admin_token or admin_token_file (the admin API can delete the cache), or listen on 127.0.0.1", c.AdminListen))
	}
	if c.AdminToken != "" && len(c.AdminToken) < 16 {
		add(invalid("admin_token", "is %d characters; use at least 16 (e.g. openssl rand -hex 32)", len(c.AdminToken)))
	}
	if c.Proxy.Listen != "" {
		add(fieldErr("proxy.listen", checkListen(c.Proxy.Listen)))
		for _, other := range []struct{ field, addr string }{{"listen", c.Listen}, {"admin_listen", c.AdminListen}} {
			if listenOverlap(c.Proxy.Listen, other.addr) {
				add(invalid("proxy.listen", "%q overlaps %s %q; the proxy needs its own port", c.Proxy.Listen, other.field, other.addr))
			}
		}
	}
	for i, h := range c.Proxy.InterceptHosts {
		if err := checkRegistryName(h); err != nil {
			add(invalid("proxy.intercept_hosts["+strconv.Itoa(i)+"]", "%v", err))
		}
	}
	for i, t := range c.Proxy.Tunnel {
		host, port, err := net.SplitHostPort(t)
		if err != nil || host == "" || !validPort(port, false) {
			add(invalid("proxy.tunnel["+strconv.Itoa(i)+"]", "%q is not host:port, e.g. \"github.com:443\"", t))
		}
	}
	t := c.TLS
	if (t.CertFile == "") != (t.KeyFile == "") {
		add(invalid("tls", "cert_file and key_file go together; set both or neither"))
	}
	if t.CertFile != "" && len(t.ACME.Hosts) > 0 {
		add(invalid("tls", "set either cert_file/key_file or acme.hosts, not both"))
	}
	if len(t.ACME.Hosts) == 0 && (t.ACME.Email != "" || t.ACME.DirectoryURL != "" || t.ACME.CAFile != "") {
		add(invalid("tls.acme.hosts", "is empty; ACME needs the host names to request certificates for"))
	}
	for i, h := range t.ACME.Hosts {
		if err := checkRegistryName(h); err != nil || strings.Contains(h, ":") {
			add(invalid("tls.acme.hosts["+strconv.Itoa(i)+"]", "%q is not a host name", h))
		}
	}
	if u := t.ACME.DirectoryURL; u != "" && !strings.HasPrefix(u, "https://") {
		add(invalid("tls.acme.directory_url", "%q must be an https:// URL", u))
	}
	if t.RedirectListen != "" {
		if !c.TLSEnabled() {
			add(invalid("tls.redirect_listen", "redirects to HTTPS, but TLS is not configured (cert_file/key_file or acme.hosts)"))
		}
		add(fieldErr("tls.redirect_listen", checkListen(t.RedirectListen)))
		if listenOverlap(t.RedirectListen, c.Listen) {
			add(invalid("tls.redirect_listen", "%q overlaps listen %q", t.RedirectListen, c.Listen))
		}
	}
	if c.DataDir == "" {
		add(invalid("data_dir", "must not be empty"))
	}
	add(fieldErr("log_level", checkLogLevel(c.LogLevel)))
	add(fieldErr("log_format", checkLogFormat(c.LogFormat)))

	add(checkNonNegative("tag_ttl", c.TagTTL))
	add(checkNonNegative("max_stale", c.MaxStale))
	add(checkNonNegative("negative_ttl", c.NegativeTTL))

	add(checkPositive("fetch.timeout", c.Fetch.Timeout))
	add(checkPositive("fetch.connect_timeout", c.Fetch.ConnectTimeout))
	add(checkPositive("fetch.header_timeout", c.Fetch.HeaderTimeout))
	if c.Fetch.Retries < 0 || c.Fetch.Retries > maxRetries {
		add(invalid("fetch.retries", "%d is out of range 0..%d", c.Fetch.Retries, maxRetries))
	}

	if c.Cache.MaxSize < 0 {
		add(invalid("cache.max_size", "%d must not be negative", int64(c.Cache.MaxSize)))
	}
	add(checkNonNegative("cache.max_age", c.Cache.MaxAge))
	add(checkPositive("cache.gc_interval", c.Cache.GCInterval))

	names := make([]string, 0, len(c.Upstreams))
	for name := range c.Upstreams {
		names = append(names, name)
	}
	sort.Strings(names)
	for _, name := range names {
		for _, e := range validateUpstream(name, c.Upstreams[name]) {
			add(e)
		}
	}
	for _, e := range c.checkClaims(names) {
		add(e)
	}
	add(c.checkDefaultUpstream())
	c.validateSecurity(add)

	return errors.Join(errs...)
}

// maxRetries bounds fetch.retries: more attempts than this only multiply
// the load on a struggling upstream.
const maxRetries = 10

func checkListen(addr string) error {
	if addr == "" {
		return errors.New(`must not be empty; want host:port, e.g. ":5000"`)
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Errorf(`%q is not host:port (e.g. ":5000", "127.0.0.1:5080", "[::1]:5000")`, addr)
	}
	if !validPort(port, true) {
		return fmt.Errorf("%q: port must be a number from 0 to 65535", addr)
	}
	if host != "" && net.ParseIP(host) == nil && !validDomain(strings.ToLower(host)) {
		return fmt.Errorf("%q: host must be empty, an IP address or a host name", addr)
	}
	return nil
}

// loopbackListen tells whether addr only accepts connections from this
// machine: a loopback IP or "localhost". An empty host listens everywhere.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || host == "" {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// listenOverlap tells whether two listen addresses would fight over the same
// socket: same port (not 0, which picks a free one) and the same host, or a
// wildcard host on either side.
func listenOverlap(a, b string) bool {
	ha, pa, errA := net.SplitHostPort(a)
	hb, pb, errB := net.SplitHostPort(b)
	if errA != nil || errB != nil || pa != pb {
		return false
	}
	if n, err := strconv.Atoi(pa); err != nil || n == 0 {
		return false
	}
	wildcard := func(h string) bool {
		ip := net.ParseIP(h)
		return h == "" || ip != nil && ip.IsUnspecified()
	}
	if wildcard(ha) || wildcard(hb) {
		return true
	}
	ia, ib := net.ParseIP(ha), net.ParseIP(hb)
	if ia != nil && ib != nil {
		return ia.Equal(ib)
	}
	return strings.EqualFold(ha, hb)
}

func checkLogLevel(v string) error {
	switch v {
	case "debug", "info", "warn", "error":
		return nil
	}
	return fmt.Errorf("%q is not one of debug, info, warn, error", v)
}

func checkLogFormat(v string) error {
	switch v {
	case "json", "text", "auto":
		return nil
	}
	return fmt.Errorf("%q is not one of json, text, auto", v)
}

func checkNonNegative(field string, d Duration) *FieldError {
	if d < 0 {
		return invalid(field, "%s must not be negative", d)
	}
	return nil
}

func checkPositive(field string, d Duration) *FieldError {
	if d <= 0 {
		return invalid(field, "%s must be greater than 0", d)
	}
	return nil
}

// validateUpstream checks one upstream on its own; checkClaims checks the
// names shared between upstreams.
func validateUpstream(name string, u *Upstream) []*FieldError {
	var errs []*FieldError
	add := func(e *FieldError) {
		if e != nil {
			errs = append(errs, e)
		}
	}
	if u == nil {
		return []*FieldError{invalid(upstreamField(name, ""), "has no settings; give it at least a url")}
	}
	if err := checkRegistryName(name); err != nil {
		add(invalid(upstreamField(name, ""), "invalid registry name: %v", err))
	}
	if !u.Disabled {
		add(fieldErr(upstreamField(name, "url"), checkUpstreamURL(u.URL)))
	}
	for i, a := range u.Aliases {
		field := upstreamField(name, "aliases["+strconv.Itoa(i)+"]")
		if err := checkRegistryName(a); err != nil {
			add(invalid(field, "%v", err))
		} else if a == name {
			add(invalid(field, "%q is the upstream's own name", a))
		}
	}
	for i, h := range u.VirtualHosts {
		if err := checkRegistryName(h); err != nil {
			add(invalid(upstreamField(name, "virtual_hosts["+strconv.Itoa(i)+"]"), "%v", err))
		}
	}
	for i, h := range u.TokenRealms {
		if err := checkRegistryName(h); err != nil {
			add(invalid(upstreamField(name, "token_realms["+strconv.Itoa(i)+"]"), "%v", err))
		}
	}

	var sources []string
	for _, s := range []struct{ field, value string }{
		{"password", u.Password}, {"password_file", u.PasswordFile}, {"password_env", u.PasswordEnv},
	} {
		if s.value != "" {
			sources = append(sources, s.field)
		}
	}
	if len(sources) > 1 {
		add(invalid(upstreamField(name, sources[1]), "set together with %s; use only one of password, password_file, password_env", sources[0]))
	}
	if len(sources) > 0 && u.Username == "" {
		add(invalid(upstreamField(name, "username"), "must be set when %s is set", sources[0]))
	}
	if u.PasswordEnv != "" && !validEnvName(u.PasswordEnv) {
		add(invalid(upstreamField(name, "password_env"), "%q is not an environment variable name", u.PasswordEnv))
	}
	if u.TagTTL != nil {
		add(checkNonNegative(upstreamField(name, "tag_ttl"), *u.TagTTL))
	}
	if u.MaxStale != nil {
		add(checkNonNegative(upstreamField(name, "max_stale"), *u.MaxStale))
	}
	return errs
}

// checkClaims makes sure every name a request can select an upstream by —
// upstream names, aliases, virtual hosts — selects exactly one enabled
// upstream. The three share one namespace because a Host header may carry
// any of them (PRODUCT item 1). names is sorted, so the first claimant wins
// and the later one is reported, deterministically.
func (c *Config) checkClaims(names []string) []*FieldError {
	type claim struct{ upstream, field string }
	claims := make(map[string]claim)
	var errs []*FieldError
	take := func(key, upstream, field string) {
		prev, ok := claims[key]
		if !ok {
			claims[key] = claim{upstream, field}
			return
		}
		if prev.upstream != upstream {
			errs = append(errs, invalid(field, "%q is already used by %s", key, prev.field))
		}
	}
	enabled := make([]string, 0, len(names))
	for _, name := range names {
		if u := c.Upstreams[name]; u != nil && !u.Disabled {
			enabled = append(enabled, name)
			claims[name] = claim{name, upstreamField(name, "")}
		}
	}
	for _, name := range enabled {
		u := c.Upstreams[name]
		for i, a := range u.Aliases {
			take(a, name, upstreamField(name, "aliases["+strconv.Itoa(i)+"]"))
		}
		for i, h := range u.VirtualHosts {
			take(h, name, upstreamField(name, "virtual_hosts["+strconv.Itoa(i)+"]"))
		}
	}
	return errs
}

func (c *Config) checkDefaultUpstream() *FieldError {
	name := c.DefaultUpstream
	if name == "" {
		return nil
	}
	u, ok := c.Upstreams[name]
	switch {
	case ok && u != nil && u.Disabled:
		return invalid("default_upstream", "%q is disabled", name)
	case ok:
		return nil
	}
	for _, other := range c.EnabledUpstreams() {
		for _, a := range c.Upstreams[other].Aliases {
			if a == name {
				return invalid("default_upstream", "%q is an alias; use the upstream's name %q", name, other)
			}
		}
	}
	return invalid("default_upstream", "%q is not a configured upstream", name)
}

// checkUpstreamURL checks an upstream's base URL: absolute http(s) with a
// host; no credentials (they belong in username/password, where they are
// never logged), query or fragment; and no /v2 suffix, which wharf adds.
func checkUpstreamURL(raw string) error {
	if raw == "" {
		return errors.New(`must be set, e.g. "https://registry.example.com"`)
	}
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("%q is not a URL", raw)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return errors.New("scheme must be http or https")
	case u.Opaque != "" || u.Hostname() == "":
		return fmt.Errorf("%q has no host", raw)
	case u.User != nil:
		return errors.New("must not contain credentials; use username and password")
	case u.RawQuery != "" || u.ForceQuery:
		return errors.New("must not contain a query")
	case u.Fragment != "" || strings.Contains(raw, "#"):
		return errors.New("must not contain a fragment")
	case u.Port() != "" && !validPort(u.Port(), false):
		return fmt.Errorf("%q: port must be a number from 1 to 65535", raw)
	}
	if p := strings.TrimSuffix(u.Path, "/"); p == "/v2" || strings.HasSuffix(p, "/v2") {
		return fmt.Errorf("%q must not end in /v2 (wharf adds it); use the registry's base URL", raw)
	}
	return nil
}

// checkRegistryName checks a registry name as clients write it in an image
// reference (distribution/reference's domain grammar, restricted to lower
// case so names compare byte for byte): host[:port] where host is a DNS
// name, an IPv4 address or a bracketed IPv6 address.
func checkRegistryName(s string) error {
	switch {
	case s == "":
		return errors.New("must not be empty")
	case strings.Contains(s, "://"):
		return fmt.Errorf("%q must not include a scheme; write host[:port]", s)
	case strings.Contains(s, "/"):
		return fmt.Errorf("%q must not include a path; write host[:port]", s)
	case s != strings.ToLower(s):
		return fmt.Errorf("%q must be lower-case", s)
	}
	host, port := s, ""
	if strings.HasPrefix(s, "[") {
		end := strings.Index(s, "]")
		if end < 0 {
			return fmt.Errorf("%q is not host[:port]", s)
		}
		host, port = s[1:end], s[end+1:]
		if ip := net.ParseIP(host); ip == nil || ip.To4() != nil || strings.Contains(host, "%") {
			return fmt.Errorf("%q is not a valid IPv6 address in brackets", s)
		}
		if port != "" && !strings.HasPrefix(port, ":") {
			return fmt.Errorf("%q is not host[:port]", s)
		}
		port = strings.TrimPrefix(port, ":")
		if port != "" || strings.HasSuffix(s, ":") {
			if !validPort(port, false) {
				return fmt.Errorf("%q: port must be a number from 1 to 65535", s)
			}
		}
		return nil
	}
	if i := strings.LastIndexByte(s, ':'); i >= 0 {
		host, port = s[:i], s[i+1:]
		if !validPort(port, false) {
			return fmt.Errorf("%q: port must be a number from 1 to 65535", s)
		}
	}
	if !validDomain(host) {
		return fmt.Errorf("%q is not a valid host name", s)
	}
	return nil
}

// validDomain reports whether h is a lower-case DNS name: dot-separated
// labels of letters, digits and inner hyphens, each 1 to 63 bytes, 253 in
// all. IPv4 addresses qualify.
func validDomain(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(h, ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			b := label[i]
			if !(b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '-') {
				return false
			}
		}
	}
	return true
}

// validPort reports whether p is a decimal port number; 0 ("any free
// port") only where allowZero.
func validPort(p string, allowZero bool) bool {
	if p == "" || len(p) > 5 {
		return false
	}
	for i := 0; i < len(p); i++ {
		if p[i] < '0' || p[i] > '9' {
			return false
		}
	}
	n, _ := strconv.Atoi(p)
	return n <= 65535 && (n > 0 || allowZero)
}

// validEnvName reports whether s can name an environment variable: not
// empty, no '=' and no NUL.
func validEnvName(s string) bool {
	return s != "" && !strings.ContainsAny(s, "=\x00")
}
