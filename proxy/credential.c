/*
 * credential.c: the daemon's one door into the vault. Answers address
 * resolution and credential lookups with OK / TEMPFAIL / PERMFAIL and
 * reloads the vault when the CLI changes it. Secrets leave only as copies in
 * guarded memory that the caller wipes with cred_wipe().
 */
#include "credential.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "audit.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

struct credstore {
	struct vault	*vault;
	struct audit	*audit;
};

struct credstore *
credstore_new(struct vault *v)
{
	struct credstore *cs;

	if ((cs = calloc(1, sizeof(*cs))) == NULL)
		return NULL;
	cs->vault = v;
	return cs;
}

void
credstore_free(struct credstore *cs)
{
	if (cs == NULL)
		return;
	vault_close(cs->vault);
	free(cs);
}

enum cred_result
credstore_resolve(struct credstore *cs, const char *addr, char *account, size_t len)
{
	const struct vault_account *a;

	if ((a = vault_account_find(cs->vault, addr)) == NULL)
		return CRED_PERMFAIL;
	if (strlcpy(account, a->address, len) >= len)
		return CRED_TEMPFAIL;
	return CRED_OK;
}

enum cred_result
credstore_info(struct credstore *cs, const char *account, struct cred_info *out)
{
	const struct vault_account *a;

	if ((a = vault_account_find(cs->vault, account)) == NULL)
		return CRED_PERMFAIL;
	memset(out, 0, sizeof(*out));
	strlcpy(out->address, a->address, sizeof(out->address));
	strlcpy(out->upstream_host, a->upstream_host, sizeof(out->upstream_host));
	out->upstream_port = a->upstream_port;
	out->upstream_tls = a->upstream_tls;
	out->daily_limit = a->daily_limit;
	out->daily_rcpt_limit = a->daily_rcpt_limit;
	out->version = a->current;
	out->status = a->status;
	return CRED_OK;
}

enum cred_result
credstore_fetch(struct credstore *cs, const char *account, struct cred *out)
{
	const struct vault_account *a;
	const struct vault_credential *c;

	memset(out, 0, sizeof(*out));
	if ((a = vault_account_find(cs->vault, account)) == NULL)
		return CRED_PERMFAIL;
	if ((c = vault_account_current(a)) == NULL)
		return CRED_PERMFAIL;
	if (vault_secret_set(&out->secret, c->secret.buf, c->secret.len) == -1)
		return CRED_TEMPFAIL;
	strlcpy(out->user, a->address, sizeof(out->user));
	out->version = c->version;
	return CRED_OK;
}

void
cred_wipe(struct cred *c)
{
	if (c == NULL)
		return;
	vault_secret_wipe(&c->secret);
	sodium_memzero(c, sizeof(*c));
}

void
credstore_set_audit(struct credstore *cs, struct audit *a)
{
	cs->audit = a;
}

/* Persist an account's status under the vault lock (re-read first, so a
 * concurrent CLI change is kept). The key is cached: no KDF run. */
static int
credstore_persist_status(struct credstore *cs, const char *account, enum vault_status st,
    char *err, size_t errlen)
{
	int rc = -1;

	if (vault_begin_update(cs->vault, err, errlen) == -1)
		return -1;
	if (vault_account_find(cs->vault, account) != NULL &&
	    vault_account_set_status(cs->vault, account, st, err, errlen) == 0 &&
	    vault_save(cs->vault, err, errlen) == 0)
		rc = 0;
	vault_end_update(cs->vault);
	return rc;
}

/*
 * The upstream's verdict on a credential version. A refusal is logged,
 * counted, audited once per version, and written into the vault as the
 * account's status so that "account list" and the admin page show it;
 * the next success (or a rotation) clears it.
 */
void
credstore_report_auth(struct credstore *cs, const char *account, uint32_t version,
    int ok, const char *reply)
{
	const struct vault_account *a;
	char err[512], esc[512];
	enum vault_status want = ok ? VAULT_STATUS_OK : VAULT_STATUS_AUTH_FAILED;
	json_t *ev;

	if (!ok) {
		log_err("event=auth_failed account=%s version=%u reply=\"%s\"",
		    account, version, log_escape(esc, sizeof(esc), reply, strlen(reply)));
		metrics_auth_failure(account);
	}
	if ((a = vault_account_find(cs->vault, account)) == NULL)
		return;
	/* Only the current version's result says anything about the account. */
	if (a->current != version || a->status == (uint32_t)want)
		return;
	if (!ok && cs->audit != NULL) {
		ev = audit_account_event(AUDIT_ACCOUNT_AUTH_FAILED, account, version, "daemon",
		    NULL);
		if (ev == NULL || audit_set_str(ev, "upstream_reply", reply) == -1 ||
		    audit_append(cs->audit, ev, err, sizeof(err)) == -1)
			log_err("event=audit_failed account=%s error=\"%s\"", account,
			    ev == NULL ? "out of memory" : err);
		json_decref(ev);
	}
	if (credstore_persist_status(cs, account, want, err, sizeof(err)) == -1)
		log_warn("event=vault_status_update account=%s error=\"%s\"", account, err);
}

int
credstore_maybe_reload(struct credstore *cs)
{
	char err[512];

	if (!vault_changed_on_disk(cs->vault))
		return 0;
	if (vault_reload(cs->vault, err, sizeof(err)) == -1) {
		log_err("event=vault_reload error=\"%s\"", err);
		return -1;
	}
	log_info("event=vault_reload accounts=%zu", vault_account_count(cs->vault));
	return 1;
}

int
credstore_audit_key(struct credstore *cs, unsigned char out[VAULT_KEY_BYTES])
{
	return vault_derive_audit_key(cs->vault, out);
}
