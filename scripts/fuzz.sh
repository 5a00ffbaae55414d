#!/usr/bin/env bash
# Runs every Fuzz target in the module for FUZZTIME each (make fuzz).
#
# Go 1.26's fuzz coordinator can end a run whose -fuzztime ran out while a
# worker was mid-input with "context deadline exceeded" and a non-zero exit,
# having found nothing (golang/go#75804, fixed in Go 1.27). A real finding
# always writes its input to testdata/fuzz and says "Failing input written";
# a run that failed with the deadline message and wrote nothing is run again
# (three runs at most), and any other failure fails at once.
set -uo pipefail

: "${GO:=go}" "${FUZZTIME:=30s}" "${FUZZMINTIME:=5s}" "${MTLSGATE_WASM:=}"
export MTLSGATE_WASM

run() { # dir fn log
	"$GO" test -run '^$' -fuzz "^$2\$" -fuzztime "$FUZZTIME" -fuzzminimizetime "$FUZZMINTIME" "$1" 2>&1 | tee "$3"
	return "${PIPESTATUS[0]}"
}

deadline_only() { # log
	grep -q 'context deadline exceeded' "$1" && ! grep -qE 'Failing input written|panic:|_test\.go:[0-9]+:' "$1"
}

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
while IFS=: read -r file fn; do
	fn=${fn#func }
	dir=$(dirname "$file")
	echo "== $dir $fn"
	ok=0
	for attempt in 1 2 3; do
		if run "$dir" "$fn" "$log"; then
			ok=1
			break
		fi
		deadline_only "$log" || break
		echo "== $dir $fn: the fuzztime deadline race (golang/go#75804), no failing input written; running it again"
	done
	if [ "$ok" = 0 ]; then
		status=1
		break
	fi
done < <(grep -rHo '^func Fuzz[A-Za-z0-9_]*' --include='*_test.go' . | sort)
exit "$status"
