package main

import (
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/wharf-mirror/wharf/internal/config"
	"github.com/wharf-mirror/wharf/internal/server"
)

const caUsage = `Usage: wharf ca [--config FILE] [--data-dir DIR]

Print wharf's CA certificate (PEM) to standard output, creating the CA in
<data_dir>/ca on first use. Clients of the HTTPS_PROXY mode trust it, e.g.:

  wharf ca > /usr/local/share/ca-certificates/wharf.crt && update-ca-certificates
  wharf ca > /etc/docker/certs.d/quay.io/ca.crt

A running wharf also serves it at http://<listen>/ca.crt.

Flags:
`

// printCA implements "wharf ca". The CA's files are written atomically, so
// it may run beside a server on the same data directory.
func printCA(args []string, std stdio) int {
	fs := flag.NewFlagSet("wharf ca", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	configFile := fs.String("config", "", "YAML configuration `file` (env WHARF_CONFIG)")
	dataDir := fs.String("data-dir", "", "cache `directory` (default: the configuration's data_dir)")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(std.out, caUsage)
			fs.SetOutput(std.out)
			fs.PrintDefaults()
			return exitOK
		}
		fmt.Fprintf(std.err, "wharf ca: %v (see wharf ca --help)\n", err)
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(std.err, "wharf ca: unexpected argument %q (see wharf ca --help)\n", fs.Arg(0))
		return exitUsage
	}
	file := *configFile
	if file == "" && std.lookupEnv != nil {
		file, _ = std.lookupEnv(config.EnvPrefix + "CONFIG")
	}
	cfg, err := config.Load(file, std.lookupEnv)
	if err != nil {
		fmt.Fprintf(std.err, "wharf ca: %s\n", oneLine(err))
		return exitUsage
	}
	if *dataDir != "" {
		cfg.DataDir = *dataDir
	}
	ca, err := server.LoadCA(cfg.DataDir)
	if err != nil {
		fmt.Fprintf(std.err, "wharf ca: %s\n", oneLine(err))
		return exitFailed
	}
	std.out.Write(ca.CertPEM())
	return exitOK
}
