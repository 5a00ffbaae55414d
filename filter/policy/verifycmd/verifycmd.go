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
	"net/netip"
	"os"
	"sort"
	"strconv"
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

const usage = `Usage: mtlsgate verify (--ca FILE [--ca FILE...] | --bundle FILE) --cert FILE [--chain FILE] [--crl FILE...]
                       [--policy FILE [--policy-name NAME]] [--profiles FILE]
                       [--method METHOD] [--source ADDRESS] [--requested-profile ID]
                       [--at RFC3339] [--output json]

Runs the mtls-auth-inbound policy on a client certificate as the filter would,
and, when the policy enforces profiles, the bound profile's rules.
  --ca          trusted CA certificate(s), PEM (repeatable)
  --bundle      a trust bundle as the sidecar serves it (curl .../v1/bundle):
                its CAs, CRLs and profile set; --ca and --crl add to it
  --cert        client certificate, PEM; may also hold its intermediates (leaf first)
  --chain       intermediate certificates, PEM
  --crl         CRL, PEM (repeatable)
  --policy      one policy object as in policies.json, or a whole plugin
                configuration (default: default options)
  --policy-name the policy to use when --policy holds several
  --profiles    profile set as 'mtlsgate profile set --file' takes it
                ({"profiles": [...]}); replaces the configuration's profiles
  --method      the request's method (default GET)
  --source      the client's address, IP or IP:port (for profiles with sourceCIDRs)
  --requested-profile
                the profile the request names in the policy's requestedProfileHeader
  --at          evaluate at this time instead of now (e.g. 2026-01-02T03:04:05Z)
  --output      json for machine-readable output
Exit status: 0 allowed, 1 refused, 2 bad input.
`

// Run executes the command; args exclude the "verify" word.
func Run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var cas, crls multi
	fs.Var(&cas, "ca", "")
	fs.Var(&crls, "crl", "")
	bundleFile := fs.String("bundle", "", "")
	certFile := fs.String("cert", "", "")
	chainFile := fs.String("chain", "", "")
	policyFile := fs.String("policy", "", "")
	policyName := fs.String("policy-name", "", "")
	profilesFile := fs.String("profiles", "", "")
	method := fs.String("method", "GET", "")
	source := fs.String("source", "", "")
	requested := fs.String("requested-profile", "", "")
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
	if (len(cas) == 0 && *bundleFile == "") || *certFile == "" {
		return bad(stderr, "--cert and one of --ca or --bundle are required; run 'mtlsgate verify --help'")
	}
	if *method == "" || strings.ToUpper(*method) != *method {
		return bad(stderr, "--method "+strconv.Quote(*method)+" must be an upper-case HTTP method such as GET")
	}
	if *source != "" {
		if _, err := netip.ParseAddrPort(*source); err != nil {
			if _, err := netip.ParseAddr(*source); err != nil {
				return bad(stderr, "--source "+strconv.Quote(*source)+" is not an IP address or IP:port (write 203.0.113.7 or [2001:db8::1]:443)")
			}
		}
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
	cfg, err := loadConfig(*policyFile, *policyName, *profilesFile)
	if err != nil {
		return bad(stderr, err.Error())
	}
	var profiles []byte
	profilesVersion := 0
	if *bundleFile != "" {
		data, err := os.ReadFile(*bundleFile)
		if err != nil {
			return bad(stderr, "cannot read --bundle: "+err.Error())
		}
		sb, err := bundle.Parse(data)
		if err != nil {
			return bad(stderr, "--bundle "+*bundleFile+": "+err.Error()+" (save it with: curl -s http://127.0.0.1:9913/v1/bundle > "+*bundleFile+")")
		}
		caEntries = append(sb.CACertificates, caEntries...)
		crlEntries = append(sb.CRLs, crlEntries...)
		// --profiles, when given, is the set to test: the bundle's would
		// take precedence in the engine, as the sidecar's does in the filter.
		if *profilesFile == "" {
			profiles, profilesVersion = sb.Profiles, sb.ProfilesVersion
		}
	}
	pol := cfg.Policies[0]
	if pol.Options.ProfileAuthorization && !cfg.ProfilesDefined && len(profiles) == 0 {
		return bad(stderr, "policy "+strconv.Quote(pol.Name)+" enforces profiles but no profile set was given; add --profiles FILE (the file 'mtlsgate profile set --file' takes) or a --bundle that carries one")
	}
	b := bundle.New(caEntries, crlEntries, profiles, profilesVersion, now)
	eng := policy.NewEngine(cfg)
	if err := eng.SetBundle(b); err != nil {
		return bad(stderr, err.Error())
	}
	req := &policy.Request{Method: *method, SourceAddress: *source, Now: now}
	if *requested != "" {
		req.Headers = []policy.Header{{Key: pol.Options.RequestedProfileHeader, Value: *requested}}
	}
	res, err := eng.EvaluateChain(pol.Name, ders, req)
	if err != nil {
		return bad(stderr, err.Error())
	}
	if res.Reason == policy.ReasonIPNotAllowed && *source == "" {
		return bad(stderr, "profile "+strconv.Quote(res.ProfileID)+" admits only some source addresses (sourceCIDRs); add --source with the client's address")
	}
	if *profilesFile != "" {
		// The engine calls a set given in configuration "config"; here it
		// came from a file, and the record should say which.
		res.ProfilesVersion = "file " + *profilesFile
	}
	return report(res, *output, stdout)
}

