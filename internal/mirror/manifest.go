package mirror

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/opencontainers/go-digest"
	"golang.org/x/sync/singleflight"

	"github.com/wharf-mirror/wharf/internal/blob"
	"github.com/wharf-mirror/wharf/internal/meta"
	"github.com/wharf-mirror/wharf/internal/upstream"
)

// Result says how a request was answered; it is logged and sent to clients
// in the X-Wharf-Cache header.
type Result string

const (
	ResultHit         Result = "hit"         // from the cache, no upstream request
	ResultMiss        Result = "miss"        // fetched from upstream
	ResultRevalidated Result = "revalidated" // tag confirmed upstream with a HEAD, content from the cache
	ResultStale       Result = "stale"       // upstream failed; last known tag mapping served
	ResultJoined      Result = "joined"      // streamed from a fetch another request started
	ResultPass        Result = "pass"        // relayed from upstream without caching
)

// manifestOpTimeout bounds a shared manifest or tag operation upstream.
const manifestOpTimeout = 2 * time.Minute

// schema1Signed is refused: its digest is computed over the JWS payload, not
// the bytes served (client-compat §5.4), so it cannot be stored
// content-addressed, and current Docker and containerd refuse it anyway.
const schema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"

// ErrSchema1Signed reports an upstream manifest in the signed schema1 format.
var ErrSchema1Signed = errors.New("signed schema1 manifests are not supported; push the image in schema2 or OCI format")

// Manifest is a manifest ready to be served.
type Manifest struct {
	Digest    digest.Digest
	MediaType string
	Size      int64
	Body      []byte // nil when the caller did not ask for the body
	Result    Result
	// CheckedAt is when upstream last confirmed the tag (tag requests only).
	CheckedAt time.Time
}

// Manifest returns the manifest ref (a tag or a digest) of repo on the
// upstream named up. withBody=false (HEAD) avoids reading the bytes.
func (s *Service) Manifest(ctx context.Context, up, repo, ref string, withBody bool) (*Manifest, error) {
	u, err := s.upstream(up)
	if err != nil {
		return nil, err
	}
	if d, err := digest.Parse(ref); err == nil {
		return s.manifestByDigest(ctx, u, repo, d, withBody)
	}
	return s.manifestByTag(ctx, u, repo, ref, withBody)
}

func (s *Service) manifestByDigest(ctx context.Context, u *upstreamState, repo string, d digest.Digest, withBody bool) (*Manifest, error) {
	unpin, err := s.inuse.pin(ctx, d) // from the cache check to the access record
	if err != nil {
		return nil, err
	}
	defer unpin()
	m, err := s.cachedManifest(ctx, d, withBody)
	if err == nil {
		confirm := func(ctx context.Context) error {
			_, err := u.client.HeadManifest(ctx, repo, d.String())
			return err
		}
		if err := s.linkedOrConfirmed(ctx, u, repo, d, confirm); err != nil {
			return nil, err
		}
		m.Result = ResultHit
		s.access.touch(d)
		return m, nil
	}
	if !errors.Is(err, meta.ErrNotFound) && !errors.Is(err, blob.ErrNotFound) {
		return nil, err
	}
	_, err = s.shared(ctx, &s.mans, u.name+"\x00"+repo+"\x00"+d.String(), func(ctx context.Context) (any, error) {
		desc, body, err := u.client.GetManifest(ctx, repo, d.String())
		if err != nil {
			return nil, err
		}
		if desc.Digest != "" && desc.Digest != d {
			return nil, fmt.Errorf("%w: upstream returned %s for %s", upstream.ErrDigestMismatch, desc.Digest, d)
		}
		desc.Digest = d
		return nil, s.storeManifest(ctx, u, repo, desc, body)
	})
	if err != nil {
		return nil, notFoundAs(err)
	}
	m, err = s.cachedManifest(ctx, d, withBody)
	if err != nil {
		return nil, err
	}
	m.Result = ResultMiss
	s.access.touch(d)
	return m, nil
}

