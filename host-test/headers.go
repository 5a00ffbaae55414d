package hosttest

import (
	"strings"

	"github.com/mtlsgate/mtlsgate/internal/abi"
)

// headerMap mirrors the parts of Envoy's Http::HeaderMapImpl a filter can
// observe: keys are lowercased on insertion (Http::LowerCaseString), repeated
// keys are separate entries, and pseudo-headers stay in front of regular ones
// (HeaderMapImpl::HeaderList::insert).
type headerMap struct {
	h []abi.Header
}

func newHeaderMap(hs []abi.Header) *headerMap {
	// Room for what a filter typically adds (mtlsgate writes a dozen).
	m := &headerMap{h: make([]abi.Header, 0, len(hs)+16)}
	for _, x := range hs {
		m.add(x.Key, x.Value)
	}
	return m
}

func lower(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

func (m *headerMap) add(k, v string) {
	k = lower(k)
	if strings.HasPrefix(k, ":") {
		i := 0
		for i < len(m.h) && strings.HasPrefix(m.h[i].Key, ":") {
			i++
		}
		m.h = append(m.h, abi.Header{})
		copy(m.h[i+1:], m.h[i:])
		m.h[i] = abi.Header{Key: k, Value: v}
		return
	}
	m.h = append(m.h, abi.Header{Key: k, Value: v})
}

// get returns the first value: Envoy's Context::getHeaderMapValue returns
// entry[0] for a repeated key, not a joined list
// (source/extensions/common/wasm/context.cc).
func (m *headerMap) get(k string) (string, bool) {
	k = lower(k)
	for _, x := range m.h {
		if x.Key == k {
			return x.Value, true
		}
	}
	return "", false
}

func (m *headerMap) remove(k string) {
	k = lower(k)
	out := m.h[:0]
	for _, x := range m.h {
		if x.Key != k {
			out = append(out, x)
		}
	}
	for i := len(out); i < len(m.h); i++ {
		m.h[i] = abi.Header{}
	}
	m.h = out
}

// replace is HeaderMapImpl::setCopy with the default
// envoy.reloadable_features.http_set_copy_replace_all_headers: every entry for
// the key goes and one new entry is added.
func (m *headerMap) replace(k, v string) {
	m.remove(k)
	m.add(k, v)
}

func (m *headerMap) set(hs []abi.Header) {
	m.h = m.h[:0]
	for _, x := range hs {
		m.add(x.Key, x.Value)
	}
}

// byteSize is HeaderMapImpl::byteSize, which proxy_get_header_map_size returns
// (Context::getHeaderMapSize): the sum of key and value lengths, not a count.
func (m *headerMap) byteSize() uint32 {
	n := 0
	for _, x := range m.h {
		n += len(x.Key) + len(x.Value)
	}
	return uint32(n)
}

func (m *headerMap) clone() []abi.Header {
	if m == nil {
		return nil
	}
	return append([]abi.Header(nil), m.h...)
}

// Get returns the first value of key in hs, comparing case-insensitively.
func Get(hs []abi.Header, key string) (string, bool) {
	for _, x := range hs {
		if strings.EqualFold(x.Key, key) {
			return x.Value, true
		}
	}
	return "", false
}

// Values returns every value of key in hs, in order.
func Values(hs []abi.Header, key string) []string {
	var out []string
	for _, x := range hs {
		if strings.EqualFold(x.Key, key) {
			out = append(out, x.Value)
		}
	}
	return out
}
