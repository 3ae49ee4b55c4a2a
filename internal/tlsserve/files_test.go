package tlsserve

import (
	"crypto/tls"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// filesEnv is a Files over two files in a temporary directory, on a fake
// clock, with its log records kept.
type filesEnv struct {
	t                 *testing.T
	ca                *testCA
	certFile, keyFile string
	clock             *fakeClock
	logs              *recordHandler
	f                 *Files
	pairs             map[int64][2][]byte // serial → cert PEM, key PEM
	mtime             time.Time
}

func newFilesEnv(t *testing.T) *filesEnv {
	t.Helper()
	dir := t.TempDir()
	e := &filesEnv{
		t:        t,
		ca:       newTestCA(t),
		certFile: filepath.Join(dir, "tls.crt"),
		keyFile:  filepath.Join(dir, "tls.key"),
		clock:    newFakeClock(),
		logs:     &recordHandler{},
		pairs:    map[int64][2][]byte{},
		mtime:    time.Now().Add(-time.Hour).Truncate(time.Second),
	}
	e.write(e.certFile, e.pair(1)[0])
	e.write(e.keyFile, e.pair(1)[1])
	f, err := newFiles(e.certFile, e.keyFile, slog.New(e.logs), e.clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	e.f = f
	return e
}

func (e *filesEnv) pair(serial int64) [2][]byte {
	if p, ok := e.pairs[serial]; ok {
		return p
	}
	c, k := e.ca.leaf(e.t, serial, ecdsaKey)
	e.pairs[serial] = [2][]byte{c, k}
	return e.pairs[serial]
}

// write rewrites name in place (same inode) and gives it a modification
// time one second later than the last write, so that the change never hides
// inside the file system's timestamp granularity.
func (e *filesEnv) write(name string, data []byte) {
	e.t.Helper()
	if err := os.WriteFile(name, data, 0o600); err != nil {
		e.t.Fatal(err)
	}
	e.mtime = e.mtime.Add(time.Second)
	if err := os.Chtimes(name, e.mtime, e.mtime); err != nil {
		e.t.Fatal(err)
	}
}

// serial returns the serial of the certificate a handshake gets now.
func (e *filesEnv) serial() int64 {
	e.t.Helper()
	c, err := e.f.GetCertificate(&tls.ClientHelloInfo{ServerName: "localhost"})
	if err != nil {
		e.t.Fatalf("GetCertificate: %v", err)
	}
	return c.Leaf.SerialNumber.Int64()
}

// step is one action or check of a reload scenario.
type step func(e *filesEnv)

func writeCert(serial int64) step {
	return func(e *filesEnv) { e.write(e.certFile, e.pair(serial)[0]) }
}

func writeKey(serial int64) step {
	return func(e *filesEnv) { e.write(e.keyFile, e.pair(serial)[1]) }
}

func writeHalfCert(serial int64) step {
	return func(e *filesEnv) {
		c := e.pair(serial)[0]
		e.write(e.certFile, c[:len(c)/2])
	}
}

// renamePair replaces both files the way Kubernetes secret volumes and
// certbot do: a new file renamed over the old one (a new inode).
func renamePair(serial int64) step {
	return func(e *filesEnv) {
		for i, name := range []string{e.certFile, e.keyFile} {
			tmp := name + ".tmp"
			if err := os.WriteFile(tmp, e.pair(serial)[i], 0o600); err != nil {
				e.t.Fatal(err)
			}
			if err := os.Rename(tmp, name); err != nil {
				e.t.Fatal(err)
			}
		}
	}
}

func removeCert() step {
	return func(e *filesEnv) {
		if err := os.Remove(e.certFile); err != nil {
			e.t.Fatal(err)
		}
	}
}

func advance(d time.Duration) step {
	return func(e *filesEnv) { e.clock.Advance(d) }
}

// want checks the serial served now (which may reload) and how many reload
// errors and successful reloads were logged so far.
func want(serial int64, errorLogs, reloadLogs int) step {
	return func(e *filesEnv) {
		e.t.Helper()
		if got := e.serial(); got != serial {
			e.t.Errorf("serving serial %d, want %d", got, serial)
		}
		if got := e.logs.count(slog.LevelError); got != errorLogs {
			e.t.Errorf("%d error logs, want %d", got, errorLogs)
		}
		if got := e.logs.count(slog.LevelInfo); got != reloadLogs {
			e.t.Errorf("%d reload logs, want %d", got, reloadLogs)
		}
	}
}

func TestFilesReload(t *testing.T) {
	const iv = ReloadInterval
	tests := []struct {
		name  string
		steps []step
	}{
		{"unchanged files are not reloaded", []step{
			want(1, 0, 0), advance(iv), want(1, 0, 0), advance(10 * iv), want(1, 0, 0),
		}},
		{"in-place rewrite is served after the interval", []step{
			writeCert(2), writeKey(2),
			want(1, 0, 0), advance(iv - time.Nanosecond), want(1, 0, 0),
			advance(time.Nanosecond), want(2, 0, 1), advance(iv), want(2, 0, 1),
		}},
		{"renamed-over files are served after the interval", []step{
			renamePair(2), want(1, 0, 0), advance(iv), want(2, 0, 1),
		}},
		{"half-written certificate keeps the old pair and logs once", []step{
			writeKey(2), writeHalfCert(2), advance(iv), want(1, 1, 0),
			advance(iv), want(1, 1, 0), advance(iv), want(1, 1, 0),
			writeCert(2), advance(iv), want(2, 1, 1),
		}},
		{"certificate without its key yet keeps the old pair and logs once", []step{
			writeCert(2), advance(iv), want(1, 1, 0), advance(iv), want(1, 1, 0),
			writeKey(2), advance(iv), want(2, 1, 1),
		}},
		{"each new failure is logged once", []step{
			writeHalfCert(2), advance(iv), want(1, 1, 0),
			writeCert(2), advance(iv), want(1, 2, 0), // whole now, but the key is still 1's
			writeKey(2), advance(iv), want(2, 2, 1),
		}},
		{"missing file keeps the old pair and logs once", []step{
			removeCert(), advance(iv), want(1, 1, 0), advance(iv), want(1, 1, 0),
			renamePair(3), advance(iv), want(3, 1, 1),
		}},
		{"change is not looked for before the interval", []step{
			advance(iv / 2), writeCert(2), writeKey(2), want(1, 0, 0),
			advance(iv / 2), want(2, 0, 1),
		}},
		{"reload after reload", []step{
			renamePair(2), advance(iv), want(2, 0, 1),
			renamePair(3), advance(iv), want(3, 0, 2),
			writeCert(4), writeKey(4), advance(iv), want(4, 0, 3),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newFilesEnv(t)
			for _, s := range tt.steps {
				s(e)
			}
		})
	}
}

func TestNewFilesErrors(t *testing.T) {
	ca := newTestCA(t)
	cert1, key1 := ca.leaf(t, 1, ecdsaKey)
	_, key2 := ca.leaf(t, 2, ecdsaKey)
	certRSA, keyRSA := ca.leaf(t, 3, rsaKey)
	encrypted := []byte("-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n")

	const (
		certFile = "tls.crt"
		keyFile  = "tls.key"
		missing  = "missing"
	)
	tests := []struct {
		name      string
		cert, key []byte // nil: file absent
		wantPath  string
		wantErr   error
	}{
		{"ecdsa pair loads", cert1, key1, "", nil},
		{"rsa pkcs1 pair loads", certRSA, keyRSA, "", nil},
		{"key and chain in one file load", append(append([]byte{}, key1...), cert1...), key1, "", nil},
		{"mismatched key names the key file", cert1, key2, keyFile, ErrKeyMismatch},
		{"missing certificate file", nil, key1, certFile, fs.ErrNotExist},
		{"missing key file", cert1, nil, keyFile, fs.ErrNotExist},
		{"certificate file with no PEM", []byte("not pem"), key1, certFile, ErrInvalidCertificate},
		{"certificate file with only a key", key1, key1, certFile, ErrInvalidCertificate},
		{"truncated certificate", cert1[:len(cert1)/2], key1, certFile, ErrInvalidCertificate},
		{"corrupt certificate DER", []byte("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n"), key1, certFile, ErrInvalidCertificate},
		{"key file with only a certificate", cert1, cert1, keyFile, ErrInvalidKey},
		{"encrypted key", cert1, encrypted, keyFile, ErrInvalidKey},
		{"empty key file", cert1, []byte{}, keyFile, ErrInvalidKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			cf, kf := filepath.Join(dir, certFile), filepath.Join(dir, keyFile)
			for name, data := range map[string][]byte{cf: tt.cert, kf: tt.key} {
				if data != nil {
					if err := os.WriteFile(name, data, 0o600); err != nil {
						t.Fatal(err)
					}
				}
			}
			f, err := NewFiles(cf, kf, nil)
			if tt.wantErr == nil {
				if err != nil {
					t.Fatalf("NewFiles: %v", err)
				}
				if _, err := f.GetCertificate(&tls.ClientHelloInfo{}); err != nil {
					t.Fatalf("GetCertificate: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("NewFiles error %v, want %v", err, tt.wantErr)
			}
			var pe *fs.PathError
			if !errors.As(err, &pe) || pe.Path != filepath.Join(dir, tt.wantPath) {
				t.Fatalf("NewFiles error %v does not name %s", err, tt.wantPath)
			}
		})
	}
}

// TestFilesHandshake serves Files through ServerConfig on a real loopback
// listener and sees a replaced certificate in the next handshake after the
// interval.
func TestFilesHandshake(t *testing.T) {
	e := newFilesEnv(t)
	addr := serveTLS(t, ServerConfig(e.f.GetCertificate))

	leaf, proto, err := handshake(t, addr, "localhost", e.ca.pool, "h2", "http/1.1")
	if err != nil {
		t.Fatal(err)
	}
	if leaf.SerialNumber.Int64() != 1 || proto != "h2" {
		t.Fatalf("got serial %d over %q, want 1 over h2", leaf.SerialNumber, proto)
	}

	renamePair(2)(e)
	e.clock.Advance(ReloadInterval)
	leaf, _, err = handshake(t, addr, "localhost", e.ca.pool)
	if err != nil {
		t.Fatal(err)
	}
	if leaf.SerialNumber.Int64() != 2 {
		t.Fatalf("after replacing the files got serial %d, want 2", leaf.SerialNumber)
	}
}

// FuzzParsePair checks that the pair parser never panics and never accepts
// a pair crypto/tls would refuse.
func FuzzParsePair(f *testing.F) {
	// ECDSA seeds only: RSA key generation under the fuzzer's coverage
	// instrumentation takes minutes per worker. TestNewFilesErrors covers
	// RSA.
	ca := newTestCA(f)
	cert, key := ca.leaf(f, 1, ecdsaKey)
	_, key2 := ca.leaf(f, 2, ecdsaKey)
	f.Add(cert, key)
	f.Add(cert, key2)
	f.Add(cert[:len(cert)/2], key)
	f.Add([]byte("-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n"), []byte("-----BEGIN EC PRIVATE KEY-----\n-----END EC PRIVATE KEY-----\n"))
	f.Fuzz(func(t *testing.T, certPEM, keyPEM []byte) {
		c, err := parsePair(certPEM, keyPEM)
		if err != nil {
			if !errors.Is(err, ErrInvalidCertificate) && !errors.Is(err, ErrInvalidKey) && !errors.Is(err, ErrKeyMismatch) {
				t.Fatalf("error %v wraps none of the sentinels", err)
			}
			return
		}
		if c.Leaf == nil || len(c.Certificate) == 0 {
			t.Fatal("accepted pair without a leaf")
		}
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			t.Fatalf("parsePair accepted a pair tls.X509KeyPair refuses: %v", err)
		}
	})
}

// TestFilesConcurrent runs handshakes from many goroutines while the files
// are replaced and time moves, for the race detector: every handshake gets
// a whole pair, old or new.
func TestFilesConcurrent(t *testing.T) {
	e := newFilesEnv(t)
	e.pair(2)
	const workers, calls = 8, 200
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range calls {
				c, err := e.f.GetCertificate(&tls.ClientHelloInfo{})
				if err != nil {
					errs <- err
					return
				}
				if s := c.Leaf.SerialNumber.Int64(); s != 1 && s != 2 {
					errs <- fmt.Errorf("served serial %d", s)
					return
				}
				e.clock.Advance(ReloadInterval / 10)
			}
		}()
	}
	renamePair(2)(e)
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	e.clock.Advance(ReloadInterval)
	if got := e.serial(); got != 2 {
		t.Errorf("after the writes settled, serving serial %d, want 2", got)
	}
}
