package tlsserve

import (
	"crypto/tls"
	"slices"
)

// modernCipherSuites are the TLS 1.2 suites a listener accepts: ECDHE key
// exchange (forward secrecy) with an AEAD, the "intermediate" set of
// Mozilla's server-side TLS guidelines. Every registry client (Go's
// crypto/tls in Docker, containerd, podman, skopeo and crane; curl with
// OpenSSL) offers them. TLS 1.3 suites are not configurable and all fine.
// TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256 is required by HTTP/2 (RFC 9113
// §9.2.2).
var modernCipherSuites = []uint16{
	tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
}

// ServerConfig returns the tls.Config of a listener that presents the
// certificate getCert chooses (Files.GetCertificate or ACME.GetCertificate).
//
// It allows TLS 1.2 and 1.3 only (RFC 8996 deprecates 1.0 and 1.1), limits
// TLS 1.2 to forward-secret AEAD suites, and keeps crypto/tls's default key
// exchange groups, which include the post-quantum hybrid X25519MLKEM768. By
// ALPN (RFC 7301) it offers h2, then http/1.1, then extraProtos in order
// (ACME passes acme-tls/1); duplicates are dropped.
//
// The config suits http.Server.TLSConfig with ServeTLS(ln, "", ""), which
// enables HTTP/2 for the h2 it offers.
func ServerConfig(getCert func(*tls.ClientHelloInfo) (*tls.Certificate, error), extraProtos ...string) *tls.Config {
	protos := []string{"h2", "http/1.1"}
	for _, p := range extraProtos {
		if p != "" && !slices.Contains(protos, p) {
			protos = append(protos, p)
		}
	}
	return &tls.Config{
		MinVersion:     tls.VersionTLS12,
		CipherSuites:   slices.Clone(modernCipherSuites),
		NextProtos:     protos,
		GetCertificate: getCert,
	}
}
