// Package registrytest runs a fake upstream container registry on loopback
// for wharf's integration tests.
//
// A Registry is three HTTP servers on 127.0.0.1:
//
//   - the registry itself (URL, Host), serving the distribution API from
//     go-containerregistry's in-memory registry, with blob GET/HEAD served
//     here (full RFC 9110 Range support, synthetic layers streamed without
//     being held in memory);
//   - a storage host, the redirect target: Docker Hub's CDN for blobs
//     (RedirectBlobs) or registry.k8s.io's Artifact Registry / S3 for every
//     repository request (RedirectAll), client-compat §4.2 and §6.1;
//   - a token server, Docker Hub's auth.docker.io (client-compat §4.1).
//
// In front of them sit the behaviours a mirror has to survive: the Bearer
// token flow (Options.Auth), redirects, Docker Hub's rate-limit headers, and
// injected faults (Fault: error statuses with Retry-After, connection resets
// mid-body, corrupted bodies, slow bodies; client-compat §6.3). Every request
// that reaches any of the servers is logged before anything else happens to
// it, so a test can assert exactly how many upstream requests a mirror made.
//
// Invariants:
//   - Seeding (PushImage, PushIndex, PushManifest, PushBlob, DeleteTag) goes
//     straight to the store: it bypasses authentication, faults and the
//     request log.
//   - The storage host serves the same content as the registry, read-only,
//     and only to requests that carry the signature of the registry's
//     Location (or, with StorageAuth, a storage token): it cannot be used as
//     a shortcut around the registry.
//   - Tokens are bound to the service they were issued for.
//   - The test's Cleanup closes every listener and connection and waits for
//     every handler to return, throttled ones included.
package registrytest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

// RedirectMode selects which requests the registry answers with a 307 to the
// storage host.
type RedirectMode int

const (
	// RedirectNone serves everything from the registry.
	RedirectNone RedirectMode = iota
	// RedirectBlobs redirects blob GETs to the storage host, like Docker
	// Hub's redirects to its CDN. Blob HEADs are answered by the registry.
	RedirectBlobs
	// RedirectAll redirects every GET and HEAD of /v2/<name>/... (manifests,
	// blobs, tags, referrers) to the storage host, like registry.k8s.io.
	// /v2/ itself answers 200 from the registry.
	RedirectAll
)

// Options configures a Registry. The zero value is an anonymous registry
// that serves everything itself.
type Options struct {
	// Auth makes /v2/ and every /v2/... request need "Authorization: Bearer
	// <token>" issued by the token server for service RegistryService. A
	// request without one gets 401 with
	//   WWW-Authenticate: Bearer realm="<TokenURL>",service="registry.test",scope="repository:<name>:pull"
	// (scope only on repository requests; ":pull,push" for writes).
	Auth bool
	// Username and Password, if Username is set, are the HTTP Basic
	// credentials the token server requires for RegistryService tokens;
	// anonymous token requests then get 401. Empty: tokens are issued to
	// anyone.
	Username, Password string
	// TokenTTL is how long a token is valid; the token response's expires_in
	// is this in whole seconds, rounded up. Default 300 s (Docker Hub's).
	TokenTTL time.Duration
	// Redirect selects what the registry redirects to the storage host.
	Redirect RedirectMode
	// StorageAuth makes the storage host issue its own Bearer challenge
	// (realm TokenURL, service StorageService) instead of checking URL
	// signatures: registry.k8s.io redirecting to Artifact Registry. Registry
	// tokens are not accepted there, nor storage tokens at the registry.
	// Needs a Redirect mode.
	StorageAuth bool
	// RateLimit adds Docker Hub's headers to manifest GET and HEAD responses
	// (client-compat §4.3):
	//   RateLimit-Limit: 100;w=21600
	//   RateLimit-Remaining: <100 - manifest GETs so far>;w=21600
	//   Docker-RateLimit-Source: <client IP>
	// Only GETs count; the 101st and later GETs get 429 TOOMANYREQUESTS.
	RateLimit bool
	// NoReferrers makes the referrers API answer 404, like registries
	// without it (client-compat §5.5: clients fall back to the tag schema).
	NoReferrers bool
}

