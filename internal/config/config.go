// Package config owns wharf's configuration: the typed Config struct, its
// built-in defaults, how it is loaded, and how it is checked.
//
// A configuration is built in layers, each overriding only what it sets:
//
//  1. Default: the zero-config configuration (listen on :5000, cache in
//     ./data, mirror the well-known public registries).
//  2. An optional YAML file, decoded strictly: an unknown key is an error
//     naming the key and its line. An entry under upstreams for a built-in
//     registry overrides only the fields it sets.
//  3. WHARF_* environment variables (see EnvVars).
//  4. Command-line overrides, applied by the caller through the methods of
//     Config (SetUpstreamURL) after Load.
//
// Then Validate reports every problem at once, each as a one-line message
// naming the field, and Resolve reads the credentials kept outside the file
// (password_file, password_env).
//
// Invariants:
//   - Nothing here reads the process environment or the filesystem on its own
//     initiative: Load reads only the file it is given and the environment
//     through the lookup function it is given; Resolve likewise.
//   - Load never validates and Validate never changes the Config, so the
//     caller can apply flags in between and validate the final result once.
//   - Every problem Load and Validate report is a *FieldError that matches
//     ErrInvalid with errors.Is; several problems are joined (errors.Join).
//   - Default returns a new value on every call; there is no package-level
//     mutable state.
package config

import (
	"sort"
	"strings"
	"time"
)

// Config is wharf's whole configuration. Components receive the part they
// need (an *Upstream, Fetch, a duration), never the whole Config.
//
// Durations are written as Go durations ("90s", "5m", "1h30m") or with a
// leading number of whole days ("7d", "1d12h"); see Duration.
type Config struct {
	// Listen is the address (host:port) of the registry API that clients
	// pull from. An empty host listens on every interface.
	// Default ":5000". Environment: WHARF_LISTEN.
	Listen string `yaml:"listen"`

	// AdminListen is the address (host:port) of the admin listener (admin
	// API, metrics, health checks, UI). It must differ from Listen. The
	// default keeps it off the network.
	// Default "127.0.0.1:5080". Environment: WHARF_ADMIN_LISTEN.
	AdminListen string `yaml:"admin_listen"`

	// AdminToken is the bearer token every admin API request, /metrics
	// and the UI's API calls must carry ("Authorization: Bearer <token>");
	// /healthz and /readyz stay open. Required when admin_listen is not a
	// loopback address; optional on loopback. Prefer AdminTokenFile.
	// Environment: WHARF_ADMIN_TOKEN.
	AdminToken string `yaml:"admin_token,omitempty"`
	// AdminTokenFile is a file whose content (trailing newlines removed)
	// is the admin token; it wins over AdminToken.
	AdminTokenFile string `yaml:"admin_token_file,omitempty"`
	// resolvedAdminToken is the token after Resolve read AdminTokenFile.
	resolvedAdminToken string

	// DataDir is the directory that holds the cache (blobs and metadata
	// index). It is created if missing. Relative paths are relative to the
	// working directory. Default "./data". Environment: WHARF_DATA_DIR.
	DataDir string `yaml:"data_dir"`

	// LogLevel is the least severe level logged: "debug", "info", "warn" or
	// "error". Default "info". Environment: WHARF_LOG_LEVEL.
	LogLevel string `yaml:"log_level"`

	// LogFormat is the log encoding: "json", "text", or "auto" (text when
	// standard error is a terminal, JSON otherwise).
	// Default "auto". Environment: WHARF_LOG_FORMAT.
	LogFormat string `yaml:"log_format"`

	// DefaultUpstream is the upstream that requests naming no registry go to
	// (plain /v2/library/nginx/..., the Docker "registry-mirrors" shape). It
	// must name an enabled upstream (not an alias); "" disables default
	// routing, so every request must name its registry.
	// Default "docker.io". Environment: WHARF_DEFAULT_UPSTREAM.
	DefaultUpstream string `yaml:"default_upstream"`

	// TagTTL is how long a tag → digest mapping is served from the cache
	// before it is revalidated with an upstream HEAD request; 0 revalidates
	// on every request. Per-upstream tag_ttl overrides it.
	// Default 5m. Environment: WHARF_TAG_TTL.
	TagTTL Duration `yaml:"tag_ttl"`

	// MaxStale bounds stale-if-error: when the upstream cannot be asked
	// (unreachable, 5xx, 429, 401/403), a cached tag that upstream last
	// confirmed at most MaxStale ago is served anyway, marked stale
	// (X-Wharf-Cache: stale and a Warning header); 0 never serves a stale
	// tag. Per-upstream max_stale overrides it.
	// Default 7d. Environment: WHARF_MAX_STALE.
	MaxStale Duration `yaml:"max_stale"`

	// NegativeTTL is how long an upstream 404 for a tag is remembered, so a
	// burst of pulls for a missing tag makes one upstream request; 0 never
	// caches a 404. Default 30s.
	NegativeTTL Duration `yaml:"negative_ttl"`

	// Upstreams are the registries wharf mirrors, keyed by registry name as
	// clients write it: "docker.io", "ghcr.io", "myreg.example:5000"
	// (lower-case host[:port], no scheme, no path). Only these registries
	// are reachable: a registry name in a request is a lookup key, never a
	// host to dial. The built-in entries (docker.io, ghcr.io, quay.io,
	// gcr.io, registry.k8s.io, mcr.microsoft.com, public.ecr.aws, nvcr.io)
	// are always present; an entry with a built-in name overrides only the
	// fields it sets, any other name adds an upstream.
	// Environment: WHARF_UPSTREAMS, WHARF_UPSTREAM_<NAME>_*.
	Upstreams map[string]*Upstream `yaml:"upstreams"`

	// Fetch bounds the requests wharf makes to upstreams.
	Fetch Fetch `yaml:"fetch"`

	// Cache bounds the size and age of the cache. Content beyond the
	// bounds is evicted in the background, least recently pulled first,
	// never while it is being served or fetched (see package gc for the
	// rule).
	Cache Cache `yaml:"cache"`

	// Proxy is the HTTPS_PROXY mode: an HTTP CONNECT proxy that
	// terminates TLS for registry hosts with certificates from wharf's own
	// CA (kept in <data_dir>/ca, printed by "wharf ca", downloadable at
	// /ca.crt on the registry listener) and serves them from the cache.
	Proxy Proxy `yaml:"proxy"`

	// TLS serves the registry listener over HTTPS: from certificate files
	// (reloaded when they change) or with certificates obtained over ACME.
	TLS TLS `yaml:"tls"`

	// Transparent is a TLS listener that answers for registry host names
	// directly (DNS override or iptables REDIRECT).
	Transparent Transparent `yaml:"transparent"`

	// Auth says who may pull.
	Auth Auth `yaml:"auth"`

	// Limits bound what one client may cost.
	Limits Limits `yaml:"limits"`
}

