package upstream

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// RateLimit is the pull quota Docker Hub reported last (client-compat.md
// §4.3): `ratelimit-limit: 100;w=21600`, `ratelimit-remaining: 76;w=21600`,
// `docker-ratelimit-source: <ip>`. Other registries do not send these
// headers, and Docker Hub omits them for unlimited accounts.
type RateLimit struct {
	// Limit and Remaining are pulls per Window; -1 when that header was
	// missing or unreadable in the response that set the others.
	Limit, Remaining int
	Window           time.Duration
	// Source is who the quota is counted for (an IP address or account).
	Source string
	// Seen is when the headers arrived; zero means never.
	Seen time.Time
}

// RateLimit returns the rate-limit headers of the latest registry response
// that carried them.
func (c *Client) RateLimit() RateLimit {
	if rl := c.rate.Load(); rl != nil {
		return *rl
	}
	return RateLimit{}
}

// observeRateLimit records the rate-limit headers of a registry response,
// if it has any. HEAD responses count: they carry the headers without
// costing a pull.
func (c *Client) observeRateLimit(h http.Header) {
	limit, limitWindow, okLimit := parseRateLimit(h.Get("Ratelimit-Limit"))
	remaining, remainingWindow, okRemaining := parseRateLimit(h.Get("Ratelimit-Remaining"))
	if !okLimit && !okRemaining {
		return
	}
	rl := &RateLimit{
		Limit:     -1,
		Remaining: -1,
		Source:    strings.TrimSpace(h.Get("Docker-Ratelimit-Source")),
		Seen:      c.now(),
	}
	if okLimit {
		rl.Limit, rl.Window = limit, limitWindow
	}
	if okRemaining {
		rl.Remaining = remaining
		if rl.Window == 0 {
			rl.Window = remainingWindow
		}
	}
	c.rate.Store(rl)
}

// parseRateLimit reads "<n>[;w=<seconds>][;other=params]".
func parseRateLimit(v string) (n int, window time.Duration, ok bool) {
	if v == "" {
		return 0, 0, false
	}
	parts := strings.Split(v, ";")
	n, err := strconv.Atoi(strings.TrimSpace(parts[0]))
	if err != nil || n < 0 {
		return 0, 0, false
	}
	for _, p := range parts[1:] {
		k, val, _ := strings.Cut(strings.TrimSpace(p), "=")
		if strings.EqualFold(k, "w") {
			if secs, err := strconv.Atoi(strings.TrimSpace(val)); err == nil && secs > 0 {
				window = time.Duration(secs) * time.Second
			}
		}
	}
	return n, window, true
}
