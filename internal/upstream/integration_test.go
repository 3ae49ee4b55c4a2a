package upstream_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/wharf-mirror/wharf/internal/upstream"
)

// seed stores content in a go-containerregistry registry handler directly.
func seed(t *testing.T, h http.Handler, method, target, contentType string, body []byte) {
	t.Helper()
	req := httptest.NewRequest(method, target, bytes.NewReader(body))
	if contentType != "" {
		req.Header.Set("Content-Type", contentType)
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code/100 != 2 {
		t.Fatalf("seeding %s %s: %d %s", method, target, rec.Code, rec.Body)
	}
}

// TestAgainstRegistry pulls an image from go-containerregistry's registry
// behind Docker Hub-style token auth, with blobs redirected to a CDN on a
// subdomain.
func TestAgainstRegistry(t *testing.T) {
	store := registry.New(registry.Logger(log.New(io.Discard, "", 0)))
	config := []byte(`{"architecture":"amd64","os":"linux"}`)
	layer := bytes.Repeat([]byte("layer"), 10000)
	manifest, err := json.Marshal(ocispec.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: ocispec.MediaTypeImageManifest,
		Config:    ocispec.Descriptor{MediaType: ocispec.MediaTypeImageConfig, Digest: digest.FromBytes(config), Size: int64(len(config))},
		Layers:    []ocispec.Descriptor{{MediaType: ocispec.MediaTypeImageLayerGzip, Digest: digest.FromBytes(layer), Size: int64(len(layer))}},
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, b := range [][]byte{config, layer} {
		seed(t, store, http.MethodPost, "/v2/library/hello/blobs/uploads/?digest="+digest.FromBytes(b).String(), "", b)
	}
	seed(t, store, http.MethodPut, "/v2/library/hello/manifests/latest", ocispec.MediaTypeImageManifest, manifest)

	tokens := newTokenServer("hub")
	var cdnSaw recorder
	front := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer hub-1" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="http://auth.registry.test/token",service="registry.test",scope="repository:library/hello:pull"`)
			writeError(w, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
			return
		}
		if strings.Contains(r.URL.Path, "/blobs/") {
			http.Redirect(w, r, "http://cdn.registry.test"+r.URL.Path, http.StatusTemporaryRedirect)
			return
		}
		store.ServeHTTP(w, r)
	})
	cdn := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cdnSaw.record(r)
		store.ServeHTTP(w, r)
	})
	tr := namedHosts(t, map[string]*httptest.Server{
		"registry.test":      serve(t, front),
		"auth.registry.test": serve(t, tokens),
		"cdn.registry.test":  serve(t, cdn),
	})
	c := newClient(t, upstream.Config{Name: "docker.io", URL: "http://registry.test", Transport: tr})
	ctx := t.Context()

	head, err := c.HeadManifest(ctx, "library/hello", "latest")
	if err != nil {
		t.Fatalf("HeadManifest: %v", err)
	}
	if head.Digest != digest.FromBytes(manifest) || head.Size != int64(len(manifest)) || head.MediaType != ocispec.MediaTypeImageManifest {
		t.Fatalf("HeadManifest = %+v", head)
	}
	desc, body, err := c.GetManifest(ctx, "library/hello", head.Digest.String())
	if err != nil || desc != head || !bytes.Equal(body, manifest) {
		t.Fatalf("GetManifest = %+v, %v", desc, err)
	}
	size, err := c.HeadBlob(ctx, "library/hello", digest.FromBytes(config))
	if err != nil || size != int64(len(config)) {
		t.Fatalf("HeadBlob = %d, %v", size, err)
	}
	rc, size, err := c.GetBlob(ctx, "library/hello", digest.FromBytes(layer))
	if err != nil {
		t.Fatalf("GetBlob: %v", err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil || size != int64(len(layer)) || digest.FromBytes(got) != digest.FromBytes(layer) {
		t.Fatalf("GetBlob: %d bytes of %d, %v", len(got), size, err)
	}
	resp, err := c.Do(ctx, http.MethodGet, "library/hello", "tags/list", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	tags, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(tags), `"latest"`) {
		t.Errorf("tags/list: %d %s", resp.StatusCode, tags)
	}

	if tokens.count() != 1 {
		t.Errorf("%d token fetches, want 1", tokens.count())
	}
	if cdnSaw.count() != 2 {
		t.Fatalf("CDN saw %d requests, want 2", cdnSaw.count())
	}
	for _, r := range cdnSaw.requests() {
		if r.Header.Get("Authorization") != "" {
			t.Errorf("the CDN on a subdomain received Authorization")
		}
	}
}
