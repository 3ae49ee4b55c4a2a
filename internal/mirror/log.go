package mirror

import (
	"log/slog"
	"time"

	"github.com/opencontainers/go-digest"
)

// Log attribute keys are shared with the HTTP layer's request log so that
// one query finds a request and the cache work it caused.
const slogWarn = slog.LevelWarn

func attrUpstream(n string) slog.Attr      { return slog.String("upstream", n) }
func attrRepo(r string) slog.Attr          { return slog.String("repo", r) }
func attrRef(r string) slog.Attr           { return slog.String("ref", r) }
func attrDigest(d digest.Digest) slog.Attr { return slog.String("digest", d.String()) }
func attrAge(d time.Duration) slog.Attr    { return slog.Duration("age", d) }
func attrErr(err error) slog.Attr          { return slog.String("error", err.Error()) }
