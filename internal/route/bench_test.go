package route_test

import (
	"testing"

	"github.com/wharf-mirror/wharf/internal/route"
)

// BenchmarkRoute measures the per-request cost of ParsePath followed by
// Match for the request shapes real clients send (client-compat Appendix A).
func BenchmarkRoute(b *testing.B) {
	tbl := newTestTable(b, "docker.io")
	for _, bc := range []struct {
		name, path, ns string
	}{
		{name: "docker-tag", path: "/v2/library/nginx/manifests/latest"},
		{name: "docker-short-name", path: "/v2/nginx/manifests/latest"},
		{name: "containerd-blob", path: "/v2/library/nginx/blobs/" + dSHA256, ns: "docker.io"},
		{name: "podman-manifest-digest", path: "/v2/docker.io/library/nginx/manifests/" + dSHA256},
		{name: "prefix-tags", path: "/ghcr.io/v2/foo/bar/tags/list"},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p, err := route.ParsePath(bc.path)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := tbl.Match("mirror.example:5000", bc.ns, p.Prefix, p.Name); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
