package progress

import (
	"bytes"
	"math"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestSize(t *testing.T) {
	tests := []struct {
		n    int64
		want string
	}{
		{0, "0 B"},
		{999, "999 B"},
		{1000, "1.00 kB"},
		{1500, "1.50 kB"},
		{9994, "9.99 kB"},
		{9995, "10.0 kB"},
		{27_123_456, "27.1 MB"},
		{999_499, "999 kB"},
		{999_500, "1.00 MB"},
		{312_000_000_000, "312 GB"},
		{-2048, "-2.05 kB"},
		{1 << 62, "4.61 EB"},
		{math.MaxInt64, "9.22 EB"},
		{math.MinInt64, "-9.22 EB"},
	}
	for _, tt := range tests {
		if got := Size(tt.n); got != tt.want {
			t.Errorf("Size(%d) = %q, want %q", tt.n, got, tt.want)
		}
	}
}

func TestWidth(t *testing.T) {
	tests := []struct {
		env  map[string]string
		want int
	}{
		{nil, DefaultWidth},
		{map[string]string{"COLUMNS": "132"}, 132},
		{map[string]string{"COLUMNS": " 40\n"}, 40},
		{map[string]string{"COLUMNS": "0"}, DefaultWidth},
		{map[string]string{"COLUMNS": "wide"}, DefaultWidth},
	}
	for _, tt := range tests {
		got := Width(func(k string) (string, bool) { v, ok := tt.env[k]; return v, ok })
		if got != tt.want {
			t.Errorf("Width(%v) = %d, want %d", tt.env, got, tt.want)
		}
	}
	if got := Width(nil); got != DefaultWidth {
		t.Errorf("Width(nil) = %d", got)
	}
}

func TestLine(t *testing.T) {
	tests := []struct {
		name  string
		bar   Bar
		width int
		want  string
	}{
		{
			name:  "half",
			bar:   Bar{Label: "nginx:1.27", Current: 50_000_000, Total: 100_000_000, Status: "running"},
			width: 80,
			want:  "nginx:1.27                 [=========>        ]  50%  50.0 MB / 100 MB  running",
		},
		{
			name:  "done",
			bar:   Bar{Label: "nginx", Current: 10, Total: 10, Status: "done"},
			width: 60,
			want:  "nginx               [=============] 100%  10 B / 10 B  done",
		},
		{
			name:  "unknown total",
			bar:   Bar{Label: "export", Current: 2_500_000},
			width: 80,
			want:  "export  2.50 MB",
		},
		{
			name:  "nothing yet",
			bar:   Bar{Label: "registry.k8s.io/pause:3.10", Status: "queued"},
			width: 80,
			want:  "registry.k8s.io/pause:3.10  queued",
		},
		{
			name:  "long label is cut",
			bar:   Bar{Label: "registry.example.com:5000/some/deeply/nested/repository:v1.2.3", Current: 1, Total: 4, Status: "running"},
			width: 80,
			want:  "registry.example.com:5000… [======>                  ]  25%  1 B / 4 B  running",
		},
		{
			name:  "narrow: no bar",
			bar:   Bar{Label: "nginx", Current: 1, Total: 4, Status: "running"},
			width: 40,
			want:  "nginx  25%  1 B / 4 B  running",
		},
		{
			name:  "too narrow: sizes go first",
			bar:   Bar{Label: "nginx", Current: 1, Total: 4, Status: "running"},
			width: 5,
			want:  "nginx  25%  running",
		},
		{
			name:  "overshoot caps at 100%",
			bar:   Bar{Label: "x", Current: 12, Total: 10},
			width: 50,
			want:  "x                [============] 100%  12 B / 10 B",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := Line(tt.bar, tt.width)
			if got != tt.want {
				t.Errorf("Line =\n%q\nwant\n%q", got, tt.want)
			}
			if n := utf8.RuneCountInString(got); n > max(tt.width, minWidth)-1 {
				t.Errorf("line of %d columns for width %d", n, tt.width)
			}
		})
	}
}

