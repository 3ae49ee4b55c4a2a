// Package ui is wharf's web UI: one HTML page, one script and one
// stylesheet, embedded in the binary and served on the admin listener. The
// page is a client of the admin API (package adminapi, under /api/v1/) and
// nothing else: it has no server-side state and no template logic beyond the
// asset URLs.
//
// Invariants:
//   - Everything the browser loads comes from this handler: no CDN, no
//     external fonts, no inline script or style. The Content-Security-Policy
//     (default-src 'self') makes the browser enforce that, and it is why the
//     script is a file of its own.
//   - Only GET / (index.html) and GET /ui/<asset> answer; every other path
//     is 404, so the admin server can mount the handler at "/" beside
//     /api/v1/, /metrics, /healthz and /readyz without shadowing anything.
//   - index.html is never cached without revalidation (Cache-Control:
//     no-cache), so an upgraded server is picked up on the next load. It
//     names each asset with a ?v=<content hash> query; an asset requested
//     with its current hash may be cached for a year, any other request for
//     it is revalidated with its ETag.
//   - Every answer, 404s included, carries the security headers
//     (setSecurityHeaders).
package ui

import (
	"bytes"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"path"
	"time"
)

//go:embed static
var static embed.FS

// contentType is the media type of an embedded file by its extension. It
// is fixed here rather than read from mime.TypeByExtension, whose answer
// depends on the machine's /etc/mime.types.
func contentType(name string) (string, bool) {
	switch path.Ext(name) {
	case ".html":
		return "text/html; charset=utf-8", true
	case ".js":
		return "text/javascript; charset=utf-8", true
	case ".css":
		return "text/css; charset=utf-8", true
	}
	return "", false
}

// contentSecurityPolicy is sent with every answer. It allows only this
// origin (so no inline script or style attributes and no eval), no framing
// (clickjacking of the delete buttons), no <base> rewriting, no plugins, and
// forms that submit only here (the page submits none itself; the script
// does).
const contentSecurityPolicy = "default-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'; object-src 'none'"

// setSecurityHeaders puts the headers every answer carries.
func setSecurityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", contentSecurityPolicy)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("X-Frame-Options", "DENY") // frame-ancestors for browsers without CSP 2
	h.Set("Referrer-Policy", "no-referrer")
}

const (
	// cacheRevalidate makes the browser ask again every time (with the
	// ETag, so an unchanged file costs a 304).
	cacheRevalidate = "no-cache"
	// cacheVersioned is for an asset requested under its content hash: that
	// URL can never name other bytes.
	cacheVersioned = "public, max-age=31536000, immutable"
)

// asset is one embedded file, ready to serve.
type asset struct {
	body        []byte
	contentType string
	etag        string // quoted strong validator
	version     string // hex prefix of the SHA-256 of body
}

func newAsset(name string, body []byte) (*asset, error) {
	ct, ok := contentType(name)
	if !ok {
		return nil, fmt.Errorf("ui: embedded file %s has no known content type", name)
	}
	sum := sha256.Sum256(body)
	v := hex.EncodeToString(sum[:8])
	return &asset{body: body, contentType: ct, etag: `"` + v + `"`, version: v}, nil
}

// handler serves the page and its assets.
type handler struct {
	index  *asset
	assets map[string]*asset // by file name under /ui/
	mux    *http.ServeMux
}

// Handler serves the UI: GET / (index.html) and GET /ui/<asset> (HEAD too).
// The embedded files are read and hashed once, here.
func Handler() http.Handler {
	h, err := newHandler(static)
	if err != nil {
		// The files are compiled in: this is a build defect, caught by the
		// package's tests, never a runtime condition.
		panic(err)
	}
	return h
}

func newHandler(files fs.FS) (*handler, error) {
	root, err := fs.Sub(files, "static")
	if err != nil {
		return nil, err
	}
	h := &handler{assets: map[string]*asset{}}
	entries, err := fs.ReadDir(root, ".")
	if err != nil {
		return nil, err
	}
	for _, e := range entries {
		if e.IsDir() || e.Name() == "index.html" {
			continue
		}
		body, err := fs.ReadFile(root, e.Name())
		if err != nil {
			return nil, err
		}
		if h.assets[e.Name()], err = newAsset(e.Name(), body); err != nil {
			return nil, err
		}
	}
	if h.index, err = h.renderIndex(root); err != nil {
		return nil, err
	}

	h.mux = http.NewServeMux()
	// {$} matches "/" only: the admin server mounts this handler at "/",
	// and nothing but the page itself may answer there.
	h.mux.HandleFunc("GET /{$}", h.serveIndex)
	h.mux.HandleFunc("GET /ui/{name}", h.serveAsset)
	return h, nil
}

// renderIndex executes index.html once, filling in the versioned asset URLs.
func (h *handler) renderIndex(root fs.FS) (*asset, error) {
	src, err := fs.ReadFile(root, "index.html")
	if err != nil {
		return nil, err
	}
	tmpl, err := template.New("index.html").Option("missingkey=error").Funcs(template.FuncMap{
		"asset": func(name string) (string, error) {
			a, ok := h.assets[name]
			if !ok {
				return "", fmt.Errorf("ui: index.html names asset %q, which is not embedded", name)
			}
			return "/ui/" + name + "?v=" + a.version, nil
		},
	}).Parse(string(src))
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, nil); err != nil {
		return nil, err
	}
	return newAsset("index.html", buf.Bytes())
}

func (h *handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setSecurityHeaders(w.Header())
	h.mux.ServeHTTP(w, r)
}

func (h *handler) serveIndex(w http.ResponseWriter, r *http.Request) {
	serve(w, r, h.index, cacheRevalidate)
}

func (h *handler) serveAsset(w http.ResponseWriter, r *http.Request) {
	a, ok := h.assets[r.PathValue("name")]
	if !ok {
		http.NotFound(w, r)
		return
	}
	cc := cacheRevalidate
	if r.URL.Query().Get("v") == a.version {
		cc = cacheVersioned
	}
	serve(w, r, a, cc)
}

// serve writes a with its validators; http.ServeContent answers
// If-None-Match with 304 and HEAD without a body.
func serve(w http.ResponseWriter, r *http.Request, a *asset, cacheControl string) {
	hdr := w.Header()
	hdr.Set("Content-Type", a.contentType)
	hdr.Set("Cache-Control", cacheControl)
	hdr.Set("ETag", a.etag)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(a.body))
}
