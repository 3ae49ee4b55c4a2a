// Package auth authenticates the clients of wharf's registry API: it owns
// the user file (htpasswd, bcrypt only), the static tokens, the HMAC key
// that signs the tokens wharf issues, the Docker token endpoint (/token),
// the WWW-Authenticate challenge, and the per-address limit on failed
// attempts. It says who a request comes from (a Principal); deciding what
// that principal may pull is the caller's job.
//
// # Flow
//
// wharf speaks the Docker token flow (distribution spec/auth/token.md): a
// request that needs credentials gets 401 with
//
//	WWW-Authenticate: Bearer realm="https://mirror/token",service="wharf",scope="repository:<name>:pull"
//
// (Challenge); the client asks the realm for a token, either with GET and
// Basic credentials ("Requesting a Token") or, containerd, with an OAuth2
// password grant in a POST form (spec/auth/oauth.md, "Getting a token");
// TokenHandler answers {"token","access_token","expires_in","issued_at"};
// the client then sends "Authorization: Bearer <token>" on every request
// (Authenticate). Clients may also skip the token endpoint and send Basic
// credentials or a static token directly.
//
// # Token format
//
// An issued token is opaque to clients:
//
//	base64url(payload) "." base64url(HMAC-SHA256(key, base64url(payload)))
//
// where payload is the JSON object {sub, kind, aud, iat, exp, cred}: the
// principal's name and kind, the service, issue and expiry times in Unix
// seconds, and for users and static tokens a fingerprint (a keyed HMAC)
// of the credential the token was issued for. The signature covers the
// encoded payload exactly as sent, and both parts must use canonical
// unpadded base64url, so no other spelling of a token verifies. A token is
// accepted only while the credential it was issued for still exists
// unchanged: a user removed from the htpasswd file, a changed password or
// a removed or rotated static token loses access at once, not at expiry.
// wharf issues no refresh tokens (spec/auth/oauth.md allows that), so
// clients re-authenticate with their password when a token expires.
//
// # Invariants
//
//   - No secret (password, static token, issued token, key) appears in a log
//     line or an error message; errors name the file and line, never the
//     offending text. Errors wrap the package's sentinels for errors.Is.
//   - Secrets are compared in constant time: issued-token signatures with
//     hmac.Equal, static tokens as SHA-256 digests with
//     subtle.ConstantTimeCompare against every configured token; a Basic
//     login for an unknown user still runs one bcrypt comparison, so
//     timing does not reveal which users exist.
//   - The key file holds 32 random bytes (hex), is mode 0600 in a
//     directory wharf creates 0700, is written atomically (temporary file,
//     fsync, link or rename) and is refused when group or others can read
//     it; it survives restarts so issued tokens stay valid.
//   - A client address over its failure limit is refused before any
//     bcrypt work is done; the limiter's memory is bounded.
//   - Successful bcrypt verifications are cached (bounded, five minutes,
//     keyed by an HMAC of user and password, dropped when the htpasswd file
//     is reloaded); failures are never cached.
//   - The htpasswd file is re-read when it changes (checked at most once a
//     second, on use); a rewrite that does not parse keeps the previous
//     users and logs a warning.
//
// The failure limit keys on the host part of http.Request.RemoteAddr; a
// wharf behind a reverse proxy sees one address for every client unless
// the caller rewrites RemoteAddr from a trusted forwarding header.
package auth
