/*
 * admin_api.c: the routes of SPEC section 8. One table says, for each
 * method and path, whether a session is needed and whether the request
 * changes state (then it also needs the session's X-CSRF-Token and, when the
 * browser sends one, a same-origin Origin); dispatch checks those in that
 * order (401, then 403) before a handler sees the request.
 *
 * Design decisions worth knowing:
 *  - A state-changing request without an Origin header but with a valid
 *    CSRF token is accepted: browsers send Origin on every cross-site POST
 *    and DELETE, so its absence means a non-browser client (curl, a script),
 *    and the token already proves that the caller read it from a
 *    same-origin response. Sec-Fetch-Site, when sent, must not be
 *    "cross-site" or "same-site".
 *  - Request bodies must be Content-Type: application/json (415
 *    otherwise), which an HTML form cannot send; unknown keys are refused
 *    (400) so that a typo never passes silently.
 *  - Passwords are copied out of the parsed JSON into guarded memory and
 *    the parser's copy is zeroed in place; the raw body is zeroed right
 *    after parsing. jansson's lexer frees a scratch copy of each string
 *    token without wiping it; that copy is the one residue left.
 *  - The API names an account by its address (not an alias); an unknown
 *    one is 404.
 */
#include "admin_internal.h"

#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <sodium.h>

#include "audit.h"
#include "config.h"
#include "credential.h"
#include "log.h"
#include "relay_ctl.h"
#include "spool.h"
#include "util.h"

#define API_PREFIX		"/api/v1/"
#define API_LIMIT_MAX		1000000000	/* daily limits, as the CLI */
#define API_CRED_AGE_WARN	(90 * 86400)	/* the page warns past this age */
#define API_BY_MAX		(VAULT_NAME_MAX + 8)
#define API_TIME_MAX		64
#define API_QUEUE_LIST_MAX	RELAY_CTL_LIST_MAX	/* entries in one GET /queue; "depth"
							 * counts all */

struct route_ctx {
	char				 arg[VAULT_ADDR_MAX];	/* decoded {address} / {id} */
	const char			*query;			/* raw, after '?', or NULL */
	const struct admin_session	*session;
};

typedef void route_fn(struct admin_req *, struct route_ctx *);

/* What the queue holds per account (the dashboard), from the relay. */
struct api_queue_accts {
	struct relay_ctl_hold	*v;
	size_t			 n;
};

static void	queue_accounts(struct admin_server *, struct api_queue_accts *);
static const struct relay_ctl_hold *queue_account_find(const struct api_queue_accts *,
		    const char *);

struct route {
	const char	*method;
	const char	*pattern;	/* '*' is one path segment */
	int		 auth;		/* needs a session */
	int		 change;	/* changes state: CSRF token and same origin */
	route_fn	*fn;
};

static route_fn route_asset, route_healthz, route_metrics, route_login, route_logout,
    route_session, route_accounts, route_account_add, route_rotate, route_rollback,
    route_remove, route_audit, route_audit_csv, route_queue, route_queue_retry,
    route_queue_delete;

static const struct route routes[] = {
	{ "GET",	"/",				0, 0, route_asset },
	{ "GET",	"/app.js",			0, 0, route_asset },
	{ "GET",	"/app.css",			0, 0, route_asset },
	{ "GET",	"/healthz",			0, 0, route_healthz },
	{ "GET",	"/metrics",			0, 0, route_metrics },
	{ "POST",	"/api/v1/login",		0, 0, route_login },
	{ "POST",	"/api/v1/logout",		1, 1, route_logout },
	{ "GET",	"/api/v1/session",		1, 0, route_session },
	{ "GET",	"/api/v1/accounts",		1, 0, route_accounts },
	{ "POST",	"/api/v1/accounts",		1, 1, route_account_add },
	{ "POST",	"/api/v1/accounts/*/rotate",	1, 1, route_rotate },
	{ "POST",	"/api/v1/accounts/*/rollback",	1, 1, route_rollback },
	{ "DELETE",	"/api/v1/accounts/*",		1, 1, route_remove },
	{ "GET",	"/api/v1/audit",		1, 0, route_audit },
	{ "GET",	"/api/v1/audit.csv",		1, 0, route_audit_csv },
	{ "GET",	"/api/v1/queue",		1, 0, route_queue },
	{ "POST",	"/api/v1/queue/*/retry",	1, 1, route_queue_retry },
	{ "DELETE",	"/api/v1/queue/*",		1, 1, route_queue_delete },
};

/* ---- Small helpers ------------------------------------------------------ */

static int
is_api(const char *path)
{
	return strncmp(path, API_PREFIX, strlen(API_PREFIX)) == 0;
}

static void
fmt_time(int64_t t, char *buf, size_t len)
{
	time_rfc3339((time_t)t, buf, len);
}

/* Does path (len bytes) match pattern? The '*' segment goes to arg/arglen. */
static int
path_match(const char *pattern, const char *path, size_t len, const char **arg,
    size_t *arglen)
{
	const char *p = pattern, *q = path, *end = path + len, *seg;

	*arg = NULL;
	*arglen = 0;
	while (*p != '\0' && q < end) {
		if (*p == '*') {
			seg = q;
			while (q < end && *q != '/')
				q++;
			if (q == seg)
				return 0;
			*arg = seg;
			*arglen = (size_t)(q - seg);
			p++;
			continue;
		}
		if (*p != *q)
			return 0;
		p++;
		q++;
	}
	return *p == '\0' && q == end;
}

/* A query parameter, decoded. 1 found, 0 absent (or empty), -1 malformed. */
static int
query_get(const char *query, const char *key, char *out, size_t outlen)
{
	const char *p = query, *amp, *eq;
	char name[64];
	size_t klen;

	out[0] = '\0';
	while (p != NULL && *p != '\0') {
		amp = strchr(p, '&');
		klen = amp != NULL ? (size_t)(amp - p) : strlen(p);
		eq = memchr(p, '=', klen);
		if (eq != NULL && admin_pct_decode(p, (size_t)(eq - p), 1, name,
		    sizeof(name)) == 0 && strcmp(name, key) == 0) {
			if (admin_pct_decode(eq + 1, klen - (size_t)(eq + 1 - p), 1, out,
			    outlen) == -1)
				return -1;
			return out[0] != '\0';
		}
		p = amp != NULL ? amp + 1 : NULL;
	}
	return 0;
}

/*
 * The request body as a JSON object, or NULL with the reply set (415, 400).
 * The raw body is zeroed once parsed.
 */
