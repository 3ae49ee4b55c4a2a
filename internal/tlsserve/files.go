package tlsserve

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// ReloadInterval is how often, at most, Files looks at its files for a
// change. A renewed certificate is therefore served within ReloadInterval of
// being written (plus the time until the next handshake).
const ReloadInterval = 10 * time.Second

// Files serves a certificate chain and private key from two PEM files and
// picks up replacements of either file without a restart.
//
// Changes are found on the handshake path, with no goroutine: at most once
// per ReloadInterval, the handshake that comes due stats both files, and if
// either file's identity (device and inode), size or modification time
// differs from the pair being served, it reads and checks the pair again.
// Both replacing a file by rename (as Kubernetes secret volumes and certbot
// do) and rewriting it in place are seen. The stat is taken before the read,
// so a write racing with the read is seen again at the next check.
//
// A reload that fails — a half-written file, a key that does not match the
// new certificate, a file missing for a moment — keeps serving the previous
// pair and is logged once; the same files are not tried again until they
// change again. Writing the certificate and then the key therefore logs one
// mismatch in between at worst, and then serves the new pair.
//
// The zero value is not usable; call NewFiles. Files is safe for concurrent
// use and needs no Close.
type Files struct {
	certFile, keyFile string
	log               *slog.Logger

	now func() time.Time // time.Now outside tests

	cert atomic.Pointer[tls.Certificate]

	mu         sync.Mutex // guards the fields below; handshakes only TryLock it
	checked    time.Time  // when the files were last looked at
	loaded     filePair   // what the served certificate was read from
	failed     filePair   // what the last failed reload saw; logged already
	haveFailed bool
}

// filePair is what a stat of the certificate and key files saw. A nil entry
// means the stat failed.
type filePair [2]fs.FileInfo

func (p filePair) same(q filePair) bool {
	for i := range p {
		a, b := p[i], q[i]
		if a == nil || b == nil {
			if a != b {
				return false
			}
			continue
		}
		if !os.SameFile(a, b) || a.Size() != b.Size() || !a.ModTime().Equal(b.ModTime()) {
			return false
		}
	}
	return true
}

// NewFiles loads the certificate chain in certFile (leaf first, then
// intermediates) and the private key in keyFile (PKCS #8, PKCS #1 or SEC 1
// PEM, unencrypted) and returns a Files serving them. A load failure is an
// *fs.PathError naming the file at fault and wrapping fs.ErrNotExist (or the
// read error), ErrInvalidCertificate, ErrInvalidKey or ErrKeyMismatch.
//
// log receives reloads and failed reloads; nil discards them.
func NewFiles(certFile, keyFile string, log *slog.Logger) (*Files, error) {
	return newFiles(certFile, keyFile, log, time.Now)
}

// newFiles is NewFiles with the clock of a test.
func newFiles(certFile, keyFile string, log *slog.Logger, now func() time.Time) (*Files, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	f := &Files{
		certFile: certFile,
		keyFile:  keyFile,
		log:      log,
		now:      now,
	}
	seen := f.stat()
	cert, err := loadPair(certFile, keyFile)
	if err != nil {
		return nil, err
	}
	f.cert.Store(cert)
	f.loaded = seen
	f.checked = f.now()
	f.warnValidity(cert.Leaf)
	return f, nil
}

// GetCertificate returns the certificate pair currently served, first
// reloading it if ReloadInterval has passed and the files changed. It never
// fails after NewFiles succeeded; it is meant for tls.Config.GetCertificate.
func (f *Files) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	f.maybeReload()
	return f.cert.Load(), nil
}

func (f *Files) maybeReload() {
	now := f.now()
	// A handshake never waits for another one's stat or read (slow on a
	// network file system): if a check is under way, it serves the current
	// pair, and the check it would have made falls to a later handshake.
	if !f.mu.TryLock() {
		return
	}
	defer f.mu.Unlock()
	if now.Sub(f.checked) < ReloadInterval {
		return
	}
	f.checked = now

	seen := f.stat()
	if seen.same(f.loaded) || (f.haveFailed && seen.same(f.failed)) {
		return
	}
	cert, err := loadPair(f.certFile, f.keyFile)
	if err != nil {
		f.failed, f.haveFailed = seen, true
		f.log.Error("tlsserve: reloading certificate failed; serving the previous one",
			"cert", f.certFile, "key", f.keyFile, "err", err)
		return
	}
	f.cert.Store(cert)
	f.loaded, f.haveFailed = seen, false
	f.log.Info("tlsserve: certificate reloaded",
		"cert", f.certFile, "subject", cert.Leaf.Subject.String(),
		"serial", cert.Leaf.SerialNumber.Text(16), "not_after", cert.Leaf.NotAfter)
	f.warnValidity(cert.Leaf)
}

