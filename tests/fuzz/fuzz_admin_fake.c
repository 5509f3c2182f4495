/*
 * fuzz_admin_fake.c: the fake admin server of fuzz_admin.h. It stands in
 * for admin_server.c (request headers from a list instead of libmicrohttpd,
 * suspension without a connection; replies are built by the real
 * admin_reply.c), admin_worker.c (jobs run in order once the route returns,
 * as a worker and then the loop would), admin_verify.c (the upstream's
 * verdict is an option), the credential store (one account with one alias,
 * one admin user), the audit views, the metrics and the embedded page. The
 * log is the real one (proxy/log.c); its lines are caught by pointing
 * stderr at a memory stream while the routes run.
 */
#include "fuzz_admin.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "config.h"
#include "credential.h"
#include "relay_ctl.h"
#include "spool.h"
#include "util.h"

#include "fuzz_util.h"

#define FAKE_NOW	1000000		/* monotonic seconds: sessions and throttling */
#define FAKE_IP		"127.0.0.1"

struct fake_state fake;

static struct config fake_cfg;
static int fake_token;			/* what the opaque handles point at */
static struct admin_job *fake_jobs[ADMIN_JOBS_MAX];
static size_t fake_n_jobs;
static struct {
	admin_verify_cb	*cb;
	void		*arg;
} fake_checks[4];
static size_t fake_n_checks;
static struct {
	cred_login_cb	*cb;
	void		*arg;
	int		 ok;
} fake_logins[4];
static size_t fake_n_logins;

/* ---- Recording --------------------------------------------------------- */

static void
out_add(const char *s, size_t len)
{
	size_t room;

	if (s == NULL || fake.out == NULL)
		return;
	room = FAKE_OUT_MAX - fake.out_len;
	if (len > room)
		len = room;
	memcpy(fake.out + fake.out_len, s, len);
	fake.out_len += len;
}

static void
out_str(const char *s)
{
	if (s != NULL) {
		out_add(s, strlen(s));
		out_add("\n", 1);
	}
}

static void
secret_copy(struct fake_secret *dst, const struct vault_secret *s)
{
	memset(dst, 0, sizeof(*dst));
	dst->seen = 1;
	if (s == NULL || s->buf == NULL)
		return;
	FUZZ_CHECK(s->buf[s->len] == '\0', "secret of %zu bytes not NUL-terminated", s->len);
	dst->len = s->len < sizeof(dst->buf) ? s->len : sizeof(dst->buf);
	memcpy(dst->buf, s->buf, dst->len);
}

/* ---- admin_server.c -------------------------------------------------------- */

time_t
admin_now(void)
{
	return FAKE_NOW;
}

/* libmicrohttpd looks header names up case-insensitively, first one wins. */
const char *
admin_req_header(struct admin_req *r, const char *name)
{
	size_t i;

	for (i = 0; i < fake.n_headers; i++)
		if (strcasecmp(fake.hname[i], name) == 0)
			return fake.hval[i];
	return NULL;
}

void
admin_req_suspend(struct admin_req *r, void *pending, void (*cancel)(struct admin_req *))
{
	FUZZ_CHECK(r->state != ADMIN_REQ_WAITING, "suspended twice");
	r->pending = pending;
	r->cancel = cancel;
	r->state = ADMIN_REQ_WAITING;
	TAILQ_INSERT_TAIL(&r->srv->waiting, r, entry);
	fake.suspended++;
}

void
admin_req_resume(struct admin_req *r)
{
	FUZZ_CHECK(r->state == ADMIN_REQ_WAITING, "resumed without a suspension");
	TAILQ_REMOVE(&r->srv->waiting, r, entry);
	r->pending = NULL;
	r->cancel = NULL;
	/* admin_access() queues the reply at MHD's next call. */
	r->state = ADMIN_REQ_REPLIED;
	fake.resumed++;
}

/* ---- admin_worker.c, admin_verify.c ---------------------------------------- */

int
admin_workers_submit(struct admin_workers *w, struct admin_job *job)
{
	FUZZ_CHECK(w == (struct admin_workers *)&fake_token, "unknown worker pool");
	if (fake.opts.workers_full || fake_n_jobs >= ADMIN_JOBS_MAX)
		return -1;
	fake_jobs[fake_n_jobs++] = job;
	return 0;
}

