// Package daemon runs `mtlsgate serve`: it opens the store, keeps the SDS
// cache and the bundle in step with it, and serves the admin API, SDS and the
// bundle endpoint until it is told to stop.
package daemon

import (
	"context"
	"crypto/ecdsa"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mtlsgate/mtlsgate/sidecar/admin"
	"github.com/mtlsgate/mtlsgate/sidecar/admintoken"
	"github.com/mtlsgate/mtlsgate/sidecar/bundlekey"
	"github.com/mtlsgate/mtlsgate/sidecar/bundlesrv"
	"github.com/mtlsgate/mtlsgate/sidecar/crlrefresh"
	"github.com/mtlsgate/mtlsgate/sidecar/metrics"
	"github.com/mtlsgate/mtlsgate/sidecar/pki"
	"github.com/mtlsgate/mtlsgate/sidecar/sds"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
	"github.com/mtlsgate/mtlsgate/sidecar/trustdir"
)

// Defaults. The ports sit clear of Envoy's customary 9901 (admin), 10000 and
// 15000-15090 (Istio) ranges.
const (
	DefaultAdminListen  = "127.0.0.1:9911"
	DefaultSDSListen    = "127.0.0.1:9912"
	DefaultBundleListen = "127.0.0.1:9913"
	DefaultDataDir      = "mtlsgate-data"
	DefaultEnvironment  = "development"
	TokenFileName       = "admin-token"
	// DefaultTrustDirInterval is how often --trust-dir is read. The kubelet
	// refreshes a mounted Secret within about a minute; this adds little.
	DefaultTrustDirInterval = 10 * time.Second
	// DefaultCRLMaxAge is how long after its thisUpdate a CRL without
	// nextUpdate counts as current. A week is the usual publication period
	// of CAs that issue CRLs on a schedule (and AD CS's default), so a list
	// a week older than that means its source stopped.
	DefaultCRLMaxAge = 7 * 24 * time.Hour
)

// Config is the serve command's configuration.
type Config struct {
	DataDir           string
	AdminListen       string
	SDSListen         string
	BundleListen      string
	AdminTokenFile    string // default: DataDir/admin-token
	EncryptionKeyFile string
	// BundleSigningKeyFile, when set, is a PEM ECDSA P-256 private key that
	// signs the bundle endpoint's answers (see package bundlekey).
	BundleSigningKeyFile string
	Environment          string
	CRLMinInterval       time.Duration
	CRLMaxInterval       time.Duration
	// CRLMaxAge is how long after its thisUpdate a CRL without nextUpdate
	// counts as current (store.CRL.StaleAfter); 0 means DefaultCRLMaxAge.
	CRLMaxAge time.Duration
	// TrustDir, when set, is a directory of CA and CRL PEM files the store
	// follows (see package trustdir), read every TrustDirInterval.
	TrustDir         string
	TrustDirInterval time.Duration
	// AuditRetention is how many audit records the store keeps (0: the
	// store's default).
	AuditRetention int
	// SDSCRLs puts the stored CRLs into the SDS validation context (see
	// sds.Options.CRLs), for an Envoy that checks revocation without the
	// filter.
	SDSCRLs bool
	Log     *slog.Logger
	// Ready, if set, is called once every listener is up, with their
	// addresses (useful with port 0).
	Ready func(Addrs)
}

// Addrs are the bound addresses.
type Addrs struct {
	Admin     string `json:"admin"`
	SDS       string `json:"sds"`
	Bundle    string `json:"bundle"`
	TokenFile string `json:"adminTokenFile"`
	DataDir   string `json:"dataDir"`
}

