package route

import (
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Kind is the API object a request path addresses. The zero value is not a
// valid Kind.
type Kind int

const (
	// KindBase is the API version check, GET /v2/ (or /v2).
	KindBase Kind = iota + 1
	// KindManifest is /v2/<name>/manifests/<tag-or-digest>.
	KindManifest
	// KindBlob is /v2/<name>/blobs/<digest>.
	KindBlob
	// KindTags is /v2/<name>/tags/list.
	KindTags
	// KindReferrers is /v2/<name>/referrers/<digest> (distribution-spec 1.1).
	KindReferrers
)

// String returns a short lower-case name, suitable as a metric label value.
func (k Kind) String() string {
	switch k {
	case KindBase:
		return "base"
	case KindManifest:
		return "manifest"
	case KindBlob:
		return "blob"
	case KindTags:
		return "tags"
	case KindReferrers:
		return "referrers"
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// maxNameLength is the distribution-spec limit on a repository name, applied
// to the name as it appears in the URL (registry-host component included),
// as distribution/reference does for a full name.
const maxNameLength = 255

// maxTagLength follows the tag grammar [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
const maxTagLength = 128

// Path is a parsed distribution API request path.
type Path struct {
	// Prefix is the single path segment before /v2 in the "/<prefix>/v2/..."
	// layout that Docker and containerd produce for a mirror URL with a path
	// (client-compat §1.2, §2.3), e.g. "docker.io" in
	// "/docker.io/v2/library/nginx/manifests/latest"; "" if there is none.
	// It is kept as sent; [Table.Match] compares it case-insensitively.
	Prefix string
	Kind   Kind
	// Name is the repository name as it appears in the URL. Its first
	// component may be a registry host ("docker.io/library/nginx",
	// "myreg.io:5000/foo"), which is lower-cased. "" for KindBase.
	Name string
	// Reference is the tag or digest for KindManifest and the digest for
	// KindBlob and KindReferrers; "" otherwise. A Reference containing ':'
	// is always a valid digest (see [Path.Digest]).
	Reference string
}

// Digest reports the reference as a digest, if it is one.
func (p Path) Digest() (digest.Digest, bool) {
	if strings.IndexByte(p.Reference, ':') < 0 {
		return "", false
	}
	return digest.Digest(p.Reference), true
}

// String renders p as an escaped URL path that [ParsePath] maps back to p.
// The version check renders with a trailing slash, "/v2/".
func (p Path) String() string {
	var b strings.Builder
	b.Grow(len(p.Prefix) + len(p.Name) + len(p.Reference) + 24)
	if p.Prefix != "" {
		b.WriteByte('/')
		b.WriteString(p.Prefix)
	}
	b.WriteString("/v2/")
	switch p.Kind {
	case KindManifest:
		b.WriteString(p.Name)
		b.WriteString("/manifests/")
		b.WriteString(p.Reference)
	case KindBlob:
		b.WriteString(p.Name)
		b.WriteString("/blobs/")
		b.WriteString(p.Reference)
	case KindReferrers:
		b.WriteString(p.Name)
		b.WriteString("/referrers/")
		b.WriteString(p.Reference)
	case KindTags:
		b.WriteString(p.Name)
		b.WriteString("/tags/list")
	}
	return b.String()
}

// ParsePath parses an escaped request path (r.URL.EscapedPath()) into the API
// object it addresses (distribution-spec "Endpoints"; client-compat §0, §5.2).
//
// The endpoint is recognised from the right-hand end of the path, because a
// repository name may itself contain components such as "manifests" or
// "tags". Percent-encoding anywhere in the name or reference is rejected:
// legitimate names and references never need it, and refusing it closes
// "%2F" (encoded slash) and "%2e%2e" (encoded dot-segment) tricks.
//
// Errors: [ErrNotFound] (not an API path), [ErrUnsupported] (an endpoint the
// mirror does not serve: uploads, catalog), [ErrNameInvalid],
// [ErrTagInvalid], [ErrDigestInvalid].
func ParsePath(escapedPath string) (Path, error) {
	rest, ok := strings.CutPrefix(escapedPath, "/")
	if !ok {
		return Path{}, ErrNotFound
	}
	var p Path
	// "/v2..." is always the API root, so a prefix can never be "v2" and
	// rendering stays unambiguous.
	if !isV2Root(rest) {
		i := strings.IndexByte(rest, '/')
		if i < 0 || !validPrefix(rest[:i]) || !isV2Root(rest[i+1:]) {
			return Path{}, ErrNotFound
		}
		p.Prefix = rest[:i]
		rest = rest[i+1:]
	}
	rest = rest[len("v2"):]
	if rest == "" || rest == "/" {
		p.Kind = KindBase
		return p, nil
	}
	rest = rest[1:] // after "/v2/"

	// Split "<name>/<keyword>/<last>".
	i := strings.LastIndexByte(rest, '/')
	if i < 0 {
		if rest == "_catalog" {
			return Path{}, fmt.Errorf("%w: catalog", ErrUnsupported)
		}
		return Path{}, ErrNotFound
	}
	last := rest[i+1:]
	before := rest[:i]
	var name, keyword string
	if j := strings.LastIndexByte(before, '/'); j >= 0 {
		name, keyword = before[:j], before[j+1:]
	} else {
		keyword = before
	}

	switch keyword {
	case "manifests":
		p.Kind = KindManifest
	case "blobs":
		if last == "uploads" { // POST /v2/<name>/blobs/uploads without the slash
			return Path{}, fmt.Errorf("%w: blob uploads", ErrUnsupported)
		}
		p.Kind = KindBlob
	case "referrers":
		p.Kind = KindReferrers
	case "tags":
		if last != "list" {
			return Path{}, ErrNotFound
		}
		p.Kind = KindTags
	case "uploads":
		// /v2/<name>/blobs/uploads/ and /v2/<name>/blobs/uploads/<session>.
		if name == "blobs" || strings.HasSuffix(name, "/blobs") {
			return Path{}, fmt.Errorf("%w: blob uploads", ErrUnsupported)
		}
		return Path{}, ErrNotFound
	default:
		return Path{}, ErrNotFound
	}

	var err error
	if p.Name, err = parseName(name); err != nil {
		return Path{}, err
	}

	switch p.Kind {
	case KindManifest:
		// client-compat §5.2: a reference containing ':' is a digest.
		if strings.IndexByte(last, ':') >= 0 {
			if err := validDigest(last); err != nil {
				return Path{}, err
			}
		} else if !validTag(last) {
			return Path{}, fmt.Errorf("%w: %q", ErrTagInvalid, clip(last))
		}
		p.Reference = last
	case KindBlob, KindReferrers:
		if err := validDigest(last); err != nil {
			return Path{}, err
		}
		p.Reference = last
	}
	return p, nil
}

// isV2Root reports whether s (a path without its leading slash) starts with
// the "v2" segment.
func isV2Root(s string) bool {
	return s == "v2" || strings.HasPrefix(s, "v2/")
}

// validPrefix accepts a path segment before /v2 that could name an upstream:
// a host name with optional port. Anything else is not a path wharf serves.
func validPrefix(s string) bool {
	return validHost(s)
}

// validDigest accepts exactly the digests digest.Parse accepts.
func validDigest(s string) error {
	if canonicalDigest(s) {
		return nil
	}
	if _, err := digest.Parse(s); err != nil {
		return fmt.Errorf("%w: %q: %w", ErrDigestInvalid, clip(s), err)
	}
	return nil
}

// canonicalDigest recognises a sha256, sha384 or sha512 digest with
// lower-case hex of the right length without go-digest's regular
// expressions, which would otherwise dominate the cost of parsing a blob
// path. It never accepts what digest.Parse rejects (FuzzValidDigest); any
// other input takes the digest.Parse path.
func canonicalDigest(s string) bool {
	alg, hex, _ := strings.Cut(s, ":")
	var n int
	switch alg {
	case "sha256":
		n = 64
	case "sha384":
		n = 96
	case "sha512":
		n = 128
	default:
		return false
	}
	if len(hex) != n {
		return false
	}
	for i := 0; i < len(hex); i++ {
		if c := hex[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// parseName validates a repository name and lower-cases a registry-host first
// component. It allocates only when that component contains upper case.
func parseName(name string) (string, error) {
	if name == "" || len(name) > maxNameLength {
		return "", fmt.Errorf("%w: length %d", ErrNameInvalid, len(name))
	}
	first, rest, multi := strings.Cut(name, "/")
	switch {
	case validComponent(first):
	case multi && looksLikeHost(first) && validHost(first):
		// The first of several components may be a registry host,
		// recognised with Docker reference parsing's heuristic. Host names
		// are case-insensitive; the lower-cased form is canonical.
		if hasUpper(first) {
			name = lowerASCII(first) + "/" + rest
		}
	default:
		return "", fmt.Errorf("%w: %q", ErrNameInvalid, name)
	}
	for multi {
		var c string
		c, rest, multi = strings.Cut(rest, "/")
		if !validComponent(c) { // also catches "//", a trailing "/" and ".."
			return "", fmt.Errorf("%w: %q", ErrNameInvalid, name)
		}
	}
	return name, nil
}

// validComponent implements the distribution-spec path component grammar
// [a-z0-9]+((\.|_|__|-+)[a-z0-9]+)*. It rejects "", ".", ".." and any '%'.
func validComponent(s string) bool {
	if s == "" {
		return false
	}
	i := 0
	for {
		// An alphanumeric run.
		start := i
		for i < len(s) && isLowerAlnum(s[i]) {
			i++
		}
		if i == start {
			return false
		}
		if i == len(s) {
			return true
		}
		// A separator: ".", "_", "__" or one or more "-".
		switch s[i] {
		case '.':
			i++
		case '_':
			i++
			if i < len(s) && s[i] == '_' {
				i++
			}
		case '-':
			for i < len(s) && s[i] == '-' {
				i++
			}
		default:
			return false
		}
	}
}

// validHost accepts a host name with an optional port: dot-separated,
// non-empty labels of letters, digits and inner hyphens, then optionally ":"
// and one to five digits. IPv6 literals are not accepted.
func validHost(s string) bool {
	host, port, hasPort := strings.Cut(s, ":")
	if hasPort {
		if port == "" || len(port) > 5 {
			return false
		}
		for i := 0; i < len(port); i++ {
			if port[i] < '0' || port[i] > '9' {
				return false
			}
		}
	}
	for {
		label, more, dot := strings.Cut(host, ".")
		if label == "" || label[0] == '-' || label[len(label)-1] == '-' {
			return false // also rejects leading, trailing and doubled dots
		}
		for i := 0; i < len(label); i++ {
			if c := label[i]; !isAlnum(c) && c != '-' {
				return false
			}
		}
		if !dot {
			return true
		}
		host = more
	}
}

// looksLikeHost is Docker reference parsing's test for whether the first
// component of a name is a registry host rather than a Docker Hub namespace:
// it contains '.' or ':' or is "localhost". Docker Hub namespaces cannot
// contain '.', so the test cannot misroute a Docker Hub repository
// (client-compat §0).
func looksLikeHost(s string) bool {
	return strings.ContainsAny(s, ".:") || equalFoldASCII(s, "localhost")
}

// validTag implements [a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}.
func validTag(s string) bool {
	if s == "" || len(s) > maxTagLength {
		return false
	}
	if c := s[0]; !isAlnum(c) && c != '_' {
		return false
	}
	for i := 1; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '_' && c != '.' && c != '-' {
			return false
		}
	}
	return true
}

func isLowerAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

func isAlnum(c byte) bool { return isLowerAlnum(c) || 'A' <= c && c <= 'Z' }

// lowerASCII lower-cases ASCII letters only: host names compare
// case-insensitively in ASCII (RFC 4343), and Unicode case mapping would let
// non-ASCII input such as the Kelvin sign alias a configured name. It
// allocates only when s has an upper-case letter.
func lowerASCII(s string) string {
	if !hasUpper(s) {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// equalFoldASCII is strings.EqualFold restricted to ASCII letters.
func equalFoldASCII(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func hasUpper(s string) bool {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return true
		}
	}
	return false
}

// clip bounds request data quoted in error messages.
func clip(s string) string {
	const limit = 100
	if len(s) <= limit {
		return s
	}
	return s[:limit] + "..."
}
