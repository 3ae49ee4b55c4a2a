package auth

import "strings"

// Challenge is one challenge from a WWW-Authenticate header (RFC 9110 §11.6.1,
// §11.3). Scheme and parameter names are lower-cased because both are
// case-insensitive; parameter values are kept as sent, with quoted-string
// escapes resolved.
type Challenge struct {
	Scheme string
	Params map[string]string
}

// ParseChallenges parses every challenge in the given WWW-Authenticate header
// values, in order. It is deliberately lenient, because registries in the wild
// send values that are not strictly RFC 9110 (client-compat.md §4.2):
//
//   - several challenges in one header, separated by commas
//     (quay.io: `Basic realm="quay.io", Bearer realm="...",service="quay.io"`);
//   - unquoted parameter values that are not tokens (`service=gcr.io`,
//     `realm=https://gcr.io/v2/token`): an unquoted value runs up to the next
//     comma or whitespace;
//   - token68 credentials (`Negotiate abc==`), which registries do not use and
//     which are skipped;
//   - empty list elements and stray characters, which are skipped.
//
// When a parameter occurs twice in one challenge the first occurrence wins.
// Input that cannot be parsed never causes a panic; it yields fewer
// challenges.
func ParseChallenges(headers []string) []Challenge {
	var out []Challenge
	for _, h := range headers {
		p := challengeParser{s: h}
		out = p.parse(out)
	}
	return out
}

type challengeParser struct {
	s   string
	pos int
}

func (p *challengeParser) parse(out []Challenge) []Challenge {
	for p.pos < len(p.s) {
		p.skipSeparators()
		scheme := p.token()
		if scheme == "" {
			// Not a challenge: skip a stray quoted string or byte. Every
			// iteration makes progress, whatever the input.
			p.skipJunk()
			continue
		}
		c := Challenge{Scheme: strings.ToLower(scheme), Params: map[string]string{}}
		p.skipSpace()
		if !p.skipToken68() {
			p.params(c.Params)
		}
		out = append(out, c)
	}
	return out
}

// params reads auth-params until it meets something that is not a
// parameter, which is where the next challenge starts.
func (p *challengeParser) params(into map[string]string) {
	for p.pos < len(p.s) {
		start := p.pos
		p.skipSeparators()
		name := p.token()
		if name == "" {
			if p.pos >= len(p.s) {
				return
			}
			p.skipJunk()
			continue
		}
		p.skipSpace()
		if p.pos >= len(p.s) || p.s[p.pos] != '=' {
			// A bare token: the scheme of the next challenge.
			p.pos = start
			return
		}
		p.pos++ // '='
		p.skipSpace()
		var value string
		if p.pos < len(p.s) && p.s[p.pos] == '"' {
			value = p.quoted()
		} else {
			value = p.unquoted()
		}
		key := strings.ToLower(name)
		if _, dup := into[key]; !dup {
			into[key] = value
		}
	}
}

// skipToken68 consumes a token68 (RFC 9110 §11.2) right after the scheme if
// one is there: token68 characters, optional '=' padding, then the end of
// the header or a comma. `realm=x` is not a token68 because something other
// than a separator follows the '='.
func (p *challengeParser) skipToken68() bool {
	i := p.pos
	for i < len(p.s) && isToken68(p.s[i]) {
		i++
	}
	if i == p.pos {
		return false
	}
	for i < len(p.s) && p.s[i] == '=' {
		i++
	}
	j := i
	for j < len(p.s) && isSpace(p.s[j]) {
		j++
	}
	if j < len(p.s) && p.s[j] != ',' {
		return false
	}
	p.pos = j
	return true
}

func (p *challengeParser) token() string {
	start := p.pos
	for p.pos < len(p.s) && isTchar(p.s[p.pos]) {
		p.pos++
	}
	return p.s[start:p.pos]
}

// quoted reads a quoted-string starting at the opening quote and resolves
// quoted-pairs. An unterminated string runs to the end of the header.
func (p *challengeParser) quoted() string {
	p.pos++ // opening quote
	var b strings.Builder
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		switch {
		case c == '"':
			p.pos++
			return b.String()
		case c == '\\' && p.pos+1 < len(p.s):
			b.WriteByte(p.s[p.pos+1])
			p.pos += 2
		default:
			b.WriteByte(c)
			p.pos++
		}
	}
	return b.String()
}

func (p *challengeParser) unquoted() string {
	start := p.pos
	for p.pos < len(p.s) && p.s[p.pos] != ',' && !isSpace(p.s[p.pos]) {
		p.pos++
	}
	return p.s[start:p.pos]
}

// skipJunk skips what cannot start a token: a whole quoted string, or one
// byte.
func (p *challengeParser) skipJunk() {
	if p.pos < len(p.s) && p.s[p.pos] == '"' {
		p.quoted()
		return
	}
	if p.pos < len(p.s) {
		p.pos++
	}
}

func (p *challengeParser) skipSpace() {
	for p.pos < len(p.s) && isSpace(p.s[p.pos]) {
		p.pos++
	}
}

func (p *challengeParser) skipSeparators() {
	for p.pos < len(p.s) && (isSpace(p.s[p.pos]) || p.s[p.pos] == ',') {
		p.pos++
	}
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' }

// isTchar reports whether c is a tchar (RFC 9110 §5.6.2).
func isTchar(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// isToken68 reports whether c may appear in a token68 before its padding.
func isToken68(c byte) bool {
	switch {
	case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		return true
	}
	return strings.IndexByte("-._~+/", c) >= 0
}