struct admin_verify *
admin_verify_start(struct admin_server *srv, const struct cred_info *ci,
    const struct vault_secret *secret, admin_verify_cb *cb, void *arg)
{
	FUZZ_CHECK(fake_n_checks < ARRAY_SIZE(fake_checks), "too many upstream checks");
	FUZZ_CHECK(ci != NULL && memchr(ci->address, '\0', sizeof(ci->address)) != NULL,
	    "check for an unterminated address");
	fake.verify_started++;
	secret_copy(&fake.verified, secret);
	fake_checks[fake_n_checks].cb = cb;
	fake_checks[fake_n_checks].arg = arg;
	fake_n_checks++;
	return (struct admin_verify *)&fake_token;
}

void
admin_verify_cancel(struct admin_verify *v)
{
	FUZZ_CHECK(0, "an upstream check was cancelled while the server runs");
}

/* ---- Audit views, metrics, the page ------------------------------------------ */

json_t *
admin_audit_page(const struct admin_audit_query *q, char *err, size_t errlen)
{
	fake.audit_queried++;
	fake.privileged++;
	fake.audit_csv = 0;
	fake.q = *q;
	return json_pack("{s:[], s:n}", "entries", "next_cursor");
}

char *
admin_audit_csv(const struct admin_audit_query *q, size_t *len, char *err, size_t errlen)
{
	char *s = strdup("ts,event,account\n");

	fake.audit_queried++;
	fake.privileged++;
	fake.audit_csv = 1;
	fake.q = *q;
	*len = s != NULL ? strlen(s) : 0;
	if (s == NULL)
		snprintf(err, errlen, "out of memory");
	return s;
}

struct admin_usage *
admin_usage_scan(const char *audit_path, time_t now, char *err, size_t errlen)
{
	fake.privileged++;
	return calloc(1, sizeof(struct admin_usage));
}

/*
 * With reply_8bit, the account's last error is an upstream reply that
 * admin_audit.c kept cut inside a UTF-8 sequence.
 */
const struct admin_usage_row *
admin_usage_find(const struct admin_usage *u, const char *account)
{
	static struct admin_usage_row row;

	if (u == NULL || !fake.opts.reply_8bit || strcasecmp(account, FAKE_ACCOUNT) != 0)
		return NULL;
	memset(&row, 0, sizeof(row));
	strlcpy(row.account, FAKE_ACCOUNT, sizeof(row.account));
	row.messages_24h = 3;
	row.recipients_24h = 5;
	strlcpy(row.last_delivery, "2026-11-25T08:00:00Z", sizeof(row.last_delivery));
	strlcpy(row.last_error, "2026-11-25T09:00:00Z", sizeof(row.last_error));
	strlcpy(row.last_error_status, "failed", sizeof(row.last_error_status));
	strlcpy(row.last_error_reply, "550 5.7.1 Nachricht abgelehnt: \xc3", sizeof(row.last_error_reply));
	return &row;
}

void
admin_usage_free(struct admin_usage *u)
{
	if (u != NULL) {
		free(u->rows);
		free(u);
	}
}

char *
admin_metrics_text(struct admin_server *srv, size_t *len)
{
	char *s = strdup("smtpvault_queue_depth 0\n");

	*len = s != NULL ? strlen(s) : 0;
	return s;
}

const struct admin_asset *
admin_asset_find(const char *path)
{
	static const unsigned char page[] = "<!doctype html><title>smtpvault</title>";
	static const struct admin_asset assets[] = {
		{ "/", "text/html; charset=utf-8", page, sizeof(page) - 1 },
		{ "/app.js", "text/javascript; charset=utf-8", page, sizeof(page) - 1 },
		{ "/app.css", "text/css; charset=utf-8", page, sizeof(page) - 1 },
	};
	size_t i;

	for (i = 0; i < ARRAY_SIZE(assets); i++)
		if (strcmp(assets[i].path, path) == 0)
			return &assets[i];
	return NULL;
}

/*
 * delivery = direct: there is no relay (srv.rc is NULL) and so no queue;
 * the relay's control link must never be reached.
 */
