/*
 * smtp_session.c: the LAN-side SMTP server. RFCs: 5321 (SMTP), 1869/5321
 * (EHLO), 2920 (PIPELINING), 1870 (SIZE), 6152 (8BITMIME), 6531 (SMTPUTF8),
 * 2034/3463 (enhanced status codes), 3207 (STARTTLS), 3848 (Received "with"
 * keywords).
 *
 * Shape, after OpenSMTPD's smtp_session.c: one struct smtp_session per
 * connection, an explicit enum smtp_state changed only by smtp_enter_state(),
 * and a command table saying in which states each command is allowed. Input
 * is read with hard bounds (line length, input buffer, output backlog) and
 * handed either to the command parser (smtp_parse.c) or, in the DATA phase,
 * to the byte machine of smtp_data.c. A finished message goes to the relay,
 * whose single answer becomes the reply to the final dot.
 *
 * A session is never freed from inside one of its own callbacks (the Redis
 * rule): smtp_session_close() only schedules the free on a separate event,
 * which runs from a clean stack.
 */
#include "smtp_session.h"

#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <sodium.h>

#include "audit.h"
#include "config.h"
#include "credential.h"
#include "log.h"
#include "relay.h"
#include "smtp_data.h"
#include "smtp_parse.h"
#include "util.h"

#define SMTP_SESSION_ERRORS_MAX		20	/* SPEC section 4 */
#define SMTP_SESSION_INPUT_MAX		(64 * 1024)	/* read high watermark */
#define SMTP_SESSION_OUTPUT_MAX		(64 * 1024)	/* unsent replies before we stop reading */
#define SMTP_SESSION_DATA_CHUNK		4096	/* octets fed to smtp_data at once */
#define SMTP_SESSION_TLS_READ		2000	/* one TLS read; see smtp_session_start_tls() */
#define SMTP_SESSION_CLOSE_TIMEOUT	10	/* seconds to flush the last reply */
#define SMTP_SESSION_REFUSE_SLACK	64	/* sessions over max_connections that
						 * may exist only to say 421 */
#define SMTP_SESSION_REPLY_MAX		1200	/* one reply line, with the relay's text */
#define SMTP_SESSION_RELAY_TEXT_MAX	512	/* relay text shown to the client */
#define SMTP_SESSION_ID_LEN		16	/* hex digits of a session id */
#define SMTP_SESSION_LOG_MAX		512	/* escaped client text in a log line */
#define SMTP_QUEUE_ID_LEN		16	/* Crockford base32, 80 random bits */
#define SMTP_LISTEN_BACKLOG		128
#define SMTP_SERVER_TRIM_MS		250	/* no session for this long (and after
						 * start-up): freed heap goes back */
#define SMTP_LISTEN_RETRY		1	/* seconds to pause accept() after EMFILE */
#define SMTP_RATE_SLOTS			(CONFIG_MAX_CLIENTS + 1)	/* clients + "lan" */
#define SMTP_ANON_CLIENT		"lan"	/* name of trusted_networks hosts */

enum smtp_state {
	SMTP_STATE_INIT,	/* greeted; HELO/EHLO expected */
	SMTP_STATE_HELO,	/* HELO/EHLO done, no transaction */
	SMTP_STATE_MAIL,	/* MAIL accepted, RCPT expected */
	SMTP_STATE_RCPT,	/* one or more RCPT accepted */
	SMTP_STATE_DATA,	/* reading the message */
	SMTP_STATE_RELAY,	/* message handed to the relay, awaiting its answer */
	SMTP_STATE_STARTTLS,	/* 220 queued; TLS starts once it is sent */
	SMTP_STATE_TLS,		/* TLS handshake in progress */
	SMTP_STATE_CLOSING,	/* last reply queued; free once it is sent */
};

static const char *const smtp_state_names[] = {
	[SMTP_STATE_INIT] = "init",
	[SMTP_STATE_HELO] = "helo",
	[SMTP_STATE_MAIL] = "mail",
	[SMTP_STATE_RCPT] = "rcpt",
	[SMTP_STATE_DATA] = "data",
	[SMTP_STATE_RELAY] = "relay",
	[SMTP_STATE_STARTTLS] = "starttls",
	[SMTP_STATE_TLS] = "tls",
	[SMTP_STATE_CLOSING] = "closing",
};

#define ST(s)		(1u << (s))
#define ST_COMMANDS	(ST(SMTP_STATE_INIT) | ST(SMTP_STATE_HELO) | \
			 ST(SMTP_STATE_MAIL) | ST(SMTP_STATE_RCPT))

struct smtp_txn {
	char		from[SMTP_MAILBOX_MAX + 1];
	char		account[VAULT_ADDR_MAX];
	char		(*rcpts)[RELAY_PATH_MAX];
	size_t		n_rcpts;
	size_t		cap_rcpts;
	int		body_8bit;
	int		smtputf8;
	char		queue_id[SMTP_QUEUE_ID_LEN + 1];
	struct smtp_data data;
	struct evbuffer	*msg;
};

struct smtp_session {
	TAILQ_ENTRY(smtp_session) entry;
	struct smtp_server	*srv;
	char			id[SMTP_SESSION_ID_LEN + 1];
	enum smtp_state		state;
	struct bufferevent	*bev;
	struct event		*ev_free;
	struct sockaddr_storage	peer;
	socklen_t		peerlen;
	char			ip[INET6_ADDRSTRLEN + 8];
	char			client_name[CONFIG_NAME_MAX];
	char			helo[SMTP_HELO_MAX + 1];
	int			esmtp;
	int			tls;
	int			discard_line;	/* input framing: skipping an over-long line */
	int			free_scheduled;
	int			submitting;	/* inside relay_submit(): no recursion */
	unsigned		errors;
	unsigned		messages;
	struct smtp_txn		txn;
};

TAILQ_HEAD(smtp_sessions, smtp_session);

struct smtp_rate {
	char		name[CONFIG_NAME_MAX];
	double		tokens;
	struct timespec	last;
};

struct smtp_server {
	struct event_base	*base;
	const struct config	*cfg;
	struct relay		*relay;
	struct credstore	*cs;
	struct smtp_server_hooks hooks;
	struct audit		*audit;
	struct evconnlistener	*listeners[CONFIG_MAX_LISTEN];
	struct sockaddr_storage	bound[CONFIG_MAX_LISTEN];
	socklen_t		boundlen[CONFIG_MAX_LISTEN];
	size_t			n_listeners;
	struct event		*ev_listen_retry;
	struct event		*ev_trim;	/* see smtp_server_trim() */
	SSL_CTX			*ssl_ctx;
	struct smtp_sessions	sessions;
	size_t			n_sessions;
	struct smtp_rate	rates[SMTP_RATE_SLOTS];
	int			draining;
	void			(*drain_done)(void *);
	void			*drain_arg;
};

struct smtp_cmd {
	const char	*name;
	unsigned	states;		/* ST() mask of states it is allowed in */
	int		takes_args;	/* 0: arguments are a syntax error */
	const char	*sequence;	/* 503 text when not allowed */
	void		(*handler)(struct smtp_session *, char *);
};

static void	smtp_session_process(struct smtp_session *);
static void	smtp_server_trim_later(struct smtp_server *);
static void	smtp_session_close(struct smtp_session *);
static void	smtp_session_readcb(struct bufferevent *, void *);
static void	smtp_session_writecb(struct bufferevent *, void *);
static void	smtp_session_eventcb(struct bufferevent *, short, void *);

/* ---- Small helpers ----------------------------------------------------- */

static const char *
smtp_hostname(const struct smtp_server *srv)
{
	return srv->cfg->hostname[0] != '\0' ? srv->cfg->hostname : "localhost";
}

static char *
smtp_esc(char *buf, size_t len, const char *s)
{
	return log_escape(buf, len, s, strlen(s));
}

/* The only place the state changes. */
static void
smtp_enter_state(struct smtp_session *s, enum smtp_state st)
{
	log_debug("session=%s event=state old=%s new=%s", s->id,
	    smtp_state_names[s->state], smtp_state_names[st]);
	s->state = st;
}

static int
smtp_state_reads_commands(enum smtp_state st)
{
	return (ST(st) & ST_COMMANDS) != 0;
}

