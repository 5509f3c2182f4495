#!/bin/sh
# test-all.sh: what `make test` (and so CI) runs, after the normal and the
# ASan+UBSan builds exist:
#   1. unit + integration tests against build/
#   2. the same against build-asan/ (any sanitizer report fails the run)
#   3. the unit tests under valgrind memcheck (errors and leaks fail)
#   4. every fuzz harness once over its committed corpus (when present)
# Prints each stage's totals, then a totals block whose very last line is
# "N passed, N failed". Exits non-zero when anything failed.

here=$(cd "$(dirname "$0")" && pwd) || exit 1
root=$(cd "$here/.." && pwd) || exit 1
cd "$root" || exit 1
out=$(mktemp "${TMPDIR:-/tmp}/smtpvault-test-all.XXXXXX") || exit 1
rcfile=$(mktemp "${TMPDIR:-/tmp}/smtpvault-test-all-rc.XXXXXX") || exit 1
trap 'rm -f "$out" "$rcfile"' EXIT INT TERM

summary=""
all_p=0
all_f=0

# The last "N passed, N failed" line of the stage's output, as "N M".
stage_totals() {
	sed -n 's/^\([a-z]*: \)\{0,1\}\([0-9][0-9]*\) passed, \([0-9][0-9]*\) failed$/\2 \3/p' \
	    "$out" | tail -n 1
}

# stage NAME COMMAND...: run it, show and keep its output, record its totals.
stage() {
	name=$1
	shift
	{
		"$@" 2>&1
		echo $? >"$rcfile"
	} | tee "$out"
	record "$name" "$(cat "$rcfile")"
}

record() {	# NAME RC
	set -- "$1" "$2" $(stage_totals)
	p=${3:-0}
	f=${4:-0}
	# A stage that failed without saying so counts as one failure.
	if [ "$2" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
	fi
	all_p=$((all_p + p))
	all_f=$((all_f + f))
	summary="$summary
$1: $p passed, $f failed"
}

echo "==== stage 1: unit + integration (build/)"
stage build "$here/run-all.sh" build

echo "==== stage 2: unit + integration under ASan+UBSan (build-asan/)"
# The sanitizer pass leaves out the files that test no C code of ours (the
# install tree, the fake upstream, the browser page) or only privilege drops.
stage asan env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:strict_string_checks=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    SMTPVAULT_IT_IGNORE="test_install.py test_fakegmail.py test_admin_browser.py test_deploy.py" \
    "$here/run-all.sh" build-asan

echo "==== stage 3: unit tests under valgrind"
stage valgrind env SMTPVAULT_UNIT_WRAPPER="valgrind -q --error-exitcode=1 --leak-check=full \
--errors-for-leak-kinds=definite,indirect" "$here/run-unit.sh" build/tests/test_*

if [ -f tests/fuzz/fuzz.mk ]; then
	echo "==== stage 4: fuzz harnesses over their corpora"
	stage fuzz make --no-print-directory -f Makefile -f tests/fuzz/fuzz.mk fuzz-regress
fi

echo
echo "==== totals$summary"
echo "$all_p passed, $all_f failed"
[ "$all_f" -eq 0 ]
