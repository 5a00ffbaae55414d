// Package trustdir keeps the store's CAs and CRLs in step with a directory
// of PEM files (`mtlsgate serve --trust-dir`), typically a Kubernetes Secret
// mounted into every gateway pod, so that each replica's sidecar starts with
// the same trust and follows changes to the Secret without anyone calling
// its admin API.
//
// The directory is declarative for what it manages and leaves the rest
// alone: records it creates are marked store.ManagedByTrustDir, and only
// those are updated or removed when files change; CAs and CRLs added through
// the admin API stay as they are.
//
// A directory is applied whole or not at all. If any file cannot be read or
// parsed, nothing changes (the error is returned and logged): applying the
// readable part would delete the CAs of the unreadable files, and a typo in
// one file must not withdraw trust from every client of the others.
package trustdir

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mtlsgate/mtlsgate/sidecar/audit"
	"github.com/mtlsgate/mtlsgate/sidecar/crlrefresh"
	"github.com/mtlsgate/mtlsgate/sidecar/metrics"
	"github.com/mtlsgate/mtlsgate/sidecar/pki"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// Syncer applies one directory to one store.
type Syncer struct {
	Dir   string
	Store *store.Store
	Log   *slog.Logger
	// M counts applied changes in mtlsgate_trust_changes_total; may be nil.
	M *metrics.Metrics
	// Now is the clock certificates are checked against; nil means time.Now.
	Now func() time.Time
	// OnResult hears the outcome of every sync (nil error: applied, or
	// nothing to apply).
	OnResult func(error)

	mu sync.Mutex
	// last is the latest successful parse, reused while the files read the
	// same and no CA in them has expired since, so an unchanged directory
	// costs a read and a plan, not a parse of every list in it.
	last *parsed
	// warned is what the last sync warned about: the same warnings are not
	// repeated every interval.
	warned string
	// skipped are the entries the last read skipped as not regular files
	// (true: a directory), each warned about once while it stays.
	skipped map[string]bool
	// expiredWarned are the fingerprints of the expired CAs warned about:
	// a refused read parses again every interval, and must not repeat it.
	expiredWarned map[string]bool
}

type parsed struct {
	digest [sha256.Size]byte
	c      contents
	until  time.Time
}

// Result counts what one sync changed.
type Result struct {
	CAsAdded, CAsAdopted, CAsRemoved    int
	CRLsAdded, CRLsUpdated, CRLsRemoved int
}

// Changed reports whether the sync wrote anything.
func (r Result) Changed() bool { return r != Result{} }

// file is one regular file of the directory.
type file struct {
	name string
	data []byte
}

// dirCA is a CA certificate found in a file.
type dirCA struct {
	file string
	cert *x509.Certificate
	fp   string
	name string
}

// crlBlock is a revocation list found in a file, parsed once per read of
// the file: a large list is costly to parse, and it is tried against every
// CA that could have signed it.
type crlBlock struct {
	file string
	rl   *x509.RevocationList
	pem  []byte // as stored: PEM, whatever the file's encoding
}

// contents is what the directory holds.
type contents struct {
	cas     []dirCA
	expired []dirCA // skipped as trust anchors, still known as CRL signers
	crls    []crlBlock
}

// maxFileBytes bounds one file of the directory: a CRL as large as a URL
// download may be (a Kubernetes Secret holds at most 1 MiB in all). A larger
// file, or a link to one, is an error, not a read that exhausts memory.
const maxFileBytes = crlrefresh.MaxCRLBytes

