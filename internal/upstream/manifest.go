package upstream

import (
	"context"
	_ "crypto/sha256" // digest algorithms used to verify manifests
	_ "crypto/sha512"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"

	"github.com/opencontainers/go-digest"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
)

// MaxManifestSize is the largest manifest accepted (client-compat.md §5.6:
// registries "SHOULD expect ... at least 4 megabytes").
const MaxManifestSize = 4 << 20

// Manifest media types that image-spec does not define (client-compat.md
// §5.1).
const (
	MediaTypeDockerManifestList = "application/vnd.docker.distribution.manifest.list.v2+json"
	MediaTypeDockerManifest     = "application/vnd.docker.distribution.manifest.v2+json"
	// MediaTypeSchema1Signed is a signed schema1 manifest, whose digest is
	// taken over the JWS payload, not the body (§5.4).
	MediaTypeSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"
	MediaTypeSchema1       = "application/vnd.docker.distribution.manifest.v1+json"
	// MediaTypeOCIArtifact existed in image-spec v1.1.0-rc1…rc3 only;
	// content of that type is still around.
	MediaTypeOCIArtifact = "application/vnd.oci.artifact.manifest.v1+json"
)

// manifestAccept is the Accept header of every manifest request: all
// manifest types wharf can store, then anything (§5.1). Registries
// negotiate on Accept, and a tag fetched with a narrow one may resolve to
// something else (a single-platform manifest instead of the index), so the
// client's own Accept is never passed on.
const manifestAccept = ocispec.MediaTypeImageIndex + ", " +
	ocispec.MediaTypeImageManifest + ", " +
	MediaTypeDockerManifestList + ", " +
	MediaTypeDockerManifest + ", " +
	MediaTypeSchema1Signed + ", " +
	MediaTypeSchema1 + ", " +
	MediaTypeOCIArtifact + ", " +
	"*/*"

// ManifestAccept lists the media types sent as Accept on every manifest
// request, in order. It is informational: changing it changes nothing.
var ManifestAccept = strings.Split(manifestAccept, ", ")

// Descriptor describes a manifest as the upstream presented it.
type Descriptor struct {
	// MediaType is the Content-Type without parameters; for a GET with a
	// missing or generic Content-Type, the type the body declares or
	// evidently has.
	MediaType string
	// Digest identifies the manifest. It is empty only after a HEAD by tag
	// whose response had no (valid) Docker-Content-Digest; then GET and
	// hash the body (§5.3).
	Digest digest.Digest
	// Size is the length in bytes; -1 when a HEAD response had no
	// Content-Length.
	Size int64
}

// HeadManifest asks the upstream for the descriptor of repo:ref without
// fetching the manifest. This is how tags are revalidated: Docker Hub does
// not count HEAD against the pull rate limit (§4.3). For a digest ref, a
// Docker-Content-Digest naming another digest of the same algorithm is
// ErrDigestMismatch.
func (c *Client) HeadManifest(ctx context.Context, repo, ref string) (Descriptor, error) {
	want, err := checkManifestRef(repo, ref)
	if err != nil {
		return Descriptor{}, err
	}
	resp, err := c.do(ctx, manifestRequest(http.MethodHead, repo, ref))
	if err != nil {
		return Descriptor{}, err
	}
	if resp.StatusCode != http.StatusOK {
		return Descriptor{}, c.newResponseError(resp)
	}
	drain(resp)
	d := Descriptor{
		MediaType: contentType(resp.Header.Get("Content-Type")),
		Digest:    headerDigest(resp.Header),
		Size:      resp.ContentLength,
	}
	if want != "" {
		if d.Digest != "" && d.Digest.Algorithm() == want.Algorithm() && d.Digest != want {
			return Descriptor{}, fmt.Errorf("upstream %s: HEAD %s@%s: %w: upstream says %s", c.name, repo, want, ErrDigestMismatch, d.Digest)
		}
		d.Digest = want
	}
	return d, nil
}

// GetManifest fetches repo:ref. The body is at most MaxManifestSize bytes
// (ErrManifestTooLarge otherwise) and verified (§5.3, §5.4):
//   - by digest: the body must hash to ref (ErrDigestMismatch); Digest is
//     ref;
//   - by tag: Digest is the body's sha256, and a Docker-Content-Digest
//     that the body does not match is ErrDigestMismatch;
//   - signed schema1 is digested over its JWS payload, so the body cannot
//     match by design: Digest is ref, else Docker-Content-Digest, else the
//     digest of the payload reconstructed from the signature header.
func (c *Client) GetManifest(ctx context.Context, repo, ref string) (Descriptor, []byte, error) {
	want, err := checkManifestRef(repo, ref)
	if err != nil {
		return Descriptor{}, nil, err
	}
	resp, err := c.do(ctx, manifestRequest(http.MethodGet, repo, ref))
	if err != nil {
		return Descriptor{}, nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return Descriptor{}, nil, c.newResponseError(resp)
	}
	defer resp.Body.Close()
	where := fmt.Sprintf("upstream %s: GET manifest %s:%s", c.name, repo, ref)
	if resp.ContentLength > MaxManifestSize {
		return Descriptor{}, nil, fmt.Errorf("%s: %w: Content-Length %d exceeds %d", where, ErrManifestTooLarge, resp.ContentLength, MaxManifestSize)
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, MaxManifestSize+1))
	if err != nil {
		if ctx.Err() != nil {
			return Descriptor{}, nil, fmt.Errorf("%s: %w", where, err)
		}
		return Descriptor{}, nil, fmt.Errorf("%s: %w: reading body: %w", where, ErrUnreachable, err)
	}
	if len(body) > MaxManifestSize {
		return Descriptor{}, nil, fmt.Errorf("%s: %w: more than %d bytes", where, ErrManifestTooLarge, MaxManifestSize)
	}
	mt := manifestMediaType(resp.Header.Get("Content-Type"), body)
	d, err := manifestDigest(want, headerDigest(resp.Header), mt, body)
	if err != nil {
		return Descriptor{}, nil, fmt.Errorf("%s: %w", where, err)
	}
	return Descriptor{MediaType: mt, Digest: d, Size: int64(len(body))}, body, nil
}

