//go:build bench

package bench

import (
	"errors"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestParseChallenge(t *testing.T) {
	tests := []struct {
		in         string
		wantScheme string
		want       map[string]string
		wantErr    error
	}{
		{
			in:         `Bearer realm="http://localhost:1/token",service="registry.test",scope="repository:library/x:pull"`,
			wantScheme: "Bearer",
			want:       map[string]string{"realm": "http://localhost:1/token", "service": "registry.test", "scope": "repository:library/x:pull"},
		},
		{
			in:         `Bearer realm="https://auth.docker.io/token", Service="registry.docker.io",scope="repository:a/b:pull,push"`,
			wantScheme: "Bearer",
			want:       map[string]string{"realm": "https://auth.docker.io/token", "service": "registry.docker.io", "scope": "repository:a/b:pull,push"},
		},
		{in: `Basic realm=registry`, wantScheme: "Basic", want: map[string]string{"realm": "registry"}},
		{in: `Bearer realm="a\"b"`, wantScheme: "Bearer", want: map[string]string{"realm": `a"b`}},
		{in: `Bearer`, wantScheme: "Bearer", want: map[string]string{}},
		{in: ``, wantErr: errProtocol},
		{in: `Bearer realm="open`, wantErr: errProtocol},
		{in: `Bearer =x`, wantErr: errProtocol},
		{in: `Bearer realm`, wantErr: errProtocol},
	}
	for _, tt := range tests {
		scheme, params, err := parseChallenge(tt.in)
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("parseChallenge(%q) error %v, want %v", tt.in, err, tt.wantErr)
			continue
		}
		if tt.wantErr != nil {
			continue
		}
		if scheme != tt.wantScheme {
			t.Errorf("parseChallenge(%q) scheme %q, want %q", tt.in, scheme, tt.wantScheme)
		}
		if diff := cmp.Diff(tt.want, params); diff != "" {
			t.Errorf("parseChallenge(%q) params (-want +got):\n%s", tt.in, diff)
		}
	}
}

func FuzzParseChallenge(f *testing.F) {
	f.Add(`Bearer realm="http://localhost:1/token",service="registry.test",scope="repository:library/x:pull"`)
	f.Add(`Basic realm=x, charset="UTF-8"`)
	f.Fuzz(func(t *testing.T, in string) {
		scheme, params, err := parseChallenge(in)
		if err != nil {
			if !errors.Is(err, errProtocol) {
				t.Fatalf("error %v does not match errProtocol", err)
			}
			return
		}
		if scheme == "" || params == nil {
			t.Fatalf("parseChallenge(%q) = %q, %v without an error", in, scheme, params)
		}
	})
}

func TestParseMem(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    memStatus
		wantErr error
	}{
		{
			name: "proc status",
			in:   "Name:\twharf\nVmPeak:\t 1300000 kB\nVmHWM:\t   40960 kB\nVmRSS:\t   20480 kB\nThreads:\t8\n",
			want: memStatus{RSS: 20 << 20, HWM: 40 << 20},
		},
		{name: "zombie has no Vm lines", in: "Name:\twharf\nState:\tZ (zombie)\n", wantErr: errNoStatus},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseMem([]byte(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestParseStatCPU(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    time.Duration
		wantErr error
	}{
		{
			name: "spaces and parentheses in the name",
			in:   "4242 (wh (a) rf) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 25 0 0 20 0 8 0 100 1000000 5000",
			want: 1750 * time.Millisecond,
		},
		{name: "truncated", in: "4242 (wharf) S 1 2", wantErr: errNoStatus},
		{name: "no name", in: "garbage", wantErr: errNoStatus},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := parseStatCPU([]byte(tt.in))
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("error %v, want %v", err, tt.wantErr)
			}
			if got != tt.want {
				t.Errorf("got %v, want %v", got, tt.want)
			}
		})
	}
}

func TestNewStat(t *testing.T) {
	tests := []struct {
		runs []float64
		want stat
	}{
		{nil, stat{}},
		{[]float64{3, 1, 2}, stat{Runs: []float64{3, 1, 2}, Median: 2, Min: 1, Max: 3}},
		{[]float64{4, 1, 2, 3}, stat{Runs: []float64{4, 1, 2, 3}, Median: 2.5, Min: 1, Max: 4}},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, newStat(tt.runs)); diff != "" {
			t.Errorf("newStat(%v) (-want +got):\n%s", tt.runs, diff)
		}
	}
}
