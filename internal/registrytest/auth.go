package registrytest

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"
)

// Token services. A token carries the service it was issued for and is
// accepted only there: the registry's tokens are refused by the storage host
// and vice versa (client-compat §6.1: the redirect target's challenge needs
// its own token exchange).
const (
	RegistryService = "registry.test"
	StorageService  = "storage.test"
)

// tokenPath is where the token server answers (the realm's path).
const tokenPath = "/token"

// issuedToken is what the token server remembers about a token it handed out.
type issuedToken struct {
	service string
	access  map[string][]string // repository → actions granted
	expires time.Time
}

func (t issuedToken) allows(repo, action string) bool {
	return slices.Contains(t.access[repo], action) || slices.Contains(t.access[repo], "*")
}

// parseScopes reads the scope parameters of a token request: any number of
// "scope" parameters, each possibly several space-separated scopes
// (distribution token spec, "Requesting a Token"). Only repository scopes
// are kept; "repository:<name>:<action>[,<action>]".
func parseScopes(values []string) map[string][]string {
	access := map[string][]string{}
	for _, v := range values {
		for _, s := range strings.Fields(v) {
			rest, ok := strings.CutPrefix(s, "repository:")
			if !ok {
				continue
			}
			i := strings.LastIndexByte(rest, ':')
			if i <= 0 {
				continue
			}
			name := rest[:i]
			for _, a := range strings.Split(rest[i+1:], ",") {
				if a != "" && !slices.Contains(access[name], a) {
					access[name] = append(access[name], a)
				}
			}
		}
	}
	return access
}

// serveToken is the token server ("auth.docker.io"): GET /token with
// service and scope parameters, HTTP Basic credentials if the registry has
// them configured, answering the token JSON of client-compat §4.1.
//
// Every requested scope is granted: the fake has no access control beyond
// "are the credentials right". Tokens for StorageService are always issued
// anonymously, like Artifact Registry's for public images behind
// registry.k8s.io. The OAuth2 POST form is not implemented; clients that try
// it get 404 and fall back to GET, as they do with registries that lack it.
func (r *Registry) serveToken(w http.ResponseWriter, req *http.Request) {
	if f := r.takeFault(req, false, false); f != nil {
		if f.Status != 0 {
			writeStatusFault(w, req, f, route{})
			return
		}
		fw := newFaultWriter(w, req, f, r.quit)
		r.issueToken(fw, req)
		fw.finish()
		return
	}
	r.issueToken(w, req)
}

func (r *Registry) issueToken(w http.ResponseWriter, req *http.Request) {
	if req.URL.Path != tokenPath || req.Method != http.MethodGet {
		writeTokenError(w, http.StatusNotFound, "not found")
		return
	}
	q := req.URL.Query()
	service := q.Get("service")
	switch service {
	case RegistryService:
		if r.opts.Username != "" {
			user, pass, ok := req.BasicAuth()
			if !ok || user != r.opts.Username || pass != r.opts.Password {
				writeTokenError(w, http.StatusUnauthorized, "incorrect username or password")
				return
			}
		}
	case StorageService:
	default:
		writeTokenError(w, http.StatusBadRequest, "unknown service "+service)
		return
	}
	now := time.Now()
	tok := issuedToken{service: service, access: parseScopes(q["scope"]), expires: now.Add(r.opts.TokenTTL)}
	value := rand.Text()
	r.mu.Lock()
	r.tokens[value] = tok
	r.mu.Unlock()

	body, _ := json.Marshal(struct {
		Token       string `json:"token"`
		AccessToken string `json:"access_token"`
		ExpiresIn   int64  `json:"expires_in"`
		IssuedAt    string `json:"issued_at"`
	}{value, value, int64(math.Ceil(r.opts.TokenTTL.Seconds())), now.UTC().Format(time.RFC3339Nano)})
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(body)
}

// writeTokenError answers like auth.docker.io does: {"details": "..."}.
func writeTokenError(w http.ResponseWriter, status int, details string) {
	body, _ := json.Marshal(struct {
		Details string `json:"details"`
	}{details})
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(body)
}

// RevokeTokens forgets every issued token, so the next request with one of
// them gets 401 error="invalid_token" — an expiry without waiting for it.
func (r *Registry) RevokeTokens() {
	r.mu.Lock()
	defer r.mu.Unlock()
	clear(r.tokens)
}

// TokenURL is the token realm, "http://localhost:PORT/token". It names
// localhost rather than 127.0.0.1 because clients (go-containerregistry,
// wharf) refuse a realm on a loopback IP literal that is not the registry's
// own host:port, as an SSRF guard; a host name passes.
func (r *Registry) TokenURL() string { return "http://" + r.token.publicHost() + tokenPath }

// authorize checks the Bearer token of a request to service, answering 401
// with a challenge (client-compat §4.1) and reporting false when it does not
// grant access. Repository requests need "pull" to read and "push" to write;
// the challenge then carries the scope. A token that is unknown, expired or
// for another service gets error="invalid_token", one without the scope
// error="insufficient_scope".
func (r *Registry) authorize(w http.ResponseWriter, req *http.Request, service string, rt route, repoPath bool) bool {
	action, scope := "pull", ""
	if !isRead(req.Method) {
		action = "push"
	}
	if repoPath {
		scope = "repository:" + rt.name + ":pull"
		if action == "push" {
			scope += ",push"
		}
	}
	problem := ""
	if value, ok := strings.CutPrefix(req.Header.Get("Authorization"), "Bearer "); ok {
		r.mu.Lock()
		tok, found := r.tokens[value]
		r.mu.Unlock()
		switch {
		case !found || tok.service != service || time.Now().After(tok.expires):
			problem = "invalid_token"
		case repoPath && !tok.allows(rt.name, action):
			problem = "insufficient_scope"
		default:
			return true
		}
	}
	challenge := `Bearer realm="` + r.TokenURL() + `",service="` + service + `"`
	if scope != "" {
		challenge += `,scope="` + scope + `"`
	}
	if problem != "" {
		challenge += `,error="` + problem + `"`
	}
	w.Header().Set("WWW-Authenticate", challenge)
	writeError(w, req, http.StatusUnauthorized, "UNAUTHORIZED", "authentication required")
	return false
}

// Signed storage URLs. Without StorageAuth the storage host behaves like a
// CDN or S3 serving presigned URLs: the Location the registry hands out
// carries a signature of the path in its "verify" parameter, and the storage
// host refuses requests without a valid one (403) and requests that also
// carry an Authorization header (400, as S3 does: "Only one auth mechanism
// allowed") — so a client that leaks the registry's credentials to the
// redirect target fails loudly (client-compat §6.1).
const signatureParam = "verify"

func (r *Registry) signature(path string) []byte {
	m := hmac.New(sha256.New, r.signKey)
	m.Write([]byte(path))
	return m.Sum(nil)
}

func (r *Registry) checkSignature(w http.ResponseWriter, req *http.Request) bool {
	got, err := hex.DecodeString(req.URL.Query().Get(signatureParam))
	if err != nil || !hmac.Equal(got, r.signature(req.URL.Path)) {
		writeError(w, req, http.StatusForbidden, "DENIED", "missing or invalid URL signature")
		return false
	}
	if req.Header.Get("Authorization") != "" {
		writeError(w, req, http.StatusBadRequest, "UNSUPPORTED", "only one auth mechanism allowed: signed URL and Authorization header")
		return false
	}
	return true
}
