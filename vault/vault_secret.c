/*
 * vault_secret.c: secrets in libsodium guarded memory, and the two ways a
 * vault key reaches the process: a passphrase or key file, or a passphrase
 * typed at the terminal. Files are read with read(2) straight into guarded
 * memory so that no stdio buffer ever holds a copy.
 */
#include "vault_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <bsd/readpassphrase.h>

#define KEY_HEX_LEN		(2 * VAULT_KEY_BYTES)
/* Enough to see a hex key's line end and whether anything follows it. */
#define KEYFILE_READ_MAX	(KEY_HEX_LEN + 3)
/* Enough to see a maximal passphrase's "\r\n" and whether it is longer. */
#define PASSFILE_READ_MAX	(VAULT_PASSPHRASE_MAX + 3)
#define TTY_BUF_LEN		(VAULT_PASSPHRASE_MAX + 2)
#define CONFIRM_PROMPT		"Repeat to confirm: "

int
vault_secret_set(struct vault_secret *s, const unsigned char *buf, size_t len)
{
	s->buf = NULL;
	s->len = 0;
	if (sodium_init() < 0 || len == SIZE_MAX || (buf == NULL && len > 0))
		return -1;
	if ((s->buf = sodium_malloc(len + 1)) == NULL)
		return -1;
	if (len > 0)
		memcpy(s->buf, buf, len);
	s->buf[len] = '\0';
	s->len = len;
	return 0;
}

void
vault_secret_wipe(struct vault_secret *s)
{
	if (s == NULL)
		return;
	if (s->buf != NULL) {
		sodium_memzero(s->buf, s->len + 1);
		sodium_free(s->buf);
	}
	s->buf = NULL;
	s->len = 0;
}

void
vault_keysrc_wipe(struct vault_keysrc *src)
{
	if (src == NULL)
		return;
	if (src->material != NULL) {
		sodium_memzero(src->material, src->len);
		sodium_free(src->material);
	}
	src->material = NULL;
	src->len = 0;
	src->is_keyfile = 0;
}

size_t
vault_normalize_app_password(unsigned char *buf, size_t len)
{
	size_t i, o = 0;

	if (buf == NULL)
		return 0;
	for (i = 0; i < len; i++)
		if (buf[i] != ' ' && buf[i] != '\t')
			buf[o++] = buf[i];
	if (o < len)
		sodium_memzero(buf + o, len - o);
	return o;
}

/* Read until EOF or cap bytes; returns the count or -1 with errno set. */
static ssize_t
read_bounded(int fd, unsigned char *buf, size_t cap)
{
	size_t off = 0;
	ssize_t n;

	while (off < cap) {
		n = read(fd, buf + off, cap - off);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		if (n == 0)
			break;
		off += (size_t)n;
	}
	return (ssize_t)off;
}

static int
keysrc_store(struct vault_keysrc *out, int is_keyfile, const unsigned char *buf,
    size_t len)
{
	out->material = sodium_malloc(len > 0 ? len : 1);
	if (out->material == NULL)
		return -1;
	memcpy(out->material, buf, len);
	out->len = len;
	out->is_keyfile = is_keyfile;
	return 0;
}

/* First line, without its "\n" or "\r\n"; the rest of the file is ignored. */
static int
passfile_parse(const char *path, const unsigned char *buf, size_t n,
    struct vault_keysrc *out, char *err, size_t errlen)
{
	const unsigned char *nl = memchr(buf, '\n', n);
	size_t len;

	/* Without a newline in PASSFILE_READ_MAX bytes, len is too long below. */
	len = nl != NULL ? (size_t)(nl - buf) : n;
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	if (len > VAULT_PASSPHRASE_MAX) {
		snprintf(err, errlen, "passphrase in %s is longer than %d bytes", path,
		    VAULT_PASSPHRASE_MAX);
		return -1;
	}
	if (len == 0) {
		snprintf(err, errlen, "passphrase file %s is empty (the passphrase is its "
		    "first line)", path);
		return -1;
	}
	if (keysrc_store(out, 0, buf, len) == -1) {
		snprintf(err, errlen, "cannot read %s: out of guarded memory", path);
		return -1;
	}
	return 0;
}

/* 32 raw bytes, or 64 hex digits and an optional "\n" or "\r\n". */
static int
keyfile_parse(const char *path, const unsigned char *buf, size_t n,
    struct vault_keysrc *out, char *err, size_t errlen)
{
	unsigned char *key = NULL;
	const char *end = NULL;
	size_t keylen = 0, hexlen = n;
	int rc = -1;

	if (n == VAULT_KEY_BYTES) {
		if (keysrc_store(out, 1, buf, n) == -1)
			goto nomem;
		return 0;
	}
	if (hexlen > 0 && buf[hexlen - 1] == '\n') {
		hexlen--;
		if (hexlen > 0 && buf[hexlen - 1] == '\r')
			hexlen--;
	}
	if (hexlen != KEY_HEX_LEN)
		goto bad;
	if ((key = sodium_malloc(VAULT_KEY_BYTES)) == NULL)
		goto nomem;
	if (sodium_hex2bin(key, VAULT_KEY_BYTES, (const char *)buf, hexlen, NULL,
	    &keylen, &end) != 0 || keylen != VAULT_KEY_BYTES ||
	    end != (const char *)buf + hexlen)
		goto bad;
	if (keysrc_store(out, 1, key, VAULT_KEY_BYTES) == -1)
		goto nomem;
	rc = 0;
	goto done;
bad:
	snprintf(err, errlen, "key file %s must hold 32 raw bytes or 64 hex digits", path);
	goto done;
nomem:
	snprintf(err, errlen, "cannot read %s: out of guarded memory", path);
done:
	if (key != NULL)
		sodium_free(key);
	return rc;
}