// FuzzLine: whatever the bar, a line never reaches the terminal's last
// column (so it never wraps) and holds no newline.
func FuzzLine(f *testing.F) {
	f.Add("nginx:latest", int64(5), int64(10), "running", 80)
	f.Add("", int64(0), int64(0), "", 0)
	f.Add("ü€😀", int64(-3), int64(-1), "fäiled", 1000)
	f.Fuzz(func(t *testing.T, label string, cur, total int64, status string, width int) {
		if width > 10000 || width < -10 || strings.ContainsAny(label+status, "\n\r") {
			t.Skip()
		}
		got := Line(Bar{Label: label, Current: cur, Total: total, Status: status}, width)
		if n := utf8.RuneCountInString(got); n > max(width, minWidth)-1 {
			t.Fatalf("line of %d columns for width %d: %q", n, width, got)
		}
		if strings.Contains(got, "\n") {
			t.Fatalf("newline in %q", got)
		}
	})
}

func TestBoard(t *testing.T) {
	var out bytes.Buffer
	b := NewBoard(&out, 40)
	steps := []struct {
		bars []Bar
		want string
	}{
		{
			bars: []Bar{{Label: "a", Status: "queued"}, {Label: "b", Status: "queued"}},
			want: "\r\x1b[2Ka  queued\n\r\x1b[2Kb  queued\n",
		},
		{
			bars: []Bar{{Label: "a", Status: "done"}, {Label: "b", Status: "running"}},
			want: "\x1b[2A\r\x1b[2Ka  done\n\r\x1b[2Kb  running\n",
		},
		{
			// Fewer lines: the leftover is erased and the cursor ends
			// below the new last line.
			bars: []Bar{{Label: "all", Status: "done"}},
			want: "\x1b[2A\r\x1b[2Kall  done\n\r\x1b[2K\n\x1b[1A",
		},
	}
	for i, s := range steps {
		out.Reset()
		if err := b.Draw(s.bars); err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(s.want, out.String()); diff != "" {
			t.Errorf("step %d (-want +got):\n%s", i, diff)
		}
	}
}

// TestMeter: a Meter counts every byte, redraws at most once per interval
// of its clock, and Finish always draws.
func TestMeter(t *testing.T) {
	var out bytes.Buffer
	m := NewMeter(&out, 80, "export", 30)
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return clock }
	draws := func() int { return strings.Count(out.String(), eraseLine) }

	m.Write(make([]byte, 10)) // first write draws
	m.Write(make([]byte, 5))  // same instant: no redraw
	if got := draws(); got != 1 {
		t.Fatalf("%d draws after two writes at one instant, want 1", got)
	}
	clock = clock.Add(DefaultInterval)
	m.Write(make([]byte, 5))
	if got := draws(); got != 2 {
		t.Fatalf("%d draws after an interval, want 2", got)
	}
	m.Write(make([]byte, 10))
	if err := m.Finish("done"); err != nil {
		t.Fatal(err)
	}
	if m.Count() != 30 {
		t.Errorf("Count = %d, want 30", m.Count())
	}
	last := out.String()[strings.LastIndex(out.String(), eraseLine)+len(eraseLine):]
	if !strings.Contains(last, "100%") || !strings.HasSuffix(last, "done\n") {
		t.Errorf("final line %q", last)
	}
}

type failWriter struct{ n int }

func (w *failWriter) Write(p []byte) (int, error) {
	w.n++
	return 0, bytes.ErrTooLarge
}

// TestMeterWriteError: a failing terminal never fails the copy; drawing
// stops after the first error and Finish reports it.
func TestMeterWriteError(t *testing.T) {
	w := &failWriter{}
	m := NewMeter(w, 80, "x", 0)
	clock := time.Now()
	m.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	for range 3 {
		if n, err := m.Write([]byte("abc")); n != 3 || err != nil {
			t.Fatalf("Write = %d, %v", n, err)
		}
	}
	if err := m.Finish("done"); err == nil {
		t.Error("Finish hid the drawing error")
	}
	if w.n != 1 {
		t.Errorf("%d writes to a failing terminal, want 1", w.n)
	}
}
