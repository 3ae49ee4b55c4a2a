package route

import (
	"errors"
	"fmt"
	"strings"
)

// ErrInvalidTable wraps every problem [NewTable] reports.
var ErrInvalidTable = errors.New("invalid upstream routing table")

// Upstream is the routing view of one configured upstream registry.
type Upstream struct {
	// Name is the registry host (with port if not the default), e.g.
	// "docker.io", "ghcr.io", "myreg.io:5000". It is the canonical name
	// [Target.Upstream] reports, exactly as configured.
	Name string
	// Aliases are further names clients may use for the same registry in
	// ns, a path prefix or the first name component, e.g. "index.docker.io"
	// and "registry-1.docker.io" for Docker Hub, "k8s.gcr.io" for
	// registry.k8s.io.
	Aliases []string
	// VirtualHosts are mirror host names (optionally host:port) whose
	// requests go to this upstream when nothing more specific names one.
	VirtualHosts []string
	// LibraryPrefix prepends "library/" to single-component repository
	// names, Docker Hub's official-image namespace (client-compat §0 rule 4).
	LibraryPrefix bool
}

// Target is where a request is routed.
type Target struct {
	// Upstream is the canonical name of the configured upstream (its
	// Upstream.Name).
	Upstream string
	// Repo is the repository on that upstream, e.g. "library/nginx".
	Repo string
}

// Table maps request data to configured upstreams. It is immutable and safe
// for concurrent use.
type Table struct {
	ups []Upstream
	def int // index into ups; -1 when there is no default upstream
	// names holds every lower-cased name and alias: the keys ns, a path
	// prefix and a first name component may use.
	names map[string]int
	// hosts holds names plus the lower-cased virtual hosts: the keys the
	// Host header may use.
	hosts map[string]int
}