// read returns the directory's regular files, sorted by name. A Kubernetes
// Secret volume presents each key as a symlink into a versioned directory
// reached through the ..data link, which an update swaps in one step; when
// ..data exists, the files are read from where it points, once resolved, so
// one read never mixes two versions. If that version is removed while it is
// read (the kubelet deletes the old one right after the swap), the read
// starts again from the new one. Names starting with ".." (the kubelet's
// ..data, ..data_tmp and ..<timestamp> entries) are skipped; other names
// starting with "." are read in a Secret's version directory, where every
// name is a key, and skipped in a plain directory (editor and tool files).
//
// Subdirectories are not read: a Secret item given a path with a slash
// (items: [{key: partners.crl, path: crls/partners.crl}]) lands in one. Each
// is logged once as skipped, since a CRL left unread there leaves its CA
// trusted with no list while the sync reports success.
func (s *Syncer) read() ([]file, error) {
	for attempt := 0; ; attempt++ {
		gen, err := s.generation()
		if err != nil {
			return nil, fmt.Errorf("read --trust-dir: %w", err)
		}
		files, skipped, err := s.readDir(gen)
		if gen != "" {
			// The kubelet swaps ..data before it deletes the old version:
			// if the link still names the version read, nothing of it was
			// deleted during the read. Otherwise the read may have failed,
			// or seen the old version half deleted: read the new one.
			if now, gerr := s.generation(); gerr != nil || now != gen {
				if attempt < 10 {
					continue
				}
				return nil, fmt.Errorf("read --trust-dir: its ..data link moved during each of %d reads; trying again at the next interval", attempt+1)
			}
		}
		if err != nil {
			return nil, err
		}
		for name, isDir := range skipped {
			if _, warned := s.skipped[name]; warned {
				continue
			}
			if isDir {
				s.log().Warn("trust directory: subdirectory skipped: only files directly in the directory are read; move its CA and CRL files up (for a Kubernetes Secret, give each item a path without a slash)", "dir", s.Dir, "subdirectory", name)
			} else {
				s.log().Warn("trust directory: entry skipped: it is not a regular file", "dir", s.Dir, "entry", name)
			}
		}
		s.skipped = skipped
		return files, nil
	}
}

// generation reads the kubelet's ..data link: the version directory to
// read, or "" when there is no such link (a plain directory). The link is
// read in one step (readlink), not resolved component by component, so a
// swap cannot make the resolution itself fail.
func (s *Syncer) generation() (string, error) {
	link := filepath.Join(s.Dir, "..data")
	fi, err := os.Lstat(link)
	if err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return "", nil
	}
	target, err := os.Readlink(link)
	if err != nil {
		return "", err
	}
	if !filepath.IsAbs(target) {
		target = filepath.Join(s.Dir, target)
	}
	return target, nil
}

// readDir reads the regular files of dir (of s.Dir when gen is ""), and
// returns the entries it skipped as not regular files (true: a directory).
func (s *Syncer) readDir(gen string) ([]file, map[string]bool, error) {
	dir := gen
	if dir == "" {
		dir = s.Dir
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("read --trust-dir: %w", err)
	}
	var files []file
	skipped := map[string]bool{}
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), "..") || gen == "" && strings.HasPrefix(e.Name(), ".") {
			continue
		}
		data, isDir, err := readRegular(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, nil, fmt.Errorf("trust directory file %s: %w", e.Name(), err)
		}
		if data == nil {
			skipped[e.Name()] = isDir
			continue
		}
		files = append(files, file{e.Name(), data})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	return files, skipped, nil
}

// readRegular reads the file at path, following symlinks, when it is a
// regular file of at most maxFileBytes; for anything else it returns nil
// data (isDir telling a directory). The file is opened without blocking and
// checked on the open descriptor, so a FIFO, a device such as /dev/zero, or
// a file swapped for one after a check, is skipped instead of hanging the
// read or filling memory.
func readRegular(path string) (data []byte, isDir bool, err error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NONBLOCK, 0)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, false, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fi.IsDir(), nil
	}
	if fi.Size() > maxFileBytes {
		return nil, false, fmt.Errorf("%d bytes, more than the %d MiB a trust directory file may hold", fi.Size(), maxFileBytes>>20)
	}
	data, err = io.ReadAll(io.LimitReader(f, maxFileBytes+1))
	if err != nil {
		return nil, false, err
	}
	if len(data) > maxFileBytes {
		return nil, false, fmt.Errorf("more than the %d MiB a trust directory file may hold", maxFileBytes>>20)
	}
	if data == nil {
		data = []byte{}
	}
	return data, false, nil
}

