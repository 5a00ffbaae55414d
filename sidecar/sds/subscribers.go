package sds

import (
	"context"
	"sort"
	"sync"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
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
}

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
			t.mu.Unlock()
			t.changed()
			return nil
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
			t.mu.Unlock()
			t.changed()
			return nil
		},
		StreamOpenFunc:      func(context.Context, int64, string) error { return nil },
		DeltaStreamOpenFunc: func(context.Context, int64, string) error { return nil },
	}
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
		sub := Subscription{Subscriber: s.subscriber(k.id), Names: []string{}}
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
