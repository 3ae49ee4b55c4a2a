package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Bounds of a token request.
const (
	maxQueryBytes = 4 << 10
	maxFormBytes  = 8 << 10
	maxScopes     = 32
	maxScopeBytes = 1024
)

// tokenResponse is the token endpoint's answer (spec/auth/token.md,
// "Token Response Fields"; spec/auth/oauth.md, "Response fields"). token
// and access_token carry the same value: Docker reads token, OAuth2
// clients access_token.
type tokenResponse struct {
	Token       string `json:"token"`
	AccessToken string `json:"access_token"`
	ExpiresIn   int64  `json:"expires_in"`
	IssuedAt    string `json:"issued_at"`
}

// requestError refuses a token request before or instead of checking
// credentials.
type requestError struct {
	status int
	// oauth is the RFC 6749 §5.2 error code sent to POST requests.
	oauth string
	msg   string
}

func (e *requestError) Error() string { return e.msg }

func badRequest(oauth, format string, args ...any) *requestError {
	return &requestError{status: http.StatusBadRequest, oauth: oauth, msg: fmt.Sprintf(format, args...)}
}

// errAuthRequired: a token request without credentials while anonymous
// tokens are off.
var errAuthRequired = errors.New("authentication required")

// TokenHandler serves the token endpoint, mounted at /token by the caller.
//
// GET (spec/auth/token.md, "Requesting a Token"): Basic credentials in the
// Authorization header, or none for an anonymous token when
// Config.Anonymous is set. POST (spec/auth/oauth.md, "Getting a token"):
// a form with grant_type=password, username and password, as containerd
// sends it; grant_type=refresh_token and unknown grants get 400
// unsupported_grant_type (RFC 6749 §5.2), since wharf issues no refresh
// tokens. Other methods get 405.
//
// Scopes are parsed and bounded (at most 32, query at most 4 KiB) but do
// not limit the token: it names the principal, and the caller authorises
// every request against it. Wrong credentials get 401 with
// `WWW-Authenticate: Basic realm="<service>"` and OCI error JSON, a client
// over the failure limit 429 with Retry-After, a malformed request 400.
func (a *Authenticator) TokenHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p, err := a.tokenRequest(w, r)
		if err != nil {
			a.writeTokenError(w, r, err)
			return
		}
		now := a.now()
		tok, _, err := a.issue(p, now)
		if err != nil {
			a.writeTokenError(w, r, err)
			return
		}
		ttl := int64((a.ttl + time.Second - 1) / time.Second)
		body, err := json.Marshal(tokenResponse{
			Token:       tok,
			AccessToken: tok,
			ExpiresIn:   ttl,
			IssuedAt:    time.Unix(now.Unix(), 0).UTC().Format(time.RFC3339),
		})
		if err != nil {
			a.writeTokenError(w, r, err)
			return
		}
		a.log.Debug("token issued", "principal", p.String(), "client", clientAddr(r))
		h := w.Header()
		h.Set("Content-Type", "application/json")
		// RFC 6749 §5.1: token answers must not be cached.
		h.Set("Cache-Control", "no-store")
		h.Set("Pragma", "no-cache")
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write(body)
	})
}

// tokenRequest checks a token request and returns the principal to issue
// a token for.
func (a *Authenticator) tokenRequest(w http.ResponseWriter, r *http.Request) (Principal, error) {
	if len(r.URL.RawQuery) > maxQueryBytes {
		return Principal{}, badRequest("invalid_request", "query longer than %d bytes", maxQueryBytes)
	}
	query, err := url.ParseQuery(r.URL.RawQuery)
	if err != nil {
		return Principal{}, badRequest("invalid_request", "query cannot be parsed")
	}
	switch r.Method {
	case http.MethodGet:
		if _, err := parseScopes(query["scope"]); err != nil {
			return Principal{}, err
		}
		if len(r.Header.Values("Authorization")) == 0 {
			if !a.anonymous {
				return Principal{}, errAuthRequired
			}
			return Principal{}, nil
		}
		return a.authenticate(r, false)
	case http.MethodPost:
		form, err := readForm(w, r)
		if err != nil {
			return Principal{}, err
		}
		if _, err := parseScopes(append(query["scope"], form["scope"]...)); err != nil {
			return Principal{}, err
		}
		return a.passwordGrant(r, form)
	default:
		return Principal{}, &requestError{status: http.StatusMethodNotAllowed, oauth: "invalid_request", msg: "the token endpoint answers GET and POST"}
	}
}

