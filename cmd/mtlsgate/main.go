// Command mtlsgate is the sidecar daemon and operator CLI that runs beside each
// Envoy: it serves trust material over SDS and the bundle endpoint, manages it
// through the admin API, verifies certificates offline and runs the local gateway.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/mtlsgate/mtlsgate/filter/policy/verifycmd"
	"github.com/mtlsgate/mtlsgate/gateway/demo"
	"github.com/mtlsgate/mtlsgate/gateway/devcmd"
	"github.com/mtlsgate/mtlsgate/sidecar/cli"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	switch args[0] {
	case "version", "--version":
		return printVersion(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	case "serve", "health", "ca-certificate", "crl", "mtls-certificate", "profile", "audit", "bundle-key":
		return cli.Run(args, stdout, stderr)
	case "verify":
		return verifycmd.Run(args[1:], stdout, stderr)
	case "dev":
		return devcmd.Run(args[1:], stdout, stderr)
	case "demo":
		return demo.Run(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "mtlsgate: unknown command %q; run 'mtlsgate help' for the list\n", args[0])
	return 2
}

// printVersion takes --output like every other command, so scripts and
// inventory tooling can read the version without parsing the text line.
func printVersion(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("version", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	output := fs.String("output", "text", "text or json")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(stdout, "Usage: mtlsgate version [--output json]")
			return 0
		}
		fmt.Fprintf(stderr, "mtlsgate version: %v; the only flag is --output json\n", err)
		return 2
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "mtlsgate version: unexpected argument %q; the only flag is --output json\n", fs.Arg(0))
		return 2
	}
	switch *output {
	case "json":
		_ = json.NewEncoder(stdout).Encode(map[string]string{"version": version})
	case "text", "table":
		fmt.Fprintf(stdout, "mtlsgate %s\n", version)
	default:
		fmt.Fprintf(stderr, "mtlsgate version: --output %q: use --output json, or leave it out for text\n", *output)
		return 2
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprint(w, `mtlsgate — client-certificate authentication for Envoy

Usage: mtlsgate <command> [flags]

Commands:
  serve              run the sidecar: store, SDS, bundle endpoint, admin API
  health             exit 0 if a running serve is ready (for exec probes and HEALTHCHECK)
  ca-certificate     manage client CA certificates (create, list, describe, update, delete)
  crl                manage CRLs of those CAs (create, list, describe, update, delete)
  mtls-certificate   manage outbound client certificates (create, list, describe, update, enable, disable, delete)
  profile            manage authorization profiles (set, list, history, rollback)
  audit              list the audit trail of trust changes kept in the store
  bundle-key         make the key serve signs the trust bundle with; print its public key
  verify             check a client certificate offline against CAs, CRLs and a policy
  dev                local gateway: TLS + x-forwarded-client-cert as Envoy, the real .wasm, an upstream
  demo               demo PKI, sidecar, upstream and gateway in one go (make run; --check for make demo)
  version            print the version
  help               this text

Every command but help takes --output json; run 'mtlsgate <command> -h' for its flags.
`)
}
