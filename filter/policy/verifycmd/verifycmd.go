// Package verifycmd implements `mtlsgate verify`: it runs the filter's policy
// code natively on certificate files, so an operator can see the decision,
// reason and headers the filter would produce without a running gateway.
package verifycmd

import (
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/mtlsgate/mtlsgate/filter/policy"
	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/tidwall/gjson"
)

// Exit codes.
const (
	ExitAllowed  = 0
	ExitDenied   = 1
	ExitBadInput = 2
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

const usage = `Usage: mtlsgate verify --ca FILE [--ca FILE...] --cert FILE [--chain FILE] [--crl FILE...]
                       [--policy FILE] [--at RFC3339] [--output json]

Runs the mtls-auth-inbound policy on a client certificate as the filter would.
  --ca       trusted CA certificate(s), PEM (repeatable)
  --cert     client certificate, PEM; may also hold its intermediates (leaf first)
  --chain    intermediate certificates, PEM
  --crl      CRL, PEM (repeatable)
  --policy   one policy object as in policies.json (default: default options)
  --at       evaluate at this time instead of now (e.g. 2026-01-02T03:04:05Z)
  --output   json for machine-readable output
Exit status: 0 verified, 1 refused, 2 bad input.
`

// Run executes the command; args exclude the "verify" word.
func Run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cas, crls multi
	fs.Var(&cas, "ca", "")
	fs.Var(&crls, "crl", "")
	certFile := fs.String("cert", "", "")
	chainFile := fs.String("chain", "", "")
	policyFile := fs.String("policy", "", "")
	at := fs.String("at", "", "")
	output := fs.String("output", "text", "")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, usage)
			return 0
		}
		return bad(stderr, err.Error()+"; run 'mtlsgate verify --help'")
	}
	if fs.NArg() > 0 {
		return bad(stderr, "unexpected argument "+fs.Arg(0)+"; run 'mtlsgate verify --help'")
	}
	if *output != "text" && *output != "json" {
		return bad(stderr, "--output must be json (or omitted for text)")
	}
	if len(cas) == 0 || *certFile == "" {
		return bad(stderr, "--ca and --cert are required; run 'mtlsgate verify --help'")
	}
	now := time.Now()
	if *at != "" {
		t, err := time.Parse(time.RFC3339, *at)
		if err != nil {
			return bad(stderr, "--at "+*at+" is not an RFC 3339 time; write it like 2026-01-02T03:04:05Z")
		}
		now = t
	}
	var caEntries []bundle.CA
	for _, f := range cas {
		blocks, err := readPEM(f, "CERTIFICATE")
		if err != nil {
			return bad(stderr, err.Error())
		}
		for _, b := range blocks {
			caEntries = append(caEntries, bundle.CA{Name: f, PEM: string(pem.EncodeToMemory(b))})
		}
	}
	var crlEntries []bundle.CRL
	for _, f := range crls {
		blocks, err := readPEM(f, "X509 CRL")
		if err != nil {
			return bad(stderr, err.Error())
		}
		for _, b := range blocks {
			crlEntries = append(crlEntries, bundle.CRL{PEM: string(pem.EncodeToMemory(b))})
		}
	}
	var ders [][]byte
	for _, f := range []string{*certFile, *chainFile} {
		if f == "" {
			continue
		}
		blocks, err := readPEM(f, "CERTIFICATE")
		if err != nil {
			return bad(stderr, err.Error())
		}
		for _, b := range blocks {
			ders = append(ders, b.Bytes)
		}
	}
	pol := &policy.Policy{Name: "verify", Options: policy.DefaultOptions()}
	if *policyFile != "" {
		data, err := os.ReadFile(*policyFile)
		if err != nil {
			return bad(stderr, "cannot read --policy: "+err.Error())
		}
		if !gjson.ValidBytes(data) {
			return bad(stderr, "--policy "+*policyFile+" is not valid JSON; it must hold one policy object as in policies.json")
		}
		if pol, err = policy.ParsePolicy(gjson.ParseBytes(data), "policy"); err != nil {
			return bad(stderr, err.Error())
		}
	}
	b := bundle.New(caEntries, crlEntries, nil, 0, now)
	eng := policy.NewEngine(&policy.Config{Policies: []*policy.Policy{pol}})
	if err := eng.SetBundle(b); err != nil {
		return bad(stderr, err.Error())
	}
	res, err := eng.EvaluateChain(pol.Name, ders, now)
	if err != nil {
		return bad(stderr, err.Error())
	}
	return report(res, *output, stdout)
}

func bad(stderr io.Writer, msg string) int {
	fmt.Fprintln(stderr, "mtlsgate verify: "+msg)
	return ExitBadInput
}

// readPEM returns the blocks of the wanted type; other blocks (a private key
// kept in the same file, as curl users often do) are skipped, never printed.
func readPEM(path, want string) ([]*pem.Block, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("cannot read %s: %w", path, err)
	}
	var out []*pem.Block
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type == want {
			out = append(out, b)
		}
	}
	if len(out) == 0 {
		hint := ""
		if want == "CERTIFICATE" {
			hint = " (convert DER with: openssl x509 -inform der -in FILE -out FILE.pem)"
		} else {
			hint = " (convert DER with: openssl crl -inform der -in FILE -out FILE.pem)"
		}
		return nil, fmt.Errorf("%s holds no PEM %s block%s", path, want, hint)
	}
	return out, nil
}

type jsonReport struct {
	Decision       string            `json:"decision"`
	Status         int               `json:"status"`
	Reason         string            `json:"reason"`
	FilterDecision string            `json:"filterDecision"`
	Detail         string            `json:"detail,omitempty"`
	Headers        map[string]string `json:"headers"`
}

func report(res *policy.Result, output string, w io.Writer) int {
	rep := jsonReport{Decision: "deny", Status: 401, Reason: string(res.Reason), FilterDecision: res.Decision, Detail: res.Detail(), Headers: map[string]string{}}
	code := ExitDenied
	if res.Decision == policy.DecisionAllow {
		rep.Decision, rep.Status, code = "allow", 200, ExitAllowed
	} else if res.Status != 0 {
		rep.Status = res.Status
	}
	hs := res.SetHeaders
	if res.Action == policy.Respond {
		hs = res.ResponseHeaders
	}
	for _, h := range hs {
		rep.Headers[h.Key] = h.Value
	}
	if output == "json" {
		out, _ := json.MarshalIndent(rep, "", "  ")
		fmt.Fprintln(w, string(out))
		return code
	}
	fmt.Fprintf(w, "decision: %s\nstatus:   %d\n", rep.Decision, rep.Status)
	if rep.Reason != "" {
		fmt.Fprintf(w, "reason:   %s\n", rep.Reason)
	}
	if rep.FilterDecision != rep.Decision {
		fmt.Fprintf(w, "filter:   %s\n", rep.FilterDecision)
	}
	if rep.Detail != "" {
		fmt.Fprintf(w, "detail:   %s\n", rep.Detail)
	}
	keys := make([]string, 0, len(rep.Headers))
	for k := range rep.Headers {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	if len(keys) > 0 {
		fmt.Fprintln(w, "headers:")
	}
	for _, k := range keys {
		fmt.Fprintf(w, "  %s: %s\n", k, rep.Headers[k])
	}
	return code
}
