package mirror

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sort"
	"strconv"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/upstream"
)

// maxListBody bounds tag lists and referrer indexes read from upstream.
const maxListBody = 8 << 20

// Listing is an upstream answer relayed to the client (tags/list, referrers).
type Listing struct {
	Status int
	Header http.Header // Content-Type, Link, OCI-Filters-Applied, when upstream sent them
	Body   []byte
	Result Result
}

var relayedHeaders = []string{"Content-Type", "Link", "OCI-Filters-Applied", "Retry-After"}

// Tags relays GET /v2/<repo>/tags/list?<rawQuery> to upstream. When upstream
// is unreachable or failing, it answers from the tags the cache knows.
func (s *Service) Tags(ctx context.Context, up, repo, rawQuery string) (*Listing, error) {
	u, err := s.upstream(up)
	if err != nil {
		return nil, err
	}
	l, err := s.relay(ctx, u, repo, "tags/list", rawQuery, nil)
	if err == nil && l.Status < 500 && l.Status != http.StatusTooManyRequests {
		return l, nil
	}
	if err != nil && !upstream.IsTransient(err) {
		return nil, err
	}
	cached, cerr := s.cachedTagList(ctx, u, repo, rawQuery)
	if cerr != nil || cached == nil {
		if err != nil {
			return nil, err
		}
		return l, nil
	}
	return cached, nil
}

// cachedTagList builds a tag list from the index, honouring n and last
// (distribution-spec "Listing Tags"). It returns nil when nothing is cached.
func (s *Service) cachedTagList(ctx context.Context, u *upstreamState, repo, rawQuery string) (*Listing, error) {
	tags, err := s.index.Tags(ctx, u.name, repo)
	if err != nil || len(tags) == 0 {
		return nil, err
	}
	q, _ := url.ParseQuery(rawQuery)
	names := make([]string, 0, len(tags))
	for _, t := range tags {
		if last := q.Get("last"); last == "" || t.Name > last {
			names = append(names, t.Name)
		}
	}
	sort.Strings(names)
	if n, err := strconv.Atoi(q.Get("n")); err == nil && n >= 0 && n < len(names) {
		names = names[:n]
	}
	body, err := json.Marshal(struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}{repo, names})
	if err != nil {
		return nil, err
	}
	h := http.Header{"Content-Type": {"application/json"}}
	return &Listing{Status: http.StatusOK, Header: h, Body: body, Result: ResultStale}, nil
}

// Referrers relays GET /v2/<repo>/referrers/<d>?<rawQuery>. An upstream 404
// is passed through: clients read it as "no referrers API" and fall back to
// the tag schema (distribution-spec "Unavailable Referrers API").
func (s *Service) Referrers(ctx context.Context, up, repo string, d digest.Digest, rawQuery string) (*Listing, error) {
	u, err := s.upstream(up)
	if err != nil {
		return nil, err
	}
	return s.relay(ctx, u, repo, "referrers/"+d.String(), rawQuery, []string{"application/vnd.oci.image.index.v1+json"})
}

func (s *Service) relay(ctx context.Context, u *upstreamState, repo, suffix, rawQuery string, accept []string) (*Listing, error) {
	resp, err := u.client.Do(ctx, http.MethodGet, repo, suffix, rawQuery, accept)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxListBody+1))
	if err != nil {
		return nil, fmt.Errorf("read upstream %s: %w: %w", suffix, upstream.ErrUnreachable, err)
	}
	if len(body) > maxListBody {
		return nil, fmt.Errorf("upstream %s: %w: more than %d bytes", suffix, ErrListingTooLarge, maxListBody)
	}
	h := make(http.Header)
	for _, k := range relayedHeaders {
		if v := resp.Header.Values(k); len(v) > 0 {
			h[k] = v
		}
	}
	return &Listing{Status: resp.StatusCode, Header: h, Body: body, Result: ResultPass}, nil
}