// Listen opens a listener for "host:port" or "unix:/path".
func Listen(addr string) (net.Listener, error) {
	if path, ok := strings.CutPrefix(addr, "unix:"); ok {
		// A socket left by a killed predecessor would make bind fail.
		if fi, err := os.Stat(path); err == nil && fi.Mode()&fs.ModeSocket != 0 {
			if err := removeStaleSocket(path); err != nil {
				return nil, err
			}
		}
		l, err := net.Listen("unix", path)
		if err != nil {
			return nil, fmt.Errorf("listen on %s: %w", addr, err)
		}
		// Owner and group, whatever the umask: Envoy usually runs as another
		// user, and connecting needs write permission on the socket. Who is in
		// the group, and who can enter the directory, decide who connects.
		if err := os.Chmod(path, 0o660); err != nil {
			l.Close()
			return nil, fmt.Errorf("set the mode of socket %s: %w", path, err)
		}
		return l, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w (is another mtlsgate serve running? pick another address)", addr, err)
	}
	return l, nil
}

// removeStaleSocket removes the socket file at path if nothing listens on it.
// Removing a live one would take the path from its process silently: the
// clients that connect next (Envoy asking for its keys, the CLI) would reach
// this process, or nothing once it exits, where a TCP address in use is
// simply refused. Only a refused connection proves the socket stale; any
// other failure leaves it in place.
func removeStaleSocket(path string) error {
	conn, err := net.DialTimeout("unix", path, time.Second)
	if err == nil {
		conn.Close()
		return fmt.Errorf("listen on unix:%s: another process listens on %s (is another mtlsgate serve running?): stop it, or pick another path", path, path)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		return fmt.Errorf("listen on unix:%s: cannot tell whether a process listens on the socket already there (%v): remove %s if none does, or pick another path", path, err, path)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("listen on unix:%s: remove the stale socket: %w", path, err)
	}
	return nil
}

// Timeouts of the admin and bundle HTTP servers.
const (
	// httpIdleTimeout closes a keep-alive connection no request came on
	// for that long: without it any local client could hold connections,
	// and their goroutines and file descriptors, open indefinitely. The
	// filter polls the bundle far more often, so its connection stays.
	httpIdleTimeout = 2 * time.Minute
	// httpReadTimeout bounds reading a request, body included: the largest
	// admin body (16 MiB) comes over loopback or a unix socket in well
	// under a second, the CLI reads its files before it connects, and a
	// client trickling bytes is cut off.
	httpReadTimeout = time.Minute
	// httpWriteTimeout bounds a request from its headers to the end of the
	// answer, so it must cover the slowest handler: `crl create --url`
	// downloads for up to 30s, then parses and checks a list of up to 32
	// MiB. The CLI itself gives up after 60s.
	httpWriteTimeout = 2 * time.Minute
)

// newHTTPServer is an admin or bundle server with the timeouts above.
func newHTTPServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       httpReadTimeout,
		WriteTimeout:      httpWriteTimeout,
		IdleTimeout:       httpIdleTimeout,
	}
}

func addrString(l net.Listener) string {
	if l.Addr().Network() == "unix" {
		return "unix:" + l.Addr().String()
	}
	return l.Addr().String()
}

// LoadKey reads a 32-byte encryption key given raw, as 64 hex digits or as
// base64.
func LoadKey(path string) ([]byte, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read --encryption-key-file: %w", err)
	}
	if len(data) == 32 {
		return data, nil
	}
	s := strings.TrimSpace(string(data))
	if k, err := hex.DecodeString(s); err == nil && len(k) == 32 {
		return k, nil
	}
	if k, err := base64.StdEncoding.DecodeString(s); err == nil && len(k) == 32 {
		return k, nil
	}
	return nil, fmt.Errorf("--encryption-key-file %s does not hold a 32-byte key (raw, 64 hex digits or base64): create one with `openssl rand -hex 32 > %s`", path, path)
}

