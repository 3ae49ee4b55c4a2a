package server

import (
	"net"
	"net/http"
	"path/filepath"
	"strings"

	"github.com/wharf-mirror/wharf/internal/mitm"
)

// caDir is where wharf's own CA lives in the data directory.
const caDir = "ca"

// LoadCA loads wharf's CA from the data directory, creating it on first
// use ("wharf ca" and the HTTPS_PROXY mode share it).
func LoadCA(dataDir string) (*mitm.CA, error) {
	return mitm.LoadOrCreateCA(filepath.Join(dataDir, caDir))
}

// newProxy builds the HTTPS_PROXY front when proxy.listen is set: it
// intercepts every configured upstream's name, aliases and virtual hosts
// and proxy.intercept_hosts, tunnels proxy.tunnel, refuses the rest, and
// serves what it intercepts with the registry API handler (Host routing).
func (i *Instance) newProxy() error {
	if i.cfg.Proxy.Listen == "" {
		return nil
	}
	ca, err := LoadCA(i.cfg.DataDir)
	if err != nil {
		return err
	}
	intercept := i.registryHosts()
	tunnel := map[string]bool{}
	for _, t := range i.cfg.Proxy.Tunnel {
		host, port, _ := net.SplitHostPort(t)
		tunnel[net.JoinHostPort(strings.ToLower(host), port)] = true
	}
	i.ca = ca
	i.proxy = &mitm.Proxy{
		CA:        ca,
		Intercept: func(host string) bool { return intercept[host] },
		Tunnel:    func(hostport string) bool { return tunnel[hostport] },
		Handler:   i.api,
		Logger:    i.log.With("listener", "proxy"),
	}
	return nil
}

// ProxyHandler is the HTTPS_PROXY front, or nil when proxy.listen is not
// set.
func (i *Instance) ProxyHandler() http.Handler {
	if i.proxy == nil {
		return nil
	}
	return i.proxy
}

// withCACert serves wharf's CA certificate at GET /ca.crt on the registry
// listener when the CA is in use, so that clients can fetch what to trust.
func (i *Instance) withCACert(api http.Handler) http.Handler {
	if i.ca == nil {
		return api
	}
	pem := i.ca.CertPEM()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ca.crt" && (r.Method == http.MethodGet || r.Method == http.MethodHead) {
			w.Header().Set("Content-Type", "application/x-pem-file")
			w.Header().Set("Content-Disposition", `attachment; filename="wharf-ca.crt"`)
			w.Write(pem)
			return
		}
		api.ServeHTTP(w, r)
	})
}
