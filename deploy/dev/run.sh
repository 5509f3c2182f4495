#!/bin/sh
# make run: start the daemon on the development config in deploy/dev/. On
# first use it creates a throw-away key file, vault and dummy account under
# deploy/dev/state/ (ignored by git). Delete that folder to start afresh.
set -eu
bin=$(cd "$(dirname "${1:-build/smtpvault}")" && pwd)/$(basename "${1:-build/smtpvault}")
dir=$(cd "$(dirname "$0")" && pwd)
conf="$dir/smtpvault.conf"
state="$dir/state"

umask 077
# Run as root (SPEC: make run on a fresh machine), serve would drop to the
# smtpvault user, who cannot reach this checkout; the dev daemon stays root.
export SMTPVAULT_ALLOW_ROOT=1
mkdir -p "$state" "$state/spool"
if [ ! -s "$state/vault.key" ]; then
	# 32 random bytes as 64 hex digits; never leaves this machine.
	od -An -N32 -tx1 /dev/urandom | tr -d ' \n' > "$state/vault.key"
	echo >> "$state/vault.key"
fi
if [ ! -f "$state/vault" ]; then
	"$bin" -c "$conf" init
	# A dummy App Password: the dev upstream is the real smtp.gmail.com, which
	# will refuse it. Rotate it with a real one to send for real:
	#   build/smtpvault -c deploy/dev/smtpvault.conf account rotate dev@example.com
	printf 'devx devx devx devx\n' | "$bin" -c "$conf" account add dev@example.com
fi
echo "smtpvault dev: SMTP on 127.0.0.1:2525 and [::1]:2525, state in $state; Ctrl-C stops it"
exec "$bin" -c "$conf" serve
