package ratelimit_test

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"

	"github.com/wharf-mirror/wharf/internal/ratelimit"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
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

// step is one call of Allow after advancing the clock.
type step struct {
	advance   time.Duration
	key       string
	ok        bool
	retryWait time.Duration
}

func TestAllow(t *testing.T) {
	tests := []struct {
		name  string
		rate  float64
		burst int
		steps []step
	}{
		{
			name: "burst then steady rate", rate: 2, burst: 3,
			steps: []step{
				{0, "a", true, 0},
				{0, "a", true, 0},
				{0, "a", true, 0},
				{0, "a", false, 500 * time.Millisecond},
				{250 * time.Millisecond, "a", false, 250 * time.Millisecond},
				// Refusals take nothing: the wait keeps shrinking.
				{200 * time.Millisecond, "a", false, 50 * time.Millisecond},
				{50 * time.Millisecond, "a", true, 0},
				{0, "a", false, 500 * time.Millisecond},
				{500 * time.Millisecond, "a", true, 0},
				{500 * time.Millisecond, "a", true, 0},
				{0, "a", false, 500 * time.Millisecond},
			},
		},
		{
			name: "refill never exceeds burst", rate: 2, burst: 3,
			steps: []step{
				{0, "a", true, 0},
				{time.Hour, "a", true, 0},
				{0, "a", true, 0},
				{0, "a", true, 0},
				{0, "a", false, 500 * time.Millisecond},
			},
		},
		{
			name: "keys are independent", rate: 1, burst: 1,
			steps: []step{
				{0, "a", true, 0},
				{0, "a", false, time.Second},
				{0, "b", true, 0},
				{0, "b", false, time.Second},
				{400 * time.Millisecond, "a", false, 600 * time.Millisecond},
			},
		},
		{
			name: "fractional rate", rate: 0.25, burst: 1,
			steps: []step{
				{0, "a", true, 0},
				{time.Second, "a", false, 3 * time.Second},
				{3 * time.Second, "a", true, 0},
			},
		},
		{
			name: "rate that is not a whole number of nanoseconds", rate: 3, burst: 1,
			steps: []step{
				{0, "a", true, 0},
				{0, "a", false, 333333333 * time.Nanosecond},
				// Waiting exactly the announced time is enough.
				{333333333 * time.Nanosecond, "a", true, 0},
			},
		},
		{
			name: "clock going backwards", rate: 1, burst: 1,
			steps: []step{
				{0, "a", true, 0},
				{-time.Minute, "a", false, time.Minute + time.Second},
				{time.Minute + time.Second, "a", true, 0},
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			clock := newFakeClock()
			l := ratelimit.New(tt.rate, tt.burst, 16, clock.Now)
			for i, s := range tt.steps {
				clock.Advance(s.advance)
				ok, wait := l.Allow(s.key)
				if ok != s.ok || wait != s.retryWait {
					t.Fatalf("step %d: Allow(%q) = %v, %v; want %v, %v", i, s.key, ok, wait, s.ok, s.retryWait)
				}
			}
		})
	}
}

func TestNewRejectsNonsense(t *testing.T) {
	tests := []struct {
		name          string
		rate          float64
		burst, maxKey int
	}{
		{"zero rate", 0, 1, 1},
		{"negative rate", -1, 1, 1},
		{"NaN rate", nan(), 1, 1},
		{"zero burst", 1, 0, 1},
		{"zero maxKeys", 1, 1, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("New(%v, %d, %d) did not panic", tt.rate, tt.burst, tt.maxKey)
				}
			}()
			ratelimit.New(tt.rate, tt.burst, tt.maxKey, nil)
		})
	}
}

func nan() float64 {
	zero := 0.0
	return zero / zero
}

func TestExtremeRates(t *testing.T) {
	clock := newFakeClock()
	fast := ratelimit.New(1e12, 1<<30, 4, clock.Now)
	for range 1000 {
		if ok, _ := fast.Allow("a"); !ok {
			t.Fatal("a limit of 10¹² per second refused a request")
		}
	}
	slow := ratelimit.New(1e-30, 1<<30, 4, clock.Now)
	if ok, _ := slow.Allow("a"); !ok {
		t.Fatal("the first request of a fresh bucket was refused")
	}
}

func TestMemoryIsBounded(t *testing.T) {
	const maxKeys = 64
	clock := newFakeClock()
	l := ratelimit.New(1, 2, maxKeys, clock.Now)
	for i := range 10 * maxKeys {
		if ok, _ := l.Allow(fmt.Sprint("k", i)); !ok {
			t.Fatalf("key %d: a fresh key was refused", i)
		}
		if n := l.Len(); n > maxKeys {
			t.Fatalf("after %d keys the limiter holds %d buckets, more than %d", i+1, n, maxKeys)
		}
	}
	if n := l.Len(); n != maxKeys {
		t.Errorf("Len = %d, want %d", n, maxKeys)
	}
}

