package main

// The client subcommands (stats, ls, rm, gc, prefetch, export, import)
// share what is in this file: exit codes, common flags, argument parsing
// and help text, and how a command reaches a wharf. They all speak the
// admin API through one adminapi.Client, whether the server is another
// process or one started inside the CLI on the data directory, so both
// paths run the same code.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/wharf-mirror/wharf/internal/adminapi"
	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/progress"
	"github.com/wharf-mirror/wharf/internal/server"
)

// Exit codes of every subcommand. They are documented in the top-level
// usage; scripts depend on them.
const (
	exitOK          = 0
	exitFailed      = 1   // the operation failed, or partly failed
	exitUsage       = 2   // bad flag or argument
	exitNoServer    = 3   // no server reachable and the data directory could not be opened
	exitNotFound    = 4   // rm or ls of something not cached
	exitInterrupted = 130 // interrupted (SIGINT), after cleaning up
)

const exitCodesHelp = `Exit codes:
  0    success
  1    the operation failed, or partly failed (a prefetch reference failed, an import was rejected)
  2    usage error: a bad flag or argument
  3    no wharf server answers and the data directory could not be opened
  4    not found: the thing to list or remove is not cached
  130  interrupted
`

// exitError carries the exit code an error ends the command with.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func withCode(code int, err error) error { return &exitError{code: code, err: err} }

func usageErrorf(format string, args ...any) error {
	return withCode(exitUsage, fmt.Errorf(format, args...))
}

// stdio is the process's outside world as a command sees it, so tests can
// run commands in-process with buffers and a chosen environment.
type stdio struct {
	in        io.Reader
	out, err  io.Writer
	outTTY    bool // stdout is a terminal
	errTTY    bool // stderr is a terminal: draw progress bars
	lookupEnv func(string) (string, bool)
}

// osStdio is the real one.
func osStdio() stdio {
	return stdio{
		in: os.Stdin, out: os.Stdout, err: os.Stderr,
		outTTY: isTerminal(os.Stdout), errTTY: isTerminal(os.Stderr),
		lookupEnv: os.LookupEnv,
	}
}

// isTerminal tells whether f is a character device: a terminal, as far as
// this needs to know, without a dependency on a terminal library.
func isTerminal(f *os.File) bool {
	st, err := f.Stat()
	return err == nil && st.Mode()&os.ModeCharDevice != 0
}

func (io stdio) env(name string) string {
	if io.lookupEnv == nil {
		return ""
	}
	v, _ := io.lookupEnv(name)
	return v
}

// commonFlags are the flags of every client subcommand.
type commonFlags struct {
	server, token, configFile, dataDir string
	json, verbose                      bool
}

func (c *commonFlags) register(fs *flag.FlagSet, std stdio) {
	fs.StringVar(&c.server, "server", std.env("WHARF_SERVER"), "admin API `URL` of a running wharf, e.g. http://10.0.0.5:5080 (env WHARF_SERVER)")
	fs.StringVar(&c.token, "token", "", "admin API bearer `token` (env WHARF_ADMIN_TOKEN; default: the configuration's admin_token)")
	fs.StringVar(&c.configFile, "config", std.env(config.EnvPrefix+"CONFIG"), "YAML configuration `file` (env WHARF_CONFIG)")
	fs.StringVar(&c.dataDir, "data-dir", "", "work on this cache `directory` directly, without asking a server")
	fs.BoolVar(&c.json, "json", false, "machine-readable JSON output")
	fs.BoolVar(&c.verbose, "verbose", false, "say which server or data directory is used")
	fs.BoolVar(&c.verbose, "v", false, "short for --verbose")
}

// cmdDoc is a subcommand's help text.
type cmdDoc struct {
	name     string
	synopsis string // after "Usage: wharf NAME "
	summary  string // one line for the top-level usage
	about    string // paragraphs after the usage line
	examples string
}

func (d cmdDoc) printHelp(w io.Writer, fs *flag.FlagSet) {
	fmt.Fprintf(w, "Usage: wharf %s %s\n\n%s\n", d.name, d.synopsis, strings.TrimSpace(d.about))
	fmt.Fprint(w, "\nFlags:\n")
	printFlags(w, fs)
	fmt.Fprintf(w, "\nExamples:\n%s\n", strings.TrimRight(d.examples, "\n"))
	fmt.Fprintf(w, "\nWhich wharf: --server (or WHARF_SERVER) names a running one. Otherwise the\n"+
		"admin API at the configuration's admin_listen is asked; when nothing answers\n"+
		"there (or --data-dir is given), the command opens the data directory itself.\n\n%s", exitCodesHelp)
}

