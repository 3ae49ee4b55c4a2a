// Package mitm owns wharf's HTTPS_PROXY front (PRODUCT.md item 14): wharf's
// own certificate authority, the per-host leaf certificates minted from it,
// and the CONNECT proxy that terminates TLS for registry hosts so that
// Docker Engine, which can only mirror docker.io through registry-mirrors,
// pulls every registry through the mirror.
//
// A client configured with HTTPS_PROXY=wharf sends "CONNECT quay.io:443"
// (RFC 9110 §9.3.6). For a host the mirror serves, Proxy answers 200,
// completes a TLS handshake with a leaf certificate for that host signed by
// the CA, and serves the decrypted HTTP/1.1 requests through the mirror
// handler. Every other target is refused unless an explicit allowlist says
// to tunnel it untouched.
//
// Invariants:
//   - Never an open proxy: a CONNECT target is intercepted only when it is a
//     DNS name on port 443 that Proxy.Intercept accepts, tunnelled only when
//     Proxy.Tunnel accepts host:port, and refused with 403 otherwise. IP
//     literals and localhost names are never intercepted; they are tunnelled
//     only when Tunnel names them.
//   - An intercepted connection serves one host only: the TLS SNI must equal
//     the CONNECT host (or be absent), and every request's Host must match it,
//     else 421 Misdirected Request (RFC 9110 §15.5.20).
//   - The CA key is never written in place: it is written 0600 to a temporary
//     file in the same directory and renamed, so a crash leaves either no key
//     or a whole one. A key readable by group or others, or a CA file that
//     cannot be used, is an error naming the file; existing files are never
//     replaced.
//   - Leaf certificates are minted once per host (concurrent requests share
//     one mint), kept in a bounded LRU, and re-minted before they expire.
//   - Every hijacked connection, tunnel and serving goroutine is owned by the
//     Proxy; Close ends them and waits for them.
package mitm

import "errors"

var (
	// ErrCorruptCA reports a CA file that cannot be used: not PEM, not a
	// certificate or key, not a CA certificate, or a key that does not belong
	// to the certificate. The file is left as it is.
	ErrCorruptCA = errors.New("mitm: unusable CA file")
	// ErrIncompleteCA reports that only one of ca.crt and ca.key exists.
	ErrIncompleteCA = errors.New("mitm: incomplete CA")
	// ErrKeyPermissions reports a CA key file readable or writable by group
	// or others.
	ErrKeyPermissions = errors.New("mitm: CA key file permissions too open")
	// ErrCAExpired reports a CA certificate past its NotAfter.
	ErrCAExpired = errors.New("mitm: CA certificate expired")
	// ErrInvalidHost reports a host that is neither a valid DNS name nor an
	// IP literal.
	ErrInvalidHost = errors.New("mitm: invalid host")
	// ErrHostNotAllowed reports a TLS server name the allow function rejected.
	ErrHostNotAllowed = errors.New("mitm: host not allowed")
	// ErrMissingSNI reports a TLS ClientHello without a server name where one
	// is required to choose the certificate.
	ErrMissingSNI = errors.New("mitm: TLS client sent no server name")
	// ErrSNIMismatch reports a TLS server name different from the CONNECT host.
	ErrSNIMismatch = errors.New("mitm: TLS server name does not match CONNECT host")
)
