#!/bin/bash
# make bench-queue: durable throughput of delivery = queue against Postfix
# (issue 5). Not part of `make test`.
#
#   tests/bench/queue.sh [BUILD_DIR] [queue_bench.py options]
#       e.g. tests/bench/queue.sh build --conns 50 --secs 10 --rounds 3
#
# Needs root (a private Postfix instance on another port) and Debian's
# postfix package, which it installs when missing with debconf "No
# configuration", so that no system instance is configured or started. It
# builds nothing itself: `make bench-queue` builds BUILD_DIR/smtpvault and
# BUILD_DIR/bench/{sink,loadgen} first. Everything runs on 127.0.0.1 under
# one temporary directory; every server it starts is stopped on exit. The
# table goes to stdout.
set -eu

root=$(cd "$(dirname "$0")/../.." && pwd)
build=build
if [ $# -gt 0 ] && [ "${1#-}" = "$1" ]; then
	build=$1
	shift
fi
build=$(cd "$build" && pwd)

if [ "$(id -u)" != 0 ]; then
	echo "bench-queue: run as root (a private Postfix instance)" >&2
	exit 2
fi
for f in "$build/smtpvault" "$build/bench/sink" "$build/bench/loadgen"; do
	[ -x "$f" ] || { echo "bench-queue: $f missing (run make bench-queue)" >&2; exit 2; }
done

if ! command -v postfix > /dev/null; then
	echo "bench-queue: installing postfix (No configuration)" >&2
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q postfix libsasl2-modules > /dev/null
	if [ -f /etc/postfix/main.cf ] && postfix status > /dev/null 2>&1; then
		postfix stop > /dev/null 2>&1 || true
	fi
fi

tmp=$(mktemp -d /tmp/smtpvault-bench-queue.XXXXXX)
chmod 0755 "$tmp"	# Postfix's unprivileged processes reach their directories
cleanup() {
	status=$?
	trap - EXIT INT TERM
	for d in "$tmp"/postfix-*; do
		[ -d "$d/etc" ] && "$root/tests/bench/postfix.sh" stop "$d" || true
	done
	rm -rf "$tmp"
	exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

ulimit -n "$(ulimit -Hn)"
/usr/bin/python3 "$root/tests/bench/queue_bench.py" --build "$build" --tmp "$tmp" "$@"