// parse sorts the files' PEM blocks into CAs and CRLs. Every block must be
// a CERTIFICATE or an X509 CRL; anything else, a private key above all, is
// an error naming the file.
func (s *Syncer) parse(files []file, now time.Time) (contents, error) {
	var c contents
	seen := map[string]string{}
	for _, f := range files {
		rest := f.data
		blocks, certs := 0, 0
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			blocks++
			switch {
			case b.Type == "CERTIFICATE":
				certs++
				cert, err := x509.ParseCertificate(b.Bytes)
				if err == nil && now.After(cert.NotAfter) && (cert.IsCA || cert.Version < 3 && pki.SelfSigned(cert)) {
					// An expired CA verifies nothing; leaving it in the
					// Secret must not hold back every other change. It
					// still names the signer of a CRL left beside it.
					fp := pki.Fingerprint(cert.Raw)
					if !s.expiredWarned[fp] {
						if s.expiredWarned == nil {
							s.expiredWarned = map[string]bool{}
						}
						s.expiredWarned[fp] = true
						s.log().Warn("trust directory: expired CA certificate skipped", "file", f.name, "subject", pki.DN(cert.RawSubject), "notAfter", cert.NotAfter.UTC())
					}
					c.expired = append(c.expired, dirCA{file: f.name, cert: cert, fp: fp})
					continue
				}
				one := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes})
				cert, err = pki.CA(one, false, now)
				if err != nil {
					return c, fmt.Errorf("trust directory file %s, certificate %d: %w", f.name, certs, err)
				}
				fp := pki.Fingerprint(cert.Raw)
				if other, dup := seen[fp]; dup {
					if other == f.name {
						return c, fmt.Errorf("trust directory file %s holds CA certificate %q twice: keep one copy", f.name, pki.DN(cert.RawSubject))
					}
					return c, fmt.Errorf("trust directory files %s and %s hold the same CA certificate %q: keep it in one file", other, f.name, pki.DN(cert.RawSubject))
				}
				seen[fp] = f.name
				c.cas = append(c.cas, dirCA{file: f.name, cert: cert, fp: fp, name: caName(f.name, fp)})
			case b.Type == "X509 CRL":
				cb, err := newCRLBlock(f.name, b.Bytes)
				if err != nil {
					return c, err
				}
				c.crls = append(c.crls, cb)
			case strings.Contains(b.Type, "PRIVATE KEY"):
				return c, fmt.Errorf("trust directory file %s holds a private key: the directory is for CA certificates and CRLs only; remove the key from the Secret", f.name)
			default:
				return c, fmt.Errorf("trust directory file %s holds a %q PEM block: only CERTIFICATE (CA) and X509 CRL blocks belong there", f.name, b.Type)
			}
		}
		if blocks > 0 {
			continue
		}
		// CAs publish revocation lists in DER more often than not (RFC 5280
		// §4.2.1.13), and the admin API takes them as they are; so does the
		// directory. CA certificates stay PEM-only, as everywhere else.
		if _, err := x509.ParseRevocationList(f.data); err == nil && !bytes.Contains(f.data, []byte("-----BEGIN")) {
			cb, err := newCRLBlock(f.name, f.data)
			if err != nil {
				return c, err
			}
			c.crls = append(c.crls, cb)
			continue
		}
		if pki.IsDER(f.data) {
			return c, fmt.Errorf("trust directory file %s holds a DER certificate: CA certificates must be PEM; convert it with `openssl x509 -inform der -in %s -out %s.pem` and put the .pem file in the Secret", f.name, f.name, strings.TrimSuffix(f.name, filepath.Ext(f.name)))
		}
		return c, fmt.Errorf("trust directory file %s holds neither a PEM block nor a DER CRL: the directory is for PEM CA certificates and PEM or DER CRLs only", f.name)
	}
	return c, nil
}

func newCRLBlock(file string, der []byte) (crlBlock, error) {
	rl, err := x509.ParseRevocationList(der)
	if err != nil {
		return crlBlock{}, fmt.Errorf("trust directory file %s: the CRL cannot be parsed (%v): put the list your CA publishes there, PEM or DER", file, err)
	}
	return crlBlock{file: file, rl: rl, pem: pem.EncodeToMemory(&pem.Block{Type: "X509 CRL", Bytes: rl.Raw})}, nil
}