static json_t *
body_json(struct admin_req *r)
{
	const char *ct = admin_req_header(r, "Content-Type");
	json_error_t e;
	json_t *root;

	if (ct == NULL || strncasecmp(ct, "application/json", strlen("application/json")) != 0) {
		admin_reply_error(r, 415, "the body must be application/json");
		return NULL;
	}
	if (r->body == NULL || r->body_len == 0) {
		admin_reply_error(r, 400, "a JSON object is required");
		return NULL;
	}
	if (!admin_json_depth_ok((const char *)r->body, r->body_len, ADMIN_JSON_DEPTH_MAX)) {
		sodium_memzero(r->body, r->body_len);
		admin_reply_error(r, 400, "JSON nested deeper than %d levels", ADMIN_JSON_DEPTH_MAX);
		return NULL;
	}
	root = json_loadb((const char *)r->body, r->body_len, JSON_REJECT_DUPLICATES, &e);
	sodium_memzero(r->body, r->body_len);
	if (root == NULL) {
		/* e.text may quote the body, which may hold a password: not echoed. */
		admin_reply_error(r, 400, "bad JSON at line %d, column %d", e.line, e.column);
		return NULL;
	}
	if (!json_is_object(root)) {
		json_decref(root);
		admin_reply_error(r, 400, "a JSON object is required");
		return NULL;
	}
	return root;
}

/* Refuse keys outside allowed (NULL-terminated). */
static int
keys_allowed(struct admin_req *r, json_t *obj, const char *const *allowed)
{
	const char *key;
	json_t *v;
	size_t i;

	json_object_foreach(obj, key, v) {
		for (i = 0; allowed[i] != NULL && strcmp(allowed[i], key) != 0; i++)
			;
		if (allowed[i] == NULL) {
			admin_reply_error(r, 400, "unknown key \"%.64s\"", key);
			return -1;
		}
	}
	return 0;
}

/* Wipe every "password" string of obj in place (jansson's own copy). */
static void
wipe_passwords(json_t *obj)
{
	json_t *v = json_object_get(obj, "password");

	if (json_is_string(v))
		sodium_memzero((char *)(uintptr_t)json_string_value(v), json_string_length(v));
}

/* obj.password into guarded memory; App Passwords lose their spaces. */
static int
take_password(struct admin_req *r, json_t *obj, int app_password, struct vault_secret *out)
{
	json_t *v = json_object_get(obj, "password");
	int rc;

	memset(out, 0, sizeof(*out));
	if (!json_is_string(v)) {
		admin_reply_error(r, 400, "\"password\" must be a string");
		return -1;
	}
	rc = vault_secret_set(out, (const unsigned char *)json_string_value(v),
	    json_string_length(v));
	wipe_passwords(obj);
	if (rc == -1) {
		admin_reply_error(r, 503, "out of guarded memory");
		return -1;
	}
	if (app_password) {
		out->len = vault_normalize_app_password(out->buf, out->len);
		out->buf[out->len] = '\0';
	}
	if (out->len == 0 || out->len > VAULT_SECRET_MAX) {
		vault_secret_wipe(out);
		admin_reply_error(r, 400, "\"password\" must be 1 to %d characters",
		    VAULT_SECRET_MAX);
		return -1;
	}
	return 0;
}

static void
cookie_set(struct admin_req *r, const char *value, int expire)
{
	char c[256];

	snprintf(c, sizeof(c), "%s=%s; Path=/; HttpOnly; SameSite=Strict%s%s",
	    r->srv->tls ? ADMIN_COOKIE_NAME_TLS : ADMIN_COOKIE_NAME, value,
	    r->srv->tls ? "; Secure" : "", expire ? "; Max-Age=0" : "");
	admin_reply_header(r, "Set-Cookie", c);
}

static const char *
cookie_name(struct admin_req *r)
{
	return r->srv->tls ? ADMIN_COOKIE_NAME_TLS : ADMIN_COOKIE_NAME;
}

static int
result_status(enum cred_admin_result rc)
{
	switch (rc) {
	case CRED_ADMIN_OK:
		return 200;
	case CRED_ADMIN_NOT_FOUND:
		return 404;
	case CRED_ADMIN_EXISTS:
	case CRED_ADMIN_NO_PREVIOUS:
		return 409;
	case CRED_ADMIN_INVALID:
		return 400;
	case CRED_ADMIN_UNAVAILABLE:
		break;
	}
	return 503;
}

/* The account named exactly by addr (not an alias), or -1. */
static int
account_exact(struct admin_server *srv, const char *addr, struct cred_info *ci)
{
	return credstore_info(srv->cs, addr, ci) == CRED_OK &&
	    strcasecmp(ci->address, addr) == 0 ? 0 : -1;
}

/* ---- Dispatch ------------------------------------------------------------- */

/* The same-origin and CSRF checks of a state-changing request. */
static int
change_allowed(struct admin_req *r, const struct admin_session *s)
{
	const char *site = admin_req_header(r, "Sec-Fetch-Site");

	if (!admin_origin_ok(admin_req_header(r, "Origin"), admin_req_header(r, "Host"),
	    r->srv->tls) || (site != NULL && (strcasecmp(site, "cross-site") == 0 ||
	    strcasecmp(site, "same-site") == 0))) {
		admin_reply_error(r, 403, "cross-site request refused");
		return -1;
	}
	if (s != NULL && !admin_token_equal(admin_req_header(r, "X-CSRF-Token"), s->csrf)) {
		admin_reply_error(r, 403, "missing or wrong X-CSRF-Token");
		return -1;
	}
	return 0;
}

void
admin_api_dispatch(struct admin_req *r)
{
	const struct route *rt = NULL;
	struct route_ctx ctx;
	const char *q, *arg, *method = r->method;
	char allow[64] = "", sid[ADMIN_TOKEN_HEX + 2];
	size_t i, plen, arglen;

	memset(&ctx, 0, sizeof(ctx));
	if (strcmp(method, "HEAD") == 0)
		method = "GET";
	q = strchr(r->uri, '?');
	plen = q != NULL ? (size_t)(q - r->uri) : strlen(r->uri);
	ctx.query = q != NULL ? q + 1 : NULL;
	for (i = 0; i < ARRAY_SIZE(routes); i++) {
		if (!path_match(routes[i].pattern, r->uri, plen, &arg, &arglen))
			continue;
		if (strcmp(routes[i].method, method) == 0) {
			rt = &routes[i];
			break;
		}
		if (strstr(allow, routes[i].method) == NULL) {
			if (allow[0] != '\0')
				strlcat(allow, ", ", sizeof(allow));
			strlcat(allow, routes[i].method, sizeof(allow));
		}
	}
	if (rt == NULL) {
		if (allow[0] != '\0') {
			admin_reply_error(r, 405, "method not allowed");
			admin_reply_header(r, "Allow", allow);
		} else if (plen >= strlen(API_PREFIX) && is_api(r->uri)) {
			admin_reply_error(r, 404, "no such API route");
		} else {
			admin_reply_buf(r, 404, "text/plain; charset=utf-8", 0, strdup("not found\n"),
			    10);
		}
		return;
	}
	if (arg != NULL && admin_pct_decode(arg, arglen, 0, ctx.arg, sizeof(ctx.arg)) == -1) {
		admin_reply_error(r, 400, "bad percent-encoding in the path");
		return;
	}
	if (rt->auth) {
		if (admin_cookie_get(admin_req_header(r, "Cookie"), cookie_name(r), sid,
		    sizeof(sid)) == -1 ||
		    (ctx.session = admin_session_find(r->srv->sessions, sid, admin_now())) == NULL) {
			sodium_memzero(sid, sizeof(sid));
			admin_reply_error(r, 401, "not logged in");
			return;
		}
		sodium_memzero(sid, sizeof(sid));
		strlcpy(r->user, ctx.session->user, sizeof(r->user));
	}
	if (rt->change && change_allowed(r, ctx.session) == -1)
		return;
	rt->fn(r, &ctx);
}

