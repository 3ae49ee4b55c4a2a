package auth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"time"
)

// claims is the payload of an issued token.
type claims struct {
	Sub  string `json:"sub,omitempty"`
	Kind string `json:"kind"`
	Aud  string `json:"aud"`
	Iat  int64  `json:"iat"`
	Exp  int64  `json:"exp"`
	// Cred is a keyed fingerprint of the credential the token was issued
	// for (the user's bcrypt hash, the static token's secret digest), so
	// that changing or removing the credential revokes the token.
	Cred string `json:"cred,omitempty"`
}

// b64 is the token encoding: unpadded base64url, strict so that every
// byte string has exactly one accepted spelling.
var b64 = base64.RawURLEncoding.Strict()

// issue returns a token for p valid from now for the configured TTL, and
// its expiry. p's credential must exist (the caller just verified it).
func (a *Authenticator) issue(p Principal, now time.Time) (string, time.Time, error) {
	iat := now.Unix()
	exp := iat + int64((a.ttl+time.Second-1)/time.Second)
	c := claims{Sub: p.Name, Kind: p.Kind.String(), Aud: a.service, Iat: iat, Exp: exp}
	if p.Kind != Anonymous {
		fp, ok := a.fingerprint(p, now)
		if !ok {
			return "", time.Time{}, fmt.Errorf("%w: %s no longer exists", ErrInvalidCredentials, p.Kind)
		}
		c.Cred = fp
	}
	payload, err := json.Marshal(c)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("auth: encode token: %w", err)
	}
	enc := b64.EncodeToString(payload)
	tok := enc + "." + b64.EncodeToString(a.sign(enc))
	if len(tok) > maxTokenBytes {
		return "", time.Time{}, fmt.Errorf("auth: token for a %d-byte name is too long", len(p.Name))
	}
	return tok, time.Unix(exp, 0), nil
}

// sign is the token signature over the encoded payload.
func (a *Authenticator) sign(encodedPayload string) []byte {
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte("wharf-token\x00"))
	m.Write([]byte(encodedPayload))
	return m.Sum(nil)
}

// fingerprint is the keyed fingerprint of p's current credential, or
// false when the credential no longer exists.
func (a *Authenticator) fingerprint(p Principal, now time.Time) (string, bool) {
	var secret []byte
	switch p.Kind {
	case User:
		set := a.users.current(now)
		if set == nil {
			return "", false
		}
		h, ok := set.users[p.Name]
		if !ok {
			return "", false
		}
		secret = h
	case StaticToken:
		d, ok := a.staticDigest(p.Name)
		if !ok {
			return "", false
		}
		secret = d
	default:
		return "", false
	}
	m := hmac.New(sha256.New, a.key)
	m.Write([]byte("wharf-cred\x00" + p.Kind.String() + "\x00" + p.Name + "\x00"))
	m.Write(secret)
	return b64.EncodeToString(m.Sum(nil)[:16]), true
}

// verifyToken checks an issued token: size and alphabet, signature
// (hmac.Equal), audience, expiry, and that its credential still exists
// unchanged.
func (a *Authenticator) verifyToken(tok string, now time.Time) (Principal, error) {
	invalid := fmt.Errorf("%w: unknown or invalid token", ErrInvalidCredentials)
	if len(tok) > maxTokenBytes {
		return Principal{}, invalid
	}
	// The base64 decoder skips '\r' and '\n'; refuse anything outside the
	// alphabet so that no second spelling of a token verifies.
	for i := 0; i < len(tok); i++ {
		c := tok[i]
		if !(c == '-' || c == '_' || c == '.' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return Principal{}, invalid
		}
	}
	enc, sigEnc, ok := strings.Cut(tok, ".")
	if !ok || enc == "" || strings.Contains(sigEnc, ".") {
		return Principal{}, invalid
	}
	sig, err := b64.DecodeString(sigEnc)
	if err != nil || !hmac.Equal(sig, a.sign(enc)) {
		return Principal{}, invalid
	}
	payload, err := b64.DecodeString(enc)
	if err != nil {
		return Principal{}, invalid
	}
	var c claims
	if err := json.Unmarshal(payload, &c); err != nil {
		return Principal{}, invalid
	}
	if c.Aud != a.service {
		return Principal{}, invalid
	}
	if now.Unix() >= c.Exp {
		return Principal{}, fmt.Errorf("%w: issued at %s, expired at %s", ErrExpired,
			time.Unix(c.Iat, 0).UTC().Format(time.RFC3339), time.Unix(c.Exp, 0).UTC().Format(time.RFC3339))
	}
	var p Principal
	switch c.Kind {
	case Anonymous.String():
		if c.Sub != "" || c.Cred != "" {
			return Principal{}, invalid
		}
		return Principal{}, nil
	case User.String():
		p = Principal{Kind: User, Name: c.Sub}
	case StaticToken.String():
		p = Principal{Kind: StaticToken, Name: c.Sub}
	default:
		return Principal{}, invalid
	}
	fp, ok := a.fingerprint(p, now)
	if !ok || !hmac.Equal([]byte(fp), []byte(c.Cred)) {
		return Principal{}, fmt.Errorf("%w: the token's %s was removed or changed", ErrInvalidCredentials, p.Kind)
	}
	return p, nil
}
