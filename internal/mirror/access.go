package mirror

import (
	"context"
	"log/slog"
	"sync"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/meta"
)

// accessLog batches last-access updates: a cache hit only adds a digest to a
// set in memory, and the set is written to the index periodically, so the
// hot path never waits for a database write.
type accessLog struct {
	index meta.Index
	log   *slog.Logger

	mu      sync.Mutex
	pending map[digest.Digest]struct{}
}

func newAccessLog(index meta.Index, log *slog.Logger) *accessLog {
	return &accessLog{index: index, log: log, pending: make(map[digest.Digest]struct{})}
}

func (a *accessLog) touch(d digest.Digest) {
	a.mu.Lock()
	a.pending[d] = struct{}{}
	a.mu.Unlock()
}

func (a *accessLog) run(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := a.flush(ctx); err != nil {
				a.log.LogAttrs(ctx, slog.LevelWarn, "recording last access failed", attrErr(err))
			}
		}
	}
}

// flush writes the pending set with the current time. On failure the
// digests are put back so the next flush retries them.
func (a *accessLog) flush(ctx context.Context) error {
	a.mu.Lock()
	if len(a.pending) == 0 {
		a.mu.Unlock()
		return nil
	}
	batch := a.pending
	a.pending = make(map[digest.Digest]struct{}, len(batch))
	a.mu.Unlock()

	ds := make([]digest.Digest, 0, len(batch))
	for d := range batch {
		ds = append(ds, d)
	}
	if err := a.index.Touch(ctx, time.Now(), ds...); err != nil {
		a.mu.Lock()
		for _, d := range ds {
			a.pending[d] = struct{}{}
		}
		a.mu.Unlock()
		return err
	}
	return nil
}
