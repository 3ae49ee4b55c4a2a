package upstream_test

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"
	"go.uber.org/goleak"

	"github.com/wharf-mirror/wharf/internal/upstream"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// recorded is what a fake server saw of one request.
type recorded struct {
	Method, Path, RawQuery, Host string
	Header                       http.Header
}

// recorder keeps the requests a fake server received.
type recorder struct {
	mu   sync.Mutex
	reqs []recorded
}

func (rc *recorder) record(r *http.Request) int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.reqs = append(rc.reqs, recorded{r.Method, r.URL.Path, r.URL.RawQuery, r.Host, r.Header.Clone()})
	return len(rc.reqs)
}

func (rc *recorder) requests() []recorded {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return append([]recorded(nil), rc.reqs...)
}

func (rc *recorder) count() int {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	return len(rc.reqs)
}

// tokenServer is a token realm. It issues "<prefix>-1", "<prefix>-2", ...
// and knows which tokens it issued.
type tokenServer struct {
	recorder
	prefix string
	// body, when set, renders the response for token value tok.
	body func(tok string) string
	// status, when set, is the status for every response.
	status int

	mu     sync.Mutex
	issued map[string]bool
}

func newTokenServer(prefix string) *tokenServer {
	return &tokenServer{prefix: prefix, issued: map[string]bool{}}
}

func (ts *tokenServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := ts.record(r)
	if ts.status != 0 {
		w.WriteHeader(ts.status)
		fmt.Fprint(w, `{"details":"nope"}`)
		return
	}
	tok := fmt.Sprintf("%s-%d", ts.prefix, n)
	ts.mu.Lock()
	ts.issued[tok] = true
	ts.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	if ts.body != nil {
		fmt.Fprint(w, ts.body(tok))
		return
	}
	fmt.Fprintf(w, `{"token":%q,"expires_in":300}`, tok)
}

func (ts *tokenServer) valid(tok string) bool {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.issued[tok]
}

type fakeManifest struct {
	contentType string
	body        []byte
	// digestHeader is sent as Docker-Content-Digest; "" sends sha256 of
	// the body, "-" sends nothing.
	digestHeader string
}

// fakeRegistry serves manifests and blobs from memory, with optional
// bearer or basic auth, redirects and fault injection.
type fakeRegistry struct {
	recorder
	mu        sync.Mutex
	manifests map[string]fakeManifest // "repo:ref"
	blobs     map[digest.Digest][]byte

	// challenge, when set, is sent as WWW-Authenticate (one header line
	// per element) on requests without acceptable credentials.
	challenge []string
	// tokens accepts the bearer tokens it issued, unless reject says no.
	tokens *tokenServer
	reject func(tok string) bool
	// basic accepts these credentials ("user:password").
	basic string
	// redirect, when set, returns a URL to redirect the request to.
	redirect func(r *http.Request) string
	// hook runs first and may answer the request itself (n counts
	// requests from 1).
	hook func(w http.ResponseWriter, r *http.Request, n int) bool
	// header is added to every response.
	header http.Header
}

func newFakeRegistry() *fakeRegistry {
	return &fakeRegistry{manifests: map[string]fakeManifest{}, blobs: map[digest.Digest][]byte{}}
}

func (f *fakeRegistry) putManifest(repo, ref string, m fakeManifest) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.manifests[repo+":"+ref] = m
}

func (f *fakeRegistry) putBlob(b []byte) digest.Digest {
	d := digest.FromBytes(b)
	f.mu.Lock()
	defer f.mu.Unlock()
	f.blobs[d] = b
	return d
}

func (f *fakeRegistry) authorized(r *http.Request) bool {
	if len(f.challenge) == 0 {
		return true
	}
	h := r.Header.Get("Authorization")
	if tok, ok := strings.CutPrefix(h, "Bearer "); ok && f.tokens != nil {
		return f.tokens.valid(tok) && (f.reject == nil || !f.reject(tok))
	}
	if raw, ok := strings.CutPrefix(h, "Basic "); ok && f.basic != "" {
		b, err := base64.StdEncoding.DecodeString(raw)
		return err == nil && string(b) == f.basic
	}
	return false
}

