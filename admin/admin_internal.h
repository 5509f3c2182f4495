/*
 * admin_internal.h: what the files of admin/ share, and the pure helpers
 * that the unit tests (tests/unit/test_admin*.c) call directly. Not a public
 * interface: everything outside admin/ uses admin.h.
 */
#ifndef SMTPVAULT_ADMIN_INTERNAL_H
#define SMTPVAULT_ADMIN_INTERNAL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>
#include <time.h>

#include <jansson.h>

#include "admin.h"
#include "vault.h"

/* ---- Bounds ---------------------------------------------------------------- */

#define ADMIN_BODY_MAX		(64 * 1024)	/* request body; more gets 413 */
#define ADMIN_JSON_DEPTH_MAX	32		/* nested [ / { in a request body */
#define ADMIN_URI_MAX		4096		/* request target; longer gets 414 */
#define ADMIN_CONN_MAX		64		/* connections at once */
#define ADMIN_CONN_PER_IP	16		/* connections at once from one address */
#define ADMIN_CONN_TIMEOUT	30		/* s of inactivity before a connection closes */
#define ADMIN_CONN_MEMORY	(128 * 1024)	/* per connection: request line + headers */
#define ADMIN_HEADER_MAX	1024		/* one header value we read (Origin, Host...) */
#define ADMIN_IP_MAX		64
#define ADMIN_TOKEN_BYTES	32		/* session ids and CSRF tokens: 256 bits */
#define ADMIN_TOKEN_HEX		(2 * ADMIN_TOKEN_BYTES)
#define ADMIN_SESSION_IDLE	(30 * 60)	/* s without a request before a session ends */
#define ADMIN_SESSION_ABSOLUTE	(12 * 3600)	/* s after login a session ends regardless */
#define ADMIN_SESSIONS_MAX	128		/* live sessions; the oldest is dropped beyond */
#define ADMIN_THROTTLE_FAILS	5		/* failed logins per user or per IP ... */
#define ADMIN_THROTTLE_WINDOW	(15 * 60)	/* ... in this many seconds, then 429 */
#define ADMIN_THROTTLE_KEYS	1024		/* users and addresses tracked */
#define ADMIN_THROTTLE_KEY_MAX	(VAULT_NAME_MAX + 8)
#define ADMIN_WORKERS		2		/* threads for audit scans */
#define ADMIN_JOBS_MAX		32		/* jobs queued or running; more get 503 */
#define ADMIN_AUDIT_LIMIT	50		/* audit entries per page by default */
#define ADMIN_AUDIT_LIMIT_MAX	500		/* ... and at most */
#define ADMIN_CSV_ROWS_MAX	100000		/* rows in one CSV export */
#define ADMIN_USAGE_CACHE_SECS	5		/* dashboard usage scan reused this long */
#define ADMIN_USAGE_LOOKBACK	(7 * 86400)	/* last delivery / error looked for this far */
#define ADMIN_DAY		86400
#define ADMIN_FILTER_MAX	VAULT_ADDR_MAX	/* one audit filter value */
#define ADMIN_QUEUE_ID_MAX	64
#define ADMIN_ERROR_MAX		1024		/* the "error" text of a reply */
#define ADMIN_UPSTREAM_TEXT_MAX	2048		/* upstream text in a reply, once escaped */

#define ADMIN_COOKIE_NAME	"smtpvault_session"
#define ADMIN_COOKIE_NAME_TLS	"__Host-smtpvault_session"

/* ---- Pure helpers (admin_util.c) ----------------------------------------- */

struct evbuffer;

/*
 * Percent-decode len bytes of in ("%41" -> "A"; with form, '+' -> ' ' as in
 * a query string) into out, NUL-terminated. Fails on a malformed escape, on
 * any decoded control byte (NUL, CR, LF, ... DEL) and when out is too small.
 */
int	admin_pct_decode(const char *in, size_t len, int form, char *out, size_t outlen);

/* The value of cookie name in a Cookie header ("a=1; b=2"), first one wins,
 * surrounding double quotes removed. -1 when absent or too long for out. */
int	admin_cookie_get(const char *header, const char *name, char *out, size_t outlen);

/* 1 when no [ / { nests deeper than max outside strings, else 0. */
int	admin_json_depth_ok(const char *buf, size_t len, size_t max);

/* A Prometheus label value (backslash, double quote and newline escaped). */
int	admin_prom_escape(const char *in, char *out, size_t outlen);

/*
 * One CSV cell, always quoted, quotes doubled; a cell that a spreadsheet
 * would take for a formula (first character = + - @ TAB CR) gets a leading
 * apostrophe. NULL is an empty cell. Returns 0 or -1 (out of memory).
 */
int	admin_csv_cell(struct evbuffer *out, const char *s);

/* Same-origin check for state-changing requests. origin NULL (absent): 1.
 * Otherwise it must be exactly "http(s)://" + host, case-insensitively. */
int	admin_origin_ok(const char *origin, const char *host, int tls);

