/*
 * credential.c: the daemon's one door into the vault. Answers address
 * resolution and credential lookups with OK / TEMPFAIL / PERMFAIL and
 * reloads the vault when the CLI changes it. Secrets leave only as copies in
 * guarded memory that the caller wipes with cred_wipe().
 */
#include "credential.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#include "audit.h"
#include "credential_client.h"
#include "keeper.h"
#include "log.h"
#include "metrics.h"
#include "util.h"

/*
 * Checked instead when an admin user name is unknown, so that a failed login
 * costs one Argon2id run either way. The hash of random bytes that were
 * thrown away, with the parameters "admin-user add" uses (interactive).
 */
static const char cred_dummy_admin_hash[] =
    "$argon2id$v=19$m=65536,t=2,p=1$RQLh4uzCK09/VsN/mAkDpA$"
    "hO+/AlVZ7YC5Fc3HFe/2O67ruEPLDoShSpGvC4EfVE8";

struct credstore {
	struct vault	*vault;
	struct audit	*audit;
	int		reload_failed;		/* the last reload failed */
	char		reload_error[256];
	struct credclient *remote;		/* set: the keeper answers */
};

struct credstore *
credstore_connect(int fd)
{
	struct credstore *cs;

	if ((cs = calloc(1, sizeof(*cs))) == NULL)
		return NULL;
	if ((cs->remote = credclient_new(fd)) == NULL) {
		free(cs);
		return NULL;
	}
	return cs;
}

struct audit *
credstore_audit_forwarder(struct credstore *cs)
{
	if (cs->remote == NULL)
		return NULL;
	return audit_forwarder(credclient_audit_append, credclient_audit_reopen, NULL,
	    cs->remote);
}

static void
credstore_audit_release(void *arg)
{
	credclient_free(arg);
}

struct audit *
credstore_audit_channel(int fd)
{
	struct credclient *cc;
	struct audit *a;

	if ((cc = credclient_new(fd)) == NULL)
		return NULL;
	if ((a = audit_forwarder(credclient_audit_append, credclient_audit_reopen,
	    credstore_audit_release, cc)) == NULL) {
		credclient_free(cc);
		return NULL;
	}
	return a;
}

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
	credclient_free(cs->remote);
	vault_close(cs->vault);
	free(cs);
}

enum cred_result
credstore_resolve(struct credstore *cs, const char *addr, char *account, size_t len)
{
	const struct vault_account *a;

	if (cs->remote != NULL)
		return credclient_resolve(cs->remote, addr, account, len);
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

	if (cs->remote != NULL)
		return credclient_info(cs->remote, account, out);
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

	if (cs->remote != NULL)
		return credclient_fetch(cs->remote, account, out);
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
	char esc[512];

	/* Logged and counted where the relay runs (its metrics); recorded
	 * where the vault is. */
	if (!ok) {
		log_err("event=auth_failed account=%s version=%u reply=\"%s\"",
		    account, version, log_escape(esc, sizeof(esc), reply, strlen(reply)));
		metrics_auth_failure(account);
	}
	if (cs->remote != NULL)
		credclient_report_auth(cs->remote, account, version, ok, reply);
	else
		credstore_record_auth(cs, account, version, ok, reply);
}

void
credstore_record_auth(struct credstore *cs, const char *account, uint32_t version,
    int ok, const char *reply)
{
	const struct vault_account *a;
	char err[512];
	enum vault_status want = ok ? VAULT_STATUS_OK : VAULT_STATUS_AUTH_FAILED;
	json_t *ev;

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

	/* The keeper polls the file itself. */
	if (cs->remote != NULL)
		return 0;
	if (!vault_changed_on_disk(cs->vault))
		return 0;
	if (vault_reload(cs->vault, err, sizeof(err)) == -1) {
		if (!cs->reload_failed || strcmp(cs->reload_error, err) != 0)
			log_err("event=vault_reload error=\"%s\"", err);
		cs->reload_failed = 1;
		strlcpy(cs->reload_error, err, sizeof(cs->reload_error));
		return -1;
	}
	cs->reload_failed = 0;
	log_info("event=vault_reload accounts=%zu", vault_account_count(cs->vault));
	return 1;
}

int
credstore_audit_key(struct credstore *cs, unsigned char out[VAULT_KEY_BYTES])
{
	/* The audit key never leaves the keeper. */
	if (cs->remote != NULL)
		return -1;
	return vault_derive_audit_key(cs->vault, out);
}

int
credstore_healthy(struct credstore *cs, char *err, size_t errlen)
{
	if (cs->remote != NULL)
		return credclient_healthy(cs->remote, err, errlen);
	if (!cs->reload_failed)
		return 0;
	strlcpy(err, cs->reload_error, errlen);
	return -1;
}

/* ---- Admin API ------------------------------------------------------------ */

size_t
credstore_account_count(struct credstore *cs)
{
	if (cs->remote != NULL)
		return credclient_account_count(cs->remote);
	return vault_account_count(cs->vault);
}

