package crlrefresh

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"syscall"
	"time"
)

// MaxRedirects is how many redirects a CRL download follows. Distribution
// points move (http to https, a CDN), but a chain longer than this is a
// loop or a misconfiguration.
const MaxRedirects = 5

// NewClient returns the HTTP client for CRL downloads (Fetch), the URL
// refresh and `crl create/update --url` alike.
//
// A distribution point is named by the operator, but where it redirects is
// up to the CRL server, or to whoever sits on its plain-HTTP path. Followed
// anywhere, a redirect makes the sidecar send requests to its own loopback
// listeners (the admin API, Envoy's admin port) or to the cloud metadata
// service, and the answer's status comes back in `crl list`. So a download:
//   - follows at most MaxRedirects redirects, from http to http or https and
//     from https to https only (a list fetched over TLS is not given up to a
//     plain-HTTP hop);
//   - never connects to a loopback, link-local or unspecified address (or
//     EC2's IPv6 metadata address, fd00:ec2::254), unless
//     the URL the operator gave names that address itself (a literal IP or
//     localhost), and then only to that host and port: redirects may stay
//     on the server named, not reach another local one.
//
// The address check is made on the address connected to, after name
// resolution, so a name that resolves (or is rebound) to 127.0.0.1 is
// caught as well. Through a proxy from HTTP_PROXY/HTTPS_PROXY, which the
// client uses as net/http does, the proxy resolves names: only redirect
// targets given as literal addresses are checked then.
func NewClient(timeout time.Duration) *http.Client {
	proxies := proxyAddrs()
	tr := http.DefaultTransport.(*http.Transport).Clone()
	plain := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second}
	guarded := &net.Dialer{Timeout: 30 * time.Second, KeepAlive: 30 * time.Second,
		Control: func(_, address string, _ syscall.RawConn) error {
			if ip, err := netip.ParseAddrPort(address); err == nil && local(ip.Addr()) {
				return fmt.Errorf("connection to %s refused: a CRL download does not connect to loopback, link-local or unspecified addresses unless the URL given names that address itself; check where the distribution point's name resolves and redirects to", address)
			}
			return nil
		}}
	tr.DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		if proxies[addr] || addr == localOrigin(ctx) {
			return plain.DialContext(ctx, network, addr)
		}
		return guarded.DialContext(ctx, network, addr)
	}
	return &http.Client{Timeout: timeout, Transport: tr, CheckRedirect: checkRedirect}
}

// originKey carries, in a download's context, the host:port of the URL the
// operator gave when it names a local address (see NewClient).
type originKey struct{}

func withOrigin(ctx context.Context, u *url.URL) context.Context {
	if !localHost(u.Hostname()) {
		return ctx
	}
	return context.WithValue(ctx, originKey{}, hostPort(u))
}

func localOrigin(ctx context.Context) string {
	s, _ := ctx.Value(originKey{}).(string)
	return s
}

// checkRedirect applies NewClient's redirect rules with an error that says
// which hop was refused. Redirect targets named by a local address are
// refused here already, with a clearer message than the dialer's.
func checkRedirect(req *http.Request, via []*http.Request) error {
	from, to := via[len(via)-1].URL, req.URL
	if len(via) > MaxRedirects {
		return fmt.Errorf("stopped after %d redirects (the last to %s): point --url at where the list is actually served", MaxRedirects, to.Redacted())
	}
	if to.Scheme != "http" && to.Scheme != "https" || from.Scheme == "https" && to.Scheme != "https" {
		return fmt.Errorf("redirect from %s to %s refused: a CRL download follows redirects from http to http(s) and from https to https only; point --url at where the list is actually served", from.Redacted(), to.Redacted())
	}
	if localHost(to.Hostname()) && hostPort(to) != hostPort(via[0].URL) {
		return fmt.Errorf("redirect from %s to %s refused: a CRL download does not follow redirects to loopback, link-local or unspecified addresses; point --url at where the list is actually served", from.Redacted(), to.Redacted())
	}
	return nil
}

// localHost reports whether host is a literal loopback, link-local or
// unspecified address, or a name for the local host.
func localHost(host string) bool {
	if ip, err := netip.ParseAddr(host); err == nil {
		return local(ip)
	}
	h := strings.ToLower(strings.TrimSuffix(host, "."))
	return h == "localhost" || strings.HasSuffix(h, ".localhost")
}

func local(ip netip.Addr) bool {
	ip = ip.Unmap()
	return ip.IsLoopback() || ip.IsLinkLocalUnicast() || ip.IsLinkLocalMulticast() || ip.IsUnspecified() || ip == awsMetadataV6
}

// awsMetadataV6 is EC2's instance metadata service over IPv6: a unique
// local address, not link-local like its IPv4 169.254.169.254, so named
// here.
var awsMetadataV6 = netip.MustParseAddr("fd00:ec2::254")

// hostPort is the address net/http dials for u: host and port, the
// scheme's default port when none is given.
func hostPort(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = map[string]string{"http": "80", "https": "443", "socks5": "1080", "socks5h": "1080"}[u.Scheme]
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// proxyAddrs are the proxies the environment configures, which may well
// listen on loopback (a local forwarding proxy) and are dialled as they are.
func proxyAddrs() map[string]bool {
	out := map[string]bool{}
	for _, target := range []string{"http://crl.invalid/", "https://crl.invalid/"} {
		u, _ := url.Parse(target)
		if p, err := http.ProxyFromEnvironment(&http.Request{URL: u}); err == nil && p != nil {
			out[hostPort(p)] = true
		}
	}
	return out
}
