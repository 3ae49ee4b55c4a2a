package auth

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestKeyFileCreatedAndReused(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "state", "sub", "token.key")
	a1, err := New(Config{KeyFile: path, Tokens: map[string]string{"ci": ciSecret}})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %04o, want 0600", perm)
	}
	for _, d := range []string{filepath.Join(dir, "state"), filepath.Dir(path)} {
		di, err := os.Stat(d)
		if err != nil {
			t.Fatal(err)
		}
		if perm := di.Mode().Perm(); perm != 0o700 {
			t.Errorf("%s mode %04o, want 0700", d, perm)
		}
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(data) != 2*keySize+1 || data[len(data)-1] != '\n' {
		t.Errorf("key file holds %q, want 64 hex digits and a newline", data)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Errorf("key directory holds %d entries, want only the key (no temporary files)", len(entries))
	}

	// A second Authenticator (a restart) reads the same key: tokens issued
	// by the first stay valid.
	tok := issueFor(t, a1, Principal{Kind: StaticToken, Name: "ci"})
	a2, err := New(Config{KeyFile: path, Tokens: map[string]string{"ci": ciSecret}})
	if err != nil {
		t.Fatal(err)
	}
	if p, err := a2.Authenticate(request("Bearer " + tok)); err != nil || p.Name != "ci" {
		t.Errorf("token from before the restart: %v, %v", p, err)
	}
	again, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if string(again) != string(data) {
		t.Error("key file rewritten by a second New")
	}
}

func TestKeyFileRefused(t *testing.T) {
	const good = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff\n"
	tests := []struct {
		name    string
		content string
		mode    os.FileMode
		want    string
	}{
		{"group readable", good, 0o640, "chmod 600"},
		{"world readable", good, 0o604, "chmod 600"},
		{"too short", "0011\n", 0o600, "64 hex digits"},
		{"not hex", strings.Repeat("zz", keySize) + "\n", 0o600, "64 hex digits"},
		{"too long", good + "00", 0o600, "64 hex digits"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "token.key")
			if err := os.WriteFile(path, []byte(tt.content), tt.mode); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(path, tt.mode); err != nil {
				t.Fatal(err)
			}
			_, err := New(Config{KeyFile: path})
			if !errors.Is(err, ErrKeyFile) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("New: %v, want ErrKeyFile mentioning %q", err, tt.want)
			}
			if strings.Contains(err.Error(), "0011223344") {
				t.Errorf("error echoes the key: %v", err)
			}
		})
	}

	t.Run("directory", func(t *testing.T) {
		if _, err := New(Config{KeyFile: t.TempDir()}); !errors.Is(err, ErrKeyFile) {
			t.Fatalf("New with a directory as key file: %v, want ErrKeyFile", err)
		}
	})

	t.Run("accepted with CRLF", func(t *testing.T) {
		path := filepath.Join(t.TempDir(), "token.key")
		if err := os.WriteFile(path, []byte(strings.TrimSuffix(good, "\n")+"\r\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := New(Config{KeyFile: path}); err != nil {
			t.Fatal(err)
		}
	})
}
