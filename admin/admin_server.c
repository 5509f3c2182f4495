/*
 * admin_server.c: libmicrohttpd inside a libevent loop (the admin process's,
 * admin_proc.c), the request life cycle (bounded body, one reply,
 * suspension while a job runs) and the headers every reply carries.
 *
 * Threading model. MHD runs in "external" mode with epoll: it owns one epoll
 * descriptor holding its listening socket and connections, and the loop
 * watches that one descriptor (plus a timer from MHD_get_timeout()) and calls
 * MHD_run() when it is readable. So every access handler runs on the loop
 * thread and may use the keeper's client (credential.h) and the relay's
 * (relay_ctl.h), neither of which locks. The alternative, MHD's own polling
 * thread, would put every handler on another thread and need a hand-off for
 * nearly every route. Slow things leave the loop: scans of the audit log run
 * as jobs that see copies only (admin_worker.c); an admin login is checked
 * by the keeper, which answers later (credstore_admin_verify); verifying a
 * new App Password upstream is asynchronous on the loop (admin_verify.c); a
 * queue delete is answered by the relay once the files are gone. A request
 * waiting for any of them is suspended (MHD_suspend_connection) and resumed
 * with its reply when the result is back.
 *
 * Bounds: ADMIN_CONN_MAX connections, ADMIN_CONN_PER_IP from one address,
 * ADMIN_CONN_TIMEOUT seconds idle, ADMIN_CONN_MEMORY for the request line
 * and headers (MHD answers 414 / 431 beyond), ADMIN_BODY_MAX for a body (413,
 * decided from Content-Length before reading when it is given).
 *
 * Secrets in bodies: the body is copied into guarded memory (sodium_malloc)
 * and wiped when the request ends; the bytes MHD handed over are zeroed in
 * its read buffer as they are consumed. What cannot be wiped from here: the
 * kernel's socket buffers and, under TLS, GnuTLS's record buffers.
 */
#include "admin_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/dns.h>
#include <event2/event.h>
#include <microhttpd.h>
#include <sodium.h>

#include "config.h"
#include "log.h"
#include "relay_ctl.h"
#include "util.h"

#define ADMIN_LISTEN_BACKLOG	64
#define ADMIN_TLS_FILE_MAX	(1024 * 1024)
#define ADMIN_LOG_LINE_MAX	512

#define ADMIN_CSP "default-src 'self'; script-src 'self'; style-src 'self'; " \
	"img-src 'self' data:; connect-src 'self'; object-src 'none'; " \
	"frame-ancestors 'none'; base-uri 'none'; form-action 'self'"

time_t
admin_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* ---- Replies ------------------------------------------------------------- */

static void
reply_clear(struct admin_reply *rep)
{
	free(rep->body);
	memset(rep, 0, sizeof(*rep));
}

const char *
admin_req_header(struct admin_req *r, const char *name)
{
	return MHD_lookup_connection_value(r->conn, MHD_HEADER_KIND, name);
}

static int
add_header(struct MHD_Response *resp, const char *name, const char *value)
{
	return MHD_add_response_header(resp, name, value) == MHD_YES ? 0 : -1;
}

/* Queue r's reply with the headers every response carries. */
static enum MHD_Result
reply_queue(struct admin_req *r)
{
	struct admin_reply *rep = &r->reply;
	struct MHD_Response *resp;
	enum MHD_Result rc;
	size_t i;
	int bad = 0;

	if (!r->have_reply)
		admin_reply_error(r, 500, "no reply");
	resp = MHD_create_response_from_buffer(rep->len, rep->body != NULL ? rep->body : "",
	    MHD_RESPMEM_MUST_COPY);
	if (resp == NULL)
		return MHD_NO;
	bad |= add_header(resp, "Content-Type", rep->ctype != NULL ? rep->ctype :
	    "text/plain; charset=utf-8");
	bad |= add_header(resp, "Content-Security-Policy", ADMIN_CSP);
	bad |= add_header(resp, "X-Content-Type-Options", "nosniff");
	bad |= add_header(resp, "Referrer-Policy", "no-referrer");
	bad |= add_header(resp, "X-Frame-Options", "DENY");
	bad |= add_header(resp, "Cross-Origin-Opener-Policy", "same-origin");
	bad |= add_header(resp, "Cross-Origin-Resource-Policy", "same-origin");
	/* The page is small and always current: nothing is kept in caches. */
	bad |= add_header(resp, "Cache-Control", "no-store");
	if (r->srv->tls)
		bad |= add_header(resp, "Strict-Transport-Security", "max-age=31536000");
	for (i = 0; i < rep->n_headers; i++)
		bad |= add_header(resp, rep->hname[i], rep->hval[i]);
	if (bad) {
		MHD_destroy_response(resp);
		return MHD_NO;
	}
	rc = MHD_queue_response(r->conn, (unsigned)rep->status, resp);
	MHD_destroy_response(resp);
	r->state = ADMIN_REQ_REPLIED;
	return rc;
}