/* 16 characters of Crockford's base32: no I, L, O or U to misread. */
static void
smtp_queue_id(char out[SMTP_QUEUE_ID_LEN + 1])
{
	static const char alphabet[] = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
	unsigned char rnd[SMTP_QUEUE_ID_LEN * 5 / 8];
	size_t i, bit = 0;

	randombytes_buf(rnd, sizeof(rnd));
	for (i = 0; i < SMTP_QUEUE_ID_LEN; i++, bit += 5) {
		unsigned v = ((unsigned)rnd[bit / 8] << 8) |
		    (bit / 8 + 1 < sizeof(rnd) ? rnd[bit / 8 + 1] : 0);

		out[i] = alphabet[(v >> (11 - bit % 8)) & 0x1f];
	}
	out[SMTP_QUEUE_ID_LEN] = '\0';
	sodium_memzero(rnd, sizeof(rnd));
}

/* ---- Replies ----------------------------------------------------------- */

static void smtp_vreply(struct smtp_session *, int, const char *, const char *, va_list)
    __attribute__((format(printf, 4, 0)));

static void
smtp_vreply(struct smtp_session *s, int code, const char *enh, const char *fmt,
    va_list ap)
{
	char text[SMTP_SESSION_REPLY_MAX], esc[SMTP_SESSION_LOG_MAX];
	size_t i;

	vsnprintf(text, sizeof(text), fmt, ap);
	/* Reply text may carry client or upstream words: one line, always. */
	for (i = 0; text[i] != '\0'; i++)
		if ((unsigned char)text[i] < 0x20 || text[i] == 0x7f)
			text[i] = ' ';
	if (enh != NULL && enh[0] != '\0')
		evbuffer_add_printf(bufferevent_get_output(s->bev), "%d %s %s\r\n",
		    code, enh, text);
	else
		evbuffer_add_printf(bufferevent_get_output(s->bev), "%d %s\r\n", code, text);
	log_debug("session=%s event=reply code=%d text=\"%s\"", s->id, code,
	    smtp_esc(esc, sizeof(esc), text));
}

static void smtp_reply(struct smtp_session *, int, const char *, const char *, ...)
    __attribute__((format(printf, 4, 5)));
static void smtp_error(struct smtp_session *, int, const char *, const char *, ...)
    __attribute__((format(printf, 4, 5)));

static void
smtp_reply(struct smtp_session *s, int code, const char *enh, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	smtp_vreply(s, code, enh, fmt, ap);
	va_end(ap);
}

/*
 * A refused command: reply, and count it. The SMTP_SESSION_ERRORS_MAX-th
 * error ends the session with 421, so that a confused or hostile client
 * cannot go on forever.
 */
static void
smtp_error(struct smtp_session *s, int code, const char *enh, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	smtp_vreply(s, code, enh, fmt, ap);
	va_end(ap);
	if (++s->errors >= SMTP_SESSION_ERRORS_MAX && s->state != SMTP_STATE_CLOSING) {
		log_info("session=%s event=too_many_errors ip=%s errors=%u", s->id,
		    s->ip, s->errors);
		smtp_reply(s, 421, "4.7.0", "%s Error: too many errors",
		    smtp_hostname(s->srv));
		smtp_session_close(s);
	}
}

/*
 * A refusal is an audit event: who was refused, why, and at which command.
 * Best effort: the client is refused either way, so a failed write is
 * logged and does not change the reply.
 */
static void
smtp_audit_reject(struct smtp_session *s, const char *why, const char *command,
    const char *sender)
{
	json_t *ev;
	char err[512];

	log_info("session=%s event=reject ip=%s client=%s reason=\"%s\"", s->id, s->ip,
	    s->client_name, why);
	if (s->srv->audit == NULL)
		return;
	if ((ev = audit_reject_event(s->ip, s->client_name, why, command)) == NULL) {
		log_err("session=%s event=audit_failed error=\"out of memory\"", s->id);
		return;
	}
	if (s->txn.queue_id[0] != '\0')
		(void)audit_set_str(ev, "queue_id", s->txn.queue_id);
	if (sender == NULL && s->txn.account[0] != '\0')
		sender = s->txn.from;
	if (sender != NULL)
		(void)audit_set_str(ev, "mail_from", sender);
	if (s->helo[0] != '\0')
		(void)audit_set_str(ev, "helo", s->helo);
	if (audit_append(s->srv->audit, ev, err, sizeof(err)) == -1)
		log_err("session=%s event=audit_failed error=\"%s\"", s->id, err);
	json_decref(ev);
}

/* ---- Transactions ------------------------------------------------------ */

static void
smtp_txn_reset(struct smtp_session *s)
{
	struct smtp_txn *t = &s->txn;

	free(t->rcpts);
	if (t->msg != NULL)
		evbuffer_free(t->msg);
	memset(t, 0, sizeof(*t));
}

static int
smtp_txn_add_rcpt(struct smtp_txn *t, const char *rcpt, size_t max)
{
	if (t->n_rcpts == t->cap_rcpts) {
		size_t cap = t->cap_rcpts == 0 ? 8 : 2 * t->cap_rcpts;
		void *p;

		if (cap > max)
			cap = max;
		if (cap <= t->n_rcpts)
			return -1;
		if ((p = reallocarray(t->rcpts, cap, sizeof(*t->rcpts))) == NULL)
			return -1;
		t->rcpts = p;
		t->cap_rcpts = cap;
	}
	strlcpy(t->rcpts[t->n_rcpts++], rcpt, sizeof(t->rcpts[0]));
	return 0;
}

/* ---- Rate limits: a token bucket per client name ----------------------- */

static double
smtp_elapsed(const struct timespec *a, const struct timespec *b)
{
	return (double)(b->tv_sec - a->tv_sec) + (double)(b->tv_nsec - a->tv_nsec) / 1e9;
}

/* Take one message from the client's bucket; 0, or -1 when it is empty. */
static int
smtp_rate_take(struct smtp_server *srv, const char *name, uint64_t count,
    uint64_t period)
{
	struct smtp_rate *r = NULL, *oldest = &srv->rates[0];
	struct timespec now;
	size_t i;

	if (count == 0 || period == 0)
		return 0;
	clock_gettime(CLOCK_MONOTONIC, &now);
	for (i = 0; i < SMTP_RATE_SLOTS; i++) {
		if (strcmp(srv->rates[i].name, name) == 0) {
			r = &srv->rates[i];
			break;
		}
		if (srv->rates[i].name[0] == '\0' ||
		    smtp_elapsed(&srv->rates[i].last, &oldest->last) > 0)
			oldest = &srv->rates[i];
		if (srv->rates[i].name[0] == '\0')
			break;
	}
	if (r == NULL) {
		/* A new bucket (or the least recently used one) starts full. */
		r = oldest;
		strlcpy(r->name, name, sizeof(r->name));
		r->tokens = (double)count;
		r->last = now;
	}
	r->tokens += smtp_elapsed(&r->last, &now) * (double)count / (double)period;
	if (r->tokens > (double)count)
		r->tokens = (double)count;
	r->last = now;
	if (r->tokens < 1.0)
		return -1;
	r->tokens -= 1.0;
	return 0;
}

/* ---- Commands ---------------------------------------------------------- */

/* HELO and EHLO: 0, or -1 when refused (and answered). */
static int
smtp_cmd_helo_common(struct smtp_session *s, char *args, int esmtp)
{
	const char *why;

	if (smtp_parse_helo(args, s->helo, sizeof(s->helo), &why) != SMTP_PARSE_OK) {
		smtp_error(s, 501, "5.5.4", "Syntax: %s hostname", esmtp ? "EHLO" : "HELO");
		return -1;
	}
	smtp_txn_reset(s);
	s->esmtp = esmtp;
	smtp_enter_state(s, SMTP_STATE_HELO);
	return 0;
}

