package admin

import (
	"log/slog"
	"time"
)

const slogInfo = slog.LevelInfo

func attr(k, v string) slog.Attr                  { return slog.String(k, v) }
func attrInt(k string, v int) slog.Attr           { return slog.Int(k, v) }
func attrInt64(k string, v int64) slog.Attr       { return slog.Int64(k, v) }
func attrDur(k string, v time.Duration) slog.Attr { return slog.Duration(k, v) }
