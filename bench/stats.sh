# bench/stats.sh - the statistics bench/run and bench/split share (sourced, not run).
# median: the median of the numbers on stdin (space or newline separated; empty: "").
median() { tr ' ' '\n' | grep . | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print ""; exit }
    if (NR % 2) print v[(NR + 1) / 2]; else printf "%.6g\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# speedup vs QEMU and ours/raw, both as ratios of time (for IOPS rows: of time per request).
ratio() { # METRIC NUMERATOR_SIDE_VALUE DENOMINATOR_SIDE_VALUE for time: a / b
    awk -v m="$1" -v a="$2" -v b="$3" 'BEGIN {
        if (a == "" || b == "" || a == 0 || b == 0) { print ""; exit }
        if (m == "IOPS") printf "%.3f", b / a; else printf "%.3f", a / b }'
}