/* ---- Request life cycle -------------------------------------------------- */

static void *
req_new(void *cls, const char *uri, struct MHD_Connection *conn)
{
	struct admin_server *srv = cls;
	const union MHD_ConnectionInfo *ci;
	struct admin_req *r;

	if ((r = calloc(1, sizeof(*r))) == NULL)
		return NULL;
	r->srv = srv;
	r->conn = conn;
	r->state = ADMIN_REQ_NEW;
	/* One byte more than allowed, to tell "too long" from "just fits". */
	if ((r->uri = strndup(uri != NULL ? uri : "", ADMIN_URI_MAX + 1)) == NULL) {
		free(r);
		return NULL;
	}
	ci = MHD_get_connection_info(conn, MHD_CONNECTION_INFO_CLIENT_ADDRESS);
	if (ci != NULL && ci->client_addr != NULL)
		sockaddr_ntop(ci->client_addr, r->ip, sizeof(r->ip));
	else
		strlcpy(r->ip, "unknown", sizeof(r->ip));
	return r;
}

static void
req_free(struct admin_req *r)
{
	if (r == NULL)
		return;
	if (r->body != NULL)
		sodium_free(r->body);	/* wipes */
	free(r->uri);
	reply_clear(&r->reply);
	free(r);
}

static void
req_completed(void *cls, struct MHD_Connection *conn, void **con_cls,
    enum MHD_RequestTerminationCode toe)
{
	struct admin_req *r = *con_cls;

	*con_cls = NULL;
	req_free(r);
}

void
admin_req_suspend(struct admin_req *r, void *pending, void (*cancel)(struct admin_req *))
{
	r->pending = pending;
	r->cancel = cancel;
	r->state = ADMIN_REQ_WAITING;
	TAILQ_INSERT_TAIL(&r->srv->waiting, r, entry);
	MHD_suspend_connection(r->conn);
}

void
admin_req_resume(struct admin_req *r)
{
	struct admin_server *srv = r->srv;

	TAILQ_REMOVE(&srv->waiting, r, entry);
	r->pending = NULL;
	r->cancel = NULL;
	MHD_resume_connection(r->conn);
	/* MHD picks the connection up at its next run: make that now. */
	if (srv->ev_kick != NULL)
		event_active(srv->ev_kick, EV_TIMEOUT, 0);
}

/* Take a piece of the body; beyond ADMIN_BODY_MAX only remember that. */
static void
req_body_add(struct admin_req *r, const char *data, size_t len)
{
	if (!r->body_too_large && r->body_len + len > ADMIN_BODY_MAX) {
		r->body_too_large = 1;
		if (r->body != NULL)
			sodium_memzero(r->body, ADMIN_BODY_MAX + 1);
		r->body_len = 0;
	}
	if (!r->body_too_large) {
		if (r->body == NULL && (r->body = sodium_malloc(ADMIN_BODY_MAX + 1)) == NULL) {
			r->body_too_large = 1;	/* answered 413; better than nothing */
			return;
		}
		memcpy(r->body + r->body_len, data, len);
		r->body_len += len;
		r->body[r->body_len] = '\0';
	}
}

/* The headers that say where a body ends, as req_precheck() counts them. */
struct req_framing {
	unsigned	content_length;
	unsigned	transfer_encoding;
	int		chunked;	/* the last Transfer-Encoding is exactly "chunked" */
	int		blank_in_name;	/* "Content-Length : 5" */
};

