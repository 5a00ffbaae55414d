package api

import (
	"encoding/json"

	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// Paths of the profile API.
const (
	PathProfiles        = "/v1/profiles"
	PathProfileHistory  = "/v1/profiles/history"
	PathProfileRollback = "/v1/profiles/rollback"
)

// ProfileSet is one version of the authorization profile set. Version 0
// with an empty Profiles array means no set was ever stored (the filters then
// use the profiles in their plugin configuration).
type ProfileSet struct {
	store.ProfileVersion
	// Active is true for the version the bundle serves.
	Active bool `json:"active"`
}

// SetProfiles is the body of PUT /v1/profiles: the "profiles" array of a
// profiles.json file.
type SetProfiles struct {
	Profiles json.RawMessage `json:"profiles"`
}

// SetProfilesResult answers PUT /v1/profiles. Changed is false when the
// content equals the active version (which is then returned unchanged).
type SetProfilesResult struct {
	ProfileSet
	Changed bool `json:"changed"`
}

// RollbackProfiles is the body of POST /v1/profiles/rollback.
type RollbackProfiles struct {
	ToVersion int `json:"toVersion"`
}
