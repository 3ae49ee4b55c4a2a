package auth

import (
	"bytes"
	"encoding/base64"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// Test credentials.
const (
	alicePass   = "alice-secret-pw"
	bobPass     = "bob-secret-pw"
	ciSecret    = "ci-static-token-0123456789"
	otherSecret = "other-static-token-abcdefgh"
)

// testClock is an injectable clock.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func newClock() *testClock {
	return &testClock{t: time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)}
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

// hashOf is a real bcrypt hash of pw at the minimum cost.
func hashOf(t testing.TB, pw string) string {
	t.Helper()
	h, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	return string(h)
}

// lockedBuffer collects log output from concurrent handlers.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// fixture is an Authenticator over a temporary htpasswd file (alice, bob),
// two static tokens, a fake clock, a counted bcrypt and captured logs.
type fixture struct {
	a        *Authenticator
	clock    *testClock
	dir      string
	htpasswd string
	keyFile  string
	logs     *lockedBuffer
	compares *atomic.Int64
}

type fixtureOption func(*Config)

func newFixture(t *testing.T, opts ...fixtureOption) *fixture {
	t.Helper()
	dir := t.TempDir()
	f := &fixture{
		clock:    newClock(),
		dir:      dir,
		htpasswd: filepath.Join(dir, "htpasswd"),
		keyFile:  filepath.Join(dir, "state", "token.key"),
		logs:     &lockedBuffer{},
		compares: &atomic.Int64{},
	}
	writeFile(t, f.htpasswd, "# users\nalice:"+hashOf(t, alicePass)+"\r\n\nbob:"+hashOf(t, bobPass)+"\n")
	cfg := Config{
		HtpasswdFile: f.htpasswd,
		Tokens:       map[string]string{"ci": ciSecret, "other": otherSecret},
		KeyFile:      f.keyFile,
		Anonymous:    true,
		Logger:       slog.New(slog.NewTextHandler(f.logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Now:          f.clock.Now,
	}
	for _, o := range opts {
		o(&cfg)
	}
	a, err := New(cfg)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(func() {
		if err := a.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	countCompares(a, f.compares)
	f.a = a
	return f
}

// countCompares wraps a's bcrypt comparison with a call counter.
func countCompares(a *Authenticator, n *atomic.Int64) {
	inner := a.compare
	a.compare = func(hash, pw []byte) error {
		n.Add(1)
		return inner(hash, pw)
	}
}

// writeFile replaces path's content atomically and moves its modification
// time forward, so that a rewrite within one clock tick is still seen.
func writeFile(t testing.TB, path, content string) {
	t.Helper()
	mtime := time.Now()
	if fi, err := os.Stat(path); err == nil && !mtime.After(fi.ModTime().Add(time.Second)) {
		mtime = fi.ModTime().Add(time.Second)
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(tmp, mtime, mtime); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func basic(user, pass string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
}

// request is a GET from 127.0.0.1 with the given Authorization header
// ("" for none).
func request(authz string) *http.Request {
	r := httptest.NewRequest(http.MethodGet, "http://mirror.test/v2/", nil)
	r.RemoteAddr = "127.0.0.1:40000"
	if authz != "" {
		r.Header.Set("Authorization", authz)
	}
	return r
}

// issueFor issues a token for p through the package's own issuer.
func issueFor(t testing.TB, a *Authenticator, p Principal) string {
	t.Helper()
	tok, _, err := a.issue(p, a.now())
	if err != nil {
		t.Fatalf("issue(%v): %v", p, err)
	}
	return tok
}

// noSecrets fails when s contains a test secret.
func noSecrets(t testing.TB, what, s string, extra ...string) {
	t.Helper()
	for _, secret := range append([]string{alicePass, bobPass, ciSecret, otherSecret}, extra...) {
		if secret != "" && strings.Contains(s, secret) {
			t.Errorf("%s contains a secret: %q", what, s)
		}
	}
}
