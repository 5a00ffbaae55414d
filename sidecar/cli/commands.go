package cli

import (
	"encoding/pem"
	"fmt"
	"net/http"
	"net/url"
	"strings"

	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/pki"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

var verbOrder = map[string][]string{
	"ca-certificate":   {"create", "list", "describe", "update", "delete"},
	"crl":              {"create", "list", "describe", "update", "delete"},
	"mtls-certificate": {"create", "list", "describe", "update", "disable", "enable", "delete"},
}

var groups = map[string]map[string]verb{
	"ca-certificate": {
		"create": {"upload a self-signed root CA (PEM) that client certificates chain to", func(c *cmd) func() error {
			name := c.fs.String("name", "", "name: a JavaScript identifier (letters, digits, _, $; not starting with a digit)")
			file := c.fs.String("cert", "", "PEM file of the CA certificate (- for stdin)")
			inter := c.fs.Bool("allow-intermediate", false, "accept an intermediate CA as trust anchor")
			return func() error {
				if err := c.required("name", *name, "cert", *file); err != nil {
					return err
				}
				if err := pki.ValidName(*name); err != nil {
					return err
				}
				data, err := readFile("cert", *file)
				if err != nil {
					return err
				}
				if pki.IsDER(data) {
					return pki.DERCertificateError(*file)
				}
				return send(c, http.MethodPost, api.PathCAs, api.CreateCA{Name: *name, CertPEM: string(data), AllowIntermediate: *inter}, func(ca api.CACertificate) {
					fmt.Fprintf(c.w, "Created CA certificate %s: %s\n", ca.Name, ca.ID)
					c.describeCA(ca)
				})
			}
		}},
		"list": {"list CA certificates", func(c *cmd) func() error {
			return func() error {
				return send(c, http.MethodGet, api.PathCAs, nil, func(cas []api.CACertificate) {
					rows := make([][]string, 0, len(cas))
					for _, ca := range cas {
						from := "api"
						if ca.ManagedBy != "" {
							from = ca.ManagedBy
						}
						rows = append(rows, []string{ca.ID, ca.Name, ca.Subject, ts(ca.NotAfter), crlSummary(ca.CRL), from})
					}
					c.table("ID\tNAME\tSUBJECT\tNOT AFTER\tCRL\tFROM", rows)
				})
			}
		}},
		"describe": {"show one CA certificate", byID(caID, http.MethodGet, "", func(c *cmd, ca api.CACertificate) { c.describeCA(ca) })},
		"update": {"rename a CA certificate (the certificate itself cannot change)", func(c *cmd) func() error {
			id := c.fs.String("cert-id", "", "ID of the CA certificate (mtlsca_...)")
			name := c.fs.String("name", "", "new name (a JavaScript identifier)")
			return func() error {
				if err := c.required("cert-id", *id, "name", *name); err != nil {
					return err
				}
				return send(c, http.MethodPatch, api.PathCAs+"/"+url.PathEscape(*id), api.UpdateCA{Name: *name}, func(ca api.CACertificate) {
					fmt.Fprintf(c.w, "Renamed CA certificate %s to %s\n", ca.ID, ca.Name)
				})
			}
		}},
		"delete": {"delete a CA certificate (Envoy drops it from new handshakes at once; the filter at its next bundle refresh, refreshSeconds)", byID(caID, http.MethodDelete, "", func(c *cmd, ca api.CACertificate) {
			fmt.Fprintf(c.w, "Deleted CA certificate %s (%s)\n", ca.Name, ca.ID)
		})},
	},
	"crl": {
		"create": {"attach a CRL to a CA, from a file (PEM or DER) or a URL refreshed before nextUpdate", func(c *cmd) func() error {
			id := c.fs.String("cert-id", "", "ID of the CA certificate that signed the CRL")
			file := c.fs.String("file", "", "CRL file, PEM or DER (- for stdin)")
			u := c.fs.String("url", "", "URL the CA publishes the CRL at")
			return func() error {
				if err := c.required("cert-id", *id); err != nil {
					return err
				}
				data, err := crlData(c, "create", *file, *u)
				if err != nil {
					return err
				}
				req := api.CreateCRL{CAID: *id, URL: *u, CRL: data}
				return send(c, http.MethodPost, api.PathCRLs, req, func(crl api.CRL) {
					fmt.Fprintf(c.w, "Created CRL %s for CA %s\n", crl.ID, crl.CAID)
					c.describeCRL(crl)
				})
			}
		}},
		"list": {"list CRLs with their freshness", func(c *cmd) func() error {
			return func() error {
				return send(c, http.MethodGet, api.PathCRLs, nil, func(crls []api.CRL) {
					rows := make([][]string, 0, len(crls))
					for _, l := range crls {
						state := "fresh"
						if l.Stale {
							state = "STALE"
						}
						lastErr := l.LastError
						if lastErr == "" {
							lastErr = "-"
						}
						rows = append(rows, []string{l.ID, l.CAID, l.Source, l.Number, fmt.Sprint(l.RevokedCount), ts(l.NextUpdate), state, lastErr})
					}
					c.table("ID\tCA\tSOURCE\tNUMBER\tREVOKED\tNEXT UPDATE\tSTATE\tLAST ERROR", rows)
				})
			}
		}},
		"describe": {"show one CRL", byID(crlID, http.MethodGet, "", func(c *cmd, crl api.CRL) { c.describeCRL(crl) })},
		"update": {"replace a CRL's list in one step, from a file or a URL (refused if older than the stored one)", func(c *cmd) func() error {
			id := c.fs.String(crlID.flag, "", crlID.usage)
			file := c.fs.String("file", "", "CRL file, PEM or DER (- for stdin)")
			u := c.fs.String("url", "", "URL the CA publishes the CRL at (refreshed from then on)")
			return func() error {
				if err := c.required(crlID.flag, *id); err != nil {
					return err
				}
				data, err := crlData(c, "update", *file, *u)
				if err != nil {
					return err
				}
				req := api.ReplaceCRL{URL: *u, CRL: data}
				return send(c, http.MethodPut, crlID.path+"/"+url.PathEscape(*id), req, func(crl api.CRL) {
					fmt.Fprintf(c.w, "Updated CRL %s for CA %s\n", crl.ID, crl.CAID)
					c.describeCRL(crl)
				})
			}
		}},
		"delete": {"delete a CRL", byID(crlID, http.MethodDelete, "", func(c *cmd, crl api.CRL) {
			fmt.Fprintf(c.w, "Deleted CRL %s (CA %s)\n", crl.ID, crl.CAID)
		})},
	},
	"mtls-certificate": {
		"create": {"upload a client certificate and key the gateway presents to backends", func(c *cmd) func() error {
			name := c.fs.String("name", "", "name Envoy's SDS config refers to (a JavaScript identifier)")
			certFile := c.fs.String("cert", "", "PEM certificate, optionally followed by its chain (- for stdin)")
			keyFile := c.fs.String("key", "", "PEM private key matching the certificate (- for stdin; with --cert - too, one stream holding both)")
			var envs multiFlag
			c.fs.Var(&envs, "environment-type", "development, preview or production (repeatable)")
			return func() error {
				if err := c.required("name", *name, "cert", *certFile, "key", *keyFile); err != nil {
					return err
				}
				if len(envs) == 0 {
					fmt.Fprintf(c.errw, "mtlsgate %s: --environment-type is required (repeat it for each of %s)\n", c.fs.Name(), strings.Join(api.EnvironmentTypes, ", "))
					return errUsage
				}
				if err := pki.ValidName(*name); err != nil {
					return err
				}
				certPEM, keyPEM, err := readKeyPair(*certFile, *keyFile)
				if err != nil {
					return err
				}
				return send(c, http.MethodPost, api.PathOutbound, api.CreateMTLSCertificate{Name: *name, CertPEM: string(certPEM), KeyPEM: string(keyPEM), EnvironmentTypes: envs}, func(m api.MTLSCertificate) {
					fmt.Fprintf(c.w, "Created mTLS certificate %s: %s\n", m.Name, m.ID)
					c.describeOutbound(m)
				})
			}
		}},
		"list": {"list outbound certificates (never key material)", func(c *cmd) func() error {
			return func() error {
				return send(c, http.MethodGet, api.PathOutbound, nil, func(list []api.MTLSCertificate) {
					rows := make([][]string, 0, len(list))
					for _, m := range list {
						rows = append(rows, []string{m.ID, m.Name, strings.Join(m.EnvironmentTypes, ","), yesNo(m.Enabled), served(m), fmt.Sprint(len(m.Subscribers)), ts(m.NotAfter)})
					}
					c.table("ID\tNAME\tENVIRONMENTS\tENABLED\tSERVED\tSUBSCRIBERS\tNOT AFTER", rows)
				})
			}
		}},
		"describe": {"show one outbound certificate and who subscribes to it", byID(outboundID, http.MethodGet, "", func(c *cmd, m api.MTLSCertificate) { c.describeOutbound(m) })},
		"update": {"replace the certificate and key behind the same name; subscribed Envoys get them over SDS", func(c *cmd) func() error {
			id := c.fs.String("cert-id", "", "ID of the mTLS certificate (mtlscert_...)")
			certFile := c.fs.String("cert", "", "new PEM certificate, optionally followed by its chain (- for stdin)")
			keyFile := c.fs.String("key", "", "PEM private key matching the new certificate (- for stdin; with --cert - too, one stream holding both)")
			return func() error {
				if err := c.required("cert-id", *id, "cert", *certFile, "key", *keyFile); err != nil {
					return err
				}
				certPEM, keyPEM, err := readKeyPair(*certFile, *keyFile)
				if err != nil {
					return err
				}
				return send(c, http.MethodPut, api.PathOutbound+"/"+url.PathEscape(*id)+"/material", api.UpdateMTLSCertificateMaterial{CertPEM: string(certPEM), KeyPEM: string(keyPEM)}, func(m api.MTLSCertificate) {
					next := "it is disabled: `mtlsgate mtls-certificate enable --cert-id " + m.ID + "` serves it"
					if m.Served {
						next = "subscribed Envoys receive it over SDS under the same name"
					} else if m.Enabled {
						next = "this sidecar's --environment is not among its environment types, so it does not serve it"
					}
					fmt.Fprintf(c.w, "Updated mTLS certificate %s (%s); %s\n", m.Name, m.ID, next)
					c.describeOutbound(m)
				})
			}
		}},
		"disable": {"stop serving a certificate over SDS", byID(outboundID, http.MethodPost, "/disable", func(c *cmd, m api.MTLSCertificate) {
			fmt.Fprintf(c.w, "Disabled mTLS certificate %s (%s); redeploy the Envoys that reference it, then delete it\n", m.Name, m.ID)
		})},
		"enable": {"serve a disabled certificate again", byID(outboundID, http.MethodPost, "/enable", func(c *cmd, m api.MTLSCertificate) {
			fmt.Fprintf(c.w, "Enabled mTLS certificate %s (%s)\n", m.Name, m.ID)
			if m.UnsupportedKey != "" {
				fmt.Fprintf(c.w, "It is not served: %s\n", unsupportedKey(m))
			}
		})},
		"delete": {"delete a disabled certificate no Envoy subscribes to", byID(outboundID, http.MethodDelete, "", func(c *cmd, m api.MTLSCertificate) {
			fmt.Fprintf(c.w, "Deleted mTLS certificate %s (%s)\n", m.Name, m.ID)
		})},
	},
}

// readKeyPair reads --cert and --key. Both "-" means one PEM stream on stdin
// holding the certificate and its key (cat c.pem c.key | kubectl exec -i ...),
// for containers with no shell to copy files into; the key blocks are kept
// out of the certificate, which the sidecar refuses to see a key in.
func readKeyPair(certFile, keyFile string) (certPEM, keyPEM []byte, err error) {
	if certPEM, err = readFile("cert", certFile); err != nil {
		return nil, nil, err
	}
	if pki.IsDER(certPEM) {
		return nil, nil, pki.DERCertificateError(certFile)
	}
	if keyPEM, err = readFile("key", keyFile); err != nil {
		return nil, nil, err
	}
	if certFile == "-" && keyFile == "-" {
		certPEM = withoutKeys(certPEM)
	}
	return certPEM, keyPEM, nil
}

// withoutKeys is data with its private key blocks left out.
func withoutKeys(data []byte) []byte {
	var out []byte
	for {
		b, rest := pem.Decode(data)
		if b == nil {
			return out
		}
		if !strings.Contains(b.Type, "PRIVATE KEY") {
			out = append(out, pem.EncodeToMemory(b)...)
		}
		data = rest
	}
}

// idFlag names the flag that selects one object and the API collection it is in.
type idFlag struct{ flag, usage, path string }

var (
	caID       = idFlag{"cert-id", "ID of the CA certificate (mtlsca_...)", api.PathCAs}
	crlID      = idFlag{"crl-id", "ID of the CRL (mtlscrl_...)", api.PathCRLs}
	outboundID = idFlag{"cert-id", "ID of the mTLS certificate (mtlscert_...)", api.PathOutbound}
)

// byID is every command that acts on one object by ID: require the flag, call
// the API, print the object as JSON or as text.
func byID[T any](id idFlag, method, suffix string, text func(c *cmd, v T)) func(c *cmd) func() error {
	return func(c *cmd) func() error {
		val := c.fs.String(id.flag, "", id.usage)
		return func() error {
			if err := c.required(id.flag, *val); err != nil {
				return err
			}
			return send(c, method, id.path+"/"+url.PathEscape(*val)+suffix, nil, func(v T) { text(c, v) })
		}
	}
}

// crlData is the list --file names (nil for --url); exactly one of the two
// must be given.
func crlData(c *cmd, verb, file, u string) ([]byte, error) {
	if (file == "") == (u == "") {
		fmt.Fprintf(c.errw, "mtlsgate crl %s: give exactly one of --file and --url\n", verb)
		return nil, errUsage
	}
	if file == "" {
		return nil, nil
	}
	return readFile("file", file)
}

func crlSummary(s *api.CRLState) string {
	if s == nil {
		return "none"
	}
	state := "fresh"
	if s.Stale {
		state = "STALE"
	}
	out := fmt.Sprintf("%s (%s, %s)", s.ID, s.Source, state)
	if s.LastError != "" {
		out += " last fetch failed"
	}
	return out
}

func (c *cmd) describeCA(ca api.CACertificate) {
	crl := "none"
	if ca.CRL != nil {
		crl = crlSummary(ca.CRL) + ", next update " + ts(ca.CRL.NextUpdate)
		if ca.CRL.NextUpdate.IsZero() && !ca.CRL.StaleAfter.IsZero() {
			crl += " (none; stale after " + ts(ca.CRL.StaleAfter) + ")"
		}
		if ca.CRL.LastError != "" {
			crl += ", last error: " + ca.CRL.LastError
		}
	}
	from := "admin API"
	if ca.ManagedBy == store.ManagedByTrustDir {
		from = "trust directory (serve --trust-dir): change it there"
	}
	c.fields("ID", ca.ID, "Name", ca.Name, "Added by", from, "Subject", ca.Subject, "Issuer", ca.Issuer, "Self-signed root", yesNo(ca.SelfSigned),
		"SHA-256 fingerprint", ca.Fingerprint, "Not before", ts(ca.NotBefore), "Not after", ts(ca.NotAfter),
		"Created", ts(ca.CreatedAt), "Updated", ts(ca.UpdatedAt), "CRL", crl)
}

func (c *cmd) describeCRL(l api.CRL) {
	state := "fresh"
	switch {
	case l.Stale && l.NextUpdate.IsZero():
		state = "STALE (no nextUpdate, and thisUpdate is older than serve's --crl-max-age-without-next-update): " +
			"give the CA's newer list with `mtlsgate crl update --crl-id " + l.ID + "`, or run serve with a longer max age"
	case l.Stale:
		state = "STALE (nextUpdate has passed): give the CA's newer list with `mtlsgate crl update --crl-id " + l.ID + "`"
	}
	next := ts(l.NextUpdate)
	if l.NextUpdate.IsZero() && !l.StaleAfter.IsZero() {
		if l.Stale {
			next = "- (none; was current until " + ts(l.StaleAfter) + ")"
		} else {
			next = "- (none; current until " + ts(l.StaleAfter) + ")"
		}
	}
	lastErr := l.LastError
	if lastErr == "" {
		lastErr = "-"
	}
	number := l.Number
	if number == "" {
		number = "-"
	}
	c.fields("ID", l.ID, "CA", l.CAID, "Source", l.Source, "Number", number, "Revoked", fmt.Sprint(l.RevokedCount),
		"This update", ts(l.ThisUpdate), "Next update", next, "State", state,
		"Last fetch", ts(l.LastFetchAt), "Last error", lastErr, "Created", ts(l.CreatedAt), "Updated", ts(l.UpdatedAt))
}

func (c *cmd) describeOutbound(m api.MTLSCertificate) {
	subs := make([]string, 0, len(m.Subscribers))
	for _, s := range m.Subscribers {
		subs = append(subs, fmt.Sprintf("%s/%s", s.NodeID, s.Cluster))
	}
	sub := "none"
	if len(subs) > 0 {
		sub = strings.Join(subs, ", ")
	}
	c.fields("ID", m.ID, "Name", m.Name, "Subject", m.Subject, "Issuer", m.Issuer, "SHA-256 fingerprint", m.Fingerprint,
		"Not before", ts(m.NotBefore), "Not after", ts(m.NotAfter), "Environment types", strings.Join(m.EnvironmentTypes, ", "),
		"Enabled", yesNo(m.Enabled), "Served over SDS", served(m), "Subscribers (node/cluster)", sub,
		"Created", ts(m.CreatedAt), "Updated", ts(m.UpdatedAt))
	if m.UnsupportedKey != "" {
		c.fields("Unsupported key", unsupportedKey(m))
	}
}

// served is the SERVED cell: a certificate held back for its key says so,
// since enabling it or changing environments would not serve it.
func served(m api.MTLSCertificate) string {
	if m.UnsupportedKey != "" {
		return "no (unsupported key)"
	}
	return yesNo(m.Served)
}

// unsupportedKey says why a certificate is withheld and what replaces it.
func unsupportedKey(m api.MTLSCertificate) string {
	return fmt.Sprintf("%s, which Envoy refuses to load; the sidecar does not send it to Envoy. Upload one with %s: mtlsgate mtls-certificate update --cert-id %s --cert FILE --key FILE",
		m.UnsupportedKey, pki.SupportedKeys, m.ID)
}

// send is the shape of every command: one admin API call, then the answer as
// JSON (--output json) or as text.
func send[T any](c *cmd, method, path string, body any, text func(v T)) error {
	var v T
	if err := c.cl.Do(method, path, body, &v); err != nil {
		return err
	}
	if c.out.json {
		return c.json(v)
	}
	text(v)
	return nil
}
