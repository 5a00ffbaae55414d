package policy

import (
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/mtlsgate/mtlsgate/filter/policy/certsrc"
)

// ProblemBase prefixes the problem type URI of every reason: the type of
// UNTRUSTED_CHAIN is https://mtlsgate.dev/problems/untrusted-chain. These
// URIs are stable; clients may switch on them.
const ProblemBase = "https://mtlsgate.dev/problems/"

type problemText struct{ title, detail string }

var problems = map[Reason]problemText{
	ReasonNoCertificate: {"Client certificate required",
		"This endpoint requires a client certificate. Configure your client to send its certificate and key (for curl: --cert client.pem --key client.key)."},
	ReasonMalformedCertificate: {"Client certificate could not be read",
		"The client certificate or its chain could not be decoded. Send a valid X.509 certificate; operators: check the proxy that forwards it."},
	ReasonUntrustedChain: {"Client certificate not trusted",
		"The client certificate does not chain to a trusted CA. Send the leaf followed by its intermediate certificates, and make sure the issuing root CA is uploaded."},
	ReasonExpired: {"Client certificate expired",
		"The client certificate or a CA certificate in its chain has expired. Renew the certificate (or the CA) and retry."},
	ReasonNotYetValid: {"Client certificate not yet valid",
		"The client certificate is not valid yet. Check its notBefore date and the clocks of the issuing system."},
	ReasonRevoked: {"Client certificate revoked",
		"The client certificate or a CA in its chain has been revoked by its issuer. Obtain a new certificate."},
	ReasonRevocationUnknown: {"Client certificate revocation status unknown",
		"The revocation status could not be established because the issuer's CRL is stale or missing. Operators: publish a fresh CRL."},
	ReasonIssuerDNMismatch: {"Client certificate issuer not accepted",
		"The client certificate was issued by a CA this endpoint does not accept. Use a certificate from the expected issuer."},
	ReasonWrongKeyUsage: {"Client certificate not valid for client authentication",
		"The client certificate's key usage does not allow TLS client authentication. Issue a certificate with extendedKeyUsage clientAuth."},
	ReasonCertificateTooLarge: {"Client certificate too large",
		"The client certificate or its chain is larger than this endpoint accepts. Reissue the certificate with fewer extensions or SANs, or an ECDSA key, and send at most " + strconv.Itoa(certsrc.MaxChain) + " certificates, leaf first."},
	ReasonUntrustedSource: {"Client certificate not accepted from this source",
		"The certificate was not received through a trusted proxy. Connect through the configured load balancer or CDN."},
	ReasonTrustBundleUnavailable: {"Client certificate verification unavailable",
		"The gateway has not loaded its trusted CA list yet. Retry shortly; operators: check that the mtlsgate sidecar is reachable."},
	ReasonProfileMismatch: {"Profile does not match the client certificate",
		"The profile named in the request is not the profile your client certificate is bound to. Send the profile your certificate carries, or omit the header."},
	ReasonProfileUnknown: {"Client certificate bound to no known profile",
		"Your client certificate does not name a profile this gateway knows. Ask the API operator to bind your certificate's profile."},
	ReasonClientNotAllowed: {"Client not allowed for this profile",
		"Your client is not among the clients allowed to use the profile your certificate is bound to. Ask the API operator to add it."},
	ReasonIPNotAllowed: {"Source address not allowed for this profile",
		"Requests for your profile are accepted only from the networks its operator allowed. Connect from an allowed network."},
	ReasonProfileNotAllowed: {"Profile not allowed on this route",
		"The profile your client certificate is bound to may not use this API. Ask the API operator for access, or use an endpoint your profile covers."},
	ReasonMethodNotAllowed: {"Method not allowed for this profile",
		"Your profile does not allow this HTTP method. The Allow response header lists the methods it does allow."},
	ReasonAmbiguousPath: {"Ambiguous request path",
		"The request path reaches a different route once dot segments, repeated slashes or escapes are resolved, or letter case is ignored, or it carries a NUL byte, an overlong UTF-8 sequence or more layers of percent-encoding than are read. Send the path in its plain form."},
	ReasonRateLimited: {"Rate limit exceeded",
		"Your client has used its request budget for the current window. Retry after the number of seconds in the Retry-After response header."},
}

// ProblemType returns the stable problem type URI of a reason.
func ProblemType(r Reason) string {
	return ProblemBase + strings.ReplaceAll(strings.ToLower(string(r)), "_", "-")
}

func problemBody(r Reason, status int) []byte {
	t := problems[r]
	var b []byte
	b = append(b, `{"type":`...)
	b = appendJSONString(b, ProblemType(r))
	b = append(b, `,"title":`...)
	b = appendJSONString(b, t.title)
	b = append(b, `,"status":`...)
	b = strconv.AppendInt(b, int64(status), 10)
	b = append(b, `,"detail":`...)
	b = appendJSONString(b, t.detail)
	b = append(b, `,"reason":`...)
	b = appendJSONString(b, string(r))
	return append(b, '}')
}

// appendJSONString writes s as a JSON string; hand-rolled to keep
// encoding/json's reflection out of the wasm binary's hot path.
func appendJSONString(b []byte, s string) []byte {
	b = append(b, '"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b = append(b, '\\', c)
		case c == '\n':
			b = append(b, '\\', 'n')
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
		case c == '<' || c == '>' || c == '&':
			b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&15])
		case c >= utf8.RuneSelf:
			// Client bytes that are not UTF-8 would make the whole line
			// invalid JSON for log pipelines; U+FFFD, as encoding/json does.
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 {
				b = append(b, `\ufffd`...)
			} else {
				b = append(b, s[i:i+n]...)
			}
			i += n - 1
		default:
			b = append(b, c)
		}
	}
	return append(b, '"')
}

// LogLine renders the decision as one JSON object for the proxy log. It is
// built on demand, so requests that are not logged do not pay for it.
func (r *Result) LogLine() string {
	if r.SourceAddress == "" && r.src != nil {
		r.SourceAddress, r.src = r.src.SourceAddress(), nil
	}
	b := make([]byte, 0, 256)
	b = append(b, `{"msg":"mtls decision"`...)
	if !r.Time.IsZero() {
		b = append(b, `,"time":`...)
		b = appendJSONString(b, r.Time.UTC().Format(time.RFC3339Nano))
	}
	b = append(b, `,"decision":`...)
	b = appendJSONString(b, r.Decision)
	if r.Status != 0 {
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(r.Status), 10)
	}
	field := func(k, v string) {
		if v != "" {
			b = append(b, ',', '"')
			b = append(b, k...)
			b = append(b, '"', ':')
			b = appendJSONString(b, v)
		}
	}
	field("reason", string(r.Reason))
	field("policy", r.Policy)
	field("route", r.Route)
	field("method", clip(r.Method))
	field("source", r.SourceAddress)
	field("clientId", r.ClientID)
	field("profileId", r.ProfileID)
	field("requestedProfile", r.RequestedProfile)
	if e := r.e; e != nil {
		field("subject", e.subject)
		field("issuer", e.issuer)
		field("fingerprint", e.fingerprint)
	}
	field("detail", r.Detail())
	field("configVersion", r.ConfigVersion)
	field("bundleVersion", r.BundleVersion)
	field("profilesVersion", r.ProfilesVersion)

	if r.CacheHit {
		b = append(b, `,"cached":true`...)
	}
	return string(append(b, '}'))
}

// Detail is the operator-facing explanation of the verdict (also in LogLine).
func (r *Result) Detail() string {
	if r.detail != "" {
		return r.detail
	}
	if r.e == nil {
		return ""
	}
	return r.e.detail
}
