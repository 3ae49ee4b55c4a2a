package server

import (
	"context"
	"net/http"

	"github.com/wharf-mirror/wharf/internal/meta"
	"github.com/wharf-mirror/wharf/internal/metrics"
	"github.com/wharf-mirror/wharf/internal/mirror"
	"github.com/wharf-mirror/wharf/internal/ociapi"
	"github.com/wharf-mirror/wharf/internal/upstream"
)

// *metrics.Metrics is the observer of every component that reports to
// one; each declares its own small interface so that none of them depends
// on Prometheus.
var (
	_ ociapi.Observer   = (*metrics.Metrics)(nil)
	_ mirror.Observer   = (*metrics.Metrics)(nil)
	_ upstream.Observer = (*metrics.Metrics)(nil)
)

// newMetrics creates the instance's own registry (Go runtime and process
// collectors included) and the collectors of wharf on it, and the handler
// that serves them. Every instance has its own registry, so that several
// can run in one process (tests).
func newMetrics() (*metrics.Metrics, http.Handler) {
	reg := metrics.NewRegistry()
	return metrics.New(reg), metrics.Handler(reg)
}

// watchRateLimit exposes the Docker Hub rate-limit headers c last saw.
func watchRateLimit(m *metrics.Metrics, name string, c *upstream.Client) {
	m.WatchRateLimit(name, func() (limit, remaining int) {
		rl := c.RateLimit()
		if rl.Seen.IsZero() {
			return -1, -1 // never reported: no sample
		}
		return rl.Limit, rl.Remaining
	})
}

// watchCache makes the cache gauges read the index at scrape time, so
// they agree with it whatever filled or evicted the cache.
func watchCache(m *metrics.Metrics, index meta.Index) {
	m.WatchCache(func(ctx context.Context) (metrics.CacheUsage, error) {
		u, err := index.Usage(ctx)
		if err != nil {
			return metrics.CacheUsage{}, err
		}
		return metrics.CacheUsage{Blobs: int64(u.Blobs), Manifests: int64(u.Manifests), Bytes: u.Bytes}, nil
	})
}
