package route

import (
	"testing"

	"github.com/opencontainers/go-digest"
)

// FuzzValidDigest checks that the regexp-free fast path never disagrees with
// go-digest, the definition of a valid digest.
func FuzzValidDigest(f *testing.F) {
	for _, s := range []string{
		"sha256:a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4",
		"sha256:A3ED95CAEB02FFE68CDD9FD84406680AE93D633CB16422D00E8A7C22955B46D4",
		"sha384:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"sha512:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		"sha256:baddigeststring", "sha256:", ":", "md5:d41d8cd98f00b204e9800998ecf8427e", "sha256+b64u:LCa0a2j_xo_5m0U8HTBBNBNCLXBkg7-g-YpeiGJm564",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		_, libErr := digest.Parse(s)
		ownErr := validDigest(s)
		if (libErr == nil) != (ownErr == nil) {
			t.Fatalf("validDigest(%q) = %v, digest.Parse error = %v", s, ownErr, libErr)
		}
		if canonicalDigest(s) && libErr != nil {
			t.Fatalf("canonicalDigest(%q) accepts what digest.Parse rejects: %v", s, libErr)
		}
	})
}