// readForm reads a POST body of application/x-www-form-urlencoded, at
// most maxFormBytes.
func readForm(w http.ResponseWriter, r *http.Request) (url.Values, error) {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/x-www-form-urlencoded" {
		return nil, badRequest("invalid_request", "body must be application/x-www-form-urlencoded")
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxFormBytes))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			return nil, badRequest("invalid_request", "body longer than %d bytes", maxFormBytes)
		}
		return nil, badRequest("invalid_request", "body cannot be read")
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		return nil, badRequest("invalid_request", "body cannot be parsed")
	}
	return form, nil
}

// passwordGrant handles an OAuth2 token POST (spec/auth/oauth.md): only
// the password grant; the credentials go through the same limiter and
// checks as Basic credentials.
func (a *Authenticator) passwordGrant(r *http.Request, form url.Values) (Principal, error) {
	for _, k := range []string{"grant_type", "username", "password"} {
		if len(form[k]) > 1 {
			return Principal{}, badRequest("invalid_request", "%s given more than once", k)
		}
	}
	switch gt := form.Get("grant_type"); gt {
	case "password":
	case "":
		return Principal{}, badRequest("invalid_request", "grant_type missing")
	default:
		// Includes refresh_token: wharf never issues refresh tokens.
		return Principal{}, badRequest("unsupported_grant_type", "only the password grant is supported")
	}
	user, pass := form.Get("username"), form.Get("password")
	if user == "" || pass == "" {
		return Principal{}, badRequest("invalid_request", "username and password are required")
	}
	now := a.now()
	client := clientAddr(r)
	if err := a.limiter.check(client, now); err != nil {
		return Principal{}, err
	}
	var (
		p   Principal
		err error
	)
	if hasControl(user) {
		err = fmt.Errorf("%w: control character in the user name", ErrMalformed)
	} else {
		p, err = a.checkPassword(user, pass, now)
	}
	if err != nil {
		a.failed(client, now)
		return Principal{}, err
	}
	return p, nil
}

// scope is one parsed scope (spec/auth/scope.md, "Resource Scope
// Grammar"): type[(class)]:name:action[,action...]. The name may itself
// contain ':' (host:port/name), so the actions follow the last ':'.
type scope struct {
	typ     string
	name    string
	actions []string
}

// parseScopes parses scope parameters; each value may hold several
// space-separated scopes (OAuth2 form, RFC 6749 §3.3).
func parseScopes(values []string) ([]scope, error) {
	var out []scope
	for _, v := range values {
		for _, s := range strings.Fields(v) {
			if len(out) == maxScopes {
				return nil, badRequest("invalid_scope", "more than %d scopes", maxScopes)
			}
			sc, ok := parseScope(s)
			if !ok {
				return nil, badRequest("invalid_scope", "malformed scope")
			}
			out = append(out, sc)
		}
	}
	return out, nil
}

