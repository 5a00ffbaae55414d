package deploy

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
)

// The reference policy, as the product documents it. Deployables must carry
// policies in exactly this shape so configuration moves between products
// unchanged.
const (
	inboundPolicyType = "mtls-auth-inbound"
	inboundExport     = "MTLSAuthInboundPolicy"
	inboundModule     = "$import(@zuplo/runtime)"
)

var inboundBoolOptions = []string{"allowUnauthenticatedRequests", "allowExpiredCertificates", "allowRevokedCertificates"}

type pluginPolicy struct {
	Name              string
	PolicyType        string
	Options           map[string]any
	ChainVerification string
}

type pluginRoute struct {
	PathPrefix, Policy string
}

type pluginTrustBundle struct {
	Cluster, Path  string
	RefreshSeconds float64
}

type pluginConfig struct {
	Policies    []pluginPolicy
	Routes      []pluginRoute
	TrustBundle *pluginTrustBundle
}

// checkPluginConfig checks the plugin JSON on its own terms: the shape every
// deployable must share, independent of the filter's parser (which the test
// also runs when it is available). clusterDefined says whether a cluster name
// exists where the filter will make its callouts.
func checkPluginConfig(raw []byte, clusterDefined func(string) bool) (*pluginConfig, []error) {
	var top map[string]json.RawMessage
	if err := strictJSON(raw, &top); err != nil {
		return nil, []error{fmt.Errorf("plugin configuration is not a JSON object: %w", err)}
	}
	var errs []error
	out := &pluginConfig{}

	var policies []map[string]json.RawMessage
	if err := strictJSON(top["policies"], &policies); err != nil || len(policies) == 0 {
		errs = append(errs, errors.New(`plugin configuration: "policies" must be a non-empty array of policy objects`))
	}
	names := map[string]bool{}
	for i, p := range policies {
		pol, perrs := checkPolicy(p)
		for _, e := range perrs {
			errs = append(errs, fmt.Errorf("policies[%d]: %w", i, e))
		}
		if pol == nil {
			continue
		}
		if names[pol.Name] {
			errs = append(errs, fmt.Errorf("policies[%d]: duplicate policy name %q", i, pol.Name))
		}
		names[pol.Name] = true
		out.Policies = append(out.Policies, *pol)
	}

	// routes and trustBundle are read by exact key, like the filter's parser
	// does; keys this check does not know are left to that parser, so later
	// additions do not break the deployables' tests.
	if r, ok := top["routes"]; ok {
		var routes []map[string]json.RawMessage
		if err := strictJSON(r, &routes); err != nil {
			errs = append(errs, fmt.Errorf(`plugin configuration: "routes" must be an array of objects: %w`, err))
		}
		for i, m := range routes {
			var rt pluginRoute
			_ = json.Unmarshal(m["pathPrefix"], &rt.PathPrefix)
			_ = json.Unmarshal(m["policy"], &rt.Policy)
			if !strings.HasPrefix(rt.PathPrefix, "/") {
				errs = append(errs, fmt.Errorf("routes[%d]: pathPrefix %q must start with /", i, rt.PathPrefix))
			}
			if !names[rt.Policy] {
				errs = append(errs, fmt.Errorf("routes[%d]: policy %q is not defined in policies", i, rt.Policy))
			}
			out.Routes = append(out.Routes, rt)
		}
	}

	var tb map[string]json.RawMessage
	if raw, ok := top["trustBundle"]; !ok {
		errs = append(errs, errors.New(`plugin configuration: no "trustBundle"; the filter would have no CAs to verify against`))
	} else if err := strictJSON(raw, &tb); err != nil {
		errs = append(errs, fmt.Errorf(`plugin configuration: "trustBundle" must be an object: %w`, err))
	} else {
		t := &pluginTrustBundle{}
		out.TrustBundle = t
		_ = json.Unmarshal(tb["cluster"], &t.Cluster)
		_ = json.Unmarshal(tb["path"], &t.Path)
		_ = json.Unmarshal(tb["refreshSeconds"], &t.RefreshSeconds)
		switch {
		case t.Cluster == "":
			errs = append(errs, errors.New(`trustBundle.cluster is missing; the filter fetches the bundle from the sidecar through it`))
		case !clusterDefined(t.Cluster):
			errs = append(errs, fmt.Errorf("trustBundle.cluster %q is not defined; proxy_http_call to it would fail on every refresh", t.Cluster))
		}
		if !strings.HasPrefix(t.Path, "/") {
			errs = append(errs, fmt.Errorf("trustBundle.path %q must be an absolute path", t.Path))
		}
		if t.RefreshSeconds <= 0 {
			errs = append(errs, fmt.Errorf("trustBundle.refreshSeconds %v must be a positive number", t.RefreshSeconds))
		}
	}
	return out, errs
}