enum relay_ctl_mode
relay_ctl_stats(struct relay_ctl_client *c, struct queue_stats *st)
{
	FUZZ_CHECK(0, "relay_ctl_stats() in direct mode");
	return RELAY_CTL_DIRECT;
}

ssize_t
relay_ctl_list(struct relay_ctl_client *c, size_t max, void (*cb)(void *, json_t *),
    void *arg, int *truncated)
{
	FUZZ_CHECK(0, "relay_ctl_list() in direct mode");
	return 0;
}

void
relay_ctl_holds(struct relay_ctl_client *c, void (*cb)(void *, const struct relay_ctl_hold *),
    void *arg)
{
	FUZZ_CHECK(0, "relay_ctl_holds() in direct mode");
}

void
relay_ctl_pool(struct relay_ctl_client *c, const char *account, struct upstream_pool_stats *st)
{
	FUZZ_CHECK(0, "relay_ctl_pool() in direct mode");
}

int
relay_ctl_retry(struct relay_ctl_client *c, const char *id)
{
	FUZZ_CHECK(0, "relay_ctl_retry() in direct mode");
	return -1;
}

int
relay_ctl_delete(struct relay_ctl_client *c, const char *id, const char *by,
    void (*done)(void *, int, int), void *arg)
{
	FUZZ_CHECK(0, "relay_ctl_delete() in direct mode");
	return -1;
}

void
relay_ctl_delete_cancel(struct relay_ctl_client *c, void *arg)
{
	FUZZ_CHECK(0, "relay_ctl_delete_cancel() in direct mode");
}

int
spool_id_valid(const char *id)
{
	FUZZ_CHECK(0, "spool_id_valid() in direct mode");
	return 0;
}

/* ---- The credential store ------------------------------------------------------ */

static int
is_fake_account(const char *addr)
{
	return strcasecmp(addr, FAKE_ACCOUNT) == 0 || strcasecmp(addr, FAKE_ALIAS) == 0;
}

static void
fake_info(struct cred_info *ci)
{
	memset(ci, 0, sizeof(*ci));
	strlcpy(ci->address, FAKE_ACCOUNT, sizeof(ci->address));
	ci->upstream_tls = -1;
	ci->daily_limit = VAULT_DEFAULT_DAILY_LIMIT;
	ci->daily_rcpt_limit = VAULT_DEFAULT_RCPT_LIMIT;
	ci->version = 1;
}

static enum cred_admin_result
fake_store_result(const char *what, char *err, size_t errlen)
{
	if (fake.opts.store != CRED_ADMIN_OK)
		snprintf(err, errlen, "fake vault refuses the %s (%d)", what,
		    (int)fake.opts.store);
	return fake.opts.store;
}

static void
addr_copy(char *dst, size_t dstlen, const char *addr)
{
	FUZZ_CHECK(addr != NULL && strnlen(addr, VAULT_ADDR_MAX) < VAULT_ADDR_MAX,
	    "address longer than VAULT_ADDR_MAX reached the vault");
	strlcpy(dst, addr, dstlen);
}

enum cred_result
credstore_info(struct credstore *cs, const char *account, struct cred_info *out)
{
	fake.info_asked++;
	addr_copy(fake.info_addr, sizeof(fake.info_addr), account);
	if (!is_fake_account(account))
		return CRED_PERMFAIL;
	fake_info(out);
	return CRED_OK;
}

int
credstore_healthy(struct credstore *cs, char *err, size_t errlen)
{
	return 0;
}

size_t
credstore_account_count(struct credstore *cs)
{
	fake.privileged++;
	return 1;
}

int
credstore_account_view(struct credstore *cs, size_t i, struct cred_account_view *out)
{
	fake.privileged++;
	if (i != 0)
		return -1;
	memset(out, 0, sizeof(*out));
	fake_info(&out->info);
	strlcpy(out->aliases[0], FAKE_ALIAS, sizeof(out->aliases[0]));
	out->n_aliases = 1;
	out->created = out->rotated = 1700000000;
	out->versions[0] = 1;
	out->version_created[0] = 1700000000;
	out->n_versions = 1;
	return 0;
}

enum cred_admin_result
credstore_account_add(struct credstore *cs, const struct vault_account *tmpl,
    const struct vault_secret *secret, const char *by, const char *ip, char *err,
    size_t errlen)
{
	fake.added++;
	fake.changed++;
	fake.add_tmpl = *tmpl;
	secret_copy(&fake.stored, secret);
	out_str(by);
	out_str(ip);
	return fake_store_result("add", err, errlen);
}