func (s *Service) manifestByTag(ctx context.Context, u *upstreamState, repo, tag string, withBody bool) (*Manifest, error) {
	now := s.now()
	t, err := s.index.Tag(ctx, u.name, repo, tag)
	cached := err == nil
	if err != nil && !errors.Is(err, meta.ErrNotFound) {
		return nil, fmt.Errorf("index lookup: %w", err)
	}
	if cached && now.Sub(t.CheckedAt) < u.policy.TagTTL {
		if m, err := s.cachedManifest(ctx, t.Digest, withBody); err == nil {
			m.Result, m.CheckedAt = ResultHit, t.CheckedAt
			s.access.touch(t.Digest)
			return m, nil
		}
		// The content went away (evicted): resolve again below.
	}
	if u.negativeHit(repo, tag, now) {
		return nil, fmt.Errorf("%w: %s/%s:%s (upstream 404, remembered)", ErrNotFound, u.name, repo, tag)
	}
	staleable := cached && now.Sub(t.CheckedAt) <= u.policy.MaxStale
	// A cached answer that may be served stale bounds how long upstream
	// gets to confirm it: a hanging upstream must not hold a pull for
	// minutes, and one that failed moments ago gets only a short probe.
	revalidate := s.revalidateTimeout
	if u.down(now) {
		revalidate = s.downProbeTimeout
	}
	v, err := s.shared(ctx, &s.tags, u.name+"\x00"+repo+"\x00"+tag, func(ctx context.Context) (any, error) {
		return s.resolveTag(ctx, u, repo, tag, revalidate)
	})
	if err != nil {
		if upstream.IsNotFound(err) {
			// The tag is gone upstream: forget the mapping, so that a
			// later upstream failure cannot bring it back as stale.
			if cached {
				if derr := s.index.DeleteTag(ctx, u.name, repo, tag); derr != nil {
					s.log.LogAttrs(ctx, slogWarn, "forgetting a deleted tag failed", attrUpstream(u.name), attrRepo(repo), attrRef(tag), attrErr(derr))
				}
			}
			u.rememberNotFound(repo, tag, now)
			return nil, notFoundAs(err)
		}
		if upstream.IsTransient(err) || errors.Is(err, context.DeadlineExceeded) {
			u.markDown(s.now().Add(s.downBackoff))
		}
		if staleable && (upstream.IsTransient(err) || errors.Is(err, context.DeadlineExceeded)) {
			if m, merr := s.cachedManifest(ctx, t.Digest, withBody); merr == nil {
				s.log.LogAttrs(ctx, slogWarn, "serving stale tag: upstream failed",
					attrUpstream(u.name), attrRepo(repo), attrRef(tag), attrDigest(t.Digest),
					attrAge(now.Sub(t.CheckedAt)), attrErr(err))
				m.Result, m.CheckedAt = ResultStale, t.CheckedAt
				s.access.touch(t.Digest)
				return m, nil
			}
		}
		return nil, err
	}
	r := v.(tagResolution)
	m, err := s.cachedManifest(ctx, r.digest, withBody)
	if err != nil {
		return nil, err
	}
	m.Result, m.CheckedAt = r.result, r.checkedAt
	s.access.touch(r.digest)
	return m, nil
}

type tagResolution struct {
	digest    digest.Digest
	result    Result
	checkedAt time.Time
}

