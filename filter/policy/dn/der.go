package dn

import "errors"

// A minimal DER reader for the Name structure. encoding/asn1 would decode
// attribute values into Go strings and lose the ASN.1 string type, which the
// RFC 2253 output depends on (T61String is Latin-1, unknown types are dumped as
// hex), so names are walked by hand.

var errDER = errors.New("malformed DER in distinguished name")

// tlv reads one DER element from b and returns its tag byte, the full element
// (header and content), its content and the rest of b.
func tlv(b []byte) (tag byte, full, content, rest []byte, err error) {
	if len(b) < 2 {
		return 0, nil, nil, nil, errDER
	}
	tag = b[0]
	if tag&0x1f == 0x1f { // high-tag-number form never appears in names
		return 0, nil, nil, nil, errDER
	}
	l := int(b[1])
	hdr := 2
	if l&0x80 != 0 {
		n := l & 0x7f
		if n == 0 || n > 3 || len(b) < 2+n {
			return 0, nil, nil, nil, errDER
		}
		l = 0
		for i := 0; i < n; i++ {
			l = l<<8 | int(b[2+i])
		}
		hdr = 2 + n
	}
	if l < 0 || len(b)-hdr < l {
		return 0, nil, nil, nil, errDER
	}
	return tag, b[:hdr+l], b[hdr : hdr+l], b[hdr+l:], nil
}

// oidString renders an OBJECT IDENTIFIER's content octets in dotted decimal.
func oidString(b []byte) (string, error) {
	if len(b) == 0 || len(b) > 64 {
		return "", errDER
	}
	var out []byte
	var v uint64
	first := true
	for i, c := range b {
		if v > 1<<56 {
			return "", errDER
		}
		v = v<<7 | uint64(c&0x7f)
		if c&0x80 != 0 {
			if i == len(b)-1 {
				return "", errDER
			}
			continue
		}
		if first {
			switch {
			case v < 40:
				out = append(out, '0', '.')
			case v < 80:
				out = append(out, '1', '.')
				v -= 40
			default:
				out = append(out, '2', '.')
				v -= 80
			}
			first = false
		} else {
			out = append(out, '.')
		}
		out = appendUint(out, v)
		v = 0
	}
	return string(out), nil
}

func appendUint(b []byte, v uint64) []byte {
	var tmp [20]byte
	i := len(tmp)
	for {
		i--
		tmp[i] = byte('0' + v%10)
		v /= 10
		if v == 0 {
			break
		}
	}
	return append(b, tmp[i:]...)
}

// AVA is one attribute type and value of a name, as encoded.
type AVA struct {
	OID   string // dotted decimal
	Tag   byte   // ASN.1 tag of the value
	Value []byte // content octets of the value
	DER   []byte // the whole encoded value (tag, length, content)
}

// RDN is one relative distinguished name: a set of one or more AVAs.
type RDN []AVA

// ParseRDNSequence decodes a DER Name (an X.509 certificate's RawSubject or
// RawIssuer) in encoded order, most general RDN first.
func ParseRDNSequence(der []byte) ([]RDN, error) {
	tag, _, seq, rest, err := tlv(der)
	if err != nil || tag != 0x30 || len(rest) != 0 {
		return nil, errDER
	}
	var out []RDN
	for len(seq) > 0 {
		var set []byte
		tag, _, set, seq, err = tlv(seq)
		if err != nil || tag != 0x31 {
			return nil, errDER
		}
		var rdn RDN
		for len(set) > 0 {
			var atv []byte
			tag, _, atv, set, err = tlv(set)
			if err != nil || tag != 0x30 {
				return nil, errDER
			}
			tag, _, oid, after, err := tlv(atv)
			if err != nil || tag != 0x06 {
				return nil, errDER
			}
			oidStr, err := oidString(oid)
			if err != nil {
				return nil, err
			}
			vtag, full, content, after2, err := tlv(after)
			if err != nil || len(after2) != 0 {
				return nil, errDER
			}
			rdn = append(rdn, AVA{OID: oidStr, Tag: vtag, Value: content, DER: full})
		}
		if len(rdn) == 0 {
			return nil, errDER
		}
		out = append(out, rdn)
	}
	return out, nil
}
