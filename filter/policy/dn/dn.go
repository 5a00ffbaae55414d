// Package dn formats X.509 distinguished names the way
// `openssl x509 -noout -subject -nameopt RFC2253` prints them, and matches a
// configured DN against a certificate's issuer or subject.
//
// The openssl form is the one operators copy from a terminal, and the one
// Envoy writes into x-forwarded-client-cert (X509_NAME_print_ex with
// XN_FLAG_RFC2253), so headers and pins agree byte for byte with both.
// crypto/x509's pkix.Name.String differs: it drops the ASN.1 string type,
// orders multi-valued RDNs differently and escapes non-ASCII differently.
package dn

import (
	"strings"
	"unicode/utf8"
)

// shortNames maps attribute OIDs to the short names openssl prints (its SN_*
// constants). An OID missing here is printed as dotted decimal with its value
// dumped as #hex DER, which is also what openssl does for OIDs it does not know.
// The table holds every X.520, PKCS#9 and RFC 1274 (pilot) attribute openssl
// 3.0 names, each checked against its -nameopt RFC2253 output
// (TestShortNamesMatchOpenSSL), except 0.9.2342.19200300.100.1.44: openssl
// calls it "uid", which differs from "UID" (userId, 0.9.2342.19200300.100.1.1)
// only in case, and configured names are read case-insensitively, so printing
// it would make "uid=..." ambiguous; it stays a dotted OID.
var shortNames = map[string]string{
	"2.5.4.3":                    "CN",
	"2.5.4.4":                    "SN",
	"2.5.4.5":                    "serialNumber",
	"2.5.4.6":                    "C",
	"2.5.4.7":                    "L",
	"2.5.4.8":                    "ST",
	"2.5.4.9":                    "street",
	"2.5.4.10":                   "O",
	"2.5.4.11":                   "OU",
	"2.5.4.12":                   "title",
	"2.5.4.13":                   "description",
	"2.5.4.15":                   "businessCategory",
	"2.5.4.16":                   "postalAddress",
	"2.5.4.17":                   "postalCode",
	"2.5.4.18":                   "postOfficeBox",
	"2.5.4.19":                   "physicalDeliveryOfficeName",
	"2.5.4.14":                   "searchGuide",
	"2.5.4.20":                   "telephoneNumber",
	"2.5.4.21":                   "telexNumber",
	"2.5.4.22":                   "teletexTerminalIdentifier",
	"2.5.4.23":                   "facsimileTelephoneNumber",
	"2.5.4.24":                   "x121Address",
	"2.5.4.25":                   "internationaliSDNNumber",
	"2.5.4.26":                   "registeredAddress",
	"2.5.4.27":                   "destinationIndicator",
	"2.5.4.28":                   "preferredDeliveryMethod",
	"2.5.4.29":                   "presentationAddress",
	"2.5.4.30":                   "supportedApplicationContext",
	"2.5.4.31":                   "member",
	"2.5.4.32":                   "owner",
	"2.5.4.33":                   "roleOccupant",
	"2.5.4.34":                   "seeAlso",
	"2.5.4.35":                   "userPassword",
	"2.5.4.36":                   "userCertificate",
	"2.5.4.37":                   "cACertificate",
	"2.5.4.38":                   "authorityRevocationList",
	"2.5.4.39":                   "certificateRevocationList",
	"2.5.4.40":                   "crossCertificatePair",
	"2.5.4.41":                   "name",
	"2.5.4.42":                   "GN",
	"2.5.4.43":                   "initials",
	"2.5.4.44":                   "generationQualifier",
	"2.5.4.45":                   "x500UniqueIdentifier",
	"2.5.4.46":                   "dnQualifier",
	"2.5.4.47":                   "enhancedSearchGuide",
	"2.5.4.48":                   "protocolInformation",
	"2.5.4.49":                   "distinguishedName",
	"2.5.4.50":                   "uniqueMember",
	"2.5.4.51":                   "houseIdentifier",
	"2.5.4.52":                   "supportedAlgorithms",
	"2.5.4.53":                   "deltaRevocationList",
	"2.5.4.54":                   "dmdName",
	"2.5.4.65":                   "pseudonym",
	"2.5.4.72":                   "role",
	"2.5.4.97":                   "organizationIdentifier",
	"2.5.4.98":                   "c3",
	"2.5.4.99":                   "n3",
	"2.5.4.100":                  "dnsName",
	"1.2.840.113549.1.9.1":       "emailAddress",
	"1.2.840.113549.1.9.2":       "unstructuredName",
	"1.2.840.113549.1.9.3":       "contentType",
	"1.2.840.113549.1.9.4":       "messageDigest",
	"1.2.840.113549.1.9.5":       "signingTime",
	"1.2.840.113549.1.9.6":       "countersignature",
	"1.2.840.113549.1.9.7":       "challengePassword",
	"1.2.840.113549.1.9.8":       "unstructuredAddress",
	"1.2.840.113549.1.9.9":       "extendedCertificateAttributes",
	"1.2.840.113549.1.9.14":      "extReq",
	"1.2.840.113549.1.9.15":      "SMIME-CAPS",
	"1.2.840.113549.1.9.16":      "SMIME",
	"1.2.840.113549.1.9.20":      "friendlyName",
	"1.2.840.113549.1.9.21":      "localKeyID",
	"0.9.2342.19200300.100.1.1":  "UID",
	"0.9.2342.19200300.100.1.2":  "textEncodedORAddress",
	"0.9.2342.19200300.100.1.3":  "mail",
	"0.9.2342.19200300.100.1.4":  "info",
	"0.9.2342.19200300.100.1.5":  "favouriteDrink",
	"0.9.2342.19200300.100.1.6":  "roomNumber",
	"0.9.2342.19200300.100.1.7":  "photo",
	"0.9.2342.19200300.100.1.8":  "userClass",
	"0.9.2342.19200300.100.1.9":  "host",
	"0.9.2342.19200300.100.1.10": "manager",
	"0.9.2342.19200300.100.1.11": "documentIdentifier",
	"0.9.2342.19200300.100.1.12": "documentTitle",
	"0.9.2342.19200300.100.1.13": "documentVersion",
	"0.9.2342.19200300.100.1.14": "documentAuthor",
	"0.9.2342.19200300.100.1.15": "documentLocation",
	"0.9.2342.19200300.100.1.20": "homeTelephoneNumber",
	"0.9.2342.19200300.100.1.21": "secretary",
	"0.9.2342.19200300.100.1.22": "otherMailbox",
	"0.9.2342.19200300.100.1.23": "lastModifiedTime",
	"0.9.2342.19200300.100.1.24": "lastModifiedBy",
	"0.9.2342.19200300.100.1.25": "DC",
	"0.9.2342.19200300.100.1.26": "aRecord",
	"0.9.2342.19200300.100.1.27": "pilotAttributeType27",
	"0.9.2342.19200300.100.1.28": "mXRecord",
	"0.9.2342.19200300.100.1.29": "nSRecord",
	"0.9.2342.19200300.100.1.30": "sOARecord",
	"0.9.2342.19200300.100.1.31": "cNAMERecord",
	"0.9.2342.19200300.100.1.37": "associatedDomain",
	"0.9.2342.19200300.100.1.38": "associatedName",
	"0.9.2342.19200300.100.1.39": "homePostalAddress",
	"0.9.2342.19200300.100.1.40": "personalTitle",
	"0.9.2342.19200300.100.1.41": "mobileTelephoneNumber",
	"0.9.2342.19200300.100.1.42": "pagerTelephoneNumber",
	"0.9.2342.19200300.100.1.43": "friendlyCountryName",
	"0.9.2342.19200300.100.1.45": "organizationalStatus",
	"0.9.2342.19200300.100.1.46": "janetMailbox",
	"0.9.2342.19200300.100.1.47": "mailPreferenceOption",
	"0.9.2342.19200300.100.1.48": "buildingName",
	"0.9.2342.19200300.100.1.49": "dSAQuality",
	"0.9.2342.19200300.100.1.50": "singleLevelQuality",
	"0.9.2342.19200300.100.1.51": "subtreeMinimumQuality",
	"0.9.2342.19200300.100.1.52": "subtreeMaximumQuality",
	"0.9.2342.19200300.100.1.53": "personalSignature",
	"0.9.2342.19200300.100.1.54": "dITRedirect",
	"0.9.2342.19200300.100.1.55": "audio",
	"0.9.2342.19200300.100.1.56": "documentPublisher",
	"1.3.6.1.4.1.311.60.2.1.1":   "jurisdictionL",
	"1.3.6.1.4.1.311.60.2.1.2":   "jurisdictionST",
	"1.3.6.1.4.1.311.60.2.1.3":   "jurisdictionC",
}

