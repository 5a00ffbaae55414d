package filtertest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/sidecar/bundlekey"
)

func signingKey(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func sign(t *testing.T, k *ecdsa.PrivateKey, body []byte) string {
	t.Helper()
	sig, err := bundle.Sign(k, body)
	if err != nil {
		t.Fatal(err)
	}
	return sig
}

func signedConfig(t *testing.T, keys ...*ecdsa.PrivateKey) map[string]any {
	var pems []string
	for _, k := range keys {
		pems = append(pems, bundlekey.PublicPEM(k))
	}
	return map[string]any{"policies": []any{policyDoc("mtls", nil)},
		"trustBundle": map[string]any{"cluster": "mtlsgate_sidecar", "path": "/v1/bundle", "refreshSeconds": 1, "publicKeys": pems}}
}

// refetch lets the 1 s fetch lease expire and ticks, so vm fetches again.
func refetch(t *testing.T, vm *hosttest.VM) {
	t.Helper()
	time.Sleep(1100 * time.Millisecond)
	tick(t, vm)
}

// verdict is "ok" for a forwarded request, else the problem's reason.
func verdict(t *testing.T, vm *hosttest.VM, client abi.Header) string {
	t.Helper()
	res := do(t, vm, request("/", "", client))
	if res.Forwarded != nil {
		return "ok"
	}
	r, _ := problem(t, res)["reason"].(string)
	return r
}

// newErrors are the errors vm logged after its first n log entries.
func newErrors(vm *hosttest.VM, n int) string {
	var b strings.Builder
	for _, l := range vm.Logs()[n:] {
		if l.Level == abi.LogError {
			b.WriteString(l.Message + "\n")
		}
	}
	return b.String()
}

// TestSignedBundle: with trustBundle.publicKeys, a bundle is taken only
// with a valid signature by a listed key. An unsigned one, one signed by
// another key, and one whose body was swapped under a genuine signature are
// each refused as an unreadable bundle is: before the first good bundle
// protected routes stay 503, after it the good bundle stays in force.
func TestSignedBundle(t *testing.T) {
	p := thePKI(t)
	key, attacker := signingKey(t), signingKey(t)
	sc := &fakeSidecar{}
	plugin, vm := newPlugin(t, signedConfig(t, key), map[string]hosttest.Upstream{"mtlsgate_sidecar": {Handler: sc}})
	good := xfccHeader(p.chainOf(p.good))
	foreign := xfccHeader(p.chainOf(p.foreign))
	// The start line names the key as serve's ready line and `mtlsgate
	// bundle-key` do, so an operator can match the two.
	started := ""
	for _, l := range vm.Logs() {
		if strings.Contains(l.Message, "started with") {
			started = l.Message
		}
	}
	if want := "signed by one of 1 public keys (set " + bundlekey.ID(key) + ")"; !strings.Contains(started, want) {
		t.Errorf("start line %q lacks %q", started, want)
	}

	trusted, trustedVersion := bundleOf(p.root)
	rogue, rogueVersion := bundleOf(p.otherRoot)

	// What squats the address first hands out an unsigned bundle.
	sc.serve(rogue, rogueVersion, "")
	tick(t, vm)
	if got := verdict(t, vm, foreign); got != "TRUST_BUNDLE_UNAVAILABLE" {
		t.Fatalf("after an unsigned first bundle: %s, want TRUST_BUNDLE_UNAVAILABLE", got)
	}
	if e := newErrors(vm, 0); !strings.Contains(e, "no "+bundle.SignatureHeader+" header") || !strings.Contains(e, "--bundle-signing-key") || !strings.Contains(e, "no bundle loaded yet") {
		t.Errorf("the unsigned bundle was not refused with a helpful error: %q", e)
	}

	sc.serve(trusted, trustedVersion, sign(t, key, trusted))
	refetch(t, vm)
	if got := verdict(t, vm, good); got != "ok" {
		t.Fatalf("signed bundle: %s, want the client accepted", got)
	}

	for _, c := range []struct {
		name, sig, log string
	}{
		{"unsigned", "", "no " + bundle.SignatureHeader + " header"},
		{"signed by an unlisted key", sign(t, attacker, rogue), "does not verify with any of the 1 listed public keys"},
		{"body swapped under a genuine signature", sign(t, key, trusted), "does not verify"},
		{"signature not base64", "!!", "not base64"},
	} {
		n := len(vm.Logs())
		sc.serve(rogue, rogueVersion, c.sig)
		refetch(t, vm)
		if got := verdict(t, vm, foreign); got != "UNTRUSTED_CHAIN" {
			t.Errorf("%s: the rogue CA's client got %s, want UNTRUSTED_CHAIN", c.name, got)
		}
		if got := verdict(t, vm, good); got != "ok" {
			t.Errorf("%s: the last good bundle was dropped: %s", c.name, got)
		}
		if e := newErrors(vm, n); !strings.Contains(e, c.log) || !strings.Contains(e, "keeping the last good one") {
			t.Errorf("%s: logged %q, want an error with %q", c.name, e, c.log)
		}
	}
	if m, ok := plugin.Metric("mtlsgate.bundle.signature_rejected"); !ok || m.Value != 5 {
		t.Errorf("signature rejections counted %+v, want 5", m)
	}

	// The real sidecar signs a new CA set: taken.
	sc.serve(rogue, rogueVersion, sign(t, key, rogue))
	refetch(t, vm)
	if got := verdict(t, vm, foreign); got != "ok" {
		t.Errorf("a properly signed change was not taken: %s", got)
	}
}

// TestSignedBundleKeyRotation: with two keys listed, bundles signed by
// either are taken, and one by a third is not.
func TestSignedBundleKeyRotation(t *testing.T) {
	p := thePKI(t)
	oldKey, newKey, other := signingKey(t), signingKey(t), signingKey(t)
	sc := &fakeSidecar{}
	_, vm := newPlugin(t, signedConfig(t, oldKey, newKey), map[string]hosttest.Upstream{"mtlsgate_sidecar": {Handler: sc}})
	good := xfccHeader(p.chainOf(p.good))
	foreign := xfccHeader(p.chainOf(p.foreign))
	a, av := bundleOf(p.root)
	b, bv := bundleOf(p.otherRoot)

	sc.serve(a, av, sign(t, oldKey, a))
	tick(t, vm)
	if got := verdict(t, vm, good); got != "ok" {
		t.Fatalf("bundle signed by the old key: %s", got)
	}
	sc.serve(b, bv, sign(t, newKey, b))
	refetch(t, vm)
	if got := verdict(t, vm, foreign); got != "ok" {
		t.Fatalf("bundle signed by the new key: %s", got)
	}
	sc.serve(a, av, sign(t, other, a))
	refetch(t, vm)
	if got := verdict(t, vm, foreign); got != "ok" {
		t.Fatalf("a third key's bundle replaced the good one: the foreign client got %s", got)
	}
	if got := verdict(t, vm, good); got != "UNTRUSTED_CHAIN" {
		t.Fatalf("a third key's bundle was taken: %s", got)
	}
}

// TestSignedBundleNotFromSharedData: Envoy's shared data is per vm_id for
// the whole process, and a bundle in it was checked by whichever filter
// fetched it. A filter that verifies must not load one that a filter with
// the same vm_id, cluster name and path but no publicKeys (another listener,
// or the configuration before this one) fetched unsigned.
func TestSignedBundleNotFromSharedData(t *testing.T) {
	p := thePKI(t)
	key := signingKey(t)
	unsignedSrc, signedSrc := &fakeSidecar{}, &fakeSidecar{}
	rogue, rogueVersion := bundleOf(p.otherRoot)
	unsignedSrc.serve(rogue, rogueVersion, "")
	signedSrc.failing = true
	plain := map[string]any{"policies": []any{policyDoc("mtls", nil)},
		"trustBundle": map[string]any{"cluster": "mtlsgate_sidecar", "path": "/v1/bundle", "refreshSeconds": 1}}
	a := filterModule(t).NewPlugin(hosttest.PluginConfig{Name: "plain", RootID: "mtlsgate", VMID: "mtlsgate", LogLevel: abi.LogInfo,
		Configuration: mustJSON(t, plain), Clusters: map[string]hosttest.Upstream{"mtlsgate_sidecar": {Handler: unsignedSrc}}})
	b := filterModule(t).NewPlugin(hosttest.PluginConfig{Name: "signed", RootID: "mtlsgate", VMID: "mtlsgate", LogLevel: abi.LogInfo,
		Configuration: mustJSON(t, signedConfig(t, key)), Clusters: map[string]hosttest.Upstream{"mtlsgate_sidecar": {Handler: signedSrc}}, SharedWith: a})
	vmA, vmB := newVM(t, a), newVM(t, b)
	foreign := xfccHeader(p.chainOf(p.foreign))

	tick(t, vmA)
	if got := verdict(t, vmA, foreign); got != "ok" {
		t.Fatalf("the unsigned filter did not load its bundle: %s", got)
	}
	tick(t, vmB)
	if got := verdict(t, vmB, foreign); got != "TRUST_BUNDLE_UNAVAILABLE" {
		t.Fatalf("the verifying filter answered %s, want TRUST_BUNDLE_UNAVAILABLE: it took the unsigned filter's bundle from shared data", got)
	}
	good, gv := bundleOf(p.root)
	signedSrc.mu.Lock()
	signedSrc.failing = false
	signedSrc.mu.Unlock()
	signedSrc.serve(good, gv, sign(t, key, good))
	refetch(t, vmB)
	if got := verdict(t, vmB, xfccHeader(p.chainOf(p.good))); got != "ok" {
		t.Fatalf("signed bundle after the sidecar came back: %s", got)
	}
	tick(t, vmA)
	if got := verdict(t, vmA, foreign); got != "ok" {
		t.Errorf("the signed filter's bundle replaced the unsigned filter's: %s", got)
	}
}