func TestEvictionPrefersFullBuckets(t *testing.T) {
	clock := newFakeClock()
	l := ratelimit.New(1, 2, 3, clock.Now)
	// busy empties its bucket first, so it becomes the least recently
	// used; idle takes one token later; hot empties its bucket last.
	l.Allow("busy")
	l.Allow("busy")
	clock.Advance(500 * time.Millisecond)
	l.Allow("idle")
	l.Allow("hot")
	l.Allow("hot")
	// At 1.6s idle has refilled completely; busy (1.6 tokens) and hot
	// (1.1 tokens) have not.
	clock.Advance(1100 * time.Millisecond)
	l.Allow("newcomer") // the limiter is full: one bucket must go
	for _, key := range []string{"busy", "hot"} {
		// A kept bucket grants one more request, a fresh one two.
		l.Allow(key)
		if ok, _ := l.Allow(key); ok {
			t.Errorf("%s's bucket was dropped although a full one (idle) could go", key)
		}
	}

	// Without a full bucket the least recently used one goes.
	l2 := ratelimit.New(1, 1, 2, clock.Now)
	l2.Allow("old")
	l2.Allow("recent")
	l2.Allow("old") // refused, but counts as use: recent is now the LRU
	l2.Allow("third")
	if ok, _ := l2.Allow("old"); ok {
		t.Error("old's bucket was dropped although recent was used less recently")
	}
	if ok, _ := l2.Allow("recent"); !ok {
		t.Error("recent's bucket survived; want it dropped as least recently used")
	}
}

func TestClientKey(t *testing.T) {
	tests := []struct {
		remote, want string
	}{
		{"192.0.2.7:51234", "192.0.2.7"},
		{"192.0.2.7", "192.0.2.7"},
		{"[::ffff:192.0.2.7]:443", "192.0.2.7"},
		{"[2001:db8:1:2:3:4:5:6]:443", "2001:db8:1:2::/64"},
		{"[2001:db8:1:2:ffff:ffff:ffff:ffff]:1", "2001:db8:1:2::/64"},
		{"[2001:db8:1:3::1]:1", "2001:db8:1:3::/64"},
		{"[fe80::1%eth0]:80", "fe80::/64"},
		{"[::1]:80", "::/64"},
		{"@", "@"},
		{"", ""},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/v2/", nil)
		r.RemoteAddr = tt.remote
		if got := ratelimit.ClientKey(r); got != tt.want {
			t.Errorf("ClientKey(%q) = %q, want %q", tt.remote, got, tt.want)
		}
	}
}