// Run serves until ctx is cancelled.
func Run(ctx context.Context, cfg Config) error {
	log := cfg.Log
	if cfg.AdminTokenFile == "" {
		cfg.AdminTokenFile = filepath.Join(cfg.DataDir, TokenFileName)
	}
	if cfg.Environment == "" {
		cfg.Environment = DefaultEnvironment
	}
	var key []byte
	if cfg.EncryptionKeyFile != "" {
		k, err := LoadKey(cfg.EncryptionKeyFile)
		if err != nil {
			return err
		}
		key = k
	}
	var signer *ecdsa.PrivateKey
	if cfg.BundleSigningKeyFile != "" {
		k, perm, err := bundlekey.Load(cfg.BundleSigningKeyFile)
		if err != nil {
			return err
		}
		signer = k
		// Whoever reads it can sign bundles the filters accept. Used anyway,
		// as the admin token file is: refusing would stop a sidecar over a
		// deployment detail.
		if perm&0o077 != 0 {
			log.Warn(fmt.Sprintf("the bundle signing key file can be read by other users, who could then sign trust bundles the filters accept: restrict it with `chmod 600 %s` (for a mounted Kubernetes Secret, set defaultMode: 0400 on the volume)", cfg.BundleSigningKeyFile),
				"file", cfg.BundleSigningKeyFile, "mode", fmt.Sprintf("%04o", perm))
		}
	}
	created, err := store.EnsureDir(cfg.DataDir)
	if err != nil {
		return fmt.Errorf("--data-dir: %w", err)
	}
	// A directory serve did not create keeps its mode (it may be shared),
	// but the operator hears when others can look into it or write to it:
	// the store and token files are 0600, yet names not yet created there
	// (a socket, the store's rewrite) are open to whoever can write.
	if fi, err := os.Stat(cfg.DataDir); err == nil && !created && fi.Mode().Perm()&0o077 != 0 {
		log.Warn(fmt.Sprintf("the --data-dir %s can be read or written by other users; it is left as it is, but the store and its private keys belong in a directory of their own: pass a new path (serve creates it 0700), or `chmod 700 %s` if nothing else uses it", cfg.DataDir, cfg.DataDir),
			"dir", cfg.DataDir, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()|modeBits(fi.Mode())))
	}
	// The store's lock first: a second serve on the same --data-dir must
	// stop before it touches any listener, and a socket path above all,
	// whose removal on exit would cut the running one off.
	st, err := store.Open(cfg.DataDir, store.Options{EncryptionKey: key, AuditRetention: cfg.AuditRetention})
	if err != nil {
		return err
	}
	defer st.Close()
	tokens, err := admintoken.Open(cfg.AdminTokenFile)
	if err != nil {
		return err
	}
	// A token file others can read gives them the admin API. It is still
	// used, as refusing it would stop a sidecar over a deployment detail,
	// but the operator is told.
	if fi, err := os.Stat(cfg.AdminTokenFile); err == nil && fi.Mode().Perm()&0o077 != 0 {
		log.Warn(fmt.Sprintf("the admin token file can be read by other users: restrict it with `chmod 600 %s` (for a mounted Kubernetes Secret, set defaultMode: 0400 on the volume)", cfg.AdminTokenFile),
			"file", cfg.AdminTokenFile, "mode", fmt.Sprintf("%04o", fi.Mode().Perm()))
	}
	tokens.OnReload = func(ids []string, err error) {
		if err != nil {
			log.Error("admin token file not taken; the previous tokens stay accepted", "file", cfg.AdminTokenFile, "err", err)
			return
		}
		log.Info("admin token file re-read", "file", cfg.AdminTokenFile, "adminTokenIds", ids)
	}

	m := metrics.New()
	if err := st.PendingRewrite(); err != nil {
		log.Error(err.Error())
		m.RewritePending.Set(1)
	}
	var ready atomic.Bool
	var apiHandler atomic.Pointer[http.Handler]
	adminL, err := Listen(cfg.AdminListen)
	if err != nil {
		return err
	}
	defer adminL.Close()
	adminSrv := newHTTPServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if h := apiHandler.Load(); h != nil {
			(*h).ServeHTTP(w, r)
			return
		}
		// Until the trust material is published only liveness answers.
		if r.URL.Path == "/healthz" {
			w.Header().Set("Content-Type", "application/json")
			_, _ = io.WriteString(w, `{"status":"ok"}`+"\n")
			return
		}
		w.Header().Set("Content-Type", "application/problem+json")
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, `{"type":"https://mtlsgate.dev/problems/not_ready","title":"Service Unavailable","status":503,"code":"not_ready","detail":"mtlsgate serve is still starting (trust directory, first publish): retry shortly"}`+"\n")
	}))
	go func() { _ = adminSrv.Serve(adminL) }()
	defer adminSrv.Close()

	cache := sds.NewCache(sds.Options{Environment: cfg.Environment, CRLs: cfg.SDSCRLs})
	tracker := sds.NewTracker()
	tracker.OnChange = func() { m.SDSStreams.Set(float64(len(tracker.Subscriptions()))) }
	tracker.OnReject = m.SDSRejections.Inc
	tracker.Log = log
	bundles := bundlesrv.New()
	bundles.MaxAgeWithoutNextUpdate = crlMaxAge(cfg)
	bundles.SigningKey = signer

	var pubMu sync.Mutex
	var keys keyGate
	// publishFailed is why the store's current state is not what Envoy and
	// the filter have, or nil when it is. Ready means published: a sidecar
	// whose publish fails (a record it cannot decode fails every one) serves
	// an older state, or at start nothing at all, and must not pass for
	// ready.
	var publishFailed atomic.Pointer[string]
	publish := func() {
		// One publish at a time, each reading the store afresh, so a slow
		// publish can never overwrite a newer one with older state.
		pubMu.Lock()
		defer pubMu.Unlock()
		t0 := time.Now()
		if err := publishState(ctx, st, cache, bundles, m, &keys, cfg.Environment, crlMaxAge(cfg), log); err != nil {
			why := err.Error()
			publishFailed.Store(&why)
			log.Error("publish trust material failed: Envoy and the filter keep the state published before (none at start), and /readyz answers 503 until a publish succeeds; "+
				"fix what the error names (a record that cannot be decoded: restore the store from a backup)", "err", err)
			return
		}
		if publishFailed.Swap(nil) != nil {
			log.Info("trust material published again")
		}
		m.PublishSeconds.Observe(time.Since(t0).Seconds())
	}
	publish()
	st.SetOnChange(publish)

	var syncer *trustdir.Syncer
	if cfg.TrustDir != "" {
		syncer = &trustdir.Syncer{Dir: cfg.TrustDir, Store: st, Log: log, M: m, OnResult: func(err error) {
			if err != nil {
				m.TrustDirInSync.Set(0)
				return
			}
			m.TrustDirInSync.Set(1)
		}}
		// Before the listeners: a new replica's first SDS answer and first
		// bundle already carry the directory's CAs. A directory that cannot
		// be applied stops the start, so a broken Secret shows up as a
		// crash-looping container and not as a gateway refusing everyone.
		res, err := syncer.Sync()
		if err != nil {
			return fmt.Errorf("%w (fix the file, or start without --trust-dir)", err)
		}
		// What changed, if anything, the syncer logged itself.
		log.Info("trust directory in force", "dir", cfg.TrustDir, "changed", res.Changed(), "interval", trustDirInterval(cfg))
	}

	refresher := &crlrefresh.Refresher{
		Store: st, Client: crlrefresh.NewClient(30 * time.Second), Log: log, M: m,
		MinInterval: cfg.CRLMinInterval, MaxInterval: cfg.CRLMaxInterval, Republish: publish,
		MaxAgeWithoutNextUpdate: crlMaxAge(cfg),
	}
	refresher.Init()

	sdsL, err := Listen(cfg.SDSListen)
	if err != nil {
		return err
	}
	bundleL, err := Listen(cfg.BundleListen)
	if err != nil {
		sdsL.Close()
		return err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	grpcSrv := sds.NewGRPCServer(runCtx, cache, tracker)
	bundleSrv := newHTTPServer(bundles.Handler())
	errc := make(chan error, 2)
	go func() { errc <- grpcSrv.Serve(sdsL) }()
	go func() {
		if err := bundleSrv.Serve(bundleL); !errors.Is(err, http.ErrServerClosed) {
			errc <- err
		}
	}()
	go refresher.Run(runCtx)
	if syncer != nil {
		go syncer.Run(runCtx, trustDirInterval(cfg))
	}

	h := admin.New(admin.Config{
		Store: st, Tracker: tracker, Environment: cfg.Environment, Tokens: tokens, Log: log, Metrics: m,
		Ready: func() error {
			if !ready.Load() {
				return errors.New("mtlsgate serve is starting or stopping: retry shortly")
			}
			if why := publishFailed.Load(); why != nil {
				return fmt.Errorf("the store's current trust material could not be published (%s): Envoy and the filter keep the state published before, or none; fix what the error names (a record that cannot be decoded: restore the store from a backup), see the sidecar log", *why)
			}
			return nil
		},
		HTTPClient: refresher.Client, Refresher: refresher, CRLMaxAge: crlMaxAge(cfg),
	})
	apiHandler.Store(&h)
	ready.Store(true)
	addrs := Addrs{Admin: addrString(adminL), SDS: addrString(sdsL), Bundle: addrString(bundleL), TokenFile: cfg.AdminTokenFile, DataDir: cfg.DataDir}
	log.Info("mtlsgate serve ready", "admin", addrs.Admin, "sds", addrs.SDS, "bundle", addrs.Bundle,
		"environment", cfg.Environment, "adminTokenFile", cfg.AdminTokenFile, "adminTokenIds", tokens.IDs(),
		"keysEncrypted", key != nil, "bundleSigningKey", signingKeyID(signer))
	if cfg.Ready != nil {
		cfg.Ready(addrs)
	}

	var serveErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case serveErr = <-errc:
		log.Error("listener failed", "err", serveErr)
	}
	ready.Store(false)
	cancel()
	shutdownCtx, done := context.WithTimeout(context.Background(), 5*time.Second)
	defer done()
	_ = adminSrv.Shutdown(shutdownCtx)
	_ = bundleSrv.Shutdown(shutdownCtx)
	// SDS streams live as long as Envoy; give in-flight responses a moment,
	// then close the streams (Envoy reconnects to the next instance).
	stopped := make(chan struct{})
	go func() { grpcSrv.GracefulStop(); close(stopped) }()
	select {
	case <-stopped:
	case <-time.After(time.Second):
		grpcSrv.Stop()
	}
	for _, a := range []string{cfg.SDSListen, cfg.BundleListen, cfg.AdminListen} {
		if p, ok := strings.CutPrefix(a, "unix:"); ok {
			_ = os.Remove(p)
		}
	}
	return serveErr
}

