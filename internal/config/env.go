package config

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// EnvPrefix starts the name of every environment variable wharf reads.
// Load applies them after the config file, in this order:
//
//	WHARF_LISTEN            listen (host:port)
//	WHARF_ADMIN_LISTEN      admin_listen (host:port)
//	WHARF_ADMIN_TOKEN       admin_token
//	WHARF_PROXY_LISTEN      proxy.listen (host:port; empty: off)
//	WHARF_DATA_DIR          data_dir
//	WHARF_LOG_LEVEL         log_level: debug, info, warn, error
//	WHARF_LOG_FORMAT        log_format: json, text, auto
//	WHARF_DEFAULT_UPSTREAM  default_upstream; empty disables default routing
//	WHARF_TAG_TTL           tag_ttl (duration, e.g. "5m")
//	WHARF_MAX_STALE         max_stale (duration, e.g. "7d")
//	WHARF_CACHE_MAX_SIZE    cache.max_size (size, e.g. "200GiB"; 0 or empty: unbounded)
//	WHARF_CACHE_MAX_AGE     cache.max_age (duration, e.g. "30d"; 0: never)
//	WHARF_UPSTREAMS         comma-separated NAME=URL list, like --upstream
//	WHARF_UPSTREAM_<NAME>_URL       url of upstream <NAME> (enables it)
//	WHARF_UPSTREAM_<NAME>_USERNAME  username of upstream <NAME>
//	WHARF_UPSTREAM_<NAME>_PASSWORD  password of upstream <NAME>
//
// <NAME> is the upstream's name as UpstreamEnvName writes it (docker.io →
// DOCKER_IO). A per-upstream variable applies to an upstream that exists
// by then: built in, in the file, or added by WHARF_UPSTREAMS. A set
// variable overrides even with an empty value; a malformed value is an
// error naming the variable. EnvVars returns the same list for help text.
const EnvPrefix = "WHARF_"

// EnvVar describes one environment variable Load reads, for help text and
// documentation.
type EnvVar struct {
	// Name is the variable's name; in the per-upstream variables <NAME>
	// stands for the upstream's name upper-cased with every character other
	// than a letter or digit replaced by "_" (docker.io → DOCKER_IO).
	Name string
	// Description is one sentence: what the variable sets and how it is
	// written.
	Description string
}

// envSetting is one global environment variable: its documentation and how
// it is applied. apply returns an error for a malformed value.
type envSetting struct {
	EnvVar
	apply func(c *Config, v string) error
}

