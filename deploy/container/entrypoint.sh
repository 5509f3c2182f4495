#!/bin/sh
# entrypoint.sh: start smtpvault in the container. No arguments means
# "serve"; other arguments are a smtpvault command, run as the image's user:
#   docker compose run --rm smtpvault init
#   docker compose run --rm smtpvault account add team@example.com
# The vault passphrase is the secret file $CREDENTIALS_DIRECTORY/smtpvault-passphrase
# (CREDENTIALS_DIRECTORY=/run/secrets in the image), which smtpvault reads itself.
set -eu
umask 077

bin=${SMTPVAULT_BIN:-/usr/sbin/smtpvault}
conf=${SMTPVAULT_CONFIG:-/etc/smtpvault/smtpvault.conf}
secret=${CREDENTIALS_DIRECTORY:-/run/secrets}/smtpvault-passphrase

if [ "$#" -eq 0 ]; then
	set -- serve
fi

if [ "$1" = serve ]; then
	if [ ! -r "$conf" ]; then
		echo "smtpvault-entrypoint: cannot read the configuration $conf; mount one there" >&2
		exit 2
	fi
	# smtpvault explains a missing key itself; this only adds the container's side.
	if [ ! -e "$secret" ]; then
		echo "smtpvault-entrypoint: note: no secret $secret; unless $conf names a" \
		    "passphrase_file or key_file, give the passphrase as that secret file" >&2
	elif [ ! -r "$secret" ]; then
		echo "smtpvault-entrypoint: $secret is not readable by uid $(id -u);" \
		    "chown it to that uid and chmod 600 it on the host" >&2
		exit 2
	fi
fi
exec "$bin" "$@"
