package mitm

import (
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// testCA creates a CA in a fresh temporary directory.
func testCA(t *testing.T) *CA {
	t.Helper()
	ca, err := LoadOrCreateCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func poolOf(ca *CA) *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.Certificate())
	return p
}

func mode(t *testing.T, path string) fs.FileMode {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Mode().Perm()
}

func TestLoadOrCreateCARoundTrip(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "nested", "ca")
	created, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	perms := map[string]fs.FileMode{
		dir:                          mode(t, dir),
		filepath.Join(dir, KeyFile):  mode(t, filepath.Join(dir, KeyFile)),
		filepath.Join(dir, CertFile): mode(t, filepath.Join(dir, CertFile)),
	}
	wantPerms := map[string]fs.FileMode{
		dir:                          0o700,
		filepath.Join(dir, KeyFile):  0o600,
		filepath.Join(dir, CertFile): 0o644,
	}
	if diff := cmp.Diff(wantPerms, perms); diff != "" {
		t.Errorf("permissions (-want +got):\n%s", diff)
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name())
	}
	if diff := cmp.Diff([]string{CertFile, KeyFile}, names); diff != "" {
		t.Errorf("directory holds temporary files (-want +got):\n%s", diff)
	}

	cert := created.Certificate()
	if !regexp.MustCompile(`^wharf mirror CA [0-9a-f]{8}$`).MatchString(cert.Subject.CommonName) {
		t.Errorf("CN = %q", cert.Subject.CommonName)
	}
	type props struct {
		IsCA, BasicConstraintsValid, MaxPathLenZero bool
		MaxPathLen                                  int
		KeyUsage                                    x509.KeyUsage
		Lifetime                                    time.Duration
		NameConstraints                             int
		Curve                                       string
	}
	pub, _ := cert.PublicKey.(*ecdsa.PublicKey)
	curve := ""
	if pub != nil {
		curve = pub.Curve.Params().Name
	}
	got := props{
		IsCA: cert.IsCA, BasicConstraintsValid: cert.BasicConstraintsValid, MaxPathLenZero: cert.MaxPathLenZero,
		MaxPathLen: cert.MaxPathLen, KeyUsage: cert.KeyUsage,
		Lifetime:        cert.NotAfter.Sub(cert.NotBefore),
		NameConstraints: len(cert.PermittedDNSDomains) + len(cert.ExcludedDNSDomains) + len(cert.PermittedIPRanges),
		Curve:           curve,
	}
	want := props{
		IsCA: true, BasicConstraintsValid: true, MaxPathLenZero: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		Lifetime: caLifetime + backdate,
		Curve:    "P-256",
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("CA certificate (-want +got):\n%s", diff)
	}
	if err := cert.CheckSignatureFrom(cert); err != nil {
		t.Errorf("not self-signed: %v", err)
	}

	loaded, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(created.CertPEM(), loaded.CertPEM()); diff != "" {
		t.Errorf("loaded certificate differs (-created +loaded):\n%s", diff)
	}
	if !loaded.key.Public().(*ecdsa.PublicKey).Equal(created.key.Public()) {
		t.Error("loaded key differs from created key")
	}
	fileCert, err := os.ReadFile(filepath.Join(dir, CertFile))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(fileCert, loaded.CertPEM()); diff != "" {
		t.Errorf("CertPEM differs from %s (-file +CertPEM):\n%s", CertFile, diff)
	}

	// CertPEM hands out a copy.
	b := loaded.CertPEM()
	b[0] = 'X'
	if loaded.CertPEM()[0] == 'X' {
		t.Error("CertPEM returned the CA's own buffer")
	}
}

// TestLoadSEC1Key loads a key in the "EC PRIVATE KEY" form openssl writes.
func TestLoadSEC1Key(t *testing.T) {
	src := testCA(t)
	der, err := x509.MarshalECPrivateKey(src.key.(*ecdsa.PrivateKey))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, CertFile), src.CertPEM(), 0o644)
	writeFile(t, filepath.Join(dir, KeyFile), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), 0o400)
	ca, err := LoadOrCreateCA(dir)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ca.Leaf("quay.io"); err != nil {
		t.Fatal(err)
	}
}

func writeFile(t *testing.T, path string, data []byte, perm fs.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, data, perm); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, perm); err != nil {
		t.Fatal(err)
	}
}