// signingKeyID names the bundle signing key in the ready line, "none"
// without one.
func signingKeyID(k *ecdsa.PrivateKey) string {
	if k == nil {
		return "none"
	}
	return bundlekey.ID(k)
}

// modeBits are the setuid, setgid and sticky bits of m in chmod's octal
// notation, so a logged mode reads like `ls -ld` (1777 for /tmp).
func modeBits(m fs.FileMode) fs.FileMode {
	var b fs.FileMode
	if m&fs.ModeSetuid != 0 {
		b |= 0o4000
	}
	if m&fs.ModeSetgid != 0 {
		b |= 0o2000
	}
	if m&fs.ModeSticky != 0 {
		b |= 0o1000
	}
	return b
}

// completeCRLs leaves out stored lists that are not complete (delta,
// partitioned, indirect: see internal/crlscope). The admin API, the URL
// refresh and the trust directory refuse them, but a store written by an
// older version may hold one, and the filter refuses a whole bundle that
// carries one: every CA would lose its verdicts for one list's sake. Such a
// list is withheld, loudly, until it is replaced, and its CA marked so that
// the filter treats its revocation status as unknown (as for a stale list)
// rather than as a CA without a CRL.
func completeCRLs(crls []store.CRL, log *slog.Logger) (out []store.CRL, withheldCAs map[string]bool) {
	out = crls[:0:0]
	for _, c := range crls {
		if why := pki.StoredIncomplete(c.PEM); why != "" {
			log.Error("CRL withheld from Envoy and the filter: replace it with the CA's complete CRL (`mtlsgate crl update --crl-id "+c.ID+" --file FILE`)",
				"crl", c.ID, "ca", c.CAID, "problem", "the list "+why)
			if withheldCAs == nil {
				withheldCAs = map[string]bool{}
			}
			withheldCAs[c.CAID] = true
			continue
		}
		out = append(out, c)
	}
	return out, withheldCAs
}

