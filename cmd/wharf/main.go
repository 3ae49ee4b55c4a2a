// Command wharf is a pull-through cache for container registries: one
// endpoint that mirrors Docker Hub, ghcr.io, quay.io, registry.k8s.io and any
// other registry for Docker, containerd, Podman, skopeo and crane.
//
// main only wires: flags → configuration → server → run until a signal.
// The other subcommands (stats, ls, rm, gc, prefetch, export, import) are
// clients of the admin API (cli.go and one file per command); they reach a
// running server, or open the data directory in-process and serve the same
// API to themselves.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/server"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = ""

func main() {
	// One signal context for every command: serve shuts down gracefully,
	// prefetch cancels its job, export removes its partial file.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], osStdio())
	stop()
	os.Exit(code)
}

// clientCommands are the subcommands that work on a cache through the
// admin API, in the order the usage lists them.
var clientCommands = []struct {
	name string
	make func(stdio, *commonFlags) command
}{
	{"stats", statsCommand},
	{"ls", lsCommand},
	{"rm", rmCommand},
	{"gc", gcCommand},
	{"prefetch", prefetchCommand},
	{"export", exportCommand},
	{"import", importCommand},
}

func usage() string {
	var b strings.Builder
	b.WriteString(`wharf — a pull-through cache for container registries

Usage:
  wharf serve [flags]
      run the mirror (see "wharf serve --help")
`)
	for _, c := range clientCommands {
		doc := c.make(stdio{}, &commonFlags{}).doc
		fmt.Fprintf(&b, "  wharf %s\n      %s\n", strings.TrimSpace(doc.name+" "+shortSynopsis(doc.synopsis)), doc.summary)
	}
	b.WriteString(`  wharf ca [--data-dir DIR]
      print wharf's CA certificate (PEM), creating the CA on first use
  wharf version
      print the version
  wharf help [COMMAND]
      show this help, or a command's

The commands after serve work on a running wharf through its admin API
(--server URL, or the admin_listen of the configuration), or, when none
answers, on the data directory directly. "wharf COMMAND --help" shows a
command's flags and examples.

`)
	b.WriteString(exitCodesHelp)
	return b.String()
}

// shortSynopsis drops "[flags]" from a synopsis for the command list.
func shortSynopsis(s string) string {
	return strings.TrimSpace(strings.Replace(s, "[flags]", "", 1))
}

func run(ctx context.Context, args []string, std stdio) int {
	if len(args) == 0 {
		fmt.Fprint(std.err, usage())
		return exitUsage
	}
	for _, c := range clientCommands {
		if c.name == args[0] {
			cf := &commonFlags{}
			return runCommand(ctx, std, cf, c.make(std, cf), args[1:])
		}
	}
	switch args[0] {
	case "serve":
		return serve(ctx, args[1:], std.out, std.err)
	case "version":
		fmt.Fprintln(std.out, "wharf", buildVersion())
		return exitOK
	case "ca":
		return printCA(args[1:], std)
	case "help", "-h", "--help", "-help":
		if len(args) > 1 && args[1] != "serve" {
			return run(ctx, []string{args[1], "--help"}, std)
		}
		if len(args) > 1 {
			return serve(ctx, []string{"--help"}, std.out, std.err)
		}
		fmt.Fprint(std.out, usage())
		return exitOK
	default:
		fmt.Fprintf(std.err, "wharf: unknown command %q\n\n%s", args[0], usage())
		return exitUsage
	}
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}

type serveFlags struct {
	listen, adminListen, proxyListen, transparentListen string
	dataDir, configFile, logLevel, logFormat            string
	upstreams                                           []string
}

