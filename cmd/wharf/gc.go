package main

import (
	"context"
	"errors"
	"fmt"
)

func gcCommand(std stdio, cf *commonFlags) command {
	return command{
		doc: cmdDoc{
			name:     "gc",
			synopsis: "[flags]",
			summary:  "run cache eviction now",
			about: `Run an eviction now, as the server does every gc_interval: evict the least
recently pulled images until the cache is under 90% of cache.max_size, and
everything not pulled for cache.max_age. Content shared with a remaining image
or in use is kept. Print what was evicted; with neither limit configured
nothing is.`,
			examples: `  wharf gc
  wharf gc --json`,
		},
		check: noArgs,
		run: func(ctx context.Context, t *target, _ []string) error {
			c := t.client
			r, err := c.GC(ctx)
			if err != nil {
				return err
			}
			if cf.json {
				if err := writeJSON(std.out, r); err != nil {
					return err
				}
			} else {
				fmt.Fprintln(std.out, gcSummary(r))
			}
			if r.Error != "" {
				return withCode(exitFailed, errors.New("eviction failed: "+r.Error))
			}
			return nil
		},
	}
}
