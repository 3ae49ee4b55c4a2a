package config

import (
	"bytes"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/")

// cmpConfig compares configurations: unexported resolution state included,
// a nil slice equal to an empty one (YAML cannot tell them apart).
var cmpConfig = []cmp.Option{cmp.AllowUnexported(Upstream{}, Config{}, StaticToken{}), cmpopts.EquateEmpty()}

// messages flattens an errors.Join tree into its leaf messages.
func messages(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, messages(e)...)
		}
		return out
	}
	return []string{err.Error()}
}

// leaves flattens an errors.Join tree into its leaf errors.
func leaves(err error) []error {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range j.Unwrap() {
			out = append(out, leaves(e)...)
		}
		return out
	}
	return []error{err}
}

// checkProblems fails unless every leaf of err is a *FieldError matching
// ErrInvalid with a one-line message.
func checkProblems(t *testing.T, err error) {
	t.Helper()
	for _, e := range leaves(err) {
		var fe *FieldError
		if !errors.As(e, &fe) {
			t.Errorf("error %q (%T) is not a *FieldError", e, e)
		}
		if !errors.Is(e, ErrInvalid) {
			t.Errorf("error %q does not match ErrInvalid", e)
		}
		if strings.Contains(e.Error(), "\n") {
			t.Errorf("error %q is more than one line", e)
		}
	}
}