static void
smtp_cmd_ehlo(struct smtp_session *s, char *args)
{
	struct evbuffer *out = bufferevent_get_output(s->bev);
	const struct config *cfg = s->srv->cfg;

	if (smtp_cmd_helo_common(s, args, 1) != 0)
		return;
	evbuffer_add_printf(out, "250-%s\r\n", smtp_hostname(s->srv));
	evbuffer_add_printf(out, "250-PIPELINING\r\n");
	evbuffer_add_printf(out, "250-SIZE %llu\r\n",
	    (unsigned long long)cfg->max_message_size);
	evbuffer_add_printf(out, "250-8BITMIME\r\n");
	evbuffer_add_printf(out, "250-SMTPUTF8\r\n");
	if (s->srv->ssl_ctx != NULL && !s->tls)
		evbuffer_add_printf(out, "250-STARTTLS\r\n");
	evbuffer_add_printf(out, "250 ENHANCEDSTATUSCODES\r\n");
}

static void
smtp_cmd_helo(struct smtp_session *s, char *args)
{
	if (smtp_cmd_helo_common(s, args, 0) == 0)
		smtp_reply(s, 250, NULL, "%s", smtp_hostname(s->srv));
}

static void
smtp_cmd_starttls(struct smtp_session *s, char *args)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	size_t pending = evbuffer_get_length(in);

	if (s->srv->ssl_ctx == NULL) {
		smtp_error(s, 502, "5.5.1", "Error: command not implemented");
		return;
	}
	if (s->tls) {
		smtp_error(s, 503, "5.5.1", "Error: TLS already active");
		return;
	}
	smtp_reply(s, 220, "2.0.0", "Ready to start TLS");
	/* Plaintext sent after STARTTLS must never be executed (RFC 3207 5,
	 * CVE-2011-0411): throw it away. */
	if (pending > 0) {
		evbuffer_drain(in, pending);
		log_warn("session=%s event=starttls_pipelined ip=%s discarded=%zu",
		    s->id, s->ip, pending);
	}
	s->discard_line = 0;
	smtp_txn_reset(s);
	s->helo[0] = '\0';
	smtp_enter_state(s, SMTP_STATE_STARTTLS);
}

/* The default hooks: arg is the server. */
static enum cred_result
smtp_resolve_credstore(void *arg, const char *addr, char *account, size_t len)
{
	struct smtp_server *srv = arg;

	return credstore_resolve(srv->cs, addr, account, len);
}

static void
smtp_cmd_mail(struct smtp_session *s, char *args)
{
	struct smtp_server *srv = s->srv;
	const struct config *cfg = srv->cfg;
	const struct client_cfg *client;
	struct smtp_mail_args m;
	const char *why = "";
	char account[VAULT_ADDR_MAX], esc[SMTP_SESSION_LOG_MAX];
	int trusted = 0;

	switch (smtp_parse_mail(args, &m, &why)) {
	case SMTP_PARSE_OK:
		break;
	case SMTP_PARSE_SYNTAX:
		smtp_error(s, 501, "5.5.4", "Syntax: MAIL FROM:<address> (%s)", why);
		return;
	case SMTP_PARSE_REFUSED:
		smtp_error(s, 553, "5.1.7", "Sender address rejected: %s", why);
		return;
	case SMTP_PARSE_PARAM:
		smtp_error(s, 555, "5.5.4", "Unsupported parameter: %s", why);
		return;
	case SMTP_PARSE_UTF8:
		smtp_error(s, 553, "5.6.7", "Sender address rejected: %s", why);
		return;
	}
	if (m.has_size && m.size > cfg->max_message_size) {
		smtp_audit_reject(s, "declared message size over max_message_size", "MAIL",
		    m.from);
		smtp_error(s, 552, "5.3.4", "Message size exceeds fixed maximum message size");
		return;
	}

	/* Access again, under the configuration in force now (SIGHUP). */
	client = config_client_for(cfg, (const struct sockaddr *)&s->peer, &trusted);
	if (client == NULL && !trusted) {
		smtp_audit_reject(s, "no longer allowed after reload", "MAIL", m.from);
		smtp_reply(s, 554, "5.7.1", "<%s> is not allowed to relay", s->ip);
		smtp_session_close(s);
		return;
	}
	strlcpy(s->client_name, client != NULL ? client->name : SMTP_ANON_CLIENT,
	    sizeof(s->client_name));

	switch (routing_route(cfg, client, m.from, srv->hooks.resolve, srv->hooks.arg,
	    account, sizeof(account), &why)) {
	case ROUTE_OK:
		break;
	case ROUTE_SENDER_REFUSED:
		log_info("session=%s event=sender_refused client=%s from=<%s>", s->id,
		    s->client_name, smtp_esc(esc, sizeof(esc), m.from));
		smtp_audit_reject(s, "sender not allowed for this client", "MAIL", m.from);
		smtp_error(s, 550, "5.7.1", "sender <%s> not allowed for client %s",
		    m.from, s->client_name);
		return;
	case ROUTE_NO_ACCOUNT:
		log_info("session=%s event=no_account client=%s from=<%s>", s->id,
		    s->client_name, smtp_esc(esc, sizeof(esc), m.from));
		smtp_audit_reject(s, "no sending account for the sender", "MAIL", m.from);
		smtp_error(s, 550, "5.7.1", "no sending account for <%s>", m.from);
		return;
	case ROUTE_TEMPFAIL:
		log_warn("session=%s event=route_tempfail client=%s from=<%s> reason=\"%s\"",
		    s->id, s->client_name, smtp_esc(esc, sizeof(esc), m.from), why);
		smtp_error(s, 451, "4.3.0", "Temporary failure looking up the sending "
		    "account, try again later");
		return;
	}

	if (client != NULL && smtp_rate_take(srv, client->name, client->rate_count,
	    client->rate_period) != 0) {
		smtp_audit_reject(s, "client rate limit exceeded", "MAIL", m.from);
		smtp_error(s, 450, "4.7.1", "rate limit exceeded");
		return;
	}

	smtp_txn_reset(s);
	strlcpy(s->txn.from, m.from, sizeof(s->txn.from));
	strlcpy(s->txn.account, account, sizeof(s->txn.account));
	s->txn.body_8bit = m.body == SMTP_BODY_8BITMIME;
	s->txn.smtputf8 = m.smtputf8;
	log_debug("session=%s event=mail from=<%s> account=%s route=\"%s\"", s->id,
	    smtp_esc(esc, sizeof(esc), m.from), account, why);
	smtp_enter_state(s, SMTP_STATE_MAIL);
	smtp_reply(s, 250, "2.1.0", "Ok");
}

static void
smtp_cmd_rcpt(struct smtp_session *s, char *args)
{
	char rcpt[RELAY_PATH_MAX];
	const char *why = "";

	switch (smtp_parse_rcpt(args, s->txn.smtputf8, rcpt, sizeof(rcpt), &why)) {
	case SMTP_PARSE_OK:
		break;
	case SMTP_PARSE_SYNTAX:
		smtp_error(s, 501, "5.5.4", "Syntax: RCPT TO:<address> (%s)", why);
		return;
	case SMTP_PARSE_REFUSED:
		smtp_error(s, 553, "5.1.3", "Recipient address rejected: %s", why);
		return;
	case SMTP_PARSE_PARAM:
		smtp_error(s, 555, "5.5.4", "Unsupported parameter: %s", why);
		return;
	case SMTP_PARSE_UTF8:
		smtp_error(s, 553, "5.6.7", "Recipient address rejected: %s", why);
		return;
	}
	if (s->txn.n_rcpts >= s->srv->cfg->max_recipients) {
		if (s->txn.n_rcpts == s->srv->cfg->max_recipients)
			smtp_audit_reject(s, "too many recipients", "RCPT", NULL);
		smtp_error(s, 452, "4.5.3", "Too many recipients");
		return;
	}
	if (smtp_txn_add_rcpt(&s->txn, rcpt, s->srv->cfg->max_recipients) != 0) {
		log_err("session=%s event=out_of_memory", s->id);
		smtp_error(s, 452, "4.3.1", "Insufficient system resources");
		return;
	}
	smtp_enter_state(s, SMTP_STATE_RCPT);
	smtp_reply(s, 250, "2.1.5", "Ok");
}

static void
smtp_cmd_data(struct smtp_session *s, char *args)
{
	if ((s->txn.msg = evbuffer_new()) == NULL) {
		log_err("session=%s event=out_of_memory", s->id);
		smtp_error(s, 451, "4.3.0", "Insufficient system resources");
		return;
	}
	smtp_queue_id(s->txn.queue_id);
	smtp_data_init(&s->txn.data, s->srv->cfg->max_message_size);
	smtp_enter_state(s, SMTP_STATE_DATA);
	smtp_reply(s, 354, NULL, "End data with <CR><LF>.<CR><LF>");
}

