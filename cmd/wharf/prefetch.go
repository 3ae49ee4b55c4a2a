package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/progress"
)

// pollInterval is how often a prefetch job is asked for its progress.
const pollInterval = 300 * time.Millisecond

// maxPollFailures is how many polls in a row may fail (a server
// restarting, a network blip) before the CLI gives up following the job.
const maxPollFailures = 10

// maxBars is the most progress bars drawn at once: more would scroll off a
// terminal, and cursor-up cannot reach lines that scrolled away.
const maxBars = 20

// maxRefLine bounds a line of a reference list.
const maxRefLine = 64 << 10

func prefetchCommand(std stdio, cf *commonFlags) command {
	var files, platforms, refs []string
	var jobs int
	return command{
		create: true,
		doc: cmdDoc{
			name:     "prefetch",
			synopsis: "[flags] [REF... | -]",
			summary:  "pull images into the cache ahead of time",
			about: `Pull images into the cache, so that later pulls are hits even when the
upstream is down. References come from the arguments, from files (-f, one per
line; blank lines and lines starting with '#' are ignored) and from standard
input when an argument is "-". They are written as for docker pull: Docker Hub
is the default registry, "latest" the default tag.

Progress is drawn as one bar per reference on a terminal, and as one line per
reference and change of state otherwise. The summary says how many references
were fetched and how many failed, and the bytes fetched and already cached.
The exit code is 1 when any reference failed. Ctrl-C cancels the job on the
server and exits with 130.`,
			examples: `  wharf prefetch nginx:1.27 registry.k8s.io/pause:3.10
  kubeadm config images list | wharf prefetch -
  wharf prefetch -f images.txt --platform linux/amd64 --platform linux/arm64 -j 8`,
		},
		flags: func(fs *flag.FlagSet) {
			fs.Func("f", "read references from `FILE`, one per line (repeatable)", func(s string) error {
				files = append(files, s)
				return nil
			})
			fs.Func("platform", "fetch only `os/arch[/variant]` of multi-platform images (repeatable; default all)", func(s string) error {
				if !validPlatform(s) {
					return fmt.Errorf("platform %q: want os/arch or os/arch/variant, e.g. linux/arm64/v8", s)
				}
				platforms = append(platforms, s)
				return nil
			})
			fs.IntVar(&jobs, "j", 0, "fetch `N` references at once, 1 to 16 (default: the server's, 4)")
		},
		check: func(args []string) error {
			if jobs < 0 || jobs > 16 {
				return usageErrorf("-j %d: want 1 to 16", jobs)
			}
			var err error
			refs, err = gatherRefs(std.in, args, files)
			if err != nil {
				return withCode(exitUsage, err)
			}
			if len(refs) == 0 {
				return usageErrorf("no references given")
			}
			return nil
		},
		run: func(ctx context.Context, t *target, _ []string) error {
			c := t.client
			return prefetch(ctx, std, cf, c, adminapi.PrefetchRequest{Refs: refs, Platforms: platforms, Concurrency: jobs})
		},
	}
}

func validPlatform(s string) bool {
	parts := strings.Split(s, "/")
	if len(parts) < 2 || len(parts) > 3 {
		return false
	}
	for _, p := range parts {
		if p == "" || strings.ContainsAny(p, " \t") {
			return false
		}
	}
	return true
}

// gatherRefs collects references from args ("-": read stdin once) and
// files, in that order, without duplicates; each is checked as an image
// reference so that a typo is reported with where it came from before
// anything is fetched.
func gatherRefs(stdin io.Reader, args, files []string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	add := func(where, ref string) error {
		r, err := parseRef(ref)
		if err == nil && r.repo == "" {
			err = fmt.Errorf("%w %q: a bare digest names no repository to fetch it from", errBadReference, ref)
		}
		if err != nil {
			if where != "" {
				return fmt.Errorf("%s: %w", where, err)
			}
			return err
		}
		if !seen[ref] {
			seen[ref] = true
			out = append(out, ref)
		}
		return nil
	}
	readList := func(name string, r io.Reader) error {
		sc := bufio.NewScanner(r)
		sc.Buffer(make([]byte, 4096), maxRefLine)
		for n := 1; sc.Scan(); n++ {
			line := strings.TrimSpace(sc.Text())
			if line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if err := add(name+":"+strconv.Itoa(n), line); err != nil {
				return err
			}
		}
		if err := sc.Err(); err != nil {
			return fmt.Errorf("read %s: %w", name, err)
		}
		return nil
	}
	stdinRead := false
	for _, a := range args {
		if a != "-" {
			if err := add("", a); err != nil {
				return nil, err
			}
			continue
		}
		if stdinRead {
			continue
		}
		stdinRead = true
		if err := readList("stdin", stdin); err != nil {
			return nil, err
		}
	}
	for _, name := range files {
		f, err := os.Open(name)
		if err != nil {
			return nil, err
		}
		err = readList(name, f)
		f.Close()
		if err != nil {
			return nil, err
		}
	}
	return out, nil
}

