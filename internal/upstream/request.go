package upstream

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/wharf-mirror/wharf/internal/upstream/auth"
)

// request is one logical request to the registry; redirects, challenges and
// retries turn it into several HTTP requests.
type request struct {
	method string
	path   string // below the base URL, unescaped, e.g. "/v2/library/nginx/manifests/latest"
	query  string // raw query
	header http.Header
	// repo names the repository for the pull scope; empty for /v2/.
	repo string
	// noAuth: do not answer challenges (Ping), only remember them.
	noAuth bool
}

// challenge is what a host demanded in its WWW-Authenticate header.
type challenge struct {
	scheme  string // "basic" or "bearer"
	realm   string
	service string
	// scopes are the challenge's scope parameter, split at spaces. Only the
	// ones not naming a repository are kept when the challenge is
	// remembered (public.ecr.aws asks for "aws" on every request).
	scopes []string
}

// credential is what one attempt attaches.
type credential struct {
	header   string        // Authorization value; "" for none
	tokenReq *auth.Request // the token's request, for invalidation
	token    string
}

// do sends r to the registry, follows redirects, answers challenges, and
// retries idempotent requests after transient failures. A response is
// returned whatever its status; the caller closes its body. The request
// holds one of the upstream's slots (Config.MaxConcurrent) from here until
// that body is closed or do fails.
func (c *Client) do(ctx context.Context, r request) (*http.Response, error) {
	release, err := c.acquire(ctx, r)
	if err != nil {
		return nil, err
	}
	resp, err := c.attempts(ctx, r)
	if err != nil {
		release()
		return nil, err
	}
	resp.Body = &slotBody{ReadCloser: resp.Body, release: release}
	return resp, nil
}

// InFlight returns how many logical requests to the upstream are in flight:
// started and not yet failed, or answered and the body not yet closed.
func (c *Client) InFlight() int { return int(c.inFlight.Load()) }

// acquire takes a slot for one logical request, waiting for one while all
// Config.MaxConcurrent are taken, and returns the function that gives it
// back; calling that more than once is harmless. It is called once per
// logical request, never from a hop, retry or token fetch of one, so a
// request never waits for a second slot while holding one.
func (c *Client) acquire(ctx context.Context, r request) (release func(), err error) {
	if c.slots != nil {
		select {
		case c.slots <- struct{}{}:
		default:
			if c.onWait != nil {
				c.onWait()
			}
			select {
			case c.slots <- struct{}{}:
			case <-ctx.Done():
				return nil, fmt.Errorf("upstream %s: %s %s: gave up waiting with %d requests in flight, the most allowed: %w",
					c.name, r.method, r.path, cap(c.slots), ctx.Err())
			}
		}
	}
	c.inFlight.Add(1)
	var done atomic.Bool
	return func() {
		if done.CompareAndSwap(false, true) {
			c.inFlight.Add(-1)
			if c.slots != nil {
				<-c.slots
			}
		}
	}, nil
}

// slotBody gives the request's slot back when the body is closed, or when
// it has been read to the end (the transfer is over then, even if the
// caller closes the body later).
type slotBody struct {
	io.ReadCloser
	release func()
}

func (b *slotBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.release()
	}
	return n, err
}

func (b *slotBody) Close() error {
	err := b.ReadCloser.Close()
	b.release()
	return err
}

// attempts is do without the slot: the first attempt and the retries.
func (c *Client) attempts(ctx context.Context, r request) (*http.Response, error) {
	u := &url.URL{Scheme: c.base.Scheme, Host: c.base.Host, Path: c.base.Path + r.path, RawQuery: r.query}
	for attempt := 0; ; attempt++ {
		resp, err := c.follow(ctx, r, u)
		if attempt >= c.retries || !idempotent(r.method) || !retryable(resp, err) {
			return resp, err
		}
		delay := c.backoffDelay(attempt)
		if err != nil {
			c.log.DebugContext(ctx, "upstream request failed; retrying", "upstream", c.name,
				"method", r.method, "path", r.path, "error", err, "attempt", attempt+1, "delay", delay)
		} else {
			c.log.DebugContext(ctx, "upstream answered with a transient status; retrying", "upstream", c.name,
				"method", r.method, "url", c.displayURL(resp.Request.URL), "status", resp.StatusCode,
				"attempt", attempt+1, "delay", delay)
			drain(resp)
		}
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, fmt.Errorf("upstream %s: %s %s: %w", c.name, r.method, r.path, ctx.Err())
		}
	}
}

