package store

import (
	"testing"
	"time"
)

// A list without nextUpdate goes stale maxAge after its thisUpdate; one
// with nextUpdate goes stale at it, whatever maxAge says.
func TestCRLStaleWithoutNextUpdate(t *testing.T) {
	tu := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	undated := CRL{ThisUpdate: tu}
	week := 7 * 24 * time.Hour
	if got := undated.StaleAfter(week); !got.Equal(tu.Add(week)) {
		t.Errorf("StaleAfter %s, want thisUpdate + a week", got)
	}
	if undated.Stale(tu.Add(week), week) || !undated.Stale(tu.Add(week+time.Second), week) {
		t.Error("undated list: stale at the wrong moment")
	}
	if undated.Stale(tu.Add(100*week), 0) {
		t.Error("undated list stale with no max age")
	}
	dated := CRL{ThisUpdate: tu, NextUpdate: tu.Add(time.Hour)}
	if !dated.Stale(tu.Add(2*time.Hour), week) || dated.Stale(tu.Add(time.Minute), time.Second) {
		t.Error("dated list: staleness not by its nextUpdate")
	}
}

// A list without nextUpdate dated late in year 9999 stays current until
// the end of that year, the last time JSON can carry, not past it.
func TestCRLStaleAfterEndsInYear9999(t *testing.T) {
	c := CRL{ThisUpdate: time.Date(9999, 12, 30, 0, 0, 0, 0, time.UTC)}
	got := c.StaleAfter(7 * 24 * time.Hour)
	if got.Year() != 9999 {
		t.Fatalf("StaleAfter %s, past year 9999", got)
	}
	if _, err := got.MarshalJSON(); err != nil {
		t.Fatal(err)
	}
	if c.Stale(time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC), 7*24*time.Hour) {
		t.Error("stale before its thisUpdate plus the max age")
	}
}
