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
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/mtlsgate/mtlsgate/sidecar/crlrefresh"
	"github.com/mtlsgate/mtlsgate/sidecar/pki"
	"github.com/mtlsgate/mtlsgate/sidecar/problem"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// Syncer applies one directory to one store.
type Syncer struct {
	Dir   string
	Store *store.Store
	Log   *slog.Logger
	// Now is the clock certificates are checked against; nil means time.Now.
	Now func() time.Time
	// OnResult hears the outcome of every sync (nil error: applied, or
	// nothing to apply).
	OnResult func(error)
}

// Result counts what one sync changed.
type Result struct {
	CAsAdded, CAsRemoved                int
	CRLsAdded, CRLsUpdated, CRLsRemoved int
}

// Changed reports whether the sync wrote anything.
func (r Result) Changed() bool { return r != Result{} }

// file is one regular file of the directory.
type file struct {
	name string
	data []byte
}

// wantCA is a CA certificate found in a file.
type wantCA struct {
	file string
	cert *x509.Certificate
	name string
}

// wantCRL is a revocation list found in a file, with the CA that signed it.
type wantCRL struct {
	file   string
	issuer string // fingerprint of the signing CA
	rec    store.CRL
}

// read returns the directory's regular files (symlinks followed, as a
// Kubernetes Secret volume presents them), sorted by name. Names starting
// with "." are skipped: Kubernetes keeps its versioned copies in ..data and
// ..<timestamp> beside the links.
func (s *Syncer) read() ([]file, error) {
	entries, err := os.ReadDir(s.Dir)
	if err != nil {
		return nil, fmt.Errorf("read --trust-dir: %w", err)
	}
	var files []file
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		path := filepath.Join(s.Dir, e.Name())
		fi, err := os.Stat(path)
		if err != nil {
			return nil, fmt.Errorf("trust directory file %s: %w", e.Name(), err)
		}
		if !fi.Mode().IsRegular() {
			continue
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("trust directory file %s: %w", e.Name(), err)
		}
		files = append(files, file{e.Name(), data})
	}
	sort.Slice(files, func(i, j int) bool { return files[i].name < files[j].name })
	return files, nil
}

// parse splits the files into CAs and CRLs. Every PEM block must be a
// CERTIFICATE or an X509 CRL; anything else, a private key above all, is an
// error naming the file.
func (s *Syncer) parse(files []file, now time.Time) ([]wantCA, [][2]string, error) {
	var cas []wantCA
	var crls [][2]string // file, PEM block
	seen := map[string]string{}
	for _, f := range files {
		rest := f.data
		blocks := 0
		for {
			var b *pem.Block
			b, rest = pem.Decode(rest)
			if b == nil {
				break
			}
			blocks++
			switch {
			case b.Type == "CERTIFICATE":
				if c, err := x509.ParseCertificate(b.Bytes); err == nil && now.After(c.NotAfter) {
					// An expired CA verifies nothing; leaving it in the
					// Secret must not hold back every other change.
					s.log().Warn("trust directory: expired CA certificate skipped", "file", f.name, "subject", pki.DN(c.RawSubject), "notAfter", c.NotAfter.UTC())
					continue
				}
				one := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: b.Bytes})
				c, err := pki.CA(one, false, now)
				if err != nil {
					return nil, nil, fmt.Errorf("trust directory file %s, certificate %d: %w", f.name, blocks, err)
				}
				fp := pki.Fingerprint(c.Raw)
				if other, dup := seen[fp]; dup {
					return nil, nil, fmt.Errorf("trust directory files %s and %s hold the same CA certificate %q: keep it in one file", other, f.name, pki.DN(c.RawSubject))
				}
				seen[fp] = f.name
				cas = append(cas, wantCA{file: f.name, cert: c, name: caName(f.name, fp)})
			case b.Type == "X509 CRL":
				crls = append(crls, [2]string{f.name, string(pem.EncodeToMemory(b))})
			case strings.Contains(b.Type, "PRIVATE KEY"):
				return nil, nil, fmt.Errorf("trust directory file %s holds a private key: the directory is for CA certificates and CRLs only; remove the key from the Secret", f.name)
			default:
				return nil, nil, fmt.Errorf("trust directory file %s holds a %q PEM block: only CERTIFICATE (CA) and X509 CRL blocks belong there", f.name, b.Type)
			}
		}
		if blocks == 0 {
			hint := ""
			if pki.IsDER(f.data) {
				hint = " (it looks like DER: convert it with `openssl x509 -inform der` or `openssl crl -inform der`)"
			}
			return nil, nil, fmt.Errorf("trust directory file %s holds no PEM block%s", f.name, hint)
		}
	}
	return cas, crls, nil
}

