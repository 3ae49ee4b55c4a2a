package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestCACommand(t *testing.T) {
	dir := t.TempDir()
	runCA := func(args ...string) (int, string, string) {
		var out, errOut bytes.Buffer
		std := stdio{in: strings.NewReader(""), out: &out, err: &errOut, lookupEnv: func(string) (string, bool) { return "", false }}
		code := run(context.Background(), append([]string{"ca"}, args...), std)
		return code, out.String(), errOut.String()
	}
	code, first, stderr := runCA("--data-dir", dir)
	if code != exitOK || stderr != "" {
		t.Fatalf("wharf ca: exit %d, stderr %q", code, stderr)
	}
	block, _ := pem.Decode([]byte(first))
	if block == nil {
		t.Fatalf("not PEM: %q", first)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil || !cert.IsCA {
		t.Fatalf("not a CA certificate: %v", err)
	}
	st, err := os.Stat(filepath.Join(dir, "ca", "ca.key"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("ca.key: %v %v, want mode 0600", st, err)
	}
	if code, again, _ := runCA("--data-dir", dir); code != exitOK || again != first {
		t.Error("a second wharf ca printed another CA")
	}
	if code, _, stderr := runCA("--bogus"); code != exitUsage || strings.Count(stderr, "\n") != 1 {
		t.Errorf("bad flag: exit %d, stderr %q", code, stderr)
	}
	if code, out, _ := runCA("--help"); code != exitOK || !strings.Contains(out, "Usage: wharf ca") {
		t.Errorf("--help: exit %d", code)
	}
}
