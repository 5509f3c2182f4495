#!/bin/sh
# run-all.sh BUILDDIR: every test suite against one build: the cmocka unit
# tests (BUILDDIR/tests/test_*) and the integration suite (BUILDDIR/smtpvault).
# Ends with a totals block and, as the very last line, "N passed, N failed".
# Exits non-zero when anything failed.

if [ $# -ne 1 ]; then
	echo "usage: $0 BUILDDIR" >&2
	exit 2
fi
build=$1
here=$(cd "$(dirname "$0")" && pwd) || exit 1

out=$(mktemp "${TMPDIR:-/tmp}/smtpvault-all.XXXXXX") || exit 1
trap 'rm -f "$out"' EXIT INT TERM

# The last "SUITE: N passed, N failed" line of a run, as "N M".
totals() {
	sed -n "s/^$1: \([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed\$/\1 \2/p" "$out" | tail -n 1
}

bins=""
for b in "$build"/tests/test_*; do
	[ -x "$b" ] && [ -f "$b" ] && bins="$bins $b"
done
# shellcheck disable=SC2086 # the list of programs is split on purpose
"$here/run-unit.sh" $bins 2>&1 | tee "$out"
set -- $(totals unit)
unit_p=${1:-0}
unit_f=${2:-1}

"$here/run-integration.sh" "$build/smtpvault" 2>&1 | tee "$out"
set -- $(totals integration)
int_p=${1:-0}
int_f=${2:-1}

echo
echo "== totals"
echo "unit: $unit_p passed, $unit_f failed"
echo "integration: $int_p passed, $int_f failed"
echo "$((unit_p + int_p)) passed, $((unit_f + int_f)) failed"
[ "$unit_f" -eq 0 ] && [ "$int_f" -eq 0 ]
