package mitm

import (
	"container/list"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

const (
	// maxLeaves bounds the leaf cache; a mirror serves a handful of
	// registry and CDN hosts, so this is a guard against a client feeding
	// TLSConfig endless server names, not a working-set size.
	maxLeaves = 1024
	// leafLifetime is how long a minted leaf is valid. Short enough that a
	// leaked leaf key expires soon, long enough for any client session.
	leafLifetime = 30 * 24 * time.Hour
	// renewBefore is how long before expiry a cached leaf is replaced, so
	// no handshake is ever served a certificate about to lapse.
	renewBefore = 24 * time.Hour
	// maxCommonName is ub-common-name (RFC 5280 Appendix A.1); longer names
	// go into the SAN only.
	maxCommonName = 64
)

// errMintAborted is what waiters see if a mint panicked.
var errMintAborted = errors.New("mitm: leaf mint aborted")

// leafCache is an LRU of minted leaves plus the mints in flight. The zero
// value with max set is ready.
type leafCache struct {
	max int

	mu       sync.Mutex
	lru      list.List                // of *leafEntry, most recently used first
	byHost   map[string]*list.Element // host → element of lru
	inflight map[string]*mint
}

type leafEntry struct {
	host string
	cert *tls.Certificate
}

// mint is one leaf being minted; done is closed when cert and err are set.
type mint struct {
	done chan struct{}
	cert *tls.Certificate
	err  error
}

// Leaf returns a TLS server certificate for host, a DNS name or an IP
// literal (with or without brackets), normalised as described on Proxy. The
// certificate is minted on first use and cached in memory (an LRU of at most
// 1024 hosts); concurrent calls for one host mint once. It is valid from one
// hour ago for 30 days (never beyond the CA's own NotAfter) and replaced once
// it has less than 24 hours left. Its only SAN is host (a DNSName or an
// IPAddress), its extended key usage is server authentication, its key is
// ECDSA P-256, and its chain includes the CA certificate.
//
// The returned certificate is shared; callers must not modify it.
func (ca *CA) Leaf(host string) (*tls.Certificate, error) {
	h, _, err := normalizeHost(host)
	if err != nil {
		return nil, err
	}
	now := ca.now()
	c := &ca.leaves
	c.mu.Lock()
	if el, ok := c.byHost[h]; ok {
		e := el.Value.(*leafEntry)
		if !ca.needsRenewal(e.cert.Leaf, now) {
			c.lru.MoveToFront(el)
			c.mu.Unlock()
			return e.cert, nil
		}
	}
	if m, ok := c.inflight[h]; ok {
		c.mu.Unlock()
		if ca.onWait != nil {
			ca.onWait(h)
		}
		// Minting is CPU work of a millisecond or so and always finishes,
		// so waiting needs no context.
		<-m.done
		return m.cert, m.err
	}
	m := &mint{done: make(chan struct{})}
	if c.inflight == nil {
		c.inflight = make(map[string]*mint)
	}
	c.inflight[h] = m
	c.mu.Unlock()

	ca.mintShared(h, m, now)
	return m.cert, m.err
}

// mintShared runs the mint m that Leaf registered for host and publishes
// its result. Waiters are released and the in-flight entry removed even if
// minting panics, so no caller waits forever.
func (ca *CA) mintShared(host string, m *mint, now time.Time) {
	c := &ca.leaves
	m.err = errMintAborted
	defer func() {
		c.mu.Lock()
		delete(c.inflight, host)
		if m.err == nil {
			c.put(host, m.cert)
		}
		c.mu.Unlock()
		close(m.done)
	}()
	m.cert, m.err = ca.mint(host, now)
}

// needsRenewal reports whether leaf has less than renewBefore left. A leaf
// capped at the CA's NotAfter cannot be improved on, so it is kept until it
// actually expires rather than re-minted on every call.
func (ca *CA) needsRenewal(leaf *x509.Certificate, now time.Time) bool {
	if !now.Before(leaf.NotAfter) {
		return true
	}
	if leaf.NotAfter.Sub(now) >= renewBefore {
		return false
	}
	return leaf.NotAfter.Before(ca.cert.NotAfter)
}

// put stores cert for host as the most recently used entry, evicting the
// least recently used beyond max. c.mu must be held.
func (c *leafCache) put(host string, cert *tls.Certificate) {
	if el, ok := c.byHost[host]; ok {
		el.Value.(*leafEntry).cert = cert
		c.lru.MoveToFront(el)
		return
	}
	if c.byHost == nil {
		c.byHost = make(map[string]*list.Element)
	}
	c.byHost[host] = c.lru.PushFront(&leafEntry{host: host, cert: cert})
	for c.lru.Len() > c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.byHost, old.Value.(*leafEntry).host)
	}
}

// mint creates a leaf certificate for the normalised host.
func (ca *CA) mint(host string, now time.Time) (*tls.Certificate, error) {
	if ca.onMint != nil {
		ca.onMint(host)
	}
	if !now.Before(ca.cert.NotAfter) {
		return nil, fmt.Errorf("%w: expired at %s", ErrCAExpired, ca.cert.NotAfter.UTC().Format(time.RFC3339))
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("mitm: generate leaf key: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	notAfter := now.Add(leafLifetime)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		NotBefore:             now.Add(-backdate),
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		// RFC 5280 §4.2.1.3: ECDHE key exchange only needs signatures.
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	// Clients match the SAN only (RFC 6125 §6.4.4); the CN is for people
	// reading the certificate.
	if ip := net.ParseIP(host); ip != nil {
		tmpl.IPAddresses = []net.IP{ip}
	} else {
		tmpl.DNSNames = []string{host}
	}
	if len(host) <= maxCommonName {
		tmpl.Subject = pkix.Name{CommonName: host}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("mitm: create leaf certificate for %s: %w", host, err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("mitm: parse leaf certificate for %s: %w", host, err)
	}
	return &tls.Certificate{
		Certificate: [][]byte{der, ca.cert.Raw},
		PrivateKey:  key,
		Leaf:        leaf,
	}, nil
}

// TLSConfig returns a server TLS configuration that mints certificates by
// SNI, for serving registry hosts directly when DNS points them at wharf
// (transparent TLS). A handshake fails when the client sends no server name
// (ErrMissingSNI), or a name allow rejects (ErrHostNotAllowed); allow sees
// the normalised name (lower-case, no trailing dot) and nil allows every
// name. TLS 1.2 is the minimum version; only HTTP/1.1 is offered by ALPN,
// which the mirror handler serves fully and which keeps serving simple.
func (ca *CA) TLSConfig(allow func(host string) bool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			if hello.ServerName == "" {
				return nil, ErrMissingSNI
			}
			host, _, err := normalizeHost(hello.ServerName)
			if err != nil {
				return nil, err
			}
			if allow != nil && !allow(host) {
				return nil, fmt.Errorf("%w: %s", ErrHostNotAllowed, host)
			}
			return ca.Leaf(host)
		},
	}
}
