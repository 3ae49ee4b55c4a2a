package ociapi

import (
	"net/http"
	"strconv"
	"strings"
)

// parseRange interprets a Range header (RFC 9110 §14.2) for a blob of size
// bytes. It returns the status to answer with: 200 for the whole blob (no
// header, a header that is not a single byte range, or one we ignore as
// allowed by the RFC: multiple ranges or bad syntax), 206 with the first
// byte and length, or 416 when the range cannot be satisfied. Following the
// distribution-spec conformance cases, a range whose last byte precedes its
// first is unsatisfiable (416) rather than ignored.
func parseRange(h string, size int64) (start, n int64, status int) {
	if h == "" {
		return 0, size, http.StatusOK
	}
	spec, ok := strings.CutPrefix(strings.TrimSpace(h), "bytes=")
	if !ok || strings.Contains(spec, ",") {
		return 0, size, http.StatusOK
	}
	first, last, ok := strings.Cut(strings.TrimSpace(spec), "-")
	if !ok {
		return 0, size, http.StatusOK
	}
	first, last = strings.TrimSpace(first), strings.TrimSpace(last)
	if first == "" {
		// Suffix range: the last N bytes.
		sn, ok := parseDigits(last)
		if !ok {
			return 0, size, http.StatusOK
		}
		if sn == 0 || size == 0 {
			return 0, 0, http.StatusRequestedRangeNotSatisfiable
		}
		sn = min(sn, size)
		return size - sn, sn, http.StatusPartialContent
	}
	a, ok := parseDigits(first)
	if !ok {
		return 0, size, http.StatusOK
	}
	b := size - 1
	if last != "" {
		if b, ok = parseDigits(last); !ok {
			return 0, size, http.StatusOK
		}
		if b < a {
			return 0, 0, http.StatusRequestedRangeNotSatisfiable
		}
		b = min(b, size-1)
	}
	if a >= size {
		return 0, 0, http.StatusRequestedRangeNotSatisfiable
	}
	return a, b - a + 1, http.StatusPartialContent
}

// parseDigits parses a non-negative decimal without sign, rejecting values
// that overflow int64.
func parseDigits(s string) (int64, bool) {
	if s == "" || len(s) > 19 {
		return 0, false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return 0, false
		}
	}
	v, err := strconv.ParseInt(s, 10, 64)
	return v, err == nil
}
