package main

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestVersion(t *testing.T) {
	version = "v1.2.3-test"
	for _, args := range [][]string{{"version", "--output", "json"}, {"--version", "--output", "json"}} {
		var out, errb bytes.Buffer
		if code := run(args, &out, &errb); code != 0 {
			t.Fatalf("%v: exit %d: %s", args, code, errb.String())
		}
		var doc map[string]string
		if err := json.Unmarshal(out.Bytes(), &doc); err != nil || doc["version"] != "v1.2.3-test" || len(doc) != 1 {
			t.Errorf("%v: %q is not {\"version\": ...}: %v", args, out.String(), err)
		}
	}
	var out, errb bytes.Buffer
	if code := run([]string{"version"}, &out, &errb); code != 0 || out.String() != "mtlsgate v1.2.3-test\n" {
		t.Errorf("text: exit %d %q", code, out.String())
	}
	for _, args := range [][]string{{"version", "--output", "xml"}, {"version", "--bogus"}, {"version", "extra"}} {
		out.Reset()
		errb.Reset()
		if code := run(args, &out, &errb); code != 2 || out.Len() != 0 || !strings.Contains(errb.String(), "--output json") {
			t.Errorf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
	}
}

// TestHelpListsEveryCommand keeps `mtlsgate help` in step with the dispatcher.
func TestHelpListsEveryCommand(t *testing.T) {
	var out, errb bytes.Buffer
	if code := run([]string{"help"}, &out, &errb); code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, c := range []string{"serve", "health", "ca-certificate", "crl", "mtls-certificate", "profile", "audit", "bundle-key", "verify", "dev", "demo", "version", "help"} {
		if !strings.Contains(out.String(), "\n  "+c+" ") {
			t.Errorf("help does not list %s", c)
		}
		if c == "help" {
			continue
		}
		// Each listed command exists: -h is not an unknown command.
		out2, err2 := &bytes.Buffer{}, &bytes.Buffer{}
		run([]string{c, "-h"}, out2, err2)
		if strings.Contains(err2.String(), "unknown command") {
			t.Errorf("help lists %s, which is unknown: %s", c, err2.String())
		}
	}
}
