package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/progress"
)

// maxPages bounds every paginated listing, so a server that keeps
// answering with a next cursor cannot keep the CLI in a loop: at 1000
// items a page it is ten million items.
const maxPages = 10_000

// errRepeatedCursor is a server answering a page with the cursor that
// asked for it: following it would never end.
var errRepeatedCursor = errors.New("the server answered the same page cursor twice")

// pageSize is what the CLI asks for per page: the most the API allows.
const pageSize = 1000

func lsCommand(std stdio, cf *commonFlags) command {
	var blobs, noTrunc bool
	var upstream string
	return command{
		doc: cmdDoc{
			name:     "ls",
			synopsis: "[flags] [FILTER | REPOSITORY[:TAG]]",
			summary:  "list cached repositories, the tags of one, or blobs",
			about: `Without an argument, list every cached repository: UPSTREAM/REPOSITORY, TAGS,
SIZE (content linked to the repository, each digest once) and LAST-ACCESS.

With an argument that names one cached repository as an image reference
("nginx", "docker.io/library/nginx", "ghcr.io/o/r"), list its tags: TAG,
DIGEST, SIZE (the image and everything it references) and LAST-ACCESS; with a
tag ("nginx:1.27") only that tag. Any other argument filters repositories:
those whose "upstream/repository" contains it, case-insensitively, where '*'
matches any characters and '?' one.

Listing something that is not cached (a filter that matches nothing, a tag
not cached) ends with exit code 4.`,
			examples: `  wharf ls
  wharf ls nginx                      # tags of docker.io/library/nginx
  wharf ls ghcr.io/org/app:v2         # one tag
  wharf ls 'k8s.io/*controller*'      # filter with wildcards
  wharf ls --upstream quay.io
  wharf ls --blobs --json`,
		},
		flags: func(fs *flag.FlagSet) {
			fs.BoolVar(&blobs, "blobs", false, "list cached blobs (DIGEST, SIZE, LAST-ACCESS) instead of repositories")
			fs.StringVar(&upstream, "upstream", "", "only repositories of upstream `NAME`, e.g. docker.io")
			fs.BoolVar(&noTrunc, "no-trunc", false, "print digests in full")
		},
		check: func(args []string) error {
			if len(args) > 1 {
				return usageErrorf("unexpected argument %q: ls takes one filter or reference", args[1])
			}
			if blobs && (len(args) > 0 || upstream != "") {
				return usageErrorf("--blobs lists every blob; it takes no filter")
			}
			return nil
		},
		run: func(ctx context.Context, t *target, args []string) error {
			c := t.client
			l := lister{std: std, cf: cf, c: c, noTrunc: noTrunc, now: time.Now()}
			switch {
			case blobs:
				return l.blobs(ctx)
			case len(args) == 0:
				return l.repositories(ctx, "", upstream)
			}
			arg := args[0]
			if !hasWildcard(arg) {
				done, err := l.tags(ctx, arg)
				if done || err != nil {
					return err
				}
			}
			return l.repositories(ctx, arg, upstream)
		},
	}
}

type lister struct {
	std     stdio
	cf      *commonFlags
	c       *adminapi.Client
	noTrunc bool
	now     time.Time
}

// tags lists the tags of the repository arg names, when it names one that
// is cached; done is false when arg should be taken as a filter instead.
func (l lister) tags(ctx context.Context, arg string) (done bool, err error) {
	r, err := parseRef(arg)
	if err != nil || r.repo == "" || r.digest != "" {
		return false, nil // not a repository reference: a filter
	}
	tags, err := l.c.Tags(ctx, r.upstream, r.repo)
	if errors.Is(err, adminapi.ErrNotFound) {
		if r.tag != "" {
			return true, withCode(exitNotFound, fmt.Errorf("%s is not cached", r))
		}
		return false, nil
	}
	if err != nil {
		return true, err
	}
	if r.tag != "" {
		var one []adminapi.Tag
		for _, t := range tags {
			if t.Name == r.tag {
				one = append(one, t)
			}
		}
		if len(one) == 0 {
			return true, withCode(exitNotFound, fmt.Errorf("%s is not cached", r))
		}
		tags = one
	}
	if l.cf.json {
		return true, writeJSON(l.std.out, tags)
	}
	tw := tabwriter.NewWriter(l.std.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TAG\tDIGEST\tSIZE\tLAST-ACCESS")
	for _, t := range tags {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", t.Name, l.digest(t.Digest), progress.Size(t.Bytes), ago(t.LastAccess, l.now))
	}
	return true, tw.Flush()
}

// repositories lists every page of repositories matching filter (a
// substring or a glob) of upstream.
func (l lister) repositories(ctx context.Context, filter, upstream string) error {
	q := filter
	if hasWildcard(filter) {
		q = literalOf(filter)
	}
	var all []adminapi.Repository
	cursor := ""
	for page := 0; ; page++ {
		if page == maxPages {
			return fmt.Errorf("more than %d pages of repositories; stopped", maxPages)
		}
		p, err := l.c.Repositories(ctx, q, upstream, cursor, pageSize)
		if err != nil {
			return err
		}
		for _, r := range p.Repositories {
			if filter == "" || !hasWildcard(filter) || globMatch(filter, r.Upstream+"/"+r.Name) {
				all = append(all, r)
			}
		}
		if p.Next == "" {
			break
		}
		if p.Next == cursor {
			return errRepeatedCursor
		}
		cursor = p.Next
	}
	if len(all) == 0 && (filter != "" || upstream != "") {
		what := fmt.Sprintf("%q", filter)
		if filter == "" {
			what = "upstream " + upstream
		}
		return withCode(exitNotFound, fmt.Errorf("nothing cached matches %s", what))
	}
	if l.cf.json {
		if all == nil {
			all = []adminapi.Repository{}
		}
		return writeJSON(l.std.out, all)
	}
	tw := tabwriter.NewWriter(l.std.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "UPSTREAM/REPOSITORY\tTAGS\tSIZE\tLAST-ACCESS")
	for _, r := range all {
		fmt.Fprintf(tw, "%s/%s\t%d\t%s\t%s\n", r.Upstream, r.Name, r.Tags, progress.Size(r.Bytes), ago(r.LastAccess, l.now))
	}
	return tw.Flush()
}

func (l lister) blobs(ctx context.Context) error {
	var all []adminapi.Blob
	cursor := ""
	for page := 0; ; page++ {
		if page == maxPages {
			return fmt.Errorf("more than %d pages of blobs; stopped", maxPages)
		}
		p, err := l.c.Blobs(ctx, cursor, pageSize)
		if err != nil {
			return err
		}
		all = append(all, p.Blobs...)
		if p.Next == "" {
			break
		}
		if p.Next == cursor {
			return errRepeatedCursor
		}
		cursor = p.Next
	}
	if l.cf.json {
		if all == nil {
			all = []adminapi.Blob{}
		}
		return writeJSON(l.std.out, all)
	}
	tw := tabwriter.NewWriter(l.std.out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DIGEST\tSIZE\tLAST-ACCESS")
	var total int64
	for _, b := range all {
		total += b.Bytes
		fmt.Fprintf(tw, "%s\t%s\t%s\n", l.digest(b.Digest), progress.Size(b.Bytes), ago(b.LastAccess, l.now))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(l.std.out, "%s, %s\n", plural(len(all), "blob"), progress.Size(total))
	return err
}

func (l lister) digest(d string) string {
	if l.noTrunc {
		return d
	}
	return shortDigest(d)
}
