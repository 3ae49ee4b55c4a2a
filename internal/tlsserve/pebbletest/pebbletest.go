// Package pebbletest runs pebble, Let's Encrypt's ACME test CA
// (github.com/letsencrypt/pebble), as a child process on loopback, so that
// tests can obtain real certificates over ACME without the internet.
//
// Invariants:
//   - Everything listens on 127.0.0.1 on ports picked at start; the
//     directory URL and roots are per instance, so parallel tests do not
//     share a CA.
//   - Pebble runs with PEBBLE_VA_ALWAYS_VALID=1 (every challenge passes
//     without a validation connection, so nothing needs port 80 or 443),
//     PEBBLE_VA_NOSLEEP=1 and PEBBLE_WFE_NONCEREJECT=0 (no artificial delays
//     or bad-nonce retries), which keeps a test deterministic.
//   - The TLS certificate of pebble's own listeners is made per instance by
//     a throwaway CA (APIRoots), so no file from pebble's source tree is
//     needed: a pebble binary from anywhere works.
//   - The process is owned by its CA value: Stop (also registered with
//     t.Cleanup) signals it by PID and waits for it and its output copiers.
//   - A missing pebble binary skips the test, except when CI=true, where it
//     is installed with go install (or the test fails).
package pebbletest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Module is what Binary installs in CI.
const Module = "github.com/letsencrypt/pebble/v2/cmd/pebble@latest"

// Binary returns the path of a pebble executable: from PATH, else from the
// go install directory ($GOBIN, else the first $GOPATH/bin). When there is
// none it skips t, unless the environment variable CI is true: then it runs
// `go install` of Module into that directory (which is idempotent) and
// fails t if that does not work.
func Binary(t testing.TB) string {
	t.Helper()
	if p, err := exec.LookPath("pebble"); err == nil {
		return p
	}
	dir, err := goBin()
	if err == nil {
		p := filepath.Join(dir, "pebble")
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p
		}
	}
	if ci, _ := strconv.ParseBool(os.Getenv("CI")); !ci {
		t.Skipf("pebble not found on PATH or in the go install directory; install it with `go install %s` (with CI=true the test installs it)", Module)
	}
	if err != nil {
		t.Fatalf("pebbletest: cannot find the go install directory to install pebble: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", Module)
	cmd.Env = append(os.Environ(), "GOBIN="+dir)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pebbletest: go install %s: %v\n%s", Module, err, out)
	}
	return filepath.Join(dir, "pebble")
}

// goBin returns where `go install` puts binaries.
func goBin() (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := exec.CommandContext(ctx, "go", "env", "GOBIN", "GOPATH").Output()
	if err != nil {
		return "", fmt.Errorf("go env: %w", err)
	}
	lines := strings.Split(strings.TrimRight(string(out), "\n"), "\n")
	if len(lines) == 2 && lines[0] != "" {
		return lines[0], nil
	}
	if len(lines) == 2 && lines[1] != "" {
		return filepath.Join(filepath.SplitList(lines[1])[0], "bin"), nil
	}
	return "", errors.New("go env: neither GOBIN nor GOPATH set")
}

// apiRootsFile is the name of the PEM file of APIRoots in the work directory.
const apiRootsFile = "api-roots.pem"

// CA is a running pebble.
type CA struct {
	// DirectoryURL is the ACME directory, https://127.0.0.1:<port>/dir.
	DirectoryURL string
	// APIRoots trusts the TLS certificate of pebble's ACME and management
	// listeners (not the certificates pebble issues; see IssuerRoots).
	APIRoots *x509.CertPool
	// APIRootsFile holds APIRoots as PEM, for programs configured with a
	// CA file.
	APIRootsFile string

	managementURL string
	cmd           *exec.Cmd
	out           *lockedBuffer
	exited        chan struct{} // closed when cmd.Wait returned
	stopOnce      sync.Once
}

// Start runs pebble (found by Binary) and waits until its directory answers.
// Stop is registered with t.Cleanup.
func Start(t testing.TB) *CA {
	t.Helper()
	bin := Binary(t)
	dir := t.TempDir()
	roots, certFile, keyFile, err := apiCertificate(dir)
	if err != nil {
		t.Fatalf("pebbletest: %v", err)
	}
	// A port picked free may be taken by someone else before pebble binds
	// it; that shows as pebble exiting at once, and a new set is tried.
	const attempts = 3
	for i := range attempts {
		ca, err := start(bin, dir, certFile, keyFile, roots)
		if err == nil {
			ca.APIRootsFile = filepath.Join(dir, apiRootsFile)
			t.Cleanup(ca.Stop)
			return ca
		}
		if i == attempts-1 {
			t.Fatalf("pebbletest: %v", err)
		}
		t.Logf("pebbletest: retrying: %v", err)
	}
	panic("unreachable")
}

