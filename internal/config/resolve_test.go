package config

import (
	"errors"
	"io/fs"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestResolve(t *testing.T) {
	files := map[string]string{
		"/s/crlf":  "from-file\r\n",
		"/s/plain": "  spaced pw  ",
		"/s/empty": "\n",
	}
	readFile := func(name string) ([]byte, error) {
		if s, ok := files[name]; ok {
			return []byte(s), nil
		}
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	env := mapEnv(map[string]string{"TOKEN": "from-env\n", "EMPTY": ""})

	tests := []struct {
		name     string
		u        *Upstream
		want     string
		wantErr  string
		notFound bool
	}{
		{name: "anonymous", u: &Upstream{}, want: ""},
		{name: "password", u: &Upstream{Username: "u", Password: "inline\n"}, want: "inline\n"},
		{name: "file, newline trimmed", u: &Upstream{Username: "u", PasswordFile: "/s/crlf"}, want: "from-file"},
		{name: "file, spaces kept", u: &Upstream{Username: "u", PasswordFile: "/s/plain"}, want: "  spaced pw  "},
		{name: "env, newline trimmed", u: &Upstream{Username: "u", PasswordEnv: "TOKEN"}, want: "from-env"},
		{
			name: "missing file", u: &Upstream{Username: "u", PasswordFile: "/s/missing"},
			wantErr: `upstreams["x.example"].password_file: read /s/missing: open /s/missing: file does not exist`, notFound: true,
		},
		{
			name: "empty file", u: &Upstream{Username: "u", PasswordFile: "/s/empty"},
			wantErr: `upstreams["x.example"].password_file: /s/empty is empty`,
		},
		{
			name: "unset env", u: &Upstream{Username: "u", PasswordEnv: "NOPE"},
			wantErr: `upstreams["x.example"].password_env: environment variable NOPE is not set`,
		},
		{
			name: "empty env", u: &Upstream{Username: "u", PasswordEnv: "EMPTY"},
			wantErr: `upstreams["x.example"].password_env: environment variable EMPTY is empty`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.u.URL = "https://x.example"
			c := &Config{Upstreams: map[string]*Upstream{"x.example": tt.u}}
			err := c.Resolve(readFile, env)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("Resolve error = %v, want %s", err, tt.wantErr)
				}
				if got := errors.Is(err, fs.ErrNotExist); got != tt.notFound {
					t.Errorf("errors.Is(err, fs.ErrNotExist) = %v, want %v", got, tt.notFound)
				}
				if got := errors.Is(err, ErrInvalid); got == tt.notFound {
					t.Errorf("errors.Is(err, ErrInvalid) = %v, want %v", got, !tt.notFound)
				}
				return
			}
			if err != nil {
				t.Fatalf("Resolve: %v", err)
			}
			if got := tt.u.ResolvedPassword(); got != tt.want {
				t.Errorf("ResolvedPassword = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestResolveReportsEveryUpstreamAndSkipsDisabled(t *testing.T) {
	c := Default()
	c.Upstreams["docker.io"].Username = "u"
	c.Upstreams["docker.io"].PasswordFile = "/missing"
	c.Upstreams["ghcr.io"].Username = "u"
	c.Upstreams["ghcr.io"].PasswordEnv = "MISSING"
	c.Upstreams["quay.io"].Username = "u"
	c.Upstreams["quay.io"].PasswordEnv = "ALSO_MISSING"
	c.Upstreams["quay.io"].Disabled = true
	c.Upstreams["gcr.io"].Username = "u"
	c.Upstreams["gcr.io"].PasswordEnv = "GCR"

	noFiles := func(name string) ([]byte, error) { return nil, fs.ErrNotExist }
	err := c.Resolve(noFiles, mapEnv(map[string]string{"GCR": "gcr-pw"}))
	want := []string{
		`upstreams["docker.io"].password_file: read /missing: file does not exist`,
		`upstreams["ghcr.io"].password_env: environment variable MISSING is not set`,
	}
	if diff := cmp.Diff(want, messages(err)); diff != "" {
		t.Errorf("Resolve errors (-want +got):\n%s", diff)
	}
	if got := c.Upstreams["gcr.io"].ResolvedPassword(); got != "gcr-pw" {
		t.Errorf("gcr.io password = %q, want the one resolved despite the other failures", got)
	}
}

func TestResolvedPasswordBeforeResolve(t *testing.T) {
	u := &Upstream{Username: "u", Password: "pw", PasswordFile: "/ignored"}
	if got := u.ResolvedPassword(); got != "pw" {
		t.Errorf("ResolvedPassword before Resolve = %q, want the password field", got)
	}
}

func TestResolveNilFunctions(t *testing.T) {
	c := &Config{Upstreams: map[string]*Upstream{
		"a.example": {URL: "https://a.example", Username: "u", PasswordFile: "/f"},
		"b.example": {URL: "https://b.example", Username: "u", PasswordEnv: "E"},
	}}
	err := c.Resolve(nil, nil)
	want := []string{
		`upstreams["a.example"].password_file: cannot be read: no file reader`,
		`upstreams["b.example"].password_env: environment variable E is not set`,
	}
	if diff := cmp.Diff(want, messages(err)); diff != "" {
		t.Errorf("Resolve(nil, nil) errors (-want +got):\n%s", diff)
	}
}
