// Command wharf is a pull-through cache for container registries: one
// endpoint that mirrors Docker Hub, ghcr.io, quay.io, registry.k8s.io and any
// other registry for Docker, containerd, Podman, skopeo and crane.
//
// main only wires: flags → configuration → server → run until a signal.
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
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

const usage = `wharf — a pull-through cache for container registries

Usage:
  wharf serve [flags]    run the mirror (see "wharf serve --help")
  wharf version          print the version
  wharf help             show this help
`

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return serve(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "wharf", buildVersion())
		return 0
	case "help", "-h", "--help", "-help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "wharf: unknown command %q\n\n%s", args[0], usage)
		return 2
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
	listen, adminListen, dataDir, configFile, logLevel, logFormat string
	upstreams                                                     []string
}

func serve(args []string, stdout, stderr io.Writer) int {
	var f serveFlags
	fs := flag.NewFlagSet("wharf serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed as one line below
	fs.StringVar(&f.configFile, "config", os.Getenv(config.EnvPrefix+"CONFIG"), "YAML configuration `file` (env WHARF_CONFIG)")
	fs.StringVar(&f.listen, "listen", "", "registry API listen `address` (default :5000)")
	fs.StringVar(&f.adminListen, "admin-listen", "", "admin listener `address`: /healthz, /readyz, /metrics (default 127.0.0.1:5080)")
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

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
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
	api, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	var admin net.Listener
	if cfg.AdminListen != "" {
		if admin, err = net.Listen("tcp", cfg.AdminListen); err != nil {
			api.Close()
			return fmt.Errorf("admin listen: %w", err)
		}
	}
	attrs := []any{"listen", api.Addr().String(), "data_dir", cfg.DataDir, "upstreams", cfg.EnabledUpstreams(), "version", buildVersion()}
	if admin != nil {
		attrs = append(attrs, "admin_listen", admin.Addr().String())
	}
	log.Info("wharf serving", attrs...)
	return inst.Serve(ctx, api, admin)
}
