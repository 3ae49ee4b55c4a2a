// Package auth implements the client side of registry authentication for
// wharf's upstream client: parsing WWW-Authenticate challenges, exchanging
// credentials for bearer tokens at a token realm (distribution token spec,
// client-compat.md §4.1), caching those tokens, and deciding which realms may
// be contacted at all.
//
// Invariants:
//   - A token realm is contacted only after CheckRealm accepted it: http(s)
//     only, never a downgrade from an https registry to an http realm, and
//     never a loopback, private or link-local address (or localhost) unless
//     the registry itself lives on such an address or the realm host is
//     explicitly allowed. Every redirect of the token request passes the
//     same check.
//   - Credentials are sent as HTTP Basic only to the realm host; a redirect
//     of the token request to any other host loses the Authorization header.
//   - Tokens are cached per (realm, service, sorted scopes, credential
//     identity). The identity is the username plus a keyed hash of the
//     password; the password itself never becomes part of a map key.
//   - Concurrent requests for the same missing token cause one fetch.
//   - Response bodies from token realms are read with a bound.
package auth