enum cred_admin_result
credstore_account_rotate(struct credstore *cs, const char *addr,
    const struct vault_secret *secret, const char *by, const char *ip, uint32_t *version,
    char *err, size_t errlen)
{
	fake.rotated++;
	fake.changed++;
	addr_copy(fake.change_addr, sizeof(fake.change_addr), addr);
	secret_copy(&fake.stored, secret);
	out_str(by);
	*version = 2;
	return fake_store_result("rotation", err, errlen);
}

enum cred_admin_result
credstore_account_rollback(struct credstore *cs, const char *addr, const char *by,
    const char *ip, uint32_t *version, char *err, size_t errlen)
{
	fake.rolled_back++;
	fake.changed++;
	addr_copy(fake.change_addr, sizeof(fake.change_addr), addr);
	out_str(by);
	if (!is_fake_account(addr)) {
		snprintf(err, errlen, "no account %s", addr);
		return CRED_ADMIN_NOT_FOUND;
	}
	*version = 1;
	return fake_store_result("rollback", err, errlen);
}

enum cred_admin_result
credstore_account_remove(struct credstore *cs, const char *addr, const char *by,
    const char *ip, char *err, size_t errlen)
{
	fake.removed++;
	fake.changed++;
	addr_copy(fake.change_addr, sizeof(fake.change_addr), addr);
	out_str(by);
	if (!is_fake_account(addr)) {
		snprintf(err, errlen, "no account %s", addr);
		return CRED_ADMIN_NOT_FOUND;
	}
	return fake_store_result("removal", err, errlen);
}

/* The keeper's check of a login: answered after the route returns, as the
 * keeper would from a later loop turn. */
int
credstore_admin_verify(struct credstore *cs, struct event_base *base, const char *name,
    const struct vault_secret *password, cred_login_cb *cb, void *arg)
{
	FUZZ_CHECK(fake_n_logins < ARRAY_SIZE(fake_logins), "too many logins");
	if (fake.opts.workers_full)
		return -1;
	fake.login_checked++;
	strlcpy(fake.login_name, name, sizeof(fake.login_name));
	secret_copy(&fake.login_pw, password);
	fake_logins[fake_n_logins].cb = cb;
	fake_logins[fake_n_logins].arg = arg;
	fake_logins[fake_n_logins].ok = strcmp(name, FAKE_ADMIN) == 0 && fake.opts.login_ok;
	fake_n_logins++;
	return 0;
}

void
credstore_admin_verify_cancel(struct credstore *cs, void *arg)
{
	FUZZ_CHECK(0, "a login was cancelled while the server runs");
}

int
credstore_admin_audit(struct credstore *cs, int action, const char *user, const char *ip,
    const char *reason, char *err, size_t errlen)
{
	out_str(user);
	out_str(ip);
	out_str(reason);
	return 0;
}

/* ---- The fake server's life cycle ------------------------------------------------ */

void
fake_begin(const struct fake_opts *opts)
{
	const struct admin_session *s;

	memset(&fake, 0, sizeof(fake));
	fake.opts = *opts;
	if (fake_cfg.audit_path[0] == '\0') {
		strlcpy(fake_cfg.audit_path, FAKE_AUDIT_PATH, sizeof(fake_cfg.audit_path));
		strlcpy(fake_cfg.upstream_host, "smtp.gmail.com", sizeof(fake_cfg.upstream_host));
		fake_cfg.upstream_port = 587;
		fake_cfg.upstream_tls = UPSTREAM_TLS_STARTTLS;
		fake_cfg.delivery = DELIVERY_DIRECT;
	}
	fake.srv.cfg = &fake_cfg;
	fake.srv.cs = (struct credstore *)&fake_token;
	fake.srv.workers = (struct admin_workers *)&fake_token;
	fake.srv.tls = opts->tls;
	fake.srv.listen_fd = -1;
	TAILQ_INIT(&fake.srv.waiting);
	if ((fake.srv.sessions = admin_sessions_new()) == NULL ||
	    (fake.srv.throttle = admin_throttle_new()) == NULL ||
	    (fake.out = malloc(FAKE_OUT_MAX)) == NULL)
		abort();
	s = admin_session_create(fake.srv.sessions, FAKE_ADMIN, FAKE_IP, FAKE_NOW, fake.sid);
	strlcpy(fake.csrf, s->csrf, sizeof(fake.csrf));
	fake_n_jobs = 0;
	fake_n_checks = 0;
	fake_n_logins = 0;
}