// TLS configures HTTPS on the registry listener. Set either the two files
// or acme.hosts, not both; neither serves plain HTTP.
type TLS struct {
	// CertFile and KeyFile are PEM files (the certificate may carry its
	// chain). They are re-read when they change, without a restart.
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
	// ACME obtains and renews certificates automatically.
	ACME ACME `yaml:"acme"`
	// RedirectListen is an optional plain-HTTP listener ("":80") that
	// redirects every request to HTTPS (308) and answers ACME http-01
	// challenges. Default "".
	RedirectListen string `yaml:"redirect_listen"`
}

// ACME configures automatic certificates (Let's Encrypt by default).
type ACME struct {
	// Hosts are the names certificates may be requested for; required to
	// use ACME. Certificates and the account key are kept in
	// <data_dir>/acme.
	Hosts []string `yaml:"hosts"`
	Email string   `yaml:"email"`
	// DirectoryURL is the ACME directory; "" is Let's Encrypt's.
	DirectoryURL string `yaml:"directory_url"`
	// CAFile is a PEM bundle trusted for the ACME server's own HTTPS
	// (a private ACME server); "" trusts the system roots.
	CAFile string `yaml:"ca_file"`
}

// TLSEnabled reports whether the registry listener serves HTTPS.
func (c *Config) TLSEnabled() bool {
	return c.TLS.CertFile != "" || c.TLS.KeyFile != "" || len(c.TLS.ACME.Hosts) > 0
}