// loadConfig builds the engine configuration verify runs: one policy, from
// a policy object or picked from a whole plugin configuration, and the
// profile set from --profiles or else from that configuration.
func loadConfig(policyFile, policyName, profilesFile string) (*policy.Config, error) {
	cfg := &policy.Config{Policies: []*policy.Policy{{Name: "verify", Options: policy.DefaultOptions()}}}
	if policyFile != "" {
		data, err := os.ReadFile(policyFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read --policy: %w", err)
		}
		if !gjson.ValidBytes(data) {
			return nil, errors.New("--policy " + policyFile + " is not valid JSON; it must hold one policy object as in policies.json, or a plugin configuration")
		}
		doc := gjson.ParseBytes(data)
		if doc.Get("policies").Exists() {
			if cfg, err = policy.ParseConfig(data); err != nil {
				return nil, fmt.Errorf("--policy %s: %w", policyFile, err)
			}
		} else {
			p, err := policy.ParsePolicy(doc, "policy")
			if err != nil {
				return nil, fmt.Errorf("--policy %s: %w", policyFile, err)
			}
			cfg.Policies[0] = p
		}
	}
	if len(cfg.Policies) == 0 {
		return nil, errors.New("--policy " + policyFile + " holds no policy")
	}
	var names []string
	for _, p := range cfg.Policies {
		if p.Name == policyName || policyName == "" && len(cfg.Policies) == 1 {
			cfg.Policies = []*policy.Policy{p}
			names = nil
			break
		}
		names = append(names, strconv.Quote(p.Name))
	}
	if names != nil {
		if policyName == "" {
			return nil, errors.New("--policy " + policyFile + " holds several policies; pick one with --policy-name (one of " + strings.Join(names, ", ") + ")")
		}
		return nil, errors.New("--policy-name " + strconv.Quote(policyName) + " is not in " + policyFile + " (it holds " + strings.Join(names, ", ") + ")")
	}
	// Routes and the sidecar source do not apply to one offline decision.
	cfg.Routes = nil
	cfg.TrustBundle = policy.TrustBundleConfig{}
	if profilesFile != "" {
		data, err := os.ReadFile(profilesFile)
		if err != nil {
			return nil, fmt.Errorf("cannot read --profiles: %w", err)
		}
		list, err := bundle.ParseProfileFile(data)
		if err != nil {
			return nil, fmt.Errorf("--profiles %s: %w", profilesFile, err)
		}
		cfg.Profiles, cfg.ProfilesDefined = list, true
	}
	return cfg, nil
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
	// The identity the certificate binds and the profile rules applied;
	// empty when the chain did not verify.
	ClientID         string `json:"clientId,omitempty"`
	ProfileID        string `json:"profileId,omitempty"`
	RequestedProfile string `json:"requestedProfile,omitempty"`
	Profiles         string `json:"profiles,omitempty"`
}

func report(res *policy.Result, output string, w io.Writer) int {
	rep := jsonReport{Decision: "deny", Status: 401, Reason: string(res.Reason), FilterDecision: res.Decision, Detail: res.Detail(), Headers: map[string]string{},
		ClientID: res.ClientID, ProfileID: res.ProfileID, RequestedProfile: res.RequestedProfile}
	if res.ProfilesVersion != "none" {
		rep.Profiles = res.ProfilesVersion
	}
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
		what := ""
		if rep.FilterDecision == policy.DecisionAllowUnauthenticated {
			what = " (allowUnauthenticatedRequests: the filter forwards the request marked FAILED, without x-user-sub)"
		}
		fmt.Fprintf(w, "filter:   %s%s\n", rep.FilterDecision, what)
	}
	if rep.Detail != "" {
		fmt.Fprintf(w, "detail:   %s\n", rep.Detail)
	}
	for _, l := range [][2]string{{"client:  ", rep.ClientID}, {"profile: ", rep.ProfileID}, {"requested:", rep.RequestedProfile}, {"profiles:", rep.Profiles}} {
		if l[1] != "" {
			fmt.Fprintf(w, "%s %s\n", l[0], l[1])
		}
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
