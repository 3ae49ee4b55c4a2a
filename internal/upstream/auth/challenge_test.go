package auth

import (
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseChallenges(t *testing.T) {
	tests := []struct {
		name    string
		headers []string
		want    []Challenge
	}{
		{
			name:    "docker hub",
			headers: []string{`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"`},
			want: []Challenge{{Scheme: "bearer", Params: map[string]string{
				"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:library/nginx:pull",
			}}},
		},
		{
			name:    "quay basic and bearer in one header",
			headers: []string{`Basic realm="quay.io", Bearer realm="https://quay.io/v2/auth",service="quay.io"`},
			want: []Challenge{
				{Scheme: "basic", Params: map[string]string{"realm": "quay.io"}},
				{Scheme: "bearer", Params: map[string]string{"realm": "https://quay.io/v2/auth", "service": "quay.io"}},
			},
		},
		{
			name:    "several headers",
			headers: []string{`Basic realm="r1"`, `Bearer realm="https://r2/token"`},
			want: []Challenge{
				{Scheme: "basic", Params: map[string]string{"realm": "r1"}},
				{Scheme: "bearer", Params: map[string]string{"realm": "https://r2/token"}},
			},
		},
		{
			name:    "gcr unquoted service",
			headers: []string{`Bearer realm="https://gcr.io/v2/token",service=gcr.io`},
			want:    []Challenge{{Scheme: "bearer", Params: map[string]string{"realm": "https://gcr.io/v2/token", "service": "gcr.io"}}},
		},
		{
			name:    "unquoted realm URL",
			headers: []string{`Bearer realm=https://gcr.io/v2/token, service=gcr.io`},
			want:    []Challenge{{Scheme: "bearer", Params: map[string]string{"realm": "https://gcr.io/v2/token", "service": "gcr.io"}}},
		},
		{
			name:    "nvcr no service, empty scope",
			headers: []string{`Bearer realm="https://nvcr.io/proxy_auth",scope=""`},
			want:    []Challenge{{Scheme: "bearer", Params: map[string]string{"realm": "https://nvcr.io/proxy_auth", "scope": ""}}},
		},
		{
			name:    "realm with trailing slash",
			headers: []string{`Bearer realm="https://public.ecr.aws/token/",service="public.ecr.aws",scope="aws"`},
			want: []Challenge{{Scheme: "bearer", Params: map[string]string{
				"realm": "https://public.ecr.aws/token/", "service": "public.ecr.aws", "scope": "aws",
			}}},
		},
		{
			name:    "case folding of scheme and names, not values",
			headers: []string{`BEARER Realm="https://X/Token", SERVICE="Svc"`},
			want:    []Challenge{{Scheme: "bearer", Params: map[string]string{"realm": "https://X/Token", "service": "Svc"}}},
		},
		{
			name:    "escapes in quoted string",
			headers: []string{`Bearer realm="https://r/t",error="insufficient_scope",error_description="say \"hi\" \\ bye"`},
			want: []Challenge{{Scheme: "bearer", Params: map[string]string{
				"realm": "https://r/t", "error": "insufficient_scope", "error_description": `say "hi" \ bye`,
			}}},
		},
		{
			name:    "comma inside quotes",
			headers: []string{`Bearer realm="https://r/t",scope="repository:a:pull,push"`},
			want:    []Challenge{{Scheme: "bearer", Params: map[string]string{"realm": "https://r/t", "scope": "repository:a:pull,push"}}},
		},
		{
			name:    "token68 then another challenge",
			headers: []string{`Negotiate a87421000492aa874209af8bc028==, Bearer realm="https://r/t"`},
			want: []Challenge{
				{Scheme: "negotiate", Params: map[string]string{}},
				{Scheme: "bearer", Params: map[string]string{"realm": "https://r/t"}},
			},
		},
		{
			name:    "token68 with slash and plus",
			headers: []string{`Basic YWxh/ZGRp+bjpvcGVuIHNlc2FtZQ`},
			want:    []Challenge{{Scheme: "basic", Params: map[string]string{}}},
		},
		{
			name:    "bare schemes and empty elements",
			headers: []string{` , Basic, ,Bearer realm="x" ,`},
			want: []Challenge{
				{Scheme: "basic", Params: map[string]string{}},
				{Scheme: "bearer", Params: map[string]string{"realm": "x"}},
			},
		},
		{
			name:    "whitespace around equals",
			headers: []string{"Bearer realm = \"x\" ,\tservice\t=\ty"},
			want:    []Challenge{{Scheme: "bearer", Params: map[string]string{"realm": "x", "service": "y"}}},
		},
		{
			name:    "missing comma between params",
			headers: []string{`Bearer realm="x" service="y"`},
			want:    []Challenge{{Scheme: "bearer", Params: map[string]string{"realm": "x", "service": "y"}}},
		},
		{
			name:    "duplicate parameter keeps the first",
			headers: []string{`Bearer realm="first", realm="second"`},
			want:    []Challenge{{Scheme: "bearer", Params: map[string]string{"realm": "first"}}},
		},
		{
			name:    "unterminated quote runs to the end",
			headers: []string{`Bearer realm="https://r/t, service=x`},
			want:    []Challenge{{Scheme: "bearer", Params: map[string]string{"realm": "https://r/t, service=x"}}},
		},
		{
			name:    "empty and garbage",
			headers: []string{"", "   ", "@@@ ,,, ===", `"quoted"`},
			want:    nil,
		},
		{
			name:    "garbage between parameters",
			headers: []string{`Bearer realm="x", @@ service="y"`},
			want:    []Challenge{{Scheme: "bearer", Params: map[string]string{"realm": "x", "service": "y"}}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ParseChallenges(tt.headers)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseChallenges(%q) mismatch (-want +got):\n%s", tt.headers, diff)
			}
		})
	}
}