// aliases maps lowercased attribute names accepted in configured DNs to OIDs.
var aliases = func() map[string]string {
	m := make(map[string]string, len(shortNames)+16)
	for oid, sn := range shortNames {
		m[strings.ToLower(sn)] = oid
	}
	for name, oid := range map[string]string{
		"commonname": "2.5.4.3", "surname": "2.5.4.4", "countryname": "2.5.4.6",
		"localityname": "2.5.4.7", "stateorprovincename": "2.5.4.8", "s": "2.5.4.8",
		"streetaddress": "2.5.4.9", "organizationname": "2.5.4.10",
		"organizationalunitname": "2.5.4.11", "givenname": "2.5.4.42",
		"e": "1.2.840.113549.1.9.1", "email": "1.2.840.113549.1.9.1",
		"domaincomponent": "0.9.2342.19200300.100.1.25", "userid": "0.9.2342.19200300.100.1.1",
	} {
		m[name] = oid
	}
	return m
}()

// stringWidth gives the character width of the ASN.1 string types openssl
// prints as text (its tag2nbyte table); 0 means UTF-8, -1 not a string.
func stringWidth(tag byte) int {
	switch tag {
	case 0x0c: // UTF8String
		return 0
	case 0x12, 0x13, 0x14, 0x16, 0x17, 0x18, 0x1a: // Numeric, Printable, T61, IA5, UTCTime, GeneralizedTime, Visible
		return 1
	case 0x1c: // UniversalString
		return 4
	case 0x1e: // BMPString
		return 2
	}
	return -1
}

