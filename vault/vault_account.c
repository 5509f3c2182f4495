/*
 * vault_account.c: the accounts held in the vault (address, aliases, limits,
 * upstream override) and their credential versions: add, rotate, rollback,
 * remove, status, and lookup by address or alias. Changes are made in memory
 * and reach the file at the next vault_save().
 */
#include "vault_internal.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include <bsd/string.h>

#define ADDR_LOCAL_MAX	64	/* RFC 5321 4.5.3.1.1 */
#define ADDR_DOMAIN_MAX	255	/* RFC 5321 4.5.3.1.2 */
#define DNS_LABEL_MAX	63
#define ATEXT_SPECIALS	"!#$%&'*+-/=?^_`{|}~"

static int
is_ascii_alnum(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

/* RFC 5322 dot-atom: atext runs separated by single dots. */
static int
local_part_valid(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > ADDR_LOCAL_MAX || s[0] == '.' || s[len - 1] == '.')
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (s[i + 1] == '.')
				return 0;
			continue;
		}
		if (!is_ascii_alnum(c) && strchr(ATEXT_SPECIALS, c) == NULL)
			return 0;
	}
	return 1;
}

/* A DNS name: labels of letters, digits and inner hyphens. */
static int
domain_valid(const char *s, size_t len)
{
	size_t i, label = 0;

	if (len == 0 || len > ADDR_DOMAIN_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c == '.') {
			if (label == 0 || s[i - 1] == '-')
				return 0;
			label = 0;
			continue;
		}
		if (!is_ascii_alnum(c) && c != '-')
			return 0;
		if (c == '-' && label == 0)
			return 0;
		if (++label > DNS_LABEL_MAX)
			return 0;
	}
	return label > 0 && s[len - 1] != '-';
}

int
vault_address_valid(const char *s)
{
	const char *at;
	size_t len;

	if (s == NULL)
		return 0;
	len = strnlen(s, VAULT_ADDR_MAX);
	if (len == 0 || len >= VAULT_ADDR_MAX)
		return 0;
	at = strchr(s, '@');
	if (at == NULL || strchr(at + 1, '@') != NULL)
		return 0;
	return local_part_valid(s, (size_t)(at - s)) &&
	    domain_valid(at + 1, len - (size_t)(at - s) - 1);
}

/* A host name or an IP literal as hostport_parse() leaves it (no brackets). */
int
vault_host_valid(const char *s)
{
	size_t len, i;

	if (s == NULL)
		return 0;
	len = strnlen(s, VAULT_HOST_MAX);
	if (len == 0 || len >= VAULT_HOST_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!is_ascii_alnum(c) && c != '.' && c != '-' && c != '_' && c != ':')
			return 0;
	}
	return 1;
}

void
vault_account_wipe(struct vault_account *a)
{
	size_t i;

	for (i = 0; i < a->n_creds; i++)
		vault_secret_wipe(&a->creds[i].secret);
	a->n_creds = 0;
}

static int
account_matches(const struct vault_account *a, const char *addr)
{
	size_t i;

	if (strcasecmp(a->address, addr) == 0)
		return 1;
	for (i = 0; i < a->n_aliases; i++)
		if (strcasecmp(a->aliases[i], addr) == 0)
			return 1;
	return 0;
}

static ssize_t
account_index(const struct vault *v, const char *addr)
{
	size_t i;

	if (v == NULL || addr == NULL)
		return -1;
	for (i = 0; i < v->d.n_accounts; i++)
		if (account_matches(&v->d.accounts[i], addr))
			return (ssize_t)i;
	return -1;
}

static struct vault_account *
account_lookup(struct vault *v, const char *addr, char *err, size_t errlen)
{
	ssize_t i = account_index(v, addr);

	if (i < 0) {
		snprintf(err, errlen, "no account %s", addr != NULL ? addr : "(null)");
		return NULL;
	}
	return &v->d.accounts[i];
}

size_t
vault_account_count(const struct vault *v)
{
	return v != NULL ? v->d.n_accounts : 0;
}

const struct vault_account *
vault_account_at(const struct vault *v, size_t i)
{
	if (v == NULL || i >= v->d.n_accounts)
		return NULL;
	return &v->d.accounts[i];
}

const struct vault_account *
vault_account_find(const struct vault *v, const char *addr)
{
	ssize_t i = account_index(v, addr);

	return i < 0 ? NULL : &v->d.accounts[i];
}

const struct vault_credential *
vault_account_current(const struct vault_account *a)
{
	size_t i;

	if (a == NULL)
		return NULL;
	for (i = 0; i < a->n_creds; i++)
		if (a->creds[i].version == a->current)
			return &a->creds[i];
	return NULL;
}

