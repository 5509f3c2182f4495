/*
 * fuzz_vault_file.c: libFuzzer harness for opening a vault file
 * (vault_open() of vault/vault.h): header checks, AEAD, payload parser,
 * through the real file path. The vault module has no in-memory entry
 * point, so each input is written to a file in a private temporary
 * directory (on /dev/shm when there is one) and opened with a fixed key file.
 *
 * Input: 1 byte of mode, then
 *  - mode bit 0 clear: the bytes of the file as they are. Garbage must be
 *    refused with one line naming the file, never crash or hang; only a
 *    correctly sealed file (the seed made by the code itself) opens.
 *  - mode bit 0 set: 16 bytes of salt, 24 of nonce, then a payload that the
 *    harness seals under the fixed key with a valid header, so that it gets
 *    past the AEAD check: vault_open() must then agree with
 *    vault_payload_parse() on the same payload, and on success show the
 *    same number of accounts and admin users.
 * Mode bit 1 opens for update (with the lock file).
 */
#include <errno.h>
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vault.h"
#include "vault_internal.h"

#include "fuzz_util.h"
#include "fuzz_vault.h"

static char dir[256], vfile[300], key_path[300];
static struct vault_keysrc keysrc;
static int ready;

static void
cleanup(void)
{
	char lock[320];

	snprintf(lock, sizeof(lock), "%s.lock", vfile);
	unlink(vfile);
	unlink(lock);
	unlink(key_path);
	rmdir(dir);
}

static void
setup(void)
{
	unsigned char key[VAULT_KEY_BYTES];
	const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" :
	    (getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp");
	char err[512];
	int fd;

	if (ready)
		return;
	snprintf(dir, sizeof(dir), "%s/smtpvault-fuzz.XXXXXX", base);
	if (mkdtemp(dir) == NULL) {
		perror("mkdtemp");
		abort();
	}
	snprintf(vfile, sizeof(vfile), "%s/vault", dir);
	snprintf(key_path, sizeof(key_path), "%s/key", dir);
	fuzz_vault_key(key);
	if ((fd = open(key_path, O_WRONLY | O_CREAT | O_EXCL, 0600)) == -1 ||
	    write(fd, key, sizeof(key)) != (ssize_t)sizeof(key) || close(fd) != 0) {
		perror(key_path);
		abort();
	}
	if (vault_keysrc_from_file(key_path, 1, &keysrc, err, sizeof(err)) != 0) {
		fprintf(stderr, "fuzz_vault_file: %s\n", err);
		abort();
	}
	atexit(cleanup);
	ready = 1;
}

static void
write_file(const uint8_t *buf, size_t len)
{
	int fd = open(vfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	size_t off = 0;
	ssize_t n;

	if (fd == -1)
		abort();
	while (off < len) {
		if ((n = write(fd, buf + off, len - off)) <= 0)
			abort();
		off += (size_t)n;
	}
	close(fd);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char salt[VAULT_SALT_BYTES] = { 0 }, nonce[VAULT_NONCE_BYTES] = { 0 };
	struct vault *v = NULL;
	struct vault_data d;
	char err[1024], why[512];
	uint8_t *file = NULL;
	size_t flen, i;
	int mode, rc, parsed = -1;

	setup();
	mode = (int)fuzz_take(&data, &size, 1);
	if (mode & 1) {
		for (i = 0; i < sizeof(salt); i++)
			salt[i] = (unsigned char)fuzz_take(&data, &size, 1);
		for (i = 0; i < sizeof(nonce); i++)
			nonce[i] = (unsigned char)fuzz_take(&data, &size, 1);
		if ((file = fuzz_vault_seal(data, size, salt, nonce, &flen)) == NULL)
			abort();
		write_file(file, flen);
		free(file);
		parsed = vault_payload_parse(data, size, &d, why, sizeof(why));
	} else {
		write_file(data, size);
	}

	err[0] = '\0';
	rc = vault_open(vfile, &keysrc, (mode & 2) != 0, &v, err, sizeof(err));
	if (rc != 0) {
		FUZZ_CHECK(rc == -1 && v == NULL, "rc %d", rc);
		FUZZ_CHECK(err[0] != '\0' && strchr(err, '\n') == NULL,
		    "refusal is not one line: \"%s\"", err);
		FUZZ_CHECK(strstr(err, vfile) != NULL, "refusal does not name the "
		    "file: %s", err);
	} else {
		FUZZ_CHECK(v != NULL, "no handle");
	}
	if (mode & 1) {
		FUZZ_CHECK((rc == 0) == (parsed == 0), "vault_open says %d, the payload "
		    "parser %d (%s / %s)", rc, parsed, err, parsed ? why : "");
		if (parsed == 0) {
			FUZZ_CHECK(vault_account_count(v) == d.n_accounts &&
			    vault_admin_count(v) == d.n_admins, "opened vault differs");
			vault_data_free(&d);
		}
	}
	vault_close(v);
	return 0;
}
