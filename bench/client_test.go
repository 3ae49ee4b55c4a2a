//go:build bench

package bench

import (
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"golang.org/x/sync/errgroup"
)

// Media types a containerd pull accepts and understands (image-spec
// media-types.md; Docker's Image Manifest V2, Schema 2).
const (
	mediaDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mediaDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
)

// acceptManifests is the Accept header containerd's resolver sends on
// manifest requests (remotes/docker/resolver.go), in its order.
var acceptManifests = strings.Join([]string{
	mediaDockerManifest, mediaDockerList, ocispec.MediaTypeImageManifest, ocispec.MediaTypeImageIndex, "*/*",
}, ", ")

const (
	// layerConcurrency is containerd's default max_concurrent_downloads.
	layerConcurrency = 3
	// maxManifest bounds a manifest or token body read into memory
	// (distribution-spec: registries should accept manifests up to 4 MiB).
	maxManifest = 4 << 20
	// copyBuffer is the read size while hashing a blob; containerd copies
	// through 1 MiB buffers, larger than io.Copy's 32 KiB.
	copyBuffer = 1 << 20
)

var (
	// errDigest means received content did not hash to the digest it was
	// asked for by, or had the wrong size.
	errDigest = errors.New("content does not match its descriptor")
	// errNoPlatform means an index lists no manifest for the wanted platform.
	errNoPlatform = errors.New("no manifest for the platform")
	// errProtocol means a registry answer a client cannot use (a missing
	// Docker-Content-Digest, an unknown media type, a bad challenge).
	errProtocol = errors.New("unusable registry response")
)

// statusError is an unexpected HTTP status.
type statusError struct {
	Method, URL string
	Status      int
}

func (e *statusError) Error() string {
	return fmt.Sprintf("%s %s: status %d", e.Method, e.URL, e.Status)
}

// puller is one pull session, like one containerd resolver: it talks to one
// registry base URL and remembers the Bearer token it obtained for the
// session. Its methods are safe for concurrent use.
type puller struct {
	hc   *http.Client
	base string // "http://127.0.0.1:PORT"

	mu    sync.Mutex
	token string
}

func newPuller(hc *http.Client, base string) *puller {
	return &puller{hc: hc, base: strings.TrimSuffix(base, "/")}
}

// pullStats is what one pull moved.
type pullStats struct {
	Blobs     int   // config + layers fetched and verified
	BlobBytes int64 // their total size
}

// pull fetches repo:tag the way containerd does (remotes/docker): HEAD the
// tag for its digest, GET the manifest by digest, descend an index to the
// manifest for platform ("os/arch"), then GET the config and the layers,
// layerConcurrency at a time, verifying every digest and size.
func (p *puller) pull(ctx context.Context, repo, tag, platform string) (pullStats, error) {
	resp, err := p.do(ctx, http.MethodHead, "/v2/"+repo+"/manifests/"+tag, acceptManifests)
	if err != nil {
		return pullStats{}, err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return pullStats{}, &statusError{http.MethodHead, resp.Request.URL.String(), resp.StatusCode}
	}
	dgst, err := digest.Parse(resp.Header.Get("Docker-Content-Digest"))
	if err != nil {
		return pullStats{}, fmt.Errorf("%w: HEAD %s:%s: Docker-Content-Digest: %v", errProtocol, repo, tag, err)
	}

	// Bounded: an index leads to a manifest, which must be an image.
	for range 2 {
		mediaType, body, err := p.manifest(ctx, repo, dgst)
		if err != nil {
			return pullStats{}, err
		}
		switch mediaType {
		case ocispec.MediaTypeImageIndex, mediaDockerList:
			var idx ocispec.Index
			if err := json.Unmarshal(body, &idx); err != nil {
				return pullStats{}, fmt.Errorf("%w: index %s: %v", errProtocol, dgst, err)
			}
			if dgst, err = pickPlatform(idx, platform); err != nil {
				return pullStats{}, fmt.Errorf("index %s: %w", dgst, err)
			}
		case ocispec.MediaTypeImageManifest, mediaDockerManifest:
			var m ocispec.Manifest
			if err := json.Unmarshal(body, &m); err != nil {
				return pullStats{}, fmt.Errorf("%w: manifest %s: %v", errProtocol, dgst, err)
			}
			return p.blobs(ctx, repo, append([]ocispec.Descriptor{m.Config}, m.Layers...))
		default:
			return pullStats{}, fmt.Errorf("%w: manifest %s has media type %q", errProtocol, dgst, mediaType)
		}
	}
	return pullStats{}, fmt.Errorf("%w: index %s nests indexes", errProtocol, dgst)
}

