package config

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestLoadEnv(t *testing.T) {
	tests := []struct {
		name string
		yaml string // config file; none when empty
		env  map[string]string
		want func(c *Config)
	}{
		{name: "no variables", want: func(*Config) {}},
		{
			name: "global variables",
			env: map[string]string{
				"WHARF_LISTEN": "127.0.0.1:7000", "WHARF_ADMIN_LISTEN": "127.0.0.1:7080",
				"WHARF_DATA_DIR": "/srv/cache", "WHARF_LOG_LEVEL": "warn", "WHARF_LOG_FORMAT": "text",
				"WHARF_DEFAULT_UPSTREAM": "ghcr.io", "WHARF_TAG_TTL": "90s", "WHARF_MAX_STALE": "1d",
			},
			want: func(c *Config) {
				c.Listen, c.AdminListen, c.DataDir = "127.0.0.1:7000", "127.0.0.1:7080", "/srv/cache"
				c.LogLevel, c.LogFormat, c.DefaultUpstream = "warn", "text", "ghcr.io"
				c.TagTTL, c.MaxStale = Duration(90*time.Second), Duration(day)
			},
		},
		{
			name: "cache bounds",
			yaml: "cache: {max_size: 1TB, max_age: 1d}\n",
			env:  map[string]string{"WHARF_CACHE_MAX_SIZE": "200GiB", "WHARF_CACHE_MAX_AGE": "30d"},
			want: func(c *Config) { c.Cache.MaxSize, c.Cache.MaxAge = 200<<30, Duration(30*day) },
		},
		{
			name: "empty cache size is unbounded",
			yaml: "cache: {max_size: 1TB}\n",
			env:  map[string]string{"WHARF_CACHE_MAX_SIZE": ""},
			want: func(c *Config) { c.Cache.MaxSize = 0 },
		},
		{
			name: "empty default upstream disables default routing",
			env:  map[string]string{"WHARF_DEFAULT_UPSTREAM": ""},
			want: func(c *Config) { c.DefaultUpstream = "" },
		},
		{
			name: "environment overrides the file",
			yaml: "listen: :6000\ndata_dir: /from/file\n",
			env:  map[string]string{"WHARF_LISTEN": ":7000"},
			want: func(c *Config) { c.Listen, c.DataDir = ":7000", "/from/file" },
		},
		{
			name: "WHARF_UPSTREAMS sets, adds and enables",
			yaml: "upstreams:\n  quay.io: {disabled: true}\n",
			env:  map[string]string{"WHARF_UPSTREAMS": " docker.io=http://127.0.0.1:5001, quay.io=http://127.0.0.1:5002,new.example:5000=https://new.example:5000,"},
			want: func(c *Config) {
				c.Upstreams["docker.io"].URL = "http://127.0.0.1:5001"
				c.Upstreams["quay.io"].URL = "http://127.0.0.1:5002"
				c.Upstreams["quay.io"].Disabled = false
				c.Upstreams["new.example:5000"] = &Upstream{URL: "https://new.example:5000"}
			},
		},
		{
			name: "per-upstream variables",
			env: map[string]string{
				"WHARF_UPSTREAM_DOCKER_IO_USERNAME": "bot",
				"WHARF_UPSTREAM_DOCKER_IO_PASSWORD": "s3cret",
				"WHARF_UPSTREAM_GHCR_IO_URL":        "http://127.0.0.1:5003",
			},
			want: func(c *Config) {
				c.Upstreams["docker.io"].Username = "bot"
				c.Upstreams["docker.io"].Password = "s3cret"
				c.Upstreams["ghcr.io"].URL = "http://127.0.0.1:5003"
			},
		},
		{
			name: "password from the environment replaces the file's source",
			yaml: "upstreams:\n  docker.io: {username: bot, password_file: /run/secrets/hub}\n",
			env:  map[string]string{"WHARF_UPSTREAM_DOCKER_IO_PASSWORD": "s3cret"},
			want: func(c *Config) {
				c.Upstreams["docker.io"].Username = "bot"
				c.Upstreams["docker.io"].Password = "s3cret"
				c.Upstreams["docker.io"].PasswordFile = ""
			},
		},
		{
			name: "per-upstream variables reach upstreams from the file and from WHARF_UPSTREAMS",
			yaml: "upstreams:\n  myreg.example:5000: {url: https://myreg.example:5000}\n",
			env: map[string]string{
				"WHARF_UPSTREAMS": "other.example=https://other.example",
				"WHARF_UPSTREAM_MYREG_EXAMPLE_5000_USERNAME":  "me",
				"WHARF_UPSTREAM_OTHER_EXAMPLE_USERNAME":       "you",
				"WHARF_UPSTREAM_OTHER_EXAMPLE_URL":            "https://other2.example",
				"WHARF_UPSTREAM_NOT_CONFIGURED_EXAMPLE_URL":   "https://ignored.example",
				"WHARF_UPSTREAM_DOCKER_IO_SOMETHING_ELSE_URL": "https://ignored.example",
			},
			want: func(c *Config) {
				c.Upstreams["myreg.example:5000"] = &Upstream{URL: "https://myreg.example:5000", Username: "me"}
				c.Upstreams["other.example"] = &Upstream{URL: "https://other2.example", Username: "you"}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.yaml != "" {
				path = writeConfig(t, tt.yaml)
			}
			got, err := Load(path, mapEnv(tt.env))
			if err != nil {
				t.Fatalf("Load:\n%v", err)
			}
			want := Default()
			if tt.yaml != "" {
				if want, err = Load(path, nil); err != nil {
					t.Fatal(err)
				}
			}
			tt.want(want)
			if diff := cmp.Diff(want, got, cmpConfig...); diff != "" {
				t.Errorf("Load (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadEnvErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		env  map[string]string
		want []string
	}{
		{
			name: "every malformed variable is reported, named",
			env: map[string]string{
				"WHARF_LISTEN":               "5000",
				"WHARF_ADMIN_LISTEN":         "localhost:http",
				"WHARF_LOG_LEVEL":            "verbose",
				"WHARF_LOG_FORMAT":           "xml",
				"WHARF_TAG_TTL":              "5",
				"WHARF_MAX_STALE":            "",
				"WHARF_CACHE_MAX_SIZE":       "200G",
				"WHARF_UPSTREAMS":            "docker.io,ghcr.io=ftp://x,ok.example=https://ok.example",
				"WHARF_UPSTREAM_QUAY_IO_URL": "quay.io",
			},
			want: []string{
				`WHARF_LISTEN: "5000" is not host:port (e.g. ":5000", "127.0.0.1:5080", "[::1]:5000")`,
				`WHARF_ADMIN_LISTEN: "localhost:http": port must be a number from 0 to 65535`,
				`WHARF_LOG_LEVEL: "verbose" is not one of debug, info, warn, error`,
				`WHARF_LOG_FORMAT: "xml" is not one of json, text, auto`,
				`WHARF_TAG_TTL: invalid duration "5": want a number with a unit, e.g. "90s", "5m", "1h30m", "7d"`,
				`WHARF_MAX_STALE: invalid duration "": want a number with a unit, e.g. "90s", "5m", "1h30m", "7d"`,
				`WHARF_CACHE_MAX_SIZE: invalid size "200G": want a number of bytes, or a number with a unit: KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. "200GiB"`,
				`WHARF_UPSTREAMS: "docker.io" is not NAME=URL, e.g. docker.io=https://registry-1.docker.io; "ghcr.io=ftp://x": invalid URL: scheme must be http or https`,
				`WHARF_UPSTREAM_QUAY_IO_URL: scheme must be http or https`,
			},
		},
		{
			name: "a variable two upstreams map to",
			yaml: "upstreams:\n  my-reg.example: {url: https://a.example}\n  my.reg.example: {url: https://b.example}\n",
			env:  map[string]string{"WHARF_UPSTREAM_MY_REG_EXAMPLE_USERNAME": "bot"},
			want: []string{
				`WHARF_UPSTREAM_MY_REG_EXAMPLE_USERNAME: ambiguous: upstreams "my-reg.example", "my.reg.example" all map to this name; set it in the config file`,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := ""
			if tt.yaml != "" {
				path = writeConfig(t, tt.yaml)
			}
			_, err := Load(path, mapEnv(tt.env))
			checkProblems(t, err)
			if diff := cmp.Diff(tt.want, messages(err)); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
		})
	}
}

// TestEnvVarsAreRead checks the documentation against the behaviour: every
// variable EnvVars lists is looked up by Load, and Load looks up nothing
// else.
func TestEnvVarsAreRead(t *testing.T) {
	looked := map[string]bool{}
	env := func(k string) (string, bool) {
		looked[k] = true
		return "", false
	}
	if _, err := Load("", env); err != nil {
		t.Fatal(err)
	}
	documented := map[string]bool{}
	for _, v := range EnvVars() {
		if !strings.HasPrefix(v.Name, EnvPrefix) {
			t.Errorf("%s does not start with %s", v.Name, EnvPrefix)
		}
		if documented[v.Name] {
			t.Errorf("%s listed twice", v.Name)
		}
		documented[v.Name] = true
		if v.Description == "" || strings.Contains(v.Description, "\n") {
			t.Errorf("%s: description %q is not one line", v.Name, v.Description)
		}
		if name := strings.Replace(v.Name, "<NAME>", "DOCKER_IO", 1); !looked[name] {
			t.Errorf("Load does not read %s", name)
		}
	}
	for name := range looked {
		generic := name
		for _, u := range Default().EnabledUpstreams() {
			generic = strings.Replace(generic, "_"+UpstreamEnvName(u)+"_", "_<NAME>_", 1)
		}
		if !documented[generic] {
			t.Errorf("Load reads %s, which EnvVars does not list", name)
		}
	}
}

func TestUpstreamEnvName(t *testing.T) {
	tests := map[string]string{
		"docker.io":          "DOCKER_IO",
		"myreg.example:5000": "MYREG_EXAMPLE_5000",
		"my-reg.example":     "MY_REG_EXAMPLE",
		"[::1]:5000":         "___1__5000",
		"mcr.microsoft.com":  "MCR_MICROSOFT_COM",
	}
	for in, want := range tests {
		if got := UpstreamEnvName(in); got != want {
			t.Errorf("UpstreamEnvName(%q) = %q, want %q", in, got, want)
		}
	}
}
