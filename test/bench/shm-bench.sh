#!/bin/sh
# Cross-process benchmarks of the vchan ring on the shm backend beside a Unix
# socket pair and pipes (vchan/shm/bench_test.go), with the ratios.
#
#   test/bench/shm-bench.sh [count] [benchtime]
#
# count (default 5) runs of each benchmark; the medians are compared.
set -eu
count=${1:-5}
benchtime=${2:-1s}
cd "$(dirname "$0")/../.."
out=$(mktemp)
trap 'rm -f "$out"' EXIT
go test -run '^$' -bench 'CrossProcess' -benchtime "$benchtime" -count "$count" ./vchan/shm | tee "$out"
awk '
function median(key,   n, i, j, t, a) {
	n = cnt[key]
	for (i = 1; i <= n; i++) a[i] = val[key, i]
	for (i = 2; i <= n; i++) { t = a[i]; for (j = i - 1; j >= 1 && a[j] > t; j--) a[j + 1] = a[j]; a[j + 1] = t }
	return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
}
/^BenchmarkCrossProcess/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	v = $3                                   # ns/op
	for (i = 4; i <= NF; i++) if ($(i + 1) == "MB/s") v = $i
	cnt[name]++; val[name, cnt[name]] = v
}
END {
	t = "BenchmarkCrossProcessThroughput/"; r = "BenchmarkCrossProcessRTT/"
	printf "\nmedians of %d runs\n", cnt[t "unix"]
	printf "throughput MB/s: ring-1MiB %.0f  ring-64KiB %.0f  unix %.0f  pipe %.0f\n", median(t "ring-1MiB"), median(t "ring-64KiB"), median(t "unix"), median(t "pipe")
	printf "throughput ratio ring-1MiB/unix %.2f  ring-1MiB/pipe %.2f  ring-64KiB/unix %.2f  ring-64KiB/pipe %.2f\n",
		median(t "ring-1MiB") / median(t "unix"), median(t "ring-1MiB") / median(t "pipe"),
		median(t "ring-64KiB") / median(t "unix"), median(t "ring-64KiB") / median(t "pipe")
	printf "round trip us: ring %.1f  unix %.1f  pipe %.1f\n", median(r "ring-1MiB") / 1000, median(r "unix") / 1000, median(r "pipe") / 1000
	printf "round trip ratio ring/unix %.2f  ring/pipe %.2f\n", median(r "ring-1MiB") / median(r "unix"), median(r "ring-1MiB") / median(r "pipe")
}' "$out"
