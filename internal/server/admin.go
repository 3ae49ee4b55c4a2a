package server

import (
	"context"
	"crypto/subtle"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/wharf-mirror/wharf/internal/admin"
	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/gc"
	"github.com/wharf-mirror/wharf/internal/metrics"
	"github.com/wharf-mirror/wharf/internal/route"
	"github.com/wharf-mirror/wharf/internal/upstream"
)

// probeTimeout bounds one upstream ping of GET /api/v1/upstreams?probe=1.
const probeTimeout = 5 * time.Second

// adminState is what the admin API reports beyond the index: when the
// instance started, upstream health and clients, the last eviction run.
type adminState struct {
	version string
	started time.Time
	metrics *metrics.Metrics
	health  *health
	clients map[string]*upstream.Client

	mu     sync.Mutex
	lastGC *adminapi.GCReport
}

func (s *adminState) recordGC(r gc.Report, err error) {
	rep := admin.GCReport(r, time.Now().Add(-r.Duration), err)
	s.mu.Lock()
	s.lastGC = &rep
	s.mu.Unlock()
}

// newAdminAPI builds the admin API of the instance.
func (i *Instance) newAdminAPI(routes *route.Table) (*admin.Handler, error) {
	return admin.New(admin.Config{
		Index:     i.index,
		Blobs:     i.blobs,
		Mirror:    i.mirror,
		Collector: i.gc.c,
		Route: func(name string) (string, string, error) {
			t, err := routes.Match("", "", "", name)
			if err != nil {
				return "", "", err
			}
			// The repository must be one a client could request.
			if _, err := route.ParsePath("/v2/" + t.Repo + "/tags/list"); err != nil {
				return "", "", fmt.Errorf("repository %q: %w", t.Repo, err)
			}
			return t.Upstream, t.Repo, nil
		},
		Known: func(name string) bool {
			_, ok := i.state.clients[name]
			return ok
		},
		Stats:     i.stats,
		Upstreams: i.upstreams,
		Logger:    i.log,
	})
}

func (i *Instance) stats(ctx context.Context) (adminapi.Stats, error) {
	u, err := i.index.Usage(ctx)
	if err != nil {
		return adminapi.Stats{}, err
	}
	t := i.state.metrics.Totals()
	s := adminapi.Stats{
		Version: i.state.version,
		Started: i.state.started.UTC(),
		Cache: adminapi.Cache{
			Bytes: u.Bytes, MaxBytes: i.cfg.Cache.MaxSize.Bytes(),
			Manifests: u.Manifests, Blobs: u.Blobs,
		},
		Traffic: adminapi.Traffic{
			Requests: t.Requests, Hits: t.Hits, Misses: t.Misses,
			BytesFromCache: t.BytesFromCache, BytesFromUpstream: t.BytesFromUpstream,
			BytesFetched: t.BytesFetched, StaleServes: t.StaleServes,
		},
	}
	if d := i.cfg.Cache.MaxAge.Std(); d > 0 {
		s.Cache.MaxAge = d.String()
	}
	if n := t.Hits + t.Misses; n > 0 {
		s.Traffic.HitRatio = float64(t.Hits) / float64(n)
	}
	i.state.mu.Lock()
	if i.state.lastGC != nil {
		rep := *i.state.lastGC
		s.Cache.LastGC = &rep
	}
	i.state.mu.Unlock()
	return s, nil
}

func (i *Instance) upstreams(ctx context.Context, probe bool) []adminapi.Upstream {
	names := make([]string, 0, len(i.state.clients))
	for n := range i.state.clients {
		names = append(names, n)
	}
	sort.Strings(names)
	if probe {
		var wg sync.WaitGroup
		for _, n := range names {
			wg.Go(func() {
				pctx, cancel := context.WithTimeout(ctx, probeTimeout)
				defer cancel()
				i.state.clients[n].Ping(pctx) // the health observer records the outcome
			})
		}
		wg.Wait()
	}
	out := make([]adminapi.Upstream, 0, len(names))
	for _, n := range names {
		u := i.cfg.Upstreams[n]
		a := adminapi.Upstream{Name: n, URL: u.URL, Aliases: u.Aliases}
		var lastOK, lastErr time.Time
		a.Health, a.Error, lastOK, lastErr = i.state.health.state(n)
		a.LastOK, a.LastError = lastOK.UTC(), lastErr.UTC()
		if rl := i.state.clients[n].RateLimit(); !rl.Seen.IsZero() {
			a.RateLimit = &adminapi.RateLimit{Limit: rl.Limit, Remaining: rl.Remaining, Source: rl.Source, Seen: rl.Seen.UTC()}
			if rl.Window > 0 {
				a.RateLimit.Window = rl.Window.String()
			}
		}
		out = append(out, a)
	}
	return out
}

// requireToken guards h with the admin token: without one configured
// (loopback only; config validation enforces it) everything passes.
func requireToken(token string, h http.Handler) http.Handler {
	if token == "" {
		return h
	}
	want := []byte("Bearer " + token)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get("Authorization")
		// The scheme is case-insensitive (RFC 9110 §11.1).
		if len(got) > 7 && strings.EqualFold(got[:7], "bearer ") {
			got = "Bearer " + got[7:]
		}
		if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="wharf admin"`)
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusUnauthorized)
			w.Write([]byte(`{"errors":[{"code":"UNAUTHORIZED","message":"the admin API needs \"Authorization: Bearer <admin_token>\""}]}` + "\n"))
			return
		}
		h.ServeHTTP(w, r)
	})
}