/* ---- Static files, health, metrics --------------------------------------- */

static void
route_asset(struct admin_req *r, struct route_ctx *ctx)
{
	const struct admin_asset *a;
	char path[64];
	const char *q = strchr(r->uri, '?');
	size_t plen = q != NULL ? (size_t)(q - r->uri) : strlen(r->uri);
	char *copy;

	if (plen >= sizeof(path) || (memcpy(path, r->uri, plen), path[plen] = '\0',
	    (a = admin_asset_find(path)) == NULL) || (copy = malloc(a->len + 1)) == NULL) {
		admin_reply_buf(r, 404, "text/plain; charset=utf-8", 0, strdup("not found\n"), 10);
		return;
	}
	memcpy(copy, a->data, a->len);
	admin_reply_buf(r, 200, a->ctype, 0, copy, a->len);
}

static void
route_healthz(struct admin_req *r, struct route_ctx *ctx)
{
	char err[256];

	if (credstore_healthy(r->srv->cs, err, sizeof(err)) == -1) {
		admin_reply_json(r, 503, json_pack("{s:s, s:s}", "status", "unavailable",
		    "vault", err));
		return;
	}
	admin_reply_json(r, 200, json_pack("{s:s, s:s}", "status", "ok", "vault", "ok"));
}

static void
route_metrics(struct admin_req *r, struct route_ctx *ctx)
{
	char *text;
	size_t len;

	if ((text = admin_metrics_text(r->srv, &len)) == NULL) {
		admin_reply_error(r, 500, "out of memory");
		return;
	}
	admin_reply_buf(r, 200, "text/plain; version=0.0.4; charset=utf-8", 1, text, len);
}

/* ---- Login and logout ------------------------------------------------------ */

/* A login while the keeper checks it (KEEPER_ADMIN_VERIFY). */
struct login_job {
	struct admin_req	*r;
	char			 typed[VAULT_NAME_MAX];
	char			 ipkey[ADMIN_THROTTLE_KEY_MAX];
	char			 userkey[ADMIN_THROTTLE_KEY_MAX];
	struct vault_secret	 password;	/* until it is sent to the keeper */
};

static void
login_audit(struct admin_server *srv, int action, const char *user, const char *ip,
    const char *reason)
{
	char err[256];

	if (credstore_admin_audit(srv->cs, action, user, ip, reason, err, sizeof(err)) == -1)
		log_err("event=audit_failed what=admin_%s error=\"%s\"",
		    action == AUDIT_ADMIN_LOGIN ? "login" : "login_failed", err);
}

/* 429 when key is locked out; the first refusal of a lock-out is audited. */
static int
login_throttled(struct admin_req *r, const char *key, const char *user)
{
	char secs[32], esc[128];
	time_t wait;
	int first;

	if (admin_throttle_check(r->srv->throttle, key, admin_now(), &wait, &first) == 0)
		return 0;
	if (first) {
		login_audit(r->srv, AUDIT_ADMIN_LOGIN_FAILED, user, r->ip, "throttled");
		log_warn("event=admin_login_throttled key=%s",
		    log_escape(esc, sizeof(esc), key, strlen(key)));
	}
	snprintf(secs, sizeof(secs), "%lld", (long long)wait);
	admin_reply_error(r, 429, "too many failed logins; try again in %lld seconds",
	    (long long)wait);
	admin_reply_header(r, "Retry-After", secs);
	return -1;
}

static void
login_job_free(struct login_job *lj)
{
	vault_secret_wipe(&lj->password);
	sodium_memzero(lj, sizeof(*lj));
	free(lj);
}

/* The keeper's answer, from a turn of the loop of its own. */
static void
login_verified(void *arg, enum cred_login res, const char *name)
{
	struct login_job *lj = arg;
	struct admin_req *r = lj->r;
	struct admin_server *srv = r->srv;
	const struct admin_session *s;
	char id[ADMIN_TOKEN_HEX + 1], err[256], esc[128];
	int ok = res == CRED_LOGIN_OK;

	admin_throttle_end(srv->throttle, lj->ipkey, admin_now(), res == CRED_LOGIN_FAILED);
	admin_throttle_end(srv->throttle, lj->userkey, admin_now(), res == CRED_LOGIN_FAILED);
	if (res == CRED_LOGIN_BUSY) {
		admin_reply_error(r, 503, "busy; try again");
		admin_reply_header(r, "Retry-After", "1");
	} else if (!ok) {
		login_audit(srv, AUDIT_ADMIN_LOGIN_FAILED, lj->typed, r->ip,
		    "wrong user name or password");
		log_warn("event=admin_login_failed user=%s ip=%s",
		    log_escape(esc, sizeof(esc), lj->typed, strlen(lj->typed)), r->ip);
		admin_reply_error(r, 401, "wrong user name or password");
	} else if (credstore_admin_audit(srv->cs, AUDIT_ADMIN_LOGIN, name, r->ip, NULL,
	    err, sizeof(err)) == -1) {
		/* A login that cannot be recorded does not happen. */
		log_err("event=audit_failed what=admin_login error=\"%s\"", err);
		admin_reply_error(r, 503, "the audit log cannot be written; login refused");
	} else {
		admin_throttle_clear(srv->throttle, lj->userkey);
		s = admin_session_create(srv->sessions, name, r->ip, admin_now(), id);
		cookie_set(r, id, 0);
		sodium_memzero(id, sizeof(id));
		log_info("event=admin_login user=%s ip=%s", s->user, r->ip);
		admin_reply_json(r, 200, json_pack("{s:s, s:s, s:i, s:i}", "user", s->user,
		    "csrf_token", s->csrf, "idle_timeout", ADMIN_SESSION_IDLE,
		    "absolute_timeout", ADMIN_SESSION_ABSOLUTE));
	}
	admin_req_resume(r);
	login_job_free(lj);
}

/* The server stops before the keeper answered. */
static void
login_cancel(struct admin_req *r)
{
	struct login_job *lj = r->pending;

	credstore_admin_verify_cancel(r->srv->cs, lj);
	login_job_free(lj);
}

