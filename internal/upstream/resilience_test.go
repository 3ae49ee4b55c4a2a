package upstream_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/wharf-mirror/wharf/internal/upstream"
)

// statusSequence answers the first len(statuses) requests with those
// statuses, then lets the registry serve normally.
func statusSequence(statuses ...int) func(w http.ResponseWriter, r *http.Request, n int) bool {
	return func(w http.ResponseWriter, _ *http.Request, n int) bool {
		if n > len(statuses) {
			return false
		}
		writeError(w, statuses[n-1], "UNAVAILABLE", "try later")
		return true
	}
}

func TestRetries(t *testing.T) {
	tests := []struct {
		name       string
		retries    int
		statuses   []int
		wantStatus int // 0 = success
		wantReqs   int
	}{
		{"503 twice, then success", 2, []int{503, 503}, 0, 3},
		{"502 then 504, then success", 2, []int{502, 504}, 0, 3},
		{"retries exhausted", 2, []int{503, 503, 503}, 503, 3},
		{"no retries configured", 0, []int{503}, 503, 1},
		{"500 is not retried", 3, []int{500}, 500, 1},
		{"429 is not retried", 3, []int{429}, 429, 1},
		{"404 is not retried", 3, []int{404}, 404, 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newFakeRegistry()
			reg.putManifest("library/nginx", "latest", fakeManifest{contentType: ociManifestType, body: []byte(testManifest)})
			reg.hook = statusSequence(tt.statuses...)
			c := newClient(t, upstream.Config{URL: serve(t, reg).URL, Retries: tt.retries})
			_, err := c.HeadManifest(t.Context(), "library/nginx", "latest")
			if tt.wantStatus == 0 {
				if err != nil {
					t.Fatalf("HeadManifest: %v", err)
				}
			} else {
				var re *upstream.ResponseError
				if !errors.As(err, &re) || re.StatusCode != tt.wantStatus {
					t.Fatalf("err = %v, want status %d", err, tt.wantStatus)
				}
			}
			if got := reg.count(); got != tt.wantReqs {
				t.Errorf("%d requests, want %d", got, tt.wantReqs)
			}
		})
	}
}

func TestTooManyRequests(t *testing.T) {
	clock := newFakeClock()
	tests := []struct {
		name       string
		retryAfter string
		want       time.Duration
	}{
		{"seconds", "120", 120 * time.Second},
		{"http date", clock.Now().Add(90 * time.Second).Format(http.TimeFormat), 90 * time.Second},
		{"date in the past", clock.Now().Add(-time.Minute).Format(http.TimeFormat), 0},
		{"absent", "", 0},
		{"garbage", "soon", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newFakeRegistry()
			reg.hook = func(w http.ResponseWriter, _ *http.Request, _ int) bool {
				if tt.retryAfter != "" {
					w.Header().Set("Retry-After", tt.retryAfter)
				}
				writeError(w, http.StatusTooManyRequests, "TOOMANYREQUESTS", "You have reached your pull rate limit.")
				return true
			}
			c := newClient(t, upstream.Config{URL: serve(t, reg).URL, Retries: 3, Now: clock.Now})
			_, _, err := c.GetManifest(t.Context(), "library/nginx", "latest")
			var re *upstream.ResponseError
			if !errors.As(err, &re) || re.StatusCode != http.StatusTooManyRequests {
				t.Fatalf("err = %v, want 429", err)
			}
			if reg.count() != 1 {
				t.Errorf("429 was retried: %d requests", reg.count())
			}
			if !upstream.IsTransient(err) {
				t.Errorf("429 must allow serving stale content")
			}
			if got := re.RetryAfter(); got != tt.want {
				t.Errorf("RetryAfter() = %v, want %v", got, tt.want)
			}
			if len(re.Errors) != 1 || re.Errors[0].Code != "TOOMANYREQUESTS" {
				t.Errorf("Errors = %+v", re.Errors)
			}
		})
	}
}

// closedAddr returns a loopback address nothing listens on.
func closedAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

func TestUnreachable(t *testing.T) {
	c := newClient(t, upstream.Config{URL: "http://" + closedAddr(t), Retries: 2})
	_, err := c.HeadManifest(t.Context(), "library/nginx", "latest")
	if !errors.Is(err, upstream.ErrUnreachable) || !upstream.IsTransient(err) {
		t.Fatalf("err = %v, want a transient ErrUnreachable", err)
	}
	var opErr *net.OpError
	if !errors.As(err, &opErr) {
		t.Errorf("the network error is not in the chain: %v", err)
	}
	if err := c.Ping(t.Context()); !errors.Is(err, upstream.ErrUnreachable) {
		t.Errorf("Ping: %v, want ErrUnreachable", err)
	}
}