// checkPolicy checks one policy object against the reference shape: exactly the
// keys name, policyType and handler; a handler of exactly export, module and
// options; and for the inbound mTLS policy the reference export, module and the
// three boolean options.
func checkPolicy(p map[string]json.RawMessage) (*pluginPolicy, []error) {
	var errs []error
	if err := exactKeys(p, "name", "policyType", "handler"); err != nil {
		errs = append(errs, err)
	}
	pol := &pluginPolicy{}
	if json.Unmarshal(p["name"], &pol.Name) != nil || pol.Name == "" {
		errs = append(errs, errors.New("name must be a non-empty string"))
	}
	if json.Unmarshal(p["policyType"], &pol.PolicyType) != nil || pol.PolicyType == "" {
		errs = append(errs, errors.New("policyType must be a non-empty string"))
	}
	var handler map[string]json.RawMessage
	if err := strictJSON(p["handler"], &handler); err != nil {
		return pol, append(errs, errors.New("handler must be an object"))
	}
	if err := exactKeys(handler, "export", "module", "options"); err != nil {
		errs = append(errs, fmt.Errorf("handler: %w", err))
	}
	var export, module string
	_ = json.Unmarshal(handler["export"], &export)
	_ = json.Unmarshal(handler["module"], &module)
	if err := strictJSON(handler["options"], &pol.Options); err != nil {
		errs = append(errs, errors.New("handler.options must be an object"))
	}
	if pol.PolicyType == inboundPolicyType {
		if export != inboundExport {
			errs = append(errs, fmt.Errorf("handler.export %q, want %q", export, inboundExport))
		}
		if module != inboundModule {
			errs = append(errs, fmt.Errorf("handler.module %q, want %q", module, inboundModule))
		}
		for _, k := range inboundBoolOptions {
			if _, ok := pol.Options[k].(bool); !ok {
				errs = append(errs, fmt.Errorf("handler.options.%s must be a boolean", k))
			}
		}
	}
	if v, ok := pol.Options["chainVerification"]; ok {
		s, isStr := v.(string)
		if !isStr {
			errs = append(errs, errors.New("handler.options.chainVerification must be a string"))
		}
		pol.ChainVerification = s
	}
	return pol, errs
}

func exactKeys(m map[string]json.RawMessage, want ...string) error {
	var missing, extra []string
	for _, k := range want {
		if _, ok := m[k]; !ok {
			missing = append(missing, k)
		}
	}
	for k := range m {
		found := false
		for _, w := range want {
			found = found || k == w
		}
		if !found {
			extra = append(extra, k)
		}
	}
	sort.Strings(extra)
	if len(missing)+len(extra) == 0 {
		return nil
	}
	return fmt.Errorf("keys must be exactly %v (missing %v, unexpected %v)", want, missing, extra)
}

// strictJSON decodes one JSON value, refusing unknown struct fields and
// trailing data. A nil or empty input is an error: the caller asked for a value.
func strictJSON(data []byte, v any) error {
	if len(bytes.TrimSpace(data)) == 0 {
		return errors.New("missing")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data after the JSON value")
	}
	// encoding/json matches field names case-insensitively; Kubernetes and the
	// filter's parser do not. Every key of the input must survive a round trip
	// through v under exactly its own spelling.
	var in, out any
	if err := json.Unmarshal(data, &in); err != nil {
		return err
	}
	re, err := json.Marshal(v)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(re, &out); err != nil {
		return err
	}
	return keysKept(in, out, "")
}

func keysKept(in, out any, path string) error {
	switch a := in.(type) {
	case map[string]any:
		b, _ := out.(map[string]any)
		for k, v := range a {
			bv, ok := b[k]
			if !ok {
				return fmt.Errorf("unknown field %q", strings.TrimPrefix(path+"."+k, "."))
			}
			if err := keysKept(v, bv, path+"."+k); err != nil {
				return err
			}
		}
	case []any:
		b, _ := out.([]any)
		for i, v := range a {
			if i >= len(b) {
				return fmt.Errorf("%s[%d] lost in decoding", path, i)
			}
			if err := keysKept(v, b[i], fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
	}
	return nil
}

// canonicalJSON re-encodes a JSON document with sorted keys and numbers as
// float64, so two documents compare equal when they mean the same thing (a
// WasmPlugin's pluginConfig passes through google.protobuf.Struct, which turns
// every number into a double).
func canonicalJSON(data []byte) (string, error) {
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		return "", err
	}
	out, err := json.Marshal(v)
	return string(out), err
}

func rawJSON(t interface {
	Helper()
	Fatalf(string, ...any)
}, data []byte) any {
	t.Helper()
	var v any
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("invalid JSON %s: %v", data, err)
	}
	return v
}
