package registrytest

import (
	"net/http"
	"slices"

	"github.com/opencontainers/go-digest"
)

// Server names, as recorded in Request.Server and accepted by OnServer and On.
const (
	ServerRegistry = "registry" // the registry ("registry-1.docker.io", "registry.k8s.io")
	ServerStorage  = "storage"  // the redirect target (Docker Hub's CDN, Artifact Registry, S3)
	ServerToken    = "token"    // the token server ("auth.docker.io")
)

// Request is one request as it reached one of the Registry's servers, before
// authentication and faults.
type Request struct {
	Server   string // ServerRegistry, ServerStorage or ServerToken
	Method   string
	Path     string
	RawQuery string
	Header   http.Header
}

func (r *Registry) record(server string, req *http.Request) {
	entry := Request{
		Server:   server,
		Method:   req.Method,
		Path:     req.URL.Path,
		RawQuery: req.URL.RawQuery,
		Header:   req.Header.Clone(),
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = append(r.requests, entry)
}

// Requests returns a copy of the request log, oldest first. Seeding
// (PushImage and friends) does not appear in it.
func (r *Registry) Requests() []Request {
	r.mu.Lock()
	reqs := slices.Clone(r.requests)
	r.mu.Unlock()
	for i := range reqs {
		reqs[i].Header = reqs[i].Header.Clone()
	}
	return reqs
}

// Count returns how many logged requests match.
func (r *Registry) Count(match func(Request) bool) int {
	n := 0
	for _, req := range r.Requests() {
		if match(req) {
			n++
		}
	}
	return n
}

// ResetRequests empties the request log.
func (r *Registry) ResetRequests() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.requests = nil
}

// Matchers for Count.

// BlobGETs matches GET /v2/<name>/blobs/<d> on the registry or the storage
// host. With RedirectBlobs or RedirectAll one fetch is two such requests (the
// redirect and the download); combine with On to count one side.
func BlobGETs(d digest.Digest) func(Request) bool {
	return func(r Request) bool {
		rt, ok := parsePath(r.Path)
		return ok && r.Method == http.MethodGet && rt.kind == kindBlob && rt.ref == d.String() && r.Server != ServerToken
	}
}

// ManifestGETs matches GET /v2/<name>/manifests/<any> on the registry or the
// storage host.
func ManifestGETs() func(Request) bool { return manifestRequests(http.MethodGet) }

// ManifestHEADs matches HEAD /v2/<name>/manifests/<any> on the registry or
// the storage host.
func ManifestHEADs() func(Request) bool { return manifestRequests(http.MethodHead) }

func manifestRequests(method string) func(Request) bool {
	return func(r Request) bool {
		rt, ok := parsePath(r.Path)
		return ok && r.Method == method && rt.kind == kindManifest && r.Server != ServerToken
	}
}

// TokenRequests matches every request to the token server.
func TokenRequests() func(Request) bool {
	return func(r Request) bool { return r.Server == ServerToken }
}

// On restricts match to requests that reached the named server.
func On(server string, match func(Request) bool) func(Request) bool {
	return func(r Request) bool { return r.Server == server && match(r) }
}