// keyGate withholds from SDS the outbound certificates whose key Envoy
// refuses to load (RSA under 2048 bits, P-224, Ed25519: see
// pki.StoredKeyUnsupported). Uploads refuse them, but a store written
// before that check may hold one. Sent, it would be NACKed: Envoy keeps
// presenting the certificate it had, or none, and a state-of-the-world
// stream that also carries the validation context would reject CA changes
// in the same answer. Withheld, it is like a disabled certificate, and
// nothing else is held back with it.
type keyGate struct {
	// warned are the withheld certificates (ID and fingerprint) already
	// logged, so the warning comes at start and when a certificate becomes
	// one to publish (enabled, replaced), not with every publish.
	warned map[string]bool
}

// servable returns out without the certificates Envoy would refuse, and how
// many of them this sidecar would otherwise publish. It runs under the
// publish lock.
func (g *keyGate) servable(out []store.Outbound, env string, log *slog.Logger) (kept []store.Outbound, withheld int) {
	warned := map[string]bool{}
	kept = out[:0:0]
	for _, o := range out {
		why := pki.StoredKeyUnsupported(o.ChainPEM)
		if why == "" {
			kept = append(kept, o)
			continue
		}
		if !o.Enabled || !slices.Contains(o.EnvironmentTypes, env) {
			continue
		}
		withheld++
		k := o.ID + "\x00" + o.Fingerprint
		warned[k] = true
		if !g.warned[k] {
			log.Warn("mTLS certificate withheld from Envoy: Envoy refuses to load its key and would reject the SDS secret, keeping the certificate it had (or none); "+
				"upload one with "+pki.SupportedKeys+": `mtlsgate mtls-certificate update --cert-id "+o.ID+" --cert FILE --key FILE`",
				"certificate", o.ID, "name", o.Name, "subject", o.Subject, "key", why)
		}
	}
	g.warned = warned
	return kept, withheld
}

