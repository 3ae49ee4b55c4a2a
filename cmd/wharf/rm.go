package main

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/progress"
)

func rmCommand(std stdio, cf *commonFlags) command {
	var refs []imageRef
	return command{
		doc: cmdDoc{
			name:     "rm",
			synopsis: "[flags] REF...",
			summary:  "remove repositories, tags or content from the cache",
			about: `Remove from the cache what each REF names:
  REPOSITORY          the whole repository: every tag, and the content only
                      they keep ("wharf rm nginx" removes docker.io/library/nginx)
  REPOSITORY:TAG      one tag, and the content only it keeps
  [REPOSITORY@]DIGEST  the manifest or blob with that digest, wherever it is
                      used (the repository part is not looked at)

Content another tag or a cached manifest still references is kept, and so is
content being served or fetched right now; each kept digest is printed with
the reason. REFs are written as for docker pull: Docker Hub is the default
registry, "library/" is added to single-component Docker Hub names.

Every REF is tried; if one was not cached the exit code is 4, if one failed
otherwise, 1.`,
			examples: `  wharf rm nginx:1.25
  wharf rm ghcr.io/org/app            # the whole repository
  wharf rm sha256:0123…cdef
  wharf rm --json nginx:1.25 nginx:1.26`,
		},
		check: func(args []string) error {
			if len(args) == 0 {
				return usageErrorf("no reference given")
			}
			refs = refs[:0]
			for _, a := range args {
				r, err := parseRef(a)
				if err != nil {
					return withCode(exitUsage, err)
				}
				refs = append(refs, r)
			}
			return nil
		},
		run: func(ctx context.Context, t *target, _ []string) error {
			c := t.client
			type result struct {
				Ref      string             `json:"ref"`
				Deletion *adminapi.Deletion `json:"deletion,omitempty"`
				Error    string             `json:"error,omitempty"`
			}
			var results []result
			notFound, failed := 0, 0
			for _, r := range refs {
				d, err := remove(ctx, c, r)
				if ctx.Err() != nil {
					return ctx.Err()
				}
				res := result{Ref: r.String()}
				switch {
				case errors.Is(err, adminapi.ErrNotFound):
					notFound++
					res.Error = "not cached"
				case err != nil:
					failed++
					res.Error = err.Error()
				default:
					res.Deletion = &d
				}
				results = append(results, res)
				if cf.json {
					continue
				}
				if err != nil {
					fmt.Fprintf(std.err, "wharf rm: %s: %s\n", r, res.Error)
					continue
				}
				printDeletion(std, r, d)
			}
			if cf.json {
				if err := writeJSON(std.out, results); err != nil {
					return err
				}
			}
			switch {
			case failed > 0:
				return withCode(exitFailed, fmt.Errorf("%d of %d removals failed", failed, len(refs)))
			case notFound > 0:
				return withCode(exitNotFound, fmt.Errorf("%d of %d not cached", notFound, len(refs)))
			}
			return nil
		},
	}
}

// remove deletes what r names: content by digest, a tag, or a whole
// repository.
func remove(ctx context.Context, c *adminapi.Client, r imageRef) (adminapi.Deletion, error) {
	switch {
	case r.digest != "":
		return c.DeleteContent(ctx, r.digest)
	case r.tag != "":
		return c.DeleteTag(ctx, r.upstream, r.repo, r.tag)
	default:
		return c.DeleteRepository(ctx, r.upstream, r.repo)
	}
}

func printDeletion(std stdio, r imageRef, d adminapi.Deletion) {
	var parts []string
	if d.Tags > 0 {
		parts = append(parts, plural(d.Tags, "tag"))
	}
	parts = append(parts, plural(d.Manifests, "manifest"), plural(d.Blobs, "blob"))
	fmt.Fprintf(std.out, "removed %s: %s; %s freed\n", r, strings.Join(parts, ", "), progress.Size(d.Bytes))
	for _, k := range d.Kept {
		why := map[string]string{
			adminapi.KeptTagged:     "still tagged",
			adminapi.KeptReferenced: "still referenced",
			adminapi.KeptInUse:      "in use right now; retry later",
		}[k.Reason]
		if why == "" {
			why = k.Reason
		}
		if len(k.By) > 0 {
			by := k.By
			more := ""
			if len(by) > 3 {
				by, more = by[:3], fmt.Sprintf(" and %d more", len(k.By)-3)
			}
			why += " by " + strings.Join(by, ", ") + more
		}
		fmt.Fprintf(std.out, "  kept %s: %s\n", shortDigest(k.Digest), why)
	}
}
