#!/bin/bash
# make bench-vault: unlock time of the vault for each KDF profile, and the
# time of one rotation (open for update, re-encrypt, atomic write). Each
# figure is the median of RUNS runs of the real CLI, so process start-up is
# included, as a user would see it.
set -euo pipefail
bin=$(readlink -f "${1:-build/smtpvault}")
runs=${RUNS:-5}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
umask 077

median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
timeit() {	# prints seconds for one run of "$@" with stdin from $STDIN
	local t0 t1
	t0=$(date +%s%N)
	"$@" < "${STDIN:-/dev/null}" > /dev/null
	t1=$(date +%s%N)
	awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.3f\n", (b - a) / 1e9 }'
}

printf 'bench-passphrase-not-secret\n' > "$tmp/pass"
printf 'abcdefghijklmnop\n' > "$tmp/pw"
echo "smtpvault vault benchmark: $(uname -m), $(nproc) cores, median of $runs runs"
printf '%-12s %12s %12s\n' "kdf" "unlock (s)" "rotate (s)"
for kdf in interactive moderate sensitive; do
	conf="$tmp/$kdf.conf"
	printf '[vault]\npath = %s/%s.vault\npassphrase_file = %s/pass\n' "$tmp" "$kdf" "$tmp" > "$conf"
	"$bin" -c "$conf" init --kdf "$kdf" > /dev/null
	STDIN="$tmp/pw" "$bin" -c "$conf" account add bench@example.com < "$tmp/pw" > /dev/null
	unlock=$(for _ in $(seq "$runs"); do timeit "$bin" -c "$conf" account list; done | median)
	rotate=$(for _ in $(seq "$runs"); do STDIN="$tmp/pw" timeit "$bin" -c "$conf" \
		account rotate bench@example.com --no-verify; done | median)
	printf '%-12s %12s %12s\n' "$kdf" "$unlock" "$rotate"
done