func idempotent(method string) bool {
	switch method {
	case http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodPut, http.MethodDelete:
		return true
	}
	return false
}

// retryable reports whether the outcome of one attempt is worth another:
// no response at all, or a gateway error. 500 is a bug upstream that a
// retry will meet again; 429 must reach the caller at once.
func retryable(resp *http.Response, err error) bool {
	if err != nil {
		// A timeout already cost the whole connect or header timeout; trying
		// again multiplies the wait of a client whose upstream hangs, with
		// little chance of a different outcome.
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return false
		}
		if errors.Is(err, ErrUnreachable) {
			return !permanent(err)
		}
		var te *auth.TokenError
		return errors.As(err, &te) && isGatewayError(te.StatusCode)
	}
	return isGatewayError(resp.StatusCode)
}

func isGatewayError(status int) bool {
	return status == http.StatusBadGateway || status == http.StatusServiceUnavailable || status == http.StatusGatewayTimeout
}

// backoffDelay is the wait before retry number attempt+1: exponential from
// c.backoff, capped, with jitter over its upper half so that clients that
// failed together do not return together.
func (c *Client) backoffDelay(attempt int) time.Duration {
	d := c.backoff << min(attempt, 16)
	if d <= 0 || d > maxBackoff {
		d = maxBackoff
	}
	return d/2 + rand.N(d/2+1)
}

// follow sends r to u and follows redirects itself (client-compat.md §6.1):
// every hop decides on its own whether credentials go along, and Accept and
// Range are repeated on every hop.
func (c *Client) follow(ctx context.Context, r request, u *url.URL) (*http.Response, error) {
	method := r.method
	for hops := 0; ; hops++ {
		resp, err := c.exchange(ctx, r, method, u)
		if err != nil {
			return nil, err
		}
		loc := resp.Header.Get("Location")
		if !isRedirect(resp.StatusCode) || loc == "" {
			return resp, nil
		}
		drain(resp)
		next, err := u.Parse(loc)
		if err != nil {
			return nil, fmt.Errorf("upstream %s: %w: unparsable Location from %s", c.name, ErrRedirect, c.displayURL(u))
		}
		if hops == maxRedirects {
			return nil, fmt.Errorf("upstream %s: %w: %w: more than %d from %s", c.name, ErrRedirect, ErrTooManyRedirects, maxRedirects, c.base)
		}
		if err := c.checkRedirect(next); err != nil {
			return nil, err
		}
		// As net/http does: 303 turns everything but HEAD into GET.
		if resp.StatusCode == http.StatusSeeOther && method != http.MethodHead {
			method = http.MethodGet
		}
		c.log.DebugContext(ctx, "following upstream redirect", "upstream", c.name,
			"status", resp.StatusCode, "from", c.displayURL(u), "to", c.displayURL(next))
		u = next
	}
}

func isRedirect(status int) bool {
	switch status {
	case http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
		http.StatusTemporaryRedirect, http.StatusPermanentRedirect:
		return true
	}
	return false
}

// checkRedirect refuses targets that are not http(s), and internal
// addresses when the registry itself is public and the target is not in
// Config.RedirectHosts: otherwise a hostile registry could make the mirror
// fetch, and relay, internal URLs (SSRF).
func (c *Client) checkRedirect(u *url.URL) error {
	if u.Scheme != "http" && u.Scheme != "https" {
		return fmt.Errorf("upstream %s: %w: to scheme %q", c.name, ErrRedirect, u.Scheme)
	}
	if u.Hostname() == "" {
		return fmt.Errorf("upstream %s: %w: no host in Location", c.name, ErrRedirect)
	}
	if !c.internal && auth.IsInternalHost(u.Hostname()) && !auth.HostAllowed(u, c.redirects) {
		return fmt.Errorf("upstream %s: %w: to internal host %s", c.name, ErrRedirect, u.Host)
	}
	return nil
}