func parseScope(s string) (scope, bool) {
	if len(s) > maxScopeBytes || hasControl(s) {
		return scope{}, false
	}
	typ, rest, ok := strings.Cut(s, ":")
	if !ok {
		return scope{}, false
	}
	i := strings.LastIndexByte(rest, ':')
	if i < 0 {
		return scope{}, false
	}
	name, acts := rest[:i], rest[i+1:]
	if !validScopeType(typ) || name == "" {
		return scope{}, false
	}
	actions := strings.Split(acts, ",")
	for _, act := range actions {
		if act == "" || strings.ContainsFunc(act, func(r rune) bool { return !(r >= 'a' && r <= 'z' || r == '*' || r == '-' || r == '_') }) {
			return scope{}, false
		}
	}
	return scope{typ: typ, name: name, actions: actions}, true
}

// validScopeType checks resourcetype [ "(" resourceclass ")" ], both
// alphanumeric.
func validScopeType(t string) bool {
	base, class, hasClass := strings.Cut(t, "(")
	if hasClass {
		var ok bool
		class, ok = strings.CutSuffix(class, ")")
		if !ok || !alnum(class) {
			return false
		}
	}
	return alnum(base)
}

func alnum(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// ociError is the distribution spec's error body ("Error Codes").
type ociError struct {
	Errors []ociErrorEntry `json:"errors"`
}

type ociErrorEntry struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// oauthError is RFC 6749 §5.2's error body.
type oauthError struct {
	Error       string `json:"error"`
	Description string `json:"error_description,omitempty"`
}

// writeTokenError renders every token endpoint error: the one place that
// maps this package's errors to statuses and bodies.
func (a *Authenticator) writeTokenError(w http.ResponseWriter, r *http.Request, err error) {
	h := w.Header()
	h.Set("Cache-Control", "no-store")
	var (
		status int
		code   string
		msg    string
		oauth  string // set: an RFC 6749 body instead of an OCI one
		tooMny *TooManyFailuresError
		reqErr *requestError
	)
	switch {
	case errors.As(err, &reqErr):
		status, code, msg = reqErr.status, "UNSUPPORTED", reqErr.msg
		if r.Method == http.MethodPost && reqErr.status == http.StatusBadRequest {
			oauth = reqErr.oauth
		}
		if reqErr.status == http.StatusMethodNotAllowed {
			h.Set("Allow", "GET, POST")
		}
	case errors.As(err, &tooMny):
		status, code, msg = http.StatusTooManyRequests, "TOOMANYREQUESTS", "too many failed authentications; retry later"
		h.Set("Retry-After", strconv.FormatInt(int64((tooMny.RetryAfter+time.Second-1)/time.Second), 10))
	case errors.Is(err, ErrMalformed):
		status, code, msg = http.StatusBadRequest, "UNSUPPORTED", err.Error()
		if r.Method == http.MethodPost {
			oauth = "invalid_request"
		}
	case errors.Is(err, ErrInvalidCredentials), errors.Is(err, ErrExpired):
		status, code, msg = http.StatusUnauthorized, "UNAUTHORIZED", "invalid user name or password"
	case errors.Is(err, errAuthRequired):
		status, code, msg = http.StatusUnauthorized, "UNAUTHORIZED", "authentication required"
	default:
		status, code, msg = http.StatusInternalServerError, "UNKNOWN", "token cannot be issued"
		a.log.Error("token endpoint", "err", err)
	}
	if status == http.StatusUnauthorized {
		h.Set("WWW-Authenticate", "Basic realm="+quote(a.service))
	}
	switch status {
	case http.StatusInternalServerError:
	case http.StatusTooManyRequests:
		// Logged once, when the client reached the limit.
		a.log.Debug("token request refused", "client", clientAddr(r), "status", status)
	default:
		a.log.Info("token request refused", "client", clientAddr(r), "method", r.Method, "status", status, "reason", err.Error())
	}
	var body []byte
	if oauth != "" {
		body, _ = json.Marshal(oauthError{Error: oauth, Description: msg})
	} else {
		body, _ = json.Marshal(ociError{Errors: []ociErrorEntry{{Code: code, Message: msg}}})
	}
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(body)))
	w.WriteHeader(status)
	_, _ = w.Write(body)
}
