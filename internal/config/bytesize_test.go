package config

import (
	"errors"
	"math"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

func TestParseByteSize(t *testing.T) {
	tests := []struct {
		in   string
		want int64
	}{
		{"0", 0},
		{"0B", 0},
		{"0GiB", 0},
		{"1", 1},
		{"1234", 1234},
		{"1234B", 1234},
		{"1234 b", 1234},
		{"1KB", 1000},
		{"1KiB", 1024},
		{"1kib", 1024},
		{"2MB", 2e6},
		{"2MiB", 2 << 20},
		{"200GB", 200e9},
		{"200GiB", 200 << 30},
		{"200 GiB", 200 << 30},
		{"3TB", 3e12},
		{"3TiB", 3 << 40},
		{"1.5GiB", 3 << 29},
		{"1.5TB", 15e11},
		{"0.5KB", 500},
		{"1.1TB", 11e11},    // exact, not a float's 1099999999999
		{"1.0001KiB", 1024}, // rounds down to whole bytes
		{"007MiB", 7 << 20}, // leading zeros are a number still
		{"8388607TiB", 8388607 << 40},
		{"9223372036854775807", math.MaxInt64},
		{"9223372036854775807B", math.MaxInt64},
	}
	for _, tt := range tests {
		got, err := ParseByteSize(tt.in)
		if err != nil {
			t.Errorf("ParseByteSize(%q): %v", tt.in, err)
			continue
		}
		if got.Bytes() != tt.want {
			t.Errorf("ParseByteSize(%q) = %d, want %d", tt.in, got.Bytes(), tt.want)
		}
	}
}

func TestParseByteSizeErrors(t *testing.T) {
	for _, in := range []string{
		"", " ", "B", "GiB", "-1", "-1GiB", "+1GiB", "1.5", "1.5B", "1.GiB", ".5GiB", "1G", "1Gi", "1GIBS",
		"1 ", " 1", "1e3", "1e3KB", "1/2GiB", "0x10", "1,5GB", "1_000", "1PB", "1PiB", "1bit",
		"8388608TiB", "9223372036854775808", "99999999999999999999999KB", "9223372036.854775808GB",
	} {
		_, err := ParseByteSize(in)
		if err == nil {
			t.Errorf("ParseByteSize(%q) succeeded, want an error", in)
			continue
		}
		if !strings.HasPrefix(err.Error(), "invalid size ") {
			t.Errorf("ParseByteSize(%q) error %q does not say what it is", in, err)
		}
	}
}

func TestByteSizeString(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0"},
		{1, "1"},
		{999, "999"},
		{1000, "1KB"},
		{1024, "1KiB"},
		{1500, "1500"}, // "1.5KB" is not written; 1500 has no shorter exact form
		{1536, "1536"},
		{3 << 29, "1536MiB"},
		{200 << 30, "200GiB"},
		{200e9, "200GB"}, // not 195312500KiB
		{1e12, "1TB"},
		{1 << 40, "1TiB"},
		{5 << 40, "5TiB"},
		{math.MaxInt64, "9223372036854775807"},
	}
	for _, tt := range tests {
		if got := ByteSize(tt.n).String(); got != tt.want {
			t.Errorf("ByteSize(%d).String() = %q, want %q", tt.n, got, tt.want)
		}
	}
}

// TestByteSizeRoundTrip checks that every ByteSize survives String →
// ParseByteSize, as text and inside a YAML document, and that YAML writes
// plain byte counts as numbers.
func TestByteSizeRoundTrip(t *testing.T) {
	type doc struct {
		S ByteSize `yaml:"s"`
	}
	for _, v := range []int64{0, 1, 1000, 1024, 1234, 3 << 29, 200 << 30, 200e9, 1e12, 1 << 40, math.MaxInt64} {
		b := ByteSize(v)
		if got, err := ParseByteSize(b.String()); err != nil || got != b {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", b.String(), got, err, v)
		}
		text, err := b.MarshalText()
		if err != nil {
			t.Fatal(err)
		}
		var fromText ByteSize
		if err := fromText.UnmarshalText(text); err != nil || fromText != b {
			t.Errorf("UnmarshalText(%q) = %d, %v; want %d", text, fromText, err, v)
		}
		y, err := yaml.Marshal(doc{S: b})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(y), `"`) {
			t.Errorf("YAML of %d is quoted: %q", v, y)
		}
		var out doc
		if err := yaml.Unmarshal(y, &out); err != nil || out.S != b {
			t.Errorf("YAML round trip of %d through %q gave %d, %v", v, y, out.S, err)
		}
	}
}

func TestByteSizeYAML(t *testing.T) {
	tests := []struct {
		doc     string
		want    int64
		wantErr string
	}{
		{doc: "s: 1073741824\n", want: 1 << 30},
		{doc: "s: 200GiB\n", want: 200 << 30},
		{doc: "s: \"500 MB\"\n", want: 500e6},
		{doc: "s: \"\"\n", want: 0},
		{doc: "s: 0\n", want: 0},
		{doc: "s: -5\n", wantErr: `line 1: invalid size "-5": want a number of bytes, or a number with a unit: KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. "200GiB"`},
		{doc: "s: 1.5\n", wantErr: `line 1: invalid size "1.5": a fraction needs a unit, e.g. "1.5GiB"`},
		{doc: "s: [1GiB]\n", wantErr: `line 1: invalid size: want a number of bytes, or a number with a unit: KB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. "200GiB"`},
	}
	for _, tt := range tests {
		var out struct {
			S ByteSize `yaml:"s"`
		}
		out.S = 77 // must be reset by an empty value
		err := yaml.Unmarshal([]byte(tt.doc), &out)
		if tt.wantErr != "" {
			var te *yaml.TypeError
			if !errors.As(err, &te) || strings.Join(te.Errors, "\n") != tt.wantErr {
				t.Errorf("yaml.Unmarshal(%q) = %v, want a *yaml.TypeError %q", tt.doc, err, tt.wantErr)
			}
			continue
		}
		if err != nil || out.S.Bytes() != tt.want {
			t.Errorf("yaml.Unmarshal(%q) = %d, %v; want %d", tt.doc, out.S, err, tt.want)
		}
	}
}

func FuzzByteSizeRoundTrip(f *testing.F) {
	for _, s := range []string{"0", "1234", "200GiB", "1.5TB", "512 MiB", "1.0001KiB", "9223372036854775807"} {
		f.Add(s, int64(0))
	}
	f.Add("", int64(math.MaxInt64))
	f.Fuzz(func(t *testing.T, s string, n int64) {
		if n >= 0 {
			b := ByteSize(n)
			if got, err := ParseByteSize(b.String()); err != nil || got != b {
				t.Errorf("ParseByteSize(%q) = %d, %v; want %d", b.String(), got, err, n)
			}
		}
		parsed, err := ParseByteSize(s)
		if err != nil {
			return
		}
		if parsed < 0 {
			t.Fatalf("ParseByteSize(%q) = %d, negative", s, parsed)
		}
		if again, err := ParseByteSize(parsed.String()); err != nil || again != parsed {
			t.Errorf("%q parsed to %d, which formats as %q, which parses to %d, %v", s, parsed, parsed.String(), again, err)
		}
	})
}
