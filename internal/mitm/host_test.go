package mitm

import (
	"errors"
	"go/parser"
	"go/token"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParseAuthority(t *testing.T) {
	tests := []struct {
		in   string
		want authority
		ok   bool
	}{
		{"quay.io:443", authority{"quay.io", "443", kindName}, true},
		{"Quay.IO.:443", authority{"quay.io", "443", kindName}, true},
		{"registry-1.docker.io:443", authority{"registry-1.docker.io", "443", kindName}, true},
		{"_dmarc.example.com:8443", authority{"_dmarc.example.com", "8443", kindName}, true},
		{"x.io:65535", authority{"x.io", "65535", kindName}, true},
		{"localhost:443", authority{"localhost", "443", kindLocal}, true},
		{"LOCALHOST.:443", authority{"localhost", "443", kindLocal}, true},
		{"registry.localhost:443", authority{"registry.localhost", "443", kindLocal}, true},
		{"127.0.0.1:443", authority{"127.0.0.1", "443", kindIP}, true},
		{"[::1]:443", authority{"::1", "443", kindIP}, true},
		{"[2001:DB8::0001]:443", authority{"2001:db8::1", "443", kindIP}, true},
		{"[::ffff:127.0.0.1]:443", authority{"::ffff:127.0.0.1", "443", kindIP}, true},

		{"", authority{}, false},
		{"quay.io", authority{}, false},
		{"quay.io:", authority{}, false},
		{":443", authority{}, false},
		{"quay.io:0", authority{}, false},
		{"quay.io:0443", authority{}, false},
		{"quay.io:+443", authority{}, false},
		{"quay.io:65536", authority{}, false},
		{"quay.io:https", authority{}, false},
		{"quay.io:443:443", authority{}, false},
		{"::1:443", authority{}, false},
		{"[::1]", authority{}, false},
		{"[127.0.0.1]:443", authority{}, false},
		{"[fe80::1%25eth0]:443", authority{}, false},
		{"[quay.io]:443", authority{}, false},
		{"/v2/:443", authority{}, false},
		{"http://quay.io:443", authority{}, false},
		{"user@quay.io:443", authority{}, false},
		{"*.quay.io:443", authority{}, false},
		{"quay..io:443", authority{}, false},
		{"127.1:443", authority{}, false},
		{"0x7f000001:443", authority{}, false},
		{"0177.0.0.1:443", authority{}, false},
		{"quay.123:443", authority{}, false},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseAuthority(tt.in)
			if !tt.ok {
				if !errors.Is(err, errMalformedAuthority) {
					t.Errorf("parseAuthority(%q) = %+v, %v; want errMalformedAuthority", tt.in, got, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(authority{})); diff != "" {
				t.Errorf("parseAuthority(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func TestSplitHostHeader(t *testing.T) {
	type result struct {
		Host, Port string
		Kind       hostKind
		OK         bool
	}
	tests := []struct {
		in   string
		want result
	}{
		{"quay.io", result{"quay.io", "", kindName, true}},
		{"QUAY.io.:443", result{"quay.io", "443", kindName, true}},
		{"[::1]", result{"::1", "", kindIP, true}},
		{"[::1]:80", result{"::1", "80", kindIP, true}},
		{"127.0.0.1:5000", result{"127.0.0.1", "5000", kindIP, true}},
		{"localhost", result{"localhost", "", kindLocal, true}},
		{"", result{}},
		{"::1", result{}},
		{"quay.io:", result{}},
		{"quay.io:x", result{}},
		{"quay io", result{}},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			h, p, k, err := splitHostHeader(tt.in)
			got := result{h, p, k, err == nil}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("splitHostHeader(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

// FuzzParseAuthority checks that whatever a client sends as a CONNECT
// target either fails with errMalformedAuthority or yields a normalised
// target that parses back to itself and is classified consistently.
func FuzzParseAuthority(f *testing.F) {
	for _, s := range []string{
		"quay.io:443", "Quay.IO.:443", "[::1]:443", "127.0.0.1:8443", "localhost:443",
		"a.localhost:1", "quay.io", "[fe80::1%25eth0]:443", "0x7f.1:443", "::1:443", "x:99999",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, err := parseAuthority(s)
		if err != nil {
			if !errors.Is(err, errMalformedAuthority) {
				t.Fatalf("parseAuthority(%q): error %v is not errMalformedAuthority", s, err)
			}
			return
		}
		if a.host == "" || a.host != strings.ToLower(a.host) || strings.HasSuffix(a.host, ".") {
			t.Fatalf("parseAuthority(%q): host %q not normalised", s, a.host)
		}
		if n, err := strconv.Atoi(a.port); err != nil || n < 1 || n > 65535 || strconv.Itoa(n) != a.port {
			t.Fatalf("parseAuthority(%q): port %q", s, a.port)
		}
		addr, ipErr := netip.ParseAddr(a.host)
		switch a.kind {
		case kindIP:
			if ipErr != nil || addr.Zone() != "" || addr.String() != a.host {
				t.Fatalf("parseAuthority(%q): IP host %q not canonical", s, a.host)
			}
		case kindLocal:
			if a.host != "localhost" && !strings.HasSuffix(a.host, ".localhost") {
				t.Fatalf("parseAuthority(%q): %q classified as localhost", s, a.host)
			}
		case kindName:
			if ipErr == nil || a.host == "localhost" || strings.HasSuffix(a.host, ".localhost") {
				t.Fatalf("parseAuthority(%q): %q classified as a name", s, a.host)
			}
		}
		again, err := parseAuthority(a.hostport())
		if err != nil || again != a {
			t.Fatalf("parseAuthority(%q) = %+v, but its hostport %q parses to %+v, %v", s, a, a.hostport(), again, err)
		}
	})
}

// TestImports keeps the package on the standard library (the CA and the
// proxy are security-critical; no dependency should grow under them). Test
// files are exempt.
func TestImports(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		src, err := os.ReadFile(name)
		if err != nil {
			t.Fatal(err)
		}
		f, err := parser.ParseFile(fset, name, src, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, imp := range f.Imports {
			path, err := strconv.Unquote(imp.Path.Value)
			if err != nil {
				t.Fatal(err)
			}
			if first, _, _ := strings.Cut(path, "/"); strings.Contains(first, ".") {
				t.Errorf("%s imports %q; mitm uses the standard library only", name, path)
			}
		}
	}
}
