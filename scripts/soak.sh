#!/usr/bin/env bash
# rackd soak run (issue 11, not in CI): client — router — server in network namespaces, rackd on
# both, 100 managed connections echoing checked data all the time, an outage (the router's link
# towards the client down for 30 s) every 2 minutes, for an hour. Samples both daemons' RSS and
# flow tables every 10 s and fails if they grow beyond their bounds (docs/scenarios.md).
#
#   scripts/soak.sh [--duration-s 3600] [--connections 100] [--outage-every-s 120]
#                   [--outage-s 30] [--sample-every-s 10] [--rss-growth-kib 4096]
#                   [--move-every N: the client also changes address after every Nth outage] ...
#
# Root only. Builds rackd, rackctl and rk-soak (debug, like the tests) unless SOAK_NO_BUILD=1,
# then runs rk-soak; its output (CSV samples, outage lines, verdict) is also written to
# $CARGO_TARGET_DIR/soak/soak-<time>.log. Exit status 0 means flat.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
TARGET=${CARGO_TARGET_DIR:-target}
[ "$(id -u)" = 0 ] || { echo "soak: run as root (network namespaces)" >&2; exit 1; }
if [ "${SOAK_NO_BUILD:-0}" != 1 ]; then
  ${CARGO:-cargo} build -q -p rackd -p rackctl -p integration --bins
fi
mkdir -p "$TARGET/soak"
log="$TARGET/soak/soak-$(date +%Y%m%d-%H%M%S).log"
echo "soak: writing $log"
"$TARGET/debug/rk-soak" "$@" | tee "$log"
exit "${PIPESTATUS[0]}"
