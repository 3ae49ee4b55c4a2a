// Package progress draws progress on a terminal: one line per task, each a
// label, a bar, a percentage, sizes and a status word, redrawn in place
// with ANSI escapes (cursor up, erase line). It also formats byte counts
// for people (Size).
//
// Invariants:
//   - A rendered line never exceeds the width it is given minus one
//     column, so a terminal never wraps it and "cursor up N lines" always
//     lands on the first line drawn.
//   - A Board writes only to its writer, only when asked (Draw, or a Meter's
//     Write past its interval); nothing here starts a goroutine.
//   - Whether to draw at all (is the output a terminal?) is the caller's
//     decision; this package never inspects the file it writes to.
package progress

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// DefaultWidth is the terminal width assumed when $COLUMNS does not say.
const DefaultWidth = 80

// minWidth is the narrowest width lines are laid out for; narrower
// terminals get lines cut at minWidth-1 columns.
const minWidth = 20

// Width returns the terminal width from $COLUMNS, as looked up by lookup
// (os.LookupEnv), or DefaultWidth when it is unset or not a positive
// number. Shells set COLUMNS without exporting it, so DefaultWidth is the
// common answer for a child process.
func Width(lookup func(string) (string, bool)) int {
	if lookup != nil {
		if v, ok := lookup("COLUMNS"); ok {
			if n, err := strconv.Atoi(strings.TrimSpace(v)); err == nil && n > 0 {
				return n
			}
		}
	}
	return DefaultWidth
}

// Size formats n bytes with decimal (SI) units and three significant
// digits, as container tools print image sizes: "512 B", "1.50 kB",
// "27.1 MB", "312 GB".
func Size(n int64) string {
	if n < 0 {
		if n == math.MinInt64 {
			n++ // -n would overflow; one byte is below the precision shown
		}
		return "-" + Size(-n)
	}
	if n < 1000 {
		return strconv.FormatInt(n, 10) + " B"
	}
	units := []string{"kB", "MB", "GB", "TB", "PB", "EB"}
	v := float64(n)
	i := -1
	for v >= 999.5 && i < len(units)-1 {
		v /= 1000
		i++
	}
	switch {
	case v < 9.995:
		return fmt.Sprintf("%.2f %s", v, units[i])
	case v < 99.95:
		return fmt.Sprintf("%.1f %s", v, units[i])
	default:
		return fmt.Sprintf("%.0f %s", v, units[i])
	}
}

// Bar is one line of progress.
type Bar struct {
	Label   string
	Current int64 // bytes done
	Total   int64 // bytes in all; 0 or less: unknown (no bar, no percentage)
	Status  string
}

// Line renders b in at most width-1 columns (runes): the label (cut with
// "…" when long), a bar when there is room and the total is known, the
// percentage, "current / total" and the status.
func Line(b Bar, width int) string {
	width = max(width, minWidth) - 1
	known := b.Total > 0
	var pct, sizes, status string
	if known {
		pct = fmt.Sprintf(" %3d%%", int(fraction(b.Current, b.Total)*100))
		sizes = "  " + Size(b.Current) + " / " + Size(b.Total)
	} else if b.Current > 0 {
		sizes = "  " + Size(b.Current)
	}
	if b.Status != "" {
		status = "  " + b.Status
	}
	// The label gets up to a third of the line (at least 16 columns); on a
	// narrow line the sizes, then the percentage go before the label is
	// cut below that.
	labelMax := max(16, width/3)
	labelWant := min(labelMax, utf8.RuneCountInString(b.Label))
	tail := pct + sizes + status
	for _, t := range []string{pct + status, status} {
		if width-utf8.RuneCountInString(tail) >= labelWant {
			break
		}
		tail = t
	}
	rest := width - utf8.RuneCountInString(tail)
	label := cut(b.Label, min(labelMax, max(rest, 1)))
	line := label
	if known {
		barWidth := rest - labelMax - 1 // the padded label, a space, the bar
		if barWidth >= 10 {
			line = pad(label, labelMax) + " " + bar(b.Current, b.Total, barWidth)
		}
	}
	return cut(line+tail, width)
}