// Docker Hub's anonymous limit, and the window it is advertised with.
const (
	rateLimitMax    = 100
	rateLimitWindow = ";w=21600"
)

// Registry is a running fake upstream. Its methods are safe for concurrent
// use; Down and Up are meant to be called by one goroutine at a time.
type Registry struct {
	t       testing.TB
	opts    Options
	api     http.Handler // go-containerregistry's registry: manifests, tags, referrers, uploads
	blobs   *blobStore
	signKey []byte

	registry, storage, token *server

	quit     chan struct{}  // closed at cleanup; ends throttled writes
	handlers sync.WaitGroup // handler invocations in progress

	mu       sync.Mutex
	closed   bool
	requests []Request
	faults   []*activeFault
	pulls    int // manifest GETs, for RateLimit
	tokens   map[string]issuedToken
}

// New starts a Registry's three servers on 127.0.0.1 ports chosen by the
// kernel; t.Cleanup stops them and waits for every handler to return.
func New(t testing.TB, o Options) *Registry {
	t.Helper()
	switch {
	case o.TokenTTL < 0:
		t.Fatalf("registrytest.New: negative TokenTTL %v", o.TokenTTL)
	case o.TokenTTL == 0:
		o.TokenTTL = 300 * time.Second
	}
	if o.StorageAuth && o.Redirect == RedirectNone {
		t.Fatalf("registrytest.New: StorageAuth needs a Redirect mode; nothing would reach the storage host")
	}
	if o.Password != "" && o.Username == "" {
		t.Fatalf("registrytest.New: Password without Username")
	}
	r := &Registry{
		t:       t,
		opts:    o,
		blobs:   newBlobStore(),
		signKey: make([]byte, 32),
		quit:    make(chan struct{}),
		tokens:  map[string]issuedToken{},
	}
	_, _ = rand.Read(r.signKey)
	r.api = registry.New(
		registry.Logger(log.New(io.Discard, "", 0)),
		registry.WithBlobHandler(r.blobs),
		registry.WithReferrersSupport(!o.NoReferrers),
	)
	// The registry is addressed by IP, the other two by name: Go's
	// http.Client forwards an Authorization header set on a request only to
	// the same host name (ports ignored), so the storage host must look like
	// another host, as Docker Hub's CDN does.
	r.registry = &server{host: "127.0.0.1", handler: r.wrap(ServerRegistry, r.serveRegistry)}
	r.storage = &server{host: "localhost", handler: r.wrap(ServerStorage, r.serveStorage)}
	r.token = &server{host: "localhost", handler: r.wrap(ServerToken, r.serveToken)}
	t.Cleanup(r.close)
	for _, s := range r.servers() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("registrytest.New: %v", err)
		}
		s.addr = ln.Addr().String()
		s.start(ln)
	}
	return r
}

func (r *Registry) servers() []*server { return []*server{r.registry, r.storage, r.token} }

// URL is the registry's base URL, "http://127.0.0.1:PORT".
func (r *Registry) URL() string { return "http://" + r.Host() }

// Host is the registry's "127.0.0.1:PORT".
func (r *Registry) Host() string { return r.registry.publicHost() }

// StorageURL is the storage host's base URL, "http://localhost:PORT".
func (r *Registry) StorageURL() string { return "http://" + r.storage.publicHost() }

// Down makes the upstream unreachable: the registry, storage host and token
// server close their listeners and every open connection, so new
// connections are refused and requests in flight fail.
func (r *Registry) Down() {
	for _, s := range r.servers() {
		s.stop()
	}
}

// Up listens again on the same ports after Down, retrying for a moment if a
// port is still busy. A failure is reported with t.Errorf.
func (r *Registry) Up() {
	r.mu.Lock()
	closed := r.closed
	r.mu.Unlock()
	if closed {
		return
	}
	for _, s := range r.servers() {
		if s.running() {
			continue
		}
		ln, err := listenRetry(s.addr)
		if err != nil {
			r.t.Errorf("registrytest: Up: %v", err)
			continue
		}
		s.start(ln)
	}
}