static void
smtp_cmd_rset(struct smtp_session *s, char *args)
{
	smtp_txn_reset(s);
	if (s->state != SMTP_STATE_INIT)
		smtp_enter_state(s, SMTP_STATE_HELO);
	smtp_reply(s, 250, "2.0.0", "Ok");
}

static void
smtp_cmd_noop(struct smtp_session *s, char *args)
{
	smtp_reply(s, 250, "2.0.0", "Ok");
}

static void
smtp_cmd_quit(struct smtp_session *s, char *args)
{
	smtp_reply(s, 221, "2.0.0", "Bye");
	smtp_session_close(s);
}

static void
smtp_cmd_help(struct smtp_session *s, char *args)
{
	smtp_reply(s, 214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT "
	    "HELP VRFY%s", s->srv->ssl_ctx != NULL ? " STARTTLS" : "");
}

static void
smtp_cmd_vrfy(struct smtp_session *s, char *args)
{
	if (args[0] == '\0') {
		smtp_error(s, 501, "5.5.4", "Syntax: VRFY address");
		return;
	}
	smtp_reply(s, 252, "2.5.0", "Cannot VRFY user, but will accept message and "
	    "attempt delivery");
}

static void
smtp_cmd_auth(struct smtp_session *s, char *args)
{
	/* Never log the arguments: they may hold a password. */
	smtp_error(s, 503, "5.5.1", "Error: authentication not enabled");
}

static void
smtp_cmd_not_implemented(struct smtp_session *s, char *args)
{
	smtp_error(s, 502, "5.5.1", "Error: command not implemented");
}

static const struct smtp_cmd smtp_cmds[] = {
	{ "EHLO", ST_COMMANDS, 1, NULL, smtp_cmd_ehlo },
	{ "HELO", ST_COMMANDS, 1, NULL, smtp_cmd_helo },
	{ "STARTTLS", ST(SMTP_STATE_HELO), 0, "Error: send EHLO first, outside a "
	    "transaction", smtp_cmd_starttls },
	{ "MAIL", ST(SMTP_STATE_HELO), 1, NULL, smtp_cmd_mail },
	{ "RCPT", ST(SMTP_STATE_MAIL) | ST(SMTP_STATE_RCPT), 1, "Error: need MAIL command",
	    smtp_cmd_rcpt },
	{ "DATA", ST(SMTP_STATE_RCPT), 0, NULL, smtp_cmd_data },
	{ "RSET", ST_COMMANDS, 0, NULL, smtp_cmd_rset },
	{ "NOOP", ST_COMMANDS, 1, NULL, smtp_cmd_noop },
	{ "QUIT", ST_COMMANDS, 0, NULL, smtp_cmd_quit },
	{ "HELP", ST_COMMANDS, 1, NULL, smtp_cmd_help },
	{ "VRFY", ST_COMMANDS, 1, NULL, smtp_cmd_vrfy },
	{ "AUTH", ST_COMMANDS, 1, NULL, smtp_cmd_auth },
	{ "EXPN", ST_COMMANDS, 1, NULL, smtp_cmd_not_implemented },
	{ "ETRN", ST_COMMANDS, 1, NULL, smtp_cmd_not_implemented },
	{ "TURN", ST_COMMANDS, 1, NULL, smtp_cmd_not_implemented },
	{ "BDAT", ST_COMMANDS, 1, NULL, smtp_cmd_not_implemented },
};

/* 503 text for a command given in the wrong state. */
static const char *
smtp_sequence_text(const struct smtp_cmd *c, enum smtp_state st)
{
	if (c->sequence != NULL)
		return c->sequence;
	if (st == SMTP_STATE_INIT)
		return "Error: send HELO/EHLO first";
	if (strcmp(c->name, "MAIL") == 0)
		return "Error: nested MAIL command";
	if (strcmp(c->name, "DATA") == 0)
		return st == SMTP_STATE_HELO ? "Error: need MAIL command" :
		    "Error: need RCPT command";
	return "Error: bad sequence of commands";
}

static void
smtp_session_command(struct smtp_session *s, char *line)
{
	char verb[SMTP_VERB_MAX + 1], esc[SMTP_SESSION_LOG_MAX];
	char *args;
	size_t i;

	if (smtp_parse_verb(line, verb, sizeof(verb), &args) != 0) {
		smtp_error(s, 500, "5.5.2", "Error: bad syntax");
		return;
	}
	if (strcmp(verb, "AUTH") == 0)
		log_debug("session=%s event=command verb=AUTH args=********", s->id);
	else
		log_debug("session=%s event=command line=\"%s\"", s->id,
		    smtp_esc(esc, sizeof(esc), line));

	for (i = 0; i < ARRAY_SIZE(smtp_cmds); i++)
		if (strcmp(smtp_cmds[i].name, verb) == 0)
			break;
	if (i == ARRAY_SIZE(smtp_cmds)) {
		/* XCLIENT, PROXY and friends land here: nothing grants trust. */
		smtp_error(s, 500, "5.5.1", "Error: command not recognized");
		return;
	}
	if ((smtp_cmds[i].states & ST(s->state)) == 0) {
		smtp_error(s, 503, "5.5.1", "%s", smtp_sequence_text(&smtp_cmds[i], s->state));
		return;
	}
	if (!smtp_cmds[i].takes_args && args[0] != '\0') {
		smtp_error(s, 501, "5.5.4", "Syntax: %s", smtp_cmds[i].name);
		return;
	}
	smtp_cmds[i].handler(s, args);
}

/* ---- Input: command lines ---------------------------------------------- */

enum smtp_line { SMTP_LINE_NONE, SMTP_LINE_OK, SMTP_LINE_SKIPPED };

/*
 * Take one command line (without CR LF) out of the input. Lines are at most
 * SMTP_LINE_MAX octets with their CR LF; a longer one is answered with 500
 * 5.5.2 and skipped up to its LF. A bare LF ends a line too, but such a line
 * (and one with a bare CR or a NUL) is answered with 500 5.5.2, never run.
 */
static enum smtp_line
smtp_session_getline(struct smtp_session *s, struct evbuffer *in,
    char line[SMTP_LINE_MAX + 1])
{
	size_t avail = evbuffer_get_length(in), n;
	struct evbuffer_ptr end, lf;

	if (avail == 0)
		return SMTP_LINE_NONE;
	if (s->discard_line) {
		lf = evbuffer_search(in, "\n", 1, NULL);
		if (lf.pos < 0) {
			evbuffer_drain(in, avail);
			return SMTP_LINE_NONE;
		}
		evbuffer_drain(in, (size_t)lf.pos + 1);
		s->discard_line = 0;
		return SMTP_LINE_SKIPPED;
	}

	if (evbuffer_ptr_set(in, &end, avail < SMTP_LINE_MAX ? avail : SMTP_LINE_MAX,
	    EVBUFFER_PTR_SET) != 0)
		return SMTP_LINE_NONE;
	lf = evbuffer_search_range(in, "\n", 1, NULL, &end);
	if (lf.pos < 0) {
		if (avail < SMTP_LINE_MAX)
			return SMTP_LINE_NONE;
		/* Too long: drop it through its LF if that is here already,
		 * else drop what we have and the rest as it comes. */
		lf = evbuffer_search(in, "\n", 1, NULL);
		if (lf.pos < 0) {
			evbuffer_drain(in, avail);
			s->discard_line = 1;
		} else {
			evbuffer_drain(in, (size_t)lf.pos + 1);
		}
		smtp_error(s, 500, "5.5.2", "Error: line too long");
		return SMTP_LINE_SKIPPED;
	}

	n = (size_t)lf.pos;
	if (evbuffer_remove(in, line, n + 1) != (int)(n + 1))
		return SMTP_LINE_NONE;
	line[n] = '\0';
	if (n == 0 || line[n - 1] != '\r') {
		smtp_error(s, 500, "5.5.2", "Error: bare <LF> received");
		return SMTP_LINE_SKIPPED;
	}
	line[--n] = '\0';
	if (memchr(line, '\r', n) != NULL) {
		smtp_error(s, 500, "5.5.2", "Error: bare <CR> received");
		return SMTP_LINE_SKIPPED;
	}
	if (strlen(line) != n) {
		smtp_error(s, 500, "5.5.2", "Error: NUL in command");
		return SMTP_LINE_SKIPPED;
	}
	return SMTP_LINE_OK;
}