/*
 * systemd 254 and later hand a credential to the service user through an
 * ACL, which stat() shows as group read (mode 0440); the credentials
 * directory itself is private to the service. Group read is accepted there
 * only; others' bits and any write bit are still refused.
 */
static int
keysrc_is_systemd_credential(const char *path)
{
	const char *dir = getenv("CREDENTIALS_DIRECTORY");
	size_t n;

	if (dir == NULL || dir[0] != '/' || (n = strlen(dir)) == 0)
		return 0;
	while (n > 1 && dir[n - 1] == '/')
		n--;
	return strncmp(path, dir, n) == 0 && path[n] == '/' && strchr(path + n + 1, '/') == NULL;
}

int
vault_keysrc_from_file(const char *path, int is_keyfile, struct vault_keysrc *out,
    char *err, size_t errlen)
{
	unsigned char *buf = NULL;
	size_t cap = is_keyfile ? KEYFILE_READ_MAX : PASSFILE_READ_MAX;
	struct stat st;
	ssize_t n;
	int fd = -1, rc = -1;

	out->material = NULL;
	out->len = 0;
	out->is_keyfile = is_keyfile ? 1 : 0;
	if (sodium_init() < 0) {
		snprintf(err, errlen, "cannot initialise libsodium");
		return -1;
	}
	if (path == NULL) {
		snprintf(err, errlen, "no %s file given", is_keyfile ? "key" : "passphrase");
		return -1;
	}
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) == -1) {
		snprintf(err, errlen, "cannot open %s file %s: %s",
		    is_keyfile ? "key" : "passphrase", path, strerror(errno));
		goto done;
	}
	if (fstat(fd, &st) == -1) {
		snprintf(err, errlen, "cannot stat %s: %s", path, strerror(errno));
		goto done;
	}
	/* A FIFO allows --passphrase-file <(...) and systemd's fd passing. */
	if (!S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode)) {
		snprintf(err, errlen, "%s is not a regular file", path);
		goto done;
	}
	if (st.st_mode & (keysrc_is_systemd_credential(path) ? S_IROTH : S_IRGRP | S_IROTH)) {
		snprintf(err, errlen, "%s is readable by group or others; chmod 600 it", path);
		goto done;
	}
	if (st.st_mode & (S_IWGRP | S_IWOTH)) {
		snprintf(err, errlen, "%s is writable by group or others; chmod 600 it", path);
		goto done;
	}
	if ((buf = sodium_malloc(cap)) == NULL) {
		snprintf(err, errlen, "cannot read %s: out of guarded memory", path);
		goto done;
	}
	if ((n = read_bounded(fd, buf, cap)) == -1) {
		snprintf(err, errlen, "cannot read %s: %s", path, strerror(errno));
		goto done;
	}
	if (is_keyfile)
		rc = keyfile_parse(path, buf, (size_t)n, out, err, errlen);
	else
		rc = passfile_parse(path, buf, (size_t)n, out, err, errlen);
done:
	if (fd != -1)
		close(fd);
	if (buf != NULL)
		sodium_free(buf);	/* sodium_free wipes */
	return rc;
}

/*
 * readpassphrase(3) from libbsd opens /dev/tty, turns echo off, restores the
 * terminal if a signal arrives (and then re-sends it), and reads with read(2)
 * into our guarded buffer.
 */
static int
tty_read(const char *prompt, unsigned char *buf, size_t *len, char *err, size_t errlen)
{
	if (readpassphrase(prompt, (char *)buf, TTY_BUF_LEN, RPP_REQUIRE_TTY) == NULL) {
		if (errno == ENOTTY || errno == ENXIO || errno == ENOENT)
			snprintf(err, errlen, "no terminal to read a passphrase from");
		else
			snprintf(err, errlen, "cannot read a passphrase from the terminal: %s",
			    strerror(errno));
		return -1;
	}
	*len = strlen((const char *)buf);
	if (*len > VAULT_PASSPHRASE_MAX) {
		snprintf(err, errlen, "the passphrase is longer than %d bytes",
		    VAULT_PASSPHRASE_MAX);
		return -1;
	}
	if (*len == 0) {
		snprintf(err, errlen, "empty passphrase");
		return -1;
	}
	return 0;
}

int
vault_keysrc_from_tty(const char *prompt, int confirm, struct vault_keysrc *out,
    char *err, size_t errlen)
{
	unsigned char *first = NULL, *again = NULL;
	size_t len = 0, len2 = 0;
	int rc = -1;

	out->material = NULL;
	out->len = 0;
	out->is_keyfile = 0;
	if (sodium_init() < 0) {
		snprintf(err, errlen, "cannot initialise libsodium");
		return -1;
	}
	if ((first = sodium_malloc(TTY_BUF_LEN)) == NULL ||
	    (again = sodium_malloc(TTY_BUF_LEN)) == NULL) {
		snprintf(err, errlen, "out of guarded memory");
		goto done;
	}
	if (tty_read(prompt != NULL ? prompt : "Passphrase: ", first, &len, err,
	    errlen) == -1)
		goto done;
	if (confirm) {
		if (tty_read(CONFIRM_PROMPT, again, &len2, err, errlen) == -1)
			goto done;
		if (len != len2 || sodium_memcmp(first, again, len) != 0) {
			snprintf(err, errlen, "the two entries do not match");
			goto done;
		}
	}
	if (keysrc_store(out, 0, first, len) == -1) {
		snprintf(err, errlen, "out of guarded memory");
		goto done;
	}
	rc = 0;
done:
	if (first != NULL)
		sodium_free(first);
	if (again != NULL)
		sodium_free(again);
	return rc;
}
