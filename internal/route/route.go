// Package route decides what an HTTP request to the mirror is for: which
// distribution API object (by parsing the URL path, [ParsePath]) and which
// configured upstream registry and upstream repository ([Table.Match]).
//
// Clients identify the upstream registry in four ways (client-compat §0):
// the containerd/Docker ≥29 `?ns=<host>` query parameter, a registry host as
// the first component of the repository name (Podman/CRI-O/skopeo mirror
// locations, crane), a path segment before `/v2` (Docker and containerd mirror
// URLs with a path), and implicitly (Docker's graphdriver, which only ever
// mirrors Docker Hub). A per-upstream virtual host is the fifth, for
// deployments that give every upstream its own hostname.
//
// Invariants this package keeps:
//   - A registry name taken from a request (ns, path prefix, first name
//     component, Host header) is only ever a lookup key into the configured
//     [Table]. Nothing here turns request data into a host to dial, so the
//     mirror can never become an open proxy; an unknown host is
//     [ErrUnknownRegistry].
//   - A [Path] returned without error has a repository name that satisfies the
//     distribution-spec grammar (with an optional registry-host first
//     component, lower-cased), a reference that is a valid tag or a digest
//     whose algorithm is available, and contains no percent-encoding, empty
//     components or dot-segments. Rendering it with [Path.String] and parsing
//     again yields the same Path.
//   - A [Table] is immutable once built and safe for concurrent use.
//
// Errors are sentinels; callers map them to OCI error codes with errors.Is.
package route

import (
	"errors"

	// Register the hash functions go-digest needs to consider sha256,
	// sha384 and sha512 digests available (digest.Algorithm.Available).
	_ "crypto/sha256"
	_ "crypto/sha512"
)

// Sentinel errors. Returned values may wrap them with detail; test with
// errors.Is.
var (
	// ErrNotFound: the path is not a distribution API path at all
	// (OCI: 404 with code NOT_FOUND, or a plain 404).
	ErrNotFound = errors.New("not a registry API path")
	// ErrNameInvalid: the repository name is malformed, or routing left it
	// empty (OCI: NAME_INVALID).
	ErrNameInvalid = errors.New("invalid repository name")
	// ErrTagInvalid: a manifest reference is neither a valid tag nor contains
	// ':' (OCI: MANIFEST_INVALID / TAG_INVALID).
	ErrTagInvalid = errors.New("invalid tag")
	// ErrDigestInvalid: a reference that must be a digest is malformed or uses
	// an unavailable algorithm (OCI: DIGEST_INVALID).
	ErrDigestInvalid = errors.New("invalid digest")
	// ErrUnsupported: a known API endpoint that the mirror does not serve,
	// such as uploads or the catalog (OCI: UNSUPPORTED).
	ErrUnsupported = errors.New("unsupported registry API endpoint")
	// ErrUnknownRegistry: the request names a registry that is not configured,
	// or there is no default upstream (OCI: NAME_UNKNOWN, or DENIED by policy).
	ErrUnknownRegistry = errors.New("unknown upstream registry")
)