// Proxy configures the HTTPS_PROXY mode.
type Proxy struct {
	// Listen is the proxy's address, e.g. ":3128"; "" disables the mode.
	// Default "". Environment: WHARF_PROXY_LISTEN.
	Listen string `yaml:"listen"`
	// InterceptHosts are further hosts to intercept and serve from the
	// cache besides every upstream's name, aliases and virtual hosts —
	// e.g. a registry's blob or CDN host a client was redirected to before.
	InterceptHosts []string `yaml:"intercept_hosts"`
	// Tunnel lists CONNECT targets ("host:port") passed through untouched;
	// every other target that is not intercepted is refused with 403.
	Tunnel []string `yaml:"tunnel"`
}

// Upstream is one registry wharf mirrors.
type Upstream struct {
	// URL is the base URL of the registry API, without the /v2/ suffix,
	// e.g. "https://registry-1.docker.io". Scheme http or https; no
	// credentials, query or fragment. Required for an enabled upstream; the
	// built-in upstreams have theirs.
	// Environment: WHARF_UPSTREAM_<NAME>_URL; flag --upstream NAME=URL.
	URL string `yaml:"url"`

	// Aliases are other registry names routed to this upstream, e.g.
	// index.docker.io and registry-1.docker.io for docker.io, k8s.gcr.io for
	// registry.k8s.io. Lower-case host[:port]; an alias may not be another
	// upstream's name or belong to two upstreams. Default: none, except for
	// the built-in upstreams named above.
	Aliases []string `yaml:"aliases"`

	// VirtualHosts are Host header values (host or host:port) that select
	// this upstream, e.g. "docker.mirror.example.com" for a deployment with
	// one DNS name per registry. A request whose Host is the upstream's name
	// or one of its aliases selects it without being listed here.
	// Default: none.
	VirtualHosts []string `yaml:"virtual_hosts,omitempty"`

	// Username authenticates wharf to the upstream (Basic, or the token
	// service of a Bearer challenge). Default: anonymous.
	// Environment: WHARF_UPSTREAM_<NAME>_USERNAME.
	Username string `yaml:"username,omitempty"`

	// Password goes with Username. Prefer PasswordFile or PasswordEnv to
	// keep secrets out of the file; at most one of the three may be set.
	// Environment: WHARF_UPSTREAM_<NAME>_PASSWORD (replaces any
	// password_file or password_env).
	Password string `yaml:"password,omitempty"`

	// PasswordFile is a file whose content (trailing newlines removed) is the
	// password, e.g. a Kubernetes or Docker secret mount.
	PasswordFile string `yaml:"password_file,omitempty"`

	// PasswordEnv is the name of an environment variable holding the
	// password.
	PasswordEnv string `yaml:"password_env,omitempty"`

	// TagTTL overrides Config.TagTTL for this upstream; unset inherits it.
	TagTTL *Duration `yaml:"tag_ttl,omitempty"`

	// MaxStale overrides Config.MaxStale for this upstream; unset inherits
	// it.
	MaxStale *Duration `yaml:"max_stale,omitempty"`

	// LibraryPrefix makes single-component repository names get "library/"
	// prepended (nginx → library/nginx), Docker Hub's convention. Unset
	// means true for docker.io and false otherwise; the built-in upstreams
	// set it explicitly.
	LibraryPrefix *bool `yaml:"library_prefix"`

	// TokenRealms are extra hosts (host[:port]) wharf may send this
	// upstream's credentials to as a Bearer token realm, beyond the
	// registry's own host and domain. Default: none.
	TokenRealms []string `yaml:"token_realms,omitempty"`

	// Access says who may pull this upstream's content. Content is
	// checked by the upstream a request is routed to, so a blob fetched
	// through a private upstream is never served through another route
	// unless that route's own upstream confirms the client may see it.
	Access Access `yaml:"access"`

	// Disabled turns the upstream off: it is not routed to and its URL and
	// credentials are not checked or read. Use it to switch off a built-in
	// upstream. Default false.
	Disabled bool `yaml:"disabled,omitempty"`

	// resolvedPassword is the password after Resolve read PasswordFile or
	// PasswordEnv; resolved tells whether Resolve ran.
	resolvedPassword string
	resolved         bool
}