func TestConnectionResetBeforeResponseIsRetried(t *testing.T) {
	reg := newFakeRegistry()
	d := reg.putBlob([]byte("content"))
	reg.hook = func(w http.ResponseWriter, _ *http.Request, n int) bool {
		if n > 1 {
			return false
		}
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
		return true
	}
	c := newClient(t, upstream.Config{URL: serve(t, reg).URL, Retries: 2})
	rc, size, err := c.GetBlob(t.Context(), "library/nginx", d)
	if err != nil {
		t.Fatalf("GetBlob: %v", err)
	}
	defer rc.Close()
	if b, err := io.ReadAll(rc); err != nil || string(b) != "content" || size != 7 {
		t.Fatalf("got %q (%d), %v", b, size, err)
	}
}

func TestBlobBodyFailureIsNotRetried(t *testing.T) {
	reg := newFakeRegistry()
	d := reg.putBlob([]byte("0123456789"))
	reg.hook = func(w http.ResponseWriter, _ *http.Request, _ int) bool {
		w.Header().Set("Content-Length", "10")
		w.WriteHeader(http.StatusOK)
		w.Write([]byte("01234"))
		w.(http.Flusher).Flush()
		if conn, _, err := w.(http.Hijacker).Hijack(); err == nil {
			conn.Close()
		}
		return true
	}
	c := newClient(t, upstream.Config{URL: serve(t, reg).URL, Retries: 3})
	rc, size, err := c.GetBlob(t.Context(), "library/nginx", d)
	if err != nil {
		t.Fatalf("GetBlob: %v", err)
	}
	defer rc.Close()
	if size != 10 {
		t.Errorf("size %d, want 10", size)
	}
	if _, err := io.ReadAll(rc); !errors.Is(err, io.ErrUnexpectedEOF) {
		t.Errorf("reading a cut body: %v, want io.ErrUnexpectedEOF", err)
	}
	if reg.count() != 1 {
		t.Errorf("%d requests: a started body must not be retried", reg.count())
	}
}

func TestContextEnds(t *testing.T) {
	entered := make(chan struct{})
	reg := newFakeRegistry()
	reg.hook = func(w http.ResponseWriter, r *http.Request, _ int) bool {
		close(entered)
		<-r.Context().Done()
		return true
	}
	c := newClient(t, upstream.Config{URL: serve(t, reg).URL, Retries: 3})
	ctx, cancel := context.WithCancel(t.Context())
	errc := make(chan error, 1)
	go func() {
		_, err := c.HeadManifest(ctx, "library/nginx", "latest")
		errc <- err
	}()
	<-entered
	cancel()
	err := <-errc
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if errors.Is(err, upstream.ErrUnreachable) || upstream.IsTransient(err) {
		t.Errorf("our own cancellation is not an upstream failure: %v", err)
	}
	if reg.count() != 1 {
		t.Errorf("%d requests after cancellation, want 1", reg.count())
	}
}

func TestRateLimitHeaders(t *testing.T) {
	clock := newFakeClock()
	reg, cdn := newFakeRegistry(), newFakeRegistry()
	reg.putManifest("library/nginx", "latest", fakeManifest{contentType: ociManifestType, body: []byte(testManifest)})
	reg.header = http.Header{
		"Ratelimit-Limit":         {"100;w=21600"},
		"Ratelimit-Remaining":     {"76;w=21600"},
		"Docker-Ratelimit-Source": {"192.0.2.7"},
	}
	reg.redirect = func(r *http.Request) string {
		if strings.Contains(r.URL.Path, "/blobs/") {
			return "http://cdn.test" + r.URL.Path
		}
		return ""
	}
	cdn.header = http.Header{"Ratelimit-Limit": {"1;w=1"}, "Ratelimit-Remaining": {"0;w=1"}}
	d := cdn.putBlob([]byte("b"))
	tr := namedHosts(t, map[string]*httptest.Server{"registry.test": serve(t, reg), "cdn.test": serve(t, cdn)})
	c := newClient(t, upstream.Config{URL: "http://registry.test", Transport: tr, Now: clock.Now})

	if rl := c.RateLimit(); !rl.Seen.IsZero() {
		t.Fatalf("RateLimit before any request: %+v", rl)
	}
	if _, err := c.HeadManifest(t.Context(), "library/nginx", "latest"); err != nil {
		t.Fatal(err)
	}
	want := upstream.RateLimit{Limit: 100, Remaining: 76, Window: 6 * time.Hour, Source: "192.0.2.7", Seen: clock.Now()}
	if diff := cmp.Diff(want, c.RateLimit()); diff != "" {
		t.Errorf("after HEAD (-want +got):\n%s", diff)
	}

	// A CDN's headers are not the registry's quota.
	clock.Advance(time.Minute)
	reg.header = nil
	if _, err := c.HeadBlob(t.Context(), "library/nginx", d); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, c.RateLimit()); diff != "" {
		t.Errorf("after a redirect to a CDN (-want +got):\n%s", diff)
	}
}