// bar draws [=====>    ] in width columns, brackets included.
func bar(cur, total int64, width int) string {
	inner := width - 2
	filled := int(fraction(cur, total) * float64(inner))
	var s strings.Builder
	s.WriteByte('[')
	s.WriteString(strings.Repeat("=", filled))
	if filled < inner {
		s.WriteByte('>')
		s.WriteString(strings.Repeat(" ", inner-filled-1))
	}
	s.WriteByte(']')
	return s.String()
}

// fraction is cur/total in [0, 1], in floating point so that no byte
// count overflows it; total must be positive.
func fraction(cur, total int64) float64 {
	return min(1, max(0, float64(cur)/float64(total)))
}

// cut shortens s to n runes, ending it with "…" when it was longer.
func cut(s string, n int) string {
	if utf8.RuneCountInString(s) <= n {
		return s
	}
	if n <= 0 {
		return ""
	}
	r := []rune(s)
	return string(r[:n-1]) + "…"
}

func pad(s string, n int) string {
	if k := utf8.RuneCountInString(s); k < n {
		return s + strings.Repeat(" ", n-k)
	}
	return s
}

// ANSI control sequences (ECMA-48): CUU moves the cursor up, EL 2 erases
// the whole line.
const (
	eraseLine = "\x1b[2K"
	cursorUp  = "\x1b[%dA"
)

// Board redraws a set of bars in place on a terminal. The zero value is not
// usable; use NewBoard. A Board is not safe for concurrent use.
type Board struct {
	w     io.Writer
	width int
	drawn int // lines drawn by the previous Draw, where the cursor is below
}

// NewBoard returns a Board drawing lines of at most width-1 columns on w.
func NewBoard(w io.Writer, width int) *Board {
	return &Board{w: w, width: width}
}

// Draw replaces what the previous Draw drew with bars, one line each, and
// leaves the cursor below the last line. Lines left over from a longer
// previous Draw are erased.
func (b *Board) Draw(bars []Bar) error {
	var s strings.Builder
	if b.drawn > 0 {
		fmt.Fprintf(&s, cursorUp, b.drawn)
	}
	for _, bar := range bars {
		s.WriteString("\r" + eraseLine + Line(bar, b.width) + "\n")
	}
	if extra := b.drawn - len(bars); extra > 0 {
		for range extra {
			s.WriteString("\r" + eraseLine + "\n")
		}
		fmt.Fprintf(&s, cursorUp, extra)
	}
	b.drawn = len(bars)
	_, err := io.WriteString(b.w, s.String())
	return err
}

// Meter is an io.Writer that counts the bytes written to it (put it in an
// io.TeeReader or io.MultiWriter beside a copy) and redraws one bar at most
// once per interval. Finish draws the final state.
type Meter struct {
	board    *Board
	bar      Bar
	interval time.Duration
	now      func() time.Time
	last     time.Time
	err      error // the first error drawing; drawing stops after it
}

// DefaultInterval is how often a Meter redraws: often enough to look
// live, seldom enough to cost nothing next to the copy it measures.
const DefaultInterval = 100 * time.Millisecond

// NewMeter returns a Meter drawing a bar labelled label on w, total bytes
// in all (0 or less: unknown).
func NewMeter(w io.Writer, width int, label string, total int64) *Meter {
	return &Meter{
		board:    NewBoard(w, width),
		bar:      Bar{Label: label, Total: total},
		interval: DefaultInterval,
		now:      time.Now,
	}
}

// Write counts p; it never fails, so a broken terminal cannot break the
// copy it measures.
func (m *Meter) Write(p []byte) (int, error) {
	m.bar.Current += int64(len(p))
	if t := m.now(); m.last.IsZero() || t.Sub(m.last) >= m.interval {
		m.last = t
		m.draw()
	}
	return len(p), nil
}

// Count is the number of bytes written so far.
func (m *Meter) Count() int64 { return m.bar.Current }

// Finish draws the bar a last time with status (e.g. "done") and returns
// the first error drawing met, if any.
func (m *Meter) Finish(status string) error {
	m.bar.Status = status
	m.draw()
	return m.err
}

func (m *Meter) draw() {
	if m.err == nil {
		m.err = m.board.Draw([]Bar{m.bar})
	}
}