static void
route_login(struct admin_req *r, struct route_ctx *ctx)
{
	static const char *const allowed[] = { "username", "password", NULL };
	struct login_job *lj = NULL;
	json_t *body = NULL, *u;
	const char *name;
	size_t i;
	int rc;

	if (change_allowed(r, NULL) == -1)
		return;
	if ((lj = calloc(1, sizeof(*lj))) == NULL) {
		admin_reply_error(r, 503, "out of memory");
		return;
	}
	lj->r = r;
	snprintf(lj->ipkey, sizeof(lj->ipkey), "ip:%s", r->ip);
	if (login_throttled(r, lj->ipkey, NULL) == -1 || (body = body_json(r)) == NULL)
		goto fail;
	if (keys_allowed(r, body, allowed) == -1)
		goto fail;
	u = json_object_get(body, "username");
	if (!json_is_string(u) || (name = json_string_value(u))[0] == '\0' ||
	    strlen(name) >= VAULT_NAME_MAX || strlen(name) != json_string_length(u)) {
		admin_reply_error(r, 400, "\"username\" must be a string of 1 to %d characters",
		    VAULT_NAME_MAX - 1);
		goto fail;
	}
	strlcpy(lj->typed, name, sizeof(lj->typed));
	snprintf(lj->userkey, sizeof(lj->userkey), "user:%s", name);
	for (i = 5; lj->userkey[i] != '\0'; i++)
		if (lj->userkey[i] >= 'A' && lj->userkey[i] <= 'Z')
			lj->userkey[i] = (char)(lj->userkey[i] - 'A' + 'a');
	if (login_throttled(r, lj->userkey, name) == -1)
		goto fail;
	if (take_password(r, body, 0, &lj->password) == -1)
		goto fail;
	json_decref(body);
	body = NULL;
	admin_throttle_begin(r->srv->throttle, lj->ipkey, admin_now());
	admin_throttle_begin(r->srv->throttle, lj->userkey, admin_now());
	/* The keeper checks it; this process keeps no copy once it is sent. */
	rc = credstore_admin_verify(r->srv->cs, r->srv->base, lj->typed, &lj->password,
	    login_verified, lj);
	vault_secret_wipe(&lj->password);
	if (rc == -1) {
		admin_throttle_end(r->srv->throttle, lj->ipkey, admin_now(), 0);
		admin_throttle_end(r->srv->throttle, lj->userkey, admin_now(), 0);
		admin_reply_error(r, 503, "busy; try again");
		admin_reply_header(r, "Retry-After", "1");
		goto fail;
	}
	admin_req_suspend(r, lj, login_cancel);
	return;
fail:
	if (body != NULL) {
		wipe_passwords(body);
		json_decref(body);
	}
	login_job_free(lj);
}

static void
route_logout(struct admin_req *r, struct route_ctx *ctx)
{
	char sid[ADMIN_TOKEN_HEX + 2];

	if (admin_cookie_get(admin_req_header(r, "Cookie"), cookie_name(r), sid,
	    sizeof(sid)) == 0)
		admin_session_destroy(r->srv->sessions, sid);
	sodium_memzero(sid, sizeof(sid));
	login_audit(r->srv, AUDIT_ADMIN_LOGOUT, r->user, r->ip, NULL);
	cookie_set(r, "", 1);
	admin_reply_json(r, 200, json_pack("{s:b}", "ok", 1));
}

static void
route_session(struct admin_req *r, struct route_ctx *ctx)
{
	admin_reply_json(r, 200, json_pack("{s:s, s:s}", "user", ctx->session->user,
	    "csrf_token", ctx->session->csrf));
}

/* ---- Accounts ----------------------------------------------------------------- */

/*
 * A refused credential comes first (a rotation is what it needs, and the
 * queue holds the account meanwhile: the hold's reason is shown as well);
 * then a hold of the queue (credential, quota, Google's daily limit, a
 * back-off) or, in direct mode, Google's daily-limit reply.
 */
static const char *
account_status(const struct cred_account_view *v, const struct admin_usage_row *u,
    const struct relay_ctl_hold *qa)
{
	if (v->info.status == VAULT_STATUS_AUTH_FAILED)
		return "failing_credential";
	if ((qa != NULL && qa->held > 0) || (u != NULL && u->quota_hold))
		return "on_hold";
	if (u != NULL && (u->messages_24h >= v->info.daily_limit ||
	    u->recipients_24h >= v->info.daily_rcpt_limit))
		return "over_quota";
	return "ok";
}

static json_t *
account_json(struct admin_server *srv, const struct cred_account_view *v,
    const struct api_queue_accts *qas, time_t now)
{
	const struct admin_usage_row *u = admin_usage_find(srv->usage, v->info.address);
	const struct relay_ctl_hold *qa = queue_account_find(qas, v->info.address);
	struct upstream_pool_stats st;
	json_t *o, *aliases, *versions, *err = json_null(), *hold = json_null();
	char created[API_TIME_MAX], rotated[API_TIME_MAX], t[API_TIME_MAX];
	char up[VAULT_HOST_MAX + 16], text[ADMIN_UPSTREAM_TEXT_MAX];
	size_t i;
	int tls;

	memset(&st, 0, sizeof(st));
	if (srv->rc != NULL)
		relay_ctl_pool(srv->rc, v->info.address, &st);
	if ((aliases = json_array()) == NULL || (versions = json_array()) == NULL)
		return NULL;
	for (i = 0; i < v->n_aliases; i++)
		json_array_append_new(aliases, json_string(v->aliases[i]));
	for (i = 0; i < v->n_versions; i++) {
		fmt_time(v->version_created[i], t, sizeof(t));
		json_array_append_new(versions, json_pack("{s:I, s:s, s:b}", "version",
		    (json_int_t)v->versions[i], "created", t,
		    "current", v->versions[i] == v->info.version));
	}
	fmt_time(v->created, created, sizeof(created));
	fmt_time(v->rotated, rotated, sizeof(rotated));
	snprintf(up, sizeof(up), "%s:%u", v->info.upstream_host[0] != '\0' ?
	    v->info.upstream_host : srv->cfg->upstream_host,
	    v->info.upstream_port != 0 ? v->info.upstream_port : srv->cfg->upstream_port);
	tls = v->info.upstream_tls >= 0 ? v->info.upstream_tls : (int)srv->cfg->upstream_tls;
	if (u != NULL && u->last_error[0] != '\0')
		err = json_pack("{s:s, s:s, s:s}", "ts", u->last_error, "status",
		    u->last_error_status, "upstream_reply",
		    admin_reply_text(u->last_error_reply, text, sizeof(text)));
	if (qa != NULL && qa->held > 0)
		hold = json_pack("{s:s, s:I}", "reason",
		    admin_reply_text(qa->reason, text, sizeof(text)),
		    "messages", (json_int_t)qa->held);
	o = json_pack("{s:s, s:o, s:I, s:o, s:s, s:s, s:I, s:b, s:I, s:I, s:s, s:s, s:s, s:s}",
	    "address", v->info.address, "aliases", aliases,
	    "version", (json_int_t)v->info.version, "versions", versions,
	    "created", created, "rotated", rotated,
	    "credential_age_seconds", (json_int_t)(now - v->rotated > 0 ? now - v->rotated : 0),
	    "credential_age_warning", now - v->rotated > API_CRED_AGE_WARN,
	    "daily_limit", (json_int_t)v->info.daily_limit,
	    "daily_recipient_limit", (json_int_t)v->info.daily_rcpt_limit,
	    "status", account_status(v, u, qa),
	    "credential_status", v->info.status == VAULT_STATUS_AUTH_FAILED ?
	    "auth_failed" : "ok",
	    "upstream", up, "tls", tls == UPSTREAM_TLS_IMPLICIT ? "implicit" : "starttls");
	if (o == NULL) {
		json_decref(err);
		json_decref(hold);
		return NULL;
	}
	json_object_set_new(o, "messages_24h", u != NULL ? json_integer((json_int_t)
	    u->messages_24h) : json_null());
	json_object_set_new(o, "recipients_24h", u != NULL ? json_integer((json_int_t)
	    u->recipients_24h) : json_null());
	json_object_set_new(o, "last_delivery", u != NULL && u->last_delivery[0] != '\0' ?
	    json_string(u->last_delivery) : json_null());
	json_object_set_new(o, "last_error", err);
	json_object_set_new(o, "queued", json_integer(qa != NULL ? (json_int_t)qa->queued : 0));
	json_object_set_new(o, "hold", hold);
	json_object_set_new(o, "upstream_sessions", json_integer((json_int_t)st.sessions));
	return o;
}