/* ---- Input: the message ------------------------------------------------ */

/* RFC 5322 date-time in UTC, without the locale. */
static void
smtp_date(time_t t, char *buf, size_t len)
{
	static const char *const days[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
	static const char *const months[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
	    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };
	struct tm tm;

	if (gmtime_r(&t, &tm) == NULL) {
		strlcpy(buf, "Thu, 1 Jan 1970 00:00:00 +0000", len);
		return;
	}
	snprintf(buf, len, "%s, %d %s %d %02d:%02d:%02d +0000", days[tm.tm_wday % 7],
	    tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour,
	    tm.tm_min, tm.tm_sec);
}

static int
smtp_is_alnum(unsigned char c)
{
	return (c >= '0' && c <= '9') || (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z');
}

/* The HELO name as it may appear in a header: a safe subset, bounded. */
static void
smtp_helo_safe(const char *helo, char *out, size_t len)
{
	size_t i, o = 0;

	for (i = 0; helo[i] != '\0' && o + 1 < len; i++) {
		unsigned char c = (unsigned char)helo[i];

		out[o++] = (smtp_is_alnum(c) || strchr(".-_:[]", c) != NULL) ? (char)c : '_';
	}
	out[o] = '\0';
	if (o == 0)
		strlcpy(out, "unknown", len);
}

/*
 * Our trace field (RFC 5321 4.4), folded so that each line stays short:
 *   Received: from HELO ([IP])
 *   	by HOSTNAME (smtpvault) with ESMTPS id QUEUEID
 *   	for <rcpt>; Wed, 26 Nov 2026 05:40:56 +0000
 * "for" only with exactly one recipient (more would disclose Bcc).
 */
static int
smtp_received(struct smtp_session *s, struct evbuffer *msg)
{
	char helo[64 + 1], date[64];
	const char *proto;
	struct evbuffer *hdr;
	int rc;

	smtp_helo_safe(s->helo, helo, sizeof(helo));
	smtp_date(time(NULL), date, sizeof(date));
	if (s->txn.smtputf8)
		proto = s->tls ? "UTF8SMTPS" : "UTF8SMTP";
	else if (s->esmtp)
		proto = s->tls ? "ESMTPS" : "ESMTP";
	else
		proto = s->tls ? "SMTPS" : "SMTP";

	if ((hdr = evbuffer_new()) == NULL)
		return -1;
	evbuffer_add_printf(hdr, "Received: from %s ([%s%s])\r\n"
	    "\tby %s (smtpvault) with %s id %s\r\n", helo,
	    strchr(s->ip, ':') != NULL ? "IPv6:" : "", s->ip,
	    smtp_hostname(s->srv), proto, s->txn.queue_id);
	if (s->txn.n_rcpts == 1)
		evbuffer_add_printf(hdr, "\tfor <%s>; %s\r\n", s->txn.rcpts[0], date);
	else
		evbuffer_add_printf(hdr, "\t%s\r\n", date);
	rc = evbuffer_prepend_buffer(msg, hdr);
	evbuffer_free(hdr);
	return rc;
}

/* The relay's answer becomes the reply to the final dot. */
static void
smtp_session_relay_reply(struct smtp_session *s, const struct relay_result *res)
{
	char text[SMTP_SESSION_RELAY_TEXT_MAX + 1], esc[SMTP_SESSION_LOG_MAX];
	char esc_text[SMTP_SESSION_LOG_MAX];
	int code = res->code;

	if (s->state != SMTP_STATE_RELAY) {
		log_warn("session=%s event=relay_answer_unexpected state=%s", s->id,
		    smtp_state_names[s->state]);
		return;
	}
	strlcpy(text, res->text, sizeof(text));
	if (code < 200 || code > 599 || (code >= 300 && code < 400)) {
		log_err("session=%s event=relay_bad_answer code=%d", s->id, code);
		smtp_reply(s, 451, "4.3.0", "Local error in processing");
	} else {
		smtp_reply(s, code, res->enhanced, "%s", text[0] != '\0' ? text :
		    (code < 300 ? "Ok" : "Failed"));
	}
	log_info("session=%s event=message queue_id=%s client=%s from=<%s> rcpts=%zu "
	    "account=%s code=%d text=\"%s\"", s->id, s->txn.queue_id, s->client_name,
	    smtp_esc(esc, sizeof(esc), s->txn.from), s->txn.n_rcpts, s->txn.account,
	    code, smtp_esc(esc_text, sizeof(esc_text), text));
	s->messages++;
	smtp_txn_reset(s);
	smtp_enter_state(s, SMTP_STATE_HELO);
}

/* relay_cb: called later, from the event loop. */
static void
smtp_relay_done(void *arg, const struct relay_result *res)
{
	struct smtp_session *s = arg;

	smtp_session_relay_reply(s, res);
	/* Commands pipelined after the final dot wait in the input buffer
	 * (unless this runs inside relay_submit(), whose caller goes on). */
	if (!s->submitting)
		smtp_session_process(s);
}

/* The final dot was read: reply to a refused message, or hand it over. */
static void
smtp_session_data_end(struct smtp_session *s)
{
	struct smtp_server *srv = s->srv;
	struct smtp_txn *t = &s->txn;
	enum smtp_data_error e = smtp_data_error(&t->data);
	struct relay_result res;
	struct relay_msg *msg;
	const char *enh, *text;
	int code;

	if (e != SMTP_DATA_OK) {
		smtp_data_error_reply(e, &code, &enh, &text);
		log_info("session=%s event=message_refused queue_id=%s code=%d reason=\"%s\"",
		    s->id, t->queue_id, code, text);
		smtp_audit_reject(s, text, "DATA", NULL);
		smtp_txn_reset(s);
		smtp_enter_state(s, SMTP_STATE_HELO);
		smtp_error(s, code, enh, "%s", text);
		return;
	}

	if ((msg = calloc(1, sizeof(*msg))) == NULL || smtp_received(s, t->msg) != 0) {
		free(msg);
		log_err("session=%s event=out_of_memory", s->id);
		smtp_txn_reset(s);
		smtp_enter_state(s, SMTP_STATE_HELO);
		smtp_reply(s, 451, "4.3.0", "Insufficient system resources");
		return;
	}
	strlcpy(msg->queue_id, t->queue_id, sizeof(msg->queue_id));
	strlcpy(msg->account, t->account, sizeof(msg->account));
	strlcpy(msg->mail_from, t->from, sizeof(msg->mail_from));
	msg->rcpts = t->rcpts;
	msg->n_rcpts = t->n_rcpts;
	msg->body_8bit = t->body_8bit;
	msg->smtputf8 = t->smtputf8;
	msg->data = t->msg;
	strlcpy(msg->client_ip, s->ip, sizeof(msg->client_ip));
	strlcpy(msg->client_name, s->client_name, sizeof(msg->client_name));
	strlcpy(msg->helo, s->helo, sizeof(msg->helo));
	/* The relay owns these now; keep the count for the log line. */
	t->rcpts = NULL;
	t->cap_rcpts = 0;
	t->msg = NULL;
	/* The audit log's header fields are read here, on the LAN side, and
	 * travel with the envelope (relay.h). */
	if (relay_fields_read(msg->data, srv->cfg->log_subject, &msg->fields) == -1) {
		relay_msg_free(msg);
		log_err("session=%s event=out_of_memory", s->id);
		smtp_txn_reset(s);
		smtp_enter_state(s, SMTP_STATE_HELO);
		smtp_reply(s, 451, "4.3.0", "Insufficient system resources");
		return;
	}

	log_debug("session=%s event=submit queue_id=%s size=%llu", s->id, t->queue_id,
	    (unsigned long long)t->data.size);
	smtp_enter_state(s, SMTP_STATE_RELAY);
	memset(&res, 0, sizeof(res));
	s->submitting = 1;
	if (srv->hooks.submit(srv->hooks.arg, msg, smtp_relay_done, s, &res) != 0) {
		/* Refused at once: res is the answer, and cb is never called.
		 * The input loop we are in goes on with pipelined commands. */
		smtp_session_relay_reply(s, &res);
	}
	s->submitting = 0;
}

/* Feed buffered input to the DATA machine. 1 when the message ended. */
static int
smtp_session_data(struct smtp_session *s, struct evbuffer *in)
{
	unsigned char out[SMTP_DATA_OUT_MAX(SMTP_SESSION_DATA_CHUNK)];

	while (evbuffer_get_length(in) > 0) {
		struct evbuffer_iovec v;
		size_t len, used, outlen = 0;

		if (evbuffer_peek(in, -1, NULL, &v, 1) < 1 || v.iov_len == 0)
			break;
		len = v.iov_len < SMTP_SESSION_DATA_CHUNK ? v.iov_len : SMTP_SESSION_DATA_CHUNK;
		used = smtp_data_feed(&s->txn.data, v.iov_base, len, out, &outlen);
		if (outlen > 0 && evbuffer_add(s->txn.msg, out, outlen) != 0) {
			/* Keep reading to the end; refuse the message then. */
			log_err("session=%s event=out_of_memory", s->id);
			s->txn.data.error = SMTP_DATA_TOO_BIG;
		}
		evbuffer_drain(in, used);
		if (smtp_data_done(&s->txn.data)) {
			smtp_session_data_end(s);
			return 1;
		}
	}
	return 0;
}

/* ---- The input loop and I/O switches ------------------------------------ */

/* Read while the state reads input and the client reads our replies. */
static void
smtp_session_update_io(struct smtp_session *s)
{
	size_t backlog = evbuffer_get_length(bufferevent_get_output(s->bev));
	int reading;

	if (s->free_scheduled)
		return;
	if (s->state == SMTP_STATE_TLS)
		reading = 1;
	else
		reading = (smtp_state_reads_commands(s->state) ||
		    s->state == SMTP_STATE_DATA) && backlog <= SMTP_SESSION_OUTPUT_MAX;
	if (reading)
		bufferevent_enable(s->bev, EV_READ);
	else
		bufferevent_disable(s->bev, EV_READ);
}

/*
 * Handle every complete line in the input, in order (PIPELINING), until the
 * input runs dry, the state stops taking input (relay, STARTTLS, closing),
 * or too many replies wait unsent.
 */
static void
smtp_session_process(struct smtp_session *s)
{
	struct evbuffer *in = bufferevent_get_input(s->bev);
	char line[SMTP_LINE_MAX + 1];

	for (;;) {
		if (evbuffer_get_length(bufferevent_get_output(s->bev)) >
		    SMTP_SESSION_OUTPUT_MAX)
			break;
		if (s->state == SMTP_STATE_DATA) {
			if (smtp_session_data(s, in) == 0)
				break;
			continue;
		}
		if (!smtp_state_reads_commands(s->state))
			break;
		if (s->srv->draining) {
			/* Between transactions: the right moment to stop. */
			smtp_reply(s, 421, "4.3.2", "%s Service shutting down",
			    smtp_hostname(s->srv));
			smtp_session_close(s);
			break;
		}
		switch (smtp_session_getline(s, in, line)) {
		case SMTP_LINE_NONE:
			goto out;
		case SMTP_LINE_SKIPPED:
			continue;
		case SMTP_LINE_OK:
			smtp_session_command(s, line);
			break;
		}
	}
out:
	smtp_session_update_io(s);
}

static void
smtp_session_readcb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;

	if (s->free_scheduled)
		return;
	if (s->state == SMTP_STATE_CLOSING) {
		evbuffer_drain(bufferevent_get_input(bev),
		    evbuffer_get_length(bufferevent_get_input(bev)));
		return;
	}
	smtp_session_process(s);
}

static void
smtp_session_start_tls(struct smtp_session *s)
{
	struct smtp_server *srv = s->srv;
	struct bufferevent *tls;
	struct timeval tv = { (time_t)srv->cfg->smtp_timeout, 0 };
	SSL *ssl;

	if ((ssl = SSL_new(srv->ssl_ctx)) == NULL) {
		log_err("session=%s event=tls_error error=SSL_new", s->id);
		smtp_session_close(s);
		return;
	}
	tls = bufferevent_openssl_filter_new(srv->base, s->bev, ssl,
	    BUFFEREVENT_SSL_ACCEPTING, BEV_OPT_CLOSE_ON_FREE);
	if (tls == NULL) {
		SSL_free(ssl);
		log_err("session=%s event=tls_error error=filter", s->id);
		smtp_session_close(s);
		return;
	}
	s->bev = tls;
	bufferevent_setcb(tls, smtp_session_readcb, smtp_session_writecb,
	    smtp_session_eventcb, s);
	bufferevent_setwatermark(tls, EV_READ, 0, SMTP_SESSION_INPUT_MAX);
	/*
	 * libevent's TLS filter reserves room for a whole read (16 KiB by
	 * default) in the input buffer whenever reading resumes, and an idle
	 * session keeps that empty 32 KiB chain. Small reads keep an idle TLS
	 * session near 20 KiB (make bench: 38 -> 20 KiB per connection).
	 */
	bufferevent_set_max_single_read(tls, SMTP_SESSION_TLS_READ);
	bufferevent_set_timeouts(tls, &tv, &tv);
	smtp_enter_state(s, SMTP_STATE_TLS);
	bufferevent_enable(tls, EV_READ | EV_WRITE);
}

/* Bytes still waiting below a TLS filter, on their way to the socket. */
static size_t
smtp_session_unsent(struct smtp_session *s)
{
	struct bufferevent *under = bufferevent_get_underlying(s->bev);
	size_t n = evbuffer_get_length(bufferevent_get_output(s->bev));

	if (under != NULL)
		n += evbuffer_get_length(bufferevent_get_output(under));
	return n;
}

static void
smtp_session_schedule_free(struct smtp_session *s)
{
	if (s->free_scheduled)
		return;
	s->free_scheduled = 1;
	bufferevent_disable(s->bev, EV_READ | EV_WRITE);
	event_active(s->ev_free, EV_TIMEOUT, 1);
}

/* A TLS session's last reply left the filter: wait for the socket too. */
static void
smtp_session_under_drained(struct evbuffer *buf, const struct evbuffer_cb_info *info,
    void *arg)
{
	struct smtp_session *s = arg;

	if (s->state == SMTP_STATE_CLOSING && smtp_session_unsent(s) == 0)
		smtp_session_schedule_free(s);
}

static void
smtp_session_writecb(struct bufferevent *bev, void *arg)
{
	struct smtp_session *s = arg;
	struct bufferevent *under;

	if (s->free_scheduled)
		return;
	switch (s->state) {
	case SMTP_STATE_CLOSING:
		if (smtp_session_unsent(s) == 0) {
			smtp_session_schedule_free(s);
		} else if ((under = bufferevent_get_underlying(s->bev)) != NULL) {
			evbuffer_add_cb(bufferevent_get_output(under),
			    smtp_session_under_drained, s);
		}
		break;
	case SMTP_STATE_STARTTLS:
		/* The 220 is on its way; only now may TLS begin. */
		smtp_session_start_tls(s);
		break;
	default:
		/* The client read our backlog: go on with its input. */
		smtp_session_process(s);
		break;
	}
}

static void
smtp_session_eventcb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_session *s = arg;
	unsigned long e;

	if (s->free_scheduled)
		return;
	if (what & BEV_EVENT_CONNECTED) {
		SSL *ssl = bufferevent_openssl_get_ssl(bev);

		s->tls = 1;
		log_info("session=%s event=starttls ip=%s version=%s cipher=%s", s->id, s->ip,
		    ssl != NULL ? SSL_get_version(ssl) : "?",
		    ssl != NULL ? SSL_get_cipher_name(ssl) : "?");
		smtp_enter_state(s, SMTP_STATE_INIT);
		smtp_session_process(s);
		return;
	}
	if ((what & BEV_EVENT_TIMEOUT) && (what & BEV_EVENT_READING) &&
	    s->state != SMTP_STATE_CLOSING && s->state != SMTP_STATE_TLS) {
		log_info("session=%s event=timeout ip=%s state=%s", s->id, s->ip,
		    smtp_state_names[s->state]);
		smtp_reply(s, 421, "4.4.2", "%s Error: timeout exceeded",
		    smtp_hostname(s->srv));
		smtp_session_close(s);
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		while ((e = bufferevent_get_openssl_error(bev)) != 0) {
			char buf[256];

			ERR_error_string_n(e, buf, sizeof(buf));
			log_info("session=%s event=tls_error ip=%s error=\"%s\"", s->id,
			    s->ip, buf);
		}
	}
	log_debug("session=%s event=connection_end what=0x%x state=%s", s->id,
	    (unsigned)what, smtp_state_names[s->state]);
	smtp_session_schedule_free(s);
}