// resolveTag asks upstream what the tag points to now. With a cached mapping
// it sends a HEAD (free on Docker Hub's rate limit) and GETs only a changed
// digest that is not cached yet; without one it GETs the tag directly.
func (s *Service) resolveTag(ctx context.Context, u *upstreamState, repo, tag string, revalidate time.Duration) (tagResolution, error) {
	t, err := s.index.Tag(ctx, u.name, repo, tag)
	if err == nil && s.manifestCached(ctx, t.Digest) {
		hctx, cancel := context.WithTimeout(ctx, revalidate)
		desc, err := u.client.HeadManifest(hctx, repo, tag)
		cancel()
		if err != nil {
			return tagResolution{}, err
		}
		if desc.Digest != "" {
			result := ResultRevalidated
			if desc.Digest != t.Digest && !s.manifestCached(ctx, desc.Digest) {
				d, body, err := u.client.GetManifest(ctx, repo, desc.Digest.String())
				if err != nil {
					return tagResolution{}, err
				}
				d.Digest = desc.Digest
				if err := s.storeManifest(ctx, u, repo, d, body); err != nil {
					return tagResolution{}, err
				}
				result = ResultMiss
			} else if desc.Digest != t.Digest {
				// Known content under a moved tag: it now belongs here too.
				if err := s.linkManifest(ctx, u, repo, desc.Digest); err != nil {
					return tagResolution{}, err
				}
			}
			return s.recordTag(ctx, u, repo, tag, desc.Digest, result)
		}
		// No Docker-Content-Digest on the HEAD: fall back to GET and hash.
	}
	desc, body, err := u.client.GetManifest(ctx, repo, tag)
	if err != nil {
		return tagResolution{}, err
	}
	if desc.Digest == "" {
		desc.Digest = digest.FromBytes(body)
	}
	if err := s.storeManifest(ctx, u, repo, desc, body); err != nil {
		return tagResolution{}, err
	}
	return s.recordTag(ctx, u, repo, tag, desc.Digest, ResultMiss)
}

func (s *Service) recordTag(ctx context.Context, u *upstreamState, repo, tag string, d digest.Digest, result Result) (tagResolution, error) {
	now := s.now()
	if err := s.index.PutTag(ctx, meta.Tag{Upstream: u.name, Repo: repo, Name: tag, Digest: d, CheckedAt: now}); err != nil {
		return tagResolution{}, fmt.Errorf("index tag: %w", err)
	}
	u.forgetNotFound(repo, tag)
	return tagResolution{digest: d, result: result, checkedAt: now}, nil
}

// manifestCached reports whether both the record and the bytes of manifest d
// are present.
func (s *Service) manifestCached(ctx context.Context, d digest.Digest) bool {
	if _, err := s.index.Manifest(ctx, d); err != nil {
		return false
	}
	_, err := s.blobs.Stat(ctx, d)
	return err == nil
}

// cachedManifest loads manifest d from the cache; the error wraps
// meta.ErrNotFound or blob.ErrNotFound when it is not cached.
func (s *Service) cachedManifest(ctx context.Context, d digest.Digest, withBody bool) (*Manifest, error) {
	unpin, err := s.inuse.pin(ctx, d)
	if err != nil {
		return nil, err
	}
	defer unpin()
	rec, err := s.index.Manifest(ctx, d)
	if err != nil {
		return nil, err
	}
	m := &Manifest{Digest: d, MediaType: rec.MediaType, Size: rec.Size}
	if !withBody {
		if _, err := s.blobs.Stat(ctx, d); err != nil {
			return nil, err
		}
		return m, nil
	}
	r, size, err := s.blobs.Open(ctx, d)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	if size != rec.Size {
		return nil, fmt.Errorf("manifest %s: index says %d bytes, store has %d", d, rec.Size, size)
	}
	m.Body = make([]byte, size)
	if _, err := io.ReadFull(r, m.Body); err != nil {
		return nil, fmt.Errorf("read manifest %s: %w", d, err)
	}
	return m, nil
}

// storeManifest commits verified manifest bytes and records them, linking
// the manifest and everything it references to u/repo.
func (s *Service) storeManifest(ctx context.Context, u *upstreamState, repo string, desc upstream.Descriptor, body []byte) (err error) {
	if desc.MediaType == schema1Signed {
		return ErrSchema1Signed
	}
	if got := digest.FromBytes(body); desc.Digest.Algorithm() == digest.SHA256 && got != desc.Digest {
		return fmt.Errorf("%w: manifest body is %s, expected %s", upstream.ErrDigestMismatch, got, desc.Digest)
	}
	unpin, err := s.inuse.pin(ctx, desc.Digest)
	if err != nil {
		return err
	}
	defer unpin()
	refs := meta.ManifestRefs(body)
	w, err := s.blobs.Create(ctx, desc.Digest, int64(len(body)))
	if err != nil {
		return fmt.Errorf("store manifest: %w", err)
	}
	defer w.Cancel()
	if _, err := w.Write(body); err != nil {
		return fmt.Errorf("store manifest: %w", err)
	}
	if err := w.Commit(ctx); err != nil {
		return fmt.Errorf("store manifest: %w", err)
	}
	s.obs.UpstreamBytes(u.name, int64(len(body)))
	mt := desc.MediaType
	if mt == "" {
		mt = mediaTypeOf(body)
	}
	if err := s.index.PutManifest(ctx, meta.Manifest{Digest: desc.Digest, MediaType: mt, Size: int64(len(body)), Refs: refs}); err != nil {
		return fmt.Errorf("index manifest: %w", err)
	}
	if err := s.index.Link(ctx, u.name, repo, append([]digest.Digest{desc.Digest}, refs...)...); err != nil {
		return fmt.Errorf("index link: %w", err)
	}
	return nil
}

