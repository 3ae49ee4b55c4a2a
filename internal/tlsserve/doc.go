// Package tlsserve owns the TLS side of wharf's listeners (PRODUCT.md item
// 13): the certificate a listener presents, either from PEM files that an
// operator (or cert-manager, or certbot) replaces in place, or obtained and
// renewed automatically over ACME (RFC 8555) with golang.org/x/crypto's
// autocert; the tls.Config built around that certificate; and the plain-HTTP
// side of a TLS deployment: the redirect to HTTPS and HSTS.
//
// Invariants:
//   - A listener never loses its certificate to a bad replacement: Files
//     keeps serving the last pair that loaded, and a reload that fails (a
//     half-written file, a key that does not match) is logged once per change
//     of the files, never returned to a handshake. Only the first load, in
//     NewFiles, is an error, and that error names the file at fault.
//   - Files checks for changes on the handshake path, at most once per
//     ReloadInterval, by stat (identity, size, modification time) of both
//     files; it starts no goroutine and needs no Close.
//   - An ACME certificate is requested only for a name in ACMEConfig.Hosts;
//     any other server name fails the handshake with ErrHostNotAllowed before
//     the CA is contacted, so a scanner cannot spend the CA's rate limits.
//     Issued certificates and the account key live in ACMEConfig.CacheDir
//     (mode 0700), so a restart serves from disk without asking the CA.
//   - Every listener speaks TLS 1.2 or newer, offers h2 and http/1.1 by ALPN
//     (RFC 7301), and with ACME also acme-tls/1 (RFC 8737 §3).
//   - HSTS (RFC 6797) is sent only on responses to requests that arrived over
//     TLS (§7.2); the plain-HTTP side only redirects, with 308 so that the
//     method and body are kept (RFC 9110 §15.4.9).
package tlsserve

import "errors"

var (
	// ErrInvalidCertificate reports a certificate file without a usable
	// certificate: no CERTIFICATE PEM block, or one that does not parse.
	ErrInvalidCertificate = errors.New("tlsserve: no usable certificate")
	// ErrInvalidKey reports a key file without a usable private key: no
	// PRIVATE KEY PEM block, an encrypted key, or a key type TLS cannot sign
	// with.
	ErrInvalidKey = errors.New("tlsserve: no usable private key")
	// ErrKeyMismatch reports a private key that does not belong to the
	// certificate it is paired with.
	ErrKeyMismatch = errors.New("tlsserve: private key does not match certificate")
	// ErrInvalidConfig reports an ACMEConfig that cannot work; the wrapping
	// error says which field and why.
	ErrInvalidConfig = errors.New("tlsserve: invalid ACME configuration")
	// ErrHostNotAllowed reports a TLS server name that is not in
	// ACMEConfig.Hosts; the handshake fails and no certificate is requested.
	ErrHostNotAllowed = errors.New("tlsserve: server name not in the ACME host list")
)