func TestRateLimitParsing(t *testing.T) {
	tests := []struct {
		name   string
		header http.Header
		want   upstream.RateLimit // Seen is filled in
		seen   bool
	}{
		{"no window", http.Header{"Ratelimit-Limit": {"200"}, "Ratelimit-Remaining": {"199"}},
			upstream.RateLimit{Limit: 200, Remaining: 199}, true},
		{"remaining only", http.Header{"Ratelimit-Remaining": {"0;w=21600"}},
			upstream.RateLimit{Limit: -1, Remaining: 0, Window: 6 * time.Hour}, true},
		{"extra parameters", http.Header{"Ratelimit-Limit": {"100;w=21600;comment=x"}, "Ratelimit-Remaining": {" 5 ; w=60"}},
			upstream.RateLimit{Limit: 100, Remaining: 5, Window: 6 * time.Hour}, true},
		{"garbage", http.Header{"Ratelimit-Limit": {"lots"}, "Ratelimit-Remaining": {"-1"}},
			upstream.RateLimit{}, false},
		{"absent", http.Header{}, upstream.RateLimit{}, false},
	}
	clock := newFakeClock()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			reg := newFakeRegistry()
			reg.header = tt.header
			c := newClient(t, upstream.Config{URL: serve(t, reg).URL, Now: clock.Now})
			_ = c.Ping(t.Context())
			want := tt.want
			if tt.seen {
				want.Seen = clock.Now()
			}
			if diff := cmp.Diff(want, c.RateLimit()); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestDoPassthrough(t *testing.T) {
	reg := newFakeRegistry()
	reg.hook = func(w http.ResponseWriter, r *http.Request, n int) bool {
		switch {
		case n == 1:
			writeError(w, http.StatusServiceUnavailable, "UNAVAILABLE", "later")
		case strings.HasSuffix(r.URL.Path, "/tags/list"):
			w.Header().Set("Link", `</v2/library/nginx/tags/list?last=b&n=2>; rel="next"`)
			w.Write([]byte(`{"name":"library/nginx","tags":["a","b"]}`))
		default:
			writeError(w, http.StatusNotFound, "NAME_UNKNOWN", "no referrers API")
		}
		return true
	}
	c := newClient(t, upstream.Config{URL: serve(t, reg).URL, Retries: 1})
	resp, err := c.Do(t.Context(), http.MethodGet, "library/nginx", "tags/list", "n=2&last=a", []string{"application/json"})
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"tags":["a","b"]`) || resp.Header.Get("Link") == "" {
		t.Errorf("got %d %q, Link %q", resp.StatusCode, body, resp.Header.Get("Link"))
	}
	reqs := reg.requests()
	last := reqs[len(reqs)-1]
	if last.RawQuery != "n=2&last=a" || last.Header.Get("Accept") != "application/json" {
		t.Errorf("upstream saw query %q, Accept %q", last.RawQuery, last.Header.Get("Accept"))
	}

	// Error statuses are the caller's to relay.
	d := "sha256:" + strings.Repeat("a", 64)
	resp, err = c.Do(t.Context(), http.MethodGet, "library/nginx", "referrers/"+d, "artifactType=x", nil)
	if err != nil {
		t.Fatalf("Do: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Errorf("status %d, want the upstream's 404", resp.StatusCode)
	}
}

func TestNewValidation(t *testing.T) {
	bad := []upstream.Config{
		{},
		{URL: "registry-1.docker.io"},
		{URL: "ftp://registry.test"},
		{URL: "https://user:pw@registry.test"},
		{URL: "https://registry.test?x=1"},
		{URL: "https://"},
		{URL: "https://registry.test", Retries: -1},
		{URL: "https://registry.test", ConnectTimeout: -time.Second},
		{URL: "https://registry.test", UserAgent: "a\r\nX-Evil: 1"},
	}
	for _, cfg := range bad {
		if _, err := upstream.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
	c, err := upstream.New(upstream.Config{URL: "https://Registry-1.Docker.io/"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Name() != "registry-1.docker.io" {
		t.Errorf("default name %q", c.Name())
	}
}

// TestNoRetryAfterTimeout: an upstream that accepts connections but never
// answers costs one header timeout, not one per attempt.
func TestNoRetryAfterTimeout(t *testing.T) {
	var mu sync.Mutex
	hits := 0
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		hits++
		mu.Unlock()
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })
	c := newClient(t, upstream.Config{URL: srv.URL, Retries: 2, HeaderTimeout: 50 * time.Millisecond})
	_, err := c.HeadManifest(context.Background(), "library/app", "v1")
	if !errors.Is(err, upstream.ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if hits != 1 {
		t.Fatalf("%d attempts after a header timeout, want 1", hits)
	}
}
