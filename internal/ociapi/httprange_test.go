package ociapi

import (
	"net/http"
	"testing"
)

func TestParseRange(t *testing.T) {
	const size = 2000
	tests := []struct {
		header   string
		size     int64
		start, n int64
		status   int
	}{
		{"", size, 0, size, 200},
		{"bytes=500-1499", size, 500, 1000, 206},
		{"bytes=500-", size, 500, 1500, 206},
		{"bytes=-500", size, 1500, 500, 206},
		{"bytes=-5000", size, 0, size, 206},
		{"bytes=1500-5000", size, 1500, 500, 206}, // end clamped
		{"bytes=0-0", size, 0, 1, 206},
		{"bytes=1999-", size, 1999, 1, 206},
		{"bytes=500-0", size, 0, 0, 416},
		{"bytes=2000-", size, 0, 0, 416},
		{"bytes=2000-5000", size, 0, 0, 416},
		{"bytes=-0", size, 0, 0, 416},
		{"bytes=0-", 0, 0, 0, 416},
		{"bytes=0-1,5-6", size, 0, size, 200}, // multi-range: whole body
		{"bytes=a-b", size, 0, size, 200},     // bad syntax: ignored
		{"items=0-5", size, 0, size, 200},
		{"bytes=5", size, 0, size, 200},
		{"bytes=-", size, 0, size, 200},
		{"bytes=99999999999999999999-", size, 0, size, 200}, // overflow: ignored
		{"bytes=+5-6", size, 0, size, 200},
		{" bytes=10-19 ", size, 10, 10, 206},
	}
	for _, tt := range tests {
		start, n, status := parseRange(tt.header, tt.size)
		if start != tt.start || n != tt.n || status != tt.status {
			t.Errorf("parseRange(%q, %d) = %d, %d, %d; want %d, %d, %d", tt.header, tt.size, start, n, status, tt.start, tt.n, tt.status)
		}
	}
}

func FuzzParseRange(f *testing.F) {
	for _, s := range []string{"bytes=0-1", "bytes=-1", "bytes=5-", "bytes=1-0", "bytes=0-1,2-3", "bytes=x"} {
		f.Add(s, int64(100))
	}
	f.Fuzz(func(t *testing.T, h string, size int64) {
		if size < 0 {
			size = -size
		}
		if size < 0 { // MinInt64
			size = 0
		}
		start, n, status := parseRange(h, size)
		switch status {
		case http.StatusOK:
			if start != 0 || n != size {
				t.Fatalf("200 must be the whole blob: %d+%d of %d", start, n, size)
			}
		case http.StatusPartialContent:
			if start < 0 || n <= 0 || start+n > size {
				t.Fatalf("206 out of bounds: %d+%d of %d", start, n, size)
			}
		case http.StatusRequestedRangeNotSatisfiable:
		default:
			t.Fatalf("unexpected status %d", status)
		}
	})
}

func TestAccepts(t *testing.T) {
	const index = "application/vnd.oci.image.index.v1+json"
	tests := []struct {
		lines []string
		want  bool
	}{
		{nil, true},
		{[]string{""}, true},
		{[]string{"application/vnd.docker.distribution.manifest.v2+json, application/vnd.oci.image.index.v1+json"}, true},
		{[]string{"application/vnd.docker.distribution.manifest.v2+json", "application/vnd.oci.image.index.v1+json"}, true},
		{[]string{"application/vnd.docker.distribution.manifest.v2+json"}, false},
		{[]string{"application/vnd.docker.distribution.manifest.v2+json, */*"}, true},
		{[]string{"application/*;q=0.5"}, true},
		{[]string{"application/vnd.oci.image.index.v1+json;q=0, application/json"}, false},
		{[]string{"Application/Vnd.OCI.Image.Index.v1+JSON"}, true},
	}
	for _, tt := range tests {
		if got := accepts(tt.lines, index); got != tt.want {
			t.Errorf("accepts(%q) = %v, want %v", tt.lines, got, tt.want)
		}
	}
}
