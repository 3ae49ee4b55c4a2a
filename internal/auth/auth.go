package auth

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"golang.org/x/crypto/bcrypt"
)

// Kind is the kind of a principal.
type Kind int

const (
	// Anonymous is a client without credentials.
	Anonymous Kind = iota
	// User is a user of the htpasswd file.
	User
	// StaticToken is a client that presented one of the static tokens.
	StaticToken
)

// String is the kind's name as it appears in tokens and logs.
func (k Kind) String() string {
	switch k {
	case Anonymous:
		return "anonymous"
	case User:
		return "user"
	case StaticToken:
		return "token"
	}
	return "kind(" + strconv.Itoa(int(k)) + ")"
}

// Principal is who made a request. Name is "" for Anonymous, the htpasswd
// user name for User, or the static token's name for StaticToken. The zero
// value is the anonymous principal.
type Principal struct {
	Kind Kind
	Name string
}

// IsAnonymous reports whether p is the anonymous principal.
func (p Principal) IsAnonymous() bool { return p.Kind == Anonymous }

// String names p for logs: "anonymous", "user:alice", "token:ci".
func (p Principal) String() string {
	if p.Kind == Anonymous {
		return "anonymous"
	}
	return p.Kind.String() + ":" + p.Name
}

// Errors of Authenticate and New. Every error this package returns wraps
// one of them; messages never contain the credential that failed.
var (
	// ErrMalformed: the Authorization header (or token request) cannot be
	// parsed.
	ErrMalformed = errors.New("auth: malformed credentials")
	// ErrInvalidCredentials: wrong password, unknown user, bad token
	// signature, unknown token, or a token whose credential was removed.
	ErrInvalidCredentials = errors.New("auth: invalid credentials")
	// ErrExpired: an issued token past its expiry.
	ErrExpired = errors.New("auth: token expired")
	// ErrTooManyFailures: the client's address is over the failure limit;
	// the error is a *TooManyFailuresError.
	ErrTooManyFailures = errors.New("auth: too many failed authentications")
	// ErrHtpasswd: the htpasswd file cannot be read or parsed (New).
	ErrHtpasswd = errors.New("auth: bad htpasswd file")
	// ErrKeyFile: the token key file cannot be created, read or trusted
	// (New).
	ErrKeyFile = errors.New("auth: bad key file")
)

// TooManyFailuresError is returned while a client address is over the
// failure limit. It matches ErrTooManyFailures with errors.Is.
type TooManyFailuresError struct {
	// RetryAfter is how long until the client's window ends.
	RetryAfter time.Duration
}

func (e *TooManyFailuresError) Error() string {
	return fmt.Sprintf("%v: retry after %v", ErrTooManyFailures, e.RetryAfter.Round(time.Second))
}

// Is makes errors.Is(err, ErrTooManyFailures) true.
func (e *TooManyFailuresError) Is(target error) bool { return target == ErrTooManyFailures }

