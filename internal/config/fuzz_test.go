package config

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
)

// FuzzLoad runs what Load does after reading the file (strict YAML decode
// and merge, environment) and then Validate and Resolve on arbitrary input.
// None may panic; every reported problem must be a one-line *FieldError;
// and a configuration that validates must survive marshal → decode
// unchanged, so what `-update` writes and what users copy is what they get.
func FuzzLoad(f *testing.F) {
	for _, name := range []string{"default.yaml", "example.yaml"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b, "", "")
	}
	f.Add([]byte(""), "docker.io=http://127.0.0.1:5001", "5m")
	f.Add([]byte("tag_tll: 5m\n"), "", "")
	f.Add([]byte("upstreams:\n  docker.io:\n    username: u\n    password: p\n"), "", "")
	f.Add([]byte("upstreams:\n  a.example: &a\n    url: https://a.example\n  b.example:\n    <<: *a\n"), "", "")
	f.Add([]byte("upstreams:\n  docker.io: ~\n  new.example:\n"), "new.example=https://new.example", "")
	f.Add([]byte("upstreams: [1, 2]\nfetch: 3\n"), ",,=,", "-7d")
	f.Add([]byte("a: &a [*a]\n"), "", "")
	f.Add([]byte("---\n---\n"), "", "")
	f.Add([]byte("cache: {max_size: 1.5TiB, max_age: 30d, gc_interval: 1m}\n"), "", "")
	f.Add([]byte("cache: {max_size: \"\", max_age: 0, gc_interval: 0s}\n"), "", "")
	f.Add([]byte("cache: {max_size: 1234}\n"), "", "")

	f.Fuzz(func(t *testing.T, data []byte, upstreamsEnv, ttlEnv string) {
		c := Default()
		if err := c.decodeYAML("fuzz.yaml", data); err != nil {
			checkProblems(t, err)
			for _, e := range leaves(err) {
				var fe *FieldError
				if errors.As(e, &fe) && fe.Field != "fuzz.yaml" {
					t.Errorf("decode error %q does not name the file", e)
				}
			}
			return
		}
		env := mapEnv(map[string]string{
			"WHARF_UPSTREAMS": upstreamsEnv,
			"WHARF_TAG_TTL":   ttlEnv,
			"SECRET":          "pw",
		})
		if err := c.applyEnv(env); err != nil {
			checkProblems(t, err)
		}

		verr := c.Validate()
		checkProblems(t, verr)
		for _, name := range c.EnabledUpstreams() {
			u := c.Upstreams[name]
			u.EffectiveTagTTL(c)
			u.EffectiveMaxStale(c)
			u.EffectiveLibraryPrefix(name)
		}

		if verr == nil {
			b := marshal(t, c)
			again := Default()
			if err := again.decodeYAML("again.yaml", b); err != nil {
				t.Fatalf("a valid configuration does not decode after marshaling:\n%s\n%v", b, err)
			}
			if diff := cmp.Diff(c, again, cmpopts.EquateEmpty(), cmpopts.IgnoreUnexported(Upstream{}, Config{}, StaticToken{})); diff != "" {
				t.Errorf("marshal → decode changed the configuration (-before +after):\n%s\nYAML:\n%s", diff, b)
			}
			if err := again.Validate(); err != nil {
				t.Errorf("the re-decoded configuration does not validate: %v", err)
			}
		}

		readFile := func(string) ([]byte, error) { return nil, fs.ErrNotExist }
		if err := c.Resolve(readFile, env); err != nil {
			for _, e := range leaves(err) {
				var fe *FieldError
				if !errors.As(e, &fe) {
					t.Errorf("Resolve error %q (%T) is not a *FieldError", e, e)
				}
			}
		}
	})
}
