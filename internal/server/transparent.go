package server

import (
	"crypto/tls"
	"fmt"
	"net"
	"strings"

	"github.com/wharf-mirror/wharf/internal/tlsserve"
)

// registryHosts is every host name wharf answers for as if it were the
// registry: each enabled upstream's name, aliases and virtual hosts, and
// proxy.intercept_hosts. Names are lower-case, without port or final dot.
// The HTTPS_PROXY mode intercepts exactly these, and the transparent
// listener mints certificates for exactly these.
func (i *Instance) registryHosts() map[string]bool {
	hosts := map[string]bool{}
	add := func(h string) {
		h = strings.ToLower(strings.TrimSuffix(h, "."))
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
		hosts[h] = true
	}
	for _, name := range i.cfg.EnabledUpstreams() {
		u := i.cfg.Upstreams[name]
		add(name)
		for _, a := range u.Aliases {
			add(a)
		}
		for _, v := range u.VirtualHosts {
			add(v)
		}
	}
	for _, h := range i.cfg.Proxy.InterceptHosts {
		add(h)
	}
	return hosts
}

// newTransparent builds the TLS configuration of the transparent listener
// (transparent.listen), or returns nil when it is off. The certificate is
// picked by SNI: the first configured certificate file whose names cover
// it, else a leaf minted by wharf's CA when the name is a registry host
// (registryHosts). Any other name — and a handshake without SNI, as an IP
// literal gives — fails the handshake: the listener never presents a
// certificate for a name it does not serve.
func (i *Instance) newTransparent() (*tls.Config, error) {
	t := i.cfg.Transparent
	if t.Listen == "" {
		return nil, nil
	}
	var files []*tlsserve.Files
	for k, p := range t.Certificates {
		f, err := tlsserve.NewFiles(p.CertFile, p.KeyFile, i.log.With("tls", "transparent"))
		if err != nil {
			return nil, fmt.Errorf("transparent.certificates[%d]: %w", k, err)
		}
		files = append(files, f)
	}
	if i.ca == nil {
		ca, err := LoadCA(i.cfg.DataDir)
		if err != nil {
			return nil, err
		}
		i.ca = ca
	}
	hosts := i.registryHosts()
	getCert := func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
		name := strings.ToLower(strings.TrimSuffix(hello.ServerName, "."))
		if name == "" {
			return nil, fmt.Errorf("transparent TLS: the client sent no server name (SNI); connect by registry host name")
		}
		for _, f := range files {
			c, err := f.GetCertificate(hello)
			if err == nil && c.Leaf != nil && c.Leaf.VerifyHostname(name) == nil {
				return c, nil
			}
		}
		if hosts[name] {
			return i.ca.Leaf(name)
		}
		return nil, fmt.Errorf("transparent TLS: %q is not a registry host wharf serves", name)
	}
	return tlsserve.ServerConfig(getCert), nil
}