func crlMaxAge(cfg Config) time.Duration {
	if cfg.CRLMaxAge <= 0 {
		return DefaultCRLMaxAge
	}
	return cfg.CRLMaxAge
}

// trustDirInterval is how often the trust directory is read.
func trustDirInterval(cfg Config) time.Duration {
	if cfg.TrustDirInterval <= 0 {
		return DefaultTrustDirInterval
	}
	return cfg.TrustDirInterval
}

func publishState(ctx context.Context, st *store.Store, cache *sds.Cache, bundles *bundlesrv.Server, m *metrics.Metrics, keys *keyGate, env string, crlMaxAge time.Duration, log *slog.Logger) error {
	snap, err := st.Snapshot()
	if err != nil {
		return err
	}
	cas := snap.CAs
	out, badKeys := keys.servable(snap.Outbound, env, log)
	m.WithheldMTLS.Set(float64(badKeys))
	crls, withheld := completeCRLs(snap.CRLs, log)
	m.WithheldCRLs.Set(float64(len(snap.CRLs) - len(crls)))
	if err := cache.Update(ctx, sds.State{CAs: cas, CRLs: crls, Outbound: out}); err != nil {
		return err
	}
	// The active profile set travels in the bundle, so a binding change
	// reaches every filter with its next fetch, without an Envoy reload.
	var profiles []byte
	pv := snap.Profiles
	if snap.HasProfiles {
		profiles = pv.Profiles
	}
	now := time.Now()
	if err := bundles.Update(cas, crls, withheld, profiles, pv.Version, now); err != nil {
		return err
	}
	m.CACertificates.Set(float64(len(cas)))
	stale, served := 0, 0
	for _, c := range crls {
		if c.Stale(now, crlMaxAge) {
			stale++
		}
	}
	for _, o := range out {
		if o.Enabled && slices.Contains(o.EnvironmentTypes, env) {
			served++
		}
	}
	m.StaleCRLs.Set(float64(stale))
	m.MTLSCerts.Set(float64(served))
	return nil
}