/*
 * End the session once its last reply is sent (bounded by
 * SMTP_SESSION_CLOSE_TIMEOUT). Never frees anything itself.
 */
static void
smtp_session_close(struct smtp_session *s)
{
	struct timeval tv = { SMTP_SESSION_CLOSE_TIMEOUT, 0 };

	if (s->state == SMTP_STATE_CLOSING || s->free_scheduled)
		return;
	smtp_enter_state(s, SMTP_STATE_CLOSING);
	bufferevent_disable(s->bev, EV_READ);
	bufferevent_set_timeouts(s->bev, NULL, &tv);
	bufferevent_enable(s->bev, EV_WRITE);
	if (smtp_session_unsent(s) == 0)
		smtp_session_schedule_free(s);
}

static void smtp_server_drain_check(struct smtp_server *srv);

static void
smtp_session_free(struct smtp_session *s)
{
	struct smtp_server *srv = s->srv;
	struct bufferevent *under;

	if (s->state == SMTP_STATE_RELAY)
		srv->hooks.cancel(srv->hooks.arg, s);
	log_info("session=%s event=disconnect ip=%s messages=%u errors=%u", s->id, s->ip,
	    s->messages, s->errors);
	TAILQ_REMOVE(&srv->sessions, s, entry);
	if (--srv->n_sessions == 0)
		smtp_server_trim_later(srv);
	if ((under = bufferevent_get_underlying(s->bev)) != NULL)
		evbuffer_remove_cb(bufferevent_get_output(under),
		    smtp_session_under_drained, s);
	bufferevent_free(s->bev);
	event_free(s->ev_free);
	smtp_txn_reset(s);
	free(s);
}

