// Package filtertest runs the compiled mtlsgate filter (build/mtlsgate.wasm,
// or a fresh build of ./filter) in the host-test host, the way Envoy runs it,
// and checks every decision end to end: configuration, certificate sources,
// verification outcomes, identity headers, spoofing and the trust bundle's
// life cycle. It holds only tests.
package filtertest
