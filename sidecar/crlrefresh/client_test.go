package crlrefresh

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"
)

// TestDownloadRedirectRules protects the sidecar's own loopback listeners
// (the admin API, Envoy's admin port) and the link-local metadata service
// from a CRL server's redirects: the server, or whoever sits on its
// plain-HTTP path, chooses where a redirect leads, and the status of what
// the sidecar reached there came back in `crl list`. A download follows a
// few redirects, never from https to http, and never to a local address
// other than the one the operator's URL names itself.
func TestDownloadRedirectRules(t *testing.T) {
	client := NewClient(5 * time.Second)
	list := []byte("the list")
	internal := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		t.Errorf("a redirect reached another local server: %s", r.URL)
	}))
	defer internal.Close()
	var srv *httptest.Server
	srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/ca.crl":
			w.Write(list)
		case "/moved":
			http.Redirect(w, r, "/ca.crl", http.StatusFound)
		case "/to-internal":
			http.Redirect(w, r, internal.URL+"/v1/ca-certificates", http.StatusFound)
		case "/to-localhost":
			http.Redirect(w, r, "http://localhost:"+port(internal.URL)+"/", http.StatusFound)
		case "/to-metadata":
			http.Redirect(w, r, "http://169.254.169.254/latest/meta-data/", http.StatusFound)
		case "/to-unspecified":
			http.Redirect(w, r, "http://0.0.0.0:"+port(internal.URL)+"/", http.StatusFound)
		case "/to-mapped":
			http.Redirect(w, r, "http://[::ffff:127.0.0.1]:"+port(internal.URL)+"/", http.StatusFound)
		case "/loop":
			http.Redirect(w, r, "/loop", http.StatusFound)
		}
	}))
	defer srv.Close()
	ctx := context.Background()

	if got, err := Fetch(ctx, client, srv.URL+"/moved"); err != nil || string(got) != "the list" {
		t.Errorf("redirect within the server the URL names: %q %v", got, err)
	}
	for _, path := range []string{"/to-internal", "/to-localhost", "/to-metadata", "/to-unspecified", "/to-mapped"} {
		_, err := Fetch(ctx, client, srv.URL+path)
		if err == nil || !strings.Contains(err.Error(), "refused") || !strings.Contains(err.Error(), "loopback, link-local or unspecified") {
			t.Errorf("%s: %v", path, err)
		}
	}
	if _, err := Fetch(ctx, client, srv.URL+"/loop"); err == nil || !strings.Contains(err.Error(), "stopped after 5 redirects") {
		t.Errorf("redirect loop: %v", err)
	}

	// https gives way to https only.
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, srv.URL+"/ca.crl", http.StatusFound)
	}))
	defer tlsSrv.Close()
	tlsClient := NewClient(5 * time.Second)
	tlsClient.Transport.(*http.Transport).TLSClientConfig = &tls.Config{RootCAs: tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs}
	if _, err := Fetch(ctx, tlsClient, tlsSrv.URL+"/ca.crl"); err == nil || !strings.Contains(err.Error(), "from https to https only") {
		t.Errorf("redirect from https to http: %v", err)
	}
}

// TestDownloadDialRefusesLocalAddresses: names are checked where they are
// connected to, after resolution, so a name that resolves (or is rebound) to
// a loopback address is refused like a literal one; only the host:port of
// a URL that names a local address itself is dialled.
func TestDownloadDialRefusesLocalAddresses(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dial := NewClient(time.Second).Transport.(*http.Transport).DialContext
	for _, addr := range []string{l.Addr().String(), "localhost:" + port("http://"+l.Addr().String())} {
		if c, err := dial(context.Background(), "tcp", addr); err == nil {
			c.Close()
			t.Errorf("%s dialled without a URL naming it", addr)
		} else if !strings.Contains(err.Error(), "loopback, link-local or unspecified") {
			t.Errorf("%s: %v", addr, err)
		}
	}
	req := httptest.NewRequest("GET", "http://"+l.Addr().String()+"/ca.crl", nil)
	c, err := dial(withOrigin(context.Background(), req.URL), "tcp", l.Addr().String())
	if err != nil {
		t.Fatalf("the address the URL names: %v", err)
	}
	c.Close()
}

func port(rawURL string) string {
	i := strings.LastIndexByte(rawURL, ':')
	return rawURL[i+1:]
}

// TestRedirectToIPv6MetadataRefused: EC2's IPv6 metadata endpoint is a unique
// local address, not link-local, and must be refused like 169.254.169.254.
func TestRedirectToIPv6MetadataRefused(t *testing.T) {
	from, _ := url.Parse("http://crl.example/ca.crl")
	for _, target := range []string{"http://[fd00:ec2::254]/latest/meta-data/", "http://169.254.169.254/latest/meta-data/"} {
		to, _ := url.Parse(target)
		if err := checkRedirect(&http.Request{URL: to}, []*http.Request{{URL: from}}); err == nil {
			t.Errorf("redirect to %s followed", to)
		}
	}
}