// manifest GETs a manifest by digest and verifies it.
func (p *puller) manifest(ctx context.Context, repo string, dgst digest.Digest) (mediaType string, body []byte, err error) {
	resp, err := p.do(ctx, http.MethodGet, "/v2/"+repo+"/manifests/"+dgst.String(), acceptManifests)
	if err != nil {
		return "", nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", nil, &statusError{http.MethodGet, resp.Request.URL.String(), resp.StatusCode}
	}
	body, err = io.ReadAll(io.LimitReader(resp.Body, maxManifest+1))
	if err != nil {
		return "", nil, fmt.Errorf("manifest %s: %w", dgst, err)
	}
	if len(body) > maxManifest || digest.SHA256.FromBytes(body) != dgst {
		return "", nil, fmt.Errorf("manifest %s: %w", dgst, errDigest)
	}
	mediaType = resp.Header.Get("Content-Type")
	if mediaType == "" {
		var probe struct {
			MediaType string `json:"mediaType"`
		}
		_ = json.Unmarshal(body, &probe)
		mediaType = probe.MediaType
	}
	return mediaType, body, nil
}

// pickPlatform returns the digest of the first manifest in idx for
// platform, "os/arch".
func pickPlatform(idx ocispec.Index, platform string) (digest.Digest, error) {
	wantOS, wantArch, _ := strings.Cut(platform, "/")
	for _, d := range idx.Manifests {
		if d.Platform != nil && d.Platform.OS == wantOS && d.Platform.Architecture == wantArch {
			return d.Digest, nil
		}
	}
	return "", fmt.Errorf("%w %s", errNoPlatform, platform)
}

// blobs fetches descs layerConcurrency at a time, in order of start.
func (p *puller) blobs(ctx context.Context, repo string, descs []ocispec.Descriptor) (pullStats, error) {
	g, ctx := errgroup.WithContext(ctx)
	g.SetLimit(layerConcurrency)
	var st pullStats
	for _, d := range descs {
		st.Blobs++
		st.BlobBytes += d.Size
		g.Go(func() error { return p.blob(ctx, repo, d.Digest, d.Size) })
	}
	return st, g.Wait()
}

// blob GETs one blob (following the registry's redirect to its storage
// host) and checks that it has size bytes hashing to dgst.
func (p *puller) blob(ctx context.Context, repo string, dgst digest.Digest, size int64) error {
	resp, err := p.do(ctx, http.MethodGet, "/v2/"+repo+"/blobs/"+dgst.String(), "")
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &statusError{http.MethodGet, resp.Request.URL.String(), resp.StatusCode}
	}
	h := sha256.New()
	n, err := io.CopyBuffer(h, resp.Body, make([]byte, copyBuffer))
	if err != nil {
		return fmt.Errorf("blob %s: after %d bytes: %w", dgst, n, err)
	}
	if n != size || digest.NewDigest(digest.SHA256, h) != dgst {
		return fmt.Errorf("blob %s: %d bytes: %w", dgst, n, errDigest)
	}
	return nil
}