// formatChallenges writes challenges in canonical form: every value quoted.
func formatChallenges(cs []Challenge) string {
	var parts []string
	for _, c := range cs {
		var params []string
		for k, v := range c.Params {
			v = strings.NewReplacer(`\`, `\\`, `"`, `\"`).Replace(v)
			params = append(params, k+`="`+v+`"`)
		}
		s := c.Scheme
		if len(params) > 0 {
			s += " " + strings.Join(params, ", ")
		}
		parts = append(parts, s)
	}
	return strings.Join(parts, ", ")
}

func FuzzParseChallenges(f *testing.F) {
	for _, s := range []string{
		`Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"`,
		`Basic realm="quay.io", Bearer realm="https://quay.io/v2/auth",service="quay.io"`,
		`Bearer realm=https://gcr.io/v2/token,service=gcr.io`,
		`Negotiate abc==, Basic`,
		`Bearer realm="a\"b\\c"`,
		`Bearer realm="unterminated`,
		`,,, = "x" @`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		got := ParseChallenges([]string{header})
		for _, c := range got {
			if c.Scheme == "" || c.Scheme != strings.ToLower(c.Scheme) {
				t.Fatalf("bad scheme %q", c.Scheme)
			}
			for i := 0; i < len(c.Scheme); i++ {
				if !isTchar(c.Scheme[i]) {
					t.Fatalf("scheme %q has non-token byte", c.Scheme)
				}
			}
			for k := range c.Params {
				if k == "" || k != strings.ToLower(k) {
					t.Fatalf("bad parameter name %q", k)
				}
			}
		}
		// The canonical form of what was understood must parse back to
		// the same thing.
		again := ParseChallenges([]string{formatChallenges(got)})
		if diff := cmp.Diff(got, again); diff != "" {
			t.Fatalf("round trip of %s (%q) changed (-first +second):\n%s", strconv.Quote(header), formatChallenges(got), diff)
		}
	})
}
