#!/bin/bash
# run.sh: run the libFuzzer harnesses built by tests/fuzz/fuzz.mk.
#
#   run.sh fuzz SECONDS BUILD NAME...   each harness for SECONDS of wall time,
#                                       one at a time (never two fuzzers at
#                                       once); new inputs go to BUILD/corpus/NAME
#   run.sh regress BUILD NAME...        each harness once over every file of
#                                       tests/fuzz/corpus/NAME/
#
# Prints one line per harness: executions, CPU seconds (user + system of the
# fuzzer process) and "no finding", or the path of the saved crash input.
# The lines are also appended to BUILD/fuzz-history.tsv (date, harness,
# seconds, executions, CPU seconds, result). Exits 1 when any harness found
# something or failed to run.

set -u
here=$(cd "$(dirname "$0")" && pwd) || exit 2
seeds_root=$here/corpus

# Sanitizer reports must fail the run and say where.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=1:detect_leaks=1:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

usage() {
	echo "usage: $0 fuzz SECONDS BUILD NAME... | $0 regress BUILD NAME..." >&2
	exit 2
}

[ $# -ge 1 ] || usage
mode=$1
shift
case $mode in
fuzz)
	[ $# -ge 3 ] || usage
	seconds=$1
	build=$2
	shift 2
	;;
regress)
	[ $# -ge 2 ] || usage
	build=$1
	shift
	;;
*)
	usage
	;;
esac

failed=0
history=$build/fuzz-history.tsv

# CPU seconds (user + system) of the command, into $cpu; its status into $rc.
timed() {
	local tf
	tf=$(mktemp "${TMPDIR:-/tmp}/fuzz-time.XXXXXX") || exit 2
	/usr/bin/time -f '%U %S' -o "$tf" "$@"
	rc=$?
	cpu=$(awk 'END { printf "%.1f", $1 + $2 }' "$tf")
	rm -f "$tf"
}

regress_ok=0
regress_bad=0
for name in "$@"; do
	bin=$build/fuzz_$name
	seeds=$seeds_root/$name
	log=$build/logs/$name.$mode.log
	mkdir -p "$build/logs"
	if [ ! -x "$bin" ]; then
		echo "fuzz_$name: not built ($bin)"
		failed=1
		continue
	fi
	if [ "$mode" = regress ]; then
		mapfile -t files < <(find "$seeds" -type f 2>/dev/null | sort)
		if [ ${#files[@]} -eq 0 ]; then
			echo "fuzz_$name: no seeds in $seeds"
			failed=1
			continue
		fi
		timed "$bin" -rss_limit_mb=2048 -timeout=25 "${files[@]}" >"$log" 2>&1
		if [ $rc -eq 0 ]; then
			printf 'fuzz_%s: %d corpus inputs, CPU %ss, no finding\n' \
			    "$name" ${#files[@]} "$cpu"
			regress_ok=$((regress_ok + 1))
		else
			regress_bad=$((regress_bad + 1))
			printf 'fuzz_%s: FAILED over its corpus (exit %d); log %s\n' \
			    "$name" $rc "$log"
			grep -E 'Running:|ERROR|SUMMARY|property broken' "$log" | tail -n 8 | \
			    sed 's/^/    /'
			failed=1
		fi
		continue
	fi

	work=$build/corpus/$name
	crashes=$build/crashes/$name
	mkdir -p "$work" "$crashes"
	timed "$bin" -max_total_time="$seconds" -print_final_stats=1 \
	    -rss_limit_mb=2048 -timeout=25 -artifact_prefix="$crashes/" \
	    "$work" "$seeds" >"$log" 2>&1
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
	execs=${execs:-?}
	if [ $rc -eq 0 ]; then
		result="no finding"
		printf 'fuzz_%s: %s s, %s executions, CPU %ss, no finding\n' \
		    "$name" "$seconds" "$execs" "$cpu"
	else
		artifact=$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)
		result="FINDING ${artifact:-see $log}"
		printf 'fuzz_%s: %s executions, CPU %ss, FINDING: %s (log %s)\n' \
		    "$name" "$execs" "$cpu" "${artifact:-none saved}" "$log"
		grep -E 'ERROR|SUMMARY|property broken' "$log" | head -n 4 | sed 's/^/    /'
		failed=1
	fi
	printf '%s\tfuzz_%s\t%s\t%s\t%s\t%s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$name" \
	    "$seconds" "$execs" "$cpu" "$result" >>"$history"
done
if [ "$mode" = regress ]; then
	# Harnesses are the tests here: one line for test-all.sh's totals.
	echo "fuzz: $regress_ok passed, $regress_bad failed"
fi
exit $failed
