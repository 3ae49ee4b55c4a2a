package upstream

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"
)

// HeadBlob returns the size of blob d in repo without downloading it
// (client-compat.md §6.2), -1 when the upstream sent no Content-Length. A
// Docker-Content-Digest naming another digest is ErrDigestMismatch.
func (c *Client) HeadBlob(ctx context.Context, repo string, d digest.Digest) (int64, error) {
	resp, err := c.blob(ctx, http.MethodHead, repo, d)
	if err != nil {
		return 0, err
	}
	drain(resp)
	return resp.ContentLength, nil
}

// GetBlob starts downloading blob d of repo, following redirects to CDNs
// (§6.1). It returns the body, which the caller must close, and its size
// from Content-Length (-1 if unknown). The caller verifies size and digest
// while it reads. Retries (Config.Retries) happen only before the body
// starts; a failure while reading is the caller's to handle.
func (c *Client) GetBlob(ctx context.Context, repo string, d digest.Digest) (io.ReadCloser, int64, error) {
	resp, err := c.blob(ctx, http.MethodGet, repo, d)
	if err != nil {
		return nil, 0, err
	}
	return resp.Body, resp.ContentLength, nil
}

// blob requests a blob and returns a 200 response, or an error.
func (c *Client) blob(ctx context.Context, method, repo string, d digest.Digest) (*http.Response, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("%w: digest %q: %w", ErrInvalidName, d, err)
	}
	resp, err := c.do(ctx, request{method: method, path: "/v2/" + repo + "/blobs/" + d.String(), repo: repo})
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, c.newResponseError(resp)
	}
	if h := headerDigest(resp.Header); h != "" && h.Algorithm() == d.Algorithm() && h != d {
		drain(resp)
		return nil, fmt.Errorf("upstream %s: %s blob %s@%s: %w: upstream says %s", c.name, method, repo, d, ErrDigestMismatch, h)
	}
	return resp, nil
}
