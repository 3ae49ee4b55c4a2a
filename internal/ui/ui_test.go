package ui

import (
	"go/parser"
	"go/token"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/go-cmp/cmp"
)

// get sends one request to h and returns the answer.
func get(t *testing.T, h http.Handler, method, target string, header ...string) *http.Response {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	return rec.Result()
}

func body(t *testing.T, resp *http.Response) string {
	t.Helper()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func testHandler(t *testing.T) *handler {
	t.Helper()
	h, err := newHandler(static)
	if err != nil {
		t.Fatal(err)
	}
	return h
}

func TestHandler(t *testing.T) {
	h := testHandler(t)
	jsV, cssV := h.assets["app.js"].version, h.assets["style.css"].version
	tests := []struct {
		name         string
		method       string
		target       string
		status       int
		contentType  string
		cacheControl string
		bodyHas      string // "" : not checked
		emptyBody    bool
	}{
		{name: "index", method: "GET", target: "/", status: 200, contentType: "text/html; charset=utf-8", cacheControl: "no-cache",
			bodyHas: `<script src="/ui/app.js?v=` + jsV + `" defer></script>`},
		{name: "index links the stylesheet by version", method: "GET", target: "/", status: 200, contentType: "text/html; charset=utf-8", cacheControl: "no-cache",
			bodyHas: `<link rel="stylesheet" href="/ui/style.css?v=` + cssV + `">`},
		{name: "index HEAD", method: "HEAD", target: "/", status: 200, contentType: "text/html; charset=utf-8", cacheControl: "no-cache", emptyBody: true},
		{name: "script", method: "GET", target: "/ui/app.js", status: 200, contentType: "text/javascript; charset=utf-8", cacheControl: "no-cache", bodyHas: "'use strict';"},
		{name: "script by version", method: "GET", target: "/ui/app.js?v=" + jsV, status: 200, contentType: "text/javascript; charset=utf-8", cacheControl: "public, max-age=31536000, immutable"},
		{name: "script by an old version", method: "GET", target: "/ui/app.js?v=0000000000000000", status: 200, contentType: "text/javascript; charset=utf-8", cacheControl: "no-cache"},
		{name: "stylesheet", method: "GET", target: "/ui/style.css", status: 200, contentType: "text/css; charset=utf-8", cacheControl: "no-cache", bodyHas: ":root"},
		{name: "stylesheet HEAD", method: "HEAD", target: "/ui/style.css?v=" + cssV, status: 200, contentType: "text/css; charset=utf-8", cacheControl: "public, max-age=31536000, immutable", emptyBody: true},
		{name: "unknown asset", method: "GET", target: "/ui/nope.js", status: 404},
		{name: "index is not an asset", method: "GET", target: "/ui/index.html", status: 404},
		{name: "asset directory", method: "GET", target: "/ui/", status: 404},
		{name: "nested asset path", method: "GET", target: "/ui/static/app.js", status: 404},
		{name: "index by file name", method: "GET", target: "/index.html", status: 404},
		{name: "favicon", method: "GET", target: "/favicon.ico", status: 404},
		{name: "admin API is not ours", method: "GET", target: "/api/v1/stats", status: 404},
		{name: "POST to the page", method: "POST", target: "/", status: 405},
		{name: "DELETE an asset", method: "DELETE", target: "/ui/app.js", status: 405},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp := get(t, h, tt.method, tt.target)
			b := body(t, resp)
			if resp.StatusCode != tt.status {
				t.Fatalf("%s %s: status %d, want %d; body %q", tt.method, tt.target, resp.StatusCode, tt.status, b)
			}
			// Security headers on every answer, errors included.
			for k, want := range map[string]string{
				"Content-Security-Policy": contentSecurityPolicy,
				"X-Content-Type-Options":  "nosniff",
				"X-Frame-Options":         "DENY",
				"Referrer-Policy":         "no-referrer",
			} {
				if got := resp.Header.Get(k); got != want {
					t.Errorf("%s: %q, want %q", k, got, want)
				}
			}
			if tt.status != http.StatusOK {
				return
			}
			if got := resp.Header.Get("Content-Type"); got != tt.contentType {
				t.Errorf("Content-Type %q, want %q", got, tt.contentType)
			}
			if got := resp.Header.Get("Cache-Control"); got != tt.cacheControl {
				t.Errorf("Cache-Control %q, want %q", got, tt.cacheControl)
			}
			if resp.Header.Get("ETag") == "" {
				t.Error("no ETag")
			}
			if tt.emptyBody && b != "" {
				t.Errorf("HEAD answered a body of %d bytes", len(b))
			}
			if tt.bodyHas != "" && !strings.Contains(b, tt.bodyHas) {
				t.Errorf("body does not contain %q", tt.bodyHas)
			}
		})
	}
}

