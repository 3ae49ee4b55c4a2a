package upstream

import "time"

// SetBackoff shortens the delay before the first retry, so that retry
// tests do not sleep for real backoff periods.
func SetBackoff(c *Client, d time.Duration) { c.backoff = d }
