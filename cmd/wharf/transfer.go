package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/progress"
)

func exportCommand(std stdio, cf *commonFlags) command {
	var output string
	var toStdout bool
	return command{
		doc: cmdDoc{
			name:     "export",
			synopsis: "[flags] [-o FILE] [REF...]",
			summary:  "write cached images to a tar archive (OCI image layout)",
			about: `Write the cached images REF... (none: the whole cache) to a tar archive holding
an OCI image layout, for "wharf import" on another machine, or for any tool
that reads OCI layouts. REFs are written as for docker pull; a REF without a
tag exports every cached tag of the repository.

The archive goes to FILE (-o), or to standard output with "-o -" or when
standard output is not a terminal. A file is written as FILE.partial and
renamed when complete, so a failed export leaves no FILE. Progress is drawn on
a terminal; the summary (images, bytes, time) goes to standard error. A REF
that is not cached ends the command with exit code 4 before anything is
written.`,
			examples: `  wharf export -o cache.tar
  wharf export -o k8s.tar registry.k8s.io/pause:3.10 registry.k8s.io/etcd
  wharf export nginx:1.27 | ssh airgapped wharf import -`,
		},
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&output, "o", "", "write the archive to `FILE` (\"-\": standard output)")
		},
		check: func(args []string) error {
			for _, a := range args {
				if r, err := parseRef(a); err != nil {
					return withCode(exitUsage, err)
				} else if r.repo == "" {
					return usageErrorf("%s: a bare digest names no image to export", a)
				}
			}
			toStdout = output == "-" || output == ""
			if output == "" && std.outTTY {
				return usageErrorf("standard output is a terminal; pass -o FILE, or redirect it")
			}
			if toStdout && cf.json {
				return usageErrorf("--json needs -o FILE: the archive is on standard output")
			}
			return nil
		},
		run: func(ctx context.Context, t *target, refs []string) error {
			c := t.client
			start := time.Now()
			body, size, err := c.Export(ctx, refs)
			if errors.Is(err, adminapi.ErrNotFound) {
				return withCode(exitNotFound, err) // a REF that is not cached, before any byte
			} else if err != nil {
				return err
			}
			defer body.Close()
			images := -1
			if eb, ok := body.(*adminapi.ExportBody); ok {
				images = eb.Images
			}
			label := "export"
			if !toStdout {
				label = filepath.Base(output)
			}
			var src io.Reader = body
			meter := newMeter(std, label, size)
			if meter != nil {
				src = io.TeeReader(body, meter)
			}
			var n int64
			if toStdout {
				n, err = io.Copy(std.out, src)
			} else {
				n, err = writeFileAtomic(output, src)
			}
			if err == nil && size >= 0 && n != size {
				err = fmt.Errorf("archive of %d bytes, announced %d", n, size)
			}
			if meter != nil {
				status := "done"
				if err != nil {
					status = "failed"
				}
				_ = meter.Finish(status)
			}
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				return fmt.Errorf("export: %w", err)
			}
			took := time.Since(start)
			if cf.json {
				return writeJSON(std.out, struct {
					File    string  `json:"file"`
					Images  int     `json:"images"`
					Bytes   int64   `json:"bytes"`
					Seconds float64 `json:"seconds"`
				}{output, images, n, took.Seconds()})
			}
			what := "images"
			if images >= 0 {
				what = plural(images, "image")
			}
			where := "standard output"
			if !toStdout {
				where = output
			}
			fmt.Fprintf(std.err, "exported %s, %s in %s to %s\n", what, progress.Size(n), took.Round(time.Millisecond), where)
			return nil
		},
	}
}

// writeFileAtomic writes r to path.partial, flushes it to disk and renames
// it to path; on any failure the partial file is removed and path is left
// as it was.
func writeFileAtomic(path string, r io.Reader) (n int64, err error) {
	tmp := path + ".partial"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return 0, err
	}
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	if n, err = io.Copy(f, r); err != nil {
		return n, err
	}
	if err = f.Sync(); err != nil {
		return n, err
	}
	if err = f.Close(); err != nil {
		return n, err
	}
	return n, os.Rename(tmp, path)
}

func importCommand(std stdio, cf *commonFlags) command {
	return command{
		create: true,
		doc: cmdDoc{
			name:     "import",
			synopsis: "[flags] FILE|-",
			summary:  "load a tar archive written by export into the cache",
			about: `Load an archive written by "wharf export" (a tar of an OCI image layout) into
the cache, from FILE or standard input ("-"). Every blob and manifest is
verified against its digest while it is read; an archive that fails a check
is rejected as a whole (nothing is recorded) and the exit code is 1. Images
already cached are verified, not written again. Progress is drawn on a
terminal when the size is known.`,
			examples: `  wharf import cache.tar
  wharf import cache.tar --data-dir /var/lib/wharf   # no server running
  ssh online-host wharf export nginx:1.27 | wharf import -`,
		},
		check: func(args []string) error {
			if len(args) != 1 {
				return usageErrorf("want one archive: FILE or - for standard input")
			}
			if args[0] == "-" {
				return nil
			}
			st, err := os.Stat(args[0])
			if err != nil {
				return withCode(exitUsage, err)
			}
			if st.IsDir() {
				return usageErrorf("%s is a directory; want a tar archive", args[0])
			}
			return nil
		},
		run: func(ctx context.Context, t *target, args []string) error {
			c := t.client
			name := args[0]
			var src io.Reader = std.in
			size := int64(-1)
			if name == "-" {
				name = "standard input"
				if f, ok := std.in.(*os.File); ok {
					if st, err := f.Stat(); err == nil && st.Mode().IsRegular() {
						size = st.Size()
					}
				}
			} else {
				f, err := os.Open(name)
				if err != nil {
					return err
				}
				defer f.Close()
				st, err := f.Stat()
				if err != nil {
					return err
				}
				src, size = f, st.Size()
			}
			meter := newMeter(std, "import "+filepath.Base(name), size)
			if meter != nil {
				src = io.TeeReader(src, meter)
			}
			rep, err := c.Import(ctx, src, size)
			if meter != nil {
				status := "done"
				if err != nil {
					status = "failed"
				}
				_ = meter.Finish(status)
			}
			if err != nil {
				var ae *adminapi.APIError
				if errors.As(err, &ae) && errors.Is(err, adminapi.ErrInvalid) {
					return withCode(exitFailed, fmt.Errorf("%s: %s", name, ae.Message))
				}
				return err
			}
			if cf.json {
				return writeJSON(std.out, rep)
			}
			fmt.Fprintf(std.out, "imported %s: %s, %s (%d already cached), %s read\n",
				plural(len(rep.Images), "image"), plural(rep.Manifests, "manifest"), plural(rep.Blobs, "blob"),
				rep.Skipped, progress.Size(rep.Bytes))
			for _, img := range rep.Images {
				fmt.Fprintf(std.out, "  %s\n", img)
			}
			return nil
		},
	}
}
