package config

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// ByteSize is a number of bytes written the way people write disk sizes:
// a plain number of bytes ("1073741824"), or a number with a unit, either
// decimal (KB, MB, GB, TB: powers of 1000) or binary (KiB, MiB, GiB, TiB:
// powers of 1024), e.g. "200GiB", "1.5TB", "512 MiB". Units are
// case-insensitive and "B" may follow a plain number. A fraction is
// allowed with a unit and rounds down to whole bytes. Negative sizes and
// sizes beyond 8 EiB are errors. It marshals back to the shortest exact
// form, a unit winning a tie ("200GiB", "1KiB", "1500", "1234"), and
// zero as the number 0.
//
// ByteSize implements encoding.TextMarshaler and encoding.TextUnmarshaler,
// so it also works with flag.TextVar.
type ByteSize int64

// errByteSize is the cause of every size parse failure; the message says
// what is accepted.
var errByteSize = errors.New(`want a number of bytes, or a number with a unit: KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. "200GiB"`)

// byteUnits are the accepted units, in the order String tries them:
// binary first, so that a size with two exact forms of equal length is
// written in the binary one.
var byteUnits = []struct {
	name string
	size int64
}{
	{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10},
	{"TB", 1e12}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3},
}

// ParseByteSize parses a ByteSize (see its documentation for the syntax).
func ParseByteSize(s string) (ByteSize, error) {
	n, err := parseByteSize(s)
	if err != nil {
		return 0, fmt.Errorf("invalid size %q: %w", s, err)
	}
	return n, nil
}

func parseByteSize(s string) (ByteSize, error) {
	// The number: digits, optionally a fraction.
	i := 0
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	intDigits := i
	frac := false
	if i < len(s) && s[i] == '.' {
		frac = true
		i++
		j := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == j {
			return 0, errByteSize
		}
	}
	if intDigits == 0 {
		return 0, errByteSize
	}
	num := s[:i]
	unit := strings.TrimLeft(s[i:], " ")
	if unit == "" && i < len(s) {
		return 0, errByteSize // trailing spaces
	}

	mult := int64(1)
	switch {
	case unit == "" || strings.EqualFold(unit, "B"):
		if frac {
			return 0, errors.New("a fraction needs a unit, e.g. \"1.5GiB\"")
		}
	default:
		found := false
		for _, u := range byteUnits {
			if strings.EqualFold(unit, u.name) {
				mult, found = u.size, true
				break
			}
		}
		if !found {
			return 0, errByteSize
		}
	}

	if !frac {
		n, err := strconv.ParseInt(num, 10, 64)
		if err != nil || n > math.MaxInt64/mult {
			return 0, errors.New("out of range")
		}
		return ByteSize(n * mult), nil
	}
	// Exact arithmetic: a float would round "1.1TB" to a size nobody wrote.
	r, ok := new(big.Rat).SetString(num)
	if !ok {
		return 0, errByteSize
	}
	r.Mul(r, new(big.Rat).SetInt64(mult))
	n := new(big.Int).Quo(r.Num(), r.Denom()) // rounds toward zero: whole bytes
	if !n.IsInt64() {
		return 0, errors.New("out of range")
	}
	return ByteSize(n.Int64()), nil
}

// String formats b as ParseByteSize reads it, in the shortest exact form:
// "200GiB", "1500MB", "1234", "0".
func (b ByteSize) String() string {
	best := strconv.FormatInt(int64(b), 10)
	if b <= 0 {
		return best
	}
	withUnit := false
	for _, u := range byteUnits {
		if int64(b)%u.size != 0 {
			continue
		}
		// A unit wins a tie with the plain number ("1KiB", not "1024");
		// between units the first, binary, one does.
		s := strconv.FormatInt(int64(b)/u.size, 10) + u.name
		if len(s) < len(best) || !withUnit && len(s) == len(best) {
			best, withUnit = s, true
		}
	}
	return best
}

// Bytes returns b as a number of bytes.
func (b ByteSize) Bytes() int64 { return int64(b) }

// MarshalText implements encoding.TextMarshaler.
func (b ByteSize) MarshalText() ([]byte, error) { return []byte(b.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler. Empty text is zero,
// like an empty setting.
func (b *ByteSize) UnmarshalText(text []byte) error {
	if len(text) == 0 {
		*b = 0
		return nil
	}
	v, err := ParseByteSize(string(text))
	if err != nil {
		return err
	}
	*b = v
	return nil
}

// MarshalYAML implements yaml.Marshaler: a size with a unit is a string, a
// plain number of bytes is a number.
func (b ByteSize) MarshalYAML() (any, error) {
	s := b.String()
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return n, nil
	}
	return s, nil
}

// UnmarshalYAML implements yaml.Unmarshaler. An empty string is zero. A
// bad value is reported as a *yaml.TypeError, which the decoder collects
// with its line number and keeps decoding, like Duration.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid size: %v", n.Line, errByteSize)}}
	}
	if n.Value == "" {
		*b = 0
		return nil
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*b = v
	return nil
}
