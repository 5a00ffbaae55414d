package bundle

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/tidwall/gjson"
)

// Profile is one authorization profile: which certificate-derived client IDs
// may use it, with which methods, from which addresses, and how often. The
// sidecar (`mtlsgate profile set`) and the filter (plugin configuration key
// `profiles`, or Bundle.Profiles) parse it with the same code so that a set
// the sidecar accepted is never refused by the filter.
type Profile struct {
	ID string `json:"id"`
	// Clients are exact client IDs or globs ('*' any run, '?' one character).
	// Required: allowing everyone takes an explicit "*".
	Clients []string `json:"clients"`
	// Methods are upper-case HTTP methods; empty allows every method.
	Methods []string `json:"methods,omitempty"`
	// SourceCIDRs restrict the peer address (Envoy's source.address); empty
	// allows every address.
	SourceCIDRs []string `json:"sourceCIDRs,omitempty"`
	// RateLimit, when set, bounds requests per client ID per window.
	RateLimit *RateLimit `json:"rateLimit,omitempty"`

	// Prefixes are SourceCIDRs parsed (masked, IPv4-mapped addresses unmapped).
	Prefixes []netip.Prefix `json:"-"`
}

// RateLimit is a request budget per client ID over a sliding window.
type RateLimit struct {
	Requests int    `json:"requests"`
	Per      string `json:"per"` // "second" or "minute"
}

// WindowSeconds is the window length the limit counts over.
func (r *RateLimit) WindowSeconds() int {
	if r.Per == "minute" {
		return 60
	}
	return 1
}

// Limits on a profile set keep a hostile or mistaken upload from turning
// every request into a long scan.
const (
	MaxProfiles        = 1000
	MaxProfileEntries  = 1000 // clients, methods or CIDRs per profile
	MaxProfileIDLength = 128
)

// ProfileError names the JSON path of a problem in a profile set, so the
// operator can find it in the file.
type ProfileError struct {
	Path string
	Msg  string
}

func (e *ProfileError) Error() string { return e.Path + ": " + e.Msg }

func perr(path, format string, args ...any) error {
	return &ProfileError{Path: path, Msg: fmt.Sprintf(format, args...)}
}

