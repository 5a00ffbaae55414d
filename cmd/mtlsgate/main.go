// Command mtlsgate is the sidecar daemon and operator CLI that runs beside each
// Envoy: it serves trust material over SDS and the bundle endpoint, manages it
// through the admin API, verifies certificates offline and runs the local gateway.
package main

import (
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
		fmt.Fprintf(stdout, "mtlsgate %s\n", version)
		return 0
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	case "serve", "health", "ca-certificate", "crl", "mtls-certificate", "profile":
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
  verify             check a client certificate offline against CAs, CRLs and a policy
  dev                local gateway: TLS + x-forwarded-client-cert as Envoy, the real .wasm, an upstream
  demo               demo PKI, sidecar, upstream and gateway in one go (make run; --check for make demo)
  version            print the version
  help               this text

Every command takes --output json.
`)
}