// printFlags lists fs's flags as "--name VALUE" (one dash for one-letter
// names), each with its usage on the next line; the flag package accepts
// both spellings.
func printFlags(w io.Writer, fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		dashes := "--"
		if len(f.Name) == 1 {
			dashes = "-"
		}
		value, usage := flag.UnquoteUsage(f)
		if value != "" {
			value = " " + value
		}
		fmt.Fprintf(w, "  %s%s%s\n    \t%s\n", dashes, f.Name, value, usage)
	})
}

// errHelp is returned by parse after printing help: the command ends with
// exit code 0.
var errHelp = errors.New("help printed")

// parse parses args with fs; flags may come before, between or after the
// arguments ("wharf import x.tar --data-dir d"); "--" ends the flags. It
// prints help on -h/--help and returns errHelp.
func parse(fs *flag.FlagSet, doc cmdDoc, std stdio, args []string) ([]string, error) {
	fs.SetOutput(io.Discard) // errors are reported as one line by the caller
	var pos []string
	for {
		before := len(args)
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				doc.printHelp(std.out, fs)
				return nil, errHelp
			}
			return nil, withCode(exitUsage, err)
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		// Parse stopped at an argument, or consumed a "--" before it.
		if consumed := before - len(rest); consumed > 0 && args[consumed-1] == "--" {
			return append(pos, rest...), nil
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
}

// target is the admin API a command talks to, and how to let go of it.
type target struct {
	client *adminapi.Client
	// local: the data directory was opened in this process; no server
	// runs, so its traffic counters are this command's.
	local bool
	close func()
}

// connect finds the wharf a command works on (see printHelp) and returns a
// client for its admin API. create tells whether the command may create
// the data directory (prefetch, import); the others report a missing one.
func connect(ctx context.Context, std stdio, cf *commonFlags, create bool) (*target, error) {
	lookup := std.lookupEnv
	if lookup == nil {
		lookup = func(string) (string, bool) { return "", false }
	}
	cfg, err := config.Load(cf.configFile, lookup)
	if err != nil {
		return nil, withCode(exitUsage, err)
	}
	resolveErr := cfg.Resolve(os.ReadFile, lookup)
	token := cf.token
	if token == "" {
		token = cfg.ResolvedAdminToken() // WHARF_ADMIN_TOKEN or the file
	}
	hc := &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
	closeHTTP := func() { hc.CloseIdleConnections() }
	verbosef := func(format string, args ...any) {
		if cf.verbose {
			fmt.Fprintf(std.err, "wharf: "+format+"\n", args...)
		}
	}

	if cf.server != "" {
		c := &adminapi.Client{BaseURL: strings.TrimRight(cf.server, "/"), Token: token, HTTP: hc}
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if err := c.Healthz(pctx); err != nil {
			closeHTTP()
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, withCode(exitNoServer, fmt.Errorf("no wharf answers at %s: %w", cf.server, transportCause(err)))
		}
		verbosef("using the wharf at %s", c.BaseURL)
		return &target{client: c, close: closeHTTP}, nil
	}

	adminURL := adminURLOf(cfg.AdminListen)
	if cf.dataDir == "" && adminURL != "" {
		c := &adminapi.Client{BaseURL: adminURL, Token: token, HTTP: hc}
		pctx, cancel := context.WithTimeout(ctx, time.Second)
		err := c.Healthz(pctx)
		cancel()
		if err == nil {
			verbosef("using the wharf at %s (admin_listen)", adminURL)
			return &target{client: c, close: closeHTTP}, nil
		}
		if ctx.Err() != nil {
			closeHTTP()
			return nil, ctx.Err()
		}
		verbosef("no wharf answers at %s: %v", adminURL, transportCause(err))
	}

	// Nobody to ask: open the data directory in this process.
	if cf.dataDir != "" {
		cfg.DataDir = cf.dataDir
	}
	nobody := "no wharf answers at " + adminURL
	if cf.dataDir != "" {
		nobody = "--data-dir given"
	} else if adminURL == "" {
		nobody = "admin_listen is disabled"
	}
	if !create {
		if _, err := os.Stat(cfg.DataDir); errors.Is(err, os.ErrNotExist) {
			closeHTTP()
			return nil, withCode(exitNoServer, fmt.Errorf("%s and data directory %s does not exist", nobody, cfg.DataDir))
		}
	}
	if err := errors.Join(cfg.Validate(), resolveErr); err != nil {
		closeHTTP()
		return nil, withCode(exitUsage, err)
	}
	log := slog.New(slog.DiscardHandler)
	if cf.verbose {
		log = slog.New(slog.NewTextHandler(std.err, &slog.HandlerOptions{Level: slog.LevelInfo}))
	}
	inst, err := server.New(ctx, cfg, server.Options{Logger: log, Version: buildVersion()})
	if err != nil {
		closeHTTP()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if errors.Is(err, server.ErrDataDirInUse) {
			if adminURL != "" && cf.dataDir == "" {
				return nil, withCode(exitNoServer, fmt.Errorf("data directory %s is in use by a running wharf whose admin API at %s does not answer; pass --server URL", cfg.DataDir, adminURL))
			}
			return nil, withCode(exitNoServer, fmt.Errorf("data directory %s is in use by a running wharf; pass --server URL to use its admin API", cfg.DataDir))
		}
		return nil, withCode(exitNoServer, fmt.Errorf("%s and data directory %s could not be opened: %w", nobody, cfg.DataDir, err))
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		inst.Close()
		closeHTTP()
		return nil, withCode(exitNoServer, fmt.Errorf("in-process admin API: %w", err))
	}
	srv := &http.Server{Handler: inst.AdminHandler(), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan struct{})
	go func() {
		defer close(served)
		_ = srv.Serve(ln) // ends with ErrServerClosed on Shutdown
	}()
	verbosef("opened data directory %s in this process (%s)", cfg.DataDir, nobody)
	// This server checks the configuration's token, whatever --token says.
	c := &adminapi.Client{BaseURL: "http://" + ln.Addr().String(), Token: cfg.ResolvedAdminToken(), HTTP: hc}
	return &target{client: c, local: true, close: func() {
		closeHTTP()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close()
		}
		<-served
		inst.Close()
	}}, nil
}

