package config

import (
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"0", 0},
		{"0s", 0},
		{"-0", 0},
		{"90s", 90 * time.Second},
		{"5m", 5 * time.Minute},
		{"1h30m", 90 * time.Minute},
		{"1.5h", 90 * time.Minute},
		{"500ms", 500 * time.Millisecond},
		{"1us", time.Microsecond},
		{"1µs", time.Microsecond},
		{"7d", 7 * day},
		{"0d", 0},
		{"1d12h", 36 * time.Hour},
		{"1d1h1m1s1ms1us1ns", day + time.Hour + time.Minute + time.Second + time.Millisecond + time.Microsecond + 1},
		{"-5m", -5 * time.Minute},
		{"+5m", 5 * time.Minute},
		{"-1d12h", -36 * time.Hour},
		{"106751d", 106751 * day},
		{"106751d23h47m16s854ms775us807ns", math.MaxInt64},
		{"-106751d23h47m16s854ms775us808ns", math.MinInt64},
	}
	for _, tt := range tests {
		got, err := ParseDuration(tt.in)
		if err != nil {
			t.Errorf("ParseDuration(%q): %v", tt.in, err)
			continue
		}
		if got.Std() != tt.want {
			t.Errorf("ParseDuration(%q) = %v, want %v", tt.in, got.Std(), tt.want)
		}
	}
}

func TestParseDurationErrors(t *testing.T) {
	for _, in := range []string{
		"", "-", "+", "300", "7", "d", "-d", "1.5d", "7D", "7 d", " 7d", "1d-5h", "1d+5h", "1d5",
		"5x", "abc", "--5m", "d5h", "1dd", "106752d", "106751d23h47m16s854ms775us808ns",
		"-106751d23h47m16s854ms775us809ns", "99999999999999999999d", "1h-",
	} {
		_, err := ParseDuration(in)
		if err == nil {
			t.Errorf("ParseDuration(%q) succeeded, want an error", in)
			continue
		}
		if !strings.HasPrefix(err.Error(), "invalid duration ") {
			t.Errorf("ParseDuration(%q) error %q does not say what it is", in, err)
		}
	}
}

func TestDurationString(t *testing.T) {
	tests := []struct {
		d    time.Duration
		want string
	}{
		{0, "0s"},
		{time.Nanosecond, "1ns"},
		{1500 * time.Millisecond, "1s500ms"},
		{90 * time.Second, "1m30s"},
		{5 * time.Minute, "5m"},
		{time.Hour, "1h"},
		{90 * time.Minute, "1h30m"},
		{day, "1d"},
		{7 * day, "7d"},
		{36 * time.Hour, "1d12h"},
		{-5 * time.Minute, "-5m"},
		{math.MaxInt64, "106751d23h47m16s854ms775us807ns"},
		{math.MinInt64, "-106751d23h47m16s854ms775us808ns"},
	}
	for _, tt := range tests {
		if got := Duration(tt.d).String(); got != tt.want {
			t.Errorf("Duration(%d).String() = %q, want %q", int64(tt.d), got, tt.want)
		}
	}
}

// TestDurationRoundTrip checks that every Duration survives String →
// ParseDuration, as text and inside a YAML document.
func TestDurationRoundTrip(t *testing.T) {
	values := []time.Duration{
		0, 1, -1, time.Microsecond, time.Second, 30 * time.Second, 5 * time.Minute, time.Hour,
		25 * time.Hour, 7 * day, 7*day + 1, 365 * day, -7 * day, math.MaxInt64, math.MinInt64,
	}
	type doc struct {
		D Duration  `yaml:"d"`
		P *Duration `yaml:"p"`
	}
	for _, v := range values {
		d := Duration(v)
		got, err := ParseDuration(d.String())
		if err != nil || got != d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", d.String(), got, err, int64(d))
		}

		text, err := d.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var fromText Duration
		if err := fromText.UnmarshalText(text); err != nil || fromText != d {
			t.Errorf("UnmarshalText(%q) = %v, %v; want %v", text, int64(fromText), err, int64(d))
		}

		in := doc{D: d, P: &d}
		b, err := yaml.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out doc
		if err := yaml.Unmarshal(b, &out); err != nil {
			t.Fatalf("yaml.Unmarshal(%q): %v", b, err)
		}
		if out.D != d || out.P == nil || *out.P != d {
			t.Errorf("YAML round trip of %v through %q gave %+v", int64(d), b, out)
		}
	}
}

func FuzzDurationRoundTrip(f *testing.F) {
	for _, s := range []string{"0", "90s", "7d", "1d12h", "-5m", "1.5h", "300"} {
		f.Add(s, int64(0))
	}
	f.Add("", int64(math.MinInt64))
	f.Add("", int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, s string, n int64) {
		d := Duration(n)
		if got, err := ParseDuration(d.String()); err != nil || got != d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %d", d.String(), int64(got), err, n)
		}
		parsed, err := ParseDuration(s)
		if err != nil {
			return
		}
		if again, err := ParseDuration(parsed.String()); err != nil || again != parsed {
			t.Errorf("%q parsed to %d, which formats as %q, which parses to %d, %v", s, int64(parsed), parsed.String(), int64(again), err)
		}
	})
}

func TestDurationYAMLErrors(t *testing.T) {
	tests := []struct {
		name, doc string
		want      []string
	}{
		{"no unit", "d: 300\n", []string{`line 1: invalid duration "300": want a number with a unit, e.g. "90s", "5m", "1h30m", "7d"`}},
		{"not a scalar", "d: [1s]\n", []string{`line 1: invalid duration: want a number with a unit, e.g. "90s", "5m", "1h30m", "7d"`}},
		{"every bad value", "d: 1x\ne: 2y\n", []string{
			`line 1: invalid duration "1x": want a number with a unit, e.g. "90s", "5m", "1h30m", "7d"`,
			`line 2: invalid duration "2y": want a number with a unit, e.g. "90s", "5m", "1h30m", "7d"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out struct {
				D Duration `yaml:"d"`
				E Duration `yaml:"e"`
			}
			err := yaml.Unmarshal([]byte(tt.doc), &out)
			var te *yaml.TypeError
			if !errors.As(err, &te) {
				t.Fatalf("yaml.Unmarshal: %v, want a *yaml.TypeError", err)
			}
			if strings.Join(te.Errors, "\n") != strings.Join(tt.want, "\n") {
				t.Errorf("errors:\n%s\nwant:\n%s", strings.Join(te.Errors, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}
