package auth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

const (
	// maxTokenBody bounds how much of a token response is read. Tokens are
	// JWTs of a few KiB (they must fit in a request header), and a response
	// may carry the same token twice (token and access_token).
	maxTokenBody = 1 << 20
	// maxErrorBody bounds how much of a failed token response is read.
	maxErrorBody = 64 << 10
	// defaultLifetime applies when a token response has no usable
	// expires_in: "If omitted, assume 60 seconds" (distribution token spec,
	// client-compat.md §4.1).
	defaultLifetime = 60 * time.Second
	// maxLifetime caps absurd expires_in values.
	maxLifetime = 24 * time.Hour
	// maxRedirects bounds redirects of a token request, as net/http does.
	maxRedirects = 10
)

// ErrNoToken is returned (wrapped) when a token realm answered 2xx without a
// usable token.
var ErrNoToken = errors.New("token response carries no usable token")

// Credentials are sent as HTTP Basic authentication to token realms (and, by
// the upstream client, to registries that answer with a Basic challenge).
// The zero value means anonymous.
type Credentials struct {
	Username string
	Password string
}

// Anonymous reports whether c carries no credentials.
func (c Credentials) Anonymous() bool { return c.Username == "" && c.Password == "" }

// Request describes one token exchange (client-compat.md §4.1 step 2).
type Request struct {
	// Origin is scheme://host[:port] of the server whose challenge named the
	// realm. CheckRealm judges the realm against it.
	Origin string
	// Realm is the token endpoint from the challenge.
	Realm string
	// Service is the challenge's service parameter; empty when absent
	// (nvcr.io) and then not sent.
	Service string
	// Scopes are sent as one scope parameter each, in this order
	// (e.g. "repository:library/nginx:pull").
	Scopes []string
	// Credentials are sent as HTTP Basic to the realm; zero = anonymous.
	Credentials Credentials
}

// TokenError is returned when a token realm answers with a non-2xx status.
type TokenError struct {
	// Realm is the token endpoint without its query.
	Realm      string
	StatusCode int
	// Code and Message come from the body when it is a registry error
	// document ({"errors":[{"code","message"}]}) or an OAuth2-style error
	// ({"error","error_description"}, Docker Hub's {"details"}).
	Code, Message string
}

func (e *TokenError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "token request to %s: %d %s", e.Realm, e.StatusCode, http.StatusText(e.StatusCode))
	if e.Code != "" {
		b.WriteString(": " + e.Code)
	}
	if e.Message != "" {
		b.WriteString(": " + oneLine(e.Message))
	}
	return b.String()
}

// token is a fetched token and the instant from which it must no longer be
// handed out.
type token struct {
	value   string
	expires time.Time // issue time + lifetime
	margin  time.Duration
}

// usable reports whether t can still be sent at now: tokens are retired a
// margin before they expire so that one does not run out in flight.
func (t token) usable(now time.Time) bool {
	return now.Add(t.margin).Before(t.expires)
}

// fetch performs the token exchange: GET realm?service=..&scope=.. with
// Basic credentials when configured (distribution token spec).
func (c *Cache) fetch(ctx context.Context, r Request, realm *url.URL) (token, error) {
	ctx, cancel := context.WithTimeout(ctx, c.timeout)
	defer cancel()

	u := *realm
	q := u.Query()
	if r.Service != "" {
		q.Set("service", r.Service)
	}
	for _, s := range r.Scopes {
		q.Add("scope", s)
	}
	u.RawQuery = q.Encode()

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return token{}, fmt.Errorf("token request to %s: %w", redact(realm), err)
	}
	req.Header.Set("User-Agent", c.userAgent)
	req.Header.Set("Accept", "application/json")
	if !r.Credentials.Anonymous() {
		req.SetBasicAuth(r.Credentials.Username, r.Credentials.Password)
	}
	client := &http.Client{Transport: c.transport, CheckRedirect: c.checkRedirect(r.Origin)}
	resp, err := client.Do(req)
	if err != nil {
		// *url.Error, kept in the chain so that callers can tell network
		// failures apart; its URL (with our scopes) is safe to show.
		return token{}, err
	}
	defer resp.Body.Close()

	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		body, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		te := &TokenError{Realm: redact(realm), StatusCode: resp.StatusCode}
		te.Code, te.Message = errorDetail(body)
		return token{}, te
	}
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxTokenBody+1))
	if err != nil {
		return token{}, fmt.Errorf("token request to %s: reading response: %w", redact(realm), err)
	}
	if len(body) > maxTokenBody {
		return token{}, fmt.Errorf("%w: response from %s exceeds %d bytes", ErrNoToken, redact(realm), maxTokenBody)
	}
	return parseTokenResponse(body, c.now())
}

