#!/bin/bash
# make bench: smtpvault against Postfix on this machine (issue 10).
#
#   tests/bench/run.sh [BUILD_DIR] [bench.py options]
#       e.g. tests/bench/run.sh build --rounds 5 --only throughput,rss
#
# Needs root (a private Postfix instance, cpuacct cgroups, up to 5,000
# connections) and Debian's postfix package, which it installs when missing
# without configuring or starting the system's instance. Builds nothing
# itself: `make bench` builds BUILD_DIR/smtpvault, BUILD_DIR/bench/sink and
# BUILD_DIR/bench/loadgen first. Everything runs on 127.0.0.1 under one
# temporary directory; every server it starts is stopped on exit (and dies
# with it, by PR_SET_PDEATHSIG, if it is killed). The table goes to stdout and
# to tests/bench/results.md.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
build=build
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
	build=$1
	shift
fi
build=$(cd "$build" && pwd)

if [ "$(id -u)" != 0 ]; then
	echo "bench: run as root (private Postfix instance, cgroups, many sockets)" >&2
	exit 2
fi
for f in "$build/smtpvault" "$build/bench/sink" "$build/bench/loadgen"; do
	[ -x "$f" ] || { echo "bench: $f missing (run make bench)" >&2; exit 2; }
done

# Postfix from Debian, never configured or started as the system's MTA.
if ! command -v postfix > /dev/null || [ ! -x /usr/sbin/smtp-source ]; then
	echo "bench: installing postfix (No configuration)" >&2
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix libsasl2-modules > /dev/null
	# "No configuration" starts nothing; make sure of it.
	if [ -f /etc/postfix/main.cf ] && postfix status > /dev/null 2>&1; then
		postfix stop > /dev/null 2>&1 || true
	fi
fi

tmp=$(mktemp -d /tmp/smtpvault-bench.XXXXXX)
# Postfix's unprivileged processes must reach their instance directories.
chmod 0755 "$tmp"
cleanup() {
	status=$?
	trap - EXIT INT TERM
	for d in "$tmp"/postfix-*; do
		if [ -d "$d/etc" ]; then
			"$root/tests/bench/postfix.sh" stop "$d" || true
		fi
	done
	for cg in /sys/fs/cgroup/cpuacct/smtpvault-bench-"$(basename "$tmp")"-*; do
		[ -d "$cg" ] || continue
		while read -r pid; do
			echo "$pid" > /sys/fs/cgroup/cpuacct/cgroup.procs 2>/dev/null || true
		done < "$cg/cgroup.procs"
		rmdir "$cg" 2>/dev/null || true
	done
	rm -rf "$tmp"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ulimit -n "$(ulimit -Hn)"
cmd="make bench"
[ $# -eq 0 ] || cmd="tests/bench/run.sh $(basename "$build") $*"
# Everything the benchmark starts (both systems, the sink, the load) runs at
# nice -10, so that other users of a shared machine disturb it less.
nice -n "${BENCH_NICE:--10}" /usr/bin/python3 "$root/tests/bench/bench.py" --build "$build" --tmp "$tmp" \
	--results "$root/tests/bench/results.md" --command "$cmd" "$@"