func TestLoadOrCreateCAErrors(t *testing.T) {
	good := testCA(t)
	other := testCA(t)
	goodKey := keyPEM(t, good)
	otherKey := keyPEM(t, other)
	leaf, err := good.Leaf("quay.io")
	if err != nil {
		t.Fatal(err)
	}
	leafPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: leaf.Certificate[0]})

	expiredDir := t.TempDir()
	if _, err := createCA(expiredDir, time.Now().Add(-caLifetime-time.Hour)); err != nil {
		t.Fatal(err)
	}
	expiredCert, err := os.ReadFile(filepath.Join(expiredDir, CertFile))
	if err != nil {
		t.Fatal(err)
	}
	expiredKey, err := os.ReadFile(filepath.Join(expiredDir, KeyFile))
	if err != nil {
		t.Fatal(err)
	}

	type file struct {
		data []byte
		perm fs.FileMode
	}
	tests := []struct {
		name      string
		cert, key *file // nil: absent
		want      error
		names     string // the file the error must name
	}{
		{"key readable by others", &file{good.CertPEM(), 0o644}, &file{goodKey, 0o644}, ErrKeyPermissions, KeyFile},
		{"key readable by group", &file{good.CertPEM(), 0o644}, &file{goodKey, 0o640}, ErrKeyPermissions, KeyFile},
		{"key writable by others", &file{good.CertPEM(), 0o644}, &file{goodKey, 0o602}, ErrKeyPermissions, KeyFile},
		{"cert not PEM", &file{[]byte("garbage"), 0o644}, &file{goodKey, 0o600}, ErrCorruptCA, CertFile},
		{"cert truncated", &file{good.CertPEM()[:200], 0o644}, &file{goodKey, 0o600}, ErrCorruptCA, CertFile},
		{"cert PEM holds a key", &file{goodKey, 0o644}, &file{goodKey, 0o600}, ErrCorruptCA, CertFile},
		{"cert is not a CA", &file{leafPEM, 0o644}, &file{goodKey, 0o600}, ErrCorruptCA, CertFile},
		{"key not PEM", &file{good.CertPEM(), 0o644}, &file{[]byte("garbage"), 0o600}, ErrCorruptCA, KeyFile},
		{"key PEM holds a certificate", &file{good.CertPEM(), 0o644}, &file{good.CertPEM(), 0o600}, ErrCorruptCA, KeyFile},
		{"key of another CA", &file{good.CertPEM(), 0o644}, &file{otherKey, 0o600}, ErrCorruptCA, KeyFile},
		{"only cert", &file{good.CertPEM(), 0o644}, nil, ErrIncompleteCA, KeyFile},
		{"only key", nil, &file{goodKey, 0o600}, ErrIncompleteCA, CertFile},
		{"expired", &file{expiredCert, 0o644}, &file{expiredKey, 0o600}, ErrCAExpired, CertFile},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			if tt.cert != nil {
				writeFile(t, filepath.Join(dir, CertFile), tt.cert.data, tt.cert.perm)
			}
			if tt.key != nil {
				writeFile(t, filepath.Join(dir, KeyFile), tt.key.data, tt.key.perm)
			}
			before := snapshot(t, dir)
			ca, err := LoadOrCreateCA(dir)
			if !errors.Is(err, tt.want) {
				t.Fatalf("LoadOrCreateCA = %v, %v; want error %v", ca, err, tt.want)
			}
			if !strings.Contains(err.Error(), filepath.Join(dir, tt.names)) {
				t.Errorf("error %q does not name %s", err, tt.names)
			}
			if diff := cmp.Diff(before, snapshot(t, dir)); diff != "" {
				t.Errorf("CA files changed (-before +after):\n%s", diff)
			}
		})
	}
}

func keyPEM(t *testing.T, ca *CA) []byte {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(ca.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
}

// snapshot returns the names, modes and contents of the files in dir.
func snapshot(t *testing.T, dir string) map[string]string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	m := make(map[string]string)
	for _, e := range entries {
		data, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		m[e.Name()] = mode(t, filepath.Join(dir, e.Name())).String() + " " + string(data)
	}
	return m
}

// clock is a settable time source for leaf validity.
type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