static json_t *
accounts_json(struct admin_server *srv)
{
	struct cred_account_view *v;
	struct api_queue_accts qas;
	json_t *arr, *o;
	time_t now = time(NULL);
	char ts[API_TIME_MAX];
	size_t i, n = credstore_account_count(srv->cs);

	if ((arr = json_array()) == NULL || (v = malloc(sizeof(*v))) == NULL) {
		json_decref(arr);
		return NULL;
	}
	queue_accounts(srv, &qas);
	for (i = 0; i < n; i++)
		if (credstore_account_view(srv->cs, i, v) == 0 &&
		    (o = account_json(srv, v, &qas, now)) != NULL)
			json_array_append_new(arr, o);
	free(qas.v);
	free(v);
	fmt_time(now, ts, sizeof(ts));
	return json_pack("{s:o, s:{s:s, s:I}, s:s, s:s, s:b}", "accounts", arr,
	    "queue", "mode", srv->cfg->delivery == DELIVERY_QUEUE ? "queue" : "direct",
	    "depth", (json_int_t)admin_queue_depth(srv), "now", ts,
	    "usage_source", "audit log, delivered messages in the last 24 hours",
	    "usage_known", srv->usage != NULL);
}

struct usage_job {
	struct admin_job	 job;
	struct admin_req	*r;
	char			 path[CONFIG_PATH_MAX];
	time_t			 now;
	struct admin_usage	*result;
	char			 err[256];
};

static void
usage_job_run(struct admin_job *job)
{
	struct usage_job *uj = (struct usage_job *)job;

	uj->result = admin_usage_scan(uj->path, uj->now, uj->err, sizeof(uj->err));
}

static void
usage_job_done(struct admin_job *job)
{
	struct usage_job *uj = (struct usage_job *)job;
	struct admin_server *srv;

	if (job->cancelled) {
		admin_usage_free(uj->result);
		free(uj);
		return;
	}
	srv = uj->r->srv;
	if (uj->result != NULL) {
		admin_usage_free(srv->usage);
		srv->usage = uj->result;
		srv->usage_at = admin_now();
	} else {
		log_warn("event=admin_usage_scan error=\"%s\"", uj->err);
	}
	admin_reply_json(uj->r, 200, accounts_json(srv));
	admin_req_resume(uj->r);
	free(uj);
}

static void
route_accounts(struct admin_req *r, struct route_ctx *ctx)
{
	struct admin_server *srv = r->srv;
	struct usage_job *uj;

	if (srv->usage != NULL && admin_now() - srv->usage_at < ADMIN_USAGE_CACHE_SECS) {
		admin_reply_json(r, 200, accounts_json(srv));
		return;
	}
	if ((uj = calloc(1, sizeof(*uj))) == NULL)
		goto stale;
	uj->r = r;
	strlcpy(uj->path, srv->cfg->audit_path, sizeof(uj->path));
	uj->now = time(NULL);
	uj->job.run = usage_job_run;
	uj->job.done = usage_job_done;
	if (admin_workers_submit(srv->workers, &uj->job) == -1) {
		free(uj);
		goto stale;
	}
	admin_req_suspend(r, uj, NULL);
	return;
stale:
	/* Busy: the figures of the last scan (or none) rather than a wait. */
	admin_reply_json(r, 200, accounts_json(srv));
}

/* An add or a rotation, possibly waiting for the upstream's verdict. */
struct change {
	struct admin_req	*r;
	int			 add;
	struct vault_account	*tmpl;		/* add */
	char			 address[VAULT_ADDR_MAX];
	struct vault_secret	 secret;
	struct admin_verify	*verify;
	int			 verified;
	char			 by[API_BY_MAX];
};

static void
change_free(struct change *ch)
{
	if (ch == NULL)
		return;
	vault_secret_wipe(&ch->secret);
	free(ch->tmpl);
	free(ch);
}

/* Store it: add or rotate, audited, and set the reply. */
static void
change_apply(struct change *ch, const char *upstream_reply)
{
	struct admin_req *r = ch->r;
	enum cred_admin_result rc;
	char err[512], text[ADMIN_UPSTREAM_TEXT_MAX];
	uint32_t version = 1;

	if (ch->add)
		rc = credstore_account_add(r->srv->cs, ch->tmpl, &ch->secret, ch->by, r->ip, err,
		    sizeof(err));
	else
		rc = credstore_account_rotate(r->srv->cs, ch->address, &ch->secret, ch->by,
		    r->ip, &version, err, sizeof(err));
	vault_secret_wipe(&ch->secret);
	if (rc != CRED_ADMIN_OK) {
		admin_reply_error(r, result_status(rc), "%s", err);
		return;
	}
	log_info("event=admin_account_%s account=%s version=%u by=%s ip=%s",
	    ch->add ? "add" : "rotate", ch->address, version, ch->by, r->ip);
	admin_reply_json(r, ch->add ? 201 : 200, json_pack("{s:s, s:I, s:b, s:s?}",
	    "address", ch->address, "version", (json_int_t)version, "verified", ch->verified,
	    "upstream_reply", admin_reply_text(upstream_reply, text, sizeof(text))));
}

static void
change_verified(void *arg, int ok, int refused, const char *reply)
{
	struct change *ch = arg;
	struct admin_req *r = ch->r;
	char esc[512], text[ADMIN_UPSTREAM_TEXT_MAX];

	ch->verify = NULL;	/* freed by admin_verify.c after this returns */
	if (!ok) {
		log_warn("event=admin_verify_failed account=%s refused=%s reply=\"%s\"",
		    ch->address, refused ? "yes" : "no",
		    log_escape(esc, sizeof(esc), reply, strlen(reply)));
		admin_reply_json(r, refused ? 422 : 502, json_pack("{s:s, s:s}", "error",
		    refused ? "the upstream refused this App Password; nothing was stored" :
		    "the App Password could not be verified (upstream unreachable or TLS "
		    "failed); nothing was stored", "upstream_reply",
		    admin_reply_text(reply, text, sizeof(text))));
	} else {
		ch->verified = 1;
		change_apply(ch, reply);
	}
	admin_req_resume(r);
	change_free(ch);
}

