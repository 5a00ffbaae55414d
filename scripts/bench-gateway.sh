#!/usr/bin/env bash
# Measures the dev gateway with the mtlsgate filter against the no-op filter
# in alternating pairs (the machine's drift between runs lands on both sides),
# then prints the medians and the filter/no-op ratios the README reports.
# Usage: scripts/bench-gateway.sh PAIRS REQUESTS OUTFILE
set -euo pipefail
pairs=${1:-5} requests=${2:-30000} out=${3:-build/bench-gateway.txt}
go=${GO:-go}
mkdir -p "$(dirname "$out")"
: > "$out"
for i in $(seq "$pairs"); do
	"$go" test -run '^$' -bench 'Gateway/(filter|noop)' -benchtime "${requests}x" -count 1 ./loadtest | tee -a "$out"
done
# A benchmark line is: name N value unit value unit ...; pick units by name.
awk '
function median(list,   n, a, i, j, t) {
	n = split(list, a, " ")
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
/^BenchmarkGateway\/(filter|noop)/ {
	setup = ($1 ~ /filter/) ? "filter" : "noop"
	for (i = 3; i < NF; i += 2) {
		if ($(i+1) == "req/s") rps[setup] = rps[setup] " " $i
		if ($(i+1) == "cpu-µs/op") cpu[setup] = cpu[setup] " " $i
	}
}
END {
	if (rps["filter"] == "" || rps["noop"] == "") { print "no benchmark lines found" > "/dev/stderr"; exit 1 }
	fr = median(rps["filter"]); nr = median(rps["noop"])
	fc = median(cpu["filter"]); nc = median(cpu["noop"])
	printf "medians: filter %.0f req/s, %.1f cpu-µs/op; no-op %.0f req/s, %.1f cpu-µs/op\n", fr, fc, nr, nc
	printf "filter/no-op: %.0f%% of req/s, %.0f%% by CPU per request (target >= 85%%)\n", 100 * fr / nr, 100 * nc / fc
}' "$out"
