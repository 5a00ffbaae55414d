package daemon

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// pipeListener hands out in-memory connections, so the servers' timeouts
// run on synctest's fake clock.
type pipeListener struct {
	conns     chan net.Conn
	closed    chan struct{}
	closeOnce sync.Once
}

func newPipeListener() *pipeListener {
	return &pipeListener{conns: make(chan net.Conn), closed: make(chan struct{})}
}

func (l *pipeListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.conns:
		return c, nil
	case <-l.closed:
		return nil, net.ErrClosed
	}
}

func (l *pipeListener) Close() error   { l.closeOnce.Do(func() { close(l.closed) }); return nil }
func (l *pipeListener) Addr() net.Addr { return &net.UnixAddr{Name: "pipe", Net: "unix"} }

func (l *pipeListener) dial() net.Conn {
	srv, cli := net.Pipe()
	l.conns <- srv
	return cli
}

// serveOnPipe runs newHTTPServer(h) in the bubble and returns a connection
// to it; the server is closed when the test ends.
func serveOnPipe(t *testing.T, h http.Handler) (net.Conn, *bufio.Reader) {
	srv := newHTTPServer(h)
	l := newPipeListener()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	c := l.dial()
	t.Cleanup(func() { c.Close() })
	return c, bufio.NewReader(c)
}

func roundTrip(t *testing.T, c net.Conn, br *bufio.Reader, req string, body []byte) (*http.Response, []byte, error) {
	t.Helper()
	go func() {
		io.WriteString(c, req)
		c.Write(body)
	}()
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		return nil, nil, err
	}
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	return resp, b, err
}

// TestHTTPServersCloseIdleConnections protects the admin and bundle
// servers from clients that keep connections open without using them: with
// only a header timeout, an idle keep-alive connection (no token needed:
// one GET /healthz) was held forever, so a local client could pile up any
// number of connections, goroutines and file descriptors.
func TestHTTPServersCloseIdleConnections(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, br := serveOnPipe(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
		if _, _, err := roundTrip(t, c, br, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", nil); err != nil {
			t.Fatal(err)
		}
		// Still open a while after the request: keep-alive works.
		time.Sleep(time.Minute)
		if resp, _, err := roundTrip(t, c, br, "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n", nil); err != nil || resp.StatusCode != 200 {
			t.Fatalf("second request after a minute idle: %v", err)
		}
		time.Sleep(httpIdleTimeout + time.Second)
		c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := br.ReadByte(); !errors.Is(err, io.EOF) {
			t.Fatalf("idle connection still open %v after its last request: %v", httpIdleTimeout, err)
		}
	})
}

// TestHTTPServersAllowSlowWork: the timeouts must not cut off what the
// admin API legitimately does: a 16 MiB upload, and a `crl create --url`
// whose download takes its full 30 seconds before the answer is written.
func TestHTTPServersAllowSlowWork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c, br := serveOnPipe(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				http.Error(w, err.Error(), 400)
				return
			}
			if r.URL.Path == "/slow" {
				time.Sleep(45 * time.Second)
			}
			fmt.Fprint(w, n)
		}))
		body := bytes.Repeat([]byte("x"), 16<<20)
		resp, got, err := roundTrip(t, c, br, fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", len(body)), body)
		if err != nil || resp.StatusCode != 200 || string(got) != fmt.Sprint(len(body)) {
			t.Fatalf("16 MiB upload: %v %s", err, got)
		}
		resp, got, err = roundTrip(t, c, br, "POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n", []byte("{}"))
		if err != nil || resp.StatusCode != 200 || string(got) != "2" {
			t.Fatalf("request answered after 45s: %v %s", err, got)
		}
	})
}