// stat looks at both files. A file that cannot be stat'ed leaves a nil
// entry; the load that follows reports why.
func (f *Files) stat() filePair {
	var p filePair
	for i, name := range []string{f.certFile, f.keyFile} {
		if fi, err := os.Stat(name); err == nil {
			p[i] = fi
		}
	}
	return p
}

// warnValidity logs a certificate that clients will reject for its dates.
// It is served all the same: refusing to start over an expired certificate
// would turn a renewal problem into an outage of plain-HTTP fallbacks too.
func (f *Files) warnValidity(leaf *x509.Certificate) {
	now := f.now()
	switch {
	case now.After(leaf.NotAfter):
		f.log.Warn("tlsserve: certificate has expired", "cert", f.certFile, "not_after", leaf.NotAfter)
	case now.Before(leaf.NotBefore):
		f.log.Warn("tlsserve: certificate is not valid yet", "cert", f.certFile, "not_before", leaf.NotBefore)
	}
}

// loadPair reads and checks a certificate chain and its private key. An
// error is an *fs.PathError naming the file at fault.
func loadPair(certFile, keyFile string) (*tls.Certificate, error) {
	certPEM, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err // *fs.PathError naming certFile
	}
	keyPEM, err := os.ReadFile(keyFile)
	if err != nil {
		return nil, err
	}
	cert, err := parsePair(certPEM, keyPEM)
	switch {
	case err == nil:
		return cert, nil
	case errors.Is(err, ErrInvalidCertificate):
		return nil, &fs.PathError{Op: "load certificate", Path: certFile, Err: err}
	case errors.Is(err, ErrKeyMismatch):
		return nil, &fs.PathError{Op: "load key", Path: keyFile, Err: fmt.Errorf("%w %s", err, certFile)}
	default:
		return nil, &fs.PathError{Op: "load key", Path: keyFile, Err: err}
	}
}

// parsePair is tls.X509KeyPair with errors that say which half is at fault
// (ErrInvalidCertificate, ErrInvalidKey, ErrKeyMismatch), and every
// certificate of the chain parsed rather than only the leaf.
func parsePair(certPEM, keyPEM []byte) (*tls.Certificate, error) {
	ders, leaf, err := parseChain(certPEM)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, err
	}
	if !publicKeyMatches(leaf.PublicKey, key.Public()) {
		return nil, ErrKeyMismatch
	}
	return &tls.Certificate{Certificate: ders, PrivateKey: key, Leaf: leaf}, nil
}

// parseChain returns the DER of every CERTIFICATE block in data, in order,
// and the parsed first one (the leaf, RFC 8446 §4.4.2). Blocks of other types
// are skipped, as tls.X509KeyPair does, so a file holding key and chain
// together still loads.
func parseChain(data []byte) ([][]byte, *x509.Certificate, error) {
	var ders [][]byte
	var leaf *x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: certificate %d: %v", ErrInvalidCertificate, len(ders)+1, err)
		}
		if leaf == nil {
			leaf = c
		}
		ders = append(ders, block.Bytes)
	}
	if leaf == nil {
		return nil, nil, fmt.Errorf("%w: no CERTIFICATE PEM block", ErrInvalidCertificate)
	}
	return ders, leaf, nil
}

// parseKey returns the first private key in data. Like crypto/tls it accepts
// PKCS #1 RSA, PKCS #8 and SEC 1 EC keys, and only the key types TLS can sign
// handshakes with.
func parseKey(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, fmt.Errorf("%w: no PRIVATE KEY PEM block", ErrInvalidKey)
		}
		switch {
		case block.Type == "ENCRYPTED PRIVATE KEY" || block.Headers["Proc-Type"] != "":
			return nil, fmt.Errorf("%w: encrypted keys are not supported", ErrInvalidKey)
		case block.Type == "PRIVATE KEY" || strings.HasSuffix(block.Type, " PRIVATE KEY"):
			return parseKeyDER(block.Bytes)
		}
	}
}

func parseKeyDER(der []byte) (crypto.Signer, error) {
	if k, err := x509.ParsePKCS1PrivateKey(der); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS8PrivateKey(der); err == nil {
		switch k := k.(type) {
		case *rsa.PrivateKey, *ecdsa.PrivateKey, ed25519.PrivateKey:
			return k.(crypto.Signer), nil
		default:
			return nil, fmt.Errorf("%w: unsupported key type %T", ErrInvalidKey, k)
		}
	}
	if k, err := x509.ParseECPrivateKey(der); err == nil {
		return k, nil
	}
	return nil, fmt.Errorf("%w: not a PKCS #1, PKCS #8 or SEC 1 private key", ErrInvalidKey)
}

func publicKeyMatches(certPub crypto.PublicKey, keyPub crypto.PublicKey) bool {
	pub, ok := certPub.(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(keyPub)
}
