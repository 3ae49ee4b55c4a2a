//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	cdpbrowser "github.com/chromedp/cdproto/browser"
	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// Bounds of the browser scenarios.
const (
	// browserStartTimeout bounds starting Chromium and opening its tab.
	browserStartTimeout = time.Minute
	// uiStepTimeout bounds one step of a scenario: a navigation, a click and
	// the page state it should lead to.
	uiStepTimeout = 30 * time.Second
	// uiJobTimeout bounds waiting for a prefetch job to finish.
	uiJobTimeout = 2 * time.Minute
)

// browser is one headless Chromium with one tab, for one test. It accepts
// (or dismisses) every JavaScript dialog and collects what the page reports
// as going wrong: uncaught exceptions, console errors and Content-Security-
// Policy violations. Both run on goroutines the browser owns and waits for
// in its cleanup, which also fails the test if the page reported problems.
type browser struct {
	t   *testing.T
	ctx context.Context // the tab: every action runs here

	acceptDialogs atomic.Bool

	wg       sync.WaitGroup
	mu       sync.Mutex
	dialogs  []string // messages of the dialogs shown
	problems []string
}

// newBrowser starts Chromium (the suite's tool lookup finds it; need skips
// or, in CI, fails without it) and opens a blank tab.
func newBrowser(t *testing.T) *browser {
	t.Helper()
	exe := need(t, "chromium")[0]

	// Chromium's own output goes next to wharf's log, kept on failure.
	logPath := filepath.Join(suite.dir, "chromium-"+fileName(t.Name())+".log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(exe),
		chromedp.Headless,
		chromedp.NoSandbox, // the suite runs as root
		chromedp.DisableGPU,
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.NoFirstRun,
		chromedp.UserDataDir(t.TempDir()),
		chromedp.WindowSize(1280, 800),
		chromedp.CombinedOutput(logFile),
	)
	allocCtx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancelTab := chromedp.NewContext(allocCtx)
	b := &browser{t: t, ctx: ctx}
	b.acceptDialogs.Store(true)
	t.Cleanup(func() {
		cancelTab()
		cancelAlloc() // kills Chromium and waits for it to exit
		b.wg.Wait()
		logFile.Close()
		b.mu.Lock()
		defer b.mu.Unlock()
		for _, p := range b.problems {
			t.Errorf("the page reported: %s", p)
		}
	})

	// The first action starts the browser and binds its life to ctx, so it
	// runs without a deadline of its own; the watchdog bounds it instead.
	watchdog := time.AfterFunc(browserStartTimeout, cancelAlloc)
	err = chromedp.Do(ctx)
	if !watchdog.Stop() {
		t.Fatalf("chromium did not start within %v; its output:\n%s", browserStartTimeout, tailFile(logPath, 3000))
	}
	if err != nil {
		t.Fatalf("starting chromium (%s): %v; its output:\n%s", exe, err, tailFile(logPath, 3000))
	}
	if v, err := chromedp.CallBrowser(ctx, cdpbrowser.GetVersion, cdp.Empty{}); err == nil {
		t.Logf("browser: %s", v.Product)
	}

	// Subscribe before anything loads, so that nothing is missed.
	messages := chromedp.Console(ctx)
	dialogs := chromedp.Events(ctx, page.JavascriptDialogOpening)
	b.wg.Go(func() {
		for m, err := range messages {
			if err != nil {
				return // the tab closed
			}
			b.console(m)
		}
	})
	b.wg.Go(func() {
		for ev, err := range dialogs {
			if err != nil {
				return
			}
			b.mu.Lock()
			b.dialogs = append(b.dialogs, ev.Message)
			b.mu.Unlock()
			// The page is blocked, and with it the click that opened the
			// dialog, until this answers.
			accept := b.acceptDialogs.Load()
			if _, err := chromedp.Call(ctx, page.HandleJavaScriptDialog, page.HandleJavaScriptDialogParams{Accept: accept}); err != nil && ctx.Err() == nil {
				b.problem(fmt.Sprintf("answering the dialog %q: %v", ev.Message, err))
			}
		}
	})
	return b
}

// console records a console message that means something is broken. A
// failed network request is the page's business (a 404 after a delete is
// expected); an exception, a console error or a CSP violation is not.
func (b *browser) console(m chromedp.ConsoleMessage) {
	if m.IsException() || (m.Type == chromedp.ConsoleError && m.Source != "network") {
		where := ""
		if m.URL != "" {
			where = fmt.Sprintf(" (%s:%d)", m.URL, m.Line+1)
		}
		b.problem(m.String() + where)
	}
}