// envSettings is the single list of global variables, used both by Load
// and by EnvVars so the documentation cannot drift from the behaviour.
func envSettings() []envSetting {
	str := func(p func(*Config) *string, check func(string) error) func(*Config, string) error {
		return func(c *Config, v string) error {
			if check != nil {
				if err := check(v); err != nil {
					return err
				}
			}
			*p(c) = v
			return nil
		}
	}
	dur := func(p func(*Config) *Duration) func(*Config, string) error {
		return func(c *Config, v string) error {
			d, err := ParseDuration(v)
			if err != nil {
				return err
			}
			*p(c) = d
			return nil
		}
	}
	size := func(p func(*Config) *ByteSize) func(*Config, string) error {
		return func(c *Config, v string) error {
			return p(c).UnmarshalText([]byte(v))
		}
	}
	return []envSetting{
		{EnvVar{EnvPrefix + "LISTEN", `Address (host:port) of the registry API, the listen setting; e.g. ":5000".`},
			str(func(c *Config) *string { return &c.Listen }, checkListen)},
		{EnvVar{EnvPrefix + "ADMIN_LISTEN", `Address (host:port) of the admin listener, the admin_listen setting; e.g. "127.0.0.1:5080".`},
			str(func(c *Config) *string { return &c.AdminListen }, checkListen)},
		{EnvVar{EnvPrefix + "ADMIN_TOKEN", `Bearer token of the admin API and /metrics, the admin_token setting; required when admin_listen is not loopback.`},
			str(func(c *Config) *string { return &c.AdminToken }, nil)},
		{EnvVar{EnvPrefix + "PROXY_LISTEN", `Address of the HTTPS_PROXY (CONNECT) listener, the proxy.listen setting; e.g. ":3128"; empty disables it.`},
			str(func(c *Config) *string { return &c.Proxy.Listen }, func(v string) error {
				if v == "" {
					return nil
				}
				return checkListen(v)
			})},
		{EnvVar{EnvPrefix + "TRANSPARENT_LISTEN", `Address of the transparent TLS listener, the transparent.listen setting; e.g. ":443"; empty disables it.`},
			str(func(c *Config) *string { return &c.Transparent.Listen }, func(v string) error {
				if v == "" {
					return nil
				}
				return checkListen(v)
			})},
		{EnvVar{EnvPrefix + "DATA_DIR", `Directory of the cache, the data_dir setting.`},
			str(func(c *Config) *string { return &c.DataDir }, nil)},
		{EnvVar{EnvPrefix + "LOG_LEVEL", `Least severe level logged: debug, info, warn or error.`},
			str(func(c *Config) *string { return &c.LogLevel }, checkLogLevel)},
		{EnvVar{EnvPrefix + "LOG_FORMAT", `Log encoding: json, text, or auto (text on a terminal).`},
			str(func(c *Config) *string { return &c.LogFormat }, checkLogFormat)},
		{EnvVar{EnvPrefix + "DEFAULT_UPSTREAM", `Upstream for requests that name no registry; empty disables default routing.`},
			str(func(c *Config) *string { return &c.DefaultUpstream }, nil)},
		{EnvVar{EnvPrefix + "TAG_TTL", `How long a cached tag is served before it is revalidated upstream, for every upstream without its own tag_ttl; e.g. "5m".`},
			dur(func(c *Config) *Duration { return &c.TagTTL })},
		{EnvVar{EnvPrefix + "MAX_STALE", `How long after upstream last confirmed it a cached tag may still be served while the upstream fails, for every upstream without its own max_stale; e.g. "7d".`},
			dur(func(c *Config) *Duration { return &c.MaxStale })},
		{EnvVar{EnvPrefix + "CACHE_MAX_SIZE", `Most the cache may hold before the least recently pulled images are evicted, the cache.max_size setting; bytes or a size such as "200GiB" or "500GB"; 0 or empty is unbounded.`},
			size(func(c *Config) *ByteSize { return &c.Cache.MaxSize })},
		{EnvVar{EnvPrefix + "CACHE_MAX_AGE", `Evict content not pulled for this long, the cache.max_age setting; e.g. "30d"; 0 keeps content regardless of age.`},
			dur(func(c *Config) *Duration { return &c.Cache.MaxAge })},
		{EnvVar{EnvPrefix + "UPSTREAMS", `Comma-separated NAME=URL list setting upstream URLs, adding and enabling upstreams as needed, like --upstream; e.g. "docker.io=http://127.0.0.1:5001,myreg.example:5000=https://myreg.example:5000".`},
			applyUpstreamList},
	}
}

// upstreamEnvVars are the per-upstream variables, in the order Load applies
// them, after the global ones.
func upstreamEnvVars() []EnvVar {
	p := EnvPrefix + "UPSTREAM_<NAME>_"
	return []EnvVar{
		{p + "URL", `Base URL of the upstream called <NAME>, enabling it; the url setting.`},
		{p + "USERNAME", `User name wharf authenticates to the upstream with; the username setting.`},
		{p + "PASSWORD", `Password for the upstream; replaces password, password_file and password_env from the file.`},
	}
}

// EnvVars lists every environment variable Load reads, in the order it
// applies them.
func EnvVars() []EnvVar {
	settings := envSettings()
	vars := make([]EnvVar, 0, len(settings)+3)
	for _, s := range settings {
		vars = append(vars, s.EnvVar)
	}
	return append(vars, upstreamEnvVars()...)
}

// UpstreamEnvName is the <NAME> part of the per-upstream environment
// variables for the upstream called name: upper-cased, every character
// other than an ASCII letter or digit replaced by "_" (docker.io →
// DOCKER_IO, myreg.example:5000 → MYREG_EXAMPLE_5000).
func UpstreamEnvName(name string) string {
	b := []byte(strings.ToUpper(name))
	for i, c := range b {
		if !(c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			b[i] = '_'
		}
	}
	return string(b)
}