static enum MHD_Result
req_framing_count(void *cls, enum MHD_ValueKind kind, const char *key, const char *value)
{
	struct req_framing *f = cls;

	if (strcasecmp(key, MHD_HTTP_HEADER_CONTENT_LENGTH) == 0) {
		f->content_length++;
	} else if (strcasecmp(key, MHD_HTTP_HEADER_TRANSFER_ENCODING) == 0) {
		f->transfer_encoding++;
		f->chunked = value != NULL && strcasecmp(value, "chunked") == 0;
	}
	if (strpbrk(key, " \t") != NULL)
		f->blank_in_name = 1;
	return MHD_YES;
}

/* Refusals decided from the request line and headers alone. */
static int
req_precheck(struct admin_req *r, const char *method)
{
	struct req_framing f;
	const char *cl;
	uint64_t n;

	if (strlcpy(r->method, method, sizeof(r->method)) >= sizeof(r->method)) {
		admin_reply_error(r, 501, "method not implemented");
		return -1;
	}
	if (strlen(r->uri) > ADMIN_URI_MAX) {
		admin_reply_error(r, 414, "request target longer than %d bytes", ADMIN_URI_MAX);
		return -1;
	}
	/*
	 * Where the body ends must be beyond doubt (RFC 9112 5.1, 6.1, 6.3).
	 * libmicrohttpd 0.9.75 reads the first of two Content-Length headers,
	 * prefers chunked to a Content-Length without closing the connection
	 * and keeps "Content-Length : 5" as some other header; a proxy in front
	 * that read the request otherwise would have the rest taken here for a
	 * second request (request smuggling). Refused, and the connection
	 * closed.
	 */
	memset(&f, 0, sizeof(f));
	MHD_get_connection_values(r->conn, MHD_HEADER_KIND, req_framing_count, &f);
	if (f.content_length > 1 || f.transfer_encoding > 1 || f.blank_in_name ||
	    (f.transfer_encoding == 1 && (f.content_length > 0 || !f.chunked))) {
		admin_reply_error(r, 400, "ambiguous request framing (Content-Length, "
		    "Transfer-Encoding)");
		admin_reply_header(r, "Connection", "close");
		return -1;
	}
	if ((cl = admin_req_header(r, "Content-Length")) != NULL &&
	    (parse_u64(cl, 0, UINT64_MAX, &n) == -1 || n > ADMIN_BODY_MAX)) {
		admin_reply_error(r, 413, "request body larger than %d bytes", ADMIN_BODY_MAX);
		admin_reply_header(r, "Connection", "close");
		return -1;
	}
	return 0;
}

static enum MHD_Result
admin_access(void *cls, struct MHD_Connection *conn, const char *url, const char *method,
    const char *version, const char *upload_data, size_t *upload_data_size, void **con_cls)
{
	struct admin_req *r = *con_cls;

	if (r == NULL)
		return MHD_NO;	/* out of memory at the start: close */
	r->conn = conn;
	switch (r->state) {
	case ADMIN_REQ_NEW:
		if (req_precheck(r, method) == -1)
			return reply_queue(r);
		r->state = ADMIN_REQ_BODY;
		return MHD_YES;
	case ADMIN_REQ_BODY:
		if (*upload_data_size != 0) {
			req_body_add(r, upload_data, *upload_data_size);
			/* MHD is done with these bytes; a password must not linger. */
			sodium_memzero((void *)(uintptr_t)upload_data, *upload_data_size);
			*upload_data_size = 0;
			return MHD_YES;
		}
		if (r->body_too_large) {
			admin_reply_error(r, 413, "request body larger than %d bytes",
			    ADMIN_BODY_MAX);
			return reply_queue(r);
		}
		admin_api_dispatch(r);
		if (r->state == ADMIN_REQ_WAITING)
			return MHD_YES;
		return reply_queue(r);
	case ADMIN_REQ_WAITING:
		return reply_queue(r);
	case ADMIN_REQ_REPLIED:
		break;
	}
	return MHD_YES;
}

/* ---- libevent glue --------------------------------------------------------- */

static void
admin_schedule(struct admin_server *srv)
{
	MHD_UNSIGNED_LONG_LONG ms;
	struct timeval tv;

	if (MHD_get_timeout(srv->mhd, &ms) == MHD_YES) {
		tv.tv_sec = (time_t)(ms / 1000);
		tv.tv_usec = (suseconds_t)((ms % 1000) * 1000);
		evtimer_add(srv->ev_timer, &tv);
	} else {
		evtimer_del(srv->ev_timer);
	}
}