// exchange performs one hop: it sends the request, proactively
// authenticated when the host challenged before, and answers a 401 at most
// twice (client-compat.md §4.1): once with a token for the challenge, and
// once more with a fresh token when that one was rejected too. Then the 401
// goes to the caller.
func (c *Client) exchange(ctx context.Context, r request, method string, u *url.URL) (*http.Response, error) {
	onRegistry := c.onRegistry(u)
	host := origin(u)
	var cur credential
	if !r.noAuth {
		if ch, ok := c.remembered(host); ok {
			var err error
			if cur, err = c.authorize(ctx, ch, r, u, onRegistry); err != nil {
				if ctx.Err() != nil {
					return nil, err
				}
				// The remembered challenge no longer works (its realm is
				// refused or its token service fails): forget it and ask
				// the registry afresh, so that a fixed upstream is not
				// refused forever on the strength of an old challenge.
				c.forget(host)
				cur = credential{}
			}
		}
	}
	for try := 0; ; try++ {
		resp, err := c.sendObserved(ctx, r.path, method, u, r.header, cur.header)
		if err != nil {
			return nil, err
		}
		if onRegistry {
			c.observeRateLimit(resp.Header)
		}
		if resp.StatusCode != http.StatusUnauthorized || try == 2 {
			return resp, nil
		}
		ch, ok := c.pickChallenge(resp.Header.Values("Www-Authenticate"), onRegistry)
		if !ok {
			return resp, nil
		}
		c.remember(host, ch)
		if r.noAuth {
			return resp, nil
		}
		if cur.tokenReq != nil && ch.scheme == "bearer" && sameToken(*cur.tokenReq, c.tokenRequest(ch, r, u, onRegistry)) {
			// The token was rejected for exactly what it was issued for,
			// although we believed it valid (revoked, or the registry's
			// clock disagrees): never send it again. A token rejected
			// because the challenge now asks for other scopes stays; it
			// is still good for what it covers.
			c.tokens.Invalidate(*cur.tokenReq, cur.token)
		}
		next, err := c.authorize(ctx, ch, r, u, onRegistry)
		if err != nil {
			// Do not keep a challenge that cannot be answered: the next
			// request asks the registry again.
			c.forget(host)
			drain(resp)
			return nil, err
		}
		if next.header == "" || (ch.scheme == "basic" && next.header == cur.header) {
			// Nothing (else) to offer: the 401 is the answer.
			return resp, nil
		}
		drain(resp)
		cur = next
	}
}

// pickChallenge chooses the challenge to answer: Bearer with a realm if
// offered (quay.io offers Basic and Bearer), else Basic, but only for the
// registry itself and only with configured credentials.
func (c *Client) pickChallenge(headers []string, onRegistry bool) (challenge, bool) {
	var basic bool
	for _, ch := range auth.ParseChallenges(headers) {
		switch ch.Scheme {
		case "bearer":
			if realm := ch.Params["realm"]; realm != "" {
				return challenge{
					scheme:  "bearer",
					realm:   realm,
					service: ch.Params["service"],
					scopes:  strings.Fields(ch.Params["scope"]),
				}, true
			}
		case "basic":
			basic = true
		}
	}
	if basic && onRegistry && !c.cred.Anonymous() {
		return challenge{scheme: "basic"}, true
	}
	return challenge{}, false
}

// remember records what host demanded so that later requests authenticate
// without a 401 round trip. Repository scopes are per request and are
// dropped.
func (c *Client) remember(host string, ch challenge) {
	ch.scopes = slices.DeleteFunc(slices.Clone(ch.scopes), func(s string) bool {
		return strings.HasPrefix(s, "repository:")
	})
	c.mu.Lock()
	defer c.mu.Unlock()
	c.challenges[host] = ch
}

func (c *Client) forget(host string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.challenges, host)
}

