package upstream

import (
	"net/netip"
	"time"
)

// SetBackoff shortens the delay before the first retry, so that retry
// tests do not sleep for real backoff periods.
func SetBackoff(c *Client, d time.Duration) { c.backoff = d }

// SetInternalAddr replaces how the default transport's dialer classifies
// addresses, so that a test can make one loopback listener look public.
// It must be called before the client's first request.
func SetInternalAddr(c *Client, f func(netip.AddrPort) bool) { c.guard.isInternal = f }

// SetOnWait installs a function called whenever a request starts waiting
// for a slot (Config.MaxConcurrent). It must be called before the
// client's first request.
func SetOnWait(c *Client, f func()) { c.onWait = f }
