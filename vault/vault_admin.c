/*
 * vault_admin.c: the users of the admin page. Their passwords are stored as
 * Argon2id hashes (crypto_pwhash_str), so the hashes are not secrets; the
 * passwords themselves are never kept.
 */
#include "vault_internal.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>

#include <bsd/string.h>

#define ADMIN_NAME_CHARS	"._@-"
#define ADMIN_OPSLIMIT		crypto_pwhash_OPSLIMIT_INTERACTIVE
#define ADMIN_MEMLIMIT		crypto_pwhash_MEMLIMIT_INTERACTIVE

/*
 * Verified against when the user name is unknown, so that a failed login
 * costs the same whether or not the name exists. It is the hash of 32 random
 * bytes that were thrown away, with the same parameters as ADMIN_*LIMIT.
 */
static const char admin_dummy_hash[] =
    "$argon2id$v=19$m=65536,t=2,p=1$RQLh4uzCK09/VsN/mAkDpA$"
    "hO+/AlVZ7YC5Fc3HFe/2O67ruEPLDoShSpGvC4EfVE8";

_Static_assert(VAULT_HASH_MAX >= crypto_pwhash_STRBYTES,
    "VAULT_HASH_MAX must hold a crypto_pwhash_str hash");

int
vault_admin_name_valid(const char *s)
{
	size_t len, i;

	if (s == NULL)
		return 0;
	len = strnlen(s, VAULT_NAME_MAX);
	if (len == 0 || len >= VAULT_NAME_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || strchr(ADMIN_NAME_CHARS, c) != NULL))
			return 0;
	}
	return 1;
}

int
vault_admin_hash_valid(const char *s)
{
	size_t len, i;

	len = strnlen(s, VAULT_HASH_MAX);
	if (len >= VAULT_HASH_MAX ||
	    strncmp(s, crypto_pwhash_argon2id_STRPREFIX,
	    strlen(crypto_pwhash_argon2id_STRPREFIX)) != 0)
		return 0;
	for (i = 0; i < len; i++)
		if (s[i] <= ' ' || s[i] > '~')
			return 0;
	return 1;
}

static ssize_t
admin_index(const struct vault *v, const char *name)
{
	size_t i;

	if (v == NULL || name == NULL)
		return -1;
	for (i = 0; i < v->d.n_admins; i++)
		if (strcasecmp(v->d.admins[i].name, name) == 0)
			return (ssize_t)i;
	return -1;
}

size_t
vault_admin_count(const struct vault *v)
{
	return v != NULL ? v->d.n_admins : 0;
}

const struct vault_admin *
vault_admin_at(const struct vault *v, size_t i)
{
	if (v == NULL || i >= v->d.n_admins)
		return NULL;
	return &v->d.admins[i];
}

int
vault_admin_add(struct vault *v, const char *name, const unsigned char *pw, size_t len,
    time_t now, char *err, size_t errlen)
{
	struct vault_admin *ad;

	if (v == NULL || !vault_admin_name_valid(name)) {
		snprintf(err, errlen, "invalid admin user name \"%.*s\": use 1 to %d of "
		    "A-Z a-z 0-9 %s", name != NULL ? (int)strnlen(name, VAULT_NAME_MAX) : 0,
		    name != NULL ? name : "", VAULT_NAME_MAX - 1, ADMIN_NAME_CHARS);
		return -1;
	}
	if (admin_index(v, name) >= 0) {
		snprintf(err, errlen, "admin user %s already exists", name);
		return -1;
	}
	if (v->d.n_admins >= VAULT_MAX_ADMINS) {
		snprintf(err, errlen, "the vault already holds %d admin users, the most it can",
		    VAULT_MAX_ADMINS);
		return -1;
	}
	if (pw == NULL || len == 0 || len > VAULT_SECRET_MAX) {
		snprintf(err, errlen, "the password of admin user %s must be 1 to %d bytes long",
		    name, VAULT_SECRET_MAX);
		return -1;
	}
	if (sodium_init() < 0) {
		snprintf(err, errlen, "cannot initialise libsodium");
		return -1;
	}
	ad = &v->d.admins[v->d.n_admins];
	memset(ad, 0, sizeof(*ad));
	if (crypto_pwhash_str(ad->hash, (const char *)pw, len, ADMIN_OPSLIMIT,
	    ADMIN_MEMLIMIT) != 0) {
		memset(ad, 0, sizeof(*ad));
		snprintf(err, errlen, "cannot hash the password of admin user %s: out of memory",
		    name);
		return -1;
	}
	strlcpy(ad->name, name, sizeof(ad->name));
	ad->created = (int64_t)now;
	v->d.n_admins++;
	v->dirty = 1;
	return 0;
}

int
vault_admin_remove(struct vault *v, const char *name, char *err, size_t errlen)
{
	ssize_t i = admin_index(v, name);

	if (i < 0) {
		snprintf(err, errlen, "no admin user %s", name != NULL ? name : "(null)");
		return -1;
	}
	memmove(&v->d.admins[i], &v->d.admins[i + 1],
	    (v->d.n_admins - (size_t)i - 1) * sizeof(v->d.admins[0]));
	v->d.n_admins--;
	memset(&v->d.admins[v->d.n_admins], 0, sizeof(v->d.admins[0]));
	v->dirty = 1;
	return 0;
}

int
vault_admin_verify(const struct vault *v, const char *name, const unsigned char *pw,
    size_t len)
{
	static const unsigned char no_password[1];
	const char *hash = admin_dummy_hash;
	ssize_t i = admin_index(v, name);
	int usable = 1, match;

	if (sodium_init() < 0)
		return -1;
	if (i >= 0)
		hash = v->d.admins[i].hash;
	else
		usable = 0;
	/* Malformed input is refused only after the same amount of work. */
	if (pw == NULL || len == 0 || len > VAULT_SECRET_MAX) {
		pw = no_password;
		len = sizeof(no_password);
		usable = 0;
	}
	match = crypto_pwhash_str_verify(hash, (const char *)pw, len) == 0;
	return usable && match ? 0 : -1;
}
