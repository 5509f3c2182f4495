/*
 * seedgen.c: make the vault seeds of the fuzzing corpus with the vault code
 * itself (`make fuzz-seeds`), so that the harnesses start from files and
 * payloads the product really writes, under the fixed fuzzing key of
 * fuzz_vault.h, plus the classic ways such a file gets damaged.
 *
 *	seedgen CORPUS_DIR
 *
 * writes CORPUS_DIR/vault_payload/ and CORPUS_DIR/vault_file/ seeds. The
 * vault_file harness reads a mode byte first (see fuzz_vault_file.c); the
 * seeds here carry it.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "vault.h"
#include "vault_internal.h"

#include "fuzz_vault.h"

static const char *outdir;

static void
die(const char *what, const char *err)
{
	fprintf(stderr, "seedgen: %s: %s\n", what, err);
	exit(1);
}

/* CORPUS/sub/name = [mode byte] + a + b */
static void
put(const char *sub, const char *name, int mode, const void *a, size_t alen,
    const void *b, size_t blen)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", outdir, sub);
	if (mkdir(path, 0755) == -1 && errno != EEXIST)
		die(path, strerror(errno));
	snprintf(path, sizeof(path), "%s/%s/%s", outdir, sub, name);
	if ((f = fopen(path, "wb")) == NULL)
		die(path, strerror(errno));
	if (mode >= 0)
		fputc(mode, f);
	if (alen > 0)
		fwrite(a, 1, alen, f);
	if (blen > 0)
		fwrite(b, 1, blen, f);
	if (fclose(f) != 0)
		die(path, strerror(errno));
	printf("%s\n", path);
}

static uint8_t *
read_file(const char *path, size_t *len)
{
	uint8_t *buf = malloc(VAULT_FILE_MAX);
	FILE *f = fopen(path, "rb");

	if (buf == NULL || f == NULL)
		die(path, "cannot read");
	*len = fread(buf, 1, VAULT_FILE_MAX, f);
	fclose(f);
	return buf;
}

static uint8_t *
payload_of(const struct vault_data *d, uint64_t generation, size_t *len)
{
	uint8_t *p = NULL;

	if (vault_payload_encode(d, generation, NULL, 0, len) != 0 ||
	    (p = malloc(*len)) == NULL ||
	    vault_payload_encode(d, generation, p, *len, len) != 0)
		die("vault_payload_encode", "failed");
	return p;
}