// linkManifest links a cached manifest and its references to u/repo.
func (s *Service) linkManifest(ctx context.Context, u *upstreamState, repo string, d digest.Digest) error {
	rec, err := s.index.Manifest(ctx, d)
	if err != nil {
		return err
	}
	return s.index.Link(ctx, u.name, repo, append([]digest.Digest{d}, rec.Refs...)...)
}

// mediaTypeOf reads the mediaType field of a manifest body, for upstreams
// that send no usable Content-Type.
func mediaTypeOf(body []byte) string {
	var m struct {
		MediaType     string          `json:"mediaType"`
		SchemaVersion int             `json:"schemaVersion"`
		Manifests     json.RawMessage `json:"manifests"`
	}
	if json.Unmarshal(body, &m) != nil {
		return "application/octet-stream"
	}
	switch {
	case m.MediaType != "":
		return m.MediaType
	case m.SchemaVersion == 1:
		return "application/vnd.docker.distribution.manifest.v1+json"
	case m.Manifests != nil:
		return "application/vnd.oci.image.index.v1+json"
	default:
		return "application/vnd.oci.image.manifest.v1+json"
	}
}

// shared runs fn once for all concurrent callers with the same key, detached
// from any one caller's context: a caller that gives up leaves the
// operation running for the others (and for the cache).
func (s *Service) shared(ctx context.Context, g *singleflight.Group, key string, fn func(context.Context) (any, error)) (any, error) {
	ch := g.DoChan(key, func() (any, error) {
		ctx, cancel := s.detached(manifestOpTimeout)
		defer cancel()
		return fn(ctx)
	})
	select {
	case r := <-ch:
		return r.Val, r.Err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// notFoundAs turns an upstream 404 into ErrNotFound, keeping the upstream
// error in the chain for its message.
func notFoundAs(err error) error {
	if upstream.IsNotFound(err) {
		return fmt.Errorf("%w: %w", ErrNotFound, err)
	}
	return err
}

func (u *upstreamState) negativeHit(repo, tag string, now time.Time) bool {
	if u.policy.NegativeTTL <= 0 {
		return false
	}
	u.negMu.Lock()
	defer u.negMu.Unlock()
	exp, ok := u.neg[repo+"\x00"+tag]
	if ok && now.After(exp) {
		delete(u.neg, repo+"\x00"+tag)
		return false
	}
	return ok
}

// maxNegative bounds the negative cache so that a client probing random
// tags cannot grow it without limit.
const maxNegative = 10000

func (u *upstreamState) rememberNotFound(repo, tag string, now time.Time) {
	if u.policy.NegativeTTL <= 0 {
		return
	}
	u.negMu.Lock()
	defer u.negMu.Unlock()
	if len(u.neg) >= maxNegative {
		for k, exp := range u.neg {
			if now.After(exp) {
				delete(u.neg, k)
			}
		}
		if len(u.neg) >= maxNegative {
			return
		}
	}
	u.neg[repo+"\x00"+tag] = now.Add(u.policy.NegativeTTL)
}

func (u *upstreamState) forgetNotFound(repo, tag string) {
	u.negMu.Lock()
	delete(u.neg, repo+"\x00"+tag)
	u.negMu.Unlock()
}