static void
change_cancel(struct admin_req *r)
{
	struct change *ch = r->pending;

	admin_verify_cancel(ch->verify);
	change_free(ch);
}

/* Verify first when asked, else store now. */
static void
change_run(struct change *ch, const struct cred_info *ci, int verify)
{
	struct admin_req *r = ch->r;

	if (!verify) {
		change_apply(ch, NULL);
		change_free(ch);
		return;
	}
	if ((ch->verify = admin_verify_start(r->srv, ci, &ch->secret, change_verified,
	    ch)) == NULL) {
		admin_reply_error(r, 503, "cannot start the upstream check");
		change_free(ch);
		return;
	}
	admin_req_suspend(r, ch, change_cancel);
}

static int
json_limit(struct admin_req *r, json_t *body, const char *key, uint64_t *out)
{
	json_t *v = json_object_get(body, key);

	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 1 ||
	    json_integer_value(v) > API_LIMIT_MAX) {
		admin_reply_error(r, 400, "\"%s\" must be a number from 1 to %d", key,
		    API_LIMIT_MAX);
		return -1;
	}
	*out = (uint64_t)json_integer_value(v);
	return 0;
}

static int
json_bool(struct admin_req *r, json_t *body, const char *key, int dflt, int *out)
{
	json_t *v = json_object_get(body, key);

	*out = dflt;
	if (v == NULL || json_is_null(v))
		return 0;
	if (!json_is_boolean(v)) {
		admin_reply_error(r, 400, "\"%s\" must be true or false", key);
		return -1;
	}
	*out = json_is_true(v);
	return 0;
}

/* The account fields of POST /accounts into tmpl. */
static int
account_template(struct admin_req *r, json_t *body, struct vault_account *t)
{
	json_t *v, *e;
	size_t i;

	t->daily_limit = VAULT_DEFAULT_DAILY_LIMIT;
	t->daily_rcpt_limit = VAULT_DEFAULT_RCPT_LIMIT;
	t->upstream_tls = -1;
	v = json_object_get(body, "address");
	if (!json_is_string(v) || strlcpy(t->address, json_string_value(v),
	    sizeof(t->address)) >= sizeof(t->address) || t->address[0] == '\0') {
		admin_reply_error(r, 400, "\"address\" must be an e-mail address");
		return -1;
	}
	v = json_object_get(body, "aliases");
	if (v != NULL && !json_is_null(v)) {
		if (!json_is_array(v) || json_array_size(v) > VAULT_MAX_ALIASES) {
			admin_reply_error(r, 400, "\"aliases\" must be a list of at most %d "
			    "addresses", VAULT_MAX_ALIASES);
			return -1;
		}
		json_array_foreach(v, i, e) {
			if (!json_is_string(e) || strlcpy(t->aliases[i], json_string_value(e),
			    VAULT_ADDR_MAX) >= VAULT_ADDR_MAX) {
				admin_reply_error(r, 400, "\"aliases\" must be a list of addresses");
				return -1;
			}
		}
		t->n_aliases = json_array_size(v);
	}
	if (json_limit(r, body, "daily_limit", &t->daily_limit) == -1 ||
	    json_limit(r, body, "daily_recipient_limit", &t->daily_rcpt_limit) == -1)
		return -1;
	v = json_object_get(body, "upstream");
	if (v != NULL && !json_is_null(v) && (!json_is_string(v) ||
	    (json_string_length(v) > 0 && hostport_parse(json_string_value(v), t->upstream_host,
	    sizeof(t->upstream_host), &t->upstream_port) == -1))) {
		admin_reply_error(r, 400, "\"upstream\" must be HOST:PORT");
		return -1;
	}
	v = json_object_get(body, "tls");
	if (v != NULL && !json_is_null(v)) {
		if (json_is_string(v) && strcmp(json_string_value(v), "starttls") == 0)
			t->upstream_tls = UPSTREAM_TLS_STARTTLS;
		else if (json_is_string(v) && strcmp(json_string_value(v), "implicit") == 0)
			t->upstream_tls = UPSTREAM_TLS_IMPLICIT;
		else {
			admin_reply_error(r, 400, "\"tls\" must be \"starttls\" or \"implicit\"");
			return -1;
		}
	}
	return 0;
}

static void
route_account_add(struct admin_req *r, struct route_ctx *ctx)
{
	static const char *const allowed[] = { "address", "password", "aliases", "daily_limit",
	    "daily_recipient_limit", "upstream", "tls", "verify", NULL };
	struct change *ch = NULL;
	struct cred_info ci, taken;
	json_t *body;
	int verify;

	if ((body = body_json(r)) == NULL)
		return;
	if ((ch = calloc(1, sizeof(*ch))) == NULL || (ch->tmpl = calloc(1,
	    sizeof(*ch->tmpl))) == NULL) {
		admin_reply_error(r, 503, "out of memory");
		goto fail;
	}
	ch->r = r;
	ch->add = 1;
	snprintf(ch->by, sizeof(ch->by), "admin:%s", r->user);
	if (keys_allowed(r, body, allowed) == -1 || account_template(r, body, ch->tmpl) == -1 ||
	    json_bool(r, body, "verify", 0, &verify) == -1 ||
	    take_password(r, body, 1, &ch->secret) == -1)
		goto fail;
	wipe_passwords(body);
	json_decref(body);
	strlcpy(ch->address, ch->tmpl->address, sizeof(ch->address));
	memset(&ci, 0, sizeof(ci));
	strlcpy(ci.address, ch->tmpl->address, sizeof(ci.address));
	strlcpy(ci.upstream_host, ch->tmpl->upstream_host, sizeof(ci.upstream_host));
	ci.upstream_port = ch->tmpl->upstream_port;
	ci.upstream_tls = ch->tmpl->upstream_tls;
	/* Checked again under the lock; this spares a pointless upstream check. */
	if (credstore_info(r->srv->cs, ch->address, &taken) == CRED_OK) {
		admin_reply_error(r, 409, "%s is already an account or alias", ch->address);
		change_free(ch);
		return;
	}
	change_run(ch, &ci, verify);
	return;
fail:
	wipe_passwords(body);
	json_decref(body);
	change_free(ch);
}

static void
route_rotate(struct admin_req *r, struct route_ctx *ctx)
{
	static const char *const allowed[] = { "password", "verify", NULL };
	struct change *ch = NULL;
	struct cred_info ci;
	json_t *body;
	int verify;

	if (account_exact(r->srv, ctx->arg, &ci) == -1) {
		admin_reply_error(r, 404, "no account %s", ctx->arg);
		return;
	}
	if ((body = body_json(r)) == NULL)
		return;
	if ((ch = calloc(1, sizeof(*ch))) == NULL) {
		admin_reply_error(r, 503, "out of memory");
		goto fail;
	}
	ch->r = r;
	strlcpy(ch->address, ci.address, sizeof(ch->address));
	snprintf(ch->by, sizeof(ch->by), "admin:%s", r->user);
	if (keys_allowed(r, body, allowed) == -1 ||
	    json_bool(r, body, "verify", 1, &verify) == -1 ||
	    take_password(r, body, 1, &ch->secret) == -1)
		goto fail;
	json_decref(body);
	change_run(ch, &ci, verify);
	return;
fail:
	wipe_passwords(body);
	json_decref(body);
	change_free(ch);
}