int
main(int argc, char **argv)
{
	static const unsigned char pw1[] = "abcdefghijklmnop", pw2[] = "qrstuvwxyzabcdef";
	static const unsigned char pw3[] = "ponmlkjihgfedcba";
	unsigned char key[VAULT_KEY_BYTES], salt[VAULT_SALT_BYTES], nonce[VAULT_NONCE_BYTES];
	char dir[] = "/tmp/smtpvault-seedgen.XXXXXX", vpath[256], kpath[256], lpath[300];
	char err[512];
	struct vault_keysrc src;
	struct vault_account t;
	struct vault_data empty;
	struct vault *v;
	uint8_t *file, *payload, *copy;
	size_t flen, plen;
	uint32_t ver;
	time_t now = 1700000000;
	int fd;

	if (argc != 2) {
		fprintf(stderr, "usage: seedgen CORPUS_DIR\n");
		return 2;
	}
	outdir = argv[1];
	if (sodium_init() < 0 || mkdtemp(dir) == NULL)
		die("setup", "cannot initialise");
	snprintf(vpath, sizeof(vpath), "%s/vault", dir);
	snprintf(kpath, sizeof(kpath), "%s/key", dir);
	snprintf(lpath, sizeof(lpath), "%s.lock", vpath);
	fuzz_vault_key(key);
	if ((fd = open(kpath, O_WRONLY | O_CREAT | O_EXCL, 0600)) == -1 ||
	    write(fd, key, sizeof(key)) != (ssize_t)sizeof(key) || close(fd) != 0)
		die(kpath, strerror(errno));
	if (vault_keysrc_from_file(kpath, 1, &src, err, sizeof(err)) != 0)
		die("key", err);

	/* An empty vault, as `smtpvault init` makes it. */
	if (vault_create(vpath, &src, VAULT_KDF_KEYFILE, err, sizeof(err)) != 0)
		die("vault_create", err);
	file = read_file(vpath, &flen);
	put("vault_file", "valid-empty", 0, file, flen, NULL, 0);
	free(file);

	/* Two accounts (aliases, an upstream override, two credential
	 * versions) and an admin user. */
	if (vault_open(vpath, &src, 1, &v, err, sizeof(err)) != 0)
		die("vault_open", err);
	memset(&t, 0, sizeof(t));
	strcpy(t.address, "team@example.com");
	strcpy(t.aliases[0], "sales@example.com");
	strcpy(t.aliases[1], "info@example.net");
	t.n_aliases = 2;
	t.upstream_tls = -1;
	if (vault_account_add(v, &t, pw1, 16, now, err, sizeof(err)) != 0 ||
	    vault_account_rotate(v, "team@example.com", pw3, 16, now + 60, &ver, err,
	    sizeof(err)) != 0)
		die("team@example.com", err);
	memset(&t, 0, sizeof(t));
	strcpy(t.address, "ops@example.com");
	t.daily_limit = 500;
	t.daily_rcpt_limit = 1500;
	strcpy(t.upstream_host, "smtp.example.net");
	t.upstream_port = 465;
	t.upstream_tls = 1;
	if (vault_account_add(v, &t, pw2, 16, now, err, sizeof(err)) != 0)
		die("ops@example.com", err);
	if (vault_admin_add(v, "admin", (const unsigned char *)"correct horse", 13, now,
	    err, sizeof(err)) != 0)
		die("admin", err);
	if (vault_save(v, err, sizeof(err)) != 0)
		die("vault_save", err);
	payload = payload_of(&v->d, vault_generation(v), &plen);
	vault_close(v);

	file = read_file(vpath, &flen);
	put("vault_file", "valid-two-accounts", 0, file, flen, NULL, 0);
	put("vault_file", "valid-two-accounts-for-update", 2, file, flen, NULL, 0);
	/* Damaged copies: each must be refused with one clear line. */
	put("vault_file", "truncated-in-header", 0, file, VAULT_HEADER_LEN - 1, NULL, 0);
	put("vault_file", "truncated-in-tag", 0, file, flen - 1, NULL, 0);
	put("vault_file", "header-only", 0, file, VAULT_HEADER_LEN, NULL, 0);
	if ((copy = malloc(flen)) == NULL)
		die("malloc", "out of memory");
	memcpy(copy, file, flen);
	copy[flen / 2] ^= 0x01;
	put("vault_file", "bitflip-ciphertext", 0, copy, flen, NULL, 0);
	memcpy(copy, file, flen);
	copy[0] = 'X';
	put("vault_file", "bad-magic", 0, copy, flen, NULL, 0);
	memcpy(copy, file, flen);
	copy[VAULT_MAGIC_LEN] = VAULT_FORMAT_VERSION + 1;
	put("vault_file", "newer-format", 0, copy, flen, NULL, 0);
	memcpy(copy, file, flen);
	copy[VAULT_MAGIC_LEN + 2] = VAULT_KDF_SENSITIVE;	/* passphrase KDF, ... */
	memset(copy + VAULT_MAGIC_LEN + 3, 0xff, 16);		/* ... absurd limits */
	put("vault_file", "kdf-limits-huge", 0, copy, flen, NULL, 0);
	memcpy(copy, file, flen);
	copy[VAULT_MAGIC_LEN + 2] = VAULT_KDF_MODERATE;	/* sane limits, wrong key kind */
	memset(copy + VAULT_MAGIC_LEN + 3, 0, 16);
	copy[VAULT_MAGIC_LEN + 3] = 3;
	copy[VAULT_MAGIC_LEN + 11 + 3] = 0x10;			/* 256 MiB */
	put("vault_file", "passphrase-vault", 0, copy, flen, NULL, 0);
	free(copy);
	free(file);

	/* The payloads, and the same sealed by the harness's own sealer. */
	put("vault_payload", "two-accounts-admin", -1, payload, plen, NULL, 0);
	memset(salt, 0x5a, sizeof(salt));
	memset(nonce, 0xa5, sizeof(nonce));
	if ((copy = malloc(sizeof(salt) + sizeof(nonce))) == NULL)
		die("malloc", "out of memory");
	memcpy(copy, salt, sizeof(salt));
	memcpy(copy + sizeof(salt), nonce, sizeof(nonce));
	put("vault_file", "sealed-two-accounts", 1, copy, sizeof(salt) + sizeof(nonce),
	    payload, plen);
	free(payload);
	if (vault_data_init(&empty) != 0)
		die("vault_data_init", "failed");
	payload = payload_of(&empty, 1, &plen);
	put("vault_payload", "empty", -1, payload, plen, NULL, 0);
	put("vault_file", "sealed-empty", 1, copy, sizeof(salt) + sizeof(nonce),
	    payload, plen);
	vault_data_free(&empty);
	free(payload);
	free(copy);

	vault_keysrc_wipe(&src);
	unlink(vpath);
	unlink(lpath);
	unlink(kpath);
	rmdir(dir);
	return 0;
}