// ParseProfileFile parses the document `mtlsgate profile set --file` takes:
// {"profiles": [...]}.
func ParseProfileFile(data []byte) ([]Profile, error) {
	if !gjson.ValidBytes(data) {
		return nil, errors.New("not valid JSON: the file must be {\"profiles\": [{\"id\": ..., \"clients\": [...]}, ...]}")
	}
	root := gjson.ParseBytes(data)
	if !root.IsObject() {
		return nil, errors.New("must be a JSON object {\"profiles\": [...]}")
	}
	var err error
	root.ForEach(func(k, _ gjson.Result) bool {
		if k.String() != "profiles" {
			err = perr(k.String(), "unknown key: the file holds only \"profiles\"")
			return false
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	p := root.Get("profiles")
	if !p.Exists() {
		return nil, perr("profiles", "required: an array of profile objects (an empty array removes every binding)")
	}
	return ParseProfiles(p, "profiles")
}

// ParseProfiles parses and validates an array of profile objects; path
// prefixes error messages (e.g. "profiles").
func ParseProfiles(arr gjson.Result, path string) ([]Profile, error) {
	if !arr.IsArray() {
		return nil, perr(path, "must be an array of profile objects {id, clients, methods, sourceCIDRs, rateLimit}")
	}
	items := arr.Array()
	if len(items) > MaxProfiles {
		return nil, perr(path, "%d profiles; at most %d are supported", len(items), MaxProfiles)
	}
	out := make([]Profile, 0, len(items))
	seen := make(map[string]int, len(items))
	for i, item := range items {
		p := path + "[" + strconv.Itoa(i) + "]"
		pr, err := parseProfile(item, p)
		if err != nil {
			return nil, err
		}
		if j, dup := seen[pr.ID]; dup {
			return nil, perr(p+".id", "profile %q is already defined at %s[%d]: give each profile a unique id", pr.ID, path, j)
		}
		seen[pr.ID] = i
		out = append(out, pr)
	}
	return out, nil
}

var profileKeys = []string{"id", "clients", "methods", "sourceCIDRs", "rateLimit"}

func parseProfile(o gjson.Result, path string) (Profile, error) {
	var pr Profile
	if !o.IsObject() {
		return pr, perr(path, "must be an object {id, clients, methods, sourceCIDRs, rateLimit}")
	}
	var err error
	seen := map[string]bool{}
	o.ForEach(func(k, _ gjson.Result) bool {
		key := k.String()
		if seen[key] {
			err = perr(path+"."+key, "appears twice: keep one")
			return false
		}
		seen[key] = true
		for _, a := range profileKeys {
			if key == a {
				return true
			}
		}
		err = perr(path+"."+key, "unknown key: allowed keys are %s", strings.Join(profileKeys, ", "))
		return false
	})
	if err != nil {
		return pr, err
	}
	id := o.Get("id")
	if id.Type != gjson.String || id.String() == "" {
		return pr, perr(path+".id", "required: a non-empty string, the value the certificate's profile field carries (e.g. its OU)")
	}
	pr.ID = id.String()
	if len(pr.ID) > MaxProfileIDLength || !printable(pr.ID) {
		return pr, perr(path+".id", "must be at most %d printable characters", MaxProfileIDLength)
	}
	if pr.Clients, err = stringList(o.Get("clients"), path+".clients", true); err != nil {
		return pr, err
	}
	if len(pr.Clients) == 0 {
		return pr, perr(path+".clients", "required: a non-empty array of client IDs or globs; use [\"*\"] to allow every client bound to this profile")
	}
	for i, c := range pr.Clients {
		if c == "" || !printable(c) {
			return pr, perr(path+".clients["+strconv.Itoa(i)+"]", "must be a non-empty printable client ID or glob")
		}
	}
	if pr.Methods, err = stringList(o.Get("methods"), path+".methods", false); err != nil {
		return pr, err
	}
	for i, m := range pr.Methods {
		if !token(m) {
			return pr, perr(path+".methods["+strconv.Itoa(i)+"]", "%q is not an HTTP method name", m)
		}
		pr.Methods[i] = strings.ToUpper(m)
	}
	if pr.SourceCIDRs, err = stringList(o.Get("sourceCIDRs"), path+".sourceCIDRs", false); err != nil {
		return pr, err
	}
	for i, c := range pr.SourceCIDRs {
		pfx, err := ParseCIDR(c)
		if err != nil {
			return pr, perr(path+".sourceCIDRs["+strconv.Itoa(i)+"]", "%q is not a CIDR or IP address (e.g. 10.0.0.0/8, 2001:db8::/32)", c)
		}
		pr.Prefixes = append(pr.Prefixes, pfx)
	}
	if rl := o.Get("rateLimit"); rl.Exists() && rl.Type != gjson.Null {
		r, err := parseRateLimit(rl, path+".rateLimit")
		if err != nil {
			return pr, err
		}
		pr.RateLimit = r
	}
	return pr, nil
}

func parseRateLimit(o gjson.Result, path string) (*RateLimit, error) {
	const shape = "must be {\"requests\": N, \"per\": \"second\" | \"minute\"}"
	if !o.IsObject() {
		return nil, perr(path, shape)
	}
	var err error
	o.ForEach(func(k, _ gjson.Result) bool {
		if k.String() != "requests" && k.String() != "per" {
			err = perr(path+"."+k.String(), "unknown key: %s", shape)
			return false
		}
		return true
	})
	if err != nil {
		return nil, err
	}
	n := o.Get("requests")
	if n.Type != gjson.Number || n.Float() != float64(n.Int()) || n.Int() < 1 || n.Int() > 1_000_000_000 {
		return nil, perr(path+".requests", "must be an integer from 1 to 1000000000, got %s", orMissing(n))
	}
	per := o.Get("per")
	if per.Type != gjson.String || (per.String() != "second" && per.String() != "minute") {
		return nil, perr(path+".per", "must be \"second\" or \"minute\", got %s", orMissing(per))
	}
	return &RateLimit{Requests: int(n.Int()), Per: per.String()}, nil
}

func orMissing(r gjson.Result) string {
	if !r.Exists() {
		return "nothing"
	}
	return r.Raw
}

func stringList(v gjson.Result, path string, required bool) ([]string, error) {
	if !v.Exists() || v.Type == gjson.Null {
		if required {
			return nil, perr(path, "required: an array of strings")
		}
		return nil, nil
	}
	if !v.IsArray() {
		return nil, perr(path, "must be an array of strings, got %s", v.Raw)
	}
	items := v.Array()
	if len(items) > MaxProfileEntries {
		return nil, perr(path, "%d entries; at most %d are supported", len(items), MaxProfileEntries)
	}
	out := make([]string, 0, len(items))
	for i, s := range items {
		if s.Type != gjson.String {
			return nil, perr(path+"["+strconv.Itoa(i)+"]", "must be a string, got %s", s.Raw)
		}
		out = append(out, s.String())
	}
	return out, nil
}

func printable(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] == 0x7f {
			return false
		}
	}
	return true
}

// token reports whether s is an RFC 9110 token (a valid method name).
func token(s string) bool {
	if s == "" || len(s) > 32 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// ParseCIDR accepts a CIDR or a bare address (a /32 or /128), masking the
// host bits and unmapping IPv4-in-IPv6 so it compares with unmapped peers.
func ParseCIDR(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, err
		}
		if p.Addr().Is4In6() {
			if p.Bits() < 96 {
				return netip.Prefix{}, errors.New("an IPv4-mapped prefix needs at least /96; write the IPv4 form, e.g. 10.0.0.0/8")
			}
			p = netip.PrefixFrom(p.Addr().Unmap(), p.Bits()-96)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, err
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
