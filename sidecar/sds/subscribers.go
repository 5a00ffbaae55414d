package sds

import (
	"context"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Subscriber is one open SDS stream that asks for a secret by name.
type Subscriber struct {
	StreamID int64  `json:"streamId"`
	NodeID   string `json:"nodeId"`
	Cluster  string `json:"cluster"`
	Delta    bool   `json:"delta"`
}

// Subscription is what one stream currently asks for.
type Subscription struct {
	Subscriber
	Names []string `json:"names"`
	// Rejected is the stream's last rejected answer, while no later answer
	// has been accepted.
	Rejected *Rejection `json:"rejected,omitempty"`
}

// Rejection is an answer the client refused (a NACK: a request carrying
// error_detail for the answer's nonce). Envoy keeps the secret it had, so
// until the next accepted version it runs on older trust material or an
// older certificate, or without one.
type Rejection struct {
	// Version is the version of the refused answer (the snapshot version;
	// for a delta stream, the system version).
	Version string `json:"version"`
	// Secrets are the secrets the refused answer carried.
	Secrets []string `json:"secrets"`
	// Message is the client's error_detail message, cut to
	// maxRejectionMessage bytes.
	Message string    `json:"message"`
	At      time.Time `json:"at"`
}

// maxRejectionMessage bounds what a client's error message can make the
// sidecar keep and log.
const maxRejectionMessage = 2048

// streamKey tells state-of-the-world and delta streams apart: the two
// go-control-plane servers number their streams independently.
type streamKey struct {
	id    int64
	delta bool
}

type stream struct {
	node  *corev3.Node
	delta bool
	names map[string]bool
	// sent is the last answer sent on the stream: only a request naming its
	// nonce acknowledges or rejects something, so a client cannot record
	// (or log) more rejections than it was sent answers.
	sent     sentAnswer
	rejected *Rejection
}

type sentAnswer struct {
	nonce, version string
	secrets        []string
}

// Tracker records, from the server callbacks, which secret names each open
// stream subscribes to. Only explicit names count: Envoy always names the
// secrets it needs, and the cache refuses a wildcard request (the stream it
// came on closes at once).
type Tracker struct {
	mu      sync.Mutex
	streams map[streamKey]*stream
	// OnChange, if set, runs (outside the lock) after a subscription changes.
	OnChange func()
	// Log, if set, receives a warning for every answer a client rejects.
	Log *slog.Logger
	// OnReject, if set, runs once for every answer a client rejects.
	OnReject func()
}

// NewTracker returns an empty tracker.
func NewTracker() *Tracker { return &Tracker{streams: map[streamKey]*stream{}} }

func (t *Tracker) changed() {
	if t.OnChange != nil {
		t.OnChange()
	}
}

func (t *Tracker) get(id int64, delta bool) *stream {
	k := streamKey{id, delta}
	s := t.streams[k]
	if s == nil {
		s = &stream{delta: delta, names: map[string]bool{}}
		t.streams[k] = s
	}
	return s
}

// Callbacks wires the tracker into go-control-plane's server.
func (t *Tracker) Callbacks() serverv3.Callbacks {
	return serverv3.CallbackFuncs{
		StreamClosedFunc:      func(id int64, _ *corev3.Node) { t.close(streamKey{id, false}) },
		DeltaStreamClosedFunc: func(id int64, _ *corev3.Node) { t.close(streamKey{id, true}) },
		StreamRequestFunc: func(id int64, req *discoveryv3.DiscoveryRequest) error {
			t.mu.Lock()
			s := t.get(id, false)
			if req.GetNode() != nil {
				s.node = req.GetNode()
			}
			// State of the world: every request restates the full set.
			s.names = map[string]bool{}
			for _, n := range req.GetResourceNames() {
				if n != "*" {
					s.names[n] = true
				}
			}
			rej := s.answered(req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
			t.mu.Unlock()
			t.reportRejection(id, s, rej)
			t.changed()
			return nil
		},
		StreamResponseFunc: func(_ context.Context, id int64, _ *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
			t.mu.Lock()
			defer t.mu.Unlock()
			if s := t.streams[streamKey{id, false}]; s != nil {
				s.sent = sentAnswer{nonce: resp.GetNonce(), version: resp.GetVersionInfo(), secrets: secretNames(resp.GetResources())}
			}
		},
		StreamDeltaRequestFunc: func(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
			t.mu.Lock()
			s := t.get(id, true)
			if req.GetNode() != nil {
				s.node = req.GetNode()
			}
			for _, n := range req.GetResourceNamesSubscribe() {
				if n != "*" {
					s.names[n] = true
				}
			}
			for _, n := range req.GetResourceNamesUnsubscribe() {
				delete(s.names, n)
			}
			rej := s.answered(req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
			t.mu.Unlock()
			t.reportRejection(id, s, rej)
			t.changed()
			return nil
		},
		StreamDeltaResponseFunc: func(id int64, _ *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
			t.mu.Lock()
			defer t.mu.Unlock()
			if s := t.streams[streamKey{id, true}]; s != nil {
				var names []string
				for _, r := range resp.GetResources() {
					names = append(names, r.GetName())
				}
				names = append(names, resp.GetRemovedResources()...)
				sort.Strings(names)
				s.sent = sentAnswer{nonce: resp.GetNonce(), version: resp.GetSystemVersionInfo(), secrets: names}
			}
		},
		StreamOpenFunc:      func(context.Context, int64, string) error { return nil },
		DeltaStreamOpenFunc: func(context.Context, int64, string) error { return nil },
	}
}

// answered records what a request says about the last answer sent: a
// request naming that answer's nonce accepts it, or rejects it when it
// carries an error. It returns the new rejection, if any. The caller holds
// t.mu.
func (s *stream) answered(nonce, message string, failed bool) *Rejection {
	if nonce == "" || nonce != s.sent.nonce {
		// The first request, or one about an older answer, which the
		// server ignores too.
		return nil
	}
	s.sent.nonce = "" // one verdict per answer
	if !failed {
		s.rejected = nil
		return nil
	}
	if len(message) > maxRejectionMessage {
		message = message[:maxRejectionMessage] + "..."
	}
	s.rejected = &Rejection{
		Version: s.sent.version,
		Secrets: s.sent.secrets,
		Message: strings.ToValidUTF8(message, "\uFFFD"),
		At:      time.Now().UTC(),
	}
	return s.rejected
}

func (t *Tracker) reportRejection(id int64, s *stream, r *Rejection) {
	if r == nil {
		return
	}
	if t.OnReject != nil {
		t.OnReject()
	}
	if t.Log == nil {
		return
	}
	t.Log.Warn("an SDS client rejected secrets: it keeps the ones it had (or has none) until a later version is accepted; the message says what it refused",
		"nodeId", s.node.GetId(), "cluster", s.node.GetCluster(), "streamId", id, "delta", s.delta,
		"version", r.Version, "secrets", r.Secrets, "error", r.Message)
}

func secretNames(res []*anypb.Any) []string {
	var names []string
	for _, a := range res {
		var sec tlsv3.Secret
		if a.UnmarshalTo(&sec) == nil {
			names = append(names, sec.GetName())
		}
	}
	sort.Strings(names)
	return names
}

func (t *Tracker) close(k streamKey) {
	t.mu.Lock()
	delete(t.streams, k)
	t.mu.Unlock()
	t.changed()
}

func (s *stream) subscriber(id int64) Subscriber {
	return Subscriber{StreamID: id, NodeID: s.node.GetId(), Cluster: s.node.GetCluster(), Delta: s.delta}
}

// Subscribers returns the open streams that subscribe to name.
func (t *Tracker) Subscribers(name string) []Subscriber {
	t.mu.Lock()
	defer t.mu.Unlock()
	var out []Subscriber
	for k, s := range t.streams {
		if s.names[name] {
			out = append(out, s.subscriber(k.id))
		}
	}
	sortSubscribers(out)
	return out
}

func sortSubscribers(s []Subscriber) {
	sort.Slice(s, func(i, j int) bool {
		if s[i].Delta != s[j].Delta {
			return !s[i].Delta
		}
		return s[i].StreamID < s[j].StreamID
	})
}

// Subscriptions lists every open stream and what it asks for.
func (t *Tracker) Subscriptions() []Subscription {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]Subscription, 0, len(t.streams))
	for k, s := range t.streams {
		sub := Subscription{Subscriber: s.subscriber(k.id), Names: []string{}, Rejected: s.rejected}
		for n := range s.names {
			sub.Names = append(sub.Names, n)
		}
		sort.Strings(sub.Names)
		out = append(out, sub)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Delta != out[j].Delta {
			return !out[i].Delta
		}
		return out[i].StreamID < out[j].StreamID
	})
	return out
}