func (f *fakeRegistry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	n := f.record(r)
	for k, vs := range f.header {
		w.Header()[k] = vs
	}
	if f.hook != nil && f.hook(w, r, n) {
		return
	}
	if !f.authorized(r) {
		for _, c := range f.challenge {
			w.Header().Add("WWW-Authenticate", c)
		}
		writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
		return
	}
	if r.URL.Path == "/v2/" {
		w.WriteHeader(http.StatusOK)
		return
	}
	if f.redirect != nil {
		if to := f.redirect(r); to != "" {
			http.Redirect(w, r, to, http.StatusTemporaryRedirect)
			return
		}
	}
	rest, ok := strings.CutPrefix(r.URL.Path, "/v2/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	if i := strings.LastIndex(rest, "/manifests/"); i >= 0 {
		f.mu.Lock()
		m, ok := f.manifests[rest[:i]+":"+rest[i+len("/manifests/"):]]
		f.mu.Unlock()
		if !ok {
			writeError(w, http.StatusNotFound, "MANIFEST_UNKNOWN", "manifest unknown")
			return
		}
		if m.contentType != "" {
			w.Header().Set("Content-Type", m.contentType)
		}
		switch m.digestHeader {
		case "":
			w.Header().Set("Docker-Content-Digest", digest.FromBytes(m.body).String())
		case "-":
		default:
			w.Header().Set("Docker-Content-Digest", m.digestHeader)
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(m.body)))
		if r.Method != http.MethodHead {
			w.Write(m.body)
		}
		return
	}
	if i := strings.LastIndex(rest, "/blobs/"); i >= 0 {
		f.mu.Lock()
		b, ok := f.blobs[digest.Digest(rest[i+len("/blobs/"):])]
		f.mu.Unlock()
		if !ok {
			writeError(w, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown")
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(len(b)))
		w.Header().Set("Docker-Content-Digest", digest.FromBytes(b).String())
		if r.Method != http.MethodHead {
			w.Write(b)
		}
		return
	}
	writeError(w, http.StatusNotFound, "NAME_UNKNOWN", "repository name not known")
}

func writeError(w http.ResponseWriter, status int, code, message string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	fmt.Fprintf(w, `{"errors":[{"code":%q,"message":%q}]}`, code, message)
}

// serve starts an httptest server on loopback, closed when t ends.
func serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	s := httptest.NewServer(h)
	t.Cleanup(s.Close)
	return s
}

// namedHosts returns a transport that reaches each host name (port 80) at
// the loopback listener of its server, so that tests can use distinct host
// names, subdomains included. 127.0.0.1 is reached directly; nothing else.
func namedHosts(t *testing.T, hosts map[string]*httptest.Server) *http.Transport {
	t.Helper()
	dialer := &net.Dialer{Timeout: 5 * time.Second}
	tr := &http.Transport{
		DisableCompression: true,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			host, port, err := net.SplitHostPort(addr)
			if err != nil {
				return nil, err
			}
			if host == "127.0.0.1" {
				return dialer.DialContext(ctx, network, addr)
			}
			s, ok := hosts[host]
			if !ok || port != "80" {
				return nil, fmt.Errorf("test network: no route to %s", addr)
			}
			return dialer.DialContext(ctx, network, s.Listener.Addr().String())
		},
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// newClient builds a client with fast retries, cleaned up when t ends.
func newClient(t *testing.T, cfg upstream.Config) *upstream.Client {
	t.Helper()
	if cfg.Name == "" {
		cfg.Name = "test"
	}
	c, err := upstream.New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	upstream.SetBackoff(c, time.Millisecond)
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// fakeClock is a settable clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func newFakeClock() *fakeClock {
	return &fakeClock{t: time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

const testManifest = `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`

const ociManifestType = "application/vnd.oci.image.manifest.v1+json"

// countAuthorization counts requests that carried an Authorization header.
func countAuthorization(reqs []recorded) int {
	n := 0
	for _, r := range reqs {
		if r.Header.Get("Authorization") != "" {
			n++
		}
	}
	return n
}

// count401 counts requests that had no credentials (and so were answered
// with a challenge by a registry requiring auth).
func countAnonymous(reqs []recorded) int {
	return len(reqs) - countAuthorization(reqs)
}