/* Constant-time comparison of a presented token with the session's. */
int	admin_token_equal(const char *given, const char *expected);

/* 64 lowercase hex digits of 32 fresh random bytes. */
void	admin_token_new(char out[ADMIN_TOKEN_HEX + 1]);

/* ---- Sessions and login throttling (admin_session.c) ---------------------- */

struct admin_session {
	unsigned char	idhash[32];		/* BLAKE2b of the id; the id is not kept */
	char		user[VAULT_NAME_MAX];
	char		csrf[ADMIN_TOKEN_HEX + 1];
	char		ip[ADMIN_IP_MAX];
	time_t		created;		/* monotonic seconds */
	time_t		last;
	int		used;
};

struct admin_sessions;

struct admin_sessions *admin_sessions_new(void);
void	admin_sessions_free(struct admin_sessions *ss);
/* A new session for user; its id goes to id_out (the cookie value). */
const struct admin_session *admin_session_create(struct admin_sessions *ss, const char *user,
	    const char *ip, time_t now, char id_out[ADMIN_TOKEN_HEX + 1]);
/* The live session with this id (touching it), or NULL (unknown, expired). */
const struct admin_session *admin_session_find(struct admin_sessions *ss, const char *id,
	    time_t now);
void	admin_session_destroy(struct admin_sessions *ss, const char *id);
/* Live sessions now (for tests and logs). */
size_t	admin_session_count(const struct admin_sessions *ss, time_t now);

struct admin_throttle;

struct admin_throttle *admin_throttle_new(void);
void	admin_throttle_free(struct admin_throttle *t);
/*
 * May a login for key go ahead? Counts failures in the last
 * ADMIN_THROTTLE_WINDOW seconds plus attempts still being verified. 0: yes;
 * -1: no, *retry_after = seconds until it may. first_refusal is set on the
 * first refusal of a lock-out (for auditing it once).
 */
int	admin_throttle_check(struct admin_throttle *t, const char *key, time_t now,
	    time_t *retry_after, int *first_refusal);
/* An attempt for key starts being verified / ended (failed or not). */
void	admin_throttle_begin(struct admin_throttle *t, const char *key, time_t now);
void	admin_throttle_end(struct admin_throttle *t, const char *key, time_t now, int failed);
/* Forget key's failures (a successful login, for the user key). */
void	admin_throttle_clear(struct admin_throttle *t, const char *key);

/* ---- Worker threads (admin_worker.c) --------------------------------------- */

struct admin_job;
typedef void admin_job_fn(struct admin_job *job);

/*
 * A unit of work: run() on a worker thread (it may only touch what the job
 * holds), then done() on the event-loop thread. With cancelled set (the
 * server is stopping), done() only frees.
 */
struct admin_job {
	admin_job_fn		*run;
	admin_job_fn		*done;
	int			cancelled;
	TAILQ_ENTRY(admin_job)	entry;
};

struct admin_workers;
struct event_base;

struct admin_workers *admin_workers_new(struct event_base *base, size_t threads,
	    size_t max_jobs);
/* Queue a job; -1 when max_jobs are queued or running already. */
int	admin_workers_submit(struct admin_workers *w, struct admin_job *job);
/* Join the threads (running jobs finish), then done() every job left, with
 * cancelled set for those that never ran. */
void	admin_workers_free(struct admin_workers *w);

/* ---- The server and its requests (admin_server.c) ----------------------- */

struct MHD_Connection;
struct MHD_Daemon;
struct event;
struct evdns_base;
struct credstore;
struct audit;
struct relay_ctl_client;
struct config;

#define ADMIN_REPLY_HEADERS	4

enum admin_req_state {
	ADMIN_REQ_NEW,		/* headers seen, nothing decided */
	ADMIN_REQ_BODY,		/* reading the body */
	ADMIN_REQ_WAITING,	/* suspended for a job or an upstream check */
	ADMIN_REQ_REPLIED,	/* the reply is queued */
};

struct admin_reply {
	int		status;
	const char	*ctype;
	char		*body;			/* malloc'd */
	size_t		len;
	int		api;			/* Cache-Control: no-store */
	char		hname[ADMIN_REPLY_HEADERS][32];
	char		hval[ADMIN_REPLY_HEADERS][256];
	size_t		n_headers;
};

struct admin_req {
	struct admin_server	*srv;
	struct MHD_Connection	*conn;
	enum admin_req_state	state;
	char			method[16];
	char			*uri;		/* raw request target, malloc'd */
	unsigned char		*body;		/* sodium_malloc'd, ADMIN_BODY_MAX + 1 */
	size_t			body_len;
	int			body_too_large;
	char			ip[ADMIN_IP_MAX];
	char			user[VAULT_NAME_MAX];	/* "" until authenticated */
	int			have_reply;
	struct admin_reply	reply;
	void			*pending;	/* the job or check it waits for */
	void			(*cancel)(struct admin_req *);	/* server stopping */
	TAILQ_ENTRY(admin_req)	entry;		/* in srv->waiting while suspended */
};
TAILQ_HEAD(admin_req_list, admin_req);

