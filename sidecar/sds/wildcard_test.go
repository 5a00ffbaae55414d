package sds

import (
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// TestLaterWildcardGetsNothingElse: streams that start with a name and later ask
// for "*" (delta subscribe, SotW restated names, or delta unsubscribe of
// everything then an empty request) must never get other secrets.
func TestLaterWildcardGetsNothingElse(t *testing.T) {
	const key = "key for chain-2"
	s := startServer(t, State{CAs: []store.CA{ca("mtlsca_1")}, Outbound: []store.Outbound{
		outbound("a", true, "chain-1"), outbound("secret_b", true, "chain-2")}})
	leak := func(what string, c *client) {
		deadline := time.After(2 * time.Second)
		for {
			select {
			case r := <-c.resps:
				for n, sec := range r.secrets {
					if n == "secret_b" || strings.Contains(sec.String(), key) {
						t.Errorf("%s: got secret_b", what)
					}
				}
			case <-c.err:
				return
			case <-deadline:
				return
			}
		}
	}
	d := s.openDelta("a")
	r := d.next("a")
	d.sendDelta(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResponseNonce: r.nonce, ResourceNamesSubscribe: []string{"*"}})
	leak("delta later *", d)

	d2 := s.openDelta("a")
	r = d2.next("a")
	d2.sendDelta(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResponseNonce: r.nonce, ResourceNamesUnsubscribe: []string{"a"}})
	d2.sendDelta(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType})
	leak("delta unsubscribe all then empty", d2)

	c := s.openSotW("a")
	r = c.next("a")
	c.sendSotW(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, VersionInfo: r.version, ResponseNonce: r.nonce, ResourceNames: []string{"a", "*"}})
	leak("sotw later *", c)

}