// Fetch bounds the requests wharf makes to upstreams.
type Fetch struct {
	// Timeout limits a whole upstream transfer (one blob or manifest,
	// headers to last byte). Must be > 0. Default 1h.
	Timeout Duration `yaml:"timeout"`

	// ConnectTimeout limits establishing a connection to an upstream (TCP
	// and TLS handshake). Must be > 0. Default 10s.
	ConnectTimeout Duration `yaml:"connect_timeout"`

	// HeaderTimeout limits the wait for an upstream's response headers
	// after the request was sent. Must be > 0. Default 30s.
	HeaderTimeout Duration `yaml:"header_timeout"`

	// Retries is how many extra attempts an idempotent upstream request
	// (GET, HEAD, token fetch) gets after a transient error (a failed
	// connection or a temporary answer such as 503), 0 to 10. Default 2.
	Retries int `yaml:"retries"`

	// MaxConcurrent bounds the requests in flight to one upstream; more
	// wait for a slot (and give up with the client's request). 0 means
	// unbounded. Default 64.
	MaxConcurrent int `yaml:"max_concurrent"`
}

// Cache bounds the size and age of the cache.
type Cache struct {
	// MaxSize is the most the cached content (manifests and blobs) may
	// take, in bytes or with a unit: "200GiB", "500GB" (see ByteSize).
	// When a collection finds more, it evicts the least recently pulled
	// images until the cache is at 90% of MaxSize, so that the next pulls
	// do not trigger eviction again at once. Content in use is never
	// evicted, so the cache can exceed MaxSize while it is being pulled.
	// 0 (or empty) means unbounded. Default 0.
	// Environment: WHARF_CACHE_MAX_SIZE.
	MaxSize ByteSize `yaml:"max_size"`

	// MaxAge evicts content not pulled for this long (an image counts as
	// pulled when its manifest, or a child manifest of an index, was
	// served). 0 keeps content regardless of age. Default 0.
	// Environment: WHARF_CACHE_MAX_AGE.
	MaxAge Duration `yaml:"max_age"`

	// GCInterval is how often the cache is checked against MaxSize and
	// MaxAge in the background; eviction runs only when one of them is
	// set. Must be > 0. Default 10m.
	GCInterval Duration `yaml:"gc_interval"`
}

// Default returns the zero-config configuration: a new value on every call.
func Default() *Config {
	return &Config{
		Listen:          ":5000",
		AdminListen:     "127.0.0.1:5080",
		DataDir:         "./data",
		LogLevel:        "info",
		LogFormat:       "auto",
		DefaultUpstream: "docker.io",
		TagTTL:          Duration(5 * time.Minute),
		MaxStale:        Duration(7 * 24 * time.Hour),
		NegativeTTL:     Duration(30 * time.Second),
		Upstreams:       builtinUpstreams(),
		Fetch: Fetch{
			Timeout:        Duration(time.Hour),
			ConnectTimeout: Duration(10 * time.Second),
			HeaderTimeout:  Duration(30 * time.Second),
			Retries:        2,
			MaxConcurrent:  64,
		},
		Cache: Cache{
			GCInterval: Duration(10 * time.Minute),
		},
		Auth: Auth{TokenTTL: Duration(15 * time.Minute)},
		Limits: Limits{
			MaxHeaderBytes: 64 << 10,
			AuthFailures:   10,
		},
	}
}

// builtinUpstreams returns the registries mirrored with no configuration
// (PRODUCT item 2). Their URLs are the registries' API endpoints; the aliases
// are the other names clients use for them (client-compat.md §0: Docker Hub
// is reached as docker.io, index.docker.io and registry-1.docker.io;
// k8s.gcr.io now redirects to registry.k8s.io).
func builtinUpstreams() map[string]*Upstream {
	up := func(url string, libraryPrefix bool, aliases ...string) *Upstream {
		return &Upstream{URL: url, Aliases: aliases, LibraryPrefix: &libraryPrefix}
	}
	// NGC's token service is not in nvcr.io's domain.
	nvcr := up("https://nvcr.io", false)
	nvcr.TokenRealms = []string{"authn.nvidia.com"}
	return map[string]*Upstream{
		"docker.io":         up("https://registry-1.docker.io", true, "index.docker.io", "registry-1.docker.io"),
		"ghcr.io":           up("https://ghcr.io", false),
		"quay.io":           up("https://quay.io", false),
		"gcr.io":            up("https://gcr.io", false),
		"registry.k8s.io":   up("https://registry.k8s.io", false, "k8s.gcr.io"),
		"mcr.microsoft.com": up("https://mcr.microsoft.com", false),
		"public.ecr.aws":    up("https://public.ecr.aws", false),
		"nvcr.io":           nvcr,
	}
}

