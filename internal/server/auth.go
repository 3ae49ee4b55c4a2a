package server

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"path/filepath"
	"time"

	"github.com/wharf-mirror/wharf/internal/auth"
	"github.com/wharf-mirror/wharf/internal/ociapi"
)

// authDir holds the key that signs the tokens /token issues.
const authDir = "auth"

// authz is the registry API's ociapi.Authorizer: it authenticates the
// client (package auth) and applies each upstream's access policy.
//
// The policy is per upstream, checked on the upstream a request is routed
// to. That covers content requested by digest through another repository
// or route: the blob is served only if the routed upstream's policy admits
// the client and the content is linked in that repository or that
// upstream confirms it (the mirror's repository scoping), so nothing
// fetched with one upstream's private credentials reaches a client through
// another upstream.
type authz struct {
	auth     *auth.Authenticator // nil: authentication is off, every client is anonymous
	policies map[string]accessPolicy
}

type accessPolicy struct {
	anonymous bool
	users     map[string]bool // nil: every authenticated client
}

// newAuthz builds the policies from the configuration and, when clients
// can authenticate, the authenticator.
func (i *Instance) newAuthz() (*authz, error) {
	z := &authz{policies: map[string]accessPolicy{}}
	anyAnonymous := false
	for _, name := range i.cfg.EnabledUpstreams() {
		u := i.cfg.Upstreams[name]
		p := accessPolicy{anonymous: u.AnonymousAccess(i.cfg)}
		if len(u.Access.Users) > 0 {
			p.users = map[string]bool{}
			for _, user := range u.Access.Users {
				p.users[user] = true
			}
		}
		anyAnonymous = anyAnonymous || p.anonymous
		z.policies[name] = p
	}
	a := i.cfg.Auth
	if !a.Enabled() {
		return z, nil
	}
	tokens := map[string]string{}
	for _, t := range a.Tokens {
		tokens[t.Name] = t.Secret()
	}
	var err error
	z.auth, err = auth.New(auth.Config{
		HtpasswdFile: a.HtpasswdFile,
		Tokens:       tokens,
		TokenTTL:     a.TokenTTL.Std(),
		KeyFile:      filepath.Join(i.cfg.DataDir, authDir, "token.key"),
		Service:      "wharf",
		Realm:        a.Realm,
		Anonymous:    anyAnonymous,
		FailureLimit: i.cfg.Limits.AuthFailures,
		Logger:       i.log.With("component", "auth"),
	})
	if err != nil {
		return nil, fmt.Errorf("auth: %w", err)
	}
	return z, nil
}

// Authorize implements ociapi.Authorizer.
func (z *authz) Authorize(r *http.Request, upstream, name string) (string, error) {
	p := auth.Principal{}
	if z.auth != nil {
		var err error
		if p, err = z.auth.Authenticate(r); err != nil {
			var tm *auth.TooManyFailuresError
			if errors.As(err, &tm) {
				return "", &ociapi.AccessError{Status: http.StatusTooManyRequests, RetryAfter: tm.RetryAfter, Cause: err,
					Message: "too many failed authentications from this address; try again later"}
			}
			return "", z.challenge(r, name, "authentication failed: "+err.Error(), err)
		}
	}
	client := p.String()
	if upstream == "" {
		// The base endpoint challenges a client that sent nothing, as
		// Docker Hub does: that is how `docker login` and the token
		// flow start. An anonymous token passes.
		if z.auth != nil && r.Header.Get("Authorization") == "" {
			return client, z.challenge(r, "", "authentication required", nil)
		}
		return client, nil
	}
	pol := z.policies[upstream]
	if p.IsAnonymous() {
		if pol.anonymous {
			return client, nil
		}
		if z.auth == nil {
			return client, &ociapi.AccessError{Status: http.StatusForbidden,
				Message: "pulling from " + upstream + " needs credentials, and no client authentication is configured"}
		}
		return client, z.challenge(r, name, "authentication required to pull from "+upstream, nil)
	}
	if pol.users != nil && !pol.users[p.Name] {
		return client, &ociapi.AccessError{Status: http.StatusForbidden,
			Message: p.String() + " may not pull from " + upstream}
	}
	return client, nil
}

func (z *authz) challenge(r *http.Request, name, msg string, cause error) *ociapi.AccessError {
	h := http.Header{}
	z.auth.Challenge(h, r, name)
	return &ociapi.AccessError{Status: http.StatusUnauthorized, Message: msg, Challenge: h.Get("WWW-Authenticate"), Cause: cause}
}

// withToken serves the token endpoint at /token on the registry API's
// listeners when clients can authenticate, and logs every token request
// with the user name it claimed (never a secret) and the answer, so that
// failed logins show in the log.
func (z *authz) withToken(api http.Handler, log *slog.Logger) http.Handler {
	if z.auth == nil {
		return api
	}
	token := z.auth.TokenHandler()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/token" {
			api.ServeHTTP(w, r)
			return
		}
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w, status: http.StatusOK}
		token.ServeHTTP(sw, r)
		user, _, _ := r.BasicAuth()
		if user == "" && r.PostForm != nil {
			user = r.PostForm.Get("username")
		}
		level := slog.LevelInfo
		if sw.status >= 400 {
			level = slog.LevelWarn
		}
		log.LogAttrs(r.Context(), level, "token request",
			slog.String("method", r.Method),
			slog.String("host", r.Host),
			slog.String("remote", r.RemoteAddr),
			slog.String("user", user),
			slog.Int("status", sw.status),
			slog.Duration("duration", time.Since(start)))
	})
}

// statusWriter records the status of a response.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	w.status = code
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

func (z *authz) close() error {
	if z == nil || z.auth == nil {
		return nil
	}
	return z.auth.Close()
}
