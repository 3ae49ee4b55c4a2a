package config

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// Duration is a time.Duration written the way people write cache lifetimes:
// a Go duration ("90s", "5m", "1h30m", "500ms"), optionally preceded by a
// whole number of days ("7d", "1d12h"), with an optional sign. A number
// without a unit ("300") is an error rather than a guess. It marshals back
// to the same shape, largest unit first ("7d", "1h30m", "0s").
//
// Duration implements encoding.TextMarshaler and encoding.TextUnmarshaler,
// so it also works with flag.TextVar.
type Duration time.Duration

const day = 24 * time.Hour

// errDuration is the cause of every duration parse failure; the message
// says what is accepted.
var errDuration = errors.New(`want a number with a unit, e.g. "90s", "5m", "1h30m", "7d"`)

// ParseDuration parses a Duration (see its documentation for the syntax).
func ParseDuration(s string) (Duration, error) {
	d, err := parseDuration(s)
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q: %w", s, err)
	}
	return d, nil
}

func parseDuration(s string) (Duration, error) {
	rest := s
	neg := false
	if rest != "" && (rest[0] == '-' || rest[0] == '+') {
		neg = rest[0] == '-'
		rest = rest[1:]
	}
	if rest == "" {
		return 0, errDuration
	}

	// Magnitudes are accumulated as uint64 so that the most negative
	// duration, whose magnitude is one more than the largest positive one,
	// parses too.
	var days uint64
	if i := strings.IndexByte(rest, 'd'); i >= 0 {
		n, err := strconv.ParseUint(rest[:i], 10, 64)
		if err != nil {
			return 0, errDuration
		}
		days, rest = n, rest[i+1:]
	}
	var sub uint64
	if rest != "" {
		// The sign belongs in front of the whole value, never after the days.
		if rest[0] == '-' || rest[0] == '+' {
			return 0, errDuration
		}
		d, err := time.ParseDuration(rest)
		if err != nil {
			return 0, errDuration
		}
		sub = uint64(d)
	}

	limit := uint64(math.MaxInt64)
	if neg {
		limit++
	}
	if days > (limit-sub)/uint64(day) || sub > limit {
		return 0, errors.New("out of range")
	}
	total := days*uint64(day) + sub
	if neg {
		return Duration(-total), nil
	}
	return Duration(total), nil
}

// String formats d as ParseDuration reads it, largest unit first: "7d",
// "1d12h", "1h30m", "1s500ms", "0s".
func (d Duration) String() string {
	if d == 0 {
		return "0s"
	}
	var b strings.Builder
	mag := uint64(d)
	if d < 0 {
		b.WriteByte('-')
		mag = -mag
	}
	units := []struct {
		name string
		size uint64
	}{
		{"d", uint64(day)},
		{"h", uint64(time.Hour)},
		{"m", uint64(time.Minute)},
		{"s", uint64(time.Second)},
		{"ms", uint64(time.Millisecond)},
		{"us", uint64(time.Microsecond)},
		{"ns", 1},
	}
	for _, u := range units {
		if n := mag / u.size; n > 0 {
			b.WriteString(strconv.FormatUint(n, 10))
			b.WriteString(u.name)
			mag -= n * u.size
		}
	}
	return b.String()
}

// Std returns d as a time.Duration.
func (d Duration) Std() time.Duration { return time.Duration(d) }

// MarshalText implements encoding.TextMarshaler.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText implements encoding.TextUnmarshaler.
func (d *Duration) UnmarshalText(text []byte) error {
	v, err := ParseDuration(string(text))
	if err != nil {
		return err
	}
	*d = v
	return nil
}

// MarshalYAML implements yaml.Marshaler: a duration is written as a string.
func (d Duration) MarshalYAML() (any, error) { return d.String(), nil }

// UnmarshalYAML implements yaml.Unmarshaler. A bad value is reported as a
// *yaml.TypeError, which the decoder collects with its line number and
// keeps decoding, so one Load reports every bad value in the file.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: invalid duration: %v", n.Line, errDuration)}}
	}
	v, err := ParseDuration(n.Value)
	if err != nil {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: %v", n.Line, err)}}
	}
	*d = v
	return nil
}