func TestContentSecurityPolicy(t *testing.T) {
	// The directives the UI's safety rests on: nothing but this origin
	// (which also forbids inline script), and no framing.
	for _, d := range []string{"default-src 'self'", "frame-ancestors 'none'"} {
		if !slices.Contains(strings.Split(contentSecurityPolicy, "; "), d) {
			t.Errorf("Content-Security-Policy %q lacks %q", contentSecurityPolicy, d)
		}
	}
	if strings.Contains(contentSecurityPolicy, "unsafe-") {
		t.Errorf("Content-Security-Policy %q allows something unsafe", contentSecurityPolicy)
	}
}

func TestConditionalGet(t *testing.T) {
	h := testHandler(t)
	for _, target := range []string{"/", "/ui/app.js", "/ui/style.css"} {
		t.Run(target, func(t *testing.T) {
			first := get(t, h, "GET", target)
			etag := first.Header.Get("ETag")
			if !strings.HasPrefix(etag, `"`) || !strings.HasSuffix(etag, `"`) {
				t.Fatalf("ETag %q is not a quoted strong validator", etag)
			}
			if resp := get(t, h, "GET", target, "If-None-Match", etag); resp.StatusCode != http.StatusNotModified {
				t.Errorf("If-None-Match with the ETag: status %d, want 304", resp.StatusCode)
			}
			if resp := get(t, h, "GET", target, "If-None-Match", `"other"`); resp.StatusCode != http.StatusOK {
				t.Errorf("If-None-Match with another ETag: status %d, want 200", resp.StatusCode)
			}
		})
	}
}