func start(bin, dir, certFile, keyFile string, roots *x509.CertPool) (*CA, error) {
	ports, err := freePorts(4)
	if err != nil {
		return nil, err
	}
	listen := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[0]))
	mgmt := net.JoinHostPort("127.0.0.1", strconv.Itoa(ports[1]))
	config := map[string]any{"pebble": map[string]any{
		"listenAddress":                  listen,
		"managementListenAddress":        mgmt,
		"certificate":                    certFile,
		"privateKey":                     keyFile,
		"httpPort":                       ports[2], // unused: validation always passes
		"tlsPort":                        ports[3],
		"ocspResponderURL":               "",
		"externalAccountBindingRequired": false,
		"keyAlgorithm":                   "ecdsa",
		"profiles": map[string]any{
			"default": map[string]any{"description": "wharf tests", "validityPeriod": 7776000},
		},
	}}
	data, err := json.Marshal(config)
	if err != nil {
		return nil, err
	}
	configFile := filepath.Join(dir, "pebble-config.json")
	if err := os.WriteFile(configFile, data, 0o600); err != nil {
		return nil, err
	}

	ca := &CA{
		DirectoryURL:  "https://" + listen + "/dir",
		APIRoots:      roots,
		managementURL: "https://" + mgmt,
		out:           &lockedBuffer{},
		exited:        make(chan struct{}),
	}
	ca.cmd = exec.Command(bin, "-config", configFile)
	ca.cmd.Dir = dir
	ca.cmd.Env = append(os.Environ(),
		"PEBBLE_VA_ALWAYS_VALID=1",
		"PEBBLE_VA_NOSLEEP=1",
		"PEBBLE_WFE_NONCEREJECT=0",
	)
	ca.cmd.Stdout = ca.out
	ca.cmd.Stderr = ca.out
	if err := ca.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		defer close(ca.exited)
		ca.cmd.Wait() // the exit status of a killed test CA says nothing
	}()
	if err := ca.waitReady(); err != nil {
		ca.Stop()
		return nil, fmt.Errorf("%w; pebble output:\n%s", err, ca.out.String())
	}
	return ca, nil
}

// waitReady polls the directory until it answers 200, pebble exits, or
// about ten seconds pass.
func (c *CA) waitReady() error {
	client := c.apiClient()
	defer client.CloseIdleConnections()
	const tries, pause = 200, 50 * time.Millisecond
	var last error
	for range tries {
		select {
		case <-c.exited:
			return errors.New("pebble exited before it was ready")
		default:
		}
		resp, err := client.Get(c.DirectoryURL)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			err = fmt.Errorf("GET %s: %s", c.DirectoryURL, resp.Status)
		}
		last = err
		time.Sleep(pause)
	}
	return fmt.Errorf("pebble not ready: %w", last)
}

func (c *CA) apiClient() *http.Client {
	return &http.Client{
		Timeout: 5 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig: &tls.Config{RootCAs: c.APIRoots},
		},
	}
}

// IssuerRoots returns the roots of the certificates pebble issues, which
// pebble generates anew at every start (management endpoint /roots/0).
func (c *CA) IssuerRoots(ctx context.Context) (*x509.CertPool, error) {
	client := c.apiClient()
	defer client.CloseIdleConnections()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.managementURL+"/roots/0", nil)
	if err != nil {
		return nil, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, err
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET /roots/0: %s", resp.Status)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(body) {
		return nil, errors.New("GET /roots/0: no PEM certificate")
	}
	return pool, nil
}

// Output returns what pebble wrote to stdout and stderr so far.
func (c *CA) Output() string { return c.out.String() }

// Stop ends pebble: SIGTERM to its PID, SIGKILL if it has not exited within
// five seconds, and waits for it. It is idempotent.
func (c *CA) Stop() {
	c.stopOnce.Do(func() {
		select {
		case <-c.exited:
			return
		default:
		}
		_ = c.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-c.exited:
		case <-time.After(5 * time.Second):
			_ = c.cmd.Process.Kill()
			<-c.exited
		}
	})
}

// freePorts returns n distinct loopback ports that were free a moment ago.
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close() // held until all are picked, so they differ
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// apiCertificate makes a throwaway CA and a certificate for 127.0.0.1 and
// localhost signed by it, writes the certificate and key into dir, and
// returns a pool trusting the CA.
func apiCertificate(dir string) (roots *x509.CertPool, certFile, keyFile string, err error) {
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", "", err
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "pebbletest API root"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, caKey.Public(), caKey)
	if err != nil {
		return nil, "", "", err
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, "", "", err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "localhost"},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, key.Public(), caKey)
	if err != nil {
		return nil, "", "", err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, "", "", err
	}
	certFile = filepath.Join(dir, "api-cert.pem")
	keyFile = filepath.Join(dir, "api-key.pem")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return nil, "", "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, "", "", err
	}
	if err := os.WriteFile(filepath.Join(dir, apiRootsFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		return nil, "", "", err
	}
	roots = x509.NewCertPool()
	roots.AddCert(caCert)
	return roots, certFile, keyFile, nil
}

// lockedBuffer collects pebble's output while the process runs.
type lockedBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
