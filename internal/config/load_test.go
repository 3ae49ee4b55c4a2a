package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// writeConfig writes a config file named config.yaml into a fresh directory
// and returns its path.
func writeConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func dur(d time.Duration) *Duration { v := Duration(d); return &v }
func boolp(b bool) *bool            { return &b }

func TestLoadFile(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		// want changes Default() into the expected configuration.
		want func(c *Config)
	}{
		{name: "empty file", yaml: "", want: func(*Config) {}},
		{name: "only comments", yaml: "# nothing here\n", want: func(*Config) {}},
		{name: "empty document", yaml: "---\n", want: func(*Config) {}},
		{name: "null document", yaml: "~\n", want: func(*Config) {}},
		{
			name: "scalars",
			yaml: `
listen: 127.0.0.1:6000
admin_listen: "[::1]:6080"
data_dir: /srv/wharf
log_level: debug
log_format: json
default_upstream: ""
tag_ttl: 1h
max_stale: 2d
negative_ttl: 0s
`,
			want: func(c *Config) {
				c.Listen, c.AdminListen, c.DataDir = "127.0.0.1:6000", "[::1]:6080", "/srv/wharf"
				c.LogLevel, c.LogFormat, c.DefaultUpstream = "debug", "json", ""
				c.TagTTL, c.MaxStale, c.NegativeTTL = Duration(time.Hour), Duration(2*day), 0
			},
		},
		{
			name: "fetch merges key by key",
			yaml: "fetch:\n  retries: 0\n  connect_timeout: 3s\n",
			want: func(c *Config) { c.Fetch.Retries, c.Fetch.ConnectTimeout = 0, Duration(3*time.Second) },
		},
		{
			name: "empty values keep the defaults",
			yaml: "listen:\ntag_ttl:\nfetch:\n",
			want: func(*Config) {},
		},
		{
			name: "built-in upstream: only the fields set change",
			yaml: `
upstreams:
  docker.io:
    username: bot
    password_env: HUB_TOKEN
    tag_ttl: 1m
`,
			want: func(c *Config) {
				u := c.Upstreams["docker.io"]
				u.Username, u.PasswordEnv, u.TagTTL = "bot", "HUB_TOKEN", dur(time.Minute)
			},
		},
		{
			name: "built-in upstream: lists are replaced, not appended",
			yaml: "upstreams:\n  docker.io:\n    aliases: [hub.example]\n  registry.k8s.io:\n    aliases: []\n",
			want: func(c *Config) {
				c.Upstreams["docker.io"].Aliases = []string{"hub.example"}
				c.Upstreams["registry.k8s.io"].Aliases = []string{}
			},
		},
		{
			name: "built-in upstream: null resets a pointer field to inherit",
			yaml: "upstreams:\n  docker.io:\n    library_prefix: null\n",
			want: func(c *Config) { c.Upstreams["docker.io"].LibraryPrefix = nil },
		},
		{
			name: "built-in upstream: empty entry changes nothing",
			yaml: "upstreams:\n  docker.io:\n",
			want: func(*Config) {},
		},
		{
			name: "built-in upstream disabled, URL kept",
			yaml: "upstreams:\n  quay.io: {disabled: true}\n",
			want: func(c *Config) { c.Upstreams["quay.io"].Disabled = true },
		},
		{
			name: "new upstream",
			yaml: `
upstreams:
  "myreg.example:5000":
    url: https://myreg.example:5000
    virtual_hosts: [myreg.mirror.example]
    token_realms: [auth.example]
    max_stale: 0s
`,
			want: func(c *Config) {
				c.Upstreams["myreg.example:5000"] = &Upstream{
					URL: "https://myreg.example:5000", VirtualHosts: []string{"myreg.mirror.example"},
					TokenRealms: []string{"auth.example"}, MaxStale: dur(0),
				}
			},
		},
		{
			name: "new upstream without settings",
			yaml: "upstreams:\n  new.example:\n",
			want: func(c *Config) { c.Upstreams["new.example"] = &Upstream{} },
		},
		{
			name: "upstreams: null keeps the built-ins",
			yaml: "upstreams:\n",
			want: func(*Config) {},
		},
		{
			name: "YAML anchors and aliases",
			yaml: `
upstreams:
  a.example: &common
    url: https://a.example
    library_prefix: true
  ghcr.io:
    <<: *common
`,
			want: func(c *Config) {
				c.Upstreams["a.example"] = &Upstream{URL: "https://a.example", LibraryPrefix: boolp(true)}
				c.Upstreams["ghcr.io"].URL = "https://a.example"
				c.Upstreams["ghcr.io"].LibraryPrefix = boolp(true)
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := Load(writeConfig(t, tt.yaml), nil)
			if err != nil {
				t.Fatalf("Load:\n%v", err)
			}
			want := Default()
			tt.want(want)
			if diff := cmp.Diff(want, got, cmpConfig...); diff != "" {
				t.Errorf("Load (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoadFileErrors(t *testing.T) {
	tests := []struct {
		name string
		yaml string
		want []string // messages after "<path>: "
	}{
		{
			name: "unknown top-level key",
			yaml: "listen: :5000\n\n# comment\ntag_tll: 5m\n",
			want: []string{"line 4: field tag_tll not found in type config.Config"},
		},
		{
			name: "unknown upstream key",
			yaml: "upstreams:\n  docker.io:\n    user: bot\n",
			want: []string{"line 3: field user not found in type config.Upstream"},
		},
		{
			name: "unknown fetch key",
			yaml: "fetch:\n  timout: 1h\n",
			want: []string{"line 2: field timout not found in type config.Fetch"},
		},
		{
			name: "bad duration",
			yaml: "max_stale: 7\n",
			want: []string{`line 1: invalid duration "7": want a number with a unit, e.g. "90s", "5m", "1h30m", "7d"`},
		},
		{
			name: "wrong type",
			yaml: "fetch:\n  retries: many\n",
			want: []string{"line 2: cannot unmarshal !!str `many` into int"},
		},
		{
			name: "every problem at once",
			yaml: "tag_tll: 5m\nmax_stale: forever\nupstreams:\n  ghcr.io:\n    tag_ttl: 5\n    passwd: x\n",
			want: []string{
				"line 1: field tag_tll not found in type config.Config",
				`line 2: invalid duration "forever": want a number with a unit, e.g. "90s", "5m", "1h30m", "7d"`,
				`line 5: invalid duration "5": want a number with a unit, e.g. "90s", "5m", "1h30m", "7d"`,
				"line 6: field passwd not found in type config.Upstream",
			},
		},
		{
			name: "not a mapping",
			yaml: "- listen\n",
			want: []string{"line 1: cannot unmarshal !!seq into config.Config"},
		},
		{
			name: "two documents",
			yaml: "listen: :5000\n---\nlisten: :6000\n",
			want: []string{"line 2: a second YAML document; the config file holds one"},
		},
		{
			name: "duplicate key",
			yaml: "listen: :5000\nlisten: :6000\n",
			want: []string{`line 2: mapping key "listen" already defined at line 1`},
		},
		{
			name: "syntax error",
			yaml: "listen: [\n",
			want: []string{"yaml: line 1: did not find expected node content"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeConfig(t, tt.yaml)
			c, err := Load(path, nil)
			if err == nil {
				t.Fatalf("Load succeeded: %+v", c)
			}
			checkProblems(t, err)
			var want []string
			for _, m := range tt.want {
				want = append(want, path+": "+m)
			}
			if diff := cmp.Diff(want, messages(err)); diff != "" {
				t.Errorf("errors (-want +got):\n%s", diff)
			}
			var fe *FieldError
			if errors.As(err, &fe) && fe.Field != path {
				t.Errorf("FieldError.Field = %q, want the file %q", fe.Field, path)
			}
		})
	}
}

func TestLoadFileMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"), nil)
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Load of a missing file: %v, want fs.ErrNotExist", err)
	}
	if errors.Is(err, ErrInvalid) {
		t.Errorf("a missing file matches ErrInvalid: %v", err)
	}
}

func TestLoadFileTooLarge(t *testing.T) {
	path := writeConfig(t, "# "+strings.Repeat("x", maxFileSize)+"\n")
	if _, err := Load(path, nil); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Load of a huge file: %v, want ErrInvalid", err)
	}
}

func TestLoadNoFile(t *testing.T) {
	c, err := Load("", nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Default(), c, cmpConfig...); diff != "" {
		t.Errorf("Load(\"\", nil) differs from Default() (-want +got):\n%s", diff)
	}
}

// TestLoadDoesNotValidate: Load accepts a configuration Validate rejects,
// so command-line overrides can still fix it.
func TestLoadDoesNotValidate(t *testing.T) {
	c, err := Load(writeConfig(t, "listen: nonsense\nupstreams:\n  x.example: {}\n"), nil)
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	c.Listen = ":5000"
	c.SetUpstreamURL("x.example", "https://x.example")
	if err := c.Validate(); err != nil {
		t.Errorf("Validate after overrides: %v", err)
	}
}
