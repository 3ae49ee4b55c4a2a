package ociapi

import (
	"strconv"
	"strings"
)

// accepts reports whether the Accept header lines allow mediaType. Clients
// send one comma-joined line (containerd, crane) or one line per type
// (Docker, containers/image) — client-compat §1.7 — possibly with q=
// parameters; q=0 excludes a type. No Accept header accepts everything.
func accepts(lines []string, mediaType string) bool {
	if len(lines) == 0 {
		return true
	}
	mainType, _, _ := strings.Cut(mediaType, "/")
	any := false
	for _, line := range lines {
		for _, item := range strings.Split(line, ",") {
			typ, params, _ := strings.Cut(item, ";")
			typ = strings.ToLower(strings.TrimSpace(typ))
			if typ == "" {
				continue
			}
			any = true
			if qZero(params) {
				continue
			}
			switch {
			case typ == "*/*", typ == mediaType, typ == mainType+"/*":
				return true
			}
		}
	}
	return !any
}

// qZero reports whether a media-range's parameters set q=0.
func qZero(params string) bool {
	for _, p := range strings.Split(params, ";") {
		k, v, ok := strings.Cut(strings.TrimSpace(p), "=")
		if ok && strings.EqualFold(strings.TrimSpace(k), "q") {
			q, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return err == nil && q == 0
		}
	}
	return false
}
