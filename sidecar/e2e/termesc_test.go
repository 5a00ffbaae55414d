package e2e

import (
	"bufio"
	"fmt"
	"math/big"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mtlsgate/mtlsgate/internal/testpki"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

const esc = "\x1b]0;pwned\x07\x1b[2K\r"

// TestUntrustedTextIsEscapedOnTheTerminal protects the operator's
// terminal from text chosen by parties that are not the operator, which the
// CLI's table output shows:
//   - the node id any SDS client (unauthenticated) sends, in
//     `mtls-certificate describe` ("Subscribers (node/cluster)");
//   - the HTTP reason phrase of a CRL distribution point (a remote server,
//     or whoever sits on its plain-HTTP path), in `crl list`, `crl describe`
//     and `ca-certificate describe` ("LAST ERROR"), and in the stored error.
//
// Printed raw, escape sequences in them retitle the window, erase and
// rewrite what the table shows, or worse on some terminals.
func TestUntrustedTextIsEscapedOnTheTerminal(t *testing.T) {
	root := testpki.Must(testpki.NewRoot(testpki.Options{CommonName: "Esc Root"}))
	good := testpki.Must(root.CRL(testpki.CRLOptions{Number: big.NewInt(1), NextUpdate: time.Now().Add(2 * time.Second)}))
	var broken atomic.Bool
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func(c net.Conn) {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					l, err := br.ReadString('\n')
					if err != nil || l == "\r\n" {
						break
					}
				}
				if broken.Load() {
					fmt.Fprintf(c, "HTTP/1.1 503 Unavailable%sLAST ERROR looks fine\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", esc)
					return
				}
				fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", len(good), good)
			}(c)
		}
	}()

	p := startServe(t, t.TempDir(), "--crl-refresh-min-interval", "200ms")
	var ca api.CACertificate
	p.runJSON(t, &ca, "ca-certificate", "create", "--name", "esc_root", "--cert", writeFile(t, "r.pem", root.PEM()))
	var crl api.CRL
	p.runJSON(t, &crl, "crl", "create", "--cert-id", ca.ID, "--url", "http://"+ln.Addr().String()+"/r.crl")
	broken.Store(true)
	waitFor(t, "a failed refresh", func() bool {
		var c api.CRL
		p.runJSON(t, &c, "crl", "describe", "--crl-id", crl.ID)
		return c.LastError != ""
	})
	for _, args := range [][]string{{"crl", "list"}, {"crl", "describe", "--crl-id", crl.ID}, {"ca-certificate", "describe", "--cert-id", ca.ID}} {
		r := p.run(args...)
		if strings.Contains(r.stdout, "\x1b") || strings.Contains(r.stdout, "\a") {
			t.Errorf("%s prints a CRL server's reason phrase raw (terminal escapes): %q", strings.Join(args, " "), r.stdout)
		} else if !strings.Contains(r.stdout, `503 Unavailable\x1b]0;pwned\x07`) {
			t.Errorf("%s does not show the escaped reason phrase: %q", strings.Join(args, " "), r.stdout)
		}
	}
	var stored api.CRL
	p.runJSON(t, &stored, "crl", "describe", "--crl-id", crl.ID)
	if strings.ContainsAny(stored.LastError, "\x1b\x07\r") {
		t.Errorf("the stored lastError keeps the server's control characters: %q", stored.LastError)
	}

	cert, key, _ := outboundFiles(t, "esc")
	var m api.MTLSCertificate
	p.runJSON(t, &m, "mtls-certificate", "create", "--cert", cert, "--key", key, "--name", "esc", "--environment-type", "development")
	newSotW(t, p.addrs.SDS, "envoy"+esc+"nobody", "c", "esc").next("secret")
	r := p.run("mtls-certificate", "describe", "--cert-id", m.ID)
	if strings.Contains(r.stdout, "\x1b") || strings.Contains(r.stdout, "\r") {
		t.Errorf("mtls-certificate describe prints an SDS client's node id raw (terminal escapes): %q", r.stdout)
	} else if !strings.Contains(r.stdout, `envoy\x1b]0;pwned`) {
		t.Errorf("mtls-certificate describe does not show the escaped node id: %q", r.stdout)
	}
}
