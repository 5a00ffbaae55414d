//go:build wasip1

// Command noop is a proxy-wasm HTTP filter that does nothing: built from the same
// ABI layer as mtlsgate, its per-request cost in the host is the floor every
// filter benchmark is compared against.
package main

import "github.com/mtlsgate/mtlsgate/filter/proxywasm"

func main() {}

func init() {
	proxywasm.SetNewRootContext(func(uint32) proxywasm.RootContext { return root{} })
}

type root struct{ proxywasm.DefaultRootContext }

func (root) NewHTTPContext(uint32) proxywasm.HTTPContext { return proxywasm.DefaultHTTPContext{} }