void
fake_header(const char *name, const char *value)
{
	if (fake.n_headers >= FAKE_HEADERS_MAX)
		return;
	if ((fake.hname[fake.n_headers] = strdup(name)) == NULL ||
	    (fake.hval[fake.n_headers] = strdup(value)) == NULL)
		abort();
	fake.n_headers++;
}

struct admin_req *
fake_request(const char *method, const char *uri, const uint8_t *body, size_t len)
{
	struct admin_req *r;

	/* What req_precheck() refuses never reaches the routes. */
	if (strlen(method) >= sizeof(r->method) || strlen(uri) > ADMIN_URI_MAX ||
	    len > ADMIN_BODY_MAX)
		return NULL;
	if ((r = calloc(1, sizeof(*r))) == NULL || (r->uri = strdup(uri)) == NULL)
		abort();
	r->srv = &fake.srv;
	r->state = ADMIN_REQ_BODY;
	strlcpy(r->method, method, sizeof(r->method));
	strlcpy(r->ip, FAKE_IP, sizeof(r->ip));
	if (len > 0) {
		/* As req_body_add() keeps it: the bytes and a NUL. */
		if ((r->body = malloc(len + 1)) == NULL)
			abort();
		memcpy(r->body, body, len);
		r->body[len] = '\0';
		r->body_len = len;
	}
	return r;
}

/* Properties of every reply, whatever the request. */
static void
check_reply(const struct admin_req *r)
{
	const struct admin_reply *rep = &r->reply;
	json_error_t e;
	json_t *j;
	size_t i;
	const char *p;

	FUZZ_CHECK(r->have_reply, "no reply for %s %s", r->method, r->uri);
	FUZZ_CHECK(rep->status >= 200 && rep->status <= 599, "status %d", rep->status);
	/* 500 is "out of memory" or "no reply": neither may happen here. */
	FUZZ_CHECK(rep->status != 500, "500 for %s %.80s: %.*s", r->method, r->uri,
	    (int)(rep->len > 200 ? 200 : rep->len), rep->body != NULL ? rep->body : "");
	FUZZ_CHECK(rep->body != NULL || rep->len == 0, "body NULL with length %zu", rep->len);
	FUZZ_CHECK(rep->n_headers <= ADMIN_REPLY_HEADERS, "%zu headers", rep->n_headers);
	for (i = 0; i < rep->n_headers; i++) {
		/* Header injection: nothing that could end the header. */
		for (p = rep->hname[i]; *p != '\0'; p++)
			FUZZ_CHECK((unsigned char)*p > 0x20 && *p != 0x7f && *p != ':',
			    "header name %s", rep->hname[i]);
		for (p = rep->hval[i]; *p != '\0'; p++)
			FUZZ_CHECK((unsigned char)*p >= 0x20 && *p != 0x7f,
			    "control byte 0x%02x in header %s", (unsigned char)*p, rep->hname[i]);
	}
	if (rep->ctype != NULL && strncmp(rep->ctype, "application/json", 16) == 0) {
		j = json_loadb(rep->body, rep->len, 0, &e);
		FUZZ_CHECK(json_is_object(j), "reply %d is not a JSON object: %.*s", rep->status,
		    (int)(rep->len > 200 ? 200 : rep->len), rep->body);
		if (rep->status >= 400)
			FUZZ_CHECK(json_is_string(json_object_get(j, "error")),
			    "error reply %d without \"error\"", rep->status);
		json_decref(j);
	}
}

