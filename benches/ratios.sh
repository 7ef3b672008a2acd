#!/usr/bin/env sh
# The quick suite: run every bench once with short measurement times, then
# print the table of ratios (annal vs SQLite, vs the hardware limit, and the
# issue's targets) from criterion's results.
#
#   sh benches/ratios.sh                  # quick pass, default sizes
#   ANNAL_BENCH_SCALE=10 sh benches/ratios.sh   # the 10M-event shapes
#   sh benches/ratios.sh --measurement-time 5   # longer, steadier runs
#
# Extra arguments go to every bench binary (criterion's options). Results
# land in target/criterion as usual, so `--save-baseline`/`--baseline` work
# here too (see BENCHMARKS.md).
set -eu
cd "$(dirname "$0")/.."
cargo bench --bench append --bench group_commit --bench replay --bench streams \
    --bench rebuild --bench snapshot -- --warm-up-time 0.5 --measurement-time 1.5 "$@"
cargo bench --bench ratios
