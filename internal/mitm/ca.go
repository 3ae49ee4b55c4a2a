package mitm

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"runtime"
	"time"
)

const (
	// CertFile and KeyFile are the names of the CA files inside the
	// directory given to LoadOrCreateCA.
	CertFile = "ca.crt"
	KeyFile  = "ca.key"

	// caLifetime is how long a created CA certificate is valid.
	caLifetime = 10 * 365 * 24 * time.Hour
	// backdate moves NotBefore into the past so that clients whose clocks
	// are a little behind accept fresh certificates.
	backdate = time.Hour
	// maxCAFileSize bounds how much of a CA file is read; real ones are a
	// few hundred bytes, a chain a few kilobytes.
	maxCAFileSize = 1 << 20
)

// CA is wharf's certificate authority: a private key and a self-signed CA
// certificate that clients are told to trust (GET /ca.crt, `wharf ca`), from
// which Leaf mints per-host server certificates.
//
// A created CA has an ECDSA P-256 key and a certificate with CN "wharf mirror
// CA <8 hex digits>", valid for 10 years, MaxPathLen 0 (it signs leaves
// only) and KeyUsage CertSign|CRLSign. It has no name constraints: the hosts
// it signs for come from configuration and may be anything. A loaded CA may
// use any key type crypto/x509 can sign with.
//
// A CA is safe for concurrent use.
type CA struct {
	cert    *x509.Certificate
	key     crypto.Signer
	certPEM []byte
	leaves  leafCache

	// now is the clock for leaf validity; tests replace it.
	now func() time.Time
	// onMint, when set, is called before each leaf is minted; onWait when a
	// caller joins a mint already in flight. Tests count and order with them.
	onMint func(host string)
	onWait func(host string)
}

// LoadOrCreateCA loads CertFile and KeyFile (PEM) from dir, or creates both
// on first use. The directory is created 0700 if missing; the key is written
// 0600 and the certificate 0644, each through a temporary file in dir that is
// synced and renamed, so a crash never leaves a half-written file.
//
// Loading fails, naming the file, when the key file is accessible by group or
// others (like ssh; ErrKeyPermissions), when a file is unusable
// (ErrCorruptCA), when only one of the two exists (ErrIncompleteCA), or when
// the certificate has expired (ErrCAExpired). Existing files are never
// replaced: the operator decides whether to repair them or delete both.
func LoadOrCreateCA(dir string) (*CA, error) {
	if dir == "" {
		return nil, errors.New("mitm: no CA directory given")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("mitm: create CA directory: %w", err)
	}
	certPath := filepath.Join(dir, CertFile)
	keyPath := filepath.Join(dir, KeyFile)
	haveCert, err := exists(certPath)
	if err != nil {
		return nil, err
	}
	haveKey, err := exists(keyPath)
	if err != nil {
		return nil, err
	}
	switch {
	case haveCert && haveKey:
		return loadCA(certPath, keyPath, time.Now())
	case !haveCert && !haveKey:
		return createCA(dir, time.Now())
	case haveCert:
		return nil, fmt.Errorf("%w: %s exists but %s does not; restore the key or remove both to create a new CA",
			ErrIncompleteCA, certPath, keyPath)
	default:
		return nil, fmt.Errorf("%w: %s exists but %s does not; restore the certificate or remove both to create a new CA",
			ErrIncompleteCA, keyPath, certPath)
	}
}

// newCA wraps a certificate and its key.
func newCA(cert *x509.Certificate, key crypto.Signer) *CA {
	return &CA{
		cert:    cert,
		key:     key,
		certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw}),
		leaves:  leafCache{max: maxLeaves},
		now:     time.Now,
	}
}

// CertPEM returns the CA certificate, PEM-encoded, for clients to trust.
// The caller may modify the returned slice.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// Certificate returns the parsed CA certificate. It is shared; callers must
// not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("mitm: %w", err)
	}
}

