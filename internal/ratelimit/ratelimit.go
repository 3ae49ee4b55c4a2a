// Package ratelimit limits how many requests per second each client may
// make, with one token bucket per client address, and answers clients over
// their limit with 429 TOOMANYREQUESTS and Retry-After (distribution-spec,
// "Error Codes"; RFC 9110 §10.2.3).
//
// Invariants:
//   - A key may make burst requests at once and then rate per second; the
//     bucket is kept as a theoretical arrival time in integer nanoseconds
//     (GCRA), so refills are exact and a client that waits the Retry-After
//     it was told is let through.
//   - Memory is bounded: a Limiter holds at most maxKeys buckets. To make
//     room, a full bucket (one that has refilled completely, so forgetting
//     it changes nothing) is dropped first, else the least recently used.
//     An attacker cycling through addresses can therefore only reset
//     buckets, never grow the map.
//   - An IPv6 client is keyed by its /64: one host usually owns the whole
//     prefix and could otherwise take a fresh bucket per request.
//   - A nil *Limiter limits nothing.
package ratelimit

import (
	"container/heap"
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// Limiter holds one token bucket per key. It is safe for concurrent use.
type Limiter struct {
	rate     float64       // tokens per second, for messages
	interval time.Duration // time to earn one token, ≥ 1ns
	window   time.Duration // burst × interval: how far ahead of now a bucket may run
	maxKeys  int
	now      func() time.Time
	epoch    time.Time // origin of the theoretical arrival times

	mu      sync.Mutex
	buckets map[string]*bucket
	byTAT   tatHeap // all buckets, earliest theoretical arrival time first
	lru     bucket  // sentinel of the recency list: lru.next is the most recent
}

// bucket is one key's state. Under GCRA a bucket holding k of burst tokens
// has tat = now + (burst-k)×interval; it is full when tat ≤ now.
type bucket struct {
	key        string
	tat        time.Duration // theoretical arrival time, relative to epoch
	index      int           // position in byTAT
	prev, next *bucket       // recency list
}

// New returns a limiter that grants rate tokens per second to each key,
// up to burst at once, and keeps at most maxKeys buckets (e.g. 65536; a
// bucket costs about 100 bytes plus its key). now is the clock; nil means
// time.Now. New panics unless rate is positive and finite, burst ≥ 1 and
// maxKeys ≥ 1: these are programming errors, configuration is validated
// before.
func New(rate float64, burst int, maxKeys int, now func() time.Time) *Limiter {
	if !(rate > 0) || math.IsInf(rate, 1) {
		panic(fmt.Sprintf("ratelimit: rate %v must be positive and finite", rate))
	}
	if burst < 1 {
		panic(fmt.Sprintf("ratelimit: burst %d must be at least 1", burst))
	}
	if maxKeys < 1 {
		panic(fmt.Sprintf("ratelimit: maxKeys %d must be at least 1", maxKeys))
	}
	if now == nil {
		now = time.Now
	}
	// Rates above one per nanosecond round to one per nanosecond; rates so
	// low that one token takes longer than a century round to a century,
	// which keeps burst × interval far from overflowing.
	const century = 100 * 365 * 24 * time.Hour
	interval := time.Duration(min(math.Round(float64(time.Second)/rate), float64(century)))
	interval = max(interval, 1)
	window := interval * time.Duration(burst)
	if window/time.Duration(burst) != interval || window > century {
		window = century
	}
	l := &Limiter{
		rate:     rate,
		interval: interval,
		window:   window,
		maxKeys:  maxKeys,
		now:      now,
		epoch:    now(),
		buckets:  make(map[string]*bucket),
	}
	l.lru.prev, l.lru.next = &l.lru, &l.lru
	return l
}

// Allow takes one token from key's bucket. When the bucket is empty it
// reports false and how long until a token will be there; nothing is
// taken then, so a client that keeps retrying early does not push its own
// next token further away.
func (l *Limiter) Allow(key string) (ok bool, retryAfter time.Duration) {
	now := l.now().Sub(l.epoch)
	l.mu.Lock()
	defer l.mu.Unlock()
	b := l.buckets[key]
	if b == nil {
		b = l.add(key, now)
	} else {
		l.touch(b)
	}
	// GCRA: the request conforms when, after adding its interval, the
	// bucket's debt does not exceed the burst window.
	next := max(b.tat, now) + l.interval
	if wait := next - now - l.window; wait > 0 {
		return false, wait
	}
	b.tat = next
	heap.Fix(&l.byTAT, b.index)
	return true, 0
}

// Len returns how many buckets the limiter holds, for metrics.
func (l *Limiter) Len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.buckets)
}

