// Package deploy holds no runtime code. Its tests validate the deployables that
// live beside it and at the repository root — envoy.yaml and the Istio manifests
// in deploy/istio — against the same protobuf types and validation rules that
// Envoy and Istio apply, because no Envoy binary runs in CI. The tests also hold
// the pieces to one another: cluster and secret names, sidecar ports, the plugin
// configuration shared by envoy.yaml and the WasmPlugin.
package deploy