static void
admin_run(evutil_socket_t fd, short what, void *arg)
{
	struct admin_server *srv = arg;

	if (MHD_run(srv->mhd) != MHD_YES)
		log_warn("event=admin_http error=\"MHD_run failed\"");
	admin_schedule(srv);
}

static void admin_mhd_log(void *, const char *, va_list)
    __attribute__((format(printf, 2, 0)));

static void
admin_mhd_log(void *cls, const char *fmt, va_list ap)
{
	char line[ADMIN_LOG_LINE_MAX], esc[ADMIN_LOG_LINE_MAX];
	size_t n;

	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == '\r'))
		line[--n] = '\0';
	log_warn("event=admin_http note=\"%s\"", log_escape(esc, sizeof(esc), line, n));
}

static int
admin_listen(const struct config *cfg, char *err, size_t errlen)
{
	const struct listen_cfg *l = &cfg->admin_listen;
	int fd, one = 1;

	if ((fd = socket(l->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) == -1) {
		snprintf(err, errlen, "admin listen %s: %s", l->text, strerror(errno));
		return -1;
	}
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (l->ss.ss_family == AF_INET6)
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, (const struct sockaddr *)&l->ss, l->sslen) == -1 ||
	    listen(fd, ADMIN_LISTEN_BACKLOG) == -1) {
		snprintf(err, errlen, "admin listen %s: %s", l->text, strerror(errno));
		close(fd);
		return -1;
	}
	return fd;
}

static int
admin_load_tls(struct admin_server *srv, const struct config *cfg, char *err, size_t errlen)
{
	uint8_t *buf = NULL;
	size_t len;

	if (cfg->admin_tls_cert[0] == '\0')
		return 0;
	if (file_read_all(cfg->admin_tls_cert, ADMIN_TLS_FILE_MAX, &buf, &len) == -1) {
		snprintf(err, errlen, "[admin] tls_cert %s: %s", cfg->admin_tls_cert,
		    strerror(errno));
		return -1;
	}
	srv->tls_cert = (char *)buf;
	if (file_read_all(cfg->admin_tls_key, ADMIN_TLS_FILE_MAX, &buf, &len) == -1) {
		snprintf(err, errlen, "[admin] tls_key %s: %s", cfg->admin_tls_key,
		    strerror(errno));
		return -1;
	}
	srv->tls_key = (char *)buf;
	srv->tls_key_len = len;
	srv->tls = 1;
	return 0;
}

struct admin_server *
admin_server_start(struct event_base *base, const struct config *cfg, struct credstore *cs,
    struct relay_ctl_client *rc, char *err, size_t errlen)
{
	struct admin_server *srv;
	const union MHD_DaemonInfo *di;
	unsigned int flags = MHD_USE_EPOLL | MHD_ALLOW_SUSPEND_RESUME | MHD_USE_ERROR_LOG;
	struct MHD_OptionItem tls_opts[3];