func listenRetry(addr string) (net.Listener, error) {
	const attempts, pause = 50, 20 * time.Millisecond
	var err error
	for range attempts {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(pause)
	}
	return nil, err
}

// close is the Cleanup: no new handlers, wake throttled ones, close every
// connection, then wait for the handlers still running.
func (r *Registry) close() {
	r.mu.Lock()
	r.closed = true
	r.mu.Unlock()
	close(r.quit)
	r.Down()
	r.handlers.Wait()
}

// wrap is the outermost layer of every server: handler accounting, the
// request log, and the server's name in the request context (ServerOf).
func (r *Registry) wrap(name string, h http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		if !r.enter() {
			panic(http.ErrAbortHandler)
		}
		defer r.handlers.Done()
		r.record(name, req)
		h(w, req.WithContext(context.WithValue(req.Context(), serverKey{}, name)))
	})
}

func (r *Registry) enter() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return false
	}
	r.handlers.Add(1)
	return true
}

// serveRegistry: authentication, then either a redirect to the storage host
// or the content itself.
func (r *Registry) serveRegistry(w http.ResponseWriter, req *http.Request) {
	w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	if req.URL.Path != "/v2" && !strings.HasPrefix(req.URL.Path, "/v2/") {
		http.NotFound(w, req)
		return
	}
	rt, repoPath := parsePath(req.URL.Path)
	if r.opts.Auth && !r.authorize(w, req, RegistryService, rt, repoPath) {
		return
	}
	if repoPath {
		req = req.WithContext(context.WithValue(req.Context(), routeKey{}, rt))
	}
	if r.redirects(req, rt, repoPath) {
		if f := r.takeFault(req, repoPath, true); f != nil {
			writeStatusFault(w, req, f, rt)
			return
		}
		w.Header().Set("Location", r.storageLocation(req))
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	r.serveWithFaults(w, req, rt, repoPath)
}

func (r *Registry) redirects(req *http.Request, rt route, repoPath bool) bool {
	switch r.opts.Redirect {
	case RedirectBlobs:
		return repoPath && rt.kind == kindBlob && req.Method == http.MethodGet
	case RedirectAll:
		return repoPath && isRead(req.Method)
	}
	return false
}

// storageLocation is where the registry sends a request: the same path and
// query on the storage host, plus the path's signature unless the storage
// host does its own token authentication.
func (r *Registry) storageLocation(req *http.Request) string {
	q := req.URL.RawQuery
	if !r.opts.StorageAuth {
		if q != "" {
			q += "&"
		}
		q += signatureParam + "=" + hex.EncodeToString(r.signature(req.URL.Path))
	}
	loc := r.StorageURL() + req.URL.EscapedPath()
	if q != "" {
		loc += "?" + q
	}
	return loc
}

// serveStorage is the redirect target: read-only, and only for requests
// carrying a valid signature (or a storage token with StorageAuth).
func (r *Registry) serveStorage(w http.ResponseWriter, req *http.Request) {
	if r.opts.Redirect == RedirectAll {
		w.Header().Set("Docker-Distribution-API-Version", "registry/2.0")
	}
	rt, repoPath := parsePath(req.URL.Path)
	if !repoPath {
		http.NotFound(w, req)
		return
	}
	if !isRead(req.Method) {
		writeError(w, req, http.StatusMethodNotAllowed, "UNSUPPORTED", "the storage host is read-only")
		return
	}
	if r.opts.StorageAuth {
		if !r.authorize(w, req, StorageService, rt, true) {
			return
		}
	} else if !r.checkSignature(w, req) {
		return
	}
	req = req.WithContext(context.WithValue(req.Context(), routeKey{}, rt))
	r.serveWithFaults(w, req, rt, true)
}

// serveWithFaults serves the content, or a fault instead of or around it.
func (r *Registry) serveWithFaults(w http.ResponseWriter, req *http.Request, rt route, repoPath bool) {
	f := r.takeFault(req, repoPath, false)
	switch {
	case f == nil:
		r.serveContent(w, req, rt, repoPath)
	case f.Status != 0:
		writeStatusFault(w, req, f, rt)
	default:
		fw := newFaultWriter(w, req, f, r.quit)
		r.serveContent(fw, req, rt, repoPath)
		fw.finish()
	}
}

func (r *Registry) serveContent(w http.ResponseWriter, req *http.Request, rt route, repoPath bool) {
	switch {
	case repoPath && rt.kind == kindBlob && isRead(req.Method):
		r.blobs.serveBlob(w, req, rt)
	case repoPath && rt.kind == kindManifest && isRead(req.Method) && r.opts.RateLimit:
		if r.countPull(w, req) {
			r.api.ServeHTTP(w, req)
		}
	case repoPath && rt.kind == kindTags && req.Method == http.MethodGet && req.URL.Query().Get("n") != "":
		r.serveTagPage(w, req)
	default:
		r.api.ServeHTTP(w, req)
	}
}

// countPull adds Docker Hub's rate-limit headers to a manifest response and
// reports whether the request is within the limit (client-compat §4.3: GETs
// count, HEADs do not).
func (r *Registry) countPull(w http.ResponseWriter, req *http.Request) bool {
	r.mu.Lock()
	if req.Method == http.MethodGet {
		r.pulls++
	}
	left := rateLimitMax - r.pulls
	r.mu.Unlock()
	h := w.Header()
	h.Set("RateLimit-Limit", strconv.Itoa(rateLimitMax)+rateLimitWindow)
	h.Set("RateLimit-Remaining", strconv.Itoa(max(left, 0))+rateLimitWindow)
	if ip, _, err := net.SplitHostPort(req.RemoteAddr); err == nil {
		h.Set("Docker-RateLimit-Source", ip)
	}
	if left < 0 {
		writeError(w, req, http.StatusTooManyRequests, "TOOMANYREQUESTS",
			fmt.Sprintf("You have reached your pull rate limit of %d.", rateLimitMax))
		return false
	}
	return true
}

// server is one listener that can be closed and reopened on the same port.
type server struct {
	handler http.Handler
	host    string // the host name clients are given: "127.0.0.1" or "localhost"
	addr    string // "127.0.0.1:PORT", set once by New

	mu     sync.Mutex
	srv    *http.Server  // nil while down
	served chan struct{} // closed when srv.Serve has returned
}

func (s *server) publicHost() string {
	_, port, _ := net.SplitHostPort(s.addr)
	return net.JoinHostPort(s.host, port)
}

func (s *server) start(ln net.Listener) {
	srv := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		// Aborted handlers and closed connections are the point of this
		// server; their log lines would only be noise.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln) // ends only through stop's Close: http.ErrServerClosed
	}()
	s.mu.Lock()
	defer s.mu.Unlock()
	s.srv, s.served = srv, served
}

