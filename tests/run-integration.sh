#!/bin/sh
# run-integration.sh SMTPVAULT_BIN: run the pytest integration suite
# (tests/integration) against the given binary, with Debian's python3.
# Prints pytest's output and summary, then "integration: N passed, N failed".
# "No tests collected" (pytest exit 5) is a failure.

if [ $# -ne 1 ]; then
	echo "usage: $0 SMTPVAULT_BIN" >&2
	exit 2
fi

root=$(cd "$(dirname "$0")/.." && pwd) || exit 1
case "$1" in
/*) bin=$1 ;;
*) bin=$(pwd)/$1 ;;
esac
if [ ! -x "$bin" ]; then
	echo "integration: not an executable: $bin" >&2
	echo "integration: 0 passed, 1 failed"
	exit 1
fi

PY=/usr/bin/python3
set -- -q -rfE -p no:cacheprovider
# A hung test must not hang the run: pytest-timeout when present (conftest
# falls back to an alarm otherwise).
if "$PY" -c 'import pytest_timeout' 2>/dev/null; then
	set -- "$@" --timeout=120
fi
# SMTPVAULT_IT_IGNORE: test files (names in tests/integration) to leave
# out, e.g. the checks that run no C code, for the sanitizer pass.
for f in ${SMTPVAULT_IT_IGNORE:-}; do
	set -- "$@" "--ignore=tests/integration/$f"
done

out=$(mktemp "${TMPDIR:-/tmp}/smtpvault-integration.XXXXXX") || exit 1
trap 'rm -f "$out"' EXIT INT TERM

cd "$root" || exit 1
SMTPVAULT_BIN=$bin "$PY" -m pytest "$@" tests/integration >"$out" 2>&1
rc=$?
cat "$out"

# pytest's last line, e.g. "2 failed, 40 passed, 1 skipped in 12.3s".
summary=$(grep -E '^(=+ )?[0-9]+ (passed|failed|error|errors|skipped|deselected|xfailed|xpassed)' "$out" | tail -n 1)
count() {
	echo "$summary" | grep -Eo "[0-9]+ $1" | head -n 1 | cut -d' ' -f1
}
p=$(count passed)
f=$(count failed)
e=$(count 'errors?')
: "${p:=0}" "${f:=0}" "${e:=0}"
f=$((f + e))

case $rc in
0) ;;
5)
	echo "integration: no tests collected"
	[ "$f" -eq 0 ] && f=1
	;;
*)
	[ "$f" -eq 0 ] && f=1	# pytest itself failed (usage, internal error)
	;;
esac

echo "integration: $p passed, $f failed"
[ "$rc" -eq 0 ]
