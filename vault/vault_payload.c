/*
 * vault_payload.c: the decrypted payload of the vault file, serialised and
 * parsed. The payload holds App Passwords, so it is a compact binary format
 * that can be parsed straight out of the guarded plaintext buffer, secret by
 * secret into guarded memory, without a JSON library's heap copies.
 *
 * Layout (integers little-endian; "str" is a u16 length then that many bytes,
 * never NUL-terminated on disk):
 *
 *	u16 payload version (VAULT_PAYLOAD_VERSION)
 *	u64 generation
 *	32 bytes audit root key (random, made by vault_create, never all zero)
 *	u16 number of accounts, then for each account:
 *		str address; u16 number of aliases, then str each
 *		u64 daily limit; u64 daily recipient limit
 *		str upstream host ("" = default); u16 upstream port
 *		u8 upstream TLS + 1 (0 = default)
 *		i64 created; i64 rotated; u8 status; u32 current version
 *		u16 number of credentials, then for each, in ascending version:
 *			u32 version; i64 created; str secret
 *	u16 number of admin users, then for each:
 *		str name; str crypto_pwhash_str hash; i64 created
 *
 * The audit root key is the one secret that is not an App Password: the
 * audit log's hash chain is keyed with a subkey of it. Being inside the
 * payload, it is as safe as the App Passwords and outlives a rekey.
 *
 * The parser trusts nothing: every count and length is bounded before it is
 * used, every string is checked, and the payload must end exactly where the
 * last record does. It must refuse, never crash, on arbitrary bytes.
 */
#include "vault_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <bsd/string.h>

#define PAYLOAD_NAMES_PER_ACCOUNT	(1 + VAULT_MAX_ALIASES)

/* A writer that only counts when p is NULL. */
struct wbuf {
	uint8_t	*p;
	size_t	cap;
	size_t	off;
	int	overflow;
};

struct rbuf {
	const uint8_t	*p;
	size_t		len;
	size_t		off;
};

static void
w_bytes(struct wbuf *w, const void *src, size_t n)
{
	if (w->p != NULL && !w->overflow) {
		if (n > w->cap - w->off)
			w->overflow = 1;
		else if (n > 0)
			memcpy(w->p + w->off, src, n);
	}
	w->off += n;
}

static void
w_uint(struct wbuf *w, uint64_t x, size_t width)
{
	uint8_t b[8];
	size_t i;

	for (i = 0; i < width; i++)
		b[i] = (uint8_t)(x >> (8 * i));
	w_bytes(w, b, width);
}

/* A key in guarded memory, readable only while it is copied out. */
static void
w_guarded(struct wbuf *w, unsigned char *key, size_t n)
{
	if (w->p == NULL || w->overflow) {
		w->off += n;		/* counting only, as w_bytes() does */
		return;
	}
	sodium_mprotect_readonly(key);
	w_bytes(w, key, n);
	sodium_mprotect_noaccess(key);
}

static void
w_str(struct wbuf *w, const void *s, size_t len)
{
	w_uint(w, len, 2);
	w_bytes(w, s, len);
}

int
vault_payload_encode(const struct vault_data *d, uint64_t generation, uint8_t *buf,
    size_t cap, size_t *outlen)
{
	struct wbuf w = { buf, cap, 0, 0 };
	size_t i, j;

	if (d->audit_root == NULL)
		return -1;
	w_uint(&w, VAULT_PAYLOAD_VERSION, 2);
	w_uint(&w, generation, 8);
	w_guarded(&w, d->audit_root, VAULT_AUDIT_ROOT_BYTES);
	w_uint(&w, d->n_accounts, 2);
	for (i = 0; i < d->n_accounts; i++) {
		const struct vault_account *a = &d->accounts[i];

		w_str(&w, a->address, strlen(a->address));
		w_uint(&w, a->n_aliases, 2);
		for (j = 0; j < a->n_aliases; j++)
			w_str(&w, a->aliases[j], strlen(a->aliases[j]));
		w_uint(&w, a->daily_limit, 8);
		w_uint(&w, a->daily_rcpt_limit, 8);
		w_str(&w, a->upstream_host, strlen(a->upstream_host));
		w_uint(&w, a->upstream_port, 2);
		w_uint(&w, (uint64_t)(a->upstream_tls + 1), 1);
		w_uint(&w, (uint64_t)a->created, 8);
		w_uint(&w, (uint64_t)a->rotated, 8);
		w_uint(&w, a->status, 1);
		w_uint(&w, a->current, 4);
		w_uint(&w, a->n_creds, 2);
		for (j = 0; j < a->n_creds; j++) {
			const struct vault_credential *c = &a->creds[j];

			w_uint(&w, c->version, 4);
			w_uint(&w, (uint64_t)c->created, 8);
			w_str(&w, c->secret.buf, c->secret.len);
		}
	}
	w_uint(&w, d->n_admins, 2);
	for (i = 0; i < d->n_admins; i++) {
		const struct vault_admin *ad = &d->admins[i];

		w_str(&w, ad->name, strlen(ad->name));
		w_str(&w, ad->hash, strlen(ad->hash));
		w_uint(&w, (uint64_t)ad->created, 8);
	}
	*outlen = w.off;
	return w.overflow ? -1 : 0;
}

