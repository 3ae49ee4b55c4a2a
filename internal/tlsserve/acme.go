package tlsserve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
	"golang.org/x/crypto/acme/autocert"
)

// acmeRequestTimeout bounds one HTTP exchange with the ACME server. The
// whole issuance, which autocert runs inside the first handshake for a
// name, is bounded by autocert itself (5 minutes).
const acmeRequestTimeout = time.Minute

// ACMEConfig configures automatic certificates from an ACME CA (RFC 8555),
// Let's Encrypt unless DirectoryURL says otherwise. Configuring ACME accepts
// the CA's terms of service.
type ACMEConfig struct {
	// Hosts are the DNS names certificates may be requested for (exact
	// names, no wildcards, no IP addresses). Required. A handshake for any
	// other name fails with ErrHostNotAllowed without contacting the CA.
	Hosts []string
	// Email is the account contact the CA sends expiry notices to. Optional.
	Email string
	// CacheDir holds the ACME account key and the issued certificates and
	// keys, e.g. <data_dir>/acme. Required: without it every restart would
	// request new certificates and soon hit the CA's rate limits. Created
	// with mode 0700 if missing.
	CacheDir string
	// DirectoryURL is the ACME directory (RFC 8555 §7.1.1); it must be an
	// https URL. "" means Let's Encrypt production.
	DirectoryURL string
	// RootCAs are the roots trusted for the ACME server's own TLS
	// certificate (a test CA such as pebble); nil means the system roots.
	RootCAs *x509.CertPool
	// HTTPChallenge enables the http-01 challenge (RFC 8555 §8.3): the CA
	// fetches /.well-known/acme-challenge/ from port 80, which must then be
	// served by ACME.HTTPHandler; http-01 is offered from the moment
	// HTTPHandler is first called. tls-alpn-01 (RFC 8737), answered on the
	// TLS listener itself (which must then be port 443), is always tried
	// first. Default false.
	HTTPChallenge bool
}

// validate reports every problem of c at once, each wrapping
// ErrInvalidConfig.
func (c *ACMEConfig) validate() error {
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidConfig}, args...)...))
	}
	if len(c.Hosts) == 0 {
		bad("no hosts")
	}
	for _, h := range c.Hosts {
		if err := checkACMEHost(h); err != "" {
			bad("host %q: %s", h, err)
		}
	}
	if c.Email != "" {
		if a, err := mail.ParseAddress(c.Email); err != nil || a.Address != c.Email {
			bad("email %q is not a bare address", c.Email)
		}
	}
	if c.CacheDir == "" {
		bad("no cache directory")
	}
	if c.DirectoryURL != "" {
		// RFC 8555 §6.1: ACME is spoken over HTTPS only.
		if u, err := url.Parse(c.DirectoryURL); err != nil || u.Scheme != "https" || u.Host == "" {
			bad("directory URL %q is not an https URL", c.DirectoryURL)
		}
	}
	return errors.Join(errs...)
}

// checkACMEHost says why h cannot have an ACME certificate through
// autocert, or "" if it can.
func checkACMEHost(h string) string {
	name := strings.TrimSuffix(h, ".")
	switch {
	case name == "":
		return "empty"
	case strings.Contains(name, "*"):
		return "wildcards need the dns-01 challenge, which autocert does not answer"
	case strings.ContainsAny(name, ":/ \t\r\n@"):
		return "not a DNS name (no ports, paths or spaces)"
	case isIP(name):
		return "IP addresses are not supported"
	case !strings.Contains(name, "."):
		// autocert refuses single-label server names outright.
		return "needs at least two labels"
	}
	return ""
}

func isIP(s string) bool {
	_, err := netip.ParseAddr(s)
	return err == nil
}

// ACME obtains, caches and renews certificates for ACMEConfig.Hosts with
// autocert. The first handshake for a name without a cached certificate
// waits for issuance; renewal happens in the background from 30 days before
// expiry, on timers autocert keeps for the life of the process.
type ACME struct {
	m             *autocert.Manager
	httpChallenge bool
}

// NewACME checks cfg (errors wrap ErrInvalidConfig; all problems are
// reported together), creates cfg.CacheDir, and returns an ACME. It does not
// contact the CA: that happens at the first handshake for a name without a
// cached certificate.
func NewACME(cfg ACMEConfig) (*ACME, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(cfg.CacheDir, 0o700); err != nil {
		return nil, fmt.Errorf("tlsserve: ACME cache directory: %w", err)
	}
	dir := cfg.DirectoryURL
	if dir == "" {
		dir = autocert.DefaultACMEDirectory
	}

	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
	// Issuance is a burst of a dozen requests every few weeks; keeping
	// connections open in between would leave idle goroutines behind that
	// nothing owns, and ACME has no Close to end them.
	tr.DisableKeepAlives = true

	allowed := autocert.HostWhitelist(cfg.Hosts...)
	return &ACME{
		m: &autocert.Manager{
			Prompt: autocert.AcceptTOS,
			Cache:  autocert.DirCache(cfg.CacheDir),
			HostPolicy: func(ctx context.Context, host string) error {
				if allowed(ctx, host) != nil {
					return fmt.Errorf("%w: %q", ErrHostNotAllowed, host)
				}
				return nil
			},
			Email: cfg.Email,
			Client: &acme.Client{
				DirectoryURL: dir,
				HTTPClient:   &http.Client{Transport: tr, Timeout: acmeRequestTimeout},
				UserAgent:    "wharf",
			},
		},
		httpChallenge: cfg.HTTPChallenge,
	}, nil
}

// GetCertificate returns the certificate for hello's server name: from
// memory, else from the cache directory, else newly issued by the CA (the
// handshake waits). It also answers the CA's tls-alpn-01 validation
// handshakes (RFC 8737 §3). A name not in ACMEConfig.Hosts fails with
// ErrHostNotAllowed; a ClientHello without a server name fails too, since
// there is no name to choose a certificate by.
func (a *ACME) GetCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return a.m.GetCertificate(hello)
}

// TLSConfig returns ServerConfig(a.GetCertificate, acme.ALPNProto): the
// listener offers acme-tls/1 so that tls-alpn-01 validation reaches
// GetCertificate.
func (a *ACME) TLSConfig() *tls.Config {
	return ServerConfig(a.GetCertificate, acme.ALPNProto)
}

// HTTPHandler returns the handler for the plain-HTTP listener (port 80).
// With ACMEConfig.HTTPChallenge it answers the CA's http-01 requests under
// /.well-known/acme-challenge/ (403 for a host not in ACMEConfig.Hosts, 404
// for an unknown token) and passes every other request to fallback; without
// it, it is fallback itself. A nil fallback answers 404.
//
// Typical wiring: RedirectHandler(port, a.HTTPHandler(nil)).
func (a *ACME) HTTPHandler(fallback http.Handler) http.Handler {
	if fallback == nil {
		fallback = http.NotFoundHandler()
	}
	if !a.httpChallenge {
		return fallback
	}
	// autocert.Manager.HTTPHandler is also what turns http-01 on.
	return a.m.HTTPHandler(fallback)
}
