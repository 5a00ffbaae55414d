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

// TestProbeTerminalEscapesFromUntrustedSources: text chosen by parties
// that are not the operator reaches the operator's terminal unescaped in
// the CLI's table output:
//   - the node id of any SDS client (unauthenticated) in
//     `mtls-certificate describe` ("Subscribers (node/cluster)");
//   - the HTTP reason phrase of a CRL distribution point (a remote server,
//     or whoever sits on its plain-HTTP path) in `crl list` / `crl describe`
//     ("LAST ERROR").
func TestProbeTerminalEscapesFromUntrustedSources(t *testing.T) {
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
	if r := p.run("crl", "list"); strings.Contains(r.stdout, "\x1b") {
		t.Errorf("crl list prints a CRL server's reason phrase raw (terminal escapes): %q", r.stdout)
	}

	cert, key, _ := outboundFiles(t, "esc")
	var m api.MTLSCertificate
	p.runJSON(t, &m, "mtls-certificate", "create", "--cert", cert, "--key", key, "--name", "esc", "--environment-type", "development")
	newSotW(t, p.addrs.SDS, "envoy"+esc+"nobody", "c", "esc").next("secret")
	if r := p.run("mtls-certificate", "describe", "--cert-id", m.ID); strings.Contains(r.stdout, "\x1b") {
		t.Errorf("mtls-certificate describe prints an SDS client's node id raw (terminal escapes): %q", r.stdout)
	}
}