func serve(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	var f serveFlags
	fs := flag.NewFlagSet("wharf serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed as one line below
	fs.StringVar(&f.configFile, "config", os.Getenv(config.EnvPrefix+"CONFIG"), "YAML configuration `file` (env WHARF_CONFIG)")
	fs.StringVar(&f.listen, "listen", "", "registry API listen `address` (default :5000)")
	fs.StringVar(&f.adminListen, "admin-listen", "", "admin listener `address`: web UI, admin API, /metrics, /healthz, /readyz (default 127.0.0.1:5080)")
	fs.StringVar(&f.proxyListen, "proxy-listen", "", "HTTPS_PROXY (CONNECT) listener `address`, e.g. :3128 (default off)")
	fs.StringVar(&f.transparentListen, "transparent-listen", "", "transparent TLS listener `address` answering for registry host names, e.g. :443 (default off)")
	fs.StringVar(&f.dataDir, "data-dir", "", "cache `directory` (default ./data)")
	fs.StringVar(&f.logLevel, "log-level", "", "debug, info, warn or error (default info)")
	fs.StringVar(&f.logFormat, "log-format", "", "json, text or auto: text on a terminal (default auto)")
	fs.Func("upstream", "fetch registry NAME from `NAME=URL`, e.g. docker.io=http://127.0.0.1:5001 (repeatable; overrides the file)", func(s string) error {
		if _, _, err := config.ParseUpstreamFlag(s); err != nil {
			return err
		}
		f.upstreams = append(f.upstreams, s)
		return nil
	})
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, "Usage: wharf serve [flags]\n\nRun the mirror. Precedence: flags > WHARF_* environment > config file > defaults.\n\nFlags:\n")
			fs.SetOutput(stdout)
			fs.PrintDefaults()
			fmt.Fprint(stdout, "\nEnvironment:\n")
			for _, e := range config.EnvVars() {
				fmt.Fprintf(stdout, "  %-34s %s\n", e.Name, e.Description)
			}
			return 0
		}
		fmt.Fprintf(stderr, "wharf serve: %v (see wharf serve --help)\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "wharf serve: unexpected argument %q\n", fs.Arg(0))
		return 2
	}

	cfg, err := loadConfig(f)
	if err != nil {
		fmt.Fprintf(stderr, "wharf: %s\n", oneLine(err))
		return 2
	}
	log := newLogger(cfg, stderr)
	if err := runServer(ctx, cfg, log); err != nil {
		log.Error("wharf stopped", "error", err)
		return 1
	}
	return 0
}

// loadConfig applies defaults, the file, the environment and the flags, in
// that order, then resolves secrets and validates the result.
func loadConfig(f serveFlags) (*config.Config, error) {
	cfg, err := config.Load(f.configFile, os.LookupEnv)
	if err != nil {
		return nil, err
	}
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.Listen, f.listen)
	set(&cfg.AdminListen, f.adminListen)
	set(&cfg.Proxy.Listen, f.proxyListen)
	set(&cfg.Transparent.Listen, f.transparentListen)
	set(&cfg.DataDir, f.dataDir)
	set(&cfg.LogLevel, f.logLevel)
	set(&cfg.LogFormat, f.logFormat)
	for _, s := range f.upstreams {
		name, url, _ := config.ParseUpstreamFlag(s)
		cfg.SetUpstreamURL(name, url)
	}
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if err := cfg.Resolve(os.ReadFile, os.LookupEnv); err != nil {
		return nil, err
	}
	return cfg, nil
}

// oneLine joins the problems of a multi-error into one line per problem,
// each prefixed so that every line names what is wrong.
func oneLine(err error) string {
	return strings.ReplaceAll(err.Error(), "\n", "\nwharf: ")
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	var level slog.Level
	_ = level.UnmarshalText([]byte(cfg.LogLevel))
	opts := &slog.HandlerOptions{Level: level}
	format := cfg.LogFormat
	if format == "auto" || format == "" {
		format = "json"
		if f, ok := w.(*os.File); ok {
			if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
				format = "text"
			}
		}
	}
	if format == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

func runServer(ctx context.Context, cfg *config.Config, log *slog.Logger) error {
	inst, err := server.New(ctx, cfg, server.Options{Logger: log, Version: buildVersion()})
	if err != nil {
		return err
	}
	defer inst.Close()
	var l server.Listeners
	opened := []net.Listener{}
	open := func(dst *net.Listener, what, addr string) error {
		if addr == "" {
			return nil
		}
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			for _, o := range opened {
				o.Close()
			}
			return fmt.Errorf("%s: %w", what, err)
		}
		*dst = ln
		opened = append(opened, ln)
		return nil
	}
	for _, o := range []struct {
		dst        *net.Listener
		what, addr string
	}{
		{&l.API, "listen", cfg.Listen},
		{&l.Admin, "admin listen", cfg.AdminListen},
		{&l.Proxy, "proxy listen", cfg.Proxy.Listen},
		{&l.Redirect, "tls redirect listen", cfg.TLS.RedirectListen},
		{&l.Transparent, "transparent listen", cfg.Transparent.Listen},
	} {
		if err := open(o.dst, o.what, o.addr); err != nil {
			return err
		}
	}
	attrs := []any{"listen", l.API.Addr().String(), "tls", cfg.TLSEnabled(), "data_dir", cfg.DataDir, "upstreams", cfg.EnabledUpstreams(), "version", buildVersion()}
	for _, o := range []struct {
		key string
		ln  net.Listener
	}{{"admin_listen", l.Admin}, {"proxy_listen", l.Proxy}, {"redirect_listen", l.Redirect}, {"transparent_listen", l.Transparent}} {
		if o.ln != nil {
			attrs = append(attrs, o.key, o.ln.Addr().String())
		}
	}
	log.Info("wharf serving", attrs...)
	return inst.ServeListeners(ctx, l)
}