// marshal renders a configuration the way the golden file holds it.
func marshal(t *testing.T, c *Config) []byte {
	t.Helper()
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDefaultGolden(t *testing.T) {
	golden := filepath.Join("testdata", "default.yaml")
	got := marshal(t, Default())
	if *update {
		if err := os.WriteFile(golden, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if diff := cmp.Diff(string(want), string(got)); diff != "" {
		t.Errorf("Default() marshals differently from %s (-file +got; run go test -update if intended):\n%s", golden, diff)
	}

	// The golden file is itself a valid config file that changes nothing.
	c, err := Load(golden, nil)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(Default(), c, cmpConfig...); diff != "" {
		t.Errorf("Load(%s) differs from Default() (-want +got):\n%s", golden, diff)
	}
}

func TestDefaultIsValid(t *testing.T) {
	c := Default()
	if err := c.Validate(); err != nil {
		t.Fatalf("Default().Validate():\n%v", err)
	}
	want := []string{
		"docker.io", "gcr.io", "ghcr.io", "mcr.microsoft.com", "nvcr.io", "public.ecr.aws", "quay.io", "registry.k8s.io",
	}
	if diff := cmp.Diff(want, c.EnabledUpstreams()); diff != "" {
		t.Errorf("EnabledUpstreams (-want +got):\n%s", diff)
	}
}

func TestDefaultIsFresh(t *testing.T) {
	a := Default()
	a.Upstreams["docker.io"].Aliases[0] = "changed"
	*a.Upstreams["docker.io"].LibraryPrefix = false
	a.Upstreams["ghcr.io"].URL = "changed"
	b := Default()
	if b.Upstreams["docker.io"].Aliases[0] != "index.docker.io" || !*b.Upstreams["docker.io"].LibraryPrefix || b.Upstreams["ghcr.io"].URL != "https://ghcr.io" {
		t.Error("changing one Default() changed another")
	}
}

// TestExample loads the example file shown in the README: it must load,
// validate and resolve cleanly and set every field there is.
// The README shows the example file; the two must not drift apart.
func TestReadmeShowsExample(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join("..", "..", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	example, err := os.ReadFile(filepath.Join("testdata", "example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	// Everything after the file's leading comment block.
	body := string(example)
	for strings.HasPrefix(body, "#") || strings.HasPrefix(body, "\n") {
		_, body, _ = strings.Cut(body, "\n")
	}
	if !strings.Contains(string(readme), "```yaml\n"+body+"```") {
		t.Error("README.md does not show internal/config/testdata/example.yaml as it is; copy it into the README's configuration section")
	}
}

func TestExample(t *testing.T) {
	path := filepath.Join("testdata", "example.yaml")
	c, err := Load(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatalf("Validate:\n%v", err)
	}
	files := map[string][]byte{
		"/run/secrets/dockerhub":      []byte("hub-token\n"),
		"/etc/wharf/admin-token":      []byte("0123456789abcdef0123\n"),
		"/run/secrets/wharf-ci-token": []byte("ci-secret-0123456789\n"),
	}
	readFile := func(name string) ([]byte, error) {
		if b, ok := files[name]; ok {
			return b, nil
		}
		return nil, os.ErrNotExist
	}
	env := mapEnv(map[string]string{"NGC_API_KEY": "ngc-key"})
	if err := c.Resolve(readFile, env); err != nil {
		t.Fatalf("Resolve:\n%v", err)
	}

	if got := c.Auth.Tokens[0].Secret(); got != "ci-secret-0123456789" {
		t.Errorf("static token secret = %q, want the file's content", got)
	}
	if nv := c.Upstreams["nvcr.io"]; nv.AnonymousAccess(c) || !cmp.Equal(nv.Access.Users, []string{"alice", "ci"}) {
		t.Errorf("nvcr.io access = %+v, want users alice and ci only", nv.Access)
	}
	if !c.Upstreams["docker.io"].AnonymousAccess(c) || !c.Upstreams["quay.io"].AnonymousAccess(c) {
		t.Error("docker.io (access.anonymous: true) and quay.io (no credentials) should allow anonymous pulls")
	}
	if got := c.ResolvedAdminToken(); got != "0123456789abcdef0123" {
		t.Errorf("ResolvedAdminToken = %q, want the file's content", got)
	}

	// Spot checks of the merge: built-ins keep what the file does not set.
	hub := c.Upstreams["docker.io"]
	if hub.URL != "https://registry-1.docker.io" || len(hub.Aliases) != 2 || hub.Username != "mirror-bot" || hub.ResolvedPassword() != "hub-token" {
		t.Errorf("docker.io = %+v", hub)
	}
	if got := hub.EffectiveTagTTL(c); got != 15*time.Minute {
		t.Errorf("docker.io tag TTL = %v, want 15m", got)
	}
	if got := c.Upstreams["nvcr.io"].ResolvedPassword(); got != "ngc-key" {
		t.Errorf("nvcr.io password = %q", got)
	}
	if got := c.Upstreams["ghcr.io"].EffectiveTagTTL(c); got != 10*time.Minute {
		t.Errorf("ghcr.io tag TTL = %v, want the global 10m", got)
	}
	if !c.Upstreams["mcr.microsoft.com"].Disabled {
		t.Error("mcr.microsoft.com is not disabled")
	}
	if want := (Cache{MaxSize: 200 << 30, MaxAge: Duration(30 * day), GCInterval: Duration(5 * time.Minute)}); c.Cache != want {
		t.Errorf("cache = %+v, want %+v", c.Cache, want)
	}

	// Every key of Config, Fetch and Upstream appears in the file.
	var doc yaml.Node
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	root := doc.Content[0]
	seen := map[string]bool{}
	collect := func(prefix string, m *yaml.Node) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			seen[prefix+m.Content[i].Value] = true
		}
	}
	collect("", root)
	collect("fetch.", mappingValue(root, "fetch"))
	collect("cache.", mappingValue(root, "cache"))
	ups := mappingValue(root, "upstreams")
	for i := 1; i < len(ups.Content); i += 2 {
		collect("upstream.", ups.Content[i])
	}
	for _, k := range yamlKeys(reflect.TypeFor[Config](), "") {
		if !seen[k] {
			t.Errorf("example.yaml does not set %s", k)
		}
	}
	for _, k := range yamlKeys(reflect.TypeFor[Fetch](), "fetch.") {
		if !seen[k] {
			t.Errorf("example.yaml does not set %s", k)
		}
	}
	for _, k := range yamlKeys(reflect.TypeFor[Cache](), "cache.") {
		if !seen[k] {
			t.Errorf("example.yaml does not set %s", k)
		}
	}
	for _, k := range yamlKeys(reflect.TypeFor[Upstream](), "upstream.") {
		if !seen[k] {
			t.Errorf("example.yaml does not set %s in any upstream", k)
		}
	}
}

// yamlKeys lists the YAML keys of a struct type's decoded fields.
func yamlKeys(typ reflect.Type, prefix string) []string {
	var keys []string
	for f := range typ.Fields() {
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || name == "-" || name == "" {
			continue
		}
		keys = append(keys, prefix+name)
	}
	return keys
}

func TestEffective(t *testing.T) {
	c := Default()
	ttl, stale := Duration(time.Minute), Duration(0)
	yes, no := true, false
	tests := []struct {
		name          string
		u             *Upstream
		wantTTL       time.Duration
		wantStale     time.Duration
		wantLibPrefix bool
	}{
		{"docker.io", &Upstream{}, 5 * time.Minute, 7 * day, true},
		{"ghcr.io", &Upstream{}, 5 * time.Minute, 7 * day, false},
		{"ghcr.io", &Upstream{TagTTL: &ttl, MaxStale: &stale, LibraryPrefix: &yes}, time.Minute, 0, true},
		{"docker.io", &Upstream{LibraryPrefix: &no}, 5 * time.Minute, 7 * day, false},
	}
	for _, tt := range tests {
		if got := tt.u.EffectiveTagTTL(c); got != tt.wantTTL {
			t.Errorf("%s %+v: EffectiveTagTTL = %v, want %v", tt.name, tt.u, got, tt.wantTTL)
		}
		if got := tt.u.EffectiveMaxStale(c); got != tt.wantStale {
			t.Errorf("%s %+v: EffectiveMaxStale = %v, want %v", tt.name, tt.u, got, tt.wantStale)
		}
		if got := tt.u.EffectiveLibraryPrefix(tt.name); got != tt.wantLibPrefix {
			t.Errorf("%s %+v: EffectiveLibraryPrefix = %v, want %v", tt.name, tt.u, got, tt.wantLibPrefix)
		}
	}
	for name, u := range Default().Upstreams {
		if got, want := u.EffectiveLibraryPrefix(name), name == "docker.io"; got != want {
			t.Errorf("built-in %s: EffectiveLibraryPrefix = %v, want %v", name, got, want)
		}
	}
}

func TestEnabledUpstreams(t *testing.T) {
	c := &Config{Upstreams: map[string]*Upstream{
		"b.io": {}, "a.io": {}, "off.io": {Disabled: true}, "nil.io": nil,
	}}
	if diff := cmp.Diff([]string{"a.io", "b.io"}, c.EnabledUpstreams()); diff != "" {
		t.Errorf("EnabledUpstreams (-want +got):\n%s", diff)
	}
}

func TestSetUpstreamURL(t *testing.T) {
	c := Default()
	c.Upstreams["quay.io"].Disabled = true
	c.SetUpstreamURL("docker.io", "http://127.0.0.1:5001")
	c.SetUpstreamURL("quay.io", "http://127.0.0.1:5002")
	c.SetUpstreamURL("new.example", "https://new.example")

	want := Default()
	want.Upstreams["docker.io"].URL = "http://127.0.0.1:5001"
	want.Upstreams["quay.io"].URL = "http://127.0.0.1:5002"
	want.Upstreams["new.example"] = &Upstream{URL: "https://new.example"}
	if diff := cmp.Diff(want, c, cmpConfig...); diff != "" {
		t.Errorf("after SetUpstreamURL (-want +got):\n%s", diff)
	}
	if err := c.Validate(); err != nil {
		t.Errorf("Validate: %v", err)
	}

	var empty Config
	empty.SetUpstreamURL("a.example", "https://a.example")
	if empty.Upstreams["a.example"].URL != "https://a.example" {
		t.Errorf("SetUpstreamURL on an empty Config: %+v", empty.Upstreams)
	}
}

func TestParseUpstreamFlag(t *testing.T) {
	tests := []struct {
		in, wantName, wantURL, wantErr string
	}{
		{in: "docker.io=http://127.0.0.1:5001", wantName: "docker.io", wantURL: "http://127.0.0.1:5001"},
		{in: "myreg.example:5000=https://myreg.example:5000/prefix", wantName: "myreg.example:5000", wantURL: "https://myreg.example:5000/prefix"},
		{in: "[::1]:5000=http://[::1]:5000", wantName: "[::1]:5000", wantURL: "http://[::1]:5000"},
		{in: "docker.io", wantErr: `"docker.io" is not NAME=URL, e.g. docker.io=https://registry-1.docker.io`},
		{in: "=http://x", wantErr: `"=http://x" has no upstream name before '='`},
		{in: "docker.io=", wantErr: `"docker.io=" has no URL after '='`},
		{in: "Docker.io=http://x", wantErr: `"Docker.io=http://x": invalid upstream name: "Docker.io" must be lower-case`},
		{in: "https://docker.io=http://x", wantErr: `"https://docker.io=http://x": invalid upstream name: "https://docker.io" must not include a scheme; write host[:port]`},
		{in: "docker.io/library=http://x", wantErr: `"docker.io/library=http://x": invalid upstream name: "docker.io/library" must not include a path; write host[:port]`},
		{in: "docker.io=ftp://x", wantErr: `"docker.io=ftp://x": invalid URL: scheme must be http or https`},
		{in: "docker.io=127.0.0.1:5001", wantErr: `"docker.io=127.0.0.1:5001": invalid URL: "127.0.0.1:5001" is not a URL`},
		{in: "docker.io=http://u:p@x", wantErr: `"docker.io=http://u:p@x": invalid URL: must not contain credentials; use username and password`},
	}
	for _, tt := range tests {
		name, url, err := ParseUpstreamFlag(tt.in)
		if tt.wantErr != "" {
			if err == nil || err.Error() != tt.wantErr {
				t.Errorf("ParseUpstreamFlag(%q) error = %v, want %s", tt.in, err, tt.wantErr)
			} else if !errors.Is(err, ErrInvalid) {
				t.Errorf("ParseUpstreamFlag(%q) error does not match ErrInvalid", tt.in)
			}
			continue
		}
		if err != nil || name != tt.wantName || url != tt.wantURL {
			t.Errorf("ParseUpstreamFlag(%q) = %q, %q, %v; want %q, %q", tt.in, name, url, err, tt.wantName, tt.wantURL)
		}
	}
}

// mapEnv is an environment lookup backed by a map.
func mapEnv(m map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) {
		v, ok := m[k]
		return v, ok
	}
}

func TestSetUpstreamURLFollowsAliases(t *testing.T) {
	c := Default()
	c.SetUpstreamURL("k8s.gcr.io", "http://127.0.0.1:5003")
	if _, ok := c.Upstreams["k8s.gcr.io"]; ok {
		t.Fatal("an alias became an upstream of its own")
	}
	if got := c.Upstreams["registry.k8s.io"].URL; got != "http://127.0.0.1:5003" {
		t.Fatalf("registry.k8s.io url %q", got)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}