void
fake_dispatch(struct admin_req *r)
{
	FILE *saved = stderr, *mem;
	char *logbuf = NULL;
	size_t loglen = 0, i;

	/* The log lines of the routes, jobs and checks, into fake.out. */
	if ((mem = open_memstream(&logbuf, &loglen)) == NULL)
		abort();
	stderr = mem;
	admin_api_dispatch(r);
	/* A worker runs each job, then the loop its completion. */
	for (i = 0; i < fake_n_jobs; i++) {
		fake_jobs[i]->run(fake_jobs[i]);
		fake_jobs[i]->done(fake_jobs[i]);
	}
	fake_n_jobs = 0;
	/* The keeper answers each login. */
	for (i = 0; i < fake_n_logins; i++)
		fake_logins[i].cb(fake_logins[i].arg, fake_logins[i].ok ? CRED_LOGIN_OK :
		    CRED_LOGIN_FAILED, fake_logins[i].ok ? FAKE_ADMIN : "");
	fake_n_logins = 0;
	/* The upstream answers each check of a new App Password. */
	for (i = 0; i < fake_n_checks; i++) {
		switch (fake.opts.verify) {
		case FAKE_VERIFY_PASS:
			fake_checks[i].cb(fake_checks[i].arg, 1, 0, fake.opts.reply_8bit ?
			    FAKE_VERIFY_OK_8BIT : FAKE_VERIFY_OK);
			break;
		case FAKE_VERIFY_REFUSE:
			fake_checks[i].cb(fake_checks[i].arg, 0, 1, fake.opts.reply_8bit ?
			    FAKE_VERIFY_REFUSED_8BIT : FAKE_VERIFY_REFUSED);
			break;
		case FAKE_VERIFY_UNREACHABLE:
			fake_checks[i].cb(fake_checks[i].arg, 0, 0, "");
			break;
		}
	}
	fake_n_checks = 0;
	fflush(mem);
	stderr = saved;
	out_add(logbuf, loglen);
	fclose(mem);
	free(logbuf);

	FUZZ_CHECK(fake.suspended == fake.resumed, "%d suspended, %d resumed",
	    fake.suspended, fake.resumed);
	FUZZ_CHECK(TAILQ_EMPTY(&fake.srv.waiting), "a request still waits");
	check_reply(r);
	/* To see what the seeds reach: FUZZ_ADMIN_VERBOSE=1 fuzz_admin_x FILE... */
	if (getenv("FUZZ_ADMIN_VERBOSE") != NULL)
		fprintf(stderr, "%s %.60s -> %d login=%d add=%d rotate=%d verify=%d "
		    "audit=%d privileged=%d changed=%d: %.*s\n", r->method, r->uri,
		    r->reply.status, fake.login_checked, fake.added, fake.rotated,
		    fake.verify_started, fake.audit_queried, fake.privileged, fake.changed,
		    (int)(r->reply.len > 120 ? 120 : r->reply.len),
		    r->reply.body != NULL ? r->reply.body : "");
}

void
fake_end(struct admin_req *r)
{
	size_t i;

	if (r != NULL) {
		free(r->body);
		free(r->uri);
		free(r->reply.body);
		free(r);
	}
	for (i = 0; i < fake.n_headers; i++) {
		free(fake.hname[i]);
		free(fake.hval[i]);
	}
	admin_sessions_free(fake.srv.sessions);
	admin_throttle_free(fake.srv.throttle);
	admin_usage_free(fake.srv.usage);
	free(fake.out);
	sodium_memzero(&fake.login_pw, sizeof(fake.login_pw));
	memset(&fake, 0, sizeof(fake));
}

int
fake_output_has(const struct admin_req *r, const void *needle, size_t len)
{
	size_t i;

	if (r->reply.body != NULL && memmem(r->reply.body, r->reply.len, needle, len) != NULL)
		return 1;
	for (i = 0; i < r->reply.n_headers; i++)
		if (memmem(r->reply.hval[i], strlen(r->reply.hval[i]), needle, len) != NULL)
			return 1;
	return memmem(fake.out, fake.out_len, needle, len) != NULL;
}

size_t
fake_json_depth(const json_t *v)
{
	const char *key;
	json_t *e;
	size_t i, d, max = 0;

	if (json_is_array(v)) {
		json_array_foreach(v, i, e)
			if ((d = fake_json_depth(e)) > max)
				max = d;
		return max + 1;
	}
	if (json_is_object(v)) {
		json_object_foreach((json_t *)(uintptr_t)v, key, e)
			if ((d = fake_json_depth(e)) > max)
				max = d;
		return max + 1;
	}
	return 0;
}