static void
smtp_session_free_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_session *s = arg;
	struct smtp_server *srv = s->srv;

	smtp_session_free(s);
	smtp_server_drain_check(srv);
}

/* ---- Accepting connections ---------------------------------------------- */

static size_t
smtp_server_count_ip(struct smtp_server *srv, const char *ip)
{
	struct smtp_session *s;
	size_t n = 0;

	TAILQ_FOREACH(s, &srv->sessions, entry)
		if (strcmp(s->ip, ip) == 0)
			n++;
	return n;
}

void
smtp_server_accept(struct smtp_server *srv, int fd, const struct sockaddr *sa,
    socklen_t salen)
{
	const struct config *cfg = srv->cfg;
	const struct client_cfg *client;
	struct smtp_session *s;
	struct timeval tv = { (time_t)cfg->smtp_timeout, 0 };
	unsigned char rnd[SMTP_SESSION_ID_LEN / 2];
	int trusted = 0;
	size_t per_ip;

	if (srv->draining || srv->n_sessions >= cfg->max_connections +
	    SMTP_SESSION_REFUSE_SLACK || (size_t)salen > sizeof(s->peer)) {
		close(fd);
		return;
	}
	if ((s = calloc(1, sizeof(*s))) == NULL) {
		log_err("event=accept error=\"out of memory\"");
		close(fd);
		return;
	}
	s->srv = srv;
	s->state = SMTP_STATE_INIT;
	memcpy(&s->peer, sa, salen);
	s->peerlen = salen;
	sockaddr_ntop(sa, s->ip, sizeof(s->ip));
	randombytes_buf(rnd, sizeof(rnd));
	sodium_bin2hex(s->id, sizeof(s->id), rnd, sizeof(rnd));
	per_ip = smtp_server_count_ip(srv, s->ip);

	s->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE);
	s->ev_free = event_new(srv->base, -1, 0, smtp_session_free_cb, s);
	if (s->bev == NULL || s->ev_free == NULL) {
		log_err("event=accept error=\"out of memory\"");
		if (s->bev != NULL)
			bufferevent_free(s->bev);
		else
			close(fd);
		if (s->ev_free != NULL)
			event_free(s->ev_free);
		free(s);
		return;
	}
	TAILQ_INSERT_TAIL(&srv->sessions, s, entry);
	srv->n_sessions++;
	bufferevent_setcb(s->bev, smtp_session_readcb, smtp_session_writecb,
	    smtp_session_eventcb, s);
	bufferevent_setwatermark(s->bev, EV_READ, 0, SMTP_SESSION_INPUT_MAX);
	bufferevent_set_timeouts(s->bev, &tv, &tv);

	/* Trust comes from the peer address alone: never from HELO, XCLIENT,
	 * PROXY or headers. */
	client = config_client_for(cfg, sa, &trusted);
	strlcpy(s->client_name, client != NULL ? client->name :
	    trusted ? SMTP_ANON_CLIENT : "-", sizeof(s->client_name));
	log_info("session=%s event=connect ip=%s client=%s", s->id, s->ip, s->client_name);

	if (client == NULL && !trusted) {
		smtp_audit_reject(s, "address not in any [client] network or trusted_networks",
		    "CONNECT", NULL);
		smtp_reply(s, 554, "5.7.1", "<%s> is not allowed to relay", s->ip);
		smtp_session_close(s);
		return;
	}
	if (srv->n_sessions > cfg->max_connections) {
		log_warn("session=%s event=too_many_connections ip=%s sessions=%zu", s->id,
		    s->ip, srv->n_sessions);
		smtp_reply(s, 421, "4.7.0", "%s Error: too many connections",
		    smtp_hostname(srv));
		smtp_session_close(s);
		return;
	}
	if (per_ip >= cfg->max_connections_per_ip) {
		log_warn("session=%s event=too_many_connections_from_ip ip=%s sessions=%zu",
		    s->id, s->ip, per_ip + 1);
		smtp_reply(s, 421, "4.7.0", "%s Error: too many connections from your "
		    "address", smtp_hostname(srv));
		smtp_session_close(s);
		return;
	}
	smtp_reply(s, 220, NULL, "%s ESMTP smtpvault", smtp_hostname(srv));
	bufferevent_enable(s->bev, EV_READ | EV_WRITE);
}

static void
smtp_server_accept_cb(struct evconnlistener *l, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	smtp_server_accept(arg, fd, sa, (socklen_t)salen);
}

static void
smtp_server_listen_retry(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_server *srv = arg;
	size_t i;

	if (srv->draining)
		return;
	for (i = 0; i < srv->n_listeners; i++)
		evconnlistener_enable(srv->listeners[i]);
}

/* accept() failed (EMFILE, ENFILE, ENOBUFS): pause instead of spinning. */
static void
smtp_server_accept_error(struct evconnlistener *l, void *arg)
{
	struct smtp_server *srv = arg;
	struct timeval tv = { SMTP_LISTEN_RETRY, 0 };
	size_t i;

	log_warn("event=accept_error error=\"%s\" action=pause seconds=%d",
	    strerror(errno), SMTP_LISTEN_RETRY);
	for (i = 0; i < srv->n_listeners; i++)
		evconnlistener_disable(srv->listeners[i]);
	evtimer_add(srv->ev_listen_retry, &tv);
}