func prefetch(ctx context.Context, std stdio, cf *commonFlags, c *adminapi.Client, req adminapi.PrefetchRequest) error {
	job, err := c.Prefetch(ctx, req)
	if err != nil {
		return err
	}
	view := newJobView(std)
	view.update(job)
	tick := time.NewTicker(pollInterval)
	defer tick.Stop()
	failures := 0
	for !finished(job.State) {
		select {
		case <-ctx.Done():
			// Interrupted: cancel the job on the server, which would go
			// on without us, with a context of its own.
			cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, cerr := c.CancelPrefetch(cctx, job.ID)
			cancel()
			if cerr != nil {
				fmt.Fprintf(std.err, "wharf prefetch: cancel job %s: %v\n", job.ID, cerr)
			} else {
				fmt.Fprintf(std.err, "wharf prefetch: canceled job %s\n", job.ID)
			}
			return ctx.Err()
		case <-tick.C:
		}
		j, err := c.PrefetchJob(ctx, job.ID)
		if err != nil {
			if ctx.Err() != nil {
				continue // the select above cancels the job
			}
			failures++
			if failures >= maxPollFailures || errors.Is(err, adminapi.ErrNotFound) {
				return fmt.Errorf("following prefetch job %s: %w", job.ID, err)
			}
			continue
		}
		failures = 0
		job = j
		view.update(job)
	}

	var fetched, cached int64
	canceled := 0
	for _, it := range job.Items {
		fetched += max(0, it.Bytes-it.Cached)
		cached += it.Cached
		if it.State == adminapi.StateCanceled {
			canceled++
		}
	}
	for _, it := range job.Items {
		if it.State == adminapi.StateFailed {
			fmt.Fprintf(std.err, "wharf prefetch: %s: %s\n", it.Ref, it.Error)
		}
	}
	if cf.json {
		if err := writeJSON(std.out, job); err != nil {
			return err
		}
	} else {
		s := fmt.Sprintf("%d done, %d failed", job.Done, job.Failed)
		if canceled > 0 {
			s += fmt.Sprintf(", %d canceled", canceled)
		}
		fmt.Fprintf(std.out, "%s; %s fetched, %s already cached\n", s, progress.Size(fetched), progress.Size(cached))
	}
	switch {
	case job.Failed > 0:
		return withCode(exitFailed, fmt.Errorf("%d of %d references failed", job.Failed, len(job.Items)))
	case job.State == adminapi.StateCanceled:
		return withCode(exitFailed, fmt.Errorf("job %s was canceled", job.ID))
	}
	return nil
}

func finished(state string) bool {
	switch state {
	case adminapi.StateDone, adminapi.StateFailed, adminapi.StateCanceled:
		return true
	}
	return false
}

// jobView shows a job's progress on stderr: bars on a terminal, a line per
// item and change of state otherwise.
type jobView struct {
	std   stdio
	board *progress.Board
	shown map[int]string // item index → state last printed (plain mode)
}

func newJobView(std stdio) *jobView {
	v := &jobView{std: std, shown: map[int]string{}}
	if std.errTTY {
		v.board = progress.NewBoard(std.err, progress.Width(std.lookupEnv))
	}
	return v
}

func (v *jobView) update(job adminapi.PrefetchJob) {
	if v.board != nil {
		_ = v.board.Draw(jobBars(job.Items)) // a broken terminal does not stop the job
		return
	}
	for i, it := range job.Items {
		if v.shown[i] == it.State {
			continue
		}
		v.shown[i] = it.State
		line := it.Ref + " " + it.State
		switch it.State {
		case adminapi.StateDone:
			line += fmt.Sprintf(" %s %s", shortDigest(it.Digest), progress.Size(it.Bytes))
			if it.Cached > 0 {
				line += fmt.Sprintf(" (%s already cached)", progress.Size(it.Cached))
			}
		case adminapi.StateFailed:
			line += ": " + it.Error
		}
		fmt.Fprintln(v.std.err, line)
	}
}

// jobBars is one bar per item, or, for more items than fit, the running
// and queued ones first and one line counting the rest.
func jobBars(items []adminapi.PrefetchItem) []progress.Bar {
	bar := func(it adminapi.PrefetchItem) progress.Bar {
		return progress.Bar{Label: it.Ref, Current: it.Bytes, Total: it.TotalBytes, Status: it.State}
	}
	var bars []progress.Bar
	if len(items) <= maxBars {
		for _, it := range items {
			bars = append(bars, bar(it))
		}
		return bars
	}
	counts := map[string]int{}
	for _, want := range []string{adminapi.StateRunning, adminapi.StateQueued} {
		for _, it := range items {
			if it.State == want && len(bars) < maxBars-1 {
				bars = append(bars, bar(it))
				counts["shown"]++
			}
		}
	}
	for _, it := range items {
		counts[it.State]++
	}
	return append(bars, progress.Bar{
		Label:  fmt.Sprintf("… %d more", len(items)-counts["shown"]),
		Status: fmt.Sprintf("%d done, %d failed", counts[adminapi.StateDone], counts[adminapi.StateFailed]),
	})
}