func manifestRequest(method, repo, ref string) request {
	return request{
		method: method,
		path:   "/v2/" + repo + "/manifests/" + ref,
		header: http.Header{"Accept": {manifestAccept}},
		repo:   repo,
	}
}

// manifestDigest establishes and checks the digest of a manifest body.
// want is the digest ref ("" for a tag); header is Docker-Content-Digest
// ("" when absent or invalid).
func manifestDigest(want, header digest.Digest, mediaType string, body []byte) (digest.Digest, error) {
	if mediaType == MediaTypeSchema1Signed {
		switch {
		case want != "":
			return want, nil
		case header != "":
			return header, nil
		}
		d, err := schema1PayloadDigest(body)
		if err != nil {
			return "", fmt.Errorf("%w: signed schema1 manifest without Docker-Content-Digest: %w", ErrDigestMismatch, err)
		}
		return d, nil
	}
	if want != "" {
		if got := want.Algorithm().FromBytes(body); got != want {
			return "", fmt.Errorf("%w: body hashes to %s", ErrDigestMismatch, got)
		}
		return want, nil
	}
	if header != "" {
		if got := header.Algorithm().FromBytes(body); got != header {
			return "", fmt.Errorf("%w: Docker-Content-Digest %s, body hashes to %s", ErrDigestMismatch, header, got)
		}
	}
	return digest.FromBytes(body), nil
}

// headerDigest returns the response's Docker-Content-Digest if it is a
// valid digest of an available algorithm.
func headerDigest(h http.Header) digest.Digest {
	d, err := digest.Parse(strings.TrimSpace(h.Get("Docker-Content-Digest")))
	if err != nil {
		return ""
	}
	return d
}

// contentType returns the media type of a Content-Type value, lower-cased
// and without parameters.
func contentType(v string) string {
	if v == "" {
		return ""
	}
	if mt, _, err := mime.ParseMediaType(v); err == nil {
		return mt
	}
	mt, _, _ := strings.Cut(v, ";")
	return strings.ToLower(strings.TrimSpace(mt))
}

// manifestMediaType is the Content-Type, unless that is missing or generic
// (some registries and static-file mirrors answer application/json or
// application/octet-stream); then the body decides: its mediaType field,
// or its shape (schemaVersion 1 with or without signatures, an index's
// manifests, a manifest's config), as containerd and go-containerregistry
// do. If the body says nothing either, the Content-Type stays.
func manifestMediaType(header string, body []byte) string {
	ct := contentType(header)
	switch ct {
	case "", "application/json", "text/plain", "application/octet-stream", "binary/octet-stream":
	default:
		return ct
	}
	var probe struct {
		SchemaVersion int             `json:"schemaVersion"`
		MediaType     string          `json:"mediaType"`
		Manifests     json.RawMessage `json:"manifests"`
		Config        json.RawMessage `json:"config"`
		Signatures    json.RawMessage `json:"signatures"`
	}
	if json.Unmarshal(body, &probe) != nil {
		return ct
	}
	switch {
	case probe.MediaType != "":
		return probe.MediaType
	case probe.SchemaVersion == 1 && probe.Signatures != nil:
		return MediaTypeSchema1Signed
	case probe.SchemaVersion == 1:
		return MediaTypeSchema1
	case probe.Manifests != nil:
		return ocispec.MediaTypeImageIndex
	case probe.Config != nil:
		return ocispec.MediaTypeImageManifest
	}
	return ct
}

// schema1PayloadDigest computes the digest of a signed schema1 manifest the
// way distribution and containers/image do (§5.4): the JWS payload is the
// body's first formatLength bytes followed by the base64url-decoded
// formatTail, both taken from the first signature's protected header.
func schema1PayloadDigest(body []byte) (digest.Digest, error) {
	var jws struct {
		Signatures []struct {
			Protected string `json:"protected"`
		} `json:"signatures"`
	}
	if err := json.Unmarshal(body, &jws); err != nil {
		return "", err
	}
	if len(jws.Signatures) == 0 {
		return "", errors.New("no signatures")
	}
	protected, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(jws.Signatures[0].Protected, "="))
	if err != nil {
		return "", fmt.Errorf("protected header: %w", err)
	}
	var hdr struct {
		FormatLength int    `json:"formatLength"`
		FormatTail   string `json:"formatTail"`
	}
	if err := json.Unmarshal(protected, &hdr); err != nil {
		return "", fmt.Errorf("protected header: %w", err)
	}
	tail, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(hdr.FormatTail, "="))
	if err != nil {
		return "", fmt.Errorf("formatTail: %w", err)
	}
	if hdr.FormatLength <= 0 || hdr.FormatLength > len(body) {
		return "", fmt.Errorf("formatLength %d out of range", hdr.FormatLength)
	}
	payload := make([]byte, 0, hdr.FormatLength+len(tail))
	payload = append(append(payload, body[:hdr.FormatLength]...), tail...)
	return digest.FromBytes(payload), nil
}