// caName names a managed CA after its file and fingerprint, so a CA
// replaced in the same file gets a new name and can be added before the old
// one is removed (names are unique in the store).
func caName(file, fingerprint string) string {
	base := strings.TrimSuffix(file, filepath.Ext(file))
	fp := strings.ReplaceAll(fingerprint, ":", "")
	if len(fp) > 8 {
		fp = fp[:8]
	}
	return pki.SuggestName(base) + "_" + fp
}

// Sync reads the directory and brings the store in line with it. It
// compares with the store, not with the previous read, so the store follows
// the directory even after changes made around it: a CA the directory lists
// that had been added through the admin API too, and is deleted there, is
// added back as the directory's. A store already in line gets no write.
func (s *Syncer) Sync() (Result, error) {
	files, err := s.read()
	var res Result
	if err == nil {
		res, err = s.apply(files)
	}
	if s.OnResult != nil {
		s.OnResult(err)
	}
	return res, err
}

func (s *Syncer) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *Syncer) apply(files []file) (Result, error) {
	var res Result
	now := s.now()
	want, crlBlocks, err := s.parse(files, now)
	if err != nil {
		return res, err
	}
	stored, err := s.Store.ListCAs()
	if err != nil {
		return res, err
	}
	storedCRLs, err := s.Store.ListCRLs()
	if err != nil {
		return res, err
	}

	// Plan everything before the first write.
	byFP := map[string]store.CA{}
	byName := map[string]store.CA{}
	for _, c := range stored {
		byFP[c.Fingerprint] = c
		byName[c.Name] = c
	}
	wanted := map[string]bool{}
	var add []wantCA
	for _, w := range want {
		fp := pki.Fingerprint(w.cert.Raw)
		wanted[fp] = true
		if _, ok := byFP[fp]; ok {
			// Already trusted, by the directory or through the admin API.
			continue
		}
		if other, ok := byName[w.name]; ok {
			return res, fmt.Errorf("trust directory file %s: the name %s it would get is taken by CA %s: rename that CA with `mtlsgate ca-certificate update`", w.file, w.name, other.ID)
		}
		add = append(add, w)
	}
	// The CAs that will be trusted after this sync, for matching CRLs.
	var signers []signer
	for _, c := range stored {
		if c.ManagedBy == store.ManagedByTrustDir && !wanted[c.Fingerprint] {
			continue
		}
		cert, err := c.Certificate()
		if err != nil {
			return res, err
		}
		signers = append(signers, signer{fp: c.Fingerprint, id: c.ID, cert: cert})
	}
	for _, w := range add {
		signers = append(signers, signer{fp: pki.Fingerprint(w.cert.Raw), cert: w.cert})
	}
	crlFor := map[string]string{} // signer fingerprint -> file
	var crls []wantCRL
	for _, cb := range crlBlocks {
		wc, err := matchCRL(cb[0], []byte(cb[1]), signers)
		if err != nil {
			return res, err
		}
		if other, dup := crlFor[wc.issuer]; dup {
			return res, fmt.Errorf("trust directory files %s and %s both hold a CRL of the same CA: keep only the newest", other, wc.file)
		}
		crlFor[wc.issuer] = wc.file
		crls = append(crls, wc)
	}
	crlOfCA := map[string]store.CRL{}
	for _, c := range storedCRLs {
		crlOfCA[c.CAID] = c
	}
	caIDOf := func(fp string) string { return byFP[fp].ID }
	for _, wc := range crls {
		id := caIDOf(wc.issuer)
		if id == "" {
			continue // a CA added by this sync has no list yet
		}
		if cur, ok := crlOfCA[id]; ok {
			if cur.ManagedBy != store.ManagedByTrustDir {
				return res, fmt.Errorf("trust directory file %s: CA %s already has CRL %s, added through the admin API: delete it (`mtlsgate crl delete --crl-id %s`) or remove the file", wc.file, id, cur.ID, cur.ID)
			}
			if cur.PEM != wc.rec.PEM && crlrefresh.Older(wc.rec, cur) {
				return res, fmt.Errorf("trust directory file %s: its CRL (number %s) is older than the one in force (number %s) and would un-revoke certificates: put the newer list in the file", wc.file, dash(wc.rec.Number), dash(cur.Number))
			}
		}
	}

	// Apply: additions first, removals last, so a CA replaced in the
	// directory is never absent from what Envoy and the filter see.
	for _, w := range add {
		ca, err := s.Store.CreateCA(pki.CARecord(w.name, w.cert, store.ManagedByTrustDir))
		if err != nil {
			return res, fmt.Errorf("add CA from %s: %w", w.file, err)
		}
		byFP[ca.Fingerprint] = ca
		res.CAsAdded++
		s.log().Info("trust directory: CA added", "file", w.file, "id", ca.ID, "name", ca.Name, "subject", ca.Subject)
	}
	keepCRL := map[string]bool{}
	for _, wc := range crls {
		id := caIDOf(wc.issuer)
		rec := wc.rec
		rec.CAID, rec.ManagedBy = id, store.ManagedByTrustDir
		cur, ok := crlOfCA[id]
		switch {
		case !ok:
			c, err := s.Store.CreateCRL(rec)
			if err != nil {
				return res, fmt.Errorf("add CRL from %s: %w", wc.file, err)
			}
			keepCRL[c.ID] = true
			res.CRLsAdded++
			s.log().Info("trust directory: CRL added", "file", wc.file, "id", c.ID, "caId", id, "number", c.Number)
		case cur.PEM != rec.PEM:
			_, err := s.Store.UpdateCRL(cur.ID, func(c *store.CRL) error {
				c.PEM, c.Number, c.ThisUpdate, c.NextUpdate, c.RevokedCount = rec.PEM, rec.Number, rec.ThisUpdate, rec.NextUpdate, rec.RevokedCount
				return nil
			})
			if err != nil {
				return res, fmt.Errorf("update CRL %s from %s: %w", cur.ID, wc.file, err)
			}
			keepCRL[cur.ID] = true
			res.CRLsUpdated++
			s.log().Info("trust directory: CRL updated", "file", wc.file, "id", cur.ID, "caId", id, "number", rec.Number)
		default:
			keepCRL[cur.ID] = true
		}
	}
	for _, c := range storedCRLs {
		if c.ManagedBy == store.ManagedByTrustDir && !keepCRL[c.ID] {
			if _, err := s.Store.DeleteCRL(c.ID); err != nil && !notFound(err) {
				return res, fmt.Errorf("remove CRL %s: %w", c.ID, err)
			}
			res.CRLsRemoved++
			s.log().Info("trust directory: CRL removed", "id", c.ID, "caId", c.CAID)
		}
	}
	for _, c := range stored {
		if c.ManagedBy == store.ManagedByTrustDir && !wanted[c.Fingerprint] {
			if _, _, err := s.Store.DeleteCA(c.ID); err != nil && !notFound(err) {
				return res, fmt.Errorf("remove CA %s: %w", c.ID, err)
			}
			res.CAsRemoved++
			s.log().Info("trust directory: CA removed", "id", c.ID, "name", c.Name, "subject", c.Subject)
		}
	}
	return res, nil
}

type signer struct {
	fp   string
	id   string
	cert *x509.Certificate
}

func matchCRL(fileName string, data []byte, signers []signer) (wantCRL, error) {
	var lastErr error
	for _, sg := range signers {
		rl, pemBytes, err := pki.CRL(data, sg.cert)
		if err != nil {
			lastErr = err
			continue
		}
		wc := wantCRL{file: fileName, issuer: sg.fp}
		crlrefresh.Apply(&wc.rec, rl, pemBytes)
		return wc, nil
	}
	if lastErr == nil {
		lastErr = errors.New("no CA is trusted")
	}
	block, _ := pem.Decode(data)
	issuer := ""
	if block != nil {
		if rl, err := x509.ParseRevocationList(block.Bytes); err == nil {
			issuer = " (issuer " + pki.DN(rl.RawIssuer) + ")"
		} else {
			return wantCRL{}, fmt.Errorf("trust directory file %s: %w", fileName, lastErr)
		}
	}
	return wantCRL{}, fmt.Errorf("trust directory file %s: its CRL%s is signed by none of the trusted CAs: add the CA that issued it, or remove the file", fileName, issuer)
}

func notFound(err error) bool {
	var p *problem.Error
	return errors.As(err, &p) && p.Status == 404
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