// transportCause is the part of a failed request's error that says why
// (dial tcp …: connection refused) without the request repeated around it.
func transportCause(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// adminURLOf is the URL of the admin listener at addr (host:port), with a
// wildcard host replaced by loopback; "" when the admin listener is off or
// addr is malformed.
func adminURLOf(addr string) string {
	if addr == "" {
		return ""
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return ""
	}
	switch host {
	case "", "0.0.0.0":
		host = "127.0.0.1"
	case "::":
		host = "::1"
	}
	return "http://" + net.JoinHostPort(host, port)
}

// command is one client subcommand.
type command struct {
	doc cmdDoc
	// create: the command may create the data directory when it opens it
	// itself.
	create bool
	// flags registers the command's own flags; run parses them with the
	// common flags.
	flags func(fs *flag.FlagSet)
	// check validates the arguments before anything is contacted; a usage
	// error ends the command with exit code 2.
	check func(args []string) error
	run   func(ctx context.Context, t *target, args []string) error
}

// runCommand parses args, connects and runs cmd, and turns the outcome
// into an exit code, reporting a failure as one line on stderr.
func runCommand(ctx context.Context, std stdio, cf *commonFlags, cmd command, args []string) int {
	pos, err := parse(newFlagSet(cmd, std, cf), cmd.doc, std, args)
	if err == nil && cmd.check != nil {
		err = cmd.check(pos)
	}
	if err == nil {
		var t *target
		if t, err = connect(ctx, std, cf, cmd.create); err == nil {
			err = cmd.run(ctx, t, pos)
			t.close()
		}
	}
	return report(ctx, std, cmd.doc.name, err)
}

// newFlagSet has the common flags and cmd's own.
func newFlagSet(cmd command, std stdio, cf *commonFlags) *flag.FlagSet {
	fs := flag.NewFlagSet("wharf "+cmd.doc.name, flag.ContinueOnError)
	cf.register(fs, std)
	if cmd.flags != nil {
		cmd.flags(fs)
	}
	return fs
}

// report prints err as "wharf NAME: …" and returns its exit code.
func report(ctx context.Context, std stdio, name string, err error) int {
	if err == nil || errors.Is(err, errHelp) {
		return exitOK
	}
	if ctx.Err() != nil && errors.Is(err, context.Canceled) {
		fmt.Fprintf(std.err, "wharf %s: interrupted\n", name)
		return exitInterrupted
	}
	code := exitFailed
	var ee *exitError
	if errors.As(err, &ee) {
		code = ee.code
	}
	msg := strings.ReplaceAll(err.Error(), "\n", "; ")
	switch {
	case code == exitUsage:
		fmt.Fprintf(std.err, "wharf %s: %s (see wharf %s --help)\n", name, msg, name)
	case errors.Is(err, adminapi.ErrUnauthorized):
		fmt.Fprintf(std.err, "wharf %s: %s (pass --token or set WHARF_ADMIN_TOKEN)\n", name, msg)
	default:
		fmt.Fprintf(std.err, "wharf %s: %s\n", name, msg)
	}
	return code
}

// newMeter returns a progress meter on stderr when it is a terminal, nil
// otherwise.
func newMeter(std stdio, label string, total int64) *progress.Meter {
	if !std.errTTY {
		return nil
	}
	return progress.NewMeter(std.err, progress.Width(std.lookupEnv), label, total)
}