struct admin_usage;

struct admin_server {
	struct event_base	*base;
	const struct config	*cfg;
	struct credstore	*cs;
	struct relay_ctl_client	*rc;		/* the queue, pools and counters; NULL: none */
	struct MHD_Daemon	*mhd;
	int			 listen_fd;
	int			 tls;
	struct event		*ev_io, *ev_timer, *ev_kick;
	struct admin_workers	*workers;
	struct admin_sessions	*sessions;
	struct admin_throttle	*throttle;
	struct evdns_base	*dns;
	struct admin_req_list	 waiting;
	int			 stopping;
	char			*tls_cert;	/* PEM */
	char			*tls_key;	/* PEM, sodium_malloc'd */
	size_t			 tls_key_len;
	struct admin_usage	*usage;		/* cached dashboard scan */
	time_t			 usage_at;
};

/* Monotonic seconds, for sessions and throttling. */
time_t	admin_now(void);

/* Replies (admin_reply.c): the server adds the security headers to every one. */
void	admin_reply_json(struct admin_req *r, int status, json_t *obj);	/* steals obj */
void	admin_reply_error(struct admin_req *r, int status, const char *fmt, ...)
	    __attribute__((format(printf, 3, 4)));
void	admin_reply_buf(struct admin_req *r, int status, const char *ctype, int api,
	    char *body, size_t len);					/* steals body */
void	admin_reply_header(struct admin_req *r, const char *name, const char *value);
/*
 * s as text for a JSON reply: s itself when it is UTF-8, else s with every
 * byte outside printable ASCII as \xNN in buf (log_escape()). For text from
 * outside (client input quoted in an error, an upstream's reply), which
 * json_pack() refuses when it is not UTF-8. NULL stays NULL.
 */
const char *admin_reply_text(const char *s, char *buf, size_t buflen);
/* A request header, or NULL. */
const char *admin_req_header(struct admin_req *r, const char *name);
/* Suspend r until admin_req_resume(); cancel runs instead when the server
 * stops first. */
void	admin_req_suspend(struct admin_req *r, void *pending, void (*cancel)(struct admin_req *));
void	admin_req_resume(struct admin_req *r);

/* ---- Routes (admin_api.c) and their helpers ------------------------------- */

/* Decide the reply for a complete request (or suspend it). */
void	admin_api_dispatch(struct admin_req *r);
/* Static files of the page (admin_assets.c, generated at build time). */
struct admin_asset {
	const char		*path;		/* "/", "/app.js", ... */
	const char		*ctype;
	const unsigned char	*data;
	size_t			len;
};
const struct admin_asset *admin_asset_find(const char *path);

/* Upstream verification of a new App Password (admin_verify.c). */
struct admin_verify;
struct cred_info;
struct smtp_outcome;
typedef void admin_verify_cb(void *arg, int ok, int refused, const char *reply);
struct admin_verify *admin_verify_start(struct admin_server *srv, const struct cred_info *ci,
	    const struct vault_secret *secret, admin_verify_cb *cb, void *arg);
void	admin_verify_cancel(struct admin_verify *v);

/* Audit log views, run on worker threads (admin_audit.c). */
struct admin_audit_query {
	char		path[1024];
	struct {
		int	has_since, has_until;
		time_t	since, until;
	}		t;
	char		account[ADMIN_FILTER_MAX];
	char		client[ADMIN_FILTER_MAX];
	char		sender[ADMIN_FILTER_MAX];
	char		status[32];
	char		event[32];
	size_t		limit;
	uint64_t	cursor;
};
/* {"entries":[newest first], "next_cursor": "N" or null}; NULL + err. */
json_t	*admin_audit_page(const struct admin_audit_query *q, char *err, size_t errlen);
/* The filter's matches as CSV (header row first), newest last. */
char	*admin_audit_csv(const struct admin_audit_query *q, size_t *len, char *err,
	    size_t errlen);

/* Per-account figures from the audit log for the dashboard. */
struct admin_usage_row {
	char		account[VAULT_ADDR_MAX];
	uint64_t	messages_24h;
	uint64_t	recipients_24h;
	char		last_delivery[32];		/* ts or "" */
	char		last_error[32];			/* ts or "" */
	char		last_error_status[16];
	char		last_error_reply[1024];
	int		quota_hold;			/* last outcome was 550 5.4.5 */
};
struct admin_usage {
	struct admin_usage_row	*rows;
	size_t			 n;
};
struct admin_usage *admin_usage_scan(const char *audit_path, time_t now, char *err,
	    size_t errlen);
const struct admin_usage_row *admin_usage_find(const struct admin_usage *u,
	    const char *account);
void	admin_usage_free(struct admin_usage *u);

/* The queue as the page sees it (admin_api.c); direct mode: empty. */
size_t	admin_queue_depth(struct admin_server *srv);

/* Prometheus text of GET /metrics (admin_metrics.c). */
char	*admin_metrics_text(struct admin_server *srv, size_t *len);

#endif