static int
secret_len_valid(const unsigned char *secret, size_t len, char *err, size_t errlen)
{
	if (secret == NULL || len == 0 || len > VAULT_SECRET_MAX) {
		snprintf(err, errlen, "an App Password must be 1 to %d bytes long",
		    VAULT_SECRET_MAX);
		return 0;
	}
	return 1;
}

/* Is the template's text NUL-terminated inside its fixed buffers, and valid? */
static int
template_valid(const struct vault *v, const struct vault_account *t, char *err,
    size_t errlen)
{
	const char *names[1 + VAULT_MAX_ALIASES];
	size_t n = 0, i, j;
	ssize_t other;

	if (memchr(t->address, '\0', sizeof(t->address)) == NULL ||
	    !vault_address_valid(t->address)) {
		snprintf(err, errlen, "invalid address \"%.*s\": expected local@domain",
		    (int)strnlen(t->address, sizeof(t->address) - 1), t->address);
		return 0;
	}
	if (t->n_aliases > VAULT_MAX_ALIASES) {
		snprintf(err, errlen, "account %s: at most %d aliases", t->address,
		    VAULT_MAX_ALIASES);
		return 0;
	}
	names[n++] = t->address;
	for (i = 0; i < t->n_aliases; i++) {
		if (memchr(t->aliases[i], '\0', sizeof(t->aliases[i])) == NULL ||
		    !vault_address_valid(t->aliases[i])) {
			snprintf(err, errlen, "invalid alias \"%.*s\": expected local@domain",
			    (int)strnlen(t->aliases[i], sizeof(t->aliases[i]) - 1),
			    t->aliases[i]);
			return 0;
		}
		names[n++] = t->aliases[i];
	}
	if (memchr(t->upstream_host, '\0', sizeof(t->upstream_host)) == NULL ||
	    (t->upstream_host[0] != '\0' && !vault_host_valid(t->upstream_host))) {
		snprintf(err, errlen, "account %s: invalid upstream host", t->address);
		return 0;
	}
	if (t->upstream_tls < -1 || t->upstream_tls > VAULT_UPSTREAM_TLS_MAX) {
		snprintf(err, errlen, "account %s: invalid upstream TLS mode %d",
		    t->address, t->upstream_tls);
		return 0;
	}
	for (i = 0; i < n; i++) {
		for (j = i + 1; j < n; j++) {
			if (strcasecmp(names[i], names[j]) == 0) {
				snprintf(err, errlen, "account %s: %s is given twice",
				    t->address, names[j]);
				return 0;
			}
		}
		other = account_index(v, names[i]);
		if (other < 0)
			continue;
		if (i == 0 && strcasecmp(v->d.accounts[other].address, names[i]) == 0)
			snprintf(err, errlen, "account %s already exists", names[i]);
		else
			snprintf(err, errlen, "%s is already used by account %s",
			    names[i], v->d.accounts[other].address);
		return 0;
	}
	return 1;
}

int
vault_account_add(struct vault *v, const struct vault_account *tmpl,
    const unsigned char *secret, size_t len, time_t now, char *err, size_t errlen)
{
	struct vault_account *a;
	struct vault_secret s = { NULL, 0 };
	size_t i;

	if (v == NULL || tmpl == NULL) {
		snprintf(err, errlen, "no vault or account given");
		return -1;
	}
	if (!template_valid(v, tmpl, err, errlen) || !secret_len_valid(secret, len, err, errlen))
		return -1;
	if (v->d.n_accounts >= VAULT_MAX_ACCOUNTS) {
		snprintf(err, errlen, "the vault already holds %d accounts, the most it can",
		    VAULT_MAX_ACCOUNTS);
		return -1;
	}
	if (vault_data_reserve(&v->d, v->d.n_accounts + 1) == -1 ||
	    vault_secret_set(&s, secret, len) == -1) {
		snprintf(err, errlen, "account %s: out of memory", tmpl->address);
		return -1;
	}
	a = &v->d.accounts[v->d.n_accounts];
	memset(a, 0, sizeof(*a));
	strlcpy(a->address, tmpl->address, sizeof(a->address));
	for (i = 0; i < tmpl->n_aliases; i++)
		strlcpy(a->aliases[i], tmpl->aliases[i], sizeof(a->aliases[i]));
	a->n_aliases = tmpl->n_aliases;
	/* A limit of zero would mean "never send"; it stands for "default". */
	a->daily_limit = tmpl->daily_limit != 0 ? tmpl->daily_limit :
	    VAULT_DEFAULT_DAILY_LIMIT;
	a->daily_rcpt_limit = tmpl->daily_rcpt_limit != 0 ? tmpl->daily_rcpt_limit :
	    VAULT_DEFAULT_RCPT_LIMIT;
	strlcpy(a->upstream_host, tmpl->upstream_host, sizeof(a->upstream_host));
	a->upstream_port = tmpl->upstream_port;
	a->upstream_tls = tmpl->upstream_tls;
	a->created = (int64_t)now;
	a->rotated = (int64_t)now;
	a->status = VAULT_STATUS_OK;
	a->current = 1;
	a->creds[0].version = 1;
	a->creds[0].created = (int64_t)now;
	a->creds[0].secret = s;
	a->n_creds = 1;
	v->d.n_accounts++;
	v->dirty = 1;
	return 0;
}