	if ((srv = calloc(1, sizeof(*srv))) == NULL) {
		snprintf(err, errlen, "admin: out of memory");
		return NULL;
	}
	srv->base = base;
	srv->cfg = cfg;
	srv->cs = cs;
	srv->rc = rc;
	srv->listen_fd = -1;
	TAILQ_INIT(&srv->waiting);
	if (MHD_is_feature_supported(MHD_FEATURE_EPOLL) != MHD_YES) {
		snprintf(err, errlen, "admin: libmicrohttpd was built without epoll");
		goto fail;
	}
	if (admin_load_tls(srv, cfg, err, errlen) == -1)
		goto fail;
	if (srv->tls && MHD_is_feature_supported(MHD_FEATURE_TLS) != MHD_YES) {
		snprintf(err, errlen, "admin: libmicrohttpd was built without TLS");
		goto fail;
	}
	if ((srv->listen_fd = admin_listen(cfg, err, errlen)) == -1)
		goto fail;
	if ((srv->sessions = admin_sessions_new()) == NULL ||
	    (srv->throttle = admin_throttle_new()) == NULL ||
	    (srv->workers = admin_workers_new(base, ADMIN_WORKERS, ADMIN_JOBS_MAX)) == NULL) {
		snprintf(err, errlen, "admin: cannot start worker threads");
		goto fail;
	}
	if ((srv->dns = evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS)) == NULL)
		log_warn("event=admin_dns note=\"no asynchronous resolver; upstream checks use "
		    "the system resolver\"");
	memset(tls_opts, 0, sizeof(tls_opts));
	tls_opts[0].option = tls_opts[1].option = tls_opts[2].option = MHD_OPTION_END;
	if (srv->tls) {
		flags |= MHD_USE_TLS;
		tls_opts[0].option = MHD_OPTION_HTTPS_MEM_CERT;
		tls_opts[0].ptr_value = srv->tls_cert;
		tls_opts[1].option = MHD_OPTION_HTTPS_MEM_KEY;
		tls_opts[1].ptr_value = srv->tls_key;
	}
	srv->mhd = MHD_start_daemon(flags, 0, NULL, NULL, admin_access, srv,
	    MHD_OPTION_EXTERNAL_LOGGER, admin_mhd_log, srv,
	    MHD_OPTION_LISTEN_SOCKET, (MHD_socket)srv->listen_fd,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned int)ADMIN_CONN_MAX,
	    MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned int)ADMIN_CONN_PER_IP,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned int)ADMIN_CONN_TIMEOUT,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)ADMIN_CONN_MEMORY,
	    MHD_OPTION_URI_LOG_CALLBACK, req_new, srv,
	    MHD_OPTION_NOTIFY_COMPLETED, req_completed, srv,
	    MHD_OPTION_SIGPIPE_HANDLED_BY_APP, (int)1,
	    MHD_OPTION_ARRAY, tls_opts,
	    MHD_OPTION_END);
	if (srv->mhd == NULL) {
		snprintf(err, errlen, "admin: cannot start the HTTP server on %s%s",
		    cfg->admin_listen.text, srv->tls ? " (check tls_cert and tls_key)" : "");
		goto fail;
	}
	srv->listen_fd = -1;	/* MHD's now */
	di = MHD_get_daemon_info(srv->mhd, MHD_DAEMON_INFO_EPOLL_FD);
	if (di == NULL) {
		snprintf(err, errlen, "admin: no epoll descriptor");
		goto fail;
	}
	srv->ev_io = event_new(base, di->epoll_fd, EV_READ | EV_PERSIST, admin_run, srv);
	srv->ev_timer = evtimer_new(base, admin_run, srv);
	srv->ev_kick = evtimer_new(base, admin_run, srv);
	if (srv->ev_io == NULL || srv->ev_timer == NULL || srv->ev_kick == NULL ||
	    event_add(srv->ev_io, NULL) == -1) {
		snprintf(err, errlen, "admin: out of memory");
		goto fail;
	}
	admin_schedule(srv);
	log_info("event=admin_listening listen=%s tls=%s", cfg->admin_listen.text,
	    srv->tls ? "yes" : "no");
	return srv;
fail:
	admin_server_free(srv);
	return NULL;
}

void
admin_server_set_config(struct admin_server *srv, const struct config *cfg)
{
	if (srv != NULL)
		srv->cfg = cfg;
}

void
admin_server_free(struct admin_server *srv)
{
	struct admin_req *r;

	if (srv == NULL)
		return;
	srv->stopping = 1;
	/* Jobs finish (or are dropped) first; their done() sees stopping. */
	admin_workers_free(srv->workers);
	srv->workers = NULL;
	/* Whatever still waits (an upstream check) is cancelled and resumed,
	 * so that MHD can close it. */
	while ((r = TAILQ_FIRST(&srv->waiting)) != NULL) {
		if (r->cancel != NULL)
			r->cancel(r);
		admin_reply_error(r, 503, "the server is stopping");
		admin_req_resume(r);
	}
	if (srv->mhd != NULL)
		MHD_stop_daemon(srv->mhd);
	if (srv->listen_fd != -1)
		close(srv->listen_fd);
	if (srv->ev_io != NULL)
		event_free(srv->ev_io);
	if (srv->ev_timer != NULL)
		event_free(srv->ev_timer);
	if (srv->ev_kick != NULL)
		event_free(srv->ev_kick);
	if (srv->dns != NULL)
		evdns_base_free(srv->dns, 0);
	admin_sessions_free(srv->sessions);
	admin_throttle_free(srv->throttle);
	admin_usage_free(srv->usage);
	free(srv->tls_cert);
	if (srv->tls_key != NULL) {
		sodium_memzero(srv->tls_key, srv->tls_key_len);
		free(srv->tls_key);
	}
	free(srv);
}