func (c *Client) remembered(host string) (challenge, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.challenges[host]
	return ch, ok
}

// authorize produces the Authorization for ch. The registry gets the
// configured credentials (as Basic, or exchanged for a token); any other
// host, i.e. a redirect target with its own challenge, gets an anonymous
// token of its own and never the registry's.
func (c *Client) authorize(ctx context.Context, ch challenge, r request, u *url.URL, onRegistry bool) (credential, error) {
	if ch.scheme == "basic" {
		if !onRegistry || c.cred.Anonymous() {
			return credential{}, nil
		}
		raw := c.cred.Username + ":" + c.cred.Password
		return credential{header: "Basic " + base64.StdEncoding.EncodeToString([]byte(raw))}, nil
	}
	treq := c.tokenRequest(ch, r, u, onRegistry)
	tok, err := c.tokens.Token(ctx, treq)
	if err != nil {
		return credential{}, c.authError(ctx, u, err)
	}
	return credential{header: "Bearer " + tok, tokenReq: &treq, token: tok}, nil
}

// tokenRequest builds the token request for a bearer challenge: the
// challenge's scopes plus the pull scope of the repository (for a redirect
// target: of the repository in its path).
func (c *Client) tokenRequest(ch challenge, r request, u *url.URL, onRegistry bool) auth.Request {
	var own string
	if onRegistry {
		if r.repo != "" {
			own = "repository:" + r.repo + ":pull"
		}
	} else {
		own = scopeFromPath(u.Path)
	}
	scopes := slices.Clone(ch.scopes)
	if own != "" && !slices.Contains(scopes, own) {
		scopes = append(scopes, own)
	}
	treq := auth.Request{Origin: origin(u), Realm: ch.realm, Service: ch.service, Scopes: scopes}
	if onRegistry {
		treq.Credentials = c.cred
	}
	return treq
}

// sameToken reports whether a and b ask for the same token.
func sameToken(a, b auth.Request) bool {
	sa, sb := slices.Clone(a.Scopes), slices.Clone(b.Scopes)
	slices.Sort(sa)
	slices.Sort(sb)
	return a.Realm == b.Realm && a.Service == b.Service && a.Credentials == b.Credentials &&
		slices.Equal(slices.Compact(sa), slices.Compact(sb))
}

// authError wraps a token failure; a token service that cannot be reached
// makes the upstream unreachable.
func (c *Client) authError(ctx context.Context, u *url.URL, err error) error {
	var ue *url.Error
	if ctx.Err() == nil && errors.As(err, &ue) && !errors.Is(err, auth.ErrRealmNotAllowed) && !errors.Is(err, ErrInternalAddress) {
		return fmt.Errorf("upstream %s: token for %s: %w: %w", c.name, u.Host, ErrUnreachable, err)
	}
	return fmt.Errorf("upstream %s: token for %s: %w", c.name, u.Host, err)
}

// scopeFromPath derives the pull scope for a redirect target that
// challenges without naming a scope, from a distribution API path
// (/v2/<name>/manifests/<ref>, .../blobs/<digest>, ...).
func scopeFromPath(p string) string {
	i := strings.Index(p, "/v2/")
	if i < 0 {
		return ""
	}
	rest := p[i+len("/v2/"):]
	for _, kind := range []string{"/manifests/", "/blobs/", "/tags/", "/referrers/"} {
		if j := strings.LastIndex(rest, kind); j > 0 {
			return "repository:" + rest[:j] + ":pull"
		}
	}
	return ""
}

// send performs one HTTP request.
func (c *Client) send(ctx context.Context, method string, u *url.URL, header http.Header, authorization string) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, u.String(), nil)
	if err != nil {
		return nil, fmt.Errorf("upstream %s: %w", c.name, err)
	}
	for k, vs := range header {
		req.Header[k] = slices.Clone(vs)
	}
	req.Header.Set("User-Agent", c.userAgent)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, c.transportError(ctx, err)
	}
	return resp, nil
}

// drain reads a little of a body that is being discarded, so that the
// connection can be reused, and closes it.
func drain(resp *http.Response) {
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
}
