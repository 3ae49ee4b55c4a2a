package route_test

import (
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/wharf-mirror/wharf/internal/route"
)

// testUpstreams is a realistic configuration: Docker Hub with its usual
// aliases and a dotless alias, ghcr.io behind a virtual host with a port,
// registry.k8s.io with its legacy name, and two private registries that
// differ only by port.
func testUpstreams() []route.Upstream {
	return []route.Upstream{
		{
			Name:          "docker.io",
			Aliases:       []string{"index.docker.io", "registry-1.docker.io", "hub"},
			VirtualHosts:  []string{"hub.mirror.example"},
			LibraryPrefix: true,
		},
		{Name: "ghcr.io", VirtualHosts: []string{"ghcr.mirror.example:8443"}},
		{Name: "registry.k8s.io", Aliases: []string{"k8s.gcr.io"}},
		{Name: "myreg.io:5000"},
		{Name: "myreg.io"},
		{Name: "localhost:5001"},
	}
}

func newTestTable(t testing.TB, def string) *route.Table {
	t.Helper()
	tbl, err := route.NewTable(def, testUpstreams())
	if err != nil {
		t.Fatalf("NewTable: %v", err)
	}
	return tbl
}

// TestRoute follows a request from its raw URL the way the HTTP layer does:
// EscapedPath → ParsePath, Query().Get("ns") → Match. The cases are the
// routing lines of client-compat §8 and the request shapes of §0 and
// Appendix A.
func TestRoute(t *testing.T) {
	for _, tc := range []struct {
		name    string
		url     string
		host    string // Host header; "mirror.example" if empty
		want    route.Target
		wantErr error
	}{
		// Docker graphdriver, crane: no ns → default upstream.
		{name: "default docker hub", url: "/v2/library/nginx/manifests/latest",
			want: route.Target{Upstream: "docker.io", Repo: "library/nginx"}},
		{name: "library prefix added", url: "/v2/nginx/manifests/latest",
			want: route.Target{Upstream: "docker.io", Repo: "library/nginx"}},
		{name: "user repo as-is", url: "/v2/someuser/app/blobs/" + dSHA256,
			want: route.Target{Upstream: "docker.io", Repo: "someuser/app"}},

		// containerd / Docker ≥29 ns parameter.
		{name: "ns docker.io", url: "/v2/library/nginx/manifests/latest?ns=docker.io",
			want: route.Target{Upstream: "docker.io", Repo: "library/nginx"}},
		{name: "ns ghcr", url: "/v2/foo/bar/manifests/1?ns=ghcr.io",
			want: route.Target{Upstream: "ghcr.io", Repo: "foo/bar"}},
		{name: "ns with encoded port", url: "/v2/foo/bar/blobs/" + dSHA256 + "?ns=myreg.io%3A5000",
			want: route.Target{Upstream: "myreg.io:5000", Repo: "foo/bar"}},
		{name: "ns without port is another registry", url: "/v2/foo/bar/blobs/" + dSHA256 + "?ns=myreg.io",
			want: route.Target{Upstream: "myreg.io", Repo: "foo/bar"}},
		{name: "ns upper case", url: "/v2/foo/bar/manifests/1?ns=GHCR.IO",
			want: route.Target{Upstream: "ghcr.io", Repo: "foo/bar"}},
		{name: "ns alias", url: "/v2/pause/manifests/3.9?ns=k8s.gcr.io",
			want: route.Target{Upstream: "registry.k8s.io", Repo: "pause"}},
		{name: "ns wins over host component", url: "/v2/docker.io/library/nginx/manifests/x?ns=myreg.io",
			want: route.Target{Upstream: "myreg.io", Repo: "docker.io/library/nginx"}},
		{name: "ns with referrers filter", url: "/v2/foo/bar/referrers/" + dSHA256 + "?artifactType=application%2Fx&ns=ghcr.io",
			want: route.Target{Upstream: "ghcr.io", Repo: "foo/bar"}},
		{name: "ns with containerd host path prefix", url: "/prefix/v2/foo/hello/manifests/latest?ns=ghcr.io",
			want: route.Target{Upstream: "ghcr.io", Repo: "foo/hello"}},
		{name: "ns unknown", url: "/v2/foo/bar/manifests/1?ns=evil.example",
			wantErr: route.ErrUnknownRegistry},
		{name: "ns unknown port", url: "/v2/foo/bar/manifests/1?ns=ghcr.io%3A443",
			wantErr: route.ErrUnknownRegistry},

		// containerd override_path: /v2/<ns>/<repo>?ns=<ns>.
		{name: "override_path ghcr", url: "/v2/ghcr.io/foo/bar/manifests/1?ns=ghcr.io",
			want: route.Target{Upstream: "ghcr.io", Repo: "foo/bar"}},
		{name: "override_path alias in path", url: "/v2/registry-1.docker.io/library/nginx/manifests/latest?ns=docker.io",
			want: route.Target{Upstream: "docker.io", Repo: "library/nginx"}},
		{name: "override_path upper case", url: "/v2/GHCR.io/foo/bar/manifests/1?ns=ghcr.io",
			want: route.Target{Upstream: "ghcr.io", Repo: "foo/bar"}},
		{name: "ns with port strips same host:port", url: "/v2/myreg.io:5000/foo/manifests/1?ns=myreg.io%3A5000",
			want: route.Target{Upstream: "myreg.io:5000", Repo: "foo"}},
		{name: "ns does not strip other port", url: "/v2/myreg.io/foo/manifests/1?ns=myreg.io%3A5000",
			want: route.Target{Upstream: "myreg.io:5000", Repo: "myreg.io/foo"}},
		{name: "ns dotless alias stripped only when equal to ns", url: "/v2/hub/foo/manifests/1?ns=hub",
			want: route.Target{Upstream: "docker.io", Repo: "library/foo"}},
		{name: "ns keeps docker hub namespace equal to dotless alias", url: "/v2/hub/foo/manifests/1?ns=docker.io",
			want: route.Target{Upstream: "docker.io", Repo: "hub/foo"}},
		{name: "ns repo named like the registry", url: "/v2/ghcr.io/manifests/1?ns=ghcr.io",
			want: route.Target{Upstream: "ghcr.io", Repo: "ghcr.io"}},

		// Podman/CRI-O/skopeo mirror locations and crane: host component.
		{name: "podman docker.io", url: "/v2/docker.io/library/nginx/manifests/latest",
			want: route.Target{Upstream: "docker.io", Repo: "library/nginx"}},
		{name: "podman docker.io short name", url: "/v2/docker.io/nginx/manifests/latest",
			want: route.Target{Upstream: "docker.io", Repo: "library/nginx"}},
		{name: "crane ghcr", url: "/v2/ghcr.io/foo/bar/manifests/1",
			want: route.Target{Upstream: "ghcr.io", Repo: "foo/bar"}},
		{name: "crane ghcr blob", url: "/v2/ghcr.io/foo/bar/blobs/" + dSHA256,
			want: route.Target{Upstream: "ghcr.io", Repo: "foo/bar"}},
		{name: "legacy k8s.gcr.io", url: "/v2/k8s.gcr.io/pause/manifests/3.9",
			want: route.Target{Upstream: "registry.k8s.io", Repo: "pause"}},
		{name: "index.docker.io alias", url: "/v2/index.docker.io/library/nginx/tags/list",
			want: route.Target{Upstream: "docker.io", Repo: "library/nginx"}},
		{name: "host component with port", url: "/v2/myreg.io:5000/team/app/manifests/1",
			want: route.Target{Upstream: "myreg.io:5000", Repo: "team/app"}},
		{name: "localhost with port", url: "/v2/localhost:5001/app/manifests/1",
			want: route.Target{Upstream: "localhost:5001", Repo: "app"}},
		{name: "uppercase host component", url: "/v2/Docker.IO/library/nginx/manifests/latest",
			want: route.Target{Upstream: "docker.io", Repo: "library/nginx"}},
		{name: "dotless alias is a docker hub namespace", url: "/v2/hub/foo/manifests/1",
			want: route.Target{Upstream: "docker.io", Repo: "hub/foo"}},
		{name: "single host-like component is a repo", url: "/v2/docker.io/manifests/latest",
			want: route.Target{Upstream: "docker.io", Repo: "library/docker.io"}},
		{name: "unknown host in path", url: "/v2/evil.example/foo/manifests/1",
			wantErr: route.ErrUnknownRegistry},
		{name: "unknown port in path", url: "/v2/ghcr.io:444/foo/manifests/1",
			wantErr: route.ErrUnknownRegistry},
		{name: "unconfigured localhost", url: "/v2/localhost/foo/manifests/1",
			wantErr: route.ErrUnknownRegistry},

		// Path prefix mode: "/<prefix>/v2/...".
		{name: "prefix docker.io", url: "/docker.io/v2/library/nginx/manifests/latest",
			want: route.Target{Upstream: "docker.io", Repo: "library/nginx"}},
		{name: "prefix short name", url: "/docker.io/v2/nginx/manifests/latest",
			want: route.Target{Upstream: "docker.io", Repo: "library/nginx"}},
		{name: "prefix dotless alias", url: "/hub/v2/nginx/manifests/latest",
			want: route.Target{Upstream: "docker.io", Repo: "library/nginx"}},
		{name: "prefix upper case", url: "/GHCR.IO/v2/foo/bar/manifests/1",
			want: route.Target{Upstream: "ghcr.io", Repo: "foo/bar"}},
		{name: "prefix and host component", url: "/ghcr.io/v2/ghcr.io/foo/bar/manifests/1",
			want: route.Target{Upstream: "ghcr.io", Repo: "foo/bar"}},
		{name: "prefix keeps other host component", url: "/myreg.io/v2/docker.io/library/nginx/manifests/1",
			want: route.Target{Upstream: "myreg.io", Repo: "docker.io/library/nginx"}},
		{name: "prefix unknown", url: "/evil.example/v2/foo/manifests/1",
			wantErr: route.ErrUnknownRegistry},

		// Virtual hosts and the Host header.
		{name: "vhost with port", url: "/v2/foo/bar/manifests/1", host: "ghcr.mirror.example:8443",
			want: route.Target{Upstream: "ghcr.io", Repo: "foo/bar"}},
		{name: "vhost with port, other port", url: "/v2/foo/bar/manifests/1", host: "ghcr.mirror.example:9000",
			want: route.Target{Upstream: "docker.io", Repo: "foo/bar"}},
		{name: "vhost without port, any port", url: "/v2/nginx/manifests/1", host: "hub.mirror.example:5000",
			want: route.Target{Upstream: "docker.io", Repo: "library/nginx"}},
		{name: "vhost upper case", url: "/v2/foo/bar/manifests/1", host: "GHCR.Mirror.Example:8443",
			want: route.Target{Upstream: "ghcr.io", Repo: "foo/bar"}},
		{name: "host equals upstream name", url: "/v2/foo/bar/manifests/1", host: "ghcr.io",
			want: route.Target{Upstream: "ghcr.io", Repo: "foo/bar"}},
		{name: "host equals upstream name with port", url: "/v2/foo/bar/manifests/1", host: "ghcr.io:443",
			want: route.Target{Upstream: "ghcr.io", Repo: "foo/bar"}},
		{name: "host equals alias, fqdn", url: "/v2/pause/manifests/1", host: "k8s.gcr.io.",
			want: route.Target{Upstream: "registry.k8s.io", Repo: "pause"}},
		{name: "host component beats vhost", url: "/v2/docker.io/library/nginx/manifests/1", host: "ghcr.mirror.example:8443",
			want: route.Target{Upstream: "docker.io", Repo: "library/nginx"}},
		{name: "vhost keeps unknown host component", url: "/v2/unknown.io/foo/manifests/1", host: "ghcr.mirror.example:8443",
			want: route.Target{Upstream: "ghcr.io", Repo: "unknown.io/foo"}},
		{name: "ns beats vhost", url: "/v2/foo/bar/manifests/1?ns=myreg.io", host: "ghcr.mirror.example:8443",
			want: route.Target{Upstream: "myreg.io", Repo: "foo/bar"}},
		{name: "ipv6 host header", url: "/v2/foo/bar/manifests/1", host: "[::1]:5000",
			want: route.Target{Upstream: "docker.io", Repo: "foo/bar"}},

		// Never an open proxy, never a traversal.
		{name: "traversal", url: "/v2/docker.io/../../etc/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "encoded traversal", url: "/v2/docker.io/%2e%2e/etc/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "encoded slash", url: "/v2/library%2Fnginx/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "encoded host", url: "/v2/evil.example%2Ffoo/bar/manifests/x", wantErr: route.ErrNameInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := url.Parse(tc.url)
			if err != nil {
				t.Fatal(err)
			}
			p, err := route.ParsePath(u.EscapedPath())
			if err != nil {
				if tc.wantErr == nil || !errors.Is(err, tc.wantErr) {
					t.Fatalf("ParsePath(%q) error = %v, want %v", u.EscapedPath(), err, tc.wantErr)
				}
				return
			}
			host := tc.host
			if host == "" {
				host = "mirror.example"
			}
			got, err := newTestTable(t, "docker.io").Match(host, u.Query().Get("ns"), p.Prefix, p.Name)
			if !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Fatalf("Match error = %v, want %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("Match mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestMatch(t *testing.T) {
	withDefault := newTestTable(t, "docker.io")
	noDefault := newTestTable(t, "")
	ghcrDefault := newTestTable(t, "GHCR.io")
	for _, tc := range []struct {
		name                   string
		tbl                    *route.Table
		host, ns, prefix, repo string
		want                   route.Target
		wantErr                error
	}{
		{name: "no default", tbl: noDefault, repo: "library/nginx", wantErr: route.ErrUnknownRegistry},
		{name: "no default, ns", tbl: noDefault, ns: "docker.io", repo: "library/nginx",
			want: route.Target{Upstream: "docker.io", Repo: "library/nginx"}},
		{name: "no default, host component", tbl: noDefault, repo: "ghcr.io/foo/bar",
			want: route.Target{Upstream: "ghcr.io", Repo: "foo/bar"}},
		{name: "no default, vhost", tbl: noDefault, host: "hub.mirror.example", repo: "nginx",
			want: route.Target{Upstream: "docker.io", Repo: "library/nginx"}},
		{name: "default by name, no library prefix", tbl: ghcrDefault, repo: "nginx",
			want: route.Target{Upstream: "ghcr.io", Repo: "nginx"}},
		{name: "empty name", tbl: withDefault, repo: "", wantErr: route.ErrNameInvalid},
		{name: "empty after strip", tbl: withDefault, repo: "ghcr.io/", wantErr: route.ErrNameInvalid},
		{name: "empty after ns strip", tbl: withDefault, ns: "ghcr.io", repo: "ghcr.io/", wantErr: route.ErrNameInvalid},
		{name: "empty after prefix strip", tbl: withDefault, prefix: "ghcr.io", repo: "ghcr.io/", wantErr: route.ErrNameInvalid},
		{name: "library prefix only for one component", tbl: withDefault, ns: "docker.io", repo: "a/b/c",
			want: route.Target{Upstream: "docker.io", Repo: "a/b/c"}},
		{name: "ns compared in ASCII only", tbl: withDefault, ns: "\u212a8s.gcr.io", repo: "pause",
			wantErr: route.ErrUnknownRegistry},
		{name: "host component compared in ASCII only", tbl: noDefault, repo: "\u212a8s.gcr.io/pause",
			wantErr: route.ErrUnknownRegistry},
		{name: "ns beats prefix", tbl: withDefault, ns: "ghcr.io", prefix: "docker.io", repo: "foo",
			want: route.Target{Upstream: "ghcr.io", Repo: "foo"}},
		{name: "prefix beats host component", tbl: withDefault, prefix: "myreg.io", repo: "ghcr.io/foo",
			want: route.Target{Upstream: "myreg.io", Repo: "ghcr.io/foo"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := tc.tbl.Match(tc.host, tc.ns, tc.prefix, tc.repo)
			if !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Fatalf("Match error = %v, want %v", err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("Match mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLookup(t *testing.T) {
	tbl := newTestTable(t, "docker.io")
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{in: "docker.io", want: "docker.io", ok: true},
		{in: "Registry-1.Docker.IO", want: "docker.io", ok: true},
		{in: "hub", want: "docker.io", ok: true},
		{in: "k8s.gcr.io", want: "registry.k8s.io", ok: true},
		{in: "myreg.io:5000", want: "myreg.io:5000", ok: true},
		{in: "hub.mirror.example"}, // a virtual host is not a registry name
		{in: "myreg.io:5001"},
		{in: ""},
	} {
		got, ok := tbl.Lookup(tc.in)
		if got != tc.want || ok != tc.ok {
			t.Errorf("Lookup(%q) = %q, %v; want %q, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}

func TestNewTable(t *testing.T) {
	for _, tc := range []struct {
		name     string
		def      string
		ups      []route.Upstream
		wantErrs int // number of problems reported; 0 = valid
	}{
		{name: "empty", ups: nil},
		{name: "canonical name kept as configured", def: "docker.io", ups: []route.Upstream{{Name: "Docker.IO"}}},
		{name: "vhost equal to own name", ups: []route.Upstream{{Name: "ghcr.io", VirtualHosts: []string{"GHCR.io"}}}},
		{name: "same host, different ports", ups: []route.Upstream{{Name: "r.io"}, {Name: "r.io:5000"}, {Name: "r.io:5001"}}},
		{name: "default unknown", def: "quay.io", ups: testUpstreams(), wantErrs: 1},
		{name: "default is a vhost", def: "hub.mirror.example", ups: testUpstreams(), wantErrs: 1},
		{name: "empty name", ups: []route.Upstream{{Name: ""}}, wantErrs: 1},
		{name: "url as name", ups: []route.Upstream{{Name: "https://ghcr.io"}}, wantErrs: 1},
		{name: "path in name", ups: []route.Upstream{{Name: "ghcr.io/foo"}}, wantErrs: 1},
		{name: "bad alias", ups: []route.Upstream{{Name: "ghcr.io", Aliases: []string{"a..b"}}}, wantErrs: 1},
		{name: "bad vhost", ups: []route.Upstream{{Name: "ghcr.io", VirtualHosts: []string{"m:x"}}}, wantErrs: 1},
		{name: "duplicate name", ups: []route.Upstream{{Name: "ghcr.io"}, {Name: "GHCR.IO"}}, wantErrs: 1},
		{name: "alias equals other name", ups: []route.Upstream{{Name: "ghcr.io"}, {Name: "x.io", Aliases: []string{"ghcr.io"}}}, wantErrs: 1},
		{name: "alias repeated", ups: []route.Upstream{{Name: "ghcr.io", Aliases: []string{"a.io", "a.io"}}}, wantErrs: 1},
		{name: "alias equals own name", ups: []route.Upstream{{Name: "ghcr.io", Aliases: []string{"ghcr.io"}}}, wantErrs: 1},
		{name: "duplicate vhost", ups: []route.Upstream{
			{Name: "a.io", VirtualHosts: []string{"m.example"}},
			{Name: "b.io", VirtualHosts: []string{"M.example"}},
		}, wantErrs: 1},
		{name: "vhost equals other upstream", ups: []route.Upstream{{Name: "a.io"}, {Name: "b.io", VirtualHosts: []string{"a.io"}}}, wantErrs: 1},
		{name: "all problems reported", def: "nope.io", ups: []route.Upstream{
			{Name: ""}, {Name: "a.io"}, {Name: "a.io"}, {Name: "b.io", VirtualHosts: []string{"a.io"}},
		}, wantErrs: 4},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tbl, err := route.NewTable(tc.def, tc.ups)
			if tc.wantErrs == 0 {
				if err != nil || tbl == nil {
					t.Fatalf("NewTable() = %v, %v; want a table", tbl, err)
				}
				return
			}
			if tbl != nil || !errors.Is(err, route.ErrInvalidTable) {
				t.Fatalf("NewTable() = %v, %v; want ErrInvalidTable", tbl, err)
			}
			var joined interface{ Unwrap() []error }
			if !errors.As(err, &joined) || len(joined.Unwrap()) != tc.wantErrs {
				t.Fatalf("NewTable() error %q; want %d problems", err, tc.wantErrs)
			}
		})
	}
}

func TestNewTableCopiesInput(t *testing.T) {
	ups := []route.Upstream{{Name: "ghcr.io", Aliases: []string{"g.io"}}}
	tbl, err := route.NewTable("ghcr.io", ups)
	if err != nil {
		t.Fatal(err)
	}
	ups[0].Name = "changed.io"
	ups[0].Aliases[0] = "changed2.io"
	got, err := tbl.Match("", "g.io", "", "foo")
	if want := (route.Target{Upstream: "ghcr.io", Repo: "foo"}); err != nil || got != want {
		t.Fatalf("Match after mutating the input = %+v, %v; want %+v", got, err, want)
	}
}

func FuzzMatch(f *testing.F) {
	tbl := newTestTable(f, "docker.io")
	f.Add("mirror.example", "", "", "library/nginx")
	f.Add("mirror.example", "myreg.io:5000", "", "foo/bar")
	f.Add("", "ghcr.io", "", "ghcr.io/foo/bar")
	f.Add("", "", "docker.io", "docker.io/nginx")
	f.Add("ghcr.mirror.example:8443", "", "", "unknown.io/foo")
	f.Add("[::1]:80", "", "", "localhost/x")
	f.Add("hub.mirror.example.", "", "", "ghcr.io/")
	f.Add("x", "hub", "", "hub/")
	f.Fuzz(func(t *testing.T, host, ns, prefix, name string) {
		got, err := tbl.Match(host, ns, prefix, name)
		if err != nil {
			if got != (route.Target{}) {
				t.Fatalf("Match = %+v with error %v; want zero Target", got, err)
			}
			if !errors.Is(err, route.ErrUnknownRegistry) && !errors.Is(err, route.ErrNameInvalid) {
				t.Fatalf("Match error %v is neither ErrUnknownRegistry nor ErrNameInvalid", err)
			}
			return
		}
		if canon, ok := tbl.Lookup(got.Upstream); !ok || canon != got.Upstream {
			t.Fatalf("Match upstream %q is not a canonical configured name", got.Upstream)
		}
		// The repository is the name, or a suffix of it after a stripped
		// first component, possibly with Docker Hub's library/ prefix.
		repo := strings.TrimPrefix(got.Repo, "library/")
		if got.Repo == "" || (!strings.HasSuffix(name, repo)) {
			t.Fatalf("Match(%q) repo %q is not derived from the name", name, got.Repo)
		}
		// Registry names compare case-insensitively, in ASCII only.
		again, err := tbl.Match(upperASCII(host), upperASCII(ns), upperASCII(prefix), name)
		if err != nil || again != got {
			t.Fatalf("Match with upper-cased host, ns, prefix = %+v, %v; want %+v", again, err, got)
		}
	})
}

func upperASCII(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'a' <= c && c <= 'z' {
			b[i] = c - ('a' - 'A')
		}
	}
	return string(b)
}