int
vault_account_rotate(struct vault *v, const char *addr, const unsigned char *secret,
    size_t len, time_t now, uint32_t *new_version, char *err, size_t errlen)
{
	struct vault_account *a;
	struct vault_credential *c;
	struct vault_secret s = { NULL, 0 };
	uint32_t highest;
	size_t i;

	if ((a = account_lookup(v, addr, err, errlen)) == NULL ||
	    !secret_len_valid(secret, len, err, errlen))
		return -1;
	highest = a->n_creds > 0 ? a->creds[a->n_creds - 1].version : 0;
	if (highest == UINT32_MAX) {
		snprintf(err, errlen, "%s has run out of credential version numbers",
		    a->address);
		return -1;
	}
	if (vault_secret_set(&s, secret, len) == -1) {
		snprintf(err, errlen, "account %s: out of memory", a->address);
		return -1;
	}
	if (a->n_creds == VAULT_MAX_VERSIONS) {
		/* Drop the oldest version that is not the one in use. */
		for (i = 0; i < a->n_creds && a->creds[i].version == a->current; i++)
			;
		vault_secret_wipe(&a->creds[i].secret);
		memmove(&a->creds[i], &a->creds[i + 1],
		    (a->n_creds - i - 1) * sizeof(a->creds[0]));
		a->n_creds--;
	}
	c = &a->creds[a->n_creds++];
	c->version = highest + 1;
	c->created = (int64_t)now;
	c->secret = s;
	a->current = c->version;
	a->rotated = (int64_t)now;
	a->status = VAULT_STATUS_OK;
	if (new_version != NULL)
		*new_version = c->version;
	v->dirty = 1;
	return 0;
}

int
vault_account_rollback(struct vault *v, const char *addr, time_t now,
    uint32_t *now_current, char *err, size_t errlen)
{
	struct vault_account *a;
	size_t i;

	if ((a = account_lookup(v, addr, err, errlen)) == NULL)
		return -1;
	for (i = a->n_creds; i > 0; i--)
		if (a->creds[i - 1].version < a->current)
			break;
	if (i == 0) {
		snprintf(err, errlen, "%s has no previous credential version", a->address);
		return -1;
	}
	a->current = a->creds[i - 1].version;
	a->rotated = (int64_t)now;
	/* The status described the credential that is no longer current. */
	a->status = VAULT_STATUS_OK;
	if (now_current != NULL)
		*now_current = a->current;
	v->dirty = 1;
	return 0;
}

int
vault_account_remove(struct vault *v, const char *addr, char *err, size_t errlen)
{
	ssize_t i = account_index(v, addr);

	if (i < 0) {
		snprintf(err, errlen, "no account %s", addr != NULL ? addr : "(null)");
		return -1;
	}
	vault_account_wipe(&v->d.accounts[i]);
	memmove(&v->d.accounts[i], &v->d.accounts[i + 1],
	    (v->d.n_accounts - (size_t)i - 1) * sizeof(v->d.accounts[0]));
	v->d.n_accounts--;
	memset(&v->d.accounts[v->d.n_accounts], 0, sizeof(v->d.accounts[0]));
	v->dirty = 1;
	return 0;
}

int
vault_account_set_status(struct vault *v, const char *addr, enum vault_status st,
    char *err, size_t errlen)
{
	struct vault_account *a;

	if (st != VAULT_STATUS_OK && st != VAULT_STATUS_AUTH_FAILED) {
		snprintf(err, errlen, "invalid account status %d", (int)st);
		return -1;
	}
	if ((a = account_lookup(v, addr, err, errlen)) == NULL)
		return -1;
	a->status = (uint32_t)st;
	v->dirty = 1;
	return 0;
}
