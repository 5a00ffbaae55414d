package cli

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/mtlsgate/mtlsgate/sidecar/api"
	"github.com/mtlsgate/mtlsgate/sidecar/store"
)

// The audit group reads the trail the store keeps with every change; like
// the profile group it registers itself.
func init() {
	verbOrder["audit"] = []string{"list"}
	groups["audit"] = map[string]verb{
		"list": {"list the audit records of trust changes kept in the store, oldest first", func(c *cmd) func() error {
			since := c.fs.String("since", "", "only records from this time on: an RFC 3339 time (2026-01-02T15:04:05Z) or a duration back from now (24h, 90m)")
			limit := c.fs.Int("limit", 0, "only the newest N records (0: all kept)")
			return func() error {
				q := url.Values{}
				if *since != "" {
					t, err := sinceTime(*since, time.Now())
					if err != nil {
						fmt.Fprintf(c.errw, "mtlsgate %s: --since %v\n", c.fs.Name(), err)
						return errUsage
					}
					q.Set("since", t.UTC().Format(time.RFC3339Nano))
				}
				if *limit < 0 {
					fmt.Fprintf(c.errw, "mtlsgate %s: --limit must be 0 (all) or more\n", c.fs.Name())
					return errUsage
				}
				if *limit > 0 {
					q.Set("limit", strconv.Itoa(*limit))
				}
				path := api.PathAudit
				if len(q) > 0 {
					path += "?" + q.Encode()
				}
				return send(c, http.MethodGet, path, nil, func(list []store.AuditEntry) {
					rows := make([][]string, 0, len(list))
					for _, e := range list {
						rows = append(rows, []string{strconv.FormatUint(e.Seq, 10), ts(e.Time), e.Actor, e.Action, auditTarget(e)})
					}
					c.table("SEQ\tTIME\tACTOR\tACTION\tTARGET", rows)
				})
			}
		}},
	}
}

// sinceTime reads --since: a time, or a duration back from now.
func sinceTime(v string, now time.Time) (time.Time, error) {
	if d, err := time.ParseDuration(v); err == nil {
		if d < 0 {
			return time.Time{}, fmt.Errorf("%q: give a positive duration, the time to look back", v)
		}
		return now.Add(-d), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return time.Time{}, fmt.Errorf("%q is neither a duration (24h) nor an RFC 3339 time (2026-01-02T15:04:05Z)", v)
	}
	return t, nil
}

// auditTarget is what a record's table row names: the ID the change was
// made to, or for a trust directory read how many records each kind of
// edit touched. `--output json` shows the whole record.
func auditTarget(e store.AuditEntry) string {
	for _, v := range []any{e.After, e.Before} {
		if m, ok := v.(map[string]any); ok {
			if id, ok := m["id"].(string); ok && id != "" {
				return id
			}
			if n, ok := m["version"].(float64); ok {
				return "profile set version " + strconv.Itoa(int(n))
			}
		}
	}
	var parts []string
	for _, k := range slices.Sorted(maps.Keys(e.Details)) {
		if list, ok := e.Details[k].([]any); ok && len(list) > 0 {
			parts = append(parts, fmt.Sprintf("%s=%d", k, len(list)))
		}
	}
	if len(parts) == 0 {
		return "-"
	}
	return strings.Join(parts, " ")
}
