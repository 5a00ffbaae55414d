package admin

import (
	"encoding/json"
	"net/http"

	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/problem"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// profileRoutes registers the profile set API. Every change lands in the
// store as a new version and reaches the filters with the next bundle fetch,
// without touching Envoy's configuration.
func (s *server) profileRoutes(v1 func(pattern string, h func(w http.ResponseWriter, r *http.Request) error)) {
	v1("GET "+api.PathProfiles, s.getProfiles)
	v1("PUT "+api.PathProfiles, s.setProfiles)
	v1("GET "+api.PathProfileHistory, s.profileHistory)
	v1("POST "+api.PathProfileRollback, s.rollbackProfiles)
}

type profileRef struct {
	Version int    `json:"version"`
	SHA256  string `json:"sha256"`
}

// ref names a profile set version in an audit record; nil for none.
func ref(pv *store.ProfileVersion) *profileRef {
	if pv == nil {
		return nil
	}
	return &profileRef{pv.Version, pv.SHA256}
}

func (s *server) getProfiles(w http.ResponseWriter, r *http.Request) error {
	pv, ok, err := s.Store.ActiveProfiles()
	if err != nil {
		return err
	}
	if !ok {
		pv.Profiles = json.RawMessage("[]")
	}
	writeJSON(w, 200, api.ProfileSet{ProfileVersion: pv, Active: ok})
	return nil
}

func (s *server) setProfiles(w http.ResponseWriter, r *http.Request) error {
	var req api.SetProfiles
	if err := decode(r, &req); err != nil {
		return err
	}
	if len(req.Profiles) == 0 || string(req.Profiles) == "null" {
		return problem.Invalid("missing_profiles", "the body must be {\"profiles\": [...]}: pass the profiles.json file with `mtlsgate profile set --file`")
	}
	var rec *store.AuditEntry
	pv, changed, err := s.Store.SetProfiles(req.Profiles, actor(r), func(before, after *store.ProfileVersion) *store.AuditEntry {
		rec = entry(r, "profile.set", ref(before), ref(after))
		return rec
	})
	if err != nil {
		return err
	}
	status := 200
	if changed {
		status = 201
		s.logAudit(rec)
	}
	writeJSON(w, status, api.SetProfilesResult{ProfileSet: api.ProfileSet{ProfileVersion: pv, Active: true}, Changed: changed})
	return nil
}

func (s *server) profileHistory(w http.ResponseWriter, r *http.Request) error {
	list, err := s.Store.ProfileHistory()
	if err != nil {
		return err
	}
	out := make([]api.ProfileSet, 0, len(list))
	for i, pv := range list {
		out = append(out, api.ProfileSet{ProfileVersion: pv, Active: i == len(list)-1})
	}
	writeJSON(w, 200, out)
	return nil
}

func (s *server) rollbackProfiles(w http.ResponseWriter, r *http.Request) error {
	var req api.RollbackProfiles
	if err := decode(r, &req); err != nil {
		return err
	}
	var rec *store.AuditEntry
	pv, err := s.Store.RollbackProfiles(req.ToVersion, actor(r), func(before, after *store.ProfileVersion) *store.AuditEntry {
		rec = entry(r, "profile.rollback", ref(before), ref(after), "rollbackOf", req.ToVersion)
		return rec
	})
	if err != nil {
		return err
	}
	s.logAudit(rec)
	writeJSON(w, 201, api.SetProfilesResult{ProfileSet: api.ProfileSet{ProfileVersion: pv, Active: true}, Changed: true})
	return nil
}
