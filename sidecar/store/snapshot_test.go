package store

import (
	"fmt"
	"path/filepath"
	"testing"
)

// TestSnapshotIsOneState: while a writer adds a CA, then its CRL, then
// deletes the CA (and the CRL with it), every snapshot shows each CRL with
// its CA. Reading CAs and CRLs in two transactions could see a CRL whose CA
// it read before the CA existed, and publish a list Envoy cannot place (a
// timing test: against two transactions it failed about every second run).
func TestSnapshotIsOneState(t *testing.T) {
	s, err := Open(filepath.Join(t.TempDir(), "data"), Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	done := make(chan error, 1)
	go func() {
		for i := 0; i < 500; i++ {
			ca, err := s.CreateCA(CA{Name: fmt.Sprintf("ca_%d", i), Fingerprint: fmt.Sprintf("FP%d", i), PEM: "x"}, nil)
			if err == nil {
				_, err = s.CreateCRL(CRL{CAID: ca.ID, PEM: "y"}, nil)
			}
			if err == nil {
				_, _, err = s.DeleteCA(ca.ID, nil, nil)
			}
			if err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for n := 0; ; n++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			if n < 10 {
				t.Fatalf("only %d snapshots taken while the writer ran", n)
			}
			return
		default:
		}
		snap, err := s.Snapshot()
		if err != nil {
			t.Fatal(err)
		}
		have := map[string]bool{}
		for _, c := range snap.CAs {
			have[c.ID] = true
		}
		for _, c := range snap.CRLs {
			if !have[c.CAID] {
				t.Fatalf("snapshot %d holds CRL %s of CA %s, which it does not hold", n, c.ID, c.CAID)
			}
		}
	}
}
