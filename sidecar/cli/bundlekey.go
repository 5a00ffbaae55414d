package cli

import (
	"crypto/ecdsa"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"

	"github.com/mtlsgate/mtlsgate/sidecar/bundlekey"
	"github.com/mtlsgate/mtlsgate/sidecar/problem"
	"github.com/mtlsgate/mtlsgate/sidecar/termtext"
)

// bundleKeyVerbs are `mtlsgate bundle-key`'s subcommands. They work on files
// only, with no sidecar to talk to, so they take neither --server nor
// --admin-token-file and are not part of manage's groups.
var bundleKeyVerbs = []struct{ name, help string }{
	{"create", "make a bundle signing key file (0600) and print its public key"},
	{"public", "print the public key of a bundle signing key file, for trustBundle.publicKeys"},
}

// keyDoc is what both subcommands print with --output json.
type keyDoc struct {
	KeyFile   string `json:"keyFile"`
	KeyID     string `json:"keyId"`
	PublicKey string `json:"publicKey"`
}

func bundleKey(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		w, code := stderr, 2
		if len(args) > 0 {
			w, code = stdout, 0
		}
		fmt.Fprint(w, "Usage: mtlsgate bundle-key <subcommand> [flags]\n\nThe key `mtlsgate serve --bundle-signing-key` signs the trust bundle with; the\nfilter's trustBundle.publicKeys lists its public key.\n\nSubcommands:\n")
		for _, v := range bundleKeyVerbs {
			fmt.Fprintf(w, "  %-9s %s\n", v.name, v.help)
		}
		return code
	}
	name := args[0]
	fs := flag.NewFlagSet("bundle-key "+name, flag.ContinueOnError)
	var out outputFlag
	fs.Var(&out, "output", "table (the public key PEM) or json ({keyFile, keyId, publicKey})")
	var path *string
	switch name {
	case "create":
		path = fs.String("out", "", "file to write the new private key to (PKCS#8 PEM, mode 0600); never overwritten")
	case "public":
		path = fs.String("key", "", "bundle signing key file (PEM PKCS#8 or EC PRIVATE KEY)")
	default:
		names := make([]string, len(bundleKeyVerbs))
		for i, v := range bundleKeyVerbs {
			names[i] = v.name
		}
		fmt.Fprintf(stderr, "mtlsgate bundle-key: unknown subcommand %q; one of: %s\n", name, strings.Join(names, ", "))
		return 2
	}
	if err := parse(fs, args[1:], stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	flagName := map[string]string{"create": "out", "public": "key"}[name]
	if *path == "" {
		fmt.Fprintf(stderr, "mtlsgate bundle-key %s: --%s is required; run with -h for the flags\n", name, flagName)
		return 2
	}
	var key *ecdsa.PrivateKey
	var err error
	if name == "create" {
		key, err = bundlekey.Create(*path)
	} else {
		var data []byte
		if data, err = readFile(flagName, *path); err == nil {
			if key, err = bundlekey.Parse(data); err != nil {
				err = fmt.Errorf("--key %s: %w", *path, err)
			}
		}
	}
	if err != nil {
		fmt.Fprintf(stderr, "mtlsgate bundle-key %s: %s\n", name, termtext.Sanitize(err.Error()))
		if out.json {
			c := &cmd{w: stdout}
			_ = c.json(map[string]any{"error": &problem.Error{Code: "error", Detail: err.Error()}})
		}
		return 1
	}
	doc := keyDoc{KeyFile: *path, KeyID: bundlekey.ID(key), PublicKey: bundlekey.PublicPEM(key)}
	if out.json {
		c := &cmd{w: stdout}
		_ = c.json(doc)
		return 0
	}
	if name == "create" {
		// On stderr, so that stdout is the PEM alone and can be redirected
		// into a file or a configuration template.
		fmt.Fprintf(stderr, "mtlsgate bundle-key create: wrote %s (key %s); start serve with --bundle-signing-key %s and list this public key in the filter's trustBundle.publicKeys:\n", *path, doc.KeyID, *path)
	}
	fmt.Fprint(stdout, doc.PublicKey)
	return 0
}
