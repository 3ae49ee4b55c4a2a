package config

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestValidate(t *testing.T) {
	neg, zero := Duration(-1), Duration(0)
	tests := []struct {
		name   string
		change func(c *Config) // applied to Default()
		want   []string
	}{
		{name: "defaults", change: func(*Config) {}},
		{
			name: "valid variations",
			change: func(c *Config) {
				c.Listen, c.AdminListen = "[::]:5000", "localhost:0"
				c.DefaultUpstream = ""
				c.TagTTL, c.MaxStale, c.NegativeTTL = 0, 0, 0
				c.Fetch.Retries = 10
				c.Upstreams["docker.io"].Disabled = true
				c.Upstreams["docker.io"].URL = "" // not checked while disabled
				c.Upstreams["10.0.0.1:5000"] = &Upstream{URL: "http://10.0.0.1:5000/some/prefix/"}
				c.Upstreams["[fd00::1]:5000"] = &Upstream{URL: "http://[fd00::1]:5000"}
				c.Upstreams["localhost:5000"] = &Upstream{
					URL: "http://localhost:5000", Username: "u", PasswordEnv: "PW",
					// docker.io is disabled, so its alias is free
					Aliases: []string{"index.docker.io"}, TagTTL: &zero, MaxStale: &zero,
				}
				c.Upstreams["registry"] = &Upstream{URL: "http://registry:5000", Username: "u"}
				c.Auth.Tokens = []StaticToken{{Name: "ci", Token: "0123456789abcdef"}, {Name: "deploy", TokenFile: "/run/secrets/t"}}
				c.Auth.HtpasswdFile = "/etc/wharf/htpasswd"
				c.Upstreams["registry"].Access.Users = []string{"alice", "ci"}
				c.Transparent.Listen = "127.0.0.1:8443"
				c.Transparent.Certificates = []CertificatePair{{CertFile: "c.pem", KeyFile: "k.pem"}}
				c.Limits.ClientRate = 50
				c.Auth.Realm = "https://mirror.example.com/token"
			},
		},
		{
			name: "security",
			change: func(c *Config) {
				no, yes := false, true
				c.Auth.Anonymous = &no
				c.Auth.TokenTTL = Duration(time.Second)
				c.Auth.Realm = "ftp://x/token"
				c.Upstreams["ghcr.io"].Access.Users = []string{"alice", "bad:name"}
				c.Upstreams["quay.io"].Username = "bot"
				c.Upstreams["gcr.io"].Username = "bot"
				c.Upstreams["gcr.io"].Access.Anonymous = &yes
				c.Upstreams["nvcr.io"].Access.Anonymous = &no
				c.Transparent.Certificates = []CertificatePair{{CertFile: "c.pem"}}
				c.Limits.ClientRate = -1
				c.Limits.MaxHeaderBytes = 100
				c.Fetch.MaxConcurrent = -2
			},
			want: []string{
				`auth.anonymous: is false but no client can authenticate: set auth.htpasswd_file or auth.tokens`,
				`auth.token_ttl: 1s must be at least 1m`,
				`auth.realm: "ftp://x/token" is not an absolute http(s) URL, e.g. "https://mirror.example.com/token"`,
				`upstreams["ghcr.io"].access.users: needs authenticated clients: set auth.htpasswd_file or auth.tokens`,
				`upstreams["ghcr.io"].access.users[1]: "bad:name" is not a user name`,
				`upstreams["nvcr.io"].access.anonymous: is false but no client can authenticate: set auth.htpasswd_file or auth.tokens`,
				`upstreams["quay.io"].access: the upstream has credentials, so what it serves may be private: set auth.htpasswd_file or auth.tokens so clients authenticate, or access.anonymous: true to serve it to every client`,
				`transparent.listen: is empty but transparent.certificates are set`,
				`transparent.certificates[0]: needs both cert_file and key_file`,
				`limits.client_rate: -1 must not be negative`,
				`limits.max_header_bytes: 100 is out of range 4KiB..1MiB`,
				`fetch.max_concurrent: -2 must not be negative`,
			},
		},
		{
			name: "static tokens",
			change: func(c *Config) {
				c.Auth.Tokens = []StaticToken{
					{Name: "", Token: "0123456789abcdef"},
					{Name: "a b", Token: "0123456789abcdef"},
					{Name: "ci", Token: "short"},
					{Name: "ci", Token: "0123456789abcdef", TokenFile: "/f"},
					{Name: "none"},
				}
				c.Transparent.Listen = c.Listen
			},
			want: []string{
				`auth.tokens[0].name: must not be empty`,
				`auth.tokens[1].name: "a b" may not contain ':' or white space`,
				`auth.tokens[2].token: is 5 characters; use at least 16 (e.g. openssl rand -hex 32)`,
				`auth.tokens[3].name: "ci" is used twice`,
				`auth.tokens[3]: set token or token_file, not both`,
				`auth.tokens[4]: needs token or token_file`,
				`transparent.listen: ":5000" overlaps listen ":5000"; the transparent listener needs its own port`,
			},
		},
		{
			name: "listen addresses",
			change: func(c *Config) {
				c.Listen = "5000"
				c.AdminListen = "example.com:99999"
			},
			want: []string{
				`listen: "5000" is not host:port (e.g. ":5000", "127.0.0.1:5080", "[::1]:5000")`,
				`admin_listen: "example.com:99999": port must be a number from 0 to 65535`,
			},
		},
		{
			name:   "empty listen",
			change: func(c *Config) { c.Listen = "" },
			want:   []string{`listen: must not be empty; want host:port, e.g. ":5000"`},
		},
		{
			name:   "bad listen host",
			change: func(c *Config) { c.Listen = "not_a_host!:5000" },
			want:   []string{`listen: "not_a_host!:5000": host must be empty, an IP address or a host name`},
		},
		{
			name:   "admin listen equals listen",
			change: func(c *Config) { c.AdminListen = ":5000"; c.AdminToken = "0123456789abcdef" },
			want:   []string{`admin_listen: ":5000" overlaps listen ":5000"; the admin listener needs its own port`},
		},
		{
			name:   "admin listen on every interface without a token",
			change: func(c *Config) { c.AdminListen = ":5080" },
			want:   []string{`admin_listen: ":5080" is reachable from the network: set admin_token or admin_token_file (the admin API can delete the cache), or listen on 127.0.0.1`},
		},
		{
			name:   "admin listen on a LAN address without a token",
			change: func(c *Config) { c.AdminListen = "10.0.0.5:5080" },
			want:   []string{`admin_listen: "10.0.0.5:5080" is reachable from the network: set admin_token or admin_token_file (the admin API can delete the cache), or listen on 127.0.0.1`},
		},
		{
			name:   "admin listen off loopback with a token file",
			change: func(c *Config) { c.AdminListen = "[::]:5080"; c.AdminTokenFile = "/run/secrets/wharf" },
		},
		{
			name:   "admin listen on localhost needs no token",
			change: func(c *Config) { c.AdminListen = "localhost:5080" },
		},
		{
			name:   "admin listen on ::1 needs no token",
			change: func(c *Config) { c.AdminListen = "[::1]:5080" },
		},
		{
			name:   "proxy listen overlapping the registry listener",
			change: func(c *Config) { c.Proxy.Listen = "127.0.0.1:5000" },
			want:   []string{`proxy.listen: "127.0.0.1:5000" overlaps listen ":5000"; the proxy needs its own port`},
		},
		{
			name: "proxy hosts and tunnels",
			change: func(c *Config) {
				c.Proxy.Listen = ":3128"
				c.Proxy.InterceptHosts = []string{"cdn.example.com", "bad host"}
				c.Proxy.Tunnel = []string{"github.com:443", "github.com", ":443", "x:99999"}
			},
			want: []string{
				`proxy.intercept_hosts[1]: "bad host" is not a valid host name`,
				`proxy.tunnel[1]: "github.com" is not host:port, e.g. "github.com:443"`,
				`proxy.tunnel[2]: ":443" is not host:port, e.g. "github.com:443"`,
				`proxy.tunnel[3]: "x:99999" is not host:port, e.g. "github.com:443"`,
			},
		},
		{
			name:   "tls with one file",
			change: func(c *Config) { c.TLS.CertFile = "/etc/wharf/cert.pem" },
			want:   []string{`tls: cert_file and key_file go together; set both or neither`},
		},
		{
			name: "tls files and acme",
			change: func(c *Config) {
				c.TLS.CertFile, c.TLS.KeyFile = "/c.pem", "/k.pem"
				c.TLS.ACME.Hosts = []string{"mirror.example.com"}
			},
			want: []string{`tls: set either cert_file/key_file or acme.hosts, not both`},
		},
		{
			name: "acme settings without hosts, bad host and directory",
			change: func(c *Config) {
				c.TLS.ACME.Email = "ops@example.com"
				c.TLS.ACME.DirectoryURL = "http://acme.test/dir"
			},
			want: []string{
				`tls.acme.hosts: is empty; ACME needs the host names to request certificates for`,
				`tls.acme.directory_url: "http://acme.test/dir" must be an https:// URL`,
			},
		},
		{
			name: "acme host with a port",
			change: func(c *Config) {
				c.TLS.ACME.Hosts = []string{"mirror.example.com:443"}
			},
			want: []string{`tls.acme.hosts[0]: "mirror.example.com:443" is not a host name`},
		},
		{
			name:   "redirect listener without tls",
			change: func(c *Config) { c.TLS.RedirectListen = ":80" },
			want:   []string{`tls.redirect_listen: redirects to HTTPS, but TLS is not configured (cert_file/key_file or acme.hosts)`},
		},
		{
			name: "tls from files with a redirect listener",
			change: func(c *Config) {
				c.TLS.CertFile, c.TLS.KeyFile, c.TLS.RedirectListen = "/c.pem", "/k.pem", ":80"
			},
		},
		{
			name:   "short admin token",
			change: func(c *Config) { c.AdminToken = "secret" },
			want:   []string{`admin_token: is 6 characters; use at least 16 (e.g. openssl rand -hex 32)`},
		},
		{
			name:   "admin listen inside the wildcard listen",
			change: func(c *Config) { c.AdminListen = "127.0.0.1:5000" },
			want:   []string{`admin_listen: "127.0.0.1:5000" overlaps listen ":5000"; the admin listener needs its own port`},
		},
		{
			name:   "distinct hosts on one port do not overlap",
			change: func(c *Config) { c.Listen, c.AdminListen = "10.0.0.1:5000", "127.0.0.1:5000" },
		},
		{
			name: "data dir, log settings",
			change: func(c *Config) {
				c.DataDir, c.LogLevel, c.LogFormat = "", "INFO", ""
			},
			want: []string{
				`data_dir: must not be empty`,
				`log_level: "INFO" is not one of debug, info, warn, error`,
				`log_format: "" is not one of json, text, auto`,
			},
		},
		{
			name: "durations and retries",
			change: func(c *Config) {
				c.TagTTL, c.MaxStale, c.NegativeTTL = neg, Duration(-2*day), neg
				c.Fetch = Fetch{Timeout: 0, ConnectTimeout: neg, HeaderTimeout: 0, Retries: 11}
				c.Upstreams["ghcr.io"].TagTTL = &neg
				c.Upstreams["ghcr.io"].MaxStale = &neg
			},
			want: []string{
				`tag_ttl: -1ns must not be negative`,
				`max_stale: -2d must not be negative`,
				`negative_ttl: -1ns must not be negative`,
				`fetch.timeout: 0s must be greater than 0`,
				`fetch.connect_timeout: -1ns must be greater than 0`,
				`fetch.header_timeout: 0s must be greater than 0`,
				`fetch.retries: 11 is out of range 0..10`,
				`upstreams["ghcr.io"].tag_ttl: -1ns must not be negative`,
				`upstreams["ghcr.io"].max_stale: -1ns must not be negative`,
			},
		},
		{
			name: "cache bounds",
			change: func(c *Config) {
				c.Cache = Cache{MaxSize: -1, MaxAge: Duration(-day), GCInterval: 0}
			},
			want: []string{
				`cache.max_size: -1 must not be negative`,
				`cache.max_age: -1d must not be negative`,
				`cache.gc_interval: 0s must be greater than 0`,
			},
		},
		{
			name:   "unbounded cache",
			change: func(c *Config) { c.Cache = Cache{MaxSize: 0, MaxAge: 0, GCInterval: Duration(time.Second)} },
		},
		{
			name:   "negative retries",
			change: func(c *Config) { c.Fetch.Retries = -1 },
			want:   []string{`fetch.retries: -1 is out of range 0..10`},
		},
		{
			name: "upstream URLs",
			change: func(c *Config) {
				c.Upstreams["a.example"] = &Upstream{URL: ""}
				c.Upstreams["b.example"] = &Upstream{URL: "ftp://b.example"}
				c.Upstreams["c.example"] = &Upstream{URL: "c.example"}
				c.Upstreams["d.example"] = &Upstream{URL: "https://user:pw@d.example"}
				c.Upstreams["e.example"] = &Upstream{URL: "https://e.example?x=1"}
				c.Upstreams["f.example"] = &Upstream{URL: "https://f.example#frag"}
				c.Upstreams["g.example"] = &Upstream{URL: "https://g.example/v2/"}
				c.Upstreams["h.example"] = &Upstream{URL: "https://:443"}
				c.Upstreams["i.example"] = &Upstream{URL: "https://i.example:0"}
				c.Upstreams["j.example"] = &Upstream{URL: "https://j.example:http"}
				c.Upstreams["k.example"] = &Upstream{URL: "https:k.example"}
				c.Upstreams["l.example"] = &Upstream{URL: "https://l.example?"}
				c.Upstreams["ghcr.io"].URL = "gopher://ghcr.io"
			},
			want: []string{
				`upstreams["a.example"].url: must be set, e.g. "https://registry.example.com"`,
				`upstreams["b.example"].url: scheme must be http or https`,
				`upstreams["c.example"].url: scheme must be http or https`,
				`upstreams["d.example"].url: must not contain credentials; use username and password`,
				`upstreams["e.example"].url: must not contain a query`,
				`upstreams["f.example"].url: must not contain a fragment`,
				`upstreams["g.example"].url: "https://g.example/v2/" must not end in /v2 (wharf adds it); use the registry's base URL`,
				`upstreams["ghcr.io"].url: scheme must be http or https`,
				`upstreams["h.example"].url: "https://:443" has no host`,
				`upstreams["i.example"].url: "https://i.example:0": port must be a number from 1 to 65535`,
				`upstreams["j.example"].url: "https://j.example:http" is not a URL`,
				`upstreams["k.example"].url: "https:k.example" has no host`,
				`upstreams["l.example"].url: must not contain a query`,
			},
		},
		{
			name: "upstream names",
			change: func(c *Config) {
				for _, n := range []string{"Ghcr.example", "https://x.example", "x.example/path", "x.example:0", "-x.example", "x..example", "[::1", "[1.2.3.4]:5000", "x.example:", ""} {
					c.Upstreams[n] = &Upstream{URL: "https://x.example"}
				}
			},
			want: []string{
				`upstreams[""]: invalid registry name: must not be empty`,
				`upstreams["-x.example"]: invalid registry name: "-x.example" is not a valid host name`,
				`upstreams["Ghcr.example"]: invalid registry name: "Ghcr.example" must be lower-case`,
				`upstreams["[1.2.3.4]:5000"]: invalid registry name: "[1.2.3.4]:5000" is not a valid IPv6 address in brackets`,
				`upstreams["[::1"]: invalid registry name: "[::1" is not host[:port]`,
				`upstreams["https://x.example"]: invalid registry name: "https://x.example" must not include a scheme; write host[:port]`,
				`upstreams["x..example"]: invalid registry name: "x..example" is not a valid host name`,
				`upstreams["x.example/path"]: invalid registry name: "x.example/path" must not include a path; write host[:port]`,
				`upstreams["x.example:"]: invalid registry name: "x.example:": port must be a number from 1 to 65535`,
				`upstreams["x.example:0"]: invalid registry name: "x.example:0": port must be a number from 1 to 65535`,
			},
		},
		{
			name: "aliases, virtual hosts, token realms",
			change: func(c *Config) {
				c.Upstreams["ghcr.io"].Aliases = []string{"ghcr.io", "GHCR.example", "index.docker.io", "quay.io"}
				c.Upstreams["ghcr.io"].VirtualHosts = []string{"ghcr.mirror.example", "http://x", "hub.mirror.example"}
				c.Upstreams["docker.io"].VirtualHosts = []string{"hub.mirror.example", "hub.mirror.example"}
				c.Upstreams["ghcr.io"].TokenRealms = []string{"auth.example", "https://auth.example/token"}
				c.Upstreams["quay.io"].VirtualHosts = []string{"k8s.gcr.io"}
			},
			want: []string{
				`upstreams["ghcr.io"].aliases[0]: "ghcr.io" is the upstream's own name`,
				`upstreams["ghcr.io"].aliases[1]: "GHCR.example" must be lower-case`,
				`upstreams["ghcr.io"].virtual_hosts[1]: "http://x" must not include a scheme; write host[:port]`,
				`upstreams["ghcr.io"].token_realms[1]: "https://auth.example/token" must not include a scheme; write host[:port]`,
				`upstreams["ghcr.io"].aliases[2]: "index.docker.io" is already used by upstreams["docker.io"].aliases[0]`,
				`upstreams["ghcr.io"].aliases[3]: "quay.io" is already used by upstreams["quay.io"]`,
				`upstreams["ghcr.io"].virtual_hosts[2]: "hub.mirror.example" is already used by upstreams["docker.io"].virtual_hosts[0]`,
				`upstreams["registry.k8s.io"].aliases[0]: "k8s.gcr.io" is already used by upstreams["quay.io"].virtual_hosts[0]`,
			},
		},
		{
			name: "credentials",
			change: func(c *Config) {
				c.Upstreams["docker.io"].Username = "bot"
				c.Upstreams["docker.io"].Password = "pw"
				c.Upstreams["docker.io"].PasswordFile = "/run/secrets/hub"
				c.Upstreams["ghcr.io"].PasswordEnv = "GHCR_TOKEN"
				c.Upstreams["quay.io"].Username = "bot"
				c.Upstreams["quay.io"].PasswordFile = "/f"
				c.Upstreams["quay.io"].PasswordEnv = "A=B"
				yes := true
				c.Upstreams["docker.io"].Access.Anonymous = &yes
				c.Upstreams["quay.io"].Access.Anonymous = &yes
			},
			want: []string{
				`upstreams["docker.io"].password_file: set together with password; use only one of password, password_file, password_env`,
				`upstreams["ghcr.io"].username: must be set when password_env is set`,
				`upstreams["quay.io"].password_env: set together with password_file; use only one of password, password_file, password_env`,
				`upstreams["quay.io"].password_env: "A=B" is not an environment variable name`,
			},
		},
		{
			name:   "nil upstream",
			change: func(c *Config) { c.Upstreams["x.example"] = nil },
			want:   []string{`upstreams["x.example"]: has no settings; give it at least a url`},
		},
		{
			name:   "default upstream disabled",
			change: func(c *Config) { c.Upstreams["docker.io"].Disabled = true },
			want:   []string{`default_upstream: "docker.io" is disabled`},
		},
		{
			name:   "default upstream is an alias",
			change: func(c *Config) { c.DefaultUpstream = "index.docker.io" },
			want:   []string{`default_upstream: "index.docker.io" is an alias; use the upstream's name "docker.io"`},
		},
		{
			name:   "default upstream unknown",
			change: func(c *Config) { c.DefaultUpstream = "hub.example" },
			want:   []string{`default_upstream: "hub.example" is not a configured upstream`},
		},
		{
			name: "every problem at once",
			change: func(c *Config) {
				c.Listen = "nope"
				c.DataDir = ""
				c.Fetch.Retries = 99
				c.DefaultUpstream = "nowhere.example"
				c.Upstreams["ghcr.io"].URL = "ghcr.io"
				c.Upstreams["quay.io"].Password = "pw"
				c.Upstreams["Bad.example"] = &Upstream{URL: "https://bad.example"}
			},
			want: []string{
				`listen: "nope" is not host:port (e.g. ":5000", "127.0.0.1:5080", "[::1]:5000")`,
				`data_dir: must not be empty`,
				`fetch.retries: 99 is out of range 0..10`,
				`upstreams["Bad.example"]: invalid registry name: "Bad.example" must be lower-case`,
				`upstreams["ghcr.io"].url: scheme must be http or https`,
				`upstreams["quay.io"].username: must be set when password is set`,
				`default_upstream: "nowhere.example" is not a configured upstream`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.change(c)
			before := Default()
			tt.change(before)
			err := c.Validate()
			checkProblems(t, err)
			if diff := cmp.Diff(tt.want, messages(err)); diff != "" {
				t.Errorf("Validate (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(before, c, cmpConfig...); diff != "" {
				t.Errorf("Validate changed the configuration (-before +after):\n%s", diff)
			}
		})
	}
}

func TestValidateErrorsAreFieldErrors(t *testing.T) {
	c := Default()
	c.Upstreams["ghcr.io"].URL = "ftp://ghcr.io"
	err := c.Validate()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Validate: %v does not match ErrInvalid", err)
	}
	var fe *FieldError
	if !errors.As(err, &fe) {
		t.Fatalf("Validate: %v is not a *FieldError", err)
	}
	if fe.Field != `upstreams["ghcr.io"].url` {
		t.Errorf("Field = %q", fe.Field)
	}
	if got, want := err.Error(), `upstreams["ghcr.io"].url: scheme must be http or https`; got != want {
		t.Errorf("Error() = %q, want %q", got, want)
	}
}

