#!/usr/bin/env bash
# The gateway's filter/no-op ratio: BenchmarkGatewayInterleaved RUNS times
# (each loads the two gateways in turn, in chunks, so the machine's drift
# lands on both), then the medians of what each run reports.
# Usage: scripts/bench-gateway.sh RUNS REQUESTS OUTFILE
set -euo pipefail
runs=${1:-5} requests=${2:-20000} out=${3:-build/bench-gateway.txt}
go=${GO:-go}
mkdir -p "$(dirname "$out")"
"$go" test -run '^$' -bench 'GatewayInterleaved' -benchtime "${requests}x" -count "$runs" ./loadtest | tee "$out"
# A benchmark line is: name N value unit value unit ...
awk '
function median(list,   n, a, i, j, t) {
	n = split(list, a, " ")
	for (i = 2; i <= n; i++) for (j = i; j > 1 && a[j-1] + 0 > a[j] + 0; j--) { t = a[j]; a[j] = a[j-1]; a[j-1] = t }
	return n % 2 ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
/^BenchmarkGatewayInterleaved/ { for (i = 3; i < NF; i += 2) v[$(i+1)] = v[$(i+1)] " " $i; runs++ }
END {
	if (!runs) { print "no benchmark lines found" > "/dev/stderr"; exit 1 }
	printf "medians of %d runs: filter %.0f req/s, %.1f CPU-µs/request; no-op %.0f req/s, %.1f CPU-µs/request\n", runs,
		median(v["filter-req/s"]), median(v["filter-cpu-µs/req"]), median(v["noop-req/s"]), median(v["noop-cpu-µs/req"])
	printf "filter/no-op: %.0f%% of req/s (runs:%s), %.0f%% by CPU per request (runs:%s); target >= 85%%\n",
		median(v["%-req/s"]), v["%-req/s"], median(v["%-cpu"]), v["%-cpu"]
}' "$out"
