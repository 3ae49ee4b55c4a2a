package admin

import (
	"strings"

	"github.com/distribution/reference"
	"github.com/opencontainers/go-digest"
)

// Target is a reference resolved to a configured upstream.
type Target struct {
	Upstream string
	Repo     string
	Tag      string        // "" when Digest is set
	Digest   digest.Digest // "" when Tag is set
}

// Ref is the reference as a client would pull it from the upstream's own
// registry: "docker.io/library/nginx:1.27", "ghcr.io/o/r@sha256:…".
func (t Target) Ref() string {
	if t.Digest != "" {
		return t.Upstream + "/" + t.Repo + "@" + t.Digest.String()
	}
	return t.Upstream + "/" + t.Repo + ":" + t.Tag
}

// resolve parses an image reference the way Docker does (Docker Hub by
// default, library/ for official images, "latest" when neither tag nor
// digest is given; a digest wins over a tag) and routes its registry and
// repository to a configured upstream.
func (h *Handler) resolve(s string) (Target, error) {
	s = strings.TrimSpace(s)
	named, err := reference.ParseNormalizedNamed(s)
	if err != nil {
		return Target{}, invalid("reference %q: %v", s, err)
	}
	up, repo, err := h.cfg.Route(reference.Domain(named) + "/" + reference.Path(named))
	if err != nil {
		return Target{}, invalid("reference %q: %v", s, err)
	}
	t := Target{Upstream: up, Repo: repo}
	switch x := named.(type) {
	case reference.Canonical:
		t.Digest = x.Digest()
	case reference.Tagged:
		t.Tag = x.Tag()
	default:
		t.Tag = "latest"
	}
	if t.Digest != "" {
		if err := t.Digest.Validate(); err != nil {
			return Target{}, invalid("reference %q: %v", s, err)
		}
	}
	return t, nil
}

// errNotCached is the answer for a reference whose manifest is not cached.
func errNotCached(t Target) error {
	return notFound("%s is not cached", t.Ref())
}
