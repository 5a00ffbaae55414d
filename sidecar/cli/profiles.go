package cli

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/mtlsgate/mtlsgate/internal/bundle"
	"github.com/mtlsgate/mtlsgate/sidecar/api"
)

// The profile group lives in its own file and registers itself, so the
// certificate commands' file stays as it is.
func init() {
	verbOrder["profile"] = []string{"set", "list", "history", "rollback"}
	groups["profile"] = map[string]verb{
		"set": {"replace the authorization profile set from a profiles.json file (a new version)", func(c *cmd) func() error {
			file := c.fs.String("file", "", "profiles.json (- for stdin): {\"profiles\": [{\"id\", \"clients\", \"methods\", \"sourceCIDRs\", \"rateLimit\"}, ...]}")
			return func() error {
				if err := c.required("file", *file); err != nil {
					return err
				}
				data, err := readFile("file", *file)
				if err != nil {
					return err
				}
				// The same parser as the filter and the sidecar: a mistake
				// is reported with its JSON path before anything is sent.
				if _, err := bundle.ParseProfileFile(data); err != nil {
					return fmt.Errorf("%s: %w; fix the file and run again (nothing was changed)", *file, err)
				}
				var doc api.SetProfiles
				if err := json.Unmarshal(data, &doc); err != nil {
					return fmt.Errorf("%s: %w", *file, err)
				}
				var res api.SetProfilesResult
				if err := c.cl.Do(http.MethodPut, api.PathProfiles, doc, &res); err != nil {
					return err
				}
				if c.out.json {
					return c.json(res)
				}
				if !res.Changed {
					fmt.Fprintf(c.w, "Profile set unchanged: version %d already has this content\n", res.Version)
					return nil
				}
				fmt.Fprintf(c.w, "Profile set version %d is active (%d profiles); filters pick it up with their next bundle fetch\n", res.Version, countProfiles(res.Profiles))
				return nil
			}
		}},
		"list": {"show the active profile set", func(c *cmd) func() error {
			return func() error {
				var set api.ProfileSet
				if err := c.cl.Do(http.MethodGet, api.PathProfiles, nil, &set); err != nil {
					return err
				}
				if c.out.json {
					return c.json(set)
				}
				if !set.Active {
					fmt.Fprintln(c.w, "No profile set stored: filters use the profiles of their plugin configuration. Create one with `mtlsgate profile set --file profiles.json`")
					return nil
				}
				fmt.Fprintf(c.w, "Version %d (%s %s)\n", set.Version, set.Action, ts(set.CreatedAt))
				rows := [][]string{}
				for _, p := range decodeProfiles(set.Profiles) {
					rl := "-"
					if p.RateLimit != nil {
						rl = strconv.Itoa(p.RateLimit.Requests) + "/" + p.RateLimit.Per
					}
					rows = append(rows, []string{p.ID, strings.Join(p.Clients, ","), orAny(p.Methods), orAny(p.SourceCIDRs), rl})
				}
				c.table("PROFILE\tCLIENTS\tMETHODS\tSOURCES\tRATE LIMIT", rows)
				return nil
			}
		}},
		"history": {"list every version of the profile set, oldest first", func(c *cmd) func() error {
			return func() error {
				return send(c, http.MethodGet, api.PathProfileHistory, nil, func(list []api.ProfileSet) {
					rows := make([][]string, 0, len(list))
					for _, v := range list {
						action := v.Action
						if v.RollbackOf > 0 {
							action += " to " + strconv.Itoa(v.RollbackOf)
						}
						active := ""
						if v.Active {
							active = "*"
						}
						rows = append(rows, []string{strconv.Itoa(v.Version) + active, ts(v.CreatedAt), action, strconv.Itoa(countProfiles(v.Profiles)), v.SHA256[:12], v.Actor})
					}
					c.table("VERSION\tCREATED\tACTION\tPROFILES\tSHA256\tACTOR", rows)
				})
			}
		}},
		"rollback": {"make an earlier version's profile set active again (as a new version)", func(c *cmd) func() error {
			to := c.fs.Int("to-version", 0, "version to restore (see mtlsgate profile history)")
			return func() error {
				if *to < 1 {
					fmt.Fprintf(c.errw, "mtlsgate %s: --to-version is required: a version number from `mtlsgate profile history`\n", c.fs.Name())
					return errUsage
				}
				return send(c, http.MethodPost, api.PathProfileRollback, api.RollbackProfiles{ToVersion: *to}, func(res api.SetProfilesResult) {
					fmt.Fprintf(c.w, "Profile set version %d is active: the content of version %d (%d profiles)\n", res.Version, res.RollbackOf, countProfiles(res.Profiles))
				})
			}
		}},
	}
}

func decodeProfiles(raw []byte) []bundle.Profile {
	var list []bundle.Profile
	_ = json.Unmarshal(raw, &list)
	return list
}

func countProfiles(raw []byte) int { return len(decodeProfiles(raw)) }

func orAny(list []string) string {
	if len(list) == 0 {
		return "any"
	}
	return strings.Join(list, ",")
}