// caName names a managed CA after its file and fingerprint, so that the CA
// replaced in a file and its successor never collide on the store's unique
// names.
func caName(file, fingerprint string) string {
	base := strings.TrimSuffix(file, filepath.Ext(file))
	fp := strings.ReplaceAll(fingerprint, ":", "")
	if len(fp) > 8 {
		fp = fp[:8]
	}
	return pki.SuggestName(base) + "_" + fp
}

// Sync reads the directory and brings the store in line with it, in one
// store transaction. It compares with the store, not with the previous
// read, so the store follows the directory even after changes made around
// it. A store already in line gets no write.
func (s *Syncer) Sync() (Result, error) {
	res, err := s.sync()
	if s.OnResult != nil {
		s.OnResult(err)
	}
	return res, err
}

func (s *Syncer) sync() (Result, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	files, err := s.read()
	if err != nil {
		return Result{}, err
	}
	now := s.now()
	c, err := s.parseCached(files, now)
	if err != nil {
		return Result{}, err
	}
	var p *planner
	var rec *store.AuditEntry
	ch, err := s.Store.ApplyTrust(func(cas []store.CA, crls []store.CRL) (store.TrustChange, error) {
		p = &planner{c: c, cas: cas, crls: crls}
		return p.plan()
	}, func(ch store.TrustChange, crls []store.CRL) *store.AuditEntry {
		rec = s.auditEntry(ch, crls)
		return rec
	})
	if err != nil {
		return Result{}, err
	}
	if w := strings.Join(p.warnings, "\n"); w != s.warned {
		s.warned = w
		for _, w := range p.warnings {
			s.log().Warn("trust directory: " + w)
		}
	}
	res := Result{CAsAdded: len(ch.AddCAs), CAsAdopted: len(ch.AdoptCAs), CAsRemoved: len(ch.DeleteCAs),
		CRLsAdded: len(ch.AddCRLs), CRLsUpdated: len(ch.UpdateCRLs), CRLsRemoved: len(ch.DeleteCRLs)}
	audit.Log(s.log(), s.M, rec)
	return res, nil
}

// auditEntry is the audit record of an applied change, the trail's
// trust-dir.apply action: the directory changes which CAs and lists are in
// force as much as an operator's admin request does.
// crls are the lists stored before the change: removing a CA removes its
// list with it, and the record names both.
func (s *Syncer) auditEntry(ch store.TrustChange, crls []store.CRL) *store.AuditEntry {
	var added []audit.Ref
	for _, ca := range ch.AddCAs {
		added = append(added, audit.Ref{ID: ca.ID, Name: ca.Name, Fingerprint: ca.Fingerprint, NotAfter: audit.Time(ca.NotAfter)})
	}
	var crlsAdded, crlsUpdated []audit.Ref
	for _, c := range ch.AddCRLs {
		crlsAdded = append(crlsAdded, audit.CRLRef(c.CRL))
	}
	for _, c := range ch.UpdateCRLs {
		crlsUpdated = append(crlsUpdated, audit.CRLRef(c))
	}
	removed := slices.Clone(ch.DeleteCRLs)
	for _, c := range crls {
		if slices.Contains(ch.DeleteCAs, c.CAID) && !slices.Contains(removed, c.ID) {
			removed = append(removed, c.ID)
		}
	}
	return audit.Entry(audit.ActorTrustDir, "trust-dir.apply", nil, nil, "dir", s.Dir,
		"casAdded", added, "casAdopted", ch.AdoptCAs, "casRemoved", ch.DeleteCAs,
		"crlsAdded", crlsAdded, "crlsUpdated", crlsUpdated, "crlsRemoved", removed)
}