// parseTokenResponse interprets a token response body received at now
// (distribution token spec, "Token Response Fields"):
//   - token and access_token are equivalent; access_token wins when both
//     are present, as in distribution's own client;
//   - expires_in is the lifetime in seconds, 60 when missing, unreadable or
//     not positive, at most a day;
//   - issued_at (RFC 3339) is the start of the lifetime when it is plausible
//     (not in the future, not so old that the token would already have
//     expired on arrival); otherwise clock skew between us and the token
//     server would make tokens look expired, so now is used.
func parseTokenResponse(body []byte, now time.Time) (token, error) {
	var tr struct {
		Token       string          `json:"token"`
		AccessToken string          `json:"access_token"`
		ExpiresIn   json.RawMessage `json:"expires_in"`
		IssuedAt    string          `json:"issued_at"`
	}
	if err := json.Unmarshal(body, &tr); err != nil {
		return token{}, fmt.Errorf("%w: decoding response: %w", ErrNoToken, err)
	}
	value := tr.AccessToken
	if value == "" {
		value = tr.Token
	}
	if value == "" {
		return token{}, fmt.Errorf("%w: neither token nor access_token is set", ErrNoToken)
	}
	// The token goes into an Authorization header verbatim.
	for i := 0; i < len(value); i++ {
		if value[i] <= ' ' || value[i] >= 0x7f {
			return token{}, fmt.Errorf("%w: token contains byte %#x", ErrNoToken, value[i])
		}
	}

	lifetime := defaultLifetime
	// Some servers quote the number; anything unreadable means "omitted".
	raw := strings.Trim(string(tr.ExpiresIn), `"`)
	if secs, err := strconv.ParseFloat(raw, 64); err == nil && secs > 0 {
		if secs >= maxLifetime.Seconds() {
			lifetime = maxLifetime
		} else {
			lifetime = time.Duration(secs * float64(time.Second))
		}
	}
	start := now
	if issued, err := time.Parse(time.RFC3339, tr.IssuedAt); err == nil &&
		!issued.After(now) && issued.Add(lifetime).After(now) {
		start = issued
	}
	return token{
		value:   value,
		expires: start.Add(lifetime),
		margin:  min(lifetime/10, 30*time.Second),
	}, nil
}

// checkRedirect follows at most maxRedirects redirects of a token request,
// judges every target like the realm itself, and drops the Authorization
// header when the target is not the realm's host (net/http keeps it for
// subdomains).
func (c *Cache) checkRedirect(origin string) func(*http.Request, []*http.Request) error {
	return func(req *http.Request, via []*http.Request) error {
		if len(via) >= maxRedirects {
			return fmt.Errorf("token request: stopped after %d redirects", maxRedirects)
		}
		if _, err := CheckRealm(req.URL.String(), origin, c.allow); err != nil {
			return fmt.Errorf("token request redirected: %w", err)
		}
		first := via[0].URL
		if !strings.EqualFold(req.URL.Scheme, first.Scheme) || !strings.EqualFold(req.URL.Host, first.Host) {
			req.Header.Del("Authorization")
		}
		return nil
	}
}

// errorDetail extracts a code and message from an error body of a token
// endpoint, which may be a registry error document or an OAuth2 error.
func errorDetail(body []byte) (code, message string) {
	var e struct {
		Errors []struct {
			Code    string `json:"code"`
			Message string `json:"message"`
		} `json:"errors"`
		Error       string `json:"error"`
		Description string `json:"error_description"`
		Details     string `json:"details"`
	}
	if json.Unmarshal(body, &e) != nil {
		return "", ""
	}
	if len(e.Errors) > 0 {
		return e.Errors[0].Code, e.Errors[0].Message
	}
	if e.Description != "" || e.Error != "" {
		return e.Error, e.Description
	}
	return "", e.Details
}

// redact returns u without query and fragment, for messages.
func redact(u *url.URL) string {
	v := *u
	v.RawQuery, v.Fragment, v.RawFragment, v.User = "", "", "", nil
	return v.String()
}

// oneLine replaces control characters so that a message from a remote
// server cannot break a log line, and bounds its length.
func oneLine(s string) string {
	const max = 256
	s = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return ' '
		}
		return r
	}, s)
	if len(s) <= max {
		return s
	}
	for i := range s { // i walks rune boundaries
		if i > max {
			return s[:i] + "…"
		}
	}
	return s
}
