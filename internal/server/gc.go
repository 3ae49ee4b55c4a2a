package server

import (
	"context"

	"github.com/wharf-mirror/wharf/internal/gc"
	"github.com/wharf-mirror/wharf/internal/mirror"
)

// The mirror tells eviction what is in use.
var _ gc.Guard = (*mirror.Service)(nil)

// collector is the instance's eviction: the collector, and the background
// loop when the cache is bounded.
type collector struct {
	c    *gc.Collector
	stop context.CancelFunc
	done chan struct{}
}

// startGC builds the collector from the cache section of the configuration
// and, when it bounds the cache, starts the loop that runs it every
// gc_interval (the first run at once). stopGC ends the loop.
func (i *Instance) startGC(observe func(gc.Report, error)) error {
	c, err := gc.New(gc.Config{
		Blobs:   i.blobs,
		Index:   i.index,
		Guard:   i.mirror,
		MaxSize: i.cfg.Cache.MaxSize.Bytes(),
		MaxAge:  i.cfg.Cache.MaxAge.Std(),
		Logger:  i.log,
		Observe: observe,
	})
	if err != nil {
		return err
	}
	i.gc = &collector{c: c}
	if !c.Bounded() {
		return nil
	}
	ctx, cancel := context.WithCancel(context.Background())
	i.gc.stop, i.gc.done = cancel, make(chan struct{})
	go func() {
		defer close(i.gc.done)
		c.Loop(ctx, i.cfg.Cache.GCInterval.Std())
	}()
	return nil
}

// stopGC stops the background loop, cancelling a run in progress, and
// waits for it.
func (i *Instance) stopGC() {
	if i.gc != nil && i.gc.stop != nil {
		i.gc.stop()
		<-i.gc.done
	}
}

// Collect runs eviction now, whatever the background schedule, and reports
// what it did. It waits for a background run in progress to end first.
func (i *Instance) Collect(ctx context.Context) (gc.Report, error) {
	return i.gc.c.Run(ctx)
}