// withClock returns a CA sharing base's key and certificate with an empty
// leaf cache, a clock at now, and a mint counter.
func withClock(base *CA, now time.Time) (*CA, *clock, *int) {
	ca := newCA(base.cert, base.key)
	c := &clock{t: now}
	ca.now = c.now
	mints := new(int)
	ca.onMint = func(string) { *mints++ }
	return ca, c, mints
}

func TestLeafVerifies(t *testing.T) {
	base := testCA(t)
	now := time.Now().Truncate(time.Second)
	long := strings.Repeat("a", 63) + "." + strings.Repeat("b", 63) + ".example"
	tests := []struct {
		host     string
		verifyAs string
		dns      []string
		ips      []string
		cn       string
	}{
		{host: "quay.io", verifyAs: "quay.io", dns: []string{"quay.io"}, cn: "quay.io"},
		{host: "Registry-1.Docker.IO.", verifyAs: "registry-1.docker.io", dns: []string{"registry-1.docker.io"}, cn: "registry-1.docker.io"},
		{host: "localhost", verifyAs: "localhost", dns: []string{"localhost"}, cn: "localhost"},
		{host: "127.0.0.1", verifyAs: "127.0.0.1", ips: []string{"127.0.0.1"}, cn: "127.0.0.1"},
		{host: "::1", verifyAs: "::1", ips: []string{"::1"}, cn: "::1"},
		{host: "[2001:DB8::1]", verifyAs: "2001:db8::1", ips: []string{"2001:db8::1"}, cn: "2001:db8::1"},
		{host: long, verifyAs: long, dns: []string{long}, cn: ""},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			ca, _, _ := withClock(base, now)
			cert, err := ca.Leaf(tt.host)
			if err != nil {
				t.Fatal(err)
			}
			leaf := cert.Leaf
			_, err = leaf.Verify(x509.VerifyOptions{
				DNSName:     tt.verifyAs,
				Roots:       poolOf(ca),
				CurrentTime: now,
				KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
			})
			if err != nil {
				t.Fatalf("verify: %v", err)
			}
			var ips []string
			for _, ip := range leaf.IPAddresses {
				ips = append(ips, ip.String())
			}
			type props struct {
				DNS, IPs             []string
				CN                   string
				NotBefore, NotAfter  time.Time
				ExtKeyUsage          []x509.ExtKeyUsage
				IsCA                 bool
				Curve                string
				ChainLen             int
				ChainEndsWithCA      bool
				PrivateKeyMatchesPub bool
			}
			key, _ := cert.PrivateKey.(*ecdsa.PrivateKey)
			got := props{
				DNS: leaf.DNSNames, IPs: ips, CN: leaf.Subject.CommonName,
				NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter,
				ExtKeyUsage: leaf.ExtKeyUsage, IsCA: leaf.IsCA,
				Curve:                leaf.PublicKey.(*ecdsa.PublicKey).Curve.Params().Name,
				ChainLen:             len(cert.Certificate),
				ChainEndsWithCA:      slices.Equal(cert.Certificate[len(cert.Certificate)-1], ca.cert.Raw),
				PrivateKeyMatchesPub: key != nil && key.PublicKey.Equal(leaf.PublicKey),
			}
			want := props{
				DNS: tt.dns, IPs: tt.ips, CN: tt.cn,
				NotBefore: now.Add(-time.Hour), NotAfter: now.Add(30 * 24 * time.Hour),
				ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
				Curve:       "P-256", ChainLen: 2, ChainEndsWithCA: true, PrivateKeyMatchesPub: true,
			}
			if diff := cmp.Diff(want, got); diff != "" {
				t.Errorf("leaf (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLeafInvalidHost(t *testing.T) {
	ca := testCA(t)
	for _, host := range []string{
		"", ".", "quay..io", "*.quay.io", "quay.io:443", "-quay.io", "quay-.io", "qu ay.io",
		"fe80::1%eth0", "[fe80::1%25eth0]", "[127.0.0.1]", "127.1", "0x7f000001", "quay.123",
		"ü.example", strings.Repeat("a", 64) + ".io", strings.Repeat("a.", 127) + "io",
	} {
		t.Run(host, func(t *testing.T) {
			if _, err := ca.Leaf(host); !errors.Is(err, ErrInvalidHost) {
				t.Errorf("Leaf(%q) error = %v, want ErrInvalidHost", host, err)
			}
		})
	}
}

// TestLeafSingleFlight holds the first mint until every other caller has
// joined it, then checks that all of them got the one certificate.
func TestLeafSingleFlight(t *testing.T) {
	const callers = 16
	ca := testCA(t)
	mints := make(chan string, callers)
	started := make(chan struct{})
	release := make(chan struct{})
	joined := make(chan struct{}, callers)
	var n atomic.Int32
	ca.onMint = func(host string) {
		mints <- host
		if n.Add(1) == 1 {
			close(started)
			<-release
		}
	}
	ca.onWait = func(string) { joined <- struct{}{} }

	results := make([]*tls.Certificate, callers)
	errs := make([]error, callers)
	done := make(chan struct{})
	go func() {
		defer close(done)
		results[0], errs[0] = ca.Leaf("quay.io")
	}()
	<-started
	followers := make(chan struct{}, callers)
	for i := 1; i < callers; i++ {
		go func() {
			defer func() { followers <- struct{}{} }()
			results[i], errs[i] = ca.Leaf("Quay.io.")
		}()
	}
	deadline := time.After(10 * time.Second)
	for i := 1; i < callers; i++ {
		select {
		case <-joined:
		case <-deadline:
			close(release)
			t.Fatalf("only %d of %d callers joined the mint", i-1, callers-1)
		}
	}
	close(release)
	<-done
	for i := 1; i < callers; i++ {
		<-followers
	}
	if n := len(mints); n != 1 {
		t.Fatalf("%d mints, want 1", n)
	}
	for i := range callers {
		if errs[i] != nil || results[i] != results[0] {
			t.Errorf("caller %d got %p, %v; want the shared %p", i, results[i], errs[i], results[0])
		}
	}

	// Later calls hit the cache; another host mints again.
	if c, err := ca.Leaf("quay.io"); err != nil || c != results[0] {
		t.Errorf("cached Leaf = %p, %v; want %p", c, err, results[0])
	}
	if _, err := ca.Leaf("ghcr.io"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"quay.io", "ghcr.io"}, drain(mints)); diff != "" {
		t.Errorf("mints (-want +got):\n%s", diff)
	}
}

func drain(ch chan string) []string {
	var out []string
	for {
		select {
		case s := <-ch:
			out = append(out, s)
		default:
			return out
		}
	}
}

func TestLeafLRU(t *testing.T) {
	ca := testCA(t)
	ca.leaves.max = 2
	var mints []string
	ca.onMint = func(host string) { mints = append(mints, host) }
	for _, host := range []string{"a.io", "b.io", "a.io", "c.io", "a.io", "b.io", "c.io"} {
		if _, err := ca.Leaf(host); err != nil {
			t.Fatal(err)
		}
	}
	// a, b minted; a hit (a most recent); c evicts b; a hit; b evicts c;
	// c evicts a.
	if diff := cmp.Diff([]string{"a.io", "b.io", "c.io", "b.io", "c.io"}, mints); diff != "" {
		t.Errorf("mints (-want +got):\n%s", diff)
	}
	if n := ca.leaves.lru.Len(); n != 2 {
		t.Errorf("cache holds %d leaves, want 2", n)
	}
}

func TestLeafRenewal(t *testing.T) {
	base := testCA(t)
	t0 := time.Now().Truncate(time.Second)
	tests := []struct {
		name      string
		advance   time.Duration
		wantMints int
	}{
		{"fresh", time.Hour, 1},
		{"exactly 24h left", 29 * 24 * time.Hour, 1},
		{"less than 24h left", 29*24*time.Hour + time.Minute, 2},
		{"expired", 31 * 24 * time.Hour, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ca, clk, mints := withClock(base, t0)
			first, err := ca.Leaf("quay.io")
			if err != nil {
				t.Fatal(err)
			}
			clk.t = t0.Add(tt.advance)
			second, err := ca.Leaf("quay.io")
			if err != nil {
				t.Fatal(err)
			}
			if *mints != tt.wantMints {
				t.Errorf("%d mints, want %d", *mints, tt.wantMints)
			}
			if tt.wantMints == 2 {
				if want := clk.t.Add(leafLifetime); !second.Leaf.NotAfter.Equal(want) {
					t.Errorf("renewed leaf NotAfter = %v, want %v", second.Leaf.NotAfter, want)
				}
				// The renewed leaf is cached in place of the old one.
				if third, _ := ca.Leaf("quay.io"); third != second || *mints != 2 {
					t.Errorf("renewed leaf not cached")
				}
			} else if second != first {
				t.Error("fresh leaf was replaced")
			}
		})
	}
}

// TestLeafCappedByCA checks that a leaf never outlives its CA, is not
// re-minted while it cannot get any longer, and that an expired CA mints
// nothing.
func TestLeafCappedByCA(t *testing.T) {
	t0 := time.Now().Truncate(time.Second)
	// A CA created so that it expires ten days after t0.
	base, err := createCA(t.TempDir(), t0.Add(10*24*time.Hour-caLifetime))
	if err != nil {
		t.Fatal(err)
	}
	ca, clk, mints := withClock(base, t0)
	leaf, err := ca.Leaf("quay.io")
	if err != nil {
		t.Fatal(err)
	}
	if !leaf.Leaf.NotAfter.Equal(base.cert.NotAfter) {
		t.Errorf("leaf NotAfter = %v, want the CA's %v", leaf.Leaf.NotAfter, base.cert.NotAfter)
	}
	clk.t = base.cert.NotAfter.Add(-time.Hour)
	if again, err := ca.Leaf("quay.io"); err != nil || again != leaf || *mints != 1 {
		t.Errorf("capped leaf re-minted: %p, %v, %d mints", again, err, *mints)
	}
	clk.t = base.cert.NotAfter.Add(time.Second)
	if _, err := ca.Leaf("quay.io"); !errors.Is(err, ErrCAExpired) {
		t.Errorf("Leaf after CA expiry: %v, want ErrCAExpired", err)
	}
}

func TestTLSConfig(t *testing.T) {
	ca := testCA(t)
	allow := func(host string) bool { return host != "evil.io" }
	cfg := ca.TLSConfig(allow)
	if cfg.MinVersion != tls.VersionTLS12 {
		t.Errorf("MinVersion = %x", cfg.MinVersion)
	}
	if diff := cmp.Diff([]string{"http/1.1"}, cfg.NextProtos); diff != "" {
		t.Errorf("NextProtos (-want +got):\n%s", diff)
	}
	tests := []struct {
		sni     string
		allowed func(string) bool
		wantDNS string
		wantErr error
	}{
		{sni: "quay.io", allowed: allow, wantDNS: "quay.io"},
		{sni: "QUAY.IO.", allowed: allow, wantDNS: "quay.io"},
		{sni: "evil.io", allowed: allow, wantErr: ErrHostNotAllowed},
		{sni: "Evil.IO", allowed: allow, wantErr: ErrHostNotAllowed},
		{sni: "evil.io", allowed: nil, wantDNS: "evil.io"},
		{sni: "", allowed: nil, wantErr: ErrMissingSNI},
		{sni: "bad name", allowed: nil, wantErr: ErrInvalidHost},
	}
	for _, tt := range tests {
		t.Run(tt.sni, func(t *testing.T) {
			cert, err := ca.TLSConfig(tt.allowed).GetCertificate(&tls.ClientHelloInfo{ServerName: tt.sni})
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("error = %v, want %v", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff([]string{tt.wantDNS}, cert.Leaf.DNSNames); diff != "" {
				t.Errorf("DNSNames (-want +got):\n%s", diff)
			}
		})
	}
}

// TestTLSConfigHandshake runs a real handshake over an in-memory pipe.
func TestTLSConfigHandshake(t *testing.T) {
	ca := testCA(t)
	c1, c2 := net.Pipe()
	defer c1.Close()
	defer c2.Close()
	srvErr := make(chan error, 1)
	go func() {
		srvErr <- tls.Server(c1, ca.TLSConfig(nil)).Handshake()
	}()
	client := tls.Client(c2, &tls.Config{ServerName: "ghcr.io", RootCAs: poolOf(ca), NextProtos: []string{"http/1.1"}})
	if err := client.Handshake(); err != nil {
		t.Fatal(err)
	}
	if err := <-srvErr; err != nil {
		t.Fatal(err)
	}
	if got := client.ConnectionState().NegotiatedProtocol; got != "http/1.1" {
		t.Errorf("ALPN = %q", got)
	}
}
