package auth

import (
	"container/list"
	"sync"
	"time"
)

// maxLimiterEntries bounds the addresses the failure limiter remembers.
const maxLimiterEntries = 10000

// failureLimiter counts failed authentications per client address in a
// fixed window that starts at an address's first failure. Memory is
// bounded: at most max addresses, the one whose window started first
// dropped when full (expired windows go first, as they are the oldest).
type failureLimiter struct {
	limit  int
	window time.Duration
	max    int

	mu    sync.Mutex
	addrs map[string]*list.Element // of *failureWindow
	order *list.List               // windows by start, oldest at the front
}

type failureWindow struct {
	addr     string
	start    time.Time
	failures int
}

func newFailureLimiter(limit int, window time.Duration, max int) *failureLimiter {
	return &failureLimiter{limit: limit, window: window, max: max, addrs: make(map[string]*list.Element), order: list.New()}
}

// check returns a *TooManyFailuresError when addr is over the limit. A
// nil limiter allows everything.
func (l *failureLimiter) check(addr string, now time.Time) error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	e, ok := l.addrs[addr]
	if !ok {
		return nil
	}
	w := e.Value.(*failureWindow)
	end := w.start.Add(l.window)
	if w.failures < l.limit || !now.Before(end) {
		return nil
	}
	return &TooManyFailuresError{RetryAfter: end.Sub(now)}
}

// fail records a failure from addr and reports whether it is the one that
// reached the limit.
func (l *failureLimiter) fail(addr string, now time.Time) bool {
	if l == nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.addrs[addr]; ok {
		w := e.Value.(*failureWindow)
		if now.Before(w.start.Add(l.window)) && !now.Before(w.start) {
			w.failures++
			return w.failures == l.limit
		}
		// A new window: it is now the youngest.
		w.start, w.failures = now, 1
		l.order.MoveToBack(e)
		return l.limit == 1
	}
	for l.order.Len() >= l.max {
		front := l.order.Front()
		delete(l.addrs, front.Value.(*failureWindow).addr)
		l.order.Remove(front)
	}
	l.addrs[addr] = l.order.PushBack(&failureWindow{addr: addr, start: now, failures: 1})
	return l.limit == 1
}

// len is the number of addresses remembered (tests).
func (l *failureLimiter) len() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.order.Len()
}