// add creates a full bucket for key, first dropping one bucket when the
// limiter is at maxKeys.
func (l *Limiter) add(key string, now time.Duration) *bucket {
	if len(l.buckets) >= l.maxKeys {
		victim := l.byTAT[0]
		if victim.tat > now {
			// No bucket is full: forget the one unused for longest.
			victim = l.lru.prev
		}
		l.remove(victim)
	}
	b := &bucket{key: key, tat: now}
	l.buckets[key] = b
	heap.Push(&l.byTAT, b)
	l.pushFront(b)
	return b
}

func (l *Limiter) remove(b *bucket) {
	delete(l.buckets, b.key)
	heap.Remove(&l.byTAT, b.index)
	b.prev.next, b.next.prev = b.next, b.prev
	b.prev, b.next = nil, nil
}

// touch makes b the most recently used bucket.
func (l *Limiter) touch(b *bucket) {
	if l.lru.next == b {
		return
	}
	b.prev.next, b.next.prev = b.next, b.prev
	l.pushFront(b)
}

func (l *Limiter) pushFront(b *bucket) {
	b.prev, b.next = &l.lru, l.lru.next
	l.lru.next.prev = b
	l.lru.next = b
}

// tatHeap orders buckets by theoretical arrival time (container/heap).
type tatHeap []*bucket

func (h tatHeap) Len() int           { return len(h) }
func (h tatHeap) Less(i, j int) bool { return h[i].tat < h[j].tat }
func (h tatHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *tatHeap) Push(x any) {
	b := x.(*bucket)
	b.index = len(*h)
	*h = append(*h, b)
}
func (h *tatHeap) Pop() any {
	old := *h
	b := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return b
}

// ClientKey is the rate-limit key of r's client: the host part of
// r.RemoteAddr, an IPv4 address (IPv4-mapped IPv6 included) as is, an
// IPv6 address as its /64 prefix ("2001:db8:1:2::/64"), zones dropped. A
// RemoteAddr that is not an address (a Unix socket) is its own key. Behind
// a reverse proxy RemoteAddr is the proxy's unless the server replaced it.
func ClientKey(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	a, err := netip.ParseAddr(host)
	if err != nil {
		return host
	}
	a = a.WithZone("").Unmap()
	if a.Is4() {
		return a.String()
	}
	p, _ := a.Prefix(64)
	return p.String()
}

// Middleware answers a request whose client (ClientKey) is over l's limit
// with 429 TOOMANYREQUESTS, Retry-After in whole seconds (at least 1) and
// an OCI error body, and passes every other request to next. With a nil l
// it returns next itself.
//
// containerd retries a 429 on the same host up to five times rather than
// falling back (client-compat.md §2.5); an honest Retry-After keeps those
// retries from arriving while the bucket is still empty.
func Middleware(l *Limiter, next http.Handler) http.Handler {
	if l == nil {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		key := ClientKey(r)
		ok, wait := l.Allow(key)
		if ok {
			next.ServeHTTP(w, r)
			return
		}
		secs := max(1, int64(math.Ceil(wait.Seconds())))
		body, _ := json.Marshal(errorDocument{Errors: []errorInfo{{
			Code:    "TOOMANYREQUESTS",
			Message: fmt.Sprintf("too many requests from %s: limit is %s per second", key, strconv.FormatFloat(l.rate, 'g', -1, 64)),
		}}})
		h := w.Header()
		h.Set("Content-Type", "application/json")
		h.Set("Docker-Distribution-API-Version", "registry/2.0")
		h.Set("Retry-After", strconv.FormatInt(secs, 10))
		h.Set("Content-Length", strconv.Itoa(len(body)+1))
		w.WriteHeader(http.StatusTooManyRequests)
		_, _ = w.Write(append(body, '\n'))
	})
}

// errorDocument is the OCI error body (distribution-spec, "Error Codes").
type errorDocument struct {
	Errors []errorInfo `json:"errors"`
}

type errorInfo struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}
