package meta

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/opencontainers/go-digest"
)

func TestManifestRefs(t *testing.T) {
	d := func(c byte) digest.Digest { return digest.Digest("sha256:" + string(repeat(c))) }
	tests := []struct {
		name string
		body string
		want []digest.Digest
	}{
		{"image", `{"config":{"digest":"` + d('a').String() + `"},"layers":[{"digest":"` + d('b').String() + `"},{"digest":"` + d('a').String() + `"}],"subject":{"digest":"` + d('f').String() + `"}}`,
			[]digest.Digest{d('a'), d('b')}},
		{"index", `{"manifests":[{"digest":"` + d('c').String() + `"},{"digest":"sha256:short"}]}`, []digest.Digest{d('c')}},
		{"artifact", `{"blobs":[{"digest":"` + d('d').String() + `"}]}`, []digest.Digest{d('d')}},
		{"schema1", `{"fsLayers":[{"blobSum":"` + d('e').String() + `"}]}`, []digest.Digest{d('e')}},
		{"not json", `{`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, ManifestRefs([]byte(tt.body))); diff != "" {
				t.Errorf("ManifestRefs (-want +got):\n%s", diff)
			}
		})
	}
}

func repeat(c byte) []byte {
	b := make([]byte, 64)
	for i := range b {
		b[i] = c
	}
	return b
}
