package upstream

import (
	"context"
	"fmt"
	"net/http"
	"strings"
)

// Do sends an authenticated request to /v2/<repo>/<suffix>?<rawQuery>, for
// the requests the mirror relays rather than interprets (tags/list,
// referrers). Redirects, challenges and retries are handled as for every
// request. The response is returned whatever its status, for the caller
// to relay; the caller closes the body. accept, when not empty, is sent as
// one Accept header.
func (c *Client) Do(ctx context.Context, method, repo, suffix, rawQuery string, accept []string) (*http.Response, error) {
	if err := checkRepo(repo); err != nil {
		return nil, err
	}
	if err := checkSuffix(suffix); err != nil {
		return nil, err
	}
	if strings.ContainsFunc(rawQuery, func(r rune) bool { return r <= ' ' || r == 0x7f || r == '#' }) {
		return nil, fmt.Errorf("%w: query %q", ErrInvalidName, rawQuery)
	}
	r := request{method: method, path: "/v2/" + repo + "/" + suffix, query: rawQuery, header: http.Header{}, repo: repo}
	if len(accept) > 0 {
		r.header.Set("Accept", strings.Join(accept, ", "))
	}
	return c.do(ctx, r)
}

// Ping checks that the upstream answers on /v2/: 200, or 401 (it wants
// authentication, which is answered per repository later). The challenge
// of a 401 is remembered, so that the first real request can authenticate
// without a round trip.
func (c *Client) Ping(ctx context.Context) error {
	resp, err := c.do(ctx, request{method: http.MethodGet, path: "/v2/", noAuth: true})
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized {
		drain(resp)
		return nil
	}
	return c.newResponseError(resp)
}