// decode returns the value's characters as UTF-8, or false when the value is
// not a text string openssl would print as such.
func decode(a AVA) (string, bool) {
	w := stringWidth(a.Tag)
	switch w {
	case 0:
		if !utf8.Valid(a.Value) {
			return "", false
		}
		return string(a.Value), true
	case 1:
		var sb strings.Builder
		for _, c := range a.Value {
			sb.WriteRune(rune(c)) // T61String is read as Latin-1, as openssl does
		}
		return sb.String(), true
	case 2, 4:
		if len(a.Value)%w != 0 {
			return "", false
		}
		var sb strings.Builder
		for i := 0; i < len(a.Value); i += w {
			var r rune
			for j := 0; j < w; j++ {
				r = r<<8 | rune(a.Value[i+j])
			}
			if !utf8.ValidRune(r) {
				return "", false
			}
			sb.WriteRune(r)
		}
		return sb.String(), true
	}
	return "", false
}

const hexUpper = "0123456789ABCDEF"

// Format renders a DER-encoded Name (RawSubject/RawIssuer) as openssl's
// -nameopt RFC2253 does: RDNs most specific first separated by ',', AVAs of a
// multi-valued RDN joined by '+' (also reversed, as openssl walks the flat
// entry list backwards), RFC 2253 escaping, control characters and every byte
// of non-ASCII UTF-8 as \XX, unknown attribute types as dotted OIDs with a
// #hex dump of the DER value.
func Format(der []byte) (string, error) {
	rdns, err := ParseRDNSequence(der)
	if err != nil {
		return "", err
	}
	return FormatRDNs(rdns), nil
}

// FormatRDNs is Format over an already parsed sequence.
func FormatRDNs(rdns []RDN) string {
	var b []byte
	for i := len(rdns) - 1; i >= 0; i-- {
		rdn := rdns[i]
		for j := len(rdn) - 1; j >= 0; j-- {
			if j != len(rdn)-1 {
				b = append(b, '+')
			} else if i != len(rdns)-1 {
				b = append(b, ',')
			}
			b = appendAVA(b, rdn[j])
		}
	}
	return string(b)
}

func appendAVA(b []byte, a AVA) []byte {
	name, known := shortNames[a.OID]
	if !known {
		name = a.OID
	}
	b = append(b, name...)
	b = append(b, '=')
	text, ok := decode(a)
	if !known || !ok {
		return appendHexDump(b, a.DER)
	}
	n := utf8.RuneCountInString(text)
	i := 0
	for _, r := range text {
		first, last := i == 0, i == n-1
		i++
		if r >= 0x80 {
			var tmp [4]byte
			for _, c := range tmp[:utf8.EncodeRune(tmp[:], r)] {
				b = append(b, '\\', hexUpper[c>>4], hexUpper[c&15])
			}
			continue
		}
		c := byte(r)
		switch {
		case c == ',' || c == '+' || c == '"' || c == '\\' || c == '<' || c == '>' || c == ';':
			b = append(b, '\\', c)
		case last && c == ' ':
			b = append(b, '\\', c)
		case first && !last && (c == '#' || c == ' '):
			// openssl applies its last-character rule after the first-character
			// one, so a value that is a single '#' prints unescaped ("CN=#"),
			// while a single space is escaped as a last character.
			b = append(b, '\\', c)
		case c < 0x20 || c == 0x7f:
			b = append(b, '\\', hexUpper[c>>4], hexUpper[c&15])
		default:
			b = append(b, c)
		}
	}
	return b
}

func appendHexDump(b, der []byte) []byte {
	b = append(b, '#')
	for _, c := range der {
		b = append(b, hexUpper[c>>4], hexUpper[c&15])
	}
	return b
}
