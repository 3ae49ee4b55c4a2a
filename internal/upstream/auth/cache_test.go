package auth

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// fakeClock is a settable clock for token expiry.
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

// tokenServer is a token realm that records what it is asked and issues
// tokens "tok-1", "tok-2", ... unless respond says otherwise.
type tokenServer struct {
	*httptest.Server
	mu       sync.Mutex
	requests []*http.Request
	// respond, when set, writes the response for the n-th request (from 1).
	respond func(w http.ResponseWriter, r *http.Request, n int)
}

func newTokenServer(t *testing.T) *tokenServer {
	t.Helper()
	ts := &tokenServer{}
	ts.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ts.mu.Lock()
		ts.requests = append(ts.requests, r.Clone(context.Background()))
		n := len(ts.requests)
		respond := ts.respond
		ts.mu.Unlock()
		if respond != nil {
			respond(w, r, n)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprintf(w, `{"token":"tok-%d","expires_in":300}`, n)
	}))
	t.Cleanup(ts.Close)
	return ts
}

func (ts *tokenServer) hits() int {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return len(ts.requests)
}

func (ts *tokenServer) request(i int) *http.Request {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	return ts.requests[i]
}

func newTestCache(t *testing.T, cfg Config) *Cache {
	t.Helper()
	c := NewCache(cfg)
	tr := &http.Transport{}
	if cfg.Transport == nil {
		c.transport = tr
	}
	t.Cleanup(tr.CloseIdleConnections)
	return c
}

// loopbackOrigin is a registry on loopback, for which loopback realms are
// acceptable.
const loopbackOrigin = "http://127.0.0.1:5000"

func TestTokenRequest(t *testing.T) {
	ts := newTokenServer(t)
	c := newTestCache(t, Config{UserAgent: "wharf/test"})
	ctx := t.Context()

	anon := Request{Origin: loopbackOrigin, Realm: ts.URL + "/token?account=x", Service: "registry.test",
		Scopes: []string{"repository:library/nginx:pull", "repository:library/busybox:pull"}}
	tok, err := c.Token(ctx, anon)
	if err != nil || tok != "tok-1" {
		t.Fatalf("Token() = %q, %v; want tok-1", tok, err)
	}
	r := ts.request(0)
	if r.Method != http.MethodGet || r.URL.Path != "/token" {
		t.Errorf("request %s %s, want GET /token", r.Method, r.URL.Path)
	}
	want := url.Values{
		"account": {"x"},
		"service": {"registry.test"},
		"scope":   {"repository:library/nginx:pull", "repository:library/busybox:pull"},
	}
	if diff := cmp.Diff(want, r.URL.Query()); diff != "" {
		t.Errorf("query mismatch (-want +got):\n%s", diff)
	}
	if h := r.Header.Get("Authorization"); h != "" {
		t.Errorf("anonymous request carried Authorization %q", h)
	}
	if ua := r.Header.Get("User-Agent"); ua != "wharf/test" {
		t.Errorf("User-Agent = %q", ua)
	}

	// No service: the parameter is omitted. Credentials: Basic.
	cred := anon
	cred.Service = ""
	cred.Credentials = Credentials{Username: "alice", Password: "s3cret"}
	if _, err := c.Token(ctx, cred); err != nil {
		t.Fatal(err)
	}
	r = ts.request(1)
	if _, ok := r.URL.Query()["service"]; ok {
		t.Errorf("service sent although empty: %s", r.URL.RawQuery)
	}
	wantAuth := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
	if got := r.Header.Get("Authorization"); got != wantAuth {
		t.Errorf("Authorization = %q, want %q", got, wantAuth)
	}
}

