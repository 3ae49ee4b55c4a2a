package server

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"

	"github.com/wharf-mirror/wharf/internal/tlsserve"
)

// acmeDir is where ACME certificates and the account key are kept.
const acmeDir = "acme"

// tlsFront is HTTPS on the registry listener.
type tlsFront struct {
	config *tls.Config
	// challenge serves ACME http-01 on the redirect listener; nil for
	// certificate files.
	challenge func(fallback http.Handler) http.Handler
}

// newTLS builds the registry listener's TLS from the configuration, or
// returns nil when it serves plain HTTP.
func (i *Instance) newTLS() (*tlsFront, error) {
	t := i.cfg.TLS
	switch {
	case t.CertFile != "":
		files, err := tlsserve.NewFiles(t.CertFile, t.KeyFile, i.log.With("tls", "files"))
		if err != nil {
			return nil, err
		}
		return &tlsFront{config: tlsserve.ServerConfig(files.GetCertificate)}, nil
	case len(t.ACME.Hosts) > 0:
		var roots *x509.CertPool
		if t.ACME.CAFile != "" {
			pem, err := os.ReadFile(t.ACME.CAFile)
			if err != nil {
				return nil, fmt.Errorf("tls.acme.ca_file: %w", err)
			}
			roots = x509.NewCertPool()
			if !roots.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("tls.acme.ca_file: %s holds no PEM certificate", t.ACME.CAFile)
			}
		}
		a, err := tlsserve.NewACME(tlsserve.ACMEConfig{
			Hosts:         t.ACME.Hosts,
			Email:         t.ACME.Email,
			CacheDir:      filepath.Join(i.cfg.DataDir, acmeDir),
			DirectoryURL:  t.ACME.DirectoryURL,
			RootCAs:       roots,
			HTTPChallenge: t.RedirectListen != "",
		})
		if err != nil {
			return nil, err
		}
		return &tlsFront{config: a.TLSConfig(), challenge: a.HTTPHandler}, nil
	}
	return nil, nil
}

// redirectHandler is the plain-HTTP listener's handler: ACME http-01
// challenges when ACME is in use, a 308 to HTTPS for everything else.
func (i *Instance) redirectHandler(httpsAddr net.Addr) http.Handler {
	_, port, _ := net.SplitHostPort(httpsAddr.String())
	var next http.Handler
	if i.tls != nil && i.tls.challenge != nil {
		next = i.tls.challenge(nil)
	}
	return tlsserve.RedirectHandler(port, next)
}
