package upstream

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/opencontainers/go-digest"
)

// Grammar of distribution-spec ("Pulling manifests"): repository names and
// tags. Checked before anything is sent so that no caller can steer a
// request elsewhere on the upstream (no "..", no "?").
var (
	repoPattern = regexp.MustCompile(`^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*(?:/[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*)*$`)
	tagPattern  = regexp.MustCompile(`^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$`)
)

// maxRepoLength bounds a repository name; the spec asks registries to
// accept at least 255 characters including the host name.
const maxRepoLength = 1024

func checkRepo(repo string) error {
	if len(repo) > maxRepoLength || !repoPattern.MatchString(repo) {
		return fmt.Errorf("%w: repository %q", ErrInvalidName, repo)
	}
	return nil
}

// checkManifestRef checks repo and ref; for a digest ref it returns the
// digest. Anything with a ':' is a digest (client-compat.md §5.2).
func checkManifestRef(repo, ref string) (digest.Digest, error) {
	if err := checkRepo(repo); err != nil {
		return "", err
	}
	if strings.Contains(ref, ":") {
		d, err := digest.Parse(ref)
		if err != nil {
			return "", fmt.Errorf("%w: digest %q: %w", ErrInvalidName, ref, err)
		}
		return d, nil
	}
	if !tagPattern.MatchString(ref) {
		return "", fmt.Errorf("%w: tag %q", ErrInvalidName, ref)
	}
	return "", nil
}

// checkSuffix checks the path below /v2/<repo>/ of a passthrough request:
// non-empty segments of printable characters, no dot segments, nothing
// that would end the path.
func checkSuffix(suffix string) error {
	if suffix == "" {
		return fmt.Errorf("%w: empty path suffix", ErrInvalidName)
	}
	for seg := range strings.SplitSeq(suffix, "/") {
		if seg == "" || seg == "." || seg == ".." ||
			strings.ContainsFunc(seg, func(r rune) bool {
				return r <= ' ' || r == 0x7f || r == '?' || r == '#' || r == '%' || r == '\\'
			}) {
			return fmt.Errorf("%w: path suffix %q", ErrInvalidName, suffix)
		}
	}
	return nil
}