static void
route_rollback(struct admin_req *r, struct route_ctx *ctx)
{
	enum cred_admin_result rc;
	char err[512], by[API_BY_MAX];
	uint32_t version = 0;

	snprintf(by, sizeof(by), "admin:%s", r->user);
	rc = credstore_account_rollback(r->srv->cs, ctx->arg, by, r->ip, &version, err,
	    sizeof(err));
	if (rc != CRED_ADMIN_OK) {
		admin_reply_error(r, result_status(rc), "%s", err);
		return;
	}
	log_info("event=admin_account_rollback account=%s version=%u by=%s ip=%s", ctx->arg,
	    version, by, r->ip);
	admin_reply_json(r, 200, json_pack("{s:s, s:I}", "address", ctx->arg, "version",
	    (json_int_t)version));
}

static void
route_remove(struct admin_req *r, struct route_ctx *ctx)
{
	enum cred_admin_result rc;
	char err[512], by[API_BY_MAX];

	snprintf(by, sizeof(by), "admin:%s", r->user);
	rc = credstore_account_remove(r->srv->cs, ctx->arg, by, r->ip, err, sizeof(err));
	if (rc != CRED_ADMIN_OK) {
		admin_reply_error(r, result_status(rc), "%s", err);
		return;
	}
	log_info("event=admin_account_remove account=%s by=%s ip=%s", ctx->arg, by, r->ip);
	admin_reply_json(r, 200, json_pack("{s:s, s:b}", "address", ctx->arg, "removed", 1));
}

/* ---- Audit -------------------------------------------------------------------- */

struct audit_job {
	struct admin_job		 job;
	struct admin_req		*r;
	struct admin_audit_query	 q;
	int				 csv;
	json_t				*page;
	char				*text;
	size_t				 len;
	char				 err[256];
};

static void
audit_job_run(struct admin_job *job)
{
	struct audit_job *aj = (struct audit_job *)job;

	if (aj->csv)
		aj->text = admin_audit_csv(&aj->q, &aj->len, aj->err, sizeof(aj->err));
	else
		aj->page = admin_audit_page(&aj->q, aj->err, sizeof(aj->err));
}

static void
audit_job_done(struct admin_job *job)
{
	struct audit_job *aj = (struct audit_job *)job;
	struct admin_req *r = aj->r;

	if (job->cancelled) {
		json_decref(aj->page);
		free(aj->text);
		free(aj);
		return;
	}
	if (aj->csv && aj->text != NULL) {
		admin_reply_buf(r, 200, "text/csv; charset=utf-8", 1, aj->text, aj->len);
		admin_reply_header(r, "Content-Disposition",
		    "attachment; filename=\"smtpvault-audit.csv\"");
	} else if (!aj->csv && aj->page != NULL) {
		admin_reply_json(r, 200, aj->page);
	} else {
		log_err("event=admin_audit_query error=\"%s\"", aj->err);
		admin_reply_error(r, 500, "cannot read the audit log: %s", aj->err);
	}
	admin_req_resume(r);
	free(aj);
}

/* The filter of GET /audit and /audit.csv from the query string. */
static int
audit_filter_parse(struct admin_req *r, const char *query, struct admin_audit_query *q)
{
	static const struct {
		const char	*key;
		size_t		 off;
		size_t		 len;
	} strs[] = {
		{ "account", offsetof(struct admin_audit_query, account), ADMIN_FILTER_MAX },
		{ "client", offsetof(struct admin_audit_query, client), ADMIN_FILTER_MAX },
		{ "sender", offsetof(struct admin_audit_query, sender), ADMIN_FILTER_MAX },
		{ "status", offsetof(struct admin_audit_query, status), 32 },
		{ "event", offsetof(struct admin_audit_query, event), 32 },
	};
	char v[API_TIME_MAX];
	uint64_t n;
	time_t now = time(NULL);
	size_t i;
	int rc;

	strlcpy(q->path, r->srv->cfg->audit_path, sizeof(q->path));
	q->limit = ADMIN_AUDIT_LIMIT;
	for (i = 0; i < ARRAY_SIZE(strs); i++) {
		if (query_get(query, strs[i].key, (char *)q + strs[i].off, strs[i].len) == -1) {
			admin_reply_error(r, 400, "bad %s filter", strs[i].key);
			return -1;
		}
	}
	if ((rc = query_get(query, "since", v, sizeof(v))) == -1 ||
	    (rc == 1 && time_parse(v, now, &q->t.since) == -1)) {
		admin_reply_error(r, 400, "since: not a time (RFC 3339, a date, or 2h / 7d)");
		return -1;
	}
	q->t.has_since = rc == 1;
	if ((rc = query_get(query, "until", v, sizeof(v))) == -1 ||
	    (rc == 1 && time_parse(v, now, &q->t.until) == -1)) {
		admin_reply_error(r, 400, "until: not a time (RFC 3339, a date, or 2h / 7d)");
		return -1;
	}
	q->t.has_until = rc == 1;
	if ((rc = query_get(query, "limit", v, sizeof(v))) == -1 ||
	    (rc == 1 && parse_u64(v, 1, ADMIN_AUDIT_LIMIT_MAX, &n) == -1)) {
		admin_reply_error(r, 400, "limit: a number from 1 to %d", ADMIN_AUDIT_LIMIT_MAX);
		return -1;
	}
	if (rc == 1)
		q->limit = (size_t)n;
	if ((rc = query_get(query, "cursor", v, sizeof(v))) == -1 ||
	    (rc == 1 && parse_u64(v, 1, UINT64_MAX, &q->cursor) == -1)) {
		admin_reply_error(r, 400, "cursor: use next_cursor of the previous page");
		return -1;
	}
	return 0;
}

static void
audit_start(struct admin_req *r, struct route_ctx *ctx, int csv)
{
	struct audit_job *aj;

	if ((aj = calloc(1, sizeof(*aj))) == NULL) {
		admin_reply_error(r, 503, "out of memory");
		return;
	}
	if (audit_filter_parse(r, ctx->query, &aj->q) == -1) {
		free(aj);
		return;
	}
	aj->r = r;
	aj->csv = csv;
	aj->job.run = audit_job_run;
	aj->job.done = audit_job_done;
	if (admin_workers_submit(r->srv->workers, &aj->job) == -1) {
		free(aj);
		admin_reply_error(r, 503, "busy; try again");
		admin_reply_header(r, "Retry-After", "1");
		return;
	}
	admin_req_suspend(r, aj, NULL);
}

static void
route_audit(struct admin_req *r, struct route_ctx *ctx)
{
	audit_start(r, ctx, 0);
}

static void
route_audit_csv(struct admin_req *r, struct route_ctx *ctx)
{
	audit_start(r, ctx, 1);
}

