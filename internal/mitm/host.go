package mitm

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// hostKind classifies a normalised host; only kindName may be intercepted.
type hostKind int

const (
	kindName  hostKind = iota // a DNS name other than localhost
	kindLocal                 // "localhost" or a name under it (RFC 6761 §6.3: always loopback)
	kindIP                    // an IP literal
)

// maxNameLen is the longest DNS name in presentation form without the
// trailing dot (RFC 1035 §2.3.4: 255 octets on the wire).
const maxNameLen = 253

// errMalformedAuthority reports a CONNECT request target that is not
// host:port (RFC 9110 §9.3.6, authority-form of RFC 9112 §3.2.3).
var errMalformedAuthority = errors.New("mitm: malformed CONNECT authority")

// normalizeHost returns host in the one form wharf compares and mints
// certificates for: DNS names lower-case without a trailing dot, IP literals
// in canonical text form without brackets. Zoned IPv6 addresses are refused:
// a zone is local to the client and cannot appear in a certificate.
func normalizeHost(host string) (string, hostKind, error) {
	if len(host) >= 2 && host[0] == '[' && host[len(host)-1] == ']' {
		addr, err := netip.ParseAddr(host[1 : len(host)-1])
		if err != nil || !addr.Is6() || addr.Zone() != "" {
			return "", 0, fmt.Errorf("%w: %q", ErrInvalidHost, host)
		}
		return addr.String(), kindIP, nil
	}
	if addr, err := netip.ParseAddr(host); err == nil {
		if addr.Zone() != "" {
			return "", 0, fmt.Errorf("%w: %q", ErrInvalidHost, host)
		}
		return addr.String(), kindIP, nil
	}
	name := strings.ToLower(strings.TrimSuffix(host, "."))
	if !validName(name) {
		return "", 0, fmt.Errorf("%w: %q", ErrInvalidHost, host)
	}
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return name, kindLocal, nil
	}
	return name, kindName, nil
}

// validName reports whether name (lower-case, no trailing dot) is a host
// name wharf accepts: labels of 1–63 letters, digits, hyphens and
// underscores (seen in real registry CDN names) without a leading or trailing
// hyphen (RFC 1123 §2.1), at most 253 characters. Names a resolver might read
// as an IPv4 address in inet_aton's shorthand ("127.1", "0x7f000001") and
// names with an all-numeric top label (RFC 3696 §2) are refused, so that no
// name can smuggle an address past a name-based allowlist.
func validName(name string) bool {
	if name == "" || len(name) > maxNameLen {
		return false
	}
	labels := strings.Split(name, ".")
	numeric := 0
	for _, l := range labels {
		if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return false
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
		if numericLabel(l) {
			numeric++
		}
	}
	if numeric == len(labels) {
		return false
	}
	return !allDigits(labels[len(labels)-1])
}

// numericLabel reports whether l reads as a number to inet_aton: decimal,
// octal or 0x-prefixed hexadecimal.
func numericLabel(l string) bool {
	if len(l) >= 2 && l[0] == '0' && l[1] == 'x' {
		for i := 2; i < len(l); i++ {
			c := l[i]
			if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
				return false
			}
		}
		return true
	}
	return allDigits(l)
}

func allDigits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// authority is a parsed CONNECT target.
type authority struct {
	host string   // normalised, see normalizeHost
	port string   // decimal 1–65535 without leading zeros
	kind hostKind // kindName is the only kind that may be intercepted
}

// hostport is the target in host:port form, IPv6 bracketed; this is what
// Proxy.Tunnel judges and what a tunnel dials.
func (a authority) hostport() string { return net.JoinHostPort(a.host, a.port) }

// parseAuthority parses the request target of a CONNECT request, which RFC
// 9110 §9.3.6 requires to be authority-form host:port: the port is
// mandatory. The host is normalised (normalizeHost).
func parseAuthority(s string) (authority, error) {
	host, port, err := net.SplitHostPort(s)
	if err != nil || host == "" {
		return authority{}, fmt.Errorf("%w: %q", errMalformedAuthority, s)
	}
	if !validPort(port) {
		return authority{}, fmt.Errorf("%w: bad port in %q", errMalformedAuthority, s)
	}
	// SplitHostPort took the brackets off an IPv6 literal; an unbracketed
	// host containing a colon is malformed and normalizeHost would accept it
	// as an address, so refuse it here.
	if strings.Contains(host, ":") && !strings.HasPrefix(s, "[") {
		return authority{}, fmt.Errorf("%w: %q", errMalformedAuthority, s)
	}
	if strings.HasPrefix(s, "[") {
		host = "[" + host + "]"
	}
	h, kind, err := normalizeHost(host)
	if err != nil {
		return authority{}, fmt.Errorf("%w: %w", errMalformedAuthority, err)
	}
	return authority{host: h, port: port, kind: kind}, nil
}

// validPort reports whether p is a decimal port 1–65535 in its shortest form.
func validPort(p string) bool {
	if p == "" || len(p) > 5 || !allDigits(p) || p[0] == '0' {
		return false
	}
	n, err := strconv.Atoi(p)
	return err == nil && n >= 1 && n <= 65535
}

// splitHostHeader splits a Host header value (RFC 9110 §7.2: uri-host
// [":" port]) into its normalised host and port ("" when absent).
func splitHostHeader(s string) (host, port string, kind hostKind, err error) {
	h := s
	if i := strings.LastIndexByte(s, ':'); i >= 0 && !strings.HasSuffix(s, "]") {
		// host:port, [v6]:port; a bare IPv6 literal without brackets is
		// not a valid Host header and fails in normalizeHost below.
		var perr error
		h, port, perr = net.SplitHostPort(s)
		if perr != nil || !validPort(port) {
			return "", "", 0, fmt.Errorf("%w: %q", ErrInvalidHost, s)
		}
		if strings.HasPrefix(s, "[") {
			h = "[" + h + "]"
		} else if strings.Contains(h, ":") {
			return "", "", 0, fmt.Errorf("%w: %q", ErrInvalidHost, s)
		}
	}
	host, kind, err = normalizeHost(h)
	if err != nil {
		return "", "", 0, err
	}
	return host, port, kind, nil
}