// parseCached is parse, skipped when the files are byte for byte those of
// the last successful parse and none of its CAs has expired since (an
// expired CA is parsed differently).
func (s *Syncer) parseCached(files []file, now time.Time) (contents, error) {
	h := sha256.New()
	for _, f := range files {
		fmt.Fprintf(h, "%d:%s%d:", len(f.name), f.name, len(f.data))
		h.Write(f.data)
	}
	var d [sha256.Size]byte
	h.Sum(d[:0])
	if s.last != nil && s.last.digest == d && now.Before(s.last.until) {
		return s.last.c, nil
	}
	s.last = nil
	c, err := s.parse(files, now)
	if err != nil {
		return c, err
	}
	p := &parsed{digest: d, c: c, until: now.Add(100 * 365 * 24 * time.Hour)}
	for _, ca := range c.cas {
		if ca.cert.NotAfter.Before(p.until) {
			p.until = ca.cert.NotAfter
		}
	}
	s.last = p
	return c, nil
}

func (s *Syncer) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// planner works out the store edits that make the store match one reading
// of the directory. It has no side effects: the store may run it twice.
type planner struct {
	c        contents
	cas      []store.CA
	crls     []store.CRL
	warnings []string
}

func (p *planner) plan() (store.TrustChange, error) {
	ch := store.TrustChange{AdoptAs: store.ManagedByTrustDir}
	byFP := map[string]store.CA{}
	byName := map[string]store.CA{}
	for _, c := range p.cas {
		byFP[c.Fingerprint], byName[c.Name] = c, c
	}
	wanted := map[string]bool{}
	for _, w := range p.c.cas {
		wanted[w.fp] = true
		if cur, ok := byFP[w.fp]; ok {
			// Stored through the admin API as well: the directory takes it
			// over, so that removing the file withdraws it everywhere.
			if cur.ManagedBy != store.ManagedByTrustDir {
				ch.AdoptCAs = append(ch.AdoptCAs, cur.ID)
			}
			continue
		}
		if other, ok := byName[w.name]; ok {
			return ch, fmt.Errorf("trust directory file %s: the name %s it would get is taken by CA %s: rename that CA with `mtlsgate ca-certificate update`", w.file, w.name, other.ID)
		}
		ch.AddCAs = append(ch.AddCAs, pki.CARecord(w.name, w.cert, store.ManagedByTrustDir))
	}
	// Trust anchors after this change (the CRLs' possible signers), and the
	// ones on their way out (their CRLs are skipped, not refused).
	var signers, leaving []signer
	for _, c := range p.cas {
		cert, err := c.Certificate()
		if err != nil {
			return ch, err
		}
		if c.ManagedBy == store.ManagedByTrustDir && !wanted[c.Fingerprint] {
			ch.DeleteCAs = append(ch.DeleteCAs, c.ID)
			leaving = append(leaving, signer{fp: c.Fingerprint, cert: cert, why: "its CA (" + c.Subject + ") was removed from the directory"})
			continue
		}
		signers = append(signers, signer{fp: c.Fingerprint, cert: cert})
	}
	for _, w := range p.c.cas {
		if _, ok := byFP[w.fp]; !ok {
			signers = append(signers, signer{fp: w.fp, cert: w.cert})
		}
	}
	for _, e := range p.c.expired {
		leaving = append(leaving, signer{fp: e.fp, cert: e.cert, why: "its CA (" + pki.DN(e.cert.RawSubject) + ") has expired"})
	}

	crlOf := map[string]store.CRL{} // CA fingerprint -> its CRL
	caFP := map[string]string{}
	for _, c := range p.cas {
		caFP[c.ID] = c.Fingerprint
	}
	for _, c := range p.crls {
		crlOf[caFP[c.CAID]] = c
	}
	keep := map[string]bool{}
	fileOf := map[string]string{}
	for _, b := range p.c.crls {
		sg, rec, err := match(b, signers)
		if err != nil {
			if l, ok := matchLeaving(b, leaving); ok {
				p.warnings = append(p.warnings, fmt.Sprintf("CRL in %s skipped: %s; remove the file", b.file, l.why))
				continue
			}
			return ch, err
		}
		if other, dup := fileOf[sg.fp]; dup {
			return ch, fmt.Errorf("trust directory files %s and %s both hold a CRL of the same CA: keep only the newest", other, b.file)
		}
		fileOf[sg.fp] = b.file
		rec.ManagedBy = store.ManagedByTrustDir
		cur, has := crlOf[sg.fp]
		switch {
		case !has:
			ch.AddCRLs = append(ch.AddCRLs, store.NewCRL{CRL: rec, CAFingerprint: sg.fp})
		case cur.ManagedBy != store.ManagedByTrustDir:
			return ch, fmt.Errorf("trust directory file %s: CA %s already has CRL %s, added through the admin API: delete it (`mtlsgate crl delete --crl-id %s`) or remove the file", b.file, cur.CAID, cur.ID, cur.ID)
		case cur.PEM != rec.PEM:
			if crlrefresh.Older(rec, cur) {
				return ch, fmt.Errorf("trust directory file %s: its CRL (number %s) is older than the one in force (number %s) and would un-revoke certificates: put the newer list in the file", b.file, dash(rec.Number), dash(cur.Number))
			}
			upd := cur
			upd.PEM, upd.Number, upd.ThisUpdate, upd.NextUpdate, upd.RevokedCount = rec.PEM, rec.Number, rec.ThisUpdate, rec.NextUpdate, rec.RevokedCount
			ch.UpdateCRLs = append(ch.UpdateCRLs, upd)
			keep[cur.ID] = true
		default:
			keep[cur.ID] = true
		}
	}
	deletedCA := map[string]bool{}
	for _, id := range ch.DeleteCAs {
		deletedCA[id] = true
	}
	for _, c := range p.crls {
		// A removed CA takes its CRLs with it (the store does that).
		if c.ManagedBy == store.ManagedByTrustDir && !keep[c.ID] && !deletedCA[c.CAID] {
			ch.DeleteCRLs = append(ch.DeleteCRLs, c.ID)
		}
	}
	return ch, nil
}

