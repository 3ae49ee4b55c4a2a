//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/wharf-mirror/wharf/internal/registrytest"
)

// upstream is one of the local registries wharf mirrors, under the registry
// name wharf knows it by.
type upstream struct {
	name string // docker.io, ghcr.io, registry.k8s.io
	reg  *registrytest.Registry
}

// upMark is a position in an upstream's request log.
type upMark int

func (u *upstream) mark() upMark { return upMark(len(u.reg.Requests())) }

// since returns the requests that reached the upstream after m.
func (u *upstream) since(m upMark) reqs {
	all := u.reg.Requests()
	if int(m) > len(all) {
		return nil
	}
	return reqs(all[m:])
}

// get sends GET path to the upstream registry directly, as a client
// without wharf would, with a pull token for repo from its token service
// when it has one. Its requests show up in the upstream's log as not sent
// by wharf: call it after the request counts were taken.
func (u *upstream) get(t *testing.T, repo, path string) (int, http.Header, []byte) {
	t.Helper()
	ctx := t.Context()
	token := ""
	tokReq, err := http.NewRequestWithContext(ctx, http.MethodGet, u.reg.TokenURL()+"?"+url.Values{
		"service": {registrytest.RegistryService},
		"scope":   {"repository:" + repo + ":pull"},
	}.Encode(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if resp, err := suite.wharf.client.Do(tokReq); err == nil {
		var tok struct {
			Token string `json:"token"`
		}
		if resp.StatusCode == http.StatusOK {
			_ = json.NewDecoder(resp.Body).Decode(&tok)
		}
		resp.Body.Close()
		token = tok.Token
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.reg.URL()+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := suite.wharf.client.Do(req)
	if err != nil {
		t.Fatalf("GET %s%s: %v", u.reg.URL(), path, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, body
}

// reqs is a slice of an upstream's request log.
type reqs []registrytest.Request

// where returns the requests matching every predicate.
func (rs reqs) where(preds ...func(registrytest.Request) bool) reqs {
	var out reqs
next:
	for _, r := range rs {
		for _, p := range preds {
			if !p(r) {
				continue next
			}
		}
		out = append(out, r)
	}
	return out
}

func (rs reqs) String() string {
	var b strings.Builder
	for _, r := range rs {
		fmt.Fprintf(&b, "  %-8s %-4s %s", r.Server, r.Method, r.Path)
		if r.RawQuery != "" {
			q := r.RawQuery
			if len(q) > 40 {
				q = q[:40] + "…"
			}
			fmt.Fprintf(&b, "?%s", q)
		}
		fmt.Fprintf(&b, "  [%s]\n", r.Header.Get("User-Agent"))
	}
	return b.String()
}

// Predicates over logged upstream requests.

// byWharf: sent by wharf (its User-Agent is "wharf/<version>"). Anything
// else reached the upstream directly from a client.
func byWharf(r registrytest.Request) bool {
	return strings.HasPrefix(r.Header.Get("User-Agent"), "wharf")
}

func notByWharf(r registrytest.Request) bool { return !byWharf(r) }

// not negates a predicate.
func not(p func(registrytest.Request) bool) func(registrytest.Request) bool {
	return func(r registrytest.Request) bool { return !p(r) }
}

// onRegistry: reached the registry itself, not its storage host or token
// service. A redirected fetch is one request here and one on storage.
func onRegistry(r registrytest.Request) bool { return r.Server == registrytest.ServerRegistry }

// withNS: carries an ns query parameter, which selects wharf's upstream
// and must never be forwarded (client-compat §0 rule 5).
func withNS(r registrytest.Request) bool {
	q, err := url.ParseQuery(r.RawQuery)
	return err == nil && q.Has("ns")
}

// storageOnly: reached the storage host (the CDN a redirect points at).
func storageOnly(r registrytest.Request) bool { return r.Server == registrytest.ServerStorage }

// apiRequest: a /v2/<name>/... request to the registry or its storage host.
func apiRequest(r registrytest.Request) bool {
	return r.Server != registrytest.ServerToken && strings.HasPrefix(r.Path, "/v2/") && strings.Count(r.Path, "/") >= 4
}

func method(m string) func(registrytest.Request) bool {
	return func(r registrytest.Request) bool { return r.Method == m }
}

// inRepo: a /v2/<repo>/... request.
func inRepo(repo string) func(registrytest.Request) bool {
	return func(r registrytest.Request) bool { return strings.HasPrefix(r.Path, "/v2/"+repo+"/") }
}

// blob: GET or HEAD of blob d.
func blob(d digest.Digest) func(registrytest.Request) bool {
	return func(r registrytest.Request) bool { return strings.HasSuffix(r.Path, "/blobs/"+d.String()) }
}

// anyBlob: a request for any blob.
func anyBlob(r registrytest.Request) bool { return strings.Contains(r.Path, "/blobs/") }

// manifestRef: a request for the manifest called ref (tag or digest).
func manifestRef(ref string) func(registrytest.Request) bool {
	return func(r registrytest.Request) bool { return strings.HasSuffix(r.Path, "/manifests/"+ref) }
}

// referrersOf: a referrers API request for subject d.
func referrersOf(d digest.Digest) func(registrytest.Request) bool {
	return func(r registrytest.Request) bool { return strings.HasSuffix(r.Path, "/referrers/"+d.String()) }
}

// byTag: a manifest request by tag.
func byTag(r registrytest.Request) bool {
	_, ref, ok := strings.Cut(r.Path, "/manifests/")
	return ok && !strings.Contains(ref, ":")
}

// byDigest: a manifest request by digest.
func byDigest(r registrytest.Request) bool {
	_, ref, ok := strings.Cut(r.Path, "/manifests/")
	return ok && strings.Contains(ref, ":")
}

var (
	get  = method(http.MethodGet)
	head = method(http.MethodHead)
)

// expectCount fails the test unless exactly n requests match.
func expectCount(t *testing.T, what string, all reqs, n int, preds ...func(registrytest.Request) bool) {
	t.Helper()
	if got := all.where(preds...); len(got) != n {
		t.Errorf("%s: %d upstream requests, want %d; matching:\n%s\nall since the mark:\n%s", what, len(got), n, got, all)
	}
}

// expectAtLeast fails the test unless at least n requests match.
func expectAtLeast(t *testing.T, what string, all reqs, n int, preds ...func(registrytest.Request) bool) {
	t.Helper()
	if got := all.where(preds...); len(got) < n {
		t.Errorf("%s: %d upstream requests, want at least %d; all since the mark:\n%s", what, len(got), n, all)
	}
}

// expectFetchedOnce checks that wharf fetched each blob of f exactly once
// from the upstream's registry (a redirected fetch continues on the
// storage host, which is not counted twice), and never fetched blobs of
// other platforms.
func expectFetchedOnce(t *testing.T, u *upstream, all reqs, f fixture) {
	t.Helper()
	for _, d := range f.Blobs {
		expectCount(t, fmt.Sprintf("%s %s: GET of blob %s", u.name, f.Repo, short(d)), all, 1, onRegistry, get, blob(d))
	}
	for _, d := range f.Other {
		expectCount(t, fmt.Sprintf("%s %s: GET of other-platform blob %s", u.name, f.Repo, short(d)), all, 0, get, blob(d))
	}
}

// expectNoBypass checks that no client reached the upstream's API
// directly: every manifest and blob request came from wharf.
func expectNoBypass(t *testing.T, u *upstream, all reqs) {
	t.Helper()
	expectCount(t, u.name+": requests not sent by wharf", all, 0, apiRequest, notByWharf)
}

func short(d digest.Digest) string {
	s := d.String()
	if len(s) > 19 {
		return s[:19]
	}
	return s
}