// TestHandlerServesEveryFile: Handler() does not panic, and every embedded
// file but index.html is served under /ui/.
func TestHandlerServesEveryFile(t *testing.T) {
	h := Handler()
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || d.Name() == "index.html" {
			return err
		}
		if resp := get(t, h, "GET", "/ui/"+d.Name()); resp.StatusCode != http.StatusOK {
			t.Errorf("GET /ui/%s: status %d, want 200", d.Name(), resp.StatusCode)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestNewHandlerRejectsBrokenFiles(t *testing.T) {
	const index = `<script src="{{asset "app.js"}}"></script>`
	tests := []struct {
		name  string
		files fstest.MapFS
	}{
		{"no index", fstest.MapFS{"static/app.js": {Data: []byte("1")}}},
		{"unknown extension", fstest.MapFS{"static/index.html": {Data: []byte(index)}, "static/app.js": {Data: []byte("1")}, "static/logo.svg": {Data: []byte("<svg/>")}}},
		{"index names a missing asset", fstest.MapFS{"static/index.html": {Data: []byte(index)}}},
		{"index does not parse", fstest.MapFS{"static/index.html": {Data: []byte("{{asset")}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := newHandler(tt.files); err == nil {
				t.Error("newHandler succeeded")
			}
		})
	}
}

// embedded returns every embedded file by name.
func embedded(t *testing.T) map[string]string {
	t.Helper()
	files := map[string]string{}
	err := fs.WalkDir(static, "static", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := fs.ReadFile(static, p)
		files[d.Name()] = string(b)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("nothing embedded")
	}
	return files
}

// TestNoExternalResources: the UI loads nothing from elsewhere: no
// absolute or protocol-relative URL, no CSS import or url().
func TestNoExternalResources(t *testing.T) {
	forbidden := []*regexp.Regexp{
		regexp.MustCompile(`(?i)https?://`),
		regexp.MustCompile(`(?i)(src|href|action)\s*=\s*["']?//`),
		regexp.MustCompile(`(?i)@import`),
		regexp.MustCompile(`(?i)url\(`),
	}
	for name, text := range embedded(t) {
		for _, re := range forbidden {
			if loc := re.FindStringIndex(text); loc != nil {
				t.Errorf("%s: %q at byte %d: the UI must load nothing from elsewhere", name, text[loc[0]:min(loc[1]+40, len(text))], loc[0])
			}
		}
	}
}

// TestPageIsCSPClean: what the Content-Security-Policy would block is not
// in the page: inline scripts, inline event handlers, style attributes,
// javascript: URLs. Every local resource the page names is served.
func TestPageIsCSPClean(t *testing.T) {
	h := testHandler(t)
	page := body(t, get(t, h, "GET", "/"))
	for _, bad := range []struct {
		re   *regexp.Regexp
		what string
	}{
		{regexp.MustCompile(`(?i)<script(\s+[^>]*)?>\s*[^<\s]`), "inline script"},
		{regexp.MustCompile(`(?i)<script(\s+[^>]*)?>`), ""}, // checked below for src
		{regexp.MustCompile(`(?i)\son[a-z]+\s*=`), "inline event handler"},
		{regexp.MustCompile(`(?i)\sstyle\s*=`), "style attribute"},
		{regexp.MustCompile(`(?i)<style`), "style element"},
		{regexp.MustCompile(`(?i)javascript:`), "javascript: URL"},
	} {
		for _, m := range bad.re.FindAllString(page, -1) {
			if bad.what == "" {
				if !strings.Contains(m, " src=") {
					t.Errorf("script element without src: %q", m)
				}
				continue
			}
			t.Errorf("%s in index.html: %q", bad.what, m)
		}
	}
	refs := regexp.MustCompile(`(?:src|href)="(/[^"]*)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 2 {
		t.Fatalf("index.html names %d local resources, want the script and the stylesheet", len(refs))
	}
	for _, m := range refs {
		if resp := get(t, h, "GET", m[1]); resp.StatusCode != http.StatusOK {
			t.Errorf("index.html names %s: status %d", m[1], resp.StatusCode)
		}
	}
}

// TestScriptBuildsNoHTML: the script sets server data as text only.
func TestScriptBuildsNoHTML(t *testing.T) {
	js := embedded(t)["app.js"]
	for _, s := range []string{"innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('style'"} {
		if strings.Contains(js, s) {
			t.Errorf("app.js uses %s", s)
		}
	}
}

// documentedEndpoints reads "METHOD /api/v1/path" lines from package
// adminapi's doc comment, with query strings and [optional] parts cut off:
// "GET /api/v1/prefetch/{id}".
func documentedEndpoints(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join("..", "adminapi", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	line := regexp.MustCompile(`(?m)^\s*(GET|HEAD|POST|PUT|PATCH|DELETE)\s+(/api/v1/[^\s\[?]*)`)
	var eps []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		af, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.PackageClauseOnly|parser.ParseComments)
		if err != nil {
			t.Fatal(err)
		}
		if af.Doc == nil {
			continue
		}
		for _, m := range line.FindAllStringSubmatch(af.Doc.Text(), -1) {
			eps = append(eps, m[1]+" "+m[2])
		}
	}
	// A reformatted doc must fail here, not silently allow nothing.
	if len(eps) < 10 {
		t.Fatalf("found %d endpoints in adminapi's package doc (%v); has its Endpoints list changed form?", len(eps), eps)
	}
	return eps
}

// scriptEndpoints reads the API table of app.js: ['METHOD', '/api/v1/…'].
func scriptEndpoints(t *testing.T, js string) []string {
	t.Helper()
	entry := regexp.MustCompile(`\[\s*'(GET|HEAD|POST|PUT|PATCH|DELETE)'\s*,\s*'(/api/v1/[^']*)'\s*\]`)
	var eps []string
	for _, m := range entry.FindAllStringSubmatch(js, -1) {
		eps = append(eps, m[1]+" "+m[2])
	}
	// Every mention of the API is a table entry: nothing builds an API
	// path elsewhere, where this test could not see it.
	if n := strings.Count(js, "/api/"); n != len(eps) {
		t.Errorf("app.js mentions /api/ %d times but has %d API table entries; call the API only through the table", n, len(eps))
	}
	return eps
}

func TestScriptUsesDocumentedEndpoints(t *testing.T) {
	documented := documentedEndpoints(t)
	used := scriptEndpoints(t, embedded(t)["app.js"])
	for _, ep := range used {
		if !slices.Contains(documented, ep) {
			t.Errorf("app.js calls %s, which adminapi's package doc does not list (documented: %v)", ep, documented)
		}
	}
	// And the UI covers what its pages promise.
	want := []string{
		"GET /api/v1/stats",
		"GET /api/v1/upstreams",
		"GET /api/v1/repositories",
		"GET /api/v1/tags",
		"DELETE /api/v1/repositories",
		"DELETE /api/v1/tags",
		"POST /api/v1/gc",
		"POST /api/v1/prefetch",
		"GET /api/v1/prefetch",
		"GET /api/v1/prefetch/{id}",
		"DELETE /api/v1/prefetch/{id}",
	}
	slices.Sort(want)
	got := slices.Clone(used)
	slices.Sort(got)
	if diff := cmp.Diff(want, slices.Compact(got)); diff != "" {
		t.Errorf("endpoints app.js calls (-want +got):\n%s", diff)
	}
}