static int
r_uint(struct rbuf *r, size_t width, uint64_t *out)
{
	uint64_t x = 0;
	size_t i;

	if (width > r->len - r->off)
		return -1;
	for (i = 0; i < width; i++)
		x |= (uint64_t)r->p[r->off + i] << (8 * i);
	r->off += width;
	*out = x;
	return 0;
}

/* n raw bytes, left in place. */
static int
r_raw(struct rbuf *r, size_t n, const uint8_t **out)
{
	if (n > r->len - r->off)
		return -1;
	*out = r->p + r->off;
	r->off += n;
	return 0;
}

/* A u16-prefixed byte string of minlen..maxlen bytes, left in place. */
static int
r_span(struct rbuf *r, size_t minlen, size_t maxlen, const uint8_t **out, size_t *outlen)
{
	uint64_t n;

	if (r_uint(r, 2, &n) == -1)
		return -1;
	if (n < minlen || n > maxlen || n > r->len - r->off)
		return -1;
	*out = r->p + r->off;
	*outlen = (size_t)n;
	r->off += (size_t)n;
	return 0;
}

/* A text string into a char buffer of dstsize bytes; no NUL allowed inside. */
static int
r_text(struct rbuf *r, char *dst, size_t dstsize, size_t minlen)
{
	const uint8_t *s;
	size_t n;

	if (r_span(r, minlen, dstsize - 1, &s, &n) == -1)
		return -1;
	if (memchr(s, '\0', n) != NULL)
		return -1;
	memcpy(dst, s, n);
	dst[n] = '\0';
	return 0;
}