// NewTable builds a routing table. defaultUpstream names (or aliases) the
// upstream for requests that name none; "" means there is none and such
// requests get [ErrUnknownRegistry].
//
// Names, aliases and virtual hosts are host names with an optional port and
// are compared case-insensitively. Every name and alias must be unique
// across the table, every virtual host likewise, and a virtual host may not
// equal another upstream's name or alias. All problems are reported
// together, each wrapping [ErrInvalidTable].
func NewTable(defaultUpstream string, ups []Upstream) (*Table, error) {
	t := &Table{
		ups:   make([]Upstream, len(ups)),
		def:   -1,
		names: make(map[string]int),
		hosts: make(map[string]int),
	}
	var errs []error
	bad := func(format string, args ...any) {
		errs = append(errs, fmt.Errorf("%w: "+format, append([]any{ErrInvalidTable}, args...)...))
	}

	for i, u := range ups {
		u.Aliases = append([]string(nil), u.Aliases...)
		u.VirtualHosts = append([]string(nil), u.VirtualHosts...)
		t.ups[i] = u
		for _, n := range append([]string{u.Name}, u.Aliases...) {
			key := lowerASCII(n)
			switch prev, dup := t.names[key]; {
			case !validHost(n):
				bad("upstream %q: name or alias %q is not a host[:port]", u.Name, n)
			case dup:
				bad("upstream %q: name or alias %q already used by upstream %q", u.Name, n, ups[prev].Name)
			default:
				t.names[key] = i
				t.hosts[key] = i
			}
		}
	}
	vhosts := make(map[string]int)
	for i, u := range ups {
		for _, h := range u.VirtualHosts {
			key := lowerASCII(h)
			if !validHost(h) {
				bad("upstream %q: virtual host %q is not a host[:port]", u.Name, h)
				continue
			}
			if prev, dup := vhosts[key]; dup {
				bad("upstream %q: virtual host %q already used by upstream %q", u.Name, h, ups[prev].Name)
				continue
			}
			vhosts[key] = i
			// A virtual host equal to the upstream's own name or alias is
			// redundant but unambiguous.
			if prev, dup := t.hosts[key]; dup && prev != i {
				bad("upstream %q: virtual host %q is a name or alias of upstream %q", u.Name, h, ups[prev].Name)
				continue
			}
			t.hosts[key] = i
		}
	}
	if defaultUpstream != "" {
		if i, ok := t.names[lowerASCII(defaultUpstream)]; ok {
			t.def = i
		} else {
			bad("default upstream %q is not a configured name or alias", defaultUpstream)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return t, nil
}

// Lookup returns the canonical name of the upstream with this name or
// alias (case-insensitive).
func (t *Table) Lookup(nameOrAlias string) (string, bool) {
	i, ok := t.names[lowerASCII(nameOrAlias)]
	if !ok {
		return "", false
	}
	return t.ups[i].Name, true
}

// Match routes a request (client-compat §0). host is r.Host (port
// allowed), ns the URL-decoded value of the ns query parameter ("" if
// absent), prefix and name come from [ParsePath]. Comparisons with
// configured names are ASCII case-insensitive. The first rule that applies wins:
//
//  1. ns is authoritative (containerd ≥1.4, Docker ≥29 with the containerd
//     store; §2.3). An unknown ns is ErrUnknownRegistry. A first name
//     component equal to ns, or to a host-like name or alias of the same
//     upstream, is stripped: containerd's override_path layout
//     /v2/<ns>/<repo>. Otherwise name is the upstream repository as-is,
//     since a repository may legitimately be called
//     "docker.io/library/nginx" on another registry.
//  2. A path prefix ("/<prefix>/v2/...", §1.2) names the upstream; unknown
//     is ErrUnknownRegistry. A first name component naming the same
//     upstream is stripped as in rule 3, so both layouts work.
//  3. A first name component that looks like a registry host (contains '.'
//     or ':', or is "localhost") and is a configured name or alias is
//     stripped and names the upstream (Podman/CRI-O/skopeo mirror
//     locations, crane; §3.1, §3.5).
//  4. A Host header equal to a virtual host, or to an upstream's name or
//     alias, names that upstream; the full host:port is tried first, then
//     the bare host name. name is the repository as-is.
//  5. Otherwise the default upstream, name as-is — unless the first
//     component looks like a registry host, which then is not configured:
//     ErrUnknownRegistry rather than a guess (a Docker Hub namespace cannot
//     contain '.'). Without a default upstream, ErrUnknownRegistry.
//
// A name's first component is only ever a registry host when more
// components follow, as in Docker reference parsing. A registry name from
// the request is never dialled: it only selects a configured upstream.
//
// An empty resulting repository is ErrNameInvalid. For an upstream with
// LibraryPrefix a single-component repository gets "library/" prepended.
func (t *Table) Match(host, ns, prefix, name string) (Target, error) {
	first, rest, multi := strings.Cut(name, "/")
	idx, repo := -1, name
	switch {
	case ns != "":
		i, ok := t.names[lowerASCII(ns)]
		if !ok {
			return Target{}, fmt.Errorf("%w: ns %q", ErrUnknownRegistry, clip(ns))
		}
		idx = i
		if multi && (equalFoldASCII(first, ns) || t.strippable(first, i)) {
			repo = rest
		}
	case prefix != "":
		i, ok := t.names[lowerASCII(prefix)]
		if !ok {
			return Target{}, fmt.Errorf("%w: path prefix %q", ErrUnknownRegistry, clip(prefix))
		}
		idx = i
		if multi && t.strippable(first, i) {
			repo = rest
		}
	default:
		hostLike := multi && looksLikeHost(first)
		if hostLike {
			if i, ok := t.names[lowerASCII(first)]; ok {
				idx, repo = i, rest
			}
		}
		if idx < 0 {
			idx = t.virtualHost(host)
		}
		if idx < 0 {
			if hostLike {
				return Target{}, fmt.Errorf("%w: %q", ErrUnknownRegistry, clip(first))
			}
			if t.def < 0 {
				return Target{}, fmt.Errorf("%w: no default upstream", ErrUnknownRegistry)
			}
			idx = t.def
		}
	}
	if repo == "" {
		return Target{}, fmt.Errorf("%w: empty repository", ErrNameInvalid)
	}
	u := &t.ups[idx]
	if u.LibraryPrefix && strings.IndexByte(repo, '/') < 0 {
		repo = "library/" + repo
	}
	return Target{Upstream: u.Name, Repo: repo}, nil
}

// strippable reports whether component c is a host-like name or alias of the
// upstream at index i. Dotless aliases are never stripped from a name: they
// are indistinguishable from a Docker Hub namespace.
func (t *Table) strippable(c string, i int) bool {
	if !looksLikeHost(c) {
		return false
	}
	j, ok := t.names[lowerASCII(c)]
	return ok && j == i
}

// virtualHost returns the upstream index the Host header selects, or -1.
func (t *Table) virtualHost(host string) int {
	if host == "" {
		return -1
	}
	h := lowerASCII(host)
	if i, ok := t.hosts[h]; ok {
		return i
	}
	bare := hostname(h)
	if bare == h {
		return -1
	}
	if i, ok := t.hosts[bare]; ok {
		return i
	}
	return -1
}

// hostname strips the port and a trailing dot from a Host header value.
func hostname(h string) string {
	if strings.HasPrefix(h, "[") { // IPv6 literal; never a configured host
		if i := strings.IndexByte(h, ']'); i >= 0 {
			return h[:i+1]
		}
		return h
	}
	if i := strings.IndexByte(h, ':'); i >= 0 {
		h = h[:i]
	}
	return strings.TrimSuffix(h, ".")
}
