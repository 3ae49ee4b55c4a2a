package ociapi

import (
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
)

// The header parsers of the read path that take input from a client
// (Accept, If-None-Match) or from an upstream (Link) are fuzzed for their
// invariants; Range has its own target (FuzzParseRange).

// FuzzAccepts: one comma-joined Accept line means the same as one line per
// media range (client-compat §1.7); no Accept accepts everything; "*/*"
// accepts everything; a type accepted by name, or refused with q=0, is
// treated so.
func FuzzAccepts(f *testing.F) {
	const index = "application/vnd.oci.image.index.v1+json"
	for _, s := range []string{
		"", "*/*", index, index + ";q=0", "application/*", "application/*;q=0.5, " + index + ";q=0",
		"application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.manifest.v1+json",
		" , ;q=0,", "text/html; q = 0 ; x=y",
	} {
		f.Add(s, index)
	}
	f.Fuzz(func(t *testing.T, line, mediaType string) {
		got := accepts([]string{line}, mediaType)
		if split := accepts(strings.Split(line, ","), mediaType); split != got {
			t.Fatalf("accepts(%q) = %v, but one line per range = %v", line, got, split)
		}
		if !accepts(nil, mediaType) {
			t.Fatal("no Accept header must accept everything")
		}
		if !accepts([]string{line, "*/*"}, mediaType) {
			t.Fatalf("accepts(%q, */*) refuses %q", line, mediaType)
		}
		// Media types as registries send them: lower case, one token.
		if mediaType == "" || mediaType != strings.ToLower(strings.TrimSpace(mediaType)) || strings.ContainsAny(mediaType, ",;") {
			return
		}
		if !accepts([]string{mediaType}, mediaType) {
			t.Fatalf("Accept: %s refuses itself", mediaType)
		}
		if accepts([]string{mediaType + ";q=0"}, mediaType) {
			t.Fatalf("Accept: %s;q=0 accepts it", mediaType)
		}
	})
}

// FuzzETagMatch: If-None-Match matches the digest's entity tag, strong or
// weak, anywhere in a list, and "*"; it never matches a header that names
// neither the digest nor "*".
func FuzzETagMatch(f *testing.F) {
	for _, s := range []string{"", "*", `"sha256:abc"`, `W/"x", "y"`, `,,,`, `""`} {
		f.Add(s, []byte("content"))
	}
	f.Fuzz(func(t *testing.T, header string, content []byte) {
		d := digest.FromBytes(content)
		got := etagMatch(header, d)
		if got && !strings.Contains(header, d.String()) && !strings.Contains(header, "*") {
			t.Fatalf("If-None-Match %q matches %s", header, d)
		}
		for _, h := range []string{`"` + d.String() + `"`, `W/"` + d.String() + `"`, header + `, "` + d.String() + `"`, "*"} {
			if !etagMatch(h, d) {
				t.Fatalf("If-None-Match %q does not match %s", h, d)
			}
		}
	})
}

// FuzzRewriteLink: a Link from upstream that rewriteLink changes points at
// the client's own path on this mirror, with no scheme or host, carries the
// client's ns, keeps everything outside the angle brackets, and is not
// changed again by a second rewrite.
func FuzzRewriteLink(f *testing.F) {
	for _, s := range []string{
		`</v2/app/tags/list?n=2&last=b>; rel="next"`,
		`<https://registry.example/v2/app/tags/list?last=b&n=2>; rel="next"`,
		`<http://169.254.169.254/v2/x?n=1>; rel="next"`,
		`<//evil.example/v2/x?n=1>`,
		`<%zz>`, `><`, `<>`, `<?ns=evil&n=1>; rel="next"`,
	} {
		f.Add(s, "docker.io")
	}
	f.Fuzz(func(t *testing.T, link, ns string) {
		r := &http.Request{URL: &url.URL{Path: "/v2/library/app/tags/list"}}
		if ns != "" {
			r.URL.RawQuery = "ns=" + url.QueryEscape(ns)
		}
		out, ok := nextLink([]string{link}, r)
		if !ok {
			return
		}
		// Exactly one link, rel="next", on the client's own path.
		if !strings.HasPrefix(out, "<") || !strings.HasSuffix(out, `>; rel="next"`) {
			t.Fatalf("nextLink(%q) = %q: not one next link", link, out)
		}
		u, err := url.Parse(strings.TrimSuffix(strings.TrimPrefix(out, "<"), `>; rel="next"`))
		if err != nil {
			t.Fatalf("nextLink(%q) = %q: %v", link, out, err)
		}
		if u.Scheme != "" || u.Host != "" || u.User != nil || u.EscapedPath() != r.URL.EscapedPath() {
			t.Fatalf("nextLink(%q) = %q: not the client's path %s", link, out, r.URL.EscapedPath())
		}
		if got := u.Query().Get("ns"); got != ns {
			t.Fatalf("nextLink(%q) = %q: ns %q, want %q", link, out, got, ns)
		}
		if again, ok := nextLink([]string{out}, r); !ok || again != out {
			t.Fatalf("nextLink(%q) = %q, rewritten again = %q", link, out, again)
		}
	})
}
