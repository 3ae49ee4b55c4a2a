package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// imageRef is a reference as the admin API names things: the upstream
// (the registry's name, e.g. "docker.io"), the repository within it, and a
// tag or digest when the reference has one.
type imageRef struct {
	upstream, repo string
	tag            string
	digest         string
}

// String is the full reference: "docker.io/library/nginx:1.27", or the
// bare digest for content named by digest alone.
func (r imageRef) String() string {
	if r.repo == "" {
		return r.digest
	}
	s := r.upstream + "/" + r.repo
	if r.tag != "" {
		s += ":" + r.tag
	}
	if r.digest != "" {
		s += "@" + r.digest
	}
	return s
}

var errBadReference = errors.New("invalid image reference")

// parseRef reads a reference as clients write it: "nginx",
// "nginx:1.27", "ghcr.io/o/r@sha256:…", or a bare digest "sha256:…".
// Docker Hub is the default registry and single-component Docker Hub names
// get "library/" (the distribution/reference normalisation every client
// applies), so "nginx" is docker.io/library/nginx. No default tag is
// added: a reference without tag or digest names the whole repository.
func parseRef(s string) (imageRef, error) {
	if alg, _, ok := strings.Cut(s, ":"); ok && !strings.ContainsAny(s, "/@") && digest.Algorithm(alg).Available() {
		// "sha256:…" is a bare digest, never the tag of an image named
		// "sha256": a malformed one is refused, not read as a tag.
		d, err := digest.Parse(s)
		if err != nil {
			return imageRef{}, fmt.Errorf("%w %q: %v", errBadReference, s, err)
		}
		return imageRef{digest: d.String()}, nil
	}
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return imageRef{}, fmt.Errorf("%w %q: %v", errBadReference, s, err)
	}
	r := imageRef{upstream: reference.Domain(named), repo: reference.Path(named)}
	if t, ok := named.(reference.Tagged); ok {
		r.tag = t.Tag()
	}
	if d, ok := named.(reference.Digested); ok {
		r.digest = d.Digest().String()
	}
	return r, nil
}

// hasWildcard tells whether a filter is a glob pattern.
func hasWildcard(s string) bool { return strings.ContainsAny(s, "*?") }

// globMatch reports whether pattern matches s anywhere in it (the pattern
// is unanchored, like the substring filter it extends), case-insensitively;
// '*' matches any run of characters, '/' included, '?' any one.
func globMatch(pattern, s string) bool {
	p := []rune("*" + strings.ToLower(pattern) + "*")
	r := []rune(strings.ToLower(s))
	// Iterative matching with one backtrack point: linear in practice,
	// O(len(p)·len(r)) at worst, never exponential.
	pi, ri := 0, 0
	star, mark := -1, 0
	for ri < len(r) {
		switch {
		case pi < len(p) && (p[pi] == '?' || p[pi] == r[ri]):
			pi++
			ri++
		case pi < len(p) && p[pi] == '*':
			star, mark = pi, ri
			pi++
		case star >= 0:
			pi = star + 1
			mark++
			ri = mark
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}

// literalOf is the longest run of pattern without wildcards: what the
// server's substring filter can narrow a glob down to.
func literalOf(pattern string) string {
	best := ""
	for _, part := range strings.FieldsFunc(pattern, func(r rune) bool { return r == '*' || r == '?' }) {
		if len(part) > len(best) {
			best = part
		}
	}
	return best
}

// shortDigest is "sha256:" and the first 12 hex digits, as docker prints
// image IDs.
func shortDigest(d string) string {
	alg, hex, ok := strings.Cut(d, ":")
	if !ok || len(hex) <= 12 {
		return d
	}
	return alg + ":" + hex[:12]
}
