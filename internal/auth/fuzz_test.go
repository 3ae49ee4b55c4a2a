package auth

import (
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fuzzKey is a fixed token key, so that issued tokens (and seeds built
// from them) are the same on every run.
const fuzzKey = "5a17e0c1b2d3f4a5968778695a4b3c2d1e0f5a17e0c1b2d3f4a5968778695a4b\n"

// fuzzAuthenticator is an Authenticator with user alice, static token ci,
// a fixed key and a fixed clock; no failure limit.
func fuzzAuthenticator(f *testing.F) *Authenticator {
	f.Helper()
	dir := f.TempDir()
	key := filepath.Join(dir, "token.key")
	ht := filepath.Join(dir, "htpasswd")
	if err := os.WriteFile(key, []byte(fuzzKey), 0o600); err != nil {
		f.Fatal(err)
	}
	if err := os.WriteFile(ht, []byte("alice:"+hashOf(f, alicePass)+"\n"), 0o600); err != nil {
		f.Fatal(err)
	}
	now := time.Date(2025, 3, 1, 12, 0, 0, 0, time.UTC)
	a, err := New(Config{
		HtpasswdFile: ht,
		Tokens:       map[string]string{"ci": ciSecret},
		KeyFile:      key,
		Anonymous:    true,
		Now:          func() time.Time { return now },
	})
	if err != nil {
		f.Fatal(err)
	}
	return a
}

// FuzzHtpasswd: the parser never panics, and what it accepts round-trips:
// writing the entries back out and parsing them again gives the same
// users and hashes.
func FuzzHtpasswd(f *testing.F) {
	h := hashOf(f, "pw")
	for _, s := range []string{
		"", "\n", "# c\n", "alice:" + h, "alice:" + h + "\r\nbob:" + h + "\n",
		"alice:" + h + "\nalice:" + h, ":" + h, "alice", "alice:$apr1$x$y", "alice:{SHA}abc=",
		"alice:plain", " alice:" + h, "al\tice:" + h, "a:$2y$31$" + strings.Repeat("a", 53),
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		entries, err := parseHtpasswd(data, "fuzz")
		if err != nil {
			return
		}
		var b strings.Builder
		for _, e := range entries {
			if e.user == "" || strings.ContainsAny(e.user, ":\n\r") {
				t.Fatalf("accepted user %q", e.user)
			}
			if err := checkBcryptHash([]byte(e.hash)); err != nil {
				t.Fatalf("accepted hash %q: %v", e.hash, err)
			}
			b.WriteString(e.user + ":" + e.hash + "\n")
		}
		again, err := parseHtpasswd([]byte(b.String()), "fuzz")
		if err != nil {
			t.Fatalf("re-parse of accepted entries: %v", err)
		}
		strip := func(es []htpasswdEntry) [][2]string {
			var out [][2]string
			for _, e := range es {
				out = append(out, [2]string{e.user, e.hash})
			}
			return out
		}
		if diff := cmp.Diff(strip(entries), strip(again)); diff != "" {
			t.Fatalf("round trip (-first +second):\n%s", diff)
		}
	})
}

// FuzzAuthorization: the header parser never panics, and a non-anonymous
// principal comes only from a valid credential: alice's password, the
// static token's secret, or a token issued for that principal.
func FuzzAuthorization(f *testing.F) {
	a := fuzzAuthenticator(f)
	aliceTok := issueFor(f, a, Principal{Kind: User, Name: "alice"})
	ciTok := issueFor(f, a, Principal{Kind: StaticToken, Name: "ci"})
	anonTok := issueFor(f, a, Principal{})
	for _, s := range []string{
		basic("alice", alicePass), basic("alice", "x"), basic("x", ciSecret),
		"Bearer " + ciSecret, "Bearer " + aliceTok, "Bearer " + ciTok, "Bearer " + anonTok,
		"Bearer " + aliceTok + "x", "bearer  " + ciTok, "Basic", "Basic ===", "Digest x", "",
		"Basic " + base64.StdEncoding.EncodeToString([]byte("alice")), "Bearer a.b", "Bearer .",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, header string) {
		r := request("")
		r.Header["Authorization"] = []string{header}
		p, err := a.Authenticate(r)
		if err != nil || p.IsAnonymous() {
			return
		}
		scheme, cred, _ := strings.Cut(strings.TrimSpace(header), " ")
		cred = strings.TrimLeft(cred, " ")
		switch {
		case strings.EqualFold(scheme, "basic"):
			raw, err := base64.StdEncoding.DecodeString(cred)
			if err != nil {
				t.Fatalf("accepted undecodable Basic %q as %v", header, p)
			}
			user, pass, _ := strings.Cut(string(raw), ":")
			ok := p == Principal{Kind: User, Name: "alice"} && user == "alice" && pass == alicePass ||
				p == Principal{Kind: StaticToken, Name: "ci"} && pass == ciSecret
			if !ok {
				t.Fatalf("Basic %q (user %q) accepted as %v", header, user, p)
			}
		case strings.EqualFold(scheme, "bearer"):
			ok := p == Principal{Kind: User, Name: "alice"} && cred == aliceTok ||
				p == Principal{Kind: StaticToken, Name: "ci"} && (cred == ciSecret || cred == ciTok)
			if !ok {
				t.Fatalf("Bearer %q accepted as %v", header, p)
			}
		default:
			t.Fatalf("header %q with scheme %q accepted as %v", header, scheme, p)
		}
	})
}

// FuzzToken: verification accepts an issued token only exactly as issued;
// any other string (a mutation of it) is refused.
func FuzzToken(f *testing.F) {
	a := fuzzAuthenticator(f)
	issued := map[string]Principal{}
	for _, p := range []Principal{{Kind: User, Name: "alice"}, {Kind: StaticToken, Name: "ci"}, {}} {
		tok := issueFor(f, a, p)
		issued[tok] = p
		f.Add(tok)
		f.Add(tok + "=")
		f.Add(tok[:len(tok)-1])
		f.Add(strings.Replace(tok, ".", ".\n", 1))
		f.Add(strings.ToUpper(tok))
		payload, sig, _ := strings.Cut(tok, ".")
		f.Add(payload + "A." + sig)
		f.Add(sig + "." + payload)
	}
	f.Fuzz(func(t *testing.T, tok string) {
		p, err := a.verifyToken(tok, a.now())
		if err != nil {
			return
		}
		want, ok := issued[tok]
		if !ok {
			t.Fatalf("verifyToken accepted %q, which was never issued, as %v", tok, p)
		}
		if p != want {
			t.Fatalf("verifyToken(%q) = %v, want %v", tok, p, want)
		}
	})
}
