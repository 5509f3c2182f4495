#!/bin/sh
# run-unit.sh BIN...: run each cmocka test program, show cmocka's own
# per-suite output as it comes, and end with one line "unit: N passed,
# N failed". Exits non-zero when any test fails or any program dies without
# a summary (a crash, a sanitizer abort, a hang past the time limit), which
# counts as one failed test.
#
# SMTPVAULT_UNIT_TIMEOUT: seconds one program may run (default 600), so
# that a hung test fails the run instead of stalling CI.

limit=${SMTPVAULT_UNIT_TIMEOUT:-600}
passed=0
failed=0
out=$(mktemp "${TMPDIR:-/tmp}/smtpvault-unit.XXXXXX") || exit 1
rcfile=$(mktemp "${TMPDIR:-/tmp}/smtpvault-unit-rc.XXXXXX") || exit 1
trap 'rm -f "$out" "$rcfile"' EXIT INT TERM

for bin in "$@"; do
	name=$(basename "$bin")
	if [ ! -x "$bin" ]; then
		echo "unit: $name: not an executable: $bin"
		failed=$((failed + 1))
		continue
	fi
	echo "== $name"
	# cmocka prints to stdout by default; force its standard format so the
	# totals below can be read from it.
	{
		# SMTPVAULT_UNIT_WRAPPER runs each program under a tool (valgrind).
		CMOCKA_MESSAGE_OUTPUT=stdout timeout -k 10 "$limit" ${SMTPVAULT_UNIT_WRAPPER:-} "$bin" </dev/null 2>&1
		echo $? >"$rcfile"
	} | tee "$out"
	rc=$(cat "$rcfile")
	p=$(sed -n 's/^\[  PASSED  \] \([0-9][0-9]*\) test(s)\..*/\1/p' "$out" | tail -n 1)
	f=$(sed -n 's/^\[  FAILED  \] \([0-9][0-9]*\) test(s), listed below:.*/\1/p' "$out" | tail -n 1)
	: "${p:=0}" "${f:=0}"
	if [ "$rc" = 124 ] || [ "$rc" = 137 ]; then
		echo "unit: $name did not finish within ${limit}s"
		f=$((f + 1))
	elif [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		# Died, or failed without a cmocka summary: count it once.
		echo "unit: $name exited with status $rc"
		f=1
	fi
	passed=$((passed + p))
	failed=$((failed + f))
done

echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