func TestParseTokenResponse(t *testing.T) {
	now := time.Date(2026, 11, 22, 12, 0, 0, 0, time.UTC)
	tests := []struct {
		name     string
		body     string
		value    string
		lifetime time.Duration // expires - now
		err      error
	}{
		{"token", `{"token":"a","expires_in":300}`, "a", 300 * time.Second, nil},
		{"access_token only", `{"access_token":"b","expires_in":120}`, "b", 120 * time.Second, nil},
		{"both, access_token wins", `{"token":"a","access_token":"b"}`, "b", 60 * time.Second, nil},
		{"no expires_in", `{"token":"a"}`, "a", 60 * time.Second, nil},
		{"zero expires_in", `{"token":"a","expires_in":0}`, "a", 60 * time.Second, nil},
		{"negative expires_in", `{"token":"a","expires_in":-5}`, "a", 60 * time.Second, nil},
		{"quoted expires_in", `{"token":"a","expires_in":"90"}`, "a", 90 * time.Second, nil},
		{"unreadable expires_in", `{"token":"a","expires_in":{"x":1}}`, "a", 60 * time.Second, nil},
		{"fractional expires_in", `{"token":"a","expires_in":1.5}`, "a", 1500 * time.Millisecond, nil},
		{"huge expires_in", `{"token":"a","expires_in":1e300}`, "a", 24 * time.Hour, nil},
		{"issued_at plausible", `{"token":"a","expires_in":300,"issued_at":"2026-11-22T11:59:00Z"}`, "a", 240 * time.Second, nil},
		{"issued_at in the future", `{"token":"a","expires_in":300,"issued_at":"2026-11-22T13:00:00Z"}`, "a", 300 * time.Second, nil},
		{"issued_at too old", `{"token":"a","expires_in":300,"issued_at":"2026-11-22T10:00:00Z"}`, "a", 300 * time.Second, nil},
		{"issued_at garbage", `{"token":"a","expires_in":300,"issued_at":"yesterday"}`, "a", 300 * time.Second, nil},
		{"refresh_token ignored", `{"token":"a","refresh_token":"r"}`, "a", 60 * time.Second, nil},
		{"no token", `{"expires_in":300}`, "", 0, ErrNoToken},
		{"empty tokens", `{"token":"","access_token":""}`, "", 0, ErrNoToken},
		{"not json", `<html>`, "", 0, ErrNoToken},
		{"token with newline", `{"token":"a\nX-Injected: 1"}`, "", 0, ErrNoToken},
		{"token with space", `{"token":"a b"}`, "", 0, ErrNoToken},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseTokenResponse([]byte(tt.body), now)
			if tt.err != nil {
				if !errors.Is(err, tt.err) {
					t.Fatalf("err = %v, want %v", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.value != tt.value {
				t.Errorf("value = %q, want %q", got.value, tt.value)
			}
			if l := got.expires.Sub(now); l != tt.lifetime {
				t.Errorf("expires in %v, want %v", l, tt.lifetime)
			}
		})
	}
}

func TestCacheReuseUntilExpiry(t *testing.T) {
	ts := newTokenServer(t)
	ts.respond = func(w http.ResponseWriter, _ *http.Request, n int) {
		fmt.Fprintf(w, `{"access_token":"tok-%d"}`, n) // no expires_in: 60 s
	}
	clock := newFakeClock()
	c := newTestCache(t, Config{Now: clock.Now})
	req := Request{Origin: loopbackOrigin, Realm: ts.URL, Service: "s", Scopes: []string{"repository:a:pull"}}

	steps := []struct {
		advance time.Duration
		want    string
		hits    int
	}{
		{0, "tok-1", 1},
		{0, "tok-1", 1},
		{30 * time.Second, "tok-1", 1},
		{23 * time.Second, "tok-1", 1}, // 53 s: still more than the 6 s margin left
		{1 * time.Second, "tok-2", 2},  // 54 s: retired
		{50 * time.Second, "tok-2", 2},
		{10 * time.Second, "tok-3", 3},
	}
	for i, s := range steps {
		clock.Advance(s.advance)
		got, err := c.Token(t.Context(), req)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if got != s.want || ts.hits() != s.hits {
			t.Fatalf("step %d: token %q after %d fetches, want %q after %d", i, got, ts.hits(), s.want, s.hits)
		}
	}
}

func TestCacheKey(t *testing.T) {
	ts := newTokenServer(t)
	c := newTestCache(t, Config{})
	base := Request{Origin: loopbackOrigin, Realm: ts.URL, Service: "s", Scopes: []string{"repository:a:pull", "repository:b:pull"}}
	alice := Credentials{Username: "alice", Password: "pw1"}

	variants := []struct {
		name  string
		edit  func(r *Request)
		fresh bool // needs its own token
	}{
		{"same", func(*Request) {}, false},
		{"scopes in another order", func(r *Request) { r.Scopes = []string{"repository:b:pull", "repository:a:pull"} }, false},
		{"duplicate scope", func(r *Request) { r.Scopes = append(r.Scopes, "repository:a:pull") }, false},
		{"other scope", func(r *Request) { r.Scopes = []string{"repository:c:pull"} }, true},
		{"other service", func(r *Request) { r.Service = "t" }, true},
		{"other realm", func(r *Request) { r.Realm = ts.URL + "/other" }, true},
		{"alice", func(r *Request) { r.Credentials = alice }, true},
		{"alice again", func(r *Request) { r.Credentials = alice }, false},
		{"alice, other password", func(r *Request) { r.Credentials = Credentials{Username: "alice", Password: "pw2"} }, true},
		{"bob, alice's password", func(r *Request) { r.Credentials = Credentials{Username: "bob", Password: "pw1"} }, true},
	}
	want := 0
	for _, v := range variants {
		r := base
		r.Scopes = append([]string(nil), base.Scopes...)
		v.edit(&r)
		if v.fresh || want == 0 {
			want++
		}
		if _, err := c.Token(t.Context(), r); err != nil {
			t.Fatalf("%s: %v", v.name, err)
		}
		if ts.hits() != want {
			t.Fatalf("%s: %d fetches, want %d", v.name, ts.hits(), want)
		}
		if k := c.key(r); strings.Contains(k, "pw1") || strings.Contains(k, "pw2") {
			t.Fatalf("%s: key %q contains the password", v.name, k)
		}
	}
}

func TestCacheConcurrentMissesShareOneFetch(t *testing.T) {
	entered := make(chan struct{})
	release := make(chan struct{})
	ts := newTokenServer(t)
	ts.respond = func(w http.ResponseWriter, _ *http.Request, n int) {
		if n == 1 {
			close(entered)
			<-release
		}
		fmt.Fprintf(w, `{"token":"tok-%d"}`, n)
	}
	c := newTestCache(t, Config{})
	const waiters = 8
	waiting := make(chan struct{}, waiters)
	c.onWait = func() { waiting <- struct{}{} }
	req := Request{Origin: loopbackOrigin, Realm: ts.URL, Scopes: []string{"repository:a:pull"}}

	results := make(chan string, waiters+1)
	var wg sync.WaitGroup
	get := func() {
		defer wg.Done()
		tok, err := c.Token(t.Context(), req)
		if err != nil {
			tok = "error: " + err.Error()
		}
		results <- tok
	}
	wg.Add(1)
	go get()
	<-entered
	for range waiters {
		wg.Add(1)
		go get()
	}
	for range waiters {
		<-waiting
	}
	close(release)
	wg.Wait()
	close(results)
	for tok := range results {
		if tok != "tok-1" {
			t.Errorf("got %q, want tok-1", tok)
		}
	}
	if ts.hits() != 1 {
		t.Errorf("%d fetches, want 1", ts.hits())
	}
}

func TestCacheLeaderGivesUp(t *testing.T) {
	entered := make(chan struct{})
	ts := newTokenServer(t)
	ts.respond = func(w http.ResponseWriter, r *http.Request, n int) {
		if n == 1 {
			close(entered)
			<-r.Context().Done() // the leader hangs up
			return
		}
		fmt.Fprintf(w, `{"token":"tok-%d"}`, n)
	}
	c := newTestCache(t, Config{})
	waiting := make(chan struct{}, 1)
	c.onWait = func() { waiting <- struct{}{} }
	req := Request{Origin: loopbackOrigin, Realm: ts.URL}

	leaderCtx, cancel := context.WithCancel(t.Context())
	leaderErr := make(chan error, 1)
	go func() {
		_, err := c.Token(leaderCtx, req)
		leaderErr <- err
	}()
	<-entered
	waiterTok := make(chan string, 1)
	go func() {
		tok, err := c.Token(t.Context(), req)
		if err != nil {
			tok = err.Error()
		}
		waiterTok <- tok
	}()
	<-waiting
	cancel()
	if err := <-leaderErr; !errors.Is(err, context.Canceled) {
		t.Errorf("leader: %v, want context.Canceled", err)
	}
	if tok := <-waiterTok; tok != "tok-2" {
		t.Errorf("waiter got %q, want tok-2 from its own fetch", tok)
	}
}

func TestCacheInvalidate(t *testing.T) {
	ts := newTokenServer(t)
	c := newTestCache(t, Config{})
	req := Request{Origin: loopbackOrigin, Realm: ts.URL, Service: "s", Scopes: []string{"repository:a:pull"}}
	get := func() string {
		t.Helper()
		tok, err := c.Token(t.Context(), req)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	if got := get(); got != "tok-1" {
		t.Fatalf("got %q", got)
	}
	c.Invalidate(req, "not-the-cached-one")
	if got := get(); got != "tok-1" {
		t.Fatalf("after unrelated invalidation: %q, want tok-1", got)
	}
	c.Invalidate(req, "tok-1")
	if got := get(); got != "tok-2" {
		t.Fatalf("after invalidation: %q, want tok-2", got)
	}
	if ts.hits() != 2 {
		t.Fatalf("%d fetches, want 2", ts.hits())
	}
}

func TestCacheErrors(t *testing.T) {
	big := strings.Repeat("x", maxTokenBody+10)
	tests := []struct {
		name    string
		respond func(w http.ResponseWriter)
		check   func(t *testing.T, err error)
	}{
		{
			name: "docker hub 401",
			respond: func(w http.ResponseWriter) {
				w.WriteHeader(http.StatusUnauthorized)
				fmt.Fprint(w, `{"details":"incorrect username or password"}`)
			},
			check: func(t *testing.T, err error) {
				var te *TokenError
				if !errors.As(err, &te) || te.StatusCode != http.StatusUnauthorized || te.Message != "incorrect username or password" {
					t.Fatalf("err = %#v", err)
				}
				if strings.Contains(te.Error(), "?") {
					t.Errorf("error shows the query: %s", te.Error())
				}
			},
		},
		{
			name: "registry error document",
			respond: func(w http.ResponseWriter) {
				w.WriteHeader(http.StatusForbidden)
				fmt.Fprint(w, `{"errors":[{"code":"DENIED","message":"no\naccess"}]}`)
			},
			check: func(t *testing.T, err error) {
				var te *TokenError
				if !errors.As(err, &te) || te.StatusCode != http.StatusForbidden || te.Code != "DENIED" {
					t.Fatalf("err = %#v", err)
				}
				if strings.Contains(te.Error(), "\n") {
					t.Errorf("multi-line error: %q", te.Error())
				}
			},
		},
		{
			name:    "server error without body",
			respond: func(w http.ResponseWriter) { w.WriteHeader(http.StatusServiceUnavailable) },
			check: func(t *testing.T, err error) {
				var te *TokenError
				if !errors.As(err, &te) || te.StatusCode != http.StatusServiceUnavailable {
					t.Fatalf("err = %#v", err)
				}
			},
		},
		{
			name:    "oversized body",
			respond: func(w http.ResponseWriter) { fmt.Fprintf(w, `{"token":"%s"}`, big) },
			check: func(t *testing.T, err error) {
				if !errors.Is(err, ErrNoToken) {
					t.Fatalf("err = %v, want ErrNoToken", err)
				}
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ts := newTokenServer(t)
			ts.respond = func(w http.ResponseWriter, _ *http.Request, _ int) { tt.respond(w) }
			c := newTestCache(t, Config{})
			req := Request{Origin: loopbackOrigin, Realm: ts.URL + "/token", Service: "s"}
			_, err := c.Token(t.Context(), req)
			tt.check(t, err)
			// Failures are not cached.
			_, _ = c.Token(t.Context(), req)
			if ts.hits() != 2 {
				t.Errorf("%d fetches, want 2", ts.hits())
			}
		})
	}
}

func TestCacheRefusesInternalRealmForPublicRegistry(t *testing.T) {
	ts := newTokenServer(t)
	c := newTestCache(t, Config{})
	_, err := c.Token(t.Context(), Request{Origin: "http://registry.example.com", Realm: ts.URL})
	if !errors.Is(err, ErrRealmNotAllowed) {
		t.Fatalf("err = %v, want ErrRealmNotAllowed", err)
	}
	if ts.hits() != 0 {
		t.Fatalf("refused realm was contacted")
	}
	c = newTestCache(t, Config{AllowedRealms: []string{strings.TrimPrefix(ts.URL, "http://")}})
	if _, err := c.Token(t.Context(), Request{Origin: "http://registry.example.com", Realm: ts.URL}); err != nil {
		t.Fatalf("allowed realm: %v", err)
	}
}

func TestTokenRedirects(t *testing.T) {
	target := newTokenServer(t)
	forbidden := newTokenServer(t)
	realm := newTokenServer(t)
	realm.respond = func(w http.ResponseWriter, r *http.Request, _ int) {
		to := target.URL
		if r.URL.Query().Get("service") == "evil" {
			to = forbidden.URL
		}
		http.Redirect(w, r, to+"/token?"+r.URL.RawQuery, http.StatusTemporaryRedirect)
	}
	host := func(s string) string { return strings.TrimPrefix(s, "http://") }
	c := newTestCache(t, Config{AllowedRealms: []string{host(realm.URL), host(target.URL)}})
	req := Request{
		Origin: "https://registry.example.com", Realm: realm.URL, Service: "s",
		Credentials: Credentials{Username: "alice", Password: "pw"},
	}
	tok, err := c.Token(t.Context(), req)
	if err != nil || tok != "tok-1" {
		t.Fatalf("Token() = %q, %v", tok, err)
	}
	if realm.request(0).Header.Get("Authorization") == "" {
		t.Errorf("realm did not receive the credentials")
	}
	if h := target.request(0).Header.Get("Authorization"); h != "" {
		t.Errorf("redirect target received Authorization %q", h)
	}

	req.Service = "evil"
	if _, err := c.Token(t.Context(), req); !errors.Is(err, ErrRealmNotAllowed) {
		t.Fatalf("redirect to a refused host: %v, want ErrRealmNotAllowed", err)
	}
	if forbidden.hits() != 0 {
		t.Fatalf("refused redirect target was contacted")
	}
}