int
credstore_account_view(struct credstore *cs, size_t i, struct cred_account_view *out)
{
	const struct vault_account *a;
	size_t j;

	if (cs->remote != NULL)
		return credclient_account_view(cs->remote, i, out);
	if ((a = vault_account_at(cs->vault, i)) == NULL)
		return -1;
	memset(out, 0, sizeof(*out));
	if (credstore_info(cs, a->address, &out->info) != CRED_OK)
		return -1;
	for (j = 0; j < a->n_aliases && j < VAULT_MAX_ALIASES; j++)
		strlcpy(out->aliases[j], a->aliases[j], sizeof(out->aliases[j]));
	out->n_aliases = j;
	out->created = a->created;
	out->rotated = a->rotated;
	for (j = 0; j < a->n_creds && j < VAULT_MAX_VERSIONS; j++) {
		out->versions[j] = a->creds[j].version;
		out->version_created[j] = a->creds[j].created;
	}
	out->n_versions = j;
	return 0;
}

/* Append an account event; -1 (with err) when it cannot be recorded. */
static int
credstore_audit_account(struct credstore *cs, enum audit_account_action action,
    const char *account, uint32_t version, const char *by, const char *ip,
    char *err, size_t errlen)
{
	json_t *ev;
	int rc;

	if (cs->audit == NULL) {
		snprintf(err, errlen, "no audit log");
		return -1;
	}
	if ((ev = audit_account_event(action, account, version, by, ip)) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	rc = audit_append(cs->audit, ev, err, errlen);
	json_decref(ev);
	return rc;
}

/* The shared tail of every change: record, save, unlock. */
static enum cred_admin_result
credstore_commit(struct credstore *cs, enum audit_account_action action,
    const char *account, uint32_t version, const char *by, const char *ip,
    char *err, size_t errlen)
{
	enum cred_admin_result rc = CRED_ADMIN_UNAVAILABLE;

	if (credstore_audit_account(cs, action, account, version, by, ip, err, errlen) == 0 &&
	    vault_save(cs->vault, err, errlen) == 0)
		rc = CRED_ADMIN_OK;
	vault_end_update(cs->vault);
	if (rc != CRED_ADMIN_OK)
		log_err("event=admin_change_failed account=%s by=%s error=\"%s\"", account, by,
		    err);
	return rc;
}

enum cred_admin_result
credstore_account_add(struct credstore *cs, const struct vault_account *tmpl,
    const struct vault_secret *secret, const char *by, const char *ip, char *err,
    size_t errlen)
{
	size_t i;

	if (cs->remote != NULL)
		return credclient_account_add(cs->remote, tmpl, secret, by, ip, err, errlen);
	if (vault_begin_update(cs->vault, err, errlen) == -1)
		return CRED_ADMIN_UNAVAILABLE;
	if (vault_account_find(cs->vault, tmpl->address) != NULL) {
		snprintf(err, errlen, "account %s already exists", tmpl->address);
		goto taken;
	}
	for (i = 0; i < tmpl->n_aliases; i++) {
		if (vault_account_find(cs->vault, tmpl->aliases[i]) != NULL) {
			snprintf(err, errlen, "%s is already an account or alias",
			    tmpl->aliases[i]);
			goto taken;
		}
	}
	if (vault_account_add(cs->vault, tmpl, secret->buf, secret->len, time(NULL), err,
	    errlen) == -1) {
		vault_end_update(cs->vault);
		return CRED_ADMIN_INVALID;
	}
	return credstore_commit(cs, AUDIT_ACCOUNT_ADD, tmpl->address, 1, by, ip, err, errlen);
taken:
	vault_end_update(cs->vault);
	return CRED_ADMIN_EXISTS;
}

/* Begin an update of one account; its primary address goes to primary. */
static enum cred_admin_result
credstore_begin_account(struct credstore *cs, const char *addr, char *primary,
    size_t primarylen, char *err, size_t errlen)
{
	const struct vault_account *a;

	if (vault_begin_update(cs->vault, err, errlen) == -1)
		return CRED_ADMIN_UNAVAILABLE;
	if ((a = vault_account_find(cs->vault, addr)) == NULL ||
	    strcasecmp(a->address, addr) != 0) {
		/* The API names accounts by their address, not by an alias. */
		snprintf(err, errlen, "no account %s", addr);
		vault_end_update(cs->vault);
		return CRED_ADMIN_NOT_FOUND;
	}
	strlcpy(primary, a->address, primarylen);
	return CRED_ADMIN_OK;
}

enum cred_admin_result
credstore_account_rotate(struct credstore *cs, const char *addr,
    const struct vault_secret *secret, const char *by, const char *ip, uint32_t *version,
    char *err, size_t errlen)
{
	char primary[VAULT_ADDR_MAX];
	enum cred_admin_result rc;

	if (cs->remote != NULL)
		return credclient_account_rotate(cs->remote, addr, secret, by, ip, version, err,
		    errlen);
	if ((rc = credstore_begin_account(cs, addr, primary, sizeof(primary), err,
	    errlen)) != CRED_ADMIN_OK)
		return rc;
	if (vault_account_rotate(cs->vault, primary, secret->buf, secret->len, time(NULL),
	    version, err, errlen) == -1) {
		vault_end_update(cs->vault);
		return CRED_ADMIN_INVALID;
	}
	return credstore_commit(cs, AUDIT_ACCOUNT_ROTATE, primary, *version, by, ip, err,
	    errlen);
}

enum cred_admin_result
credstore_account_rollback(struct credstore *cs, const char *addr, const char *by,
    const char *ip, uint32_t *version, char *err, size_t errlen)
{
	char primary[VAULT_ADDR_MAX];
	enum cred_admin_result rc;

	if (cs->remote != NULL)
		return credclient_account_change(cs->remote, KEEPER_ROLLBACK, addr, by, ip,
		    version, err, errlen);
	if ((rc = credstore_begin_account(cs, addr, primary, sizeof(primary), err,
	    errlen)) != CRED_ADMIN_OK)
		return rc;
	if (vault_account_rollback(cs->vault, primary, time(NULL), version, err,
	    errlen) == -1) {
		vault_end_update(cs->vault);
		return CRED_ADMIN_NO_PREVIOUS;
	}
	return credstore_commit(cs, AUDIT_ACCOUNT_ROLLBACK, primary, *version, by, ip, err,
	    errlen);
}

enum cred_admin_result
credstore_account_remove(struct credstore *cs, const char *addr, const char *by,
    const char *ip, char *err, size_t errlen)
{
	char primary[VAULT_ADDR_MAX];
	const struct vault_account *a;
	enum cred_admin_result rc;
	uint32_t version;

	if (cs->remote != NULL)
		return credclient_account_change(cs->remote, KEEPER_REMOVE, addr, by, ip, NULL,
		    err, errlen);
	if ((rc = credstore_begin_account(cs, addr, primary, sizeof(primary), err,
	    errlen)) != CRED_ADMIN_OK)
		return rc;
	a = vault_account_find(cs->vault, primary);
	version = a != NULL ? a->current : 0;
	if (vault_account_remove(cs->vault, primary, err, errlen) == -1) {
		vault_end_update(cs->vault);
		return CRED_ADMIN_NOT_FOUND;
	}
	return credstore_commit(cs, AUDIT_ACCOUNT_REMOVE, primary, version, by, ip, err,
	    errlen);
}

int
credstore_admin_verify(struct credstore *cs, struct event_base *base, const char *name,
    const struct vault_secret *password, cred_login_cb *cb, void *arg)
{
	if (cs->remote == NULL)
		return -1;
	return credclient_admin_verify(cs->remote, base, name, password, cb, arg);
}

void
credstore_admin_verify_cancel(struct credstore *cs, void *arg)
{
	if (cs->remote != NULL)
		credclient_admin_verify_cancel(cs->remote, arg);
}

void
credstore_admin_check_prepare(struct credstore *cs, const char *name,
    struct cred_admin_check *chk)
{
	const struct vault_admin *ad;
	size_t i;

	/* The keeper's own store only: a client never sees a hash. */
	if (cs->remote != NULL)
		fatal("credstore_admin_check_prepare() on a keeper's client");
	strlcpy(chk->name, name, sizeof(chk->name));
	strlcpy(chk->hash, cred_dummy_admin_hash, sizeof(chk->hash));
	chk->exists = 0;
	chk->ok = 0;
	for (i = 0; i < vault_admin_count(cs->vault); i++) {
		ad = vault_admin_at(cs->vault, i);
		if (strcasecmp(ad->name, name) == 0) {
			strlcpy(chk->name, ad->name, sizeof(chk->name));
			strlcpy(chk->hash, ad->hash, sizeof(chk->hash));
			chk->exists = 1;
			break;
		}
	}
}

void
cred_admin_check_run(struct cred_admin_check *chk)
{
	static const char no_password[1];
	const char *pw = no_password;
	size_t len = sizeof(no_password);
	int usable = chk->exists;

	/* Malformed input is refused only after the same amount of work. */
	if (chk->password.buf != NULL && chk->password.len > 0 &&
	    chk->password.len <= VAULT_SECRET_MAX) {
		pw = (const char *)chk->password.buf;
		len = chk->password.len;
	} else {
		usable = 0;
	}
	chk->ok = crypto_pwhash_str_verify(chk->hash, pw, len) == 0 && usable;
}

void
cred_admin_check_wipe(struct cred_admin_check *chk)
{
	vault_secret_wipe(&chk->password);
	sodium_memzero(chk, sizeof(*chk));
}

int
credstore_admin_audit(struct credstore *cs, int action, const char *user, const char *ip,
    const char *reason, char *err, size_t errlen)
{
	json_t *ev;
	int rc = -1;

	if (cs->remote != NULL)
		return credclient_admin_audit(cs->remote, action, user, ip, reason, err, errlen);
	if (cs->audit == NULL) {
		snprintf(err, errlen, "no audit log");
		return -1;
	}
	if ((ev = audit_admin_event((enum audit_admin_action)action, user, ip, NULL)) == NULL ||
	    (reason != NULL && audit_set_str(ev, "reason", reason) == -1))
		snprintf(err, errlen, "out of memory");
	else
		rc = audit_append(cs->audit, ev, err, errlen);
	json_decref(ev);
	return rc;
}
