package main

import (
	"errors"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseRef(t *testing.T) {
	dgst := "sha256:" + strings.Repeat("0a", 32)
	tests := []struct {
		in   string
		want imageRef
		str  string
		err  bool
	}{
		{in: "nginx", want: imageRef{upstream: "docker.io", repo: "library/nginx"}, str: "docker.io/library/nginx"},
		{in: "nginx:1.27", want: imageRef{upstream: "docker.io", repo: "library/nginx", tag: "1.27"}, str: "docker.io/library/nginx:1.27"},
		{in: "docker.io/library/nginx", want: imageRef{upstream: "docker.io", repo: "library/nginx"}, str: "docker.io/library/nginx"},
		{in: "bitnami/redis", want: imageRef{upstream: "docker.io", repo: "bitnami/redis"}, str: "docker.io/bitnami/redis"},
		{in: "ghcr.io/o/r", want: imageRef{upstream: "ghcr.io", repo: "o/r"}, str: "ghcr.io/o/r"},
		{in: "myreg.io:5000/team/app:v2", want: imageRef{upstream: "myreg.io:5000", repo: "team/app", tag: "v2"}, str: "myreg.io:5000/team/app:v2"},
		{in: "registry.k8s.io/pause@" + dgst, want: imageRef{upstream: "registry.k8s.io", repo: "pause", digest: dgst}, str: "registry.k8s.io/pause@" + dgst},
		{in: "nginx:1@" + dgst, want: imageRef{upstream: "docker.io", repo: "library/nginx", tag: "1", digest: dgst}, str: "docker.io/library/nginx:1@" + dgst},
		{in: dgst, want: imageRef{digest: dgst}, str: dgst},
		{in: "sha256:abc", err: true},
		{in: "sha256:" + strings.Repeat("A", 64), err: true},
		{in: "Nginx", err: true},
		{in: "", err: true},
		{in: "a b", err: true},
		{in: "nginx:", err: true},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseRef(tt.in)
			if tt.err {
				if !errors.Is(err, errBadReference) {
					t.Fatalf("parseRef(%q) = %+v, %v; want errBadReference", tt.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(imageRef{})); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if got.String() != tt.str {
				t.Errorf("String() = %q, want %q", got.String(), tt.str)
			}
		})
	}
}

// FuzzParseRef: parsing never panics, and what it accepts prints as a
// reference that parses to the same thing.
func FuzzParseRef(f *testing.F) {
	for _, s := range []string{"nginx", "ghcr.io/o/r:v1", "sha256:" + strings.Repeat("0", 64), "a@sha256:" + strings.Repeat("1", 64), "localhost:5000/x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := parseRef(s)
		if err != nil {
			return
		}
		again, err := parseRef(r.String())
		if err != nil {
			t.Fatalf("%q parsed as %q, which does not parse: %v", s, r.String(), err)
		}
		if again != r {
			t.Fatalf("%q → %+v → %q → %+v", s, r, r.String(), again)
		}
	})
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"k8s.io/*controller", "registry.k8s.io/ingress-nginx/controller", true},
		{"*", "", true},
		{"nginx", "docker.io/library/nginx", true},
		{"NGINX", "docker.io/library/nginx", true},
		{"lib*/ng?nx", "docker.io/library/nginx", true},
		{"lib*/ng?nx", "docker.io/library/ngnx", false},
		{"a?c", "ac", false},
		{"a*b*c*d", "aXbYcZd", true},
		{"a*b*c*d", "aXbYcZ", false},
		{"quay", "docker.io/library/nginx", false},
		{strings.Repeat("a*", 20) + "b", strings.Repeat("a", 200), false}, // no exponential backtracking
	}
	for _, tt := range tests {
		if got := globMatch(tt.pattern, tt.s); got != tt.want {
			t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
		}
	}
}

func TestLiteralOf(t *testing.T) {
	tests := map[string]string{
		"k8s.io/*controller": "controller",
		"*":                  "",
		"ab?cde*f":           "cde",
		"plain":              "plain",
	}
	for in, want := range tests {
		if got := literalOf(in); got != want {
			t.Errorf("literalOf(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestAdminURLOf(t *testing.T) {
	tests := map[string]string{
		"127.0.0.1:5080": "http://127.0.0.1:5080",
		":5080":          "http://127.0.0.1:5080",
		"0.0.0.0:5080":   "http://127.0.0.1:5080",
		"[::]:5080":      "http://[::1]:5080",
		"10.0.0.5:9000":  "http://10.0.0.5:9000",
		"":               "",
		"nonsense":       "",
	}
	for in, want := range tests {
		if got := adminURLOf(in); got != want {
			t.Errorf("adminURLOf(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzGlobMatch: globMatch agrees with the equivalent regular expression
// (unanchored, case-insensitive, '*' = ".*", '?' = ".") on ASCII input.
func FuzzGlobMatch(f *testing.F) {
	f.Add("k8s.io/*controller", "registry.k8s.io/ingress-nginx/controller")
	f.Add("a?c*", "xabcd")
	f.Add("**?", "")
	f.Fuzz(func(t *testing.T, pattern, s string) {
		if !isASCII(pattern) || !isASCII(s) || len(pattern) > 64 || len(s) > 256 {
			t.Skip()
		}
		var re strings.Builder
		re.WriteString("(?is)")
		for _, r := range pattern {
			switch r {
			case '*':
				re.WriteString(".*")
			case '?':
				re.WriteString(".")
			default:
				re.WriteString(regexp.QuoteMeta(string(r)))
			}
		}
		want := regexp.MustCompile(re.String()).MatchString(s)
		if got := globMatch(pattern, s); got != want {
			t.Fatalf("globMatch(%q, %q) = %v, regexp says %v", pattern, s, got, want)
		}
	})
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