/* ---- Queue ----------------------------------------------------------------------- */

/*
 * delivery = queue: the page lists the queue's own entries (the objects of
 * "smtpvault queue list --json": envelope, size, attempts, status, last
 * reply and hold reason; never the message bytes, and the spool holds no
 * credential) and acts through a retry and a delete, all asked of the relay
 * (relay_ctl.h), which holds the queue. delivery = direct keeps nothing:
 * the queue is empty and no id exists.
 *
 * A retry is logged, not audited: the queue does not audit "queue retry"
 * from the CLI either, and the attempt it causes is audited as usual. A
 * delete is audited by the queue ("deleted from the queue by admin:USER
 * (IP)"), and answered once the message is gone from the disk.
 */

/* Messages waiting for delivery; failed ones wait for the operator, not
 * for the upstream, and are not counted. */
size_t
admin_queue_depth(struct admin_server *srv)
{
	struct queue_stats st;

	if (srv->rc == NULL)
		return 0;
	(void)relay_ctl_stats(srv->rc, &st);
	return st.messages;
}

static void
holds_cb(void *arg, const struct relay_ctl_hold *h)
{
	struct api_queue_accts *qa = arg;
	struct relay_ctl_hold *grown;

	if ((grown = reallocarray(qa->v, qa->n + 1, sizeof(*qa->v))) == NULL)
		return;
	qa->v = grown;
	qa->v[qa->n++] = *h;
}

/* Per account: messages waiting and the queue's hold, if any. */
static void
queue_accounts(struct admin_server *srv, struct api_queue_accts *qa)
{
	memset(qa, 0, sizeof(*qa));
	if (srv->rc != NULL)
		relay_ctl_holds(srv->rc, holds_cb, qa);
}

static const struct relay_ctl_hold *
queue_account_find(const struct api_queue_accts *qa, const char *account)
{
	size_t i;

	for (i = 0; i < qa->n; i++)
		if (strcasecmp(qa->v[i].account, account) == 0)
			return &qa->v[i];
	return NULL;
}

struct queue_listing {
	json_t	*messages;
	int	 oom;
};

/* One entry of GET /queue, already cut to RELAY_CTL_RCPTS_MAX recipients
 * with "rcpt_count" by the relay. */
static void
listing_entry_cb(void *arg, json_t *entry)
{
	struct queue_listing *l = arg;

	if (json_array_append_new(l->messages, entry) == -1)	/* frees entry */
		l->oom = 1;
}

static void
route_queue(struct admin_req *r, struct route_ctx *ctx)
{
	enum relay_ctl_mode mode = RELAY_CTL_DIRECT;
	struct queue_listing l;
	struct queue_stats st;
	int truncated = 0;

	memset(&st, 0, sizeof(st));
	memset(&l, 0, sizeof(l));
	if ((l.messages = json_array()) == NULL) {
		admin_reply_error(r, 500, "out of memory");
		return;
	}
	if (r->srv->rc != NULL) {
		mode = relay_ctl_stats(r->srv->rc, &st);
		if (mode == RELAY_CTL_QUEUE && relay_ctl_list(r->srv->rc, API_QUEUE_LIST_MAX,
		    listing_entry_cb, &l, &truncated) == -1)
			l.oom = 1;
	}
	if (l.oom) {
		json_decref(l.messages);
		admin_reply_error(r, 500, "out of memory");
		return;
	}
	admin_reply_json(r, 200, json_pack("{s:s, s:I, s:{s:I, s:I, s:I, s:I}, s:o, s:b, s:I}",
	    "mode", mode == RELAY_CTL_QUEUE ? "queue" : "direct", "depth",
	    (json_int_t)st.messages, "counts", "active", (json_int_t)st.active, "deferred",
	    (json_int_t)st.deferred, "held", (json_int_t)st.held, "failed",
	    (json_int_t)st.failed, "messages", l.messages, "truncated", truncated,
	    "limit", (json_int_t)API_QUEUE_LIST_MAX));
}

static void
route_queue_retry(struct admin_req *r, struct route_ctx *ctx)
{
	if (r->srv->rc == NULL || !spool_id_valid(ctx->arg) ||
	    relay_ctl_retry(r->srv->rc, ctx->arg) == -1) {
		admin_reply_error(r, 404, "no such message in the queue");
		return;
	}
	log_info("event=admin_queue_retry queue_id=%s by=admin:%s ip=%s", ctx->arg, r->user,
	    r->ip);
	admin_reply_json(r, 200, json_pack("{s:s, s:b}", "id", ctx->arg, "retried", 1));
}

/* A DELETE waiting for the queue to remove the files. */
struct queue_del {
	struct admin_req	*r;
	char			 id[SPOOL_ID_MAX];
	char			 by[API_BY_MAX + ADMIN_IP_MAX + 4];	/* the queue keeps
								 * QUEUE_BY_MAX - 1 */
};

static void
queue_del_done(void *arg, int rc, int error)
{
	struct queue_del *qd = arg;
	struct admin_req *r = qd->r;

	if (rc == RELAY_CTL_DELETED) {
		log_info("event=admin_queue_delete queue_id=%s by=\"%s\"", qd->id, qd->by);
		admin_reply_json(r, 200, json_pack("{s:s, s:b}", "id", qd->id, "deleted", 1));
	} else if (rc == RELAY_CTL_NO_SUCH) {
		admin_reply_error(r, 404, "no such message in the queue");
	} else if (error == ENOENT) {
		admin_reply_error(r, 404, "no such message in the queue (delivered or removed "
		    "meanwhile)");
	} else {
		log_err("event=admin_queue_delete queue_id=%s error=\"%s\"", qd->id,
		    strerror(error));
		admin_reply_error(r, 500, "cannot remove %s: %s", qd->id, strerror(error));
	}
	admin_req_resume(r);
	free(qd);
}

static void
queue_del_cancel(struct admin_req *r)
{
	struct queue_del *qd = r->pending;

	relay_ctl_delete_cancel(r->srv->rc, qd);
	free(qd);
}

static void
route_queue_delete(struct admin_req *r, struct route_ctx *ctx)
{
	struct queue_del *qd;

	if (r->srv->rc == NULL || !spool_id_valid(ctx->arg)) {
		admin_reply_error(r, 404, "no such message in the queue");
		return;
	}
	if ((qd = calloc(1, sizeof(*qd))) == NULL) {
		admin_reply_error(r, 503, "out of memory");
		return;
	}
	qd->r = r;
	strlcpy(qd->id, ctx->arg, sizeof(qd->id));
	/* Who, and from where, goes into the audit log with the message. */
	snprintf(qd->by, sizeof(qd->by), "admin:%s (%s)", r->user, r->ip);
	if (relay_ctl_delete(r->srv->rc, qd->id, qd->by, queue_del_done, qd) == -1) {
		free(qd);
		admin_reply_error(r, 503, "busy; try again");
		admin_reply_header(r, "Retry-After", "1");
		return;
	}
	/* The answer comes from a later turn of the loop, never before this
	 * returns. */
	admin_req_suspend(r, qd, queue_del_cancel);
}
