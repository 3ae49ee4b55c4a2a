package auth

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseHtpasswd(t *testing.T) {
	h1 := hashOf(t, "one")
	h2 := hashOf(t, "two")
	y := "$2y$" + h2[4:]
	tests := []struct {
		name    string
		in      string
		want    []htpasswdEntry
		wantErr string // substring of the error; "" for none
	}{
		{name: "empty", in: ""},
		{name: "comments and blanks", in: "# a comment\n\n   \n  # indented comment\n"},
		{name: "users", in: "alice:" + h1 + "\nbob:" + h2,
			want: []htpasswdEntry{{"alice", h1, 1}, {"bob", h2, 2}}},
		{name: "CRLF", in: "alice:" + h1 + "\r\n#c\r\nbob:" + y + "\r\n",
			want: []htpasswdEntry{{"alice", h1, 1}, {"bob", y, 3}}},
		{name: "duplicate", in: "alice:" + h1 + "\n# x\nalice:" + h2 + "\n", wantErr: `ht:3: user "alice" is also defined on line 1`},
		{name: "empty user", in: ":" + h1, wantErr: "ht:1: empty user name"},
		{name: "no colon", in: "alice\n", wantErr: "ht:1: not a"},
		{name: "space in user", in: "al ice:" + h1, wantErr: "ht:1: user name contains"},
		{name: "apr1", in: "#\nalice:$apr1$abcdefgh$0123456789abcdefghijkl", wantErr: "ht:2: MD5 (apr1)"},
		{name: "sha", in: "alice:{SHA}qUqP5cyxm6YcTAhz05Hph5gvu9M=", wantErr: "ht:1: SHA-1"},
		{name: "crypt", in: "alice:abJnggxhB/yWI", wantErr: "ht:1: not a bcrypt hash"},
		{name: "sha512 crypt", in: "alice:$6$salt$hash", wantErr: "ht:1: crypt(3)"},
		{name: "plain text", in: "alice:hunter2", wantErr: "ht:1: not a bcrypt hash"},
		{name: "truncated bcrypt", in: "alice:" + h1[:59], wantErr: "malformed bcrypt hash"},
		{name: "bcrypt bad cost", in: "alice:$2a$99" + h1[6:], wantErr: "invalid cost"},
		{name: "bcrypt bad alphabet", in: "alice:" + h1[:59] + "!", wantErr: "malformed bcrypt hash"},
		{name: "trailing field", in: "alice:" + h1 + ":comment", wantErr: "malformed bcrypt hash"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseHtpasswd([]byte(tt.in), "ht")
			if tt.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErr) || !errors.Is(err, ErrHtpasswd) {
					t.Fatalf("error = %v, want ErrHtpasswd containing %q", err, tt.wantErr)
				}
				noSecrets(t, "error", err.Error(), "hunter2", h1[7:], h2[7:])
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(tt.want, got, cmp.AllowUnexported(htpasswdEntry{})); diff != "" {
				t.Errorf("entries (-want +got):\n%s", diff)
			}
		})
	}
}

func TestHtpasswdReload(t *testing.T) {
	f := newFixture(t)
	login := func(user, pass string) error {
		_, err := f.a.Authenticate(request(basic(user, pass)))
		return err
	}
	if err := login("alice", alicePass); err != nil {
		t.Fatal(err)
	}

	// A new file: not seen before a second has passed, seen after.
	writeFile(t, f.htpasswd, "carol:"+hashOf(t, "carol-pw")+"\n")
	if err := login("carol", "carol-pw"); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("carol within a second of the change: %v, want ErrInvalidCredentials", err)
	}
	f.clock.Advance(reloadInterval)
	if err := login("carol", "carol-pw"); err != nil {
		t.Errorf("carol after reload: %v", err)
	}
	if err := login("alice", alicePass); !errors.Is(err, ErrInvalidCredentials) {
		t.Errorf("alice after she was removed: %v, want ErrInvalidCredentials", err)
	}
	if !strings.Contains(f.logs.String(), "htpasswd file reloaded") {
		t.Error("reload not logged")
	}

	// A broken rewrite keeps the previous users and warns once.
	writeFile(t, f.htpasswd, "carol:plaintext-password\n")
	f.clock.Advance(reloadInterval)
	if err := login("carol", "carol-pw"); err != nil {
		t.Errorf("carol after a broken rewrite: %v", err)
	}
	f.clock.Advance(reloadInterval)
	if err := login("carol", "carol-pw"); err != nil {
		t.Errorf("carol after a broken rewrite: %v", err)
	}
	logs := f.logs.String()
	if n := strings.Count(logs, "cannot be used; keeping the previous users"); n != 1 {
		t.Errorf("broken rewrite warned %d times, want 1:\n%s", n, logs)
	}
	noSecrets(t, "log", logs, "plaintext-password", "carol-pw")

	// A removed file keeps the previous users too.
	if err := os.Remove(f.htpasswd); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(reloadInterval)
	if err := login("carol", "carol-pw"); err != nil {
		t.Errorf("carol after the file was removed: %v", err)
	}

	// Fixed again.
	writeFile(t, f.htpasswd, "dave:"+hashOf(t, "dave-pw")+"\n")
	f.clock.Advance(reloadInterval)
	if err := login("dave", "dave-pw"); err != nil {
		t.Errorf("dave after the file was fixed: %v", err)
	}
}

func TestHtpasswdRejectedAtStart(t *testing.T) {
	f := newFixture(t)
	writeFile(t, f.htpasswd, "alice:"+hashOf(t, "x")+"\nbob:$apr1$xyz$abc\n")
	_, err := New(Config{HtpasswdFile: f.htpasswd})
	if !errors.Is(err, ErrHtpasswd) || !strings.Contains(err.Error(), f.htpasswd+":2:") {
		t.Fatalf("New with an apr1 entry: %v, want ErrHtpasswd naming %s:2", err, f.htpasswd)
	}
}

// TestReloadIntervalClockSkew: a clock stepping backwards does not stop
// reloads for good.
func TestReloadIntervalClockSkew(t *testing.T) {
	f := newFixture(t)
	if _, err := f.a.Authenticate(request(basic("alice", alicePass))); err != nil {
		t.Fatal(err)
	}
	f.clock.Advance(-time.Hour)
	writeFile(t, f.htpasswd, "erin:"+hashOf(t, "erin-pw")+"\n")
	if _, err := f.a.Authenticate(request(basic("erin", "erin-pw"))); err != nil {
		t.Errorf("after the clock stepped back: %v", err)
	}
}