// do sends one request with the session's token. A 401 with a Bearer
// challenge is answered the way containerd's authorizer does: fetch an
// anonymous token from the realm for the challenge's service and scope
// (distribution token specification, "Requesting a Token"), keep it, and
// send the request once more.
func (p *puller) do(ctx context.Context, method, path, accept string) (*http.Response, error) {
	for attempt := 0; ; attempt++ {
		req, err := http.NewRequestWithContext(ctx, method, p.base+path, nil)
		if err != nil {
			return nil, err
		}
		if accept != "" {
			req.Header.Set("Accept", accept)
		}
		p.mu.Lock()
		token := p.token
		p.mu.Unlock()
		if token != "" {
			// net/http drops Authorization when it follows a redirect
			// to another host, as the storage host's signed URLs need.
			req.Header.Set("Authorization", "Bearer "+token)
		}
		resp, err := p.hc.Do(req)
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusUnauthorized || attempt > 0 {
			return resp, nil
		}
		challenge := resp.Header.Get("WWW-Authenticate")
		_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, maxManifest))
		resp.Body.Close()
		scheme, params, err := parseChallenge(challenge)
		if err != nil || !strings.EqualFold(scheme, "Bearer") || params["realm"] == "" {
			return nil, fmt.Errorf("%w: %s %s: 401 with challenge %q", errProtocol, method, path, challenge)
		}
		if err := p.fetchToken(ctx, params); err != nil {
			return nil, err
		}
	}
}

// fetchToken GETs an anonymous token for the challenge's service and scope.
func (p *puller) fetchToken(ctx context.Context, challenge map[string]string) error {
	u, err := url.Parse(challenge["realm"])
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") {
		return fmt.Errorf("%w: token realm %q", errProtocol, challenge["realm"])
	}
	q := u.Query()
	if s := challenge["service"]; s != "" {
		q.Set("service", s)
	}
	if s := challenge["scope"]; s != "" {
		q.Set("scope", s)
	}
	u.RawQuery = q.Encode()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return err
	}
	resp, err := p.hc.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &statusError{http.MethodGet, u.String(), resp.StatusCode}
	}
	var tok struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, maxManifest)).Decode(&tok); err != nil {
		return fmt.Errorf("%w: token response: %v", errProtocol, err)
	}
	t := cmp.Or(tok.Token, tok.AccessToken)
	if t == "" {
		return fmt.Errorf("%w: token response without a token", errProtocol)
	}
	p.mu.Lock()
	p.token = t
	p.mu.Unlock()
	return nil
}

// parseChallenge parses one RFC 9110 §11.6.1 challenge, the form registries
// send: a scheme, then comma-separated auth-params whose values are tokens
// or quoted strings (which may hold commas, as in scope="repository:a:pull,push").
// Parameter names are lower-cased.
func parseChallenge(h string) (scheme string, params map[string]string, err error) {
	h = strings.TrimSpace(h)
	scheme, rest, _ := strings.Cut(h, " ")
	if scheme == "" {
		return "", nil, fmt.Errorf("%w: empty challenge", errProtocol)
	}
	params = make(map[string]string)
	// Each round consumes at least one byte of rest, so len(h) rounds bound it.
	for range len(h) + 1 {
		rest = strings.TrimLeft(rest, " \t,")
		if rest == "" {
			return scheme, params, nil
		}
		eq := strings.IndexByte(rest, '=')
		if eq <= 0 {
			return "", nil, fmt.Errorf("%w: challenge %q: parameter without a value", errProtocol, h)
		}
		name := strings.ToLower(strings.TrimSpace(rest[:eq]))
		rest = strings.TrimLeft(rest[eq+1:], " \t")
		var value string
		if strings.HasPrefix(rest, `"`) {
			var b strings.Builder
			i := 1
			for ; i < len(rest) && rest[i] != '"'; i++ {
				if rest[i] == '\\' && i+1 < len(rest) {
					i++
				}
				b.WriteByte(rest[i])
			}
			if i >= len(rest) {
				return "", nil, fmt.Errorf("%w: challenge %q: unterminated quoted string", errProtocol, h)
			}
			value, rest = b.String(), rest[i+1:]
		} else {
			end := strings.IndexAny(rest, ", \t")
			if end < 0 {
				end = len(rest)
			}
			value, rest = rest[:end], rest[end:]
		}
		params[name] = value
	}
	return "", nil, fmt.Errorf("%w: challenge %q: too many parameters", errProtocol, h)
}
