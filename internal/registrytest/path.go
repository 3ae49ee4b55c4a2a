package registrytest

import (
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
)

// kind is what a /v2/<name>/... path addresses (distribution-spec, "Endpoints").
type kind int

const (
	kindManifest  kind = iota + 1 // /v2/<name>/manifests/<reference>
	kindBlob                      // /v2/<name>/blobs/<digest>
	kindUpload                    // /v2/<name>/blobs/uploads/[<id>]
	kindTags                      // /v2/<name>/tags/list
	kindReferrers                 // /v2/<name>/referrers/<digest>
)

// route is a parsed repository path.
type route struct {
	name string // repository name, e.g. "library/alpine"
	kind kind
	ref  string // tag or digest, blob digest, upload id (may be empty), or "" for tags
}

// parsePath parses a repository-scoped /v2/ path. It reports false for /v2/
// itself, /v2/_catalog and anything that is not one of the endpoint shapes
// above. The reference is the last path segment, so a name may itself contain
// segments such as "blobs" or "manifests" ("/v2/a/blobs/blobs/sha256:…" is
// repository "a/blobs").
func parsePath(p string) (route, bool) {
	rest, ok := strings.CutPrefix(p, "/v2/")
	if !ok {
		return route{}, false
	}
	segs := strings.Split(rest, "/")
	n := len(segs)
	if n < 3 {
		return route{}, false
	}
	var r route
	var nameSegs []string
	switch {
	case segs[n-2] == "tags" && segs[n-1] == "list":
		r.kind, nameSegs = kindTags, segs[:n-2]
	case n >= 4 && segs[n-3] == "blobs" && segs[n-2] == "uploads":
		// POST .../blobs/uploads/ (empty id) or PATCH/PUT .../blobs/uploads/<id>.
		r.kind, r.ref, nameSegs = kindUpload, segs[n-1], segs[:n-3]
	case segs[n-2] == "blobs" && segs[n-1] == "uploads":
		r.kind, nameSegs = kindUpload, segs[:n-2]
	case segs[n-2] == "manifests":
		r.kind, r.ref, nameSegs = kindManifest, segs[n-1], segs[:n-2]
	case segs[n-2] == "blobs":
		r.kind, r.ref, nameSegs = kindBlob, segs[n-1], segs[:n-2]
	case segs[n-2] == "referrers":
		r.kind, r.ref, nameSegs = kindReferrers, segs[n-1], segs[:n-2]
	default:
		return route{}, false
	}
	if r.ref == "" && (r.kind == kindManifest || r.kind == kindBlob || r.kind == kindReferrers) {
		return route{}, false
	}
	for _, s := range nameSegs {
		if !validComponent(s) {
			return route{}, false
		}
	}
	r.name = strings.Join(nameSegs, "/")
	return r, true
}

// validComponent reports whether s is a repository path component: lower-case
// letters and digits, separated by '.', '_' or '-' (distribution-spec,
// "Pulling manifests": [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*). Separator runs are
// accepted more loosely than the spec; the fake only needs to reject what
// could not be a name at all.
func validComponent(s string) bool {
	if s == "" || !isAlnum(s[0]) || !isAlnum(s[len(s)-1]) {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return false
		}
	}
	return true
}

func isAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// writeError answers with the OCI error envelope (distribution-spec, "Error
// Codes"). HEAD responses carry the headers only.
func writeError(w http.ResponseWriter, req *http.Request, status int, code, message string) {
	type entry struct {
		Code    string `json:"code"`
		Message string `json:"message"`
	}
	body, _ := json.Marshal(struct {
		Errors []entry `json:"errors"`
	}{[]entry{{code, message}}})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	if req.Method != http.MethodHead {
		_, _ = w.Write(body)
	}
}