// Config configures an Authenticator. With the zero value no one can
// authenticate: requests without credentials are anonymous and every
// credential is refused.
type Config struct {
	// HtpasswdFile is a file of "user:bcrypt-hash" lines (htpasswd -B);
	// "" means no users. Other hash formats (apr1/MD5, {SHA}, crypt,
	// plain text) are refused with an error naming file and line. It is
	// re-read when it changes (stat at most once a second, on use); a
	// rewrite that does not parse keeps the previous users.
	HtpasswdFile string
	// Tokens are static tokens, name → secret (at least 16 characters,
	// validated by the config package).
	Tokens map[string]string
	// TokenTTL is the lifetime of issued tokens; 0 means 15 minutes.
	TokenTTL time.Duration
	// KeyFile holds the HMAC key that signs issued tokens. It is created
	// (32 random bytes as hex, mode 0600, parent directory 0700) when
	// missing, and refused when group or others may read it or it is
	// malformed. "" means a random key for this process only: issued
	// tokens then die with it.
	KeyFile string
	// Service is the service name in challenges and tokens; "" means
	// "wharf".
	Service string
	// Realm is the token endpoint's URL announced in challenges; ""
	// derives it from each request (see Challenge).
	Realm string
	// Anonymous makes the token endpoint issue anonymous tokens to
	// requests without credentials; false answers them 401.
	Anonymous bool
	// FailureLimit is the number of failed authentications per client
	// address (host of RemoteAddr) per minute after which the address is
	// refused with ErrTooManyFailures until the minute ends; 0 means no
	// limit.
	FailureLimit int
	// Logger receives warnings (htpasswd reloads, blocked clients); nil
	// discards them.
	Logger *slog.Logger
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Limits on what a client may send.
const (
	// maxHeaderBytes bounds an Authorization header.
	maxHeaderBytes = 8 << 10
	// maxTokenBytes bounds an issued token.
	maxTokenBytes = 4 << 10
	defaultTTL    = 15 * time.Minute
	// reloadInterval is how often the htpasswd file is stat'ed at most.
	reloadInterval = time.Second
)

// Authenticator authenticates requests. It is safe for concurrent use.
type Authenticator struct {
	key       []byte
	service   string
	realm     string
	ttl       time.Duration
	anonymous bool
	log       *slog.Logger
	now       func() time.Time

	users   *userFile // nil without an htpasswd file
	tokens  []staticToken
	cache   *verifyCache
	limiter *failureLimiter // nil without a limit

	// compare is bcrypt.CompareHashAndPassword; tests count calls.
	compare func(hash, password []byte) error
}

// staticToken is one configured static token, its secret kept only as a
// digest so that comparisons take the same time for every candidate.
type staticToken struct {
	name   string
	digest [sha256.Size]byte
}

// New validates cfg, reads (or creates) the key file and the htpasswd
// file, and returns an Authenticator. Errors wrap ErrHtpasswd or
// ErrKeyFile, or describe an invalid field.
func New(cfg Config) (*Authenticator, error) {
	a := &Authenticator{
		service:   cfg.Service,
		realm:     cfg.Realm,
		ttl:       cfg.TokenTTL,
		anonymous: cfg.Anonymous,
		log:       cfg.Logger,
		now:       cfg.Now,
		cache:     newVerifyCache(),
		compare:   bcrypt.CompareHashAndPassword,
	}
	if a.service == "" {
		a.service = "wharf"
	}
	if a.ttl == 0 {
		a.ttl = defaultTTL
	}
	if a.ttl < time.Second {
		return nil, fmt.Errorf("auth: token TTL %v is shorter than a second", cfg.TokenTTL)
	}
	if cfg.FailureLimit < 0 {
		return nil, fmt.Errorf("auth: failure limit %d is negative", cfg.FailureLimit)
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	for name, secret := range cfg.Tokens {
		if name == "" || secret == "" {
			return nil, errors.New("auth: a static token has an empty name or secret")
		}
		a.tokens = append(a.tokens, staticToken{name: name, digest: sha256.Sum256([]byte(secret))})
	}
	if cfg.KeyFile != "" {
		key, err := loadOrCreateKey(cfg.KeyFile)
		if err != nil {
			return nil, err
		}
		a.key = key
	} else {
		a.key = make([]byte, keySize)
		if _, err := rand.Read(a.key); err != nil {
			return nil, fmt.Errorf("auth: generate key: %w", err)
		}
	}
	if cfg.HtpasswdFile != "" {
		uf, err := openUserFile(cfg.HtpasswdFile, a.log, a.cache.clear)
		if err != nil {
			return nil, err
		}
		a.users = uf
	}
	if cfg.FailureLimit > 0 {
		a.limiter = newFailureLimiter(cfg.FailureLimit, time.Minute, maxLimiterEntries)
	}
	return a, nil
}

// Enabled reports whether any user file or static token is configured,
// that is, whether anyone can authenticate at all.
func (a *Authenticator) Enabled() bool { return a.users != nil || len(a.tokens) > 0 }

// Close releases the Authenticator. Nothing runs in the background (the
// htpasswd file is checked on use), so it only exists for the lifecycle
// the caller keeps; it always returns nil.
func (a *Authenticator) Close() error { return nil }

// Authenticate says who sent r, from its Authorization header:
//
//   - no header: the anonymous principal, nil error;
//   - "Bearer <issued token>": the token's principal, if its signature is
//     valid, it has not expired, and its credential still exists unchanged;
//   - "Bearer <static token secret>": that StaticToken principal;
//   - "Basic base64(user:password)": the htpasswd User, or the StaticToken
//     whose secret equals the password (with any user name).
//
// Errors wrap ErrMalformed, ErrInvalidCredentials or ErrExpired, each of
// which counts as a failure for r's client address, or are a
// *TooManyFailuresError (checked before any bcrypt work). On error the
// returned principal is meaningless.
func (a *Authenticator) Authenticate(r *http.Request) (Principal, error) {
	return a.authenticate(r, true)
}

// authenticate is Authenticate; the token endpoint passes allowBearer
// false so that a token cannot be traded for a fresh one.
func (a *Authenticator) authenticate(r *http.Request, allowBearer bool) (Principal, error) {
	values := r.Header.Values("Authorization")
	if len(values) == 0 {
		return Principal{}, nil
	}
	now := a.now()
	client := clientAddr(r)
	if err := a.limiter.check(client, now); err != nil {
		return Principal{}, err
	}
	p, err := a.verifyHeader(values, allowBearer, now)
	if err != nil {
		a.failed(client, now)
		return Principal{}, err
	}
	return p, nil
}

// failed records a failed attempt from client.
func (a *Authenticator) failed(client string, now time.Time) {
	if a.limiter.fail(client, now) {
		a.log.Warn("client over the authentication failure limit", "client", client, "limit", a.limiter.limit)
	}
}

// verifyHeader parses and verifies the Authorization header lines.
func (a *Authenticator) verifyHeader(values []string, allowBearer bool, now time.Time) (Principal, error) {
	scheme, cred, err := parseAuthorization(values)
	if err != nil {
		return Principal{}, err
	}
	switch scheme {
	case schemeBasic:
		user, pass, err := decodeBasic(cred)
		if err != nil {
			return Principal{}, err
		}
		return a.checkPassword(user, pass, now)
	default: // schemeBearer
		if !allowBearer {
			return Principal{}, fmt.Errorf("%w: the token endpoint takes Basic credentials, not a Bearer token", ErrMalformed)
		}
		return a.checkBearer(cred, now)
	}
}

// Authorization schemes (RFC 7617, RFC 6750).
const (
	schemeBasic = iota
	schemeBearer
)

// parseAuthorization splits the one Authorization header into scheme and
// credentials (RFC 9110 §11.4: auth-scheme SP credentials; the scheme is
// case-insensitive).
func parseAuthorization(values []string) (scheme int, cred string, err error) {
	if len(values) != 1 {
		return 0, "", fmt.Errorf("%w: more than one Authorization header", ErrMalformed)
	}
	v := values[0]
	switch {
	case len(v) > maxHeaderBytes:
		return 0, "", fmt.Errorf("%w: Authorization header longer than %d bytes", ErrMalformed, maxHeaderBytes)
	case strings.TrimSpace(v) == "":
		return 0, "", fmt.Errorf("%w: empty Authorization header", ErrMalformed)
	case hasControl(v):
		return 0, "", fmt.Errorf("%w: control character in Authorization header", ErrMalformed)
	}
	name, rest, _ := strings.Cut(strings.TrimSpace(v), " ")
	cred = strings.TrimLeft(rest, " ")
	switch {
	case strings.EqualFold(name, "Basic"):
		scheme = schemeBasic
	case strings.EqualFold(name, "Bearer"):
		scheme = schemeBearer
	default:
		return 0, "", fmt.Errorf("%w: unsupported authorization scheme", ErrMalformed)
	}
	if cred == "" {
		return 0, "", fmt.Errorf("%w: no credentials after the scheme", ErrMalformed)
	}
	return scheme, cred, nil
}

// decodeBasic decodes Basic credentials (RFC 7617 §2): base64 of
// user-id ":" password, the user-id without a colon.
func decodeBasic(cred string) (user, pass string, err error) {
	raw, err := base64.StdEncoding.DecodeString(cred)
	if err != nil {
		return "", "", fmt.Errorf("%w: Basic credentials are not valid base64", ErrMalformed)
	}
	user, pass, ok := strings.Cut(string(raw), ":")
	if !ok {
		return "", "", fmt.Errorf("%w: Basic credentials have no ':'", ErrMalformed)
	}
	if hasControl(user) {
		return "", "", fmt.Errorf("%w: control character in the Basic user name", ErrMalformed)
	}
	return user, pass, nil
}

// checkPassword verifies a user name and password: a static token's
// secret as the password (with any user name), else the htpasswd user.
func (a *Authenticator) checkPassword(user, pass string, now time.Time) (Principal, error) {
	if name, ok := a.matchStatic(pass); ok {
		return Principal{Kind: StaticToken, Name: name}, nil
	}
	set := a.users.current(now)
	if set == nil {
		return Principal{}, fmt.Errorf("%w: unknown user or wrong password", ErrInvalidCredentials)
	}
	ck := a.cacheKey(user, pass)
	if a.cache.hit(ck, set.gen, now) {
		return Principal{Kind: User, Name: user}, nil
	}
	hash, ok := set.users[user]
	if !ok {
		// Spend the same bcrypt work as for a known user, so that timing
		// does not tell which users exist; the result is ignored.
		if set.dummy != nil {
			_ = a.compare(set.dummy, []byte(pass))
		}
		return Principal{}, fmt.Errorf("%w: unknown user or wrong password", ErrInvalidCredentials)
	}
	if err := a.compare(hash, []byte(pass)); err != nil {
		return Principal{}, fmt.Errorf("%w: unknown user or wrong password", ErrInvalidCredentials)
	}
	a.cache.add(ck, set.gen, now)
	return Principal{Kind: User, Name: user}, nil
}

// checkBearer verifies a Bearer credential: a static token's secret, else
// a token this package issued.
func (a *Authenticator) checkBearer(cred string, now time.Time) (Principal, error) {
	if name, ok := a.matchStatic(cred); ok {
		return Principal{Kind: StaticToken, Name: name}, nil
	}
	return a.verifyToken(cred, now)
}

// matchStatic compares secret with every static token in constant time
// (fixed-size digests, no early exit) and returns the matching name.
func (a *Authenticator) matchStatic(secret string) (string, bool) {
	if len(a.tokens) == 0 {
		return "", false
	}
	d := sha256.Sum256([]byte(secret))
	match := -1
	for i := range a.tokens {
		if subtle.ConstantTimeCompare(d[:], a.tokens[i].digest[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return "", false
	}
	return a.tokens[match].name, true
}

// staticDigest returns the digest of the static token called name.
func (a *Authenticator) staticDigest(name string) ([]byte, bool) {
	for i := range a.tokens {
		if a.tokens[i].name == name {
			return a.tokens[i].digest[:], true
		}
	}
	return nil, false
}

// cacheKey is the verification cache's key for a user and password: an
// HMAC, so the cache never holds a password or a plain hash of one.
func (a *Authenticator) cacheKey(user, pass string) [sha256.Size]byte {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte("basic\x00"))
	m.Write([]byte(user))
	m.Write([]byte{0})
	m.Write([]byte(pass))
	var k [sha256.Size]byte
	m.Sum(k[:0])
	return k
}

// clientAddr is the failure limiter's key for r: the host of RemoteAddr.
func clientAddr(r *http.Request) string {
	if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		return host
	}
	return r.RemoteAddr
}

// hasControl reports whether s holds an ASCII control character.
func hasControl(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return true
		}
	}
	return false
}