static int
names_cmp(const void *a, const void *b)
{
	return strcasecmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * Every address and alias names exactly one account. Sorting keeps this
 * O(n log n) for a full vault of VAULT_MAX_ACCOUNTS accounts with aliases.
 */
static int
payload_names_unique(const struct vault_data *d, char *err, size_t errlen)
{
	const char **names;
	size_t n = 0, i, j;
	int rc = -1;

	if (d->n_accounts == 0)
		return 0;
	names = calloc(d->n_accounts * PAYLOAD_NAMES_PER_ACCOUNT, sizeof(*names));
	if (names == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	for (i = 0; i < d->n_accounts; i++) {
		names[n++] = d->accounts[i].address;
		for (j = 0; j < d->accounts[i].n_aliases; j++)
			names[n++] = d->accounts[i].aliases[j];
	}
	qsort(names, n, sizeof(*names), names_cmp);
	for (i = 1; i < n; i++) {
		if (strcasecmp(names[i - 1], names[i]) == 0) {
			snprintf(err, errlen, "address %s is used twice", names[i]);
			goto done;
		}
	}
	rc = 0;
done:
	free(names);
	return rc;
}

static int
payload_parse_account(struct rbuf *r, struct vault_account *a, char *err, size_t errlen)
{
	const uint8_t *s;
	uint64_t x, version, created;
	size_t i, n, slen, found = 0;

	if (r_text(r, a->address, sizeof(a->address), 1) == -1 ||
	    !vault_address_valid(a->address)) {
		snprintf(err, errlen, "bad account address");
		return -1;
	}
	if (r_uint(r, 2, &x) == -1 || x > VAULT_MAX_ALIASES) {
		snprintf(err, errlen, "account %s: bad alias count", a->address);
		return -1;
	}
	a->n_aliases = (size_t)x;
	for (i = 0; i < a->n_aliases; i++) {
		if (r_text(r, a->aliases[i], sizeof(a->aliases[i]), 1) == -1 ||
		    !vault_address_valid(a->aliases[i])) {
			snprintf(err, errlen, "account %s: bad alias", a->address);
			return -1;
		}
	}
	if (r_uint(r, 8, &a->daily_limit) == -1 ||
	    r_uint(r, 8, &a->daily_rcpt_limit) == -1 ||
	    r_text(r, a->upstream_host, sizeof(a->upstream_host), 0) == -1 ||
	    (a->upstream_host[0] != '\0' && !vault_host_valid(a->upstream_host))) {
		snprintf(err, errlen, "account %s: bad limits or upstream", a->address);
		return -1;
	}
	if (r_uint(r, 2, &x) == -1) {
		snprintf(err, errlen, "account %s: truncated", a->address);
		return -1;
	}
	a->upstream_port = (uint16_t)x;
	if (r_uint(r, 1, &x) == -1 || x > VAULT_UPSTREAM_TLS_MAX + 1) {
		snprintf(err, errlen, "account %s: bad upstream TLS mode", a->address);
		return -1;
	}
	a->upstream_tls = (int)x - 1;
	if (r_uint(r, 8, &x) == -1) {
		snprintf(err, errlen, "account %s: truncated", a->address);
		return -1;
	}
	a->created = (int64_t)x;
	if (r_uint(r, 8, &x) == -1) {
		snprintf(err, errlen, "account %s: truncated", a->address);
		return -1;
	}
	a->rotated = (int64_t)x;
	if (r_uint(r, 1, &x) == -1 || x > VAULT_STATUS_AUTH_FAILED) {
		snprintf(err, errlen, "account %s: bad status", a->address);
		return -1;
	}
	a->status = (uint32_t)x;
	if (r_uint(r, 4, &x) == -1) {
		snprintf(err, errlen, "account %s: truncated", a->address);
		return -1;
	}
	a->current = (uint32_t)x;
	if (r_uint(r, 2, &x) == -1 || x > VAULT_MAX_VERSIONS) {
		snprintf(err, errlen, "account %s: bad credential count", a->address);
		return -1;
	}
	n = (size_t)x;
	for (i = 0; i < n; i++) {
		struct vault_credential *c = &a->creds[i];

		if (r_uint(r, 4, &version) == -1 || version == 0 ||
		    (i > 0 && version <= a->creds[i - 1].version) ||
		    r_uint(r, 8, &created) == -1 ||
		    r_span(r, 1, VAULT_SECRET_MAX, &s, &slen) == -1) {
			snprintf(err, errlen, "account %s: bad credential", a->address);
			return -1;
		}
		c->version = (uint32_t)version;
		c->created = (int64_t)created;
		if (vault_secret_set(&c->secret, s, slen) == -1) {
			snprintf(err, errlen, "out of guarded memory");
			return -1;
		}
		a->n_creds = i + 1;
		if (c->version == a->current)
			found = 1;
	}
	if (n == 0 ? a->current != 0 : !found) {
		snprintf(err, errlen, "account %s: current version %u is not stored",
		    a->address, (unsigned)a->current);
		return -1;
	}
	return 0;
}

static int
payload_parse_admin(struct rbuf *r, struct vault_data *d, struct vault_admin *ad,
    char *err, size_t errlen)
{
	uint64_t x;
	size_t i;

	if (r_text(r, ad->name, sizeof(ad->name), 1) == -1 ||
	    !vault_admin_name_valid(ad->name) ||
	    r_text(r, ad->hash, sizeof(ad->hash), 1) == -1 ||
	    !vault_admin_hash_valid(ad->hash) ||
	    r_uint(r, 8, &x) == -1) {
		snprintf(err, errlen, "bad admin user record");
		return -1;
	}
	ad->created = (int64_t)x;
	for (i = 0; i < d->n_admins; i++) {
		if (strcasecmp(d->admins[i].name, ad->name) == 0) {
			snprintf(err, errlen, "admin user %s is stored twice", ad->name);
			return -1;
		}
	}
	return 0;
}

int
vault_payload_parse(const uint8_t *buf, size_t len, struct vault_data *out,
    char *err, size_t errlen)
{
	struct rbuf r = { buf, len, 0 };
	struct vault_data d;
	const uint8_t *root;
	uint64_t x, n;
	size_t i;
	char why[VAULT_ADDR_MAX + 64] = "truncated";

	if (vault_data_init(&d) == -1) {
		snprintf(err, errlen, "vault payload: out of memory");
		return -1;
	}
	if (r_uint(&r, 2, &x) == -1)
		goto fail;
	if (x != VAULT_PAYLOAD_VERSION) {
		snprintf(why, sizeof(why), "unknown payload version %llu",
		    (unsigned long long)x);
		goto fail;
	}
	if (r_uint(&r, 8, &d.generation) == -1 ||
	    r_raw(&r, VAULT_AUDIT_ROOT_BYTES, &root) == -1)
		goto fail;
	/* All zero is what a writer that forgot to make one would leave. */
	if (sodium_is_zero(root, VAULT_AUDIT_ROOT_BYTES)) {
		snprintf(why, sizeof(why), "no audit root key");
		goto fail;
	}
	sodium_mprotect_readwrite(d.audit_root);
	memcpy(d.audit_root, root, VAULT_AUDIT_ROOT_BYTES);
	sodium_mprotect_noaccess(d.audit_root);
	if (r_uint(&r, 2, &n) == -1)
		goto fail;
	if (n > VAULT_MAX_ACCOUNTS) {
		snprintf(why, sizeof(why), "too many accounts");
		goto fail;
	}
	/* Never allocate more than the bytes present could describe. */
	if (n > len - r.off) {
		snprintf(why, sizeof(why), "truncated");
		goto fail;
	}
	if (vault_data_reserve(&d, (size_t)n) == -1) {
		snprintf(why, sizeof(why), "out of memory");
		goto fail;
	}
	for (i = 0; i < n; i++) {
		struct vault_account *a = &d.accounts[i];

		memset(a, 0, sizeof(*a));
		d.n_accounts = i + 1;
		if (payload_parse_account(&r, a, why, sizeof(why)) == -1)
			goto fail;
	}
	if (payload_names_unique(&d, why, sizeof(why)) == -1)
		goto fail;
	if (r_uint(&r, 2, &n) == -1)
		goto fail;
	if (n > VAULT_MAX_ADMINS) {
		snprintf(why, sizeof(why), "too many admin users");
		goto fail;
	}
	for (i = 0; i < n; i++) {
		struct vault_admin *ad = &d.admins[i];

		memset(ad, 0, sizeof(*ad));
		if (payload_parse_admin(&r, &d, ad, why, sizeof(why)) == -1)
			goto fail;
		d.n_admins = i + 1;
	}
	if (r.off != len) {
		snprintf(why, sizeof(why), "%zu unexpected bytes at the end", len - r.off);
		goto fail;
	}
	*out = d;
	return 0;
fail:
	snprintf(err, errlen, "vault payload is malformed: %s", why);
	vault_data_free(&d);
	return -1;
}

int
vault_data_init(struct vault_data *d)
{
	memset(d, 0, sizeof(*d));
	if (sodium_init() < 0)
		return -1;
	if ((d->admins = calloc(VAULT_MAX_ADMINS, sizeof(*d->admins))) == NULL ||
	    (d->audit_root = sodium_malloc(VAULT_AUDIT_ROOT_BYTES)) == NULL) {
		vault_data_free(d);
		return -1;
	}
	randombytes_buf(d->audit_root, VAULT_AUDIT_ROOT_BYTES);
	sodium_mprotect_noaccess(d->audit_root);
	return 0;
}

int
vault_data_reserve(struct vault_data *d, size_t n)
{
	struct vault_account *p;
	size_t cap;

	if (n <= d->cap_accounts)
		return 0;
	if (n > VAULT_MAX_ACCOUNTS)
		return -1;
	cap = d->cap_accounts < 4 ? 4 : d->cap_accounts * 2;
	if (cap < n)
		cap = n;
	if (cap > VAULT_MAX_ACCOUNTS)
		cap = VAULT_MAX_ACCOUNTS;
	p = reallocarray(d->accounts, cap, sizeof(*p));
	if (p == NULL)
		return -1;
	d->accounts = p;
	d->cap_accounts = cap;
	return 0;
}

void
vault_data_free(struct vault_data *d)
{
	size_t i;

	for (i = 0; i < d->n_accounts; i++)
		vault_account_wipe(&d->accounts[i]);
	free(d->accounts);
	free(d->admins);
	if (d->audit_root != NULL)
		sodium_free(d->audit_root);	/* wipes, whatever its protection */
	memset(d, 0, sizeof(*d));
}
