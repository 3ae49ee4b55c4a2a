package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/progress"
)

func statsCommand(std stdio, cf *commonFlags) command {
	var probe bool
	return command{
		doc: cmdDoc{
			name:     "stats",
			synopsis: "[flags]",
			summary:  "cache size, traffic, hit ratio and upstream health",
			about: `Print an overview: the cache's size against its limit, how many manifests and
blobs it holds, requests, hits and misses since the server started, bytes
served from the cache and fetched from upstreams, and each upstream's health
and Docker Hub-style rate limit. --json prints {"stats": …, "upstreams": […]}
as the admin API returns them.`,
			examples: `  wharf stats
  wharf stats --probe                  # ping every upstream first
  wharf stats --json | jq .stats.traffic.hit_ratio
  wharf stats --server http://10.0.0.5:5080 --token "$TOKEN"`,
		},
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&probe, "probe", false, "ping every upstream before reporting its health")
		},
		check: noArgs,
		run: func(ctx context.Context, t *target, _ []string) error {
			c := t.client
			st, err := c.Stats(ctx)
			if err != nil {
				return err
			}
			ups, err := c.Upstreams(ctx, probe)
			if err != nil {
				return err
			}
			if cf.json {
				return writeJSON(std.out, struct {
					Stats     adminapi.Stats      `json:"stats"`
					Upstreams []adminapi.Upstream `json:"upstreams"`
				}{st, ups})
			}
			printStats(std.out, st, ups, time.Now())
			if t.local {
				fmt.Fprintln(std.out, "\nNo server runs on this data directory: traffic and upstream health are this command's.")
			}
			return nil
		},
	}
}

func noArgs(args []string) error {
	if len(args) > 0 {
		return usageErrorf("unexpected argument %q", args[0])
	}
	return nil
}

func printStats(w io.Writer, st adminapi.Stats, ups []adminapi.Upstream, now time.Time) {
	fmt.Fprintf(w, "wharf %s", st.Version)
	if !st.Started.IsZero() {
		fmt.Fprintf(w, ", up %s (since %s)", roundDuration(now.Sub(st.Started)), st.Started.UTC().Format(time.DateTime+" UTC"))
	}
	fmt.Fprint(w, "\n\n")

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	c := st.Cache
	size := progress.Size(c.Bytes)
	if c.MaxBytes > 0 {
		size += fmt.Sprintf(" of %s (%.0f%%)", progress.Size(c.MaxBytes), 100*float64(c.Bytes)/float64(c.MaxBytes))
	} else {
		size += " (unbounded)"
	}
	fmt.Fprintf(tw, "Cache\t%s, %s, %s\n", size, plural(c.Manifests, "manifest"), plural(c.Blobs, "blob"))
	if c.MaxAge != "" {
		fmt.Fprintf(tw, "Max age\t%s\n", c.MaxAge)
	}
	if g := c.LastGC; g != nil {
		fmt.Fprintf(tw, "Last GC\t%s\n", gcSummary(*g))
	}
	t := st.Traffic
	fmt.Fprintf(tw, "Traffic\t%s: %d hits, %d misses (hit ratio %.1f%%), %d stale\n",
		plural(int(t.Requests), "request"), t.Hits, t.Misses, 100*t.HitRatio, t.StaleServes)
	fmt.Fprintf(tw, "Bytes\t%s served from the cache (saved upstream), %s fetched from upstreams, %s served while fetching\n",
		progress.Size(t.BytesFromCache), progress.Size(t.BytesFetched), progress.Size(t.BytesFromUpstream))
	tw.Flush()

	if len(ups) == 0 {
		return
	}
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM\tHEALTH\tRATE LIMIT\tURL")
	for _, u := range ups {
		health := u.Health
		if u.Error != "" {
			health += ": " + oneLineCut(u.Error, 60)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", u.Name, health, rateLimit(u.RateLimit), u.URL)
	}
	tw.Flush()
}

func rateLimit(r *adminapi.RateLimit) string {
	if r == nil {
		return "-"
	}
	num := func(n int) string {
		if n < 0 {
			return "?"
		}
		return fmt.Sprint(n)
	}
	s := num(r.Remaining) + "/" + num(r.Limit) + " left"
	if r.Window != "" {
		s += " per " + r.Window
	}
	return s
}

func gcSummary(g adminapi.GCReport) string {
	s := fmt.Sprintf("evicted %s, %s, %s freed (cache %s → %s)",
		plural(g.Manifests, "manifest"), plural(g.Blobs, "blob"), progress.Size(g.Bytes),
		progress.Size(g.SizeBefore), progress.Size(g.SizeAfter))
	if g.InUse > 0 {
		s += fmt.Sprintf(", %d skipped in use", g.InUse)
	}
	if g.Duration != "" {
		s += " in " + g.Duration
	}
	if !g.Started.IsZero() {
		s += " at " + g.Started.UTC().Format(time.DateTime+" UTC")
	}
	if g.Error != "" {
		s += "; error: " + g.Error
	}
	return s
}

func plural(n int, word string) string {
	if n == 1 {
		return "1 " + word
	}
	return fmt.Sprintf("%d %ss", n, word)
}

// roundDuration keeps a duration readable: whole seconds under an hour,
// whole minutes above.
func roundDuration(d time.Duration) time.Duration {
	if d < time.Hour {
		return d.Round(time.Second)
	}
	return d.Round(time.Minute)
}

// ago formats how long before now t was: "12s ago", "5m ago", "3h ago",
// "4d ago"; "-" for the zero time.
func ago(t, now time.Time) string {
	if t.IsZero() {
		return "-"
	}
	d := now.Sub(t)
	switch {
	case d < time.Minute:
		return fmt.Sprintf("%ds ago", max(0, int(d.Seconds())))
	case d < time.Hour:
		return fmt.Sprintf("%dm ago", int(d.Minutes()))
	case d < 48*time.Hour:
		return fmt.Sprintf("%dh ago", int(d.Hours()))
	default:
		return fmt.Sprintf("%dd ago", int(d.Hours()/24))
	}
}

func oneLineCut(s string, n int) string {
	s = strings.Join(strings.Fields(s), " ")
	if r := []rune(s); len(r) > n {
		return string(r[:n-1]) + "…"
	}
	return s
}

func writeJSON(w io.Writer, v any) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