type signer struct {
	fp   string
	cert *x509.Certificate
	why  string // for a leaving signer: why its CRLs are skipped
}

// match finds the signer of a CRL among the CAs whose subject is the
// list's issuer (no other CA can have issued it, and checking a large list's
// signature means hashing all of it). When none of them signed it, the error
// is the check's (a CA refused for the job, e.g. without cRLSign), else one
// that says no trusted CA issued it.
func match(b crlBlock, signers []signer) (signer, store.CRL, error) {
	var named error
	for _, sg := range signers {
		if !bytes.Equal(b.rl.RawIssuer, sg.cert.RawSubject) {
			continue
		}
		if err := pki.CheckCRL(b.rl, sg.cert); err != nil {
			named = err
			continue
		}
		var rec store.CRL
		crlrefresh.Apply(&rec, b.rl, b.pem)
		return sg, rec, nil
	}
	if named != nil {
		return signer{}, store.CRL{}, fmt.Errorf("trust directory file %s: %w", b.file, named)
	}
	return signer{}, store.CRL{}, fmt.Errorf("trust directory file %s: its CRL (issuer %s) is signed by none of the trusted CAs: add the CA that issued it, or, if that CA was withdrawn, remove this file too", b.file, pki.DN(b.rl.RawIssuer))
}

// matchLeaving reports whether a CRL was signed by a CA that is expired or
// being removed: such a list is skipped, since a CA that is not trusted
// lets nothing through that its CRL could stop.
func matchLeaving(b crlBlock, leaving []signer) (signer, bool) {
	for _, l := range leaving {
		if bytes.Equal(b.rl.RawIssuer, l.cert.RawSubject) && pki.CheckCRL(b.rl, l.cert) == nil {
			return l, true
		}
	}
	return signer{}, false
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (s *Syncer) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.New(slog.DiscardHandler)
}

// Run syncs every interval until ctx ends. A failed sync is retried at the
// next tick, the last applied state staying in force meanwhile; the same
// error is logged once, not on every tick.
func (s *Syncer) Run(ctx context.Context, interval time.Duration) {
	t := time.NewTicker(interval)
	defer t.Stop()
	lastErr := ""
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		_, err := s.Sync()
		switch {
		case err == nil:
			if lastErr != "" {
				s.log().Info("trust directory applied again", "dir", s.Dir)
			}
			lastErr = ""
		case err.Error() != lastErr:
			lastErr = err.Error()
			s.log().Error("trust directory not applied; the last applied state stays in force", "dir", s.Dir, "err", err)
		}
	}
}
