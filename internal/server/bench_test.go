package server_test

import (
	"io"
	"testing"

	"github.com/wharf-mirror/wharf/internal/registrytest"
)

// BenchmarkHit measures cache hits over real HTTP on loopback: a small blob
// (request overhead), a 1 MiB blob (sendfile), and a manifest by tag within
// its TTL.
func BenchmarkHit(b *testing.B) {
	h := newHarness(b, defaultOptions())
	img := registrytest.RandomImage(b, 1, 4<<10, 1<<20)
	h.hub.PushImage(b, "library/app", "v1", img)
	small, _ := layerOf(b, img, 0)
	large, _ := layerOf(b, img, 1)
	for _, bc := range []struct {
		name, path string
		size       int64
	}{
		{"blob-4KiB", "/v2/library/app/blobs/" + small.String(), 4 << 10},
		{"blob-1MiB", "/v2/library/app/blobs/" + large.String(), 1 << 20},
		{"manifest-by-tag", "/v2/library/app/manifests/v1", 0},
	} {
		b.Run(bc.name, func(b *testing.B) {
			warm, err := h.send("GET", bc.path)
			if err != nil {
				b.Fatal(err)
			}
			io.Copy(io.Discard, warm.Body)
			warm.Body.Close()
			if bc.size > 0 {
				b.SetBytes(bc.size)
			}
			b.ReportAllocs()
			b.ResetTimer()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := h.send("GET", bc.path)
					if err != nil {
						b.Error(err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || resp.Header.Get("X-Wharf-Cache") != "hit" {
						b.Errorf("status %d cache %q", resp.StatusCode, resp.Header.Get("X-Wharf-Cache"))
						return
					}
				}
			})
		})
	}
}
