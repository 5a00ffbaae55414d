package demo

import (
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
)

// Echo is what the demo upstream answers: the request as it arrived, so a
// user sees exactly which identity headers the gateway forwarded.
type Echo struct {
	Method  string              `json:"method"`
	Path    string              `json:"path"`
	Host    string              `json:"host"`
	Proto   string              `json:"proto"`
	Headers map[string][]string `json:"headers"`
	// BodyBytes and BodySHA256 describe the request body received.
	BodyBytes  int    `json:"bodyBytes"`
	BodySHA256 string `json:"bodySha256,omitempty"`
	// GatewayCert is the subject of the client certificate the gateway
	// presented on the upstream connection.
	GatewayCert string `json:"gatewayClientCertificate,omitempty"`
}

// EchoHandler answers every request with its Echo as indented JSON.
func EchoHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e := Echo{Method: r.Method, Path: r.URL.RequestURI(), Host: r.Host, Proto: r.Proto, Headers: map[string][]string{}}
		keys := make([]string, 0, len(r.Header))
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			e.Headers[http.CanonicalHeaderKey(k)] = r.Header[k]
		}
		h := sha256.New()
		n, _ := io.Copy(h, r.Body)
		e.BodyBytes = int(n)
		if n > 0 {
			e.BodySHA256 = hex.EncodeToString(h.Sum(nil))
		}
		if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
			e.GatewayCert = r.TLS.PeerCertificates[0].Subject.String()
		}
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		_ = enc.Encode(e)
	})
}

// UpstreamTLS is the demo upstream's TLS configuration: it serves cert and
// requires a client certificate issued by clientCA, the way a backend that
// only accepts traffic from the gateway would.
func UpstreamTLS(certPEM, keyPEM, clientCAPEM []byte) (*tls.Config, error) {
	cert, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return nil, fmt.Errorf("upstream server key pair: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(clientCAPEM) {
		return nil, errors.New("upstream client CA: no certificate in PEM")
	}
	return &tls.Config{
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    pool,
		NextProtos:   []string{"h2", "http/1.1"},
		MinVersion:   tls.VersionTLS12,
	}, nil
}

func parsePEMCerts(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			break
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			return nil, fmt.Errorf("parse certificate: %w", err)
		}
		out = append(out, c)
	}
	if len(out) == 0 {
		return nil, errors.New("no certificate in PEM")
	}
	return out, nil
}
