package hosttest_test

import (
	"context"
	"testing"

	hosttest "github.com/mtlsgate/mtlsgate/host-test"
	"github.com/mtlsgate/mtlsgate/internal/abi"
)

// TestSharedQueueAcrossVMs: a queue is resolved by vm_id and name from any
// VM; proxy_on_queue_ready goes to the VM that registered it last (Envoy's
// registerSharedQueue rebinds an existing queue to the newest registrant), which
// dequeues in order.
func TestSharedQueueAcrossVMs(t *testing.T) {
	m := module(t, abitestPkg)
	p := m.NewPlugin(hosttest.PluginConfig{VMID: "vm-a", Configuration: []byte(`{"queue": "work", "vmId": "vm-a"}`)})
	other := newVM(t, p)
	owner := newVM(t, p)
	for _, v := range []string{"one", "two", "three"} {
		res, err := other.Do(context.Background(), req("/enqueue/"+v))
		if err != nil {
			t.Fatal(err)
		}
		if got := get(t, res.Forwarded.Headers, "x-abitest-enqueue"); got != "OK" {
			t.Fatalf("enqueue %s: %s", v, got)
		}
	}
	if n, err := owner.DeliverPending(); err != nil || n == 0 {
		t.Fatalf("no queue notification delivered to the owner (n=%d, err=%v)", n, err)
	}
	got, _, ok := p.SharedData("abitest.queue")
	if !ok || string(got) != "one two three " {
		t.Fatalf("owner dequeued %q, want \"one two three \"", got)
	}
	if n, _ := other.DeliverPending(); n != 0 {
		t.Errorf("the earlier registrant got %d queue notifications", n)
	}
	// A queue under a vm_id nobody registered is NotFound.
	p2 := m.NewPlugin(hosttest.PluginConfig{VMID: "vm-b", Configuration: []byte(`{"queue": "work", "vmId": "nobody"}`)})
	res, err := newVM(t, p2).Do(context.Background(), req("/enqueue/x"))
	if err != nil {
		t.Fatal(err)
	}
	if got := get(t, res.Forwarded.Headers, "x-abitest-enqueue"); got == "OK" {
		t.Errorf("enqueue to an unregistered vm_id succeeded")
	}
}

// TestTakeLogsDrainsOnce: every line is returned exactly once across calls.
func TestTakeLogsDrainsOnce(t *testing.T) {
	p := module(t, abitestPkg).NewPlugin(hosttest.PluginConfig{Configuration: []byte(`{}`)})
	vm := newVM(t, p)
	first := vm.TakeLogs()
	if len(first) == 0 {
		t.Fatal("plugin start logged nothing")
	}
	if again := vm.TakeLogs(); len(again) != 0 {
		t.Fatalf("lines returned twice: %v", again)
	}
	if _, err := vm.Do(context.Background(), req("/x")); err != nil {
		t.Fatal(err)
	}
	if next := vm.TakeLogs(); len(next) == 0 {
		t.Fatal("the request's lines were not returned")
	}
}

// TestBodyPassedOnAfterContinue: once the filter continues on a chunk, Envoy
// passes it on; the next body callback is told only of new data, and the
// caller gets exactly the bytes let through.
// abitestStream is one stream through the ABI-walk plugin; the stream ends
// with the test.
func abitestStream(t *testing.T) (*hosttest.Plugin, *hosttest.Stream) {
	t.Helper()
	p := module(t, abitestPkg).NewPlugin(hosttest.PluginConfig{Configuration: []byte(`{}`)})
	vm := newVM(t, p)
	s, err := vm.NewStream(nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Finish)
	return p, s
}

func TestBodyPassedOnAfterContinue(t *testing.T) {
	p, s := abitestStream(t)
	s.RequestHeaders(req("/upload").Headers, false)
	var sent []byte
	for _, chunk := range []string{"aaaa", "bb", "c"} {
		s.RequestBody([]byte(chunk), chunk == "c")
		sent = append(sent, s.TakeRequestBody()...)
	}
	if string(sent) != "aaaabbc" {
		t.Errorf("bytes let through %q, want aaaabbc", sent)
	}
	if v, _, _ := p.SharedData("abitest.bodysizes"); string(v) != "4 2 1 " {
		t.Errorf("body sizes seen by the filter %q, want \"4 2 1 \"", v)
	}
}

// A body the filter holds back is sent when the trailers end the stream and
// the filter continues on them, as Envoy's filter manager does; the filter's
// changes to the trailers are what the client gets.
func TestResponseTrailersReleaseHeldBody(t *testing.T) {
	_, s := abitestStream(t)
	s.RequestHeaders(req("/held").Headers, true)
	s.ResponseHeaders([]abi.Header{{Key: ":status", Value: "200"}, {Key: "x-abitest-hold-body", Value: "1"}}, false)
	for _, chunk := range []string{"ab", "cd"} {
		if a := s.ResponseBody([]byte(chunk), false); a == abi.ActionContinue {
			t.Fatalf("chunk %q: the filter continued; it holds the body until the end", chunk)
		}
		if out := s.TakeResponseBody(); len(out) != 0 {
			t.Fatalf("chunk %q: %q let through while held", chunk, out)
		}
	}
	if a := s.ResponseTrailers([]abi.Header{{Key: "grpc-status", Value: "0"}}); a != abi.ActionContinue {
		t.Fatalf("trailers: action %v, want continue", a)
	}
	if out := s.TakeResponseBody(); string(out) != "abcd" {
		t.Errorf("after the trailers %q let through, want the held \"abcd\"", out)
	}
	tr := s.ResponseTrailersNow()
	if v, _ := hosttest.Get(tr, "x-abitest-trailers"); v != "1" {
		t.Errorf("trailers %v: want the filter's x-abitest-trailers: 1", tr)
	}
	if v, _ := hosttest.Get(tr, "grpc-status"); v != "0" {
		t.Errorf("trailers %v: lost grpc-status", tr)
	}
}
