package meta

import (
	"encoding/json"

	"github.com/opencontainers/go-digest"
)

// ManifestRefs returns what a manifest body references, as recorded in
// Manifest.Refs by everything that records manifests (the mirror when it
// pulls one, an import): the config and layers of an image manifest, the
// child manifests of an index, the blobs of an artifact manifest and the
// fsLayers of a schema1 manifest, in document order, each once; invalid
// digests are left out. A subject is not a reference: it is the content
// the manifest is about, and keeping a subject alive as long as a
// signature of it is cached would turn eviction upside down. Unparseable
// or unknown bodies reference nothing.
func ManifestRefs(body []byte) []digest.Digest {
	type desc struct {
		Digest digest.Digest `json:"digest"`
	}
	var m struct {
		Config    *desc  `json:"config"`
		Layers    []desc `json:"layers"`
		Manifests []desc `json:"manifests"`
		Blobs     []desc `json:"blobs"`
		FSLayers  []struct {
			BlobSum digest.Digest `json:"blobSum"`
		} `json:"fsLayers"`
	}
	if json.Unmarshal(body, &m) != nil {
		return nil
	}
	var refs []digest.Digest
	seen := make(map[digest.Digest]bool)
	add := func(d digest.Digest) {
		if d.Validate() == nil && !seen[d] {
			seen[d] = true
			refs = append(refs, d)
		}
	}
	if m.Config != nil {
		add(m.Config.Digest)
	}
	for _, l := range m.Layers {
		add(l.Digest)
	}
	for _, l := range m.Manifests {
		add(l.Digest)
	}
	for _, l := range m.Blobs {
		add(l.Digest)
	}
	for _, l := range m.FSLayers {
		add(l.BlobSum)
	}
	return refs
}
