package route_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/wharf-mirror/wharf/internal/route"
)

const (
	dSHA256 = "sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4"
	dSHA384 = "sha384:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
	dSHA512 = "sha512:" + "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef" +
		"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

type parseCase struct {
	name    string
	in      string
	want    route.Path
	wantErr error
}

func parseCases() []parseCase {
	long255 := strings.Repeat("a/", 127) + "a" // 255 bytes
	tag128 := strings.Repeat("t", 128)
	return []parseCase{
		// Version check (client-compat §8 Routing: /v2 and /v2/ never 404).
		{name: "base slash", in: "/v2/", want: route.Path{Kind: route.KindBase}},
		{name: "base no slash", in: "/v2", want: route.Path{Kind: route.KindBase}},
		{name: "base prefix", in: "/docker.io/v2/", want: route.Path{Prefix: "docker.io", Kind: route.KindBase}},
		{name: "base prefix no slash", in: "/docker.io/v2", want: route.Path{Prefix: "docker.io", Kind: route.KindBase}},
		{name: "base prefix kept as sent", in: "/Mirror/v2/", want: route.Path{Prefix: "Mirror", Kind: route.KindBase}},

		// Manifests.
		{name: "manifest tag", in: "/v2/library/nginx/manifests/latest",
			want: route.Path{Kind: route.KindManifest, Name: "library/nginx", Reference: "latest"}},
		{name: "manifest digest", in: "/v2/library/nginx/manifests/" + dSHA256,
			want: route.Path{Kind: route.KindManifest, Name: "library/nginx", Reference: dSHA256}},
		{name: "manifest sha384", in: "/v2/foo/manifests/" + dSHA384,
			want: route.Path{Kind: route.KindManifest, Name: "foo", Reference: dSHA384}},
		{name: "manifest sha512", in: "/v2/foo/manifests/" + dSHA512,
			want: route.Path{Kind: route.KindManifest, Name: "foo", Reference: dSHA512}},
		{name: "single component", in: "/v2/nginx/manifests/latest",
			want: route.Path{Kind: route.KindManifest, Name: "nginx", Reference: "latest"}},
		{name: "podman host component", in: "/v2/docker.io/library/nginx/manifests/latest",
			want: route.Path{Kind: route.KindManifest, Name: "docker.io/library/nginx", Reference: "latest"}},
		{name: "host component lower-cased", in: "/v2/Docker.IO/library/nginx/manifests/latest",
			want: route.Path{Kind: route.KindManifest, Name: "docker.io/library/nginx", Reference: "latest"}},
		{name: "host with port", in: "/v2/myreg.io:5000/foo/manifests/1",
			want: route.Path{Kind: route.KindManifest, Name: "myreg.io:5000/foo", Reference: "1"}},
		{name: "localhost port", in: "/v2/localhost:5000/foo/manifests/1",
			want: route.Path{Kind: route.KindManifest, Name: "localhost:5000/foo", Reference: "1"}},
		{name: "upper localhost", in: "/v2/LOCALHOST/foo/manifests/1",
			want: route.Path{Kind: route.KindManifest, Name: "localhost/foo", Reference: "1"}},
		{name: "prefix mode", in: "/docker.io/v2/library/nginx/manifests/latest",
			want: route.Path{Prefix: "docker.io", Kind: route.KindManifest, Name: "library/nginx", Reference: "latest"}},
		{name: "name v2 after root", in: "/v2/v2/manifests/latest",
			want: route.Path{Kind: route.KindManifest, Name: "v2", Reference: "latest"}},
		{name: "keyword names as components", in: "/v2/a/manifests/blobs/tags/manifests/latest",
			want: route.Path{Kind: route.KindManifest, Name: "a/manifests/blobs/tags", Reference: "latest"}},
		{name: "tag named list", in: "/v2/foo/tags/manifests/list",
			want: route.Path{Kind: route.KindManifest, Name: "foo/tags", Reference: "list"}},
		{name: "separators", in: "/v2/a.b_c__d-e---f/g0/manifests/x",
			want: route.Path{Kind: route.KindManifest, Name: "a.b_c__d-e---f/g0", Reference: "x"}},
		{name: "name 255", in: "/v2/" + long255 + "/manifests/x",
			want: route.Path{Kind: route.KindManifest, Name: long255, Reference: "x"}},
		{name: "tag 128", in: "/v2/foo/manifests/" + tag128,
			want: route.Path{Kind: route.KindManifest, Name: "foo", Reference: tag128}},
		{name: "tag charset", in: "/v2/foo/manifests/_V1.2-rc_3",
			want: route.Path{Kind: route.KindManifest, Name: "foo", Reference: "_V1.2-rc_3"}},
		{name: "cosign tag", in: "/v2/foo/manifests/sha256-a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4.sig",
			want: route.Path{Kind: route.KindManifest, Name: "foo", Reference: "sha256-a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4.sig"}},

		// Blobs, tags, referrers.
		{name: "blob", in: "/v2/foo/bar/blobs/" + dSHA256,
			want: route.Path{Kind: route.KindBlob, Name: "foo/bar", Reference: dSHA256}},
		{name: "blob prefix", in: "/ghcr.io/v2/foo/bar/blobs/" + dSHA256,
			want: route.Path{Prefix: "ghcr.io", Kind: route.KindBlob, Name: "foo/bar", Reference: dSHA256}},
		{name: "tags", in: "/v2/foo/bar/tags/list",
			want: route.Path{Kind: route.KindTags, Name: "foo/bar"}},
		{name: "tags of repo named manifests", in: "/v2/foo/manifests/tags/list",
			want: route.Path{Kind: route.KindTags, Name: "foo/manifests"}},
		{name: "referrers", in: "/v2/foo/referrers/" + dSHA256,
			want: route.Path{Kind: route.KindReferrers, Name: "foo", Reference: dSHA256}},

		// Not API paths.
		{name: "empty", in: "", wantErr: route.ErrNotFound},
		{name: "relative", in: "v2/", wantErr: route.ErrNotFound},
		{name: "root", in: "/", wantErr: route.ErrNotFound},
		{name: "other", in: "/foo", wantErr: route.ErrNotFound},
		{name: "v3", in: "/v3/", wantErr: route.ErrNotFound},
		{name: "v2x", in: "/v2x/", wantErr: route.ErrNotFound},
		{name: "upper V2", in: "/V2/", wantErr: route.ErrNotFound},
		{name: "two prefix segments", in: "/a/b/v2/", wantErr: route.ErrNotFound},
		{name: "dotdot prefix", in: "/../v2/", wantErr: route.ErrNotFound},
		{name: "encoded prefix", in: "/docker%2eio/v2/", wantErr: route.ErrNotFound},
		{name: "empty prefix", in: "//v2/", wantErr: route.ErrNotFound},
		{name: "v2 double slash", in: "/v2//", wantErr: route.ErrNotFound},
		{name: "name only", in: "/v2/foo", wantErr: route.ErrNotFound},
		{name: "no endpoint", in: "/v2/foo/bar", wantErr: route.ErrNotFound},
		{name: "tags not list", in: "/v2/foo/tags/lists", wantErr: route.ErrNotFound},
		{name: "tags list slash", in: "/v2/foo/tags/list/", wantErr: route.ErrNotFound},
		{name: "manifest trailing slash", in: "/v2/foo/manifests/latest/", wantErr: route.ErrNotFound},
		{name: "uploads without blobs", in: "/v2/foo/uploads/x", wantErr: route.ErrNotFound},
		{name: "encoded keyword", in: "/v2/foo/manifest%73/latest", wantErr: route.ErrNotFound},

		// Known endpoints wharf does not serve.
		{name: "catalog", in: "/v2/_catalog", wantErr: route.ErrUnsupported},
		{name: "catalog prefix", in: "/docker.io/v2/_catalog", wantErr: route.ErrUnsupported},
		{name: "upload start", in: "/v2/foo/blobs/uploads/", wantErr: route.ErrUnsupported},
		{name: "upload start no slash", in: "/v2/foo/blobs/uploads", wantErr: route.ErrUnsupported},
		{name: "upload session", in: "/v2/foo/bar/blobs/uploads/6d3c5a0e-1c1e-4a4b-9e1b-0123456789ab", wantErr: route.ErrUnsupported},

		// Invalid names: grammar, traversal, encoding.
		{name: "empty name", in: "/v2/manifests/latest", wantErr: route.ErrNameInvalid},
		{name: "empty name tags", in: "/v2/tags/list", wantErr: route.ErrNameInvalid},
		{name: "upper component", in: "/v2/Foo/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "upper dotless first", in: "/v2/Library/nginx/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "upper later component", in: "/v2/docker.io/Library/nginx/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "upper single host-like", in: "/v2/Docker.IO/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "dotdot first", in: "/v2/../foo/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "dotdot middle", in: "/v2/foo/../bar/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "dot middle", in: "/v2/foo/./bar/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "encoded dotdot", in: "/v2/%2e%2e/foo/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "encoded slash", in: "/v2/foo%2Fbar/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "encoded letter", in: "/v2/fo%6F/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "leading slash", in: "/v2//foo/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "double slash", in: "/v2/foo//bar/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "leading dash", in: "/v2/-foo/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "trailing dash", in: "/v2/foo-/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "mixed separator", in: "/v2/foo._bar/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "triple underscore", in: "/v2/foo___bar/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "double dot", in: "/v2/foo..bar/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "name 256", in: "/v2/" + long255 + "a/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "host bad port", in: "/v2/myreg.io:http/foo/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "host empty port", in: "/v2/myreg.io:/foo/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "host underscore port", in: "/v2/my_reg.io:5000/foo/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "host label dash", in: "/v2/-a.io:5000/foo/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "host trailing dot", in: "/v2/Docker.IO./foo/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "host only with port", in: "/v2/myreg.io:5000/manifests/x", wantErr: route.ErrNameInvalid},
		{name: "ipv6 host", in: "/v2/[::1]:5000/foo/manifests/x", wantErr: route.ErrNameInvalid},

		// Invalid tags and digests (client-compat §5.2).
		{name: "tag dash first", in: "/v2/foo/manifests/-x", wantErr: route.ErrTagInvalid},
		{name: "tag dot first", in: "/v2/foo/manifests/.x", wantErr: route.ErrTagInvalid},
		{name: "tag 129", in: "/v2/foo/manifests/" + tag128 + "t", wantErr: route.ErrTagInvalid},
		{name: "tag encoded", in: "/v2/foo/manifests/la%74est", wantErr: route.ErrTagInvalid},
		{name: "tag empty", in: "/v2/foo/manifests/", wantErr: route.ErrTagInvalid},
		{name: "encoded colon manifest", in: "/v2/foo/manifests/sha256%3A" + dSHA256[7:], wantErr: route.ErrTagInvalid},
		{name: "bad digest string", in: "/v2/foo/manifests/sha256:baddigeststring", wantErr: route.ErrDigestInvalid},
		{name: "short digest", in: "/v2/foo/manifests/sha256:abc", wantErr: route.ErrDigestInvalid},
		{name: "upper hex", in: "/v2/foo/manifests/" + strings.ToUpper(dSHA256), wantErr: route.ErrDigestInvalid},
		{name: "unknown algorithm", in: "/v2/foo/manifests/md5:d41d8cd98f00b204e9800998ecf8427e", wantErr: route.ErrDigestInvalid},
		{name: "empty algorithm", in: "/v2/foo/manifests/:abc", wantErr: route.ErrDigestInvalid},
		{name: "blob tag", in: "/v2/foo/blobs/latest", wantErr: route.ErrDigestInvalid},
		{name: "blob empty", in: "/v2/foo/blobs/", wantErr: route.ErrDigestInvalid},
		{name: "blob encoded colon", in: "/v2/foo/blobs/sha256%3A" + dSHA256[7:], wantErr: route.ErrDigestInvalid},
		{name: "referrers tag", in: "/v2/foo/referrers/latest", wantErr: route.ErrDigestInvalid},
	}
}

func TestParsePath(t *testing.T) {
	for _, tc := range parseCases() {
		t.Run(tc.name, func(t *testing.T) {
			got, err := route.ParsePath(tc.in)
			if !errors.Is(err, tc.wantErr) || (err != nil) != (tc.wantErr != nil) {
				t.Fatalf("ParsePath(%q) error = %v, want %v", tc.in, err, tc.wantErr)
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Fatalf("ParsePath(%q) mismatch (-want +got):\n%s", tc.in, diff)
			}
			if err != nil {
				return
			}
			again, err := route.ParsePath(got.String())
			if err != nil {
				t.Fatalf("ParsePath(%q) (re-rendered) error = %v", got.String(), err)
			}
			if diff := cmp.Diff(got, again); diff != "" {
				t.Fatalf("re-rendered %q mismatch (-first +second):\n%s", got.String(), diff)
			}
		})
	}
}

func TestPathDigest(t *testing.T) {
	for _, tc := range []struct {
		p      route.Path
		want   string
		wantOK bool
	}{
		{p: route.Path{Kind: route.KindManifest, Name: "foo", Reference: dSHA256}, want: dSHA256, wantOK: true},
		{p: route.Path{Kind: route.KindManifest, Name: "foo", Reference: "latest"}},
		{p: route.Path{Kind: route.KindTags, Name: "foo"}},
	} {
		d, ok := tc.p.Digest()
		if string(d) != tc.want || ok != tc.wantOK {
			t.Errorf("%+v.Digest() = %q, %v; want %q, %v", tc.p, d, ok, tc.want, tc.wantOK)
		}
	}
}

func TestKindString(t *testing.T) {
	want := map[route.Kind]string{
		route.KindBase: "base", route.KindManifest: "manifest", route.KindBlob: "blob",
		route.KindTags: "tags", route.KindReferrers: "referrers", 0: "Kind(0)",
	}
	for k, s := range want {
		if got := k.String(); got != s {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, s)
		}
	}
}

func FuzzParsePath(f *testing.F) {
	for _, tc := range parseCases() {
		f.Add(tc.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		p, err := route.ParsePath(in)
		if err != nil {
			if p != (route.Path{}) {
				t.Fatalf("ParsePath(%q) = %+v with error %v; want zero Path", in, p, err)
			}
			return
		}
		if p.Kind < route.KindBase || p.Kind > route.KindReferrers {
			t.Fatalf("ParsePath(%q) Kind = %d", in, p.Kind)
		}
		if (p.Kind == route.KindBase) != (p.Name == "") || len(p.Name) > 255 ||
			strings.ContainsAny(p.Name+p.Reference+p.Prefix, "%?#") {
			t.Fatalf("ParsePath(%q) = %+v breaks an invariant", in, p)
		}
		if _, isDigest := p.Digest(); (p.Kind == route.KindBlob || p.Kind == route.KindReferrers) && !isDigest {
			t.Fatalf("ParsePath(%q) = %+v: blob/referrers reference is not a digest", in, p)
		}
		again, err := route.ParsePath(p.String())
		if err != nil {
			t.Fatalf("ParsePath(%q) = %+v renders as %q which fails: %v", in, p, p.String(), err)
		}
		if again != p {
			t.Fatalf("ParsePath(%q) = %+v renders as %q which parses to %+v", in, p, p.String(), again)
		}
	})
}