func TestListenOverlap(t *testing.T) {
	tests := []struct {
		a, b string
		want bool
	}{
		{":5000", ":5000", true},
		{":5000", "127.0.0.1:5000", true},
		{"0.0.0.0:5000", "10.0.0.1:5000", true},
		{"[::]:5000", "[::1]:5000", true},
		{"127.0.0.1:5000", "127.0.0.1:5000", true},
		{"localhost:5000", "LOCALHOST:5000", true},
		{"[::1]:5000", "[0:0::1]:5000", true},
		{"127.0.0.1:5000", "127.0.0.2:5000", false},
		{":5000", ":5080", false},
		{":0", ":0", false},
		{"bad", ":5000", false},
	}
	for _, tt := range tests {
		if got := listenOverlap(tt.a, tt.b); got != tt.want {
			t.Errorf("listenOverlap(%q, %q) = %v, want %v", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestCheckRegistryName(t *testing.T) {
	valid := []string{
		"docker.io", "registry-1.docker.io", "localhost", "localhost:5000", "registry", "10.0.0.1",
		"10.0.0.1:5000", "[::1]", "[::1]:5000", "[fd00::1]:65535", "a.b.c.d.example", "xn--bcher-kva.example",
	}
	for _, s := range valid {
		if err := checkRegistryName(s); err != nil {
			t.Errorf("checkRegistryName(%q) = %v, want nil", s, err)
		}
	}
	invalid := []string{
		"", "Docker.io", "docker.io/", "docker.io/library", "http://docker.io", "docker.io:", "docker.io:65536",
		"docker.io:-1", ":5000", "docker.io.", ".docker.io", "dock_er.io", "-a.io", "a-.io", "a:b:c", "[::1]x",
		"[::1]:", "[1.2.3.4]", "[fe80::1%eth0]", "[::1", "a b.io", "ü.example",
	}
	for _, s := range invalid {
		if err := checkRegistryName(s); err == nil {
			t.Errorf("checkRegistryName(%q) = nil, want an error", s)
		}
	}
}
