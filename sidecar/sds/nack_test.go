package sds

import (
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/genproto/googleapis/rpc/status"

	"github.com/mtlsgate/mtlsgate/internal/syncbuf"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// rejection waits for the tracker to show (or, with want false, to keep
// not showing) a rejection on the only stream.
func (s *server) rejection(want bool) *Rejection {
	s.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		subs := s.tracker.Subscriptions()
		var r *Rejection
		if len(subs) == 1 {
			r = subs[0].Rejected
		}
		if (r != nil) == want || time.Now().After(deadline) {
			return r
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestNackIsRecordedAndLogged: Envoy refuses secrets it cannot load (a CA
// or CRL BoringSSL does not parse, a key type it does not support) with a
// NACK, keeps what it had, and says why in error_detail. The sidecar does
// not send that version again, so without a record of the NACK the
// operator sees a healthy sidecar while Envoy runs on older material. The
// rejection is shown in the subscriptions (GET /v1/sds/subscriptions) and
// logged, once per refused answer; a request about an answer that was never
// sent records nothing; the next accepted version clears it.
func TestNackIsRecordedAndLogged(t *testing.T) {
	for _, delta := range []bool{false, true} {
		name := "sotw"
		if delta {
			name = "delta"
		}
		t.Run(name, func(t *testing.T) {
			s := startServer(t, State{CAs: []store.CA{ca("mtlsca_1")}})
			var logs syncbuf.Buffer
			s.tracker.Log = slog.New(slog.NewJSONHandler(&logs, nil))
			var rejections atomic.Int32
			s.tracker.OnReject = func() { rejections.Add(1) }
			const msg = "Failed to load trusted CA certificates from <inline>"
			nack := func(c *client, r response, nonce string) {
				if delta {
					c.sendDelta(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResponseNonce: nonce,
						ErrorDetail: &status.Status{Code: 13, Message: msg}})
					return
				}
				c.sendSotW(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: []string{ClientCASecret}, ResponseNonce: nonce,
					ErrorDetail: &status.Status{Code: 13, Message: msg}})
			}
			ack := func(c *client, r response) {
				if delta {
					c.sendDelta(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resourcev3.SecretType, ResponseNonce: r.nonce})
					return
				}
				c.ack(r, ClientCASecret)
			}
			var c *client
			if delta {
				c = s.openDelta(ClientCASecret)
			} else {
				c = s.openSotW(ClientCASecret)
			}
			r := c.next("the validation context")

			// A NACK naming a nonce this stream was never sent is not a
			// verdict on anything.
			nack(c, r, "999")
			if rej := s.rejection(false); rej != nil {
				t.Fatalf("a NACK of an answer never sent was recorded: %+v", rej)
			}

			nack(c, r, r.nonce)
			rej := s.rejection(true)
			if rej == nil {
				t.Fatal("the NACK is not shown in the subscriptions")
			}
			if rej.Message != msg || !slices.Equal(rej.Secrets, []string{ClientCASecret}) || rej.Version == "" || rej.At.IsZero() {
				t.Fatalf("rejection %+v", rej)
			}
			if !delta && rej.Version != r.version {
				t.Fatalf("rejected version %q, answer was %q", rej.Version, r.version)
			}
			b, _ := json.Marshal(s.tracker.Subscriptions())
			var decoded []struct {
				Rejected struct{ Message string } `json:"rejected"`
			}
			if err := json.Unmarshal(b, &decoded); err != nil || len(decoded) != 1 || decoded[0].Rejected.Message != msg {
				t.Fatalf("subscriptions JSON does not carry the rejection: %s", b)
			}
			// The same NACK again (a client repeating itself) is not logged again.
			nack(c, r, r.nonce)
			time.Sleep(100 * time.Millisecond)
			if n := strings.Count(logs.String(), msg); n != 1 {
				t.Fatalf("rejection logged %d times, want 1:\n%s", n, logs.String())
			}
			if n := rejections.Load(); n != 1 {
				t.Fatalf("OnReject ran %d times, want 1", n)
			}
			if !strings.Contains(logs.String(), `"nodeId":"envoy-`) {
				t.Fatalf("the log line does not name the node: %s", logs.String())
			}

			// The next version, accepted, clears it.
			s.update(State{CAs: []store.CA{ca("mtlsca_1"), ca("mtlsca_2")}})
			r2 := c.next("the next version")
			ack(c, r2)
			if rej := s.rejection(false); rej != nil {
				t.Fatalf("still rejected after the next version was accepted: %+v", rej)
			}
		})
	}
}

// TestLongNackMessageIsBounded: whoever reaches the listener chooses the
// message; the sidecar keeps and logs a bounded, valid UTF-8 part of it.
func TestLongNackMessageIsBounded(t *testing.T) {
	s := startServer(t, State{CAs: []store.CA{ca("mtlsca_1")}})
	c := s.openSotW(ClientCASecret)
	r := c.next("the validation context")
	long := strings.Repeat("é", 1<<20)
	c.sendSotW(&discoveryv3.DiscoveryRequest{TypeUrl: resourcev3.SecretType, ResourceNames: []string{ClientCASecret}, ResponseNonce: r.nonce,
		ErrorDetail: &status.Status{Code: 13, Message: long}})
	rej := s.rejection(true)
	if rej == nil {
		t.Fatal("no rejection recorded")
	}
	if len(rej.Message) > maxRejectionMessage+8 || !strings.HasPrefix(long, strings.TrimSuffix(strings.ToValidUTF8(rej.Message, ""), "...")[:100]) {
		t.Fatalf("message of %d bytes kept", len(rej.Message))
	}
	if !utf8Valid(rej.Message) {
		t.Fatal("kept message is not valid UTF-8")
	}
}

func utf8Valid(s string) bool { return strings.ToValidUTF8(s, "") == s }