static int
smtp_server_listen(struct smtp_server *srv, const struct listen_cfg *lc, char *err,
    size_t errlen)
{
	struct evconnlistener *l;
	int fd, one = 1;
	size_t i = srv->n_listeners;

	fd = socket(lc->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd == -1) {
		snprintf(err, errlen, "listen %s: socket: %s", lc->text, strerror(errno));
		return -1;
	}
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    (lc->ss.ss_family == AF_INET6 &&
	    setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) == -1)) {
		snprintf(err, errlen, "listen %s: setsockopt: %s", lc->text, strerror(errno));
		close(fd);
		return -1;
	}
	if (bind(fd, (const struct sockaddr *)&lc->ss, lc->sslen) == -1 ||
	    listen(fd, SMTP_LISTEN_BACKLOG) == -1) {
		snprintf(err, errlen, "listen %s: %s", lc->text, strerror(errno));
		close(fd);
		return -1;
	}
	srv->boundlen[i] = sizeof(srv->bound[i]);
	if (getsockname(fd, (struct sockaddr *)&srv->bound[i], &srv->boundlen[i]) == -1)
		srv->boundlen[i] = 0;
	l = evconnlistener_new(srv->base, smtp_server_accept_cb, srv,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
	if (l == NULL) {
		snprintf(err, errlen, "listen %s: cannot create listener", lc->text);
		close(fd);
		return -1;
	}
	evconnlistener_set_error_cb(l, smtp_server_accept_error);
	srv->listeners[srv->n_listeners++] = l;
	log_info("event=listen address=%s", lc->text);
	return 0;
}

/* ---- TLS for LAN clients ------------------------------------------------- */

static SSL_CTX *
smtp_server_tls_ctx(const struct config *cfg, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	char buf[256];

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL)
		goto fail;
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
		goto fail;
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE |
	    SSL_OP_NO_COMPRESSION);
	/* Idle sessions give their 16 KiB record buffers back. */
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->smtp_tls_cert) != 1 ||
	    SSL_CTX_use_PrivateKey_file(ctx, cfg->smtp_tls_key, SSL_FILETYPE_PEM) != 1 ||
	    SSL_CTX_check_private_key(ctx) != 1)
		goto fail;
	return ctx;
fail:
	ERR_error_string_n(ERR_get_error(), buf, sizeof(buf));
	snprintf(err, errlen, "[smtp] tls_cert %s / tls_key %s: %s", cfg->smtp_tls_cert,
	    cfg->smtp_tls_key, buf);
	ERR_clear_error();
	SSL_CTX_free(ctx);
	return NULL;
}

/* ---- The server ---------------------------------------------------------- */

static int
smtp_submit_relay(void *arg, struct relay_msg *msg,
    void (*cb)(void *, const struct relay_result *), void *cbarg, struct relay_result *res)
{
	struct smtp_server *srv = arg;

	return relay_submit(srv->relay, msg, cb, cbarg, res);
}

static void
smtp_cancel_relay(void *arg, void *cbarg)
{
	struct smtp_server *srv = arg;

	relay_cancel(srv->relay, cbarg);
}

/*
 * A burst of sessions leaves the heap full of freed buffers that malloc
 * keeps for next time; once the server has been idle for a moment they go
 * back to the system (malloc_trim(3)), so that an idle daemon is small
 * again. Each close re-arms the timer: never while sessions come and go.
 */
static void
smtp_server_trim(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_server *srv = arg;

	if (srv->n_sessions == 0 && malloc_trim(0))
		log_debug("event=heap_trim");
}

static void
smtp_server_trim_later(struct smtp_server *srv)
{
	struct timeval tv = { 0, SMTP_SERVER_TRIM_MS * 1000 };

	if (srv->ev_trim != NULL)
		evtimer_add(srv->ev_trim, &tv);
}

struct smtp_server *
smtp_server_new(struct event_base *base, const struct config *cfg, struct relay *relay,
    struct credstore *cs, char *err, size_t errlen)
{
	struct smtp_server *srv;
	size_t i;

	if (sodium_init() < 0) {
		snprintf(err, errlen, "libsodium initialisation failed");
		return NULL;
	}
	if ((srv = calloc(1, sizeof(*srv))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	srv->base = base;
	srv->cfg = cfg;
	srv->relay = relay;
	srv->cs = cs;
	srv->hooks.resolve = smtp_resolve_credstore;
	srv->hooks.submit = smtp_submit_relay;
	srv->hooks.cancel = smtp_cancel_relay;
	srv->hooks.arg = srv;
	TAILQ_INIT(&srv->sessions);

	if (cfg->smtp_tls_cert[0] != '\0' &&
	    (srv->ssl_ctx = smtp_server_tls_ctx(cfg, err, errlen)) == NULL)
		goto fail;
	if ((srv->ev_listen_retry = evtimer_new(base, smtp_server_listen_retry, srv)) == NULL ||
	    (srv->ev_trim = evtimer_new(base, smtp_server_trim, srv)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto fail;
	}
	for (i = 0; i < cfg->n_listen; i++)
		if (smtp_server_listen(srv, &cfg->listen[i], err, errlen) != 0)
			goto fail;
	/* What start-up freed (configuration, vault unlock) goes back too. */
	smtp_server_trim_later(srv);
	return srv;
fail:
	smtp_server_free(srv);
	return NULL;
}

void
smtp_server_set_hooks(struct smtp_server *srv, const struct smtp_server_hooks *hooks)
{
	srv->hooks = *hooks;
}

void
smtp_server_set_audit(struct smtp_server *srv, struct audit *a)
{
	srv->audit = a;
}

void
smtp_server_set_config(struct smtp_server *srv, const struct config *cfg)
{
	char err[512];
	SSL_CTX *ctx;

	srv->cfg = cfg;
	/* Re-read the certificate too: renewals arrive with a SIGHUP. */
	if (cfg->smtp_tls_cert[0] == '\0') {
		SSL_CTX_free(srv->ssl_ctx);
		srv->ssl_ctx = NULL;
	} else if ((ctx = smtp_server_tls_ctx(cfg, err, sizeof(err))) == NULL) {
		log_err("event=reload error=\"%s\" action=keep_old_tls", err);
	} else {
		SSL_CTX_free(srv->ssl_ctx);	/* open sessions hold their own reference */
		srv->ssl_ctx = ctx;
	}
}

int
smtp_server_local_addr(const struct smtp_server *srv, size_t i,
    struct sockaddr_storage *ss, socklen_t *sslen)
{
	if (i >= srv->n_listeners || srv->boundlen[i] == 0)
		return -1;
	memcpy(ss, &srv->bound[i], srv->boundlen[i]);
	*sslen = srv->boundlen[i];
	return 0;
}

static void
smtp_server_drain_done(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_server *srv = arg;
	void (*done)(void *) = srv->drain_done;

	srv->drain_done = NULL;
	if (done != NULL)
		done(srv->drain_arg);
}

static void
smtp_server_drain_check(struct smtp_server *srv)
{
	struct timeval now = { 0, 0 };

	if (srv->draining && srv->n_sessions == 0 && srv->drain_done != NULL)
		event_base_once(srv->base, -1, EV_TIMEOUT, smtp_server_drain_done, srv, &now);
}

void
smtp_server_drain(struct smtp_server *srv, void (*done)(void *), void *arg)
{
	struct smtp_session *s, *next;
	size_t i;

	srv->draining = 1;
	srv->drain_done = done;
	srv->drain_arg = arg;
	for (i = 0; i < srv->n_listeners; i++)
		evconnlistener_disable(srv->listeners[i]);
	evtimer_del(srv->ev_listen_retry);
	log_info("event=drain sessions=%zu", srv->n_sessions);

	for (s = TAILQ_FIRST(&srv->sessions); s != NULL; s = next) {
		next = TAILQ_NEXT(s, entry);
		switch (s->state) {
		case SMTP_STATE_DATA:
		case SMTP_STATE_RELAY:
			/* Finish the transaction; the 421 follows its reply. */
			break;
		case SMTP_STATE_CLOSING:
			break;
		case SMTP_STATE_STARTTLS:
		case SMTP_STATE_TLS:
			smtp_session_schedule_free(s);
			break;
		default:
			smtp_reply(s, 421, "4.3.2", "%s Service shutting down",
			    smtp_hostname(srv));
			smtp_session_close(s);
			break;
		}
	}
	smtp_server_drain_check(srv);
}

void
smtp_server_free(struct smtp_server *srv)
{
	struct smtp_session *s;
	size_t i;

	if (srv == NULL)
		return;
	while ((s = TAILQ_FIRST(&srv->sessions)) != NULL)
		smtp_session_free(s);
	for (i = 0; i < srv->n_listeners; i++)
		evconnlistener_free(srv->listeners[i]);
	if (srv->ev_listen_retry != NULL)
		event_free(srv->ev_listen_retry);
	if (srv->ev_trim != NULL)
		event_free(srv->ev_trim);
	SSL_CTX_free(srv->ssl_ctx);
	free(srv);
}