func (b *browser) problem(p string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.problems = append(b.problems, p)
}

// takeDialogs returns the messages of the dialogs shown since the last call.
func (b *browser) takeDialogs() []string {
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.dialogs
	b.dialogs = nil
	return d
}

// do runs actions within uiStepTimeout; a failure ends the test with what
// the page showed and a screenshot of it.
func (b *browser) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	b.t.Helper()
	ctx, cancel := context.WithTimeout(b.ctx, uiStepTimeout)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		b.fail(what, err)
	}
}

// fail ends the test, saving a screenshot and quoting the page's text.
func (b *browser) fail(what string, err error) {
	b.t.Helper()
	shot := b.screenshot("failure")
	text, terr := runIn(b, 5*time.Second, chromedp.Evaluate[string](`document.body ? document.body.innerText : ''`))
	if terr != nil {
		text = fmt.Sprintf("(unreadable: %v)", terr)
	}
	b.t.Fatalf("%s: %v\nscreenshot: %s\npage text:\n%s", what, err, shot, clip(text, 4000))
}

// runIn runs one action with a value within timeout.
func runIn[T any](b *browser, timeout time.Duration, a chromedp.Action[T]) (T, error) {
	ctx, cancel := context.WithTimeout(b.ctx, timeout)
	defer cancel()
	return chromedp.Run(ctx, a)
}

// value runs one action with a value within uiStepTimeout; a failure ends
// the test as do does.
func value[T any](b *browser, what string, a chromedp.Action[T]) T {
	b.t.Helper()
	v, err := runIn(b, uiStepTimeout, a)
	if err != nil {
		b.fail(what, err)
	}
	return v
}

// poll waits until the JavaScript expression is truthy and returns its
// value; expressions are evaluated on every animation frame, at most until
// timeout.
func poll[T any](b *browser, what string, timeout time.Duration, expr string) T {
	b.t.Helper()
	v, err := runIn(b, timeout+5*time.Second, chromedp.Poll[T](expr, chromedp.WithPollingTimeout(timeout)))
	if err != nil {
		b.fail(what, err)
	}
	return v
}

// css is a CSS selector.
func css(sel string) chromedp.CSS { return chromedp.CSS(sel) }

// artifactsDir is $WHARF_E2E_ARTIFACTS, or test/e2e/artifacts (git-ignored).
func artifactsDir() (string, error) {
	dir := os.Getenv("WHARF_E2E_ARTIFACTS")
	if dir == "" {
		dir = "artifacts" // the tests run in test/e2e
	}
	dir, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	return dir, os.MkdirAll(dir, 0o755)
}

// screenshot saves a full-page PNG as <artifacts>/<test>-<label>.png, logs
// and returns its path. A screenshot that cannot be taken is logged, not a
// failure: it documents the test, it does not decide it.
func (b *browser) screenshot(label string) string {
	b.t.Helper()
	dir, err := artifactsDir()
	if err != nil {
		b.t.Logf("screenshot %s: %v", label, err)
		return ""
	}
	// What a script bug prints where a value should be.
	if junk, err := runIn(b, 5*time.Second, chromedp.Evaluate[string](
		`(document.body.innerText.match(/\b(undefined|null|NaN)\b|\[object Object\]/) || [''])[0]`)); err == nil && junk != "" {
		b.problem(fmt.Sprintf("the page shows %q (at the %s screenshot)", junk, label))
	}
	png, err := runIn(b, uiStepTimeout, chromedp.FullScreenshot(100)) // quality 100: PNG
	if err != nil {
		b.t.Logf("screenshot %s: %v", label, err)
		return ""
	}
	p := filepath.Join(dir, fileName(b.t.Name())+"-"+label+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		b.t.Logf("screenshot %s: %v", label, err)
		return ""
	}
	b.t.Logf("screenshot %s: %s", label, p)
	return p
}

// fileName makes a test name usable as a file name.
func fileName(s string) string {
	return strings.Trim(regexp.MustCompile(`[^A-Za-z0-9._-]+`).ReplaceAllString(s, "_"), "_")
}

// jsString quotes s for a JavaScript expression: a JSON string is a
// JavaScript string literal.
func jsString(s string) string {
	b, err := json.Marshal(s)
	if err != nil {
		panic(err) // a Go string always marshals
	}
	return string(b)
}
