package cli

import (
	"fmt"
	"maps"
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
				list, err := auditPages(c.cl, q, *limit)
				if err != nil {
					return err
				}
				if c.out.json {
					return c.json(list)
				}
				rows := make([][]string, 0, len(list))
				for _, e := range list {
					rows = append(rows, []string{strconv.FormatUint(e.Seq, 10), ts(e.Time), e.Actor, e.Action, auditTarget(e)})
				}
				c.table("SEQ\tTIME\tACTOR\tACTION\tTARGET", rows)
				return nil
			}
		}},
	}
}

// auditPages reads the newest limit records q selects (all when limit is
// 0), oldest first. The server answers a page at a time; the pages are
// followed back from the newest, so records added meanwhile (numbered above
// the first page) neither shift nor repeat what is read.
func auditPages(cl *Client, q url.Values, limit int) ([]store.AuditEntry, error) {
	var all []store.AuditEntry
	page := func(remaining int) string {
		if limit > 0 {
			remaining = min(remaining, api.AuditPageMax)
		} else {
			remaining = api.AuditPageMax
		}
		q.Set("limit", strconv.Itoa(remaining))
		return api.PathAudit + "?" + q.Encode()
	}
	path := page(limit)
	for {
		var list []store.AuditEntry
		next, err := cl.Page(path, &list)
		if err != nil {
			return nil, err
		}
		if len(all) > 0 && len(list) > 0 && list[len(list)-1].Seq >= all[0].Seq {
			return nil, fmt.Errorf("the server's next page of audit records (up to seq %d) does not go back from the last (from seq %d): is --server pointing at mtlsgate serve's admin address?", list[len(list)-1].Seq, all[0].Seq)
		}
		all = append(list, all...)
		if next == "" || len(list) == 0 || (limit > 0 && len(all) >= limit) {
			return all, nil
		}
		u, err := url.Parse(next)
		if err != nil {
			return nil, fmt.Errorf("the server's next page %q: %w", next, err)
		}
		q = u.Query()
		path = page(limit - len(all))
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