func TestIPv6PrefixSharesOneBucket(t *testing.T) {
	clock := newFakeClock()
	l := ratelimit.New(1, 2, 16, clock.Now)
	h := ratelimit.Middleware(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	statuses := make([]int, 0, 4)
	for i := range 4 {
		r := httptest.NewRequest(http.MethodGet, "/v2/", nil)
		r.RemoteAddr = fmt.Sprintf("[2001:db8:0:7::%x]:4000", i+1)
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		statuses = append(statuses, w.Code)
	}
	if diff := cmp.Diff([]int{200, 200, 429, 429}, statuses); diff != "" {
		t.Errorf("statuses for four addresses of one /64 (-want +got):\n%s", diff)
	}
}

func TestMiddleware(t *testing.T) {
	clock := newFakeClock()
	l := ratelimit.New(0.4, 1, 16, clock.Now)
	var served int
	h := ratelimit.Middleware(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served++
		w.WriteHeader(http.StatusNoContent)
	}))
	do := func() *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, "/v2/library/alpine/manifests/latest", nil)
		r.RemoteAddr = "192.0.2.1:1234"
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}

	if w := do(); w.Code != http.StatusNoContent || served != 1 {
		t.Fatalf("first request: status %d, served %d", w.Code, served)
	}
	tests := []struct {
		advance    time.Duration
		retryAfter string
	}{
		{0, "3"},                      // 2.5s rounds up
		{2 * time.Second, "1"},        // 0.5s rounds up to the minimum
		{499 * time.Millisecond, "1"}, // 1ms still says 1
	}
	for _, tt := range tests {
		clock.Advance(tt.advance)
		w := do()
		if w.Code != http.StatusTooManyRequests {
			t.Fatalf("status %d, want 429", w.Code)
		}
		gotHeader := map[string]string{
			"Content-Type":                    w.Header().Get("Content-Type"),
			"Docker-Distribution-API-Version": w.Header().Get("Docker-Distribution-API-Version"),
			"Retry-After":                     w.Header().Get("Retry-After"),
			"Content-Length":                  w.Header().Get("Content-Length"),
		}
		wantHeader := map[string]string{
			"Content-Type":                    "application/json",
			"Docker-Distribution-API-Version": "registry/2.0",
			"Retry-After":                     tt.retryAfter,
			"Content-Length":                  strconv.Itoa(w.Body.Len()),
		}
		if diff := cmp.Diff(wantHeader, gotHeader); diff != "" {
			t.Errorf("headers (-want +got):\n%s", diff)
		}
		var doc struct {
			Errors []struct {
				Code    string `json:"code"`
				Message string `json:"message"`
			} `json:"errors"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &doc); err != nil {
			t.Fatalf("body %q: %v", w.Body, err)
		}
		want := []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		}{{"TOOMANYREQUESTS", "too many requests from 192.0.2.1: limit is 0.4 per second"}}
		if diff := cmp.Diff(want, doc.Errors); diff != "" {
			t.Errorf("error document (-want +got):\n%s", diff)
		}
	}
	if served != 1 {
		t.Errorf("next served %d requests, want 1", served)
	}
	clock.Advance(time.Millisecond)
	if w := do(); w.Code != http.StatusNoContent || served != 2 {
		t.Errorf("after the wait: status %d, served %d", w.Code, served)
	}
}

func TestMiddlewareNilLimiter(t *testing.T) {
	next := http.NotFoundHandler()
	h := ratelimit.Middleware(nil, next)
	for range 100 {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(http.MethodGet, "/", nil))
		if w.Code != http.StatusNotFound {
			t.Fatalf("status %d, want next's 404", w.Code)
		}
	}
}

// TestConcurrentAllow checks under -race that concurrent callers share a
// bucket correctly: with a stopped clock exactly burst calls succeed.
func TestConcurrentAllow(t *testing.T) {
	const (
		burst      = 50
		goroutines = 8
		calls      = 100
	)
	clock := newFakeClock()
	l := ratelimit.New(1, burst, 4, clock.Now)
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		granted int
	)
	for g := range goroutines {
		wg.Go(func() {
			n := 0
			for i := range calls {
				if ok, _ := l.Allow("shared"); ok {
					n++
				}
				l.Allow(fmt.Sprint("churn-", g, "-", i)) // forces evictions
			}
			mu.Lock()
			granted += n
			mu.Unlock()
		})
	}
	wg.Wait()
	if granted != burst {
		t.Errorf("%d requests granted with a stopped clock, want the burst %d", granted, burst)
	}
	if n := l.Len(); n > 4 {
		t.Errorf("Len = %d, more than maxKeys", n)
	}
}

func FuzzClientKey(f *testing.F) {
	for _, s := range []string{"192.0.2.7:1", "[2001:db8::1]:443", "[fe80::1%eth0]:80", "@", "", "[::ffff:10.0.0.1]:5", "garbage"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, remote string) {
		r := &http.Request{RemoteAddr: remote}
		key := ratelimit.ClientKey(r)
		host := remote
		if h, _, err := net.SplitHostPort(remote); err == nil {
			host = h
		}
		a, err := netip.ParseAddr(host)
		if err != nil {
			return
		}
		a = a.WithZone("").Unmap()
		if a.Is4() {
			if key != a.String() {
				t.Fatalf("ClientKey(%q) = %q, want %q", remote, key, a)
			}
			return
		}
		p, err := netip.ParsePrefix(key)
		if err != nil || p.Bits() != 64 || !p.Contains(a) {
			t.Fatalf("ClientKey(%q) = %q, want the /64 containing %s", remote, key, a)
		}
	})
}

func BenchmarkAllow(b *testing.B) {
	b.Run("one key", func(b *testing.B) {
		l := ratelimit.New(1e9, 1<<20, 65536, nil)
		for b.Loop() {
			l.Allow("192.0.2.1")
		}
	})
	b.Run("many keys at the bound", func(b *testing.B) {
		keys := make([]string, 1<<17)
		for i := range keys {
			keys[i] = netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String()
		}
		l := ratelimit.New(10, 20, 65536, nil)
		i := 0
		for b.Loop() {
			l.Allow(keys[i%len(keys)])
			i++
		}
	})
	b.Run("parallel", func(b *testing.B) {
		l := ratelimit.New(1e9, 1<<20, 65536, nil)
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				l.Allow("192.0.2.1")
			}
		})
	})
}
