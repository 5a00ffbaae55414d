package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/mtlsgate/mtlsgate/sidecar/admintoken"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/daemon"
	"github.com/mtlsgate/mtlsgate/sidecar/problem"
)

// Client talks to a running `mtlsgate serve` admin API. Other tools (the
// demo, the dev gateway) may use it instead of shelling out to the CLI.
type Client struct {
	// Server is the admin API's address as given: a URL, or unix:/path for
	// serve --admin-listen unix:/path (NewClient then sets HTTP to dial it).
	Server string
	Token  string
	HTTP   *http.Client
}

// serverAddr is the admin API address: the flag, else $MTLSGATE_SERVER, else
// the default; "http://" is added to a bare host:port, and unix:/path (or
// unix:///path, as gRPC spells it) is kept as a socket.
func serverAddr(flagValue string) string {
	server := flagValue
	if server == "" {
		server = os.Getenv("MTLSGATE_SERVER")
	}
	if server == "" {
		server = api.DefaultServer
	}
	if _, ok := socketPath(server); ok {
		return server
	}
	if !strings.Contains(server, "://") {
		server = "http://" + server
	}
	return strings.TrimRight(server, "/")
}

// socketPath is the socket a unix:/path address names.
func socketPath(server string) (string, bool) {
	p, ok := strings.CutPrefix(server, "unix:")
	if !ok {
		return "", false
	}
	p = strings.TrimPrefix(p, "//")
	return p, p != ""
}

// baseURL is what request URLs start with. Over a socket the host part only
// fills the Host header; the dialer ignores it.
func baseURL(server string) string {
	if _, ok := socketPath(server); ok {
		return "http://mtlsgate-admin"
	}
	return server
}

// httpClient reaches server: over its socket when it is unix:/path, which
// net/http cannot dial by URL.
func httpClient(server string, timeout time.Duration) *http.Client {
	hc := &http.Client{Timeout: timeout}
	if path, ok := socketPath(server); ok {
		var d net.Dialer
		hc.Transport = &http.Transport{DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		}}
	}
	return hc
}

// NewClient resolves the server URL and token the way the CLI does: flags
// first, then MTLSGATE_SERVER / MTLSGATE_ADMIN_TOKEN, then the defaults.
func NewClient(server, tokenFile string) (*Client, error) {
	server = serverAddr(server)
	tok := ""
	if tokenFile != "" {
		data, err := os.ReadFile(tokenFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read --admin-token-file: %w; pass the token file written by mtlsgate serve (<data-dir>/%s)", err, daemon.TokenFileName)
		}
		tok = firstToken(data)
	} else if tok = strings.TrimSpace(os.Getenv("MTLSGATE_ADMIN_TOKEN")); tok == "" {
		def := filepath.Join(daemon.DefaultDataDir, daemon.TokenFileName)
		if data, err := os.ReadFile(def); err == nil {
			tok = firstToken(data)
		}
	}
	if tok == "" {
		return nil, fmt.Errorf("no admin token: set MTLSGATE_ADMIN_TOKEN or pass --admin-token-file (mtlsgate serve writes one to <data-dir>/%s)", daemon.TokenFileName)
	}
	return &Client{Server: server, Token: tok, HTTP: httpClient(server, 60*time.Second)}, nil
}

// firstToken is the token the CLI sends from a token file: the server's file
// may list several (during a rotation), and any of them is accepted.
func firstToken(data []byte) string {
	if toks := admintoken.Parse(data); len(toks) > 0 {
		return toks[0]
	}
	return ""
}

// Do sends a request and decodes the JSON answer into out. A refusal comes
// back as *problem.Error.
func (c *Client) Do(method, path string, body, out any) error {
	_, err := c.do(method, path, body, out)
	return err
}

// Page GETs one page of a paged list (GET /v1/audit) into out, and returns
// the path of the page after it, or "" when it is the last.
func (c *Client) Page(path string, out any) (next string, err error) {
	h, err := c.do(http.MethodGet, path, nil, out)
	if err != nil {
		return "", err
	}
	return nextLink(h.Values("Link"))
}

// nextLink is the path a Link header's rel="next" entry names. Only a path
// on the same server is followed: the request carries the admin token.
func nextLink(values []string) (string, error) {
	for _, v := range values {
		for _, link := range strings.Split(v, ",") {
			target, params, ok := strings.Cut(strings.TrimSpace(link), ";")
			if !ok || !strings.HasPrefix(target, "<") || !strings.HasSuffix(target, ">") {
				continue
			}
			rel := false
			for _, p := range strings.Split(params, ";") {
				k, v, _ := strings.Cut(strings.TrimSpace(p), "=")
				rel = rel || (strings.EqualFold(k, "rel") && slices.Contains(strings.Fields(strings.Trim(v, `"`)), "next"))
			}
			if !rel {
				continue
			}
			path := target[1 : len(target)-1]
			if !strings.HasPrefix(path, "/") || strings.HasPrefix(path, "//") {
				return "", fmt.Errorf("the server's next page %q is not a path on it: is --server pointing at mtlsgate serve's admin address?", path)
			}
			return path, nil
		}
	}
	return "", nil
}

func (c *Client) do(method, path string, body, out any) (http.Header, error) {
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			return nil, fmt.Errorf("encode request: %w", err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, baseURL(c.Server)+path, rd)
	if err != nil {
		return nil, fmt.Errorf("bad server URL %q: %w; pass --server http://HOST:PORT or unix:/path", c.Server, err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach mtlsgate serve at %s (%v): start it with `mtlsgate serve` or point --server / MTLSGATE_SERVER at it", c.Server, errors.Unwrap(err))
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, fmt.Errorf("read answer from %s: %w", c.Server, err)
	}
	if resp.StatusCode >= 300 {
		var p problem.Error
		if json.Unmarshal(data, &p) == nil && p.Detail != "" {
			return nil, &p
		}
		return nil, fmt.Errorf("%s %s: HTTP %s from %s: is --server pointing at mtlsgate serve's admin address?", method, path, resp.Status, c.Server)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			return nil, fmt.Errorf("decode answer from %s: %w", c.Server, err)
		}
	}
	return resp.Header, nil
}