// applyEnv applies the WHARF_* variables: the global ones first (so
// WHARF_UPSTREAMS can add upstreams), then the per-upstream ones for every
// upstream known by then. A per-upstream variable is found by the upstream's
// name, so it applies to built-in upstreams and to those added by the file
// or by WHARF_UPSTREAMS.
func (c *Config) applyEnv(env func(string) (string, bool)) error {
	var errs []error
	for _, s := range envSettings() {
		v, ok := env(s.Name)
		if !ok {
			continue
		}
		if err := s.apply(c, v); err != nil {
			errs = append(errs, fieldErr(s.Name, err))
		}
	}

	// Two names can map to the same variable name (my-reg.io and
	// my.reg.io); such a variable is refused rather than applied to both.
	byEnv := make(map[string][]string)
	for name := range c.Upstreams {
		e := UpstreamEnvName(name)
		byEnv[e] = append(byEnv[e], name)
	}
	envNames := make([]string, 0, len(byEnv))
	for e := range byEnv {
		envNames = append(envNames, e)
	}
	sort.Strings(envNames)
	for _, e := range envNames {
		names := byEnv[e]
		sort.Strings(names)
		prefix := EnvPrefix + "UPSTREAM_" + e + "_"
		for _, suffix := range []string{"URL", "USERNAME", "PASSWORD"} {
			v, ok := env(prefix + suffix)
			if !ok {
				continue
			}
			if len(names) > 1 {
				errs = append(errs, invalid(prefix+suffix, "ambiguous: upstreams %s all map to this name; set it in the config file", strings.Join(quoteAll(names), ", ")))
				continue
			}
			if err := c.applyUpstreamEnv(names[0], suffix, v); err != nil {
				errs = append(errs, fieldErr(prefix+suffix, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (c *Config) applyUpstreamEnv(name, suffix, v string) error {
	if suffix == "URL" {
		if err := checkUpstreamURL(v); err != nil {
			return err
		}
		c.SetUpstreamURL(name, v)
		return nil
	}
	u := c.Upstreams[name]
	if u == nil {
		u = &Upstream{}
		c.Upstreams[name] = u
	}
	switch suffix {
	case "USERNAME":
		u.Username = v
	case "PASSWORD":
		// The environment is the later layer: its password replaces
		// whichever source the file named.
		u.Password, u.PasswordFile, u.PasswordEnv = v, "", ""
	}
	return nil
}

// applyUpstreamList applies WHARF_UPSTREAMS. Empty items (a trailing comma)
// are ignored.
func applyUpstreamList(c *Config, v string) error {
	var errs []string
	for item := range strings.SplitSeq(v, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, rawURL, err := ParseUpstreamFlag(item)
		if err != nil {
			errs = append(errs, err.Error())
			continue
		}
		c.SetUpstreamURL(name, rawURL)
	}
	if len(errs) > 0 {
		// One line per variable: the items' problems are listed together.
		return errors.New(strings.Join(errs, "; "))
	}
	return nil
}

// ParseUpstreamFlag splits the value of `--upstream NAME=URL` (and of each
// WHARF_UPSTREAMS item), e.g. "docker.io=http://127.0.0.1:5001", and checks
// both parts. The error is one line and matches ErrInvalid.
func ParseUpstreamFlag(s string) (name, url string, err error) {
	name, url, ok := strings.Cut(s, "=")
	switch {
	case !ok:
		err = fmt.Errorf("%q is not NAME=URL, e.g. docker.io=https://registry-1.docker.io", s)
	case name == "":
		err = fmt.Errorf("%q has no upstream name before '='", s)
	case url == "":
		err = fmt.Errorf("%q has no URL after '='", s)
	default:
		if e := checkRegistryName(name); e != nil {
			err = fmt.Errorf("%q: invalid upstream name: %w", s, e)
		} else if e := checkUpstreamURL(url); e != nil {
			err = fmt.Errorf("%q: invalid URL: %w", s, e)
		}
	}
	if err != nil {
		return "", "", &problem{msg: err.Error(), cause: errors.Unwrap(err)}
	}
	return name, url, nil
}

func quoteAll(s []string) []string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = fmt.Sprintf("%q", v)
	}
	return q
}