// EnabledUpstreams returns the names of the upstreams that are not
// disabled, sorted.
func (c *Config) EnabledUpstreams() []string {
	names := make([]string, 0, len(c.Upstreams))
	for name, u := range c.Upstreams {
		if u != nil && !u.Disabled {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names
}

// SetUpstreamURL applies `--upstream NAME=URL`: it sets the URL of the
// upstream called name, creating the upstream if it does not exist and
// enabling it if it was disabled. The values are checked by Validate (or
// earlier, by ParseUpstreamFlag).
func (c *Config) SetUpstreamURL(name, rawURL string) {
	if c.Upstreams == nil {
		c.Upstreams = make(map[string]*Upstream)
	}
	name = c.canonicalName(name)
	u := c.Upstreams[name]
	if u == nil {
		u = &Upstream{}
		c.Upstreams[name] = u
	}
	u.URL = rawURL
	u.Disabled = false
}

// EffectiveTagTTL is the tag TTL that applies to this upstream: its own
// tag_ttl, or else the global one.
func (u *Upstream) EffectiveTagTTL(c *Config) time.Duration {
	if u.TagTTL != nil {
		return time.Duration(*u.TagTTL)
	}
	return time.Duration(c.TagTTL)
}

// EffectiveMaxStale is the stale-if-error bound that applies to this
// upstream: its own max_stale, or else the global one.
func (u *Upstream) EffectiveMaxStale(c *Config) time.Duration {
	if u.MaxStale != nil {
		return time.Duration(*u.MaxStale)
	}
	return time.Duration(c.MaxStale)
}

// EffectiveLibraryPrefix tells whether single-component repository names of
// the upstream called name get "library/" prepended: library_prefix if set,
// else true only for docker.io (client-compat.md §0 rule 4).
func (u *Upstream) EffectiveLibraryPrefix(name string) bool {
	if u.LibraryPrefix != nil {
		return *u.LibraryPrefix
	}
	return name == "docker.io"
}

// ResolvedAdminToken is the admin API token: after Resolve, the one read
// from admin_token_file (or admin_token); before it, AdminToken.
func (c *Config) ResolvedAdminToken() string {
	if c.resolvedAdminToken != "" {
		return c.resolvedAdminToken
	}
	return c.AdminToken
}

// ResolvedPassword is the password to authenticate with: after Resolve, the
// one read from password_file or password_env (or password); before it, the
// password field as configured.
func (u *Upstream) ResolvedPassword() string {
	if u.resolved {
		return u.resolvedPassword
	}
	return u.Password
}

// clone returns a deep copy, so decoding a YAML entry into it never changes
// the Upstream it came from.
func (u *Upstream) clone() *Upstream {
	c := *u
	c.Aliases = cloneStrings(u.Aliases)
	c.VirtualHosts = cloneStrings(u.VirtualHosts)
	c.TokenRealms = cloneStrings(u.TokenRealms)
	c.Access.Users = cloneStrings(u.Access.Users)
	if u.Access.Anonymous != nil {
		v := *u.Access.Anonymous
		c.Access.Anonymous = &v
	}
	if u.TagTTL != nil {
		v := *u.TagTTL
		c.TagTTL = &v
	}
	if u.MaxStale != nil {
		v := *u.MaxStale
		c.MaxStale = &v
	}
	if u.LibraryPrefix != nil {
		v := *u.LibraryPrefix
		c.LibraryPrefix = &v
	}
	return &c
}

func cloneStrings(s []string) []string {
	if s == nil {
		return nil
	}
	return append([]string(nil), s...)
}

// canonicalName maps an alias (k8s.gcr.io) to the upstream that claims it
// (registry.k8s.io), so that --upstream k8s.gcr.io=URL configures the one
// upstream instead of creating a clashing second one.
func (c *Config) canonicalName(name string) string {
	if _, ok := c.Upstreams[name]; ok {
		return name
	}
	for n, u := range c.Upstreams {
		for _, a := range u.Aliases {
			if strings.EqualFold(a, name) {
				return n
			}
		}
	}
	return name
}
