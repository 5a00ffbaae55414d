package filtertest

import (
	"crypto/x509/pkix"
	"testing"
	"time"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/testpki"
)

// TestFiltersSharingAVMID: Envoy keeps shared data per vm_id for the whole
// process, so two filter configurations with one vm_id (two listeners, two
// teams) see each other's keys. Each must keep its own trust bundle (from
// its own source) through any number of ticks, and its own rate-limit
// budgets.
func TestFiltersSharingAVMID(t *testing.T) {
	p := thePKI(t)
	scA, scB := &fakeSidecar{}, &fakeSidecar{}
	scA.set(p.root)
	scB.set(p.otherRoot)
	limited := map[string]any{"profileAuthorization": "enforce", "profileIdField": "OU", "clientIdField": "CN"}
	config := func(cluster string) map[string]any {
		return map[string]any{"policies": []any{policyDoc("mtls", limited)},
			"profiles":    []any{map[string]any{"id": "partner-prod", "clients": []string{"*"}, "rateLimit": map[string]any{"requests": 1, "per": "minute"}}},
			"trustBundle": map[string]any{"cluster": cluster, "path": "/v1/bundle", "refreshSeconds": 1}}
	}
	a := filterModule(t).NewPlugin(hosttest.PluginConfig{Name: "team-a", RootID: "mtlsgate", VMID: "mtlsgate", LogLevel: 2,
		Configuration: mustJSON(t, config("sidecar_a")), Clusters: map[string]hosttest.Upstream{"sidecar_a": {Handler: scA}}})
	b := filterModule(t).NewPlugin(hosttest.PluginConfig{Name: "team-b", RootID: "mtlsgate", VMID: "mtlsgate", LogLevel: 2,
		Configuration: mustJSON(t, config("sidecar_b")), Clusters: map[string]hosttest.Upstream{"sidecar_b": {Handler: scB}}, SharedWith: a})
	vmA, vmB := newVM(t, a), newVM(t, b)
	partnerA := xfccHeader(p.chainOf(p.good))
	// The same client ID and profile as a's client, from b's CA: one key,
	// were the budgets not the filters' own.
	beta := testpki.Must(p.otherRoot.Issue(testpki.Options{Key: testpki.P256, Subject: pkix.Name{CommonName: "acme-mobile", OrganizationalUnit: []string{"partner-prod"}}}))
	partnerB := xfccHeader(xfcc(beta, nil))
	for round := 0; round < 3; round++ {
		tick(t, vmA)
		tick(t, vmB)
		if round == 1 {
			time.Sleep(1100 * time.Millisecond) // both leases expire: both fetch again
		}
	}
	if scA.gets.Load() < 2 || scB.gets.Load() < 2 {
		t.Fatalf("fetches: a %d, b %d; each filter must poll its own sidecar", scA.gets.Load(), scB.gets.Load())
	}
	for _, c := range []struct {
		name   string
		vm     *hosttest.VM
		client abi.Header
		trust  bool
	}{{"a's client through a", vmA, partnerA, true}, {"b's client through a", vmA, partnerB, false},
		{"b's client through b", vmB, partnerB, true}, {"a's client through b", vmB, partnerA, false}} {
		// Twice: the second request of a trusted client meets the rate
		// limit of 1 per minute, its own filter's budget only.
		for i := 0; i < 2; i++ {
			res := do(t, c.vm, request("/", "", c.client))
			switch {
			case !c.trust && (res.LocalResponse == nil || problem(t, res)["reason"] != "UNTRUSTED_CHAIN"):
				t.Fatalf("%s: want UNTRUSTED_CHAIN, got %+v", c.name, res.LocalResponse)
			case c.trust && i == 0 && res.Forwarded == nil:
				t.Fatalf("%s: refused: %s", c.name, res.LocalResponse.Body)
			case c.trust && i == 1 && (res.LocalResponse == nil || problem(t, res)["reason"] != "RATE_LIMITED"):
				t.Fatalf("%s, second request: want RATE_LIMITED, got %+v", c.name, res.LocalResponse)
			}
		}
	}
}
