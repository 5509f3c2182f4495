#!/bin/sh
# deps.sh: make sure the Debian packages needed to build and test smtpvault
# are installed. Nothing missing: silent, exit 0. Missing and root: install
# them with apt-get (non-interactive). Missing and not root: print the one
# apt-get line to run and exit 2.

# Build: compiler, pkg-config and the libraries the Makefile links.
# Test: cmocka, pytest with aiosmtpd and cryptography (the fake Gmail and its
# test CA), real SMTP clients (swaks, curl), valgrind, clang + its runtime
# for the ASan/UBSan build.
# Admin page browser tests: headless Chromium driven by Selenium.
# Deploy checks (test_install.py, test_deploy.py): man page lint with mandoc
# and groff-base, the container entry point with the shellcheck package,
# systemd-analyze verify and security, sysusers and tmpfiles from systemd,
# logrotate, and python3-yaml for compose.yaml.
SMTPVAULT_PACKAGES="build-essential pkg-config libsodium-dev libssl-dev libmicrohttpd-dev libevent-dev libjansson-dev libinih-dev libcmocka-dev libbsd-dev libseccomp-dev python3 python3-pytest python3-pytest-timeout python3-aiosmtpd python3-cryptography swaks curl openssl valgrind clang libclang-rt-14-dev mandoc groff-base shellcheck systemd logrotate python3-yaml python3-selenium chromium chromium-driver"

missing=""
for pkg in $SMTPVAULT_PACKAGES; do
	status=$(dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null || true)
	if [ "$status" != "installed" ]; then
		missing="$missing $pkg"
	fi
done
missing=${missing# }

[ -z "$missing" ] && exit 0

if [ "$(id -u)" -ne 0 ]; then
	echo "smtpvault: missing packages; run as root: apt-get install -y $missing" >&2
	exit 2
fi

echo "smtpvault: installing missing packages: $missing" >&2

# Refresh the package lists only when apt does not know a candidate for
# every missing package (a fresh container has empty lists).
need_update=0
for pkg in $missing; do
	cand=$(apt-cache policy "$pkg" 2>/dev/null | awk '/Candidate:/ { print $2 }')
	if [ -z "$cand" ] || [ "$cand" = "(none)" ]; then
		need_update=1
		break
	fi
done
if [ "$need_update" -eq 1 ]; then
	if ! apt-get update >&2; then
		echo "smtpvault: apt-get update failed" >&2
		exit 1
	fi
fi

# shellcheck disable=SC2086 # word splitting of the package list is intended
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $missing </dev/null >&2; then
	echo "smtpvault: apt-get install failed for: $missing" >&2
	exit 1
fi
exit 0
