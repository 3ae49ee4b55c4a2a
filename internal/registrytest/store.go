package registrytest

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/opencontainers/go-digest"
)

// content is a stored blob: its size and a fresh reader per request.
type content interface {
	Size() int64
	Open() io.ReadSeeker
}

// blobStore holds blob content by digest and records which repositories each
// blob belongs to, as a real registry does: a blob pushed to "a" is unknown
// under "b" (distribution-spec, "Pulling blobs": 404 if the blob is not in the
// repository).
//
// It also serves as go-containerregistry's registry.BlobHandler, so blobs
// uploaded over HTTP land here too.
type blobStore struct {
	mu    sync.RWMutex
	data  map[digest.Digest]content
	links map[string]map[digest.Digest]struct{} // repository → digests
}

func newBlobStore() *blobStore {
	return &blobStore{data: map[digest.Digest]content{}, links: map[string]map[digest.Digest]struct{}{}}
}

func (s *blobStore) put(repo string, d digest.Digest, c content) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.data[d] = c
	if s.links[repo] == nil {
		s.links[repo] = map[digest.Digest]struct{}{}
	}
	s.links[repo][d] = struct{}{}
}

func (s *blobStore) get(repo string, d digest.Digest) (content, bool) {
	s.mu.RLock()
	defer s.mu.RUnlock()
	if _, ok := s.links[repo][d]; !ok {
		return nil, false
	}
	c, ok := s.data[d]
	return c, ok
}

// routeKey carries the parsed route of a request to the BlobHandler methods,
// which go-containerregistry calls with a repository string derived from the
// path in a way that is wrong for finished chunked uploads.
type routeKey struct{}

func repoOf(ctx context.Context, fallback string) string {
	if r, ok := ctx.Value(routeKey{}).(route); ok {
		return r.name
	}
	return fallback
}

// Get implements registry.BlobHandler.
func (s *blobStore) Get(ctx context.Context, repo string, h v1.Hash) (io.ReadCloser, error) {
	c, ok := s.get(repoOf(ctx, repo), digest.Digest(h.String()))
	if !ok {
		return nil, registry.ErrNotFound
	}
	return io.NopCloser(c.Open()), nil
}

// Stat implements registry.BlobStatHandler.
func (s *blobStore) Stat(ctx context.Context, repo string, h v1.Hash) (int64, error) {
	c, ok := s.get(repoOf(ctx, repo), digest.Digest(h.String()))
	if !ok {
		return 0, registry.ErrNotFound
	}
	return c.Size(), nil
}

// Put implements registry.BlobPutHandler. go-containerregistry has verified
// rc against the digest by the time it reaches EOF.
func (s *blobStore) Put(ctx context.Context, repo string, h v1.Hash, rc io.ReadCloser) error {
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return err
	}
	s.put(repoOf(ctx, repo), digest.Digest(h.String()), bytesContent(b))
	return nil
}

// Delete implements registry.BlobDeleteHandler: it unlinks the blob from the
// repository; the content stays for other repositories.
func (s *blobStore) Delete(ctx context.Context, repo string, h v1.Hash) error {
	repo = repoOf(ctx, repo)
	d := digest.Digest(h.String())
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.links[repo][d]; !ok {
		return registry.ErrNotFound
	}
	delete(s.links[repo], d)
	return nil
}

var errBadDigest = errors.New("registrytest: malformed digest")

// serveBlob answers GET and HEAD /v2/<name>/blobs/<digest> the way
// client-compat §6.2 describes a registry: Content-Length,
// Docker-Content-Digest, ETag, Accept-Ranges and RFC 9110 ranges (206, 416)
// through http.ServeContent, which go-containerregistry's handler only
// partly implements (it cannot parse "bytes=N-").
func (s *blobStore) serveBlob(w http.ResponseWriter, req *http.Request, rt route) {
	d, err := digest.Parse(rt.ref)
	if err != nil {
		writeError(w, req, http.StatusBadRequest, "DIGEST_INVALID", errBadDigest.Error())
		return
	}
	c, ok := s.get(rt.name, d)
	if !ok {
		writeError(w, req, http.StatusNotFound, "BLOB_UNKNOWN", "blob unknown to registry")
		return
	}
	h := w.Header()
	h.Set("Docker-Content-Digest", d.String())
	h.Set("Content-Type", "application/octet-stream")
	h.Set("Etag", `"`+d.String()+`"`)
	http.ServeContent(w, req, "", time.Time{}, c.Open())
}