// createCA generates a new CA and writes it to dir, the key first. A crash
// between the two renames leaves a key without certificate, which
// LoadOrCreateCA reports instead of silently creating a second CA.
func createCA(dir string, now time.Time) (*CA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("mitm: generate CA key: %w", err)
	}
	id := make([]byte, 4)
	if _, err := rand.Read(id); err != nil {
		return nil, fmt.Errorf("mitm: generate CA id: %w", err)
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		// The random id tells apart the CAs of different wharf instances
		// in a trust store listing.
		Subject: pkix.Name{
			CommonName:   "wharf mirror CA " + hex.EncodeToString(id),
			Organization: []string{"wharf"},
		},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		// RFC 5280 §4.2.1.9: this CA signs end-entity certificates only.
		MaxPathLen:     0,
		MaxPathLenZero: true,
		KeyUsage:       x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("mitm: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("mitm: parse created CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("mitm: encode CA key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeFileAtomic(dir, KeyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	ca := newCA(cert, key)
	if err := writeFileAtomic(dir, CertFile, ca.certPEM, 0o644); err != nil {
		// The key was created a moment ago and never used; removing it
		// lets the next start create a whole CA instead of reporting an
		// incomplete one.
		os.Remove(filepath.Join(dir, KeyFile))
		return nil, err
	}
	if err := syncDir(dir); err != nil {
		return nil, err
	}
	return ca, nil
}

// loadCA reads and checks an existing CA.
func loadCA(certPath, keyPath string, now time.Time) (*CA, error) {
	if err := checkKeyPermissions(keyPath); err != nil {
		return nil, err
	}
	certData, err := readBounded(certPath)
	if err != nil {
		return nil, err
	}
	cert, err := parseCACert(certData)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorruptCA, certPath, err)
	}
	if now.After(cert.NotAfter) {
		return nil, fmt.Errorf("%w: %s expired at %s; remove %s and %s to create a new CA",
			ErrCAExpired, certPath, cert.NotAfter.UTC().Format(time.RFC3339), certPath, keyPath)
	}
	keyData, err := readBounded(keyPath)
	if err != nil {
		return nil, err
	}
	key, err := parseKey(keyData)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrCorruptCA, keyPath, err)
	}
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return nil, fmt.Errorf("%w: %s does not belong to the certificate in %s", ErrCorruptCA, keyPath, certPath)
	}
	return newCA(cert, key), nil
}

// checkKeyPermissions refuses a key file that group or others may access,
// as ssh does for private keys: such a key may already have leaked, and
// wharf should not keep using it silently. Windows has no such mode bits.
func checkKeyPermissions(path string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("mitm: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("%w: %s has mode %04o; it must not be accessible by group or others (chmod 600 %s)",
			ErrKeyPermissions, path, perm, path)
	}
	return nil
}

func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("mitm: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxCAFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("mitm: read %s: %w", path, err)
	}
	if len(data) > maxCAFileSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrCorruptCA, path, maxCAFileSize)
	}
	return data, nil
}

// parseCACert parses the first PEM certificate in data and checks that it
// may sign leaves (RFC 5280 §4.2.1.9 basic constraints, §4.2.1.3 key usage).
func parseCACert(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	if block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("PEM block %q, want CERTIFICATE", block.Type)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, err
	}
	if !cert.BasicConstraintsValid || !cert.IsCA {
		return nil, errors.New("not a CA certificate (basic constraints)")
	}
	if cert.KeyUsage != 0 && cert.KeyUsage&x509.KeyUsageCertSign == 0 {
		return nil, errors.New("key usage does not allow signing certificates")
	}
	return cert, nil
}

// parseKey parses the first PEM private key in data: PKCS #8 (what wharf
// writes), SEC 1 EC or PKCS #1 RSA (what openssl writes by default).
func parseKey(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var (
		key any
		err error
	)
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("PEM block %q, want PRIVATE KEY", block.Type)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("unsupported key type %T", key)
	}
	return signer, nil
}

// writeFileAtomic writes data to dir/name through a synced temporary file in
// the same directory and a rename, so name holds either nothing or all of data.
func writeFileAtomic(dir, name string, data []byte, perm fs.FileMode) (err error) {
	f, err := os.CreateTemp(dir, "."+name+".tmp-*")
	if err != nil {
		return fmt.Errorf("mitm: %w", err)
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			f.Close()
			os.Remove(tmp)
		}
	}()
	// CreateTemp creates 0600; Chmod is not subject to the umask, so the
	// certificate ends up exactly 0644.
	if err := f.Chmod(perm); err != nil {
		return fmt.Errorf("mitm: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		return fmt.Errorf("mitm: write %s: %w", tmp, err)
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("mitm: sync %s: %w", tmp, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("mitm: close %s: %w", tmp, err)
	}
	if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
		return fmt.Errorf("mitm: %w", err)
	}
	return nil
}

// syncDir makes the renames in dir durable.
func syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil
	}
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("mitm: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("mitm: sync %s: %w", dir, err)
	}
	return nil
}

// randomSerial returns a positive 128-bit serial number; RFC 5280 §4.1.2.2
// allows up to 20 octets and CA/B Forum rules want at least 64 random bits.
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("mitm: generate serial: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}