func (s *server) running() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv != nil
}

// stop closes the listener and every connection and waits for Serve to
// return. Handlers still running notice through their context or a failing
// write; Registry.close waits for them.
func (s *server) stop() {
	s.mu.Lock()
	srv, served := s.srv, s.served
	s.srv, s.served = nil, nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	_ = srv.Close()
	<-served
}

// serveTagPage answers a paginated tags/list and adds the Link header of
// distribution-spec "Listing Tags" when the page is full, pointing at the
// next page the way registries do (path-absolute, with last and n).
func (r *Registry) serveTagPage(w http.ResponseWriter, req *http.Request) {
	rec := httptest.NewRecorder()
	r.api.ServeHTTP(rec, req)
	var page struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	n, _ := strconv.Atoi(req.URL.Query().Get("n"))
	if rec.Code == http.StatusOK && json.Unmarshal(rec.Body.Bytes(), &page) == nil && n > 0 && len(page.Tags) == n {
		q := url.Values{"n": {strconv.Itoa(n)}, "last": {page.Tags[len(page.Tags)-1]}}
		rec.Header().Set("Link", "<"+req.URL.Path+"?"+q.Encode()+`>; rel="next"`)
	}
	for k, v := range rec.Header() {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.Code)
	w.Write(rec.Body.Bytes())
}
