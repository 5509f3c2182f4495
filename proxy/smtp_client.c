/*
 * smtp_client.c: the upstream SMTP client. One struct smtp_client is one
 * connection to the upstream, driven by an explicit state machine in the
 * manner of curl's lib/smtp.c: perform_X() sends a command and enters the
 * state that waits for its reply, X_resp() handles that reply, and
 * client_dispatch() is the one switch between them. client_enter() is the
 * only place the state changes.
 *
 * RFCs: 5321 (SMTP), 3207 (STARTTLS), 4954 (AUTH), 4616 (PLAIN), 2920
 * (PIPELINING), 3463 and 2034 (enhanced status codes), 1870 (SIZE), 6152
 * (8BITMIME), 6531 (SMTPUTF8), 3030 (CHUNKING).
 *
 * A message goes with DATA (dot-stuffed, after the 354) or, when the
 * server offers CHUNKING, as one "BDAT <size> LAST" chunk of its bytes as
 * they are. With PIPELINING and one recipient, MAIL, RCPT, BDAT and the
 * bytes go in one flight: one round trip a message instead of two. With
 * several recipients BDAT waits for their replies, because a BDAT cannot be
 * taken back: sent after a refused recipient it would deliver to the others,
 * and a message here is all or nothing. With one recipient that is refused
 * the server has nobody to deliver to, and its reply to BDAT (5xx, "no
 * valid recipients") ends the transaction in step. Replies to BDAT are
 * handled exactly like replies to the final dot.
 *
 * Writing the message is its own small machine (enum smtp_body_out), apart
 * from the state that waits for replies, because with one-flight BDAT the
 * bytes are still going out while the replies to MAIL and RCPT come in.
 *
 * Security rules that the state machine enforces, not the caller:
 *  - TLS always verifies the certificate chain and the host name (or IP);
 *    there is no way to turn it off.
 *  - tls = starttls: a server that does not offer STARTTLS, or that sends
 *    anything after its 220 reply to STARTTLS (response injection, as curl
 *    refuses), is abandoned. AUTH is only ever sent inside verified TLS.
 *  - The credential is fetched just before AUTH and wiped right after the
 *    last AUTH line is written. The AUTH line itself is built in guarded
 *    memory and handed to the output buffer by reference (no copy): the
 *    buffer frees (and so wipes) it once the TLS layer has taken it.
 *    Residue: OpenSSL encrypts a record in place in its own write buffer,
 *    so only cipher text is left there; nothing else holds the secret.
 *  - Every wait is bounded by the target's timeout, measured per step from
 *    the moment we start waiting, so a server that drips one byte at a time
 *    cannot hold a session. Reply lines, reply size and the input buffer are
 *    bounded (smtp_reply.h).
 *
 * A client is never freed inside its own callback: smtp_client_free() from
 * the owner's event callback only marks it, and the entry point that is
 * running frees it on the way out.
 */
#include "smtp_client.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sodium.h>

#include "credential.h"
#include "log.h"
#include "relay.h"
#include "smtp_reply.h"
#include "util.h"

_Static_assert(SMTP_REPLY_TEXT_MAX == SMTP_CLIENT_REPLY_MAX,
    "the parser keeps exactly the text the client reports");

#define SMTP_CLIENT_INPUT_MAX	(4 * SMTP_REPLY_LINE_MAX)	/* read high watermark */
#define SMTP_CLIENT_CHUNK	(16 * 1024)	/* message bytes stuffed per step */
#define SMTP_CLIENT_BODY_LOW	(64 * 1024)	/* refill output below this */
#define SMTP_CLIENT_BODY_HIGH	(256 * 1024)	/* ... up to about this */
#define SMTP_CLIENT_CMD_LOG_MAX	600		/* escaped command in a log line */
#define SMTP_CLIENT_DEFAULT_HELO "localhost"
#define SMTP_CLIENT_MIN_TIMEOUT	1		/* seconds; a 0 timeout means this */
#define SMTP_CLIENT_FINALIZE_TURNS 4		/* loop turns before freeing a private base */

enum smtp_state {
	SMTP_ST_CONNECT,	/* DNS and TCP connect */
	SMTP_ST_HANDSHAKE,	/* TLS handshake (implicit, or after STARTTLS) */
	SMTP_ST_GREETING,	/* waiting for 220 */
	SMTP_ST_EHLO,		/* waiting for the EHLO reply */
	SMTP_ST_STARTTLS,	/* waiting for 220 to STARTTLS */
	SMTP_ST_AUTH_PLAIN,	/* waiting for 235 to AUTH PLAIN <initial response> */
	SMTP_ST_AUTH_LOGIN,	/* waiting for 334 to AUTH LOGIN */
	SMTP_ST_AUTH_USER,	/* waiting for 334 to the user name */
	SMTP_ST_AUTH_PASS,	/* waiting for 235 to the password */
	SMTP_ST_IDLE,		/* logged in, no transaction */
	SMTP_ST_RSET,		/* waiting for 250 to RSET */
	SMTP_ST_MAIL,		/* waiting for 250 to MAIL FROM */
	SMTP_ST_RCPT,		/* waiting for the reply to RCPT number rcpt_next */
	SMTP_ST_DATA,		/* waiting for 354 to DATA */
	SMTP_ST_BODY,		/* writing the message after 354 */
	SMTP_ST_BDAT,		/* waiting for the reply to BDAT <size> LAST */
	SMTP_ST_DOT,		/* waiting for the reply to the final dot */
	SMTP_ST_QUIT,		/* waiting for 221 to QUIT */
	SMTP_ST_CLOSED,
};

static const char *const state_names[] = {
	[SMTP_ST_CONNECT] = "connect",
	[SMTP_ST_HANDSHAKE] = "handshake",
	[SMTP_ST_GREETING] = "greeting",
	[SMTP_ST_EHLO] = "ehlo",
	[SMTP_ST_STARTTLS] = "starttls",
	[SMTP_ST_AUTH_PLAIN] = "auth-plain",
	[SMTP_ST_AUTH_LOGIN] = "auth-login",
	[SMTP_ST_AUTH_USER] = "auth-user",
	[SMTP_ST_AUTH_PASS] = "auth-pass",
	[SMTP_ST_IDLE] = "idle",
	[SMTP_ST_RSET] = "rset",
	[SMTP_ST_MAIL] = "mail",
	[SMTP_ST_RCPT] = "rcpt",
	[SMTP_ST_DATA] = "data",
	[SMTP_ST_BODY] = "body",
	[SMTP_ST_BDAT] = "bdat",
	[SMTP_ST_DOT] = "dot",
	[SMTP_ST_QUIT] = "quit",
	[SMTP_ST_CLOSED] = "closed",
};

static const char *const stage_names[] = {
	[SMTP_STAGE_CONNECT] = "connect",
	[SMTP_STAGE_TLS] = "tls",
	[SMTP_STAGE_AUTH] = "auth",
	[SMTP_STAGE_MAIL] = "mail",
	[SMTP_STAGE_RCPT] = "rcpt",
	[SMTP_STAGE_DATA] = "data",
	[SMTP_STAGE_QUIT] = "quit",
};

enum smtp_auth_mech { SMTP_AUTH_NONE, SMTP_AUTH_PLAIN, SMTP_AUTH_LOGIN };

/* What body_fill() is writing. */
enum smtp_body_out {
	SMTP_BODY_IDLE,		/* nothing (not yet, or all of it is out) */
	SMTP_BODY_DOTTED,	/* DATA: dot-stuffed, then the final dot */
	SMTP_BODY_RAW,		/* BDAT: the bytes as they are */
};

struct smtp_client {
	char			id[16];
	struct event_base	*base;
	struct evdns_base	*dns;
	SSL_CTX			*ctx;
	struct upstream_target	t;
	int			host_is_ip;
	smtp_client_cred_cb	*cred_cb;
	smtp_client_event_cb	*event_cb;
	void			*arg;

	enum smtp_state		state;
	struct bufferevent	*bev;		/* the socket, or the TLS filter over it */
	SSL			*ssl;		/* owned by the filter once it exists */
	int			tls_on;
	struct event		*timer;		/* per-step timeout */
	struct smtp_reply	reply;
	char			line[SMTP_REPLY_LINE_MAX + 2];

	/* What the last EHLO advertised. */
	int			ext_starttls;
	int			ext_pipelining;
	int			ext_8bitmime;
	int			ext_smtputf8;
	int			ext_chunking;
	uint64_t		ext_size;	/* 0: no limit announced */
	enum smtp_auth_mech	mech;

	/* The credential, only between fetch and the last AUTH line. */
	struct cred		cred;
	int			have_cred;
	uint32_t		cred_version;

	/* The transaction in flight. */
	const struct relay_msg	*msg;
	size_t			rcpt_next;	/* recipient whose reply comes next */
	size_t			rcpt_sent;	/* recipients written so far */
	int			txn_failed;	/* txn_fail holds the first failure */
	struct smtp_outcome	txn_fail;
	enum smtp_body_out	body_out;
	size_t			body_off;
	int			body_bol;	/* at the beginning of a line */
	unsigned char		*chunk;
	uint64_t		n_txn;		/* transactions started */

	struct smtp_outcome	out;		/* scratch for events */
	int			busy;		/* entry points on the stack */
	int			free_pending;
};

static uint64_t client_serial;

static void	client_read_cb(struct bufferevent *, void *);
static void	client_write_cb(struct bufferevent *, void *);
static void	client_event_cb(struct bufferevent *, short, void *);
static void	client_read_replies(struct smtp_client *);
static int	client_close(struct smtp_client *, const struct smtp_outcome *);
static void	perform_ehlo(struct smtp_client *);
static void	perform_auth(struct smtp_client *);
static void	perform_next_rcpt_or_data(struct smtp_client *);
static void	perform_bdat(struct smtp_client *);
static void	body_fill(struct smtp_client *);

const char *
smtp_stage_name(enum smtp_stage s)
{
	if ((size_t)s >= ARRAY_SIZE(stage_names) || stage_names[s] == NULL)
		return "unknown";
	return stage_names[s];
}

const char *
smtp_client_id(const struct smtp_client *c)
{
	return c->id;
}

uint32_t
smtp_client_cred_version(const struct smtp_client *c)
{
	return c->cred_version;
}

uint64_t
smtp_client_messages(const struct smtp_client *c)
{
	return c->n_txn;
}

static enum smtp_stage
state_stage(enum smtp_state st)
{
	switch (st) {
	case SMTP_ST_CONNECT:
	case SMTP_ST_GREETING:
		return SMTP_STAGE_CONNECT;
	case SMTP_ST_HANDSHAKE:
	case SMTP_ST_EHLO:
	case SMTP_ST_STARTTLS:
		return SMTP_STAGE_TLS;
	case SMTP_ST_AUTH_PLAIN:
	case SMTP_ST_AUTH_LOGIN:
	case SMTP_ST_AUTH_USER:
	case SMTP_ST_AUTH_PASS:
		return SMTP_STAGE_AUTH;
	case SMTP_ST_RSET:
	case SMTP_ST_MAIL:
		return SMTP_STAGE_MAIL;
	case SMTP_ST_RCPT:
		return SMTP_STAGE_RCPT;
	case SMTP_ST_DATA:
	case SMTP_ST_BODY:
	case SMTP_ST_BDAT:
	case SMTP_ST_DOT:
		return SMTP_STAGE_DATA;
	case SMTP_ST_IDLE:
	case SMTP_ST_QUIT:
	case SMTP_ST_CLOSED:
		break;
	}
	return SMTP_STAGE_QUIT;
}

static int
state_in_transaction(enum smtp_state st)
{
	return st >= SMTP_ST_RSET && st <= SMTP_ST_DOT;
}

static void
client_enter(struct smtp_client *c, enum smtp_state st)
{
	if (c->state != st)
		log_debug("upstream id=%s state=%s->%s", c->id, state_names[c->state],
		    state_names[st]);
	c->state = st;
}

/* Outcomes. */

static void
outcome_set(struct smtp_outcome *o, enum smtp_stage stage, enum smtp_error error,
    int temporary, const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void
outcome_set(struct smtp_outcome *o, enum smtp_stage stage, enum smtp_error error,
    int temporary, const char *fmt, ...)
{
	va_list ap;

	memset(o, 0, sizeof(*o));
	o->stage = stage;
	o->error = error;
	o->temporary = temporary;
	o->auth_failed = error == SMTP_ERR_AUTH_REFUSED;
	va_start(ap, fmt);
	vsnprintf(o->text, sizeof(o->text), fmt, ap);
	va_end(ap);
}

static void
outcome_reply(struct smtp_outcome *o, enum smtp_stage stage, enum smtp_error error,
    const struct smtp_reply *r)
{
	memset(o, 0, sizeof(*o));
	o->stage = stage;
	o->error = error;
	o->code = r->code;
	strlcpy(o->enhanced, r->enhanced, sizeof(o->enhanced));
	strlcpy(o->text, r->text, sizeof(o->text));
	o->temporary = SMTP_REPLY_IS_4XX(r->code);
	o->auth_failed = error == SMTP_ERR_AUTH_REFUSED;
}

/* Entry points: keep the client alive while they run. */

static void
client_teardown(struct smtp_client *c)
{
	if (c->bev != NULL) {
		/* With a filter, this frees the socket and the SSL too. */
		bufferevent_free(c->bev);
		c->bev = NULL;
		c->ssl = NULL;
	}
	if (c->ssl != NULL) {
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->timer != NULL)
		evtimer_del(c->timer);
	if (c->have_cred) {
		cred_wipe(&c->cred);
		c->have_cred = 0;
	}
	c->msg = NULL;
}

static void
client_destroy(struct smtp_client *c)
{
	client_teardown(c);
	if (c->timer != NULL)
		event_free(c->timer);
	free(c->chunk);
	sodium_memzero(c, sizeof(*c));
	free(c);
}

static void
client_hold(struct smtp_client *c)
{
	c->busy++;
}

static void
client_release(struct smtp_client *c)
{
	if (--c->busy == 0 && c->free_pending)
		client_destroy(c);
}

/* Is the client still worth touching after a call out? */
static int
client_gone(const struct smtp_client *c)
{
	return c->free_pending || c->state == SMTP_ST_CLOSED;
}

/* Tell the owner. Returns -1 when the owner freed or closed the client. */
static int
client_notify(struct smtp_client *c, enum smtp_client_event ev, const struct smtp_outcome *o)
{
	if (c->event_cb == NULL)
		return c->free_pending ? -1 : 0;
	c->busy++;
	c->event_cb(c, ev, o, c->arg);
	c->busy--;
	return c->free_pending ? -1 : 0;
}

/* Timers and output. */

static void
client_expect(struct smtp_client *c, enum smtp_state st)
{
	struct timeval tv;

	client_enter(c, st);
	smtp_reply_init(&c->reply);
	tv.tv_sec = (time_t)(c->t.timeout < SMTP_CLIENT_MIN_TIMEOUT ?
	    SMTP_CLIENT_MIN_TIMEOUT : c->t.timeout);
	tv.tv_usec = 0;
	evtimer_add(c->timer, &tv);
}

static void
client_cmd(struct smtp_client *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Write one command line (CRLF added); logged at debug level. */
static void
client_cmd(struct smtp_client *c, const char *fmt, ...)
{
	char cmd[SMTP_REPLY_LINE_MAX], esc[SMTP_CLIENT_CMD_LOG_MAX];
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof(cmd) - 2) {
		/* Commands are built from bounded fields; this is an invariant. */
		fatal("upstream id=%s command too long", c->id);
	}
	log_debug("upstream id=%s send=\"%s\"", c->id, log_escape(esc, sizeof(esc), cmd,
	    (size_t)n));
	memcpy(cmd + n, "\r\n", 2);
	evbuffer_add(bufferevent_get_output(c->bev), cmd, (size_t)n + 2);
}

static void
guarded_cleanup(const void *data, size_t len, void *extra)
{
	sodium_free((void *)(uintptr_t)data);
}

/*
 * Write "prefix" + base64(raw) + CRLF from guarded memory, by reference, so
 * that the only plaintext copy is freed (and wiped) by the buffer once the
 * TLS layer has consumed it.
 */
static int
client_cmd_secret(struct smtp_client *c, const char *prefix, const unsigned char *raw,
    size_t rawlen)
{
	size_t plen = strlen(prefix), b64len, len;
	char *line;

	b64len = sodium_base64_ENCODED_LEN(rawlen, sodium_base64_VARIANT_ORIGINAL);
	len = plen + b64len - 1 + 2;	/* b64len counts the NUL */
	if ((line = sodium_malloc(b64len + plen + 2)) == NULL)
		return -1;
	memcpy(line, prefix, plen);
	sodium_bin2base64(line + plen, b64len, raw, rawlen, sodium_base64_VARIANT_ORIGINAL);
	memcpy(line + plen + b64len - 1, "\r\n", 2);
	log_debug("upstream id=%s send=\"%s********\"", c->id, prefix);
	if (evbuffer_add_reference(bufferevent_get_output(c->bev), line, len,
	    guarded_cleanup, NULL) == -1) {
		sodium_free(line);
		return -1;
	}
	return 0;
}

/* Failing and closing. */

static int
client_fail(struct smtp_client *c, enum smtp_error error, int temporary,
    const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int
client_fail(struct smtp_client *c, enum smtp_error error, int temporary, const char *fmt, ...)
{
	char text[SMTP_CLIENT_REPLY_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	outcome_set(&c->out, state_stage(c->state), error, temporary, "%s", text);
	return client_close(c, &c->out);
}

static int
client_fail_reply(struct smtp_client *c, enum smtp_error error)
{
	outcome_reply(&c->out, state_stage(c->state), error, &c->reply);
	/* Before a transaction, any refusal is about the server, not the message. */
	if (!state_in_transaction(c->state) && error != SMTP_ERR_AUTH_REFUSED)
		c->out.temporary = 1;
	return client_close(c, &c->out);
}

/*
 * End the session: DONE for a message in flight, then CLOSED. o may point at
 * c->out or c->txn_fail. Returns -1 (the caller stops touching c's state).
 */
static int
client_close(struct smtp_client *c, const struct smtp_outcome *o)
{
	char esc[512];
	int had_msg = c->msg != NULL;
	enum smtp_state was = c->state;

	if (c->state == SMTP_ST_CLOSED)
		return -1;
	if (o->error != SMTP_ERR_NONE)
		log_info("upstream id=%s host=%s port=%u event=closed state=%s error=%d code=%d "
		    "text=\"%s\"", c->id, c->t.host, c->t.port, state_names[was], (int)o->error,
		    o->code, log_escape(esc, sizeof(esc), o->text, strlen(o->text)));
	client_teardown(c);
	client_enter(c, SMTP_ST_CLOSED);
	/* A refusal already in hand (a pipelined 421 before the close) says
	 * more about the message than the lost connection does. */
	if (had_msg && client_notify(c, SMTP_CLIENT_DONE, c->txn_failed ? &c->txn_fail : o) == -1)
		return -1;
	client_notify(c, SMTP_CLIENT_CLOSED, o);
	return -1;
}

/* Connection set-up. */

static int
host_is_ip_literal(const char *host)
{
	unsigned char buf[sizeof(struct in6_addr)];

	return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

SSL_CTX *
smtp_client_tls_ctx_new(const char *ca_file, char *err, size_t errlen)
{
	SSL_CTX *ctx;
	char ebuf[256];

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL) {
		snprintf(err, errlen, "cannot create a TLS context");
		return NULL;
	}
	if (SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1)
		goto fail_ssl;
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
	/* libevent may retry a write from a moved buffer. A session kept
	 * idle for reuse holds no 16 KiB record buffers. */
	SSL_CTX_set_mode(ctx, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER | SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_set_default_verify_paths(ctx) != 1 && (ca_file == NULL || *ca_file == '\0'))
		goto fail_ssl;
	if (ca_file != NULL && *ca_file != '\0' &&
	    SSL_CTX_load_verify_locations(ctx, ca_file, NULL) != 1) {
		ERR_error_string_n(ERR_get_error(), ebuf, sizeof(ebuf));
		snprintf(err, errlen, "cannot load ca_file %s: %s", ca_file, ebuf);
		goto fail;
	}
	ERR_clear_error();
	return ctx;
fail_ssl:
	ERR_error_string_n(ERR_get_error(), ebuf, sizeof(ebuf));
	snprintf(err, errlen, "TLS set-up failed: %s", ebuf);
fail:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return NULL;
}

static SSL *
client_ssl_new(struct smtp_client *c)
{
	SSL *ssl;

	if ((ssl = SSL_new(c->ctx)) == NULL)
		return NULL;
	if (c->host_is_ip) {
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), c->t.host) != 1)
			goto fail;
	} else {
		SSL_set_hostflags(ssl, X509_CHECK_FLAG_NO_PARTIAL_WILDCARDS);
		if (SSL_set1_host(ssl, c->t.host) != 1 ||
		    SSL_set_tlsext_host_name(ssl, c->t.host) != 1)
			goto fail;
	}
	return ssl;
fail:
	SSL_free(ssl);
	return NULL;
}

/* Put TLS over the connected socket: implicit TLS, or after STARTTLS. */
static int
client_start_tls(struct smtp_client *c)
{
	struct bufferevent *filter;

	if ((c->ssl = client_ssl_new(c)) == NULL)
		return client_fail(c, SMTP_ERR_TLS, 1, "cannot set up TLS for %s", c->t.host);
	client_expect(c, SMTP_ST_HANDSHAKE);
	filter = bufferevent_openssl_filter_new(c->base, c->bev, c->ssl,
	    BUFFEREVENT_SSL_CONNECTING, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (filter == NULL)
		return client_fail(c, SMTP_ERR_TLS, 1, "cannot set up TLS for %s", c->t.host);
	/* The filter owns the socket bufferevent and the SSL from here on. */
	c->bev = filter;
	bufferevent_openssl_set_allow_dirty_shutdown(filter, 1);
	bufferevent_setcb(filter, client_read_cb, client_write_cb, client_event_cb, c);
	bufferevent_setwatermark(filter, EV_READ, 0, SMTP_CLIENT_INPUT_MAX);
	bufferevent_setwatermark(filter, EV_WRITE, SMTP_CLIENT_BODY_LOW, 0);
	bufferevent_enable(filter, EV_READ | EV_WRITE);
	return 0;
}

static void
client_tls_done(struct smtp_client *c)
{
	long vr = SSL_get_verify_result(c->ssl);
	X509 *peer = SSL_get0_peer_certificate(c->ssl);

	/* The handshake already refuses a bad chain; this is the second lock. */
	if (vr != X509_V_OK || peer == NULL) {
		client_fail(c, SMTP_ERR_TLS_VERIFY, 1, "upstream TLS verification failed: %s",
		    peer == NULL ? "no certificate" : X509_verify_cert_error_string(vr));
		return;
	}
	c->tls_on = 1;
	log_debug("upstream id=%s event=tls version=%s cipher=%s", c->id,
	    SSL_get_version(c->ssl), SSL_get_cipher_name(c->ssl));
	if (c->t.tls == UPSTREAM_TLS_IMPLICIT) {
		client_expect(c, SMTP_ST_GREETING);
		client_read_replies(c);
		return;
	}
	perform_ehlo(c);
}

static void
client_connected(struct smtp_client *c)
{
	int one = 1;

	/*
	 * A message leaves as several TLS records written back to back; Nagle
	 * would hold all but the first until the server acknowledges it, which
	 * its delayed ACK can make tens of milliseconds.
	 */
	if (setsockopt(bufferevent_getfd(c->bev), IPPROTO_TCP, TCP_NODELAY, &one,
	    sizeof(one)) == -1)
		log_debug("upstream id=%s event=nodelay error=\"%s\"", c->id, strerror(errno));
	if (c->t.tls == UPSTREAM_TLS_IMPLICIT) {
		client_start_tls(c);
		return;
	}
	client_expect(c, SMTP_ST_GREETING);
	/* The greeting may have been read before the connect event ran. */
	client_read_replies(c);
}

static void
client_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct smtp_client *c = arg;

	client_hold(c);
	client_fail(c, SMTP_ERR_TIMEOUT, 1, "upstream timeout after %llu s (%s)",
	    (unsigned long long)c->t.timeout, state_names[c->state]);
	client_release(c);
}

struct smtp_client *
smtp_client_new(struct event_base *base, struct evdns_base *dns, SSL_CTX *ctx,
    const struct upstream_target *t, smtp_client_cred_cb *cred_cb,
    smtp_client_event_cb *event_cb, void *arg)
{
	struct smtp_client *c;

	if (sodium_init() < 0 || (c = calloc(1, sizeof(*c))) == NULL)
		return NULL;
	snprintf(c->id, sizeof(c->id), "u%llu", (unsigned long long)++client_serial);
	c->base = base;
	c->dns = dns;
	c->ctx = ctx;
	c->t = *t;
	c->host_is_ip = host_is_ip_literal(t->host);
	c->cred_cb = cred_cb;
	c->event_cb = event_cb;
	c->arg = arg;
	c->state = SMTP_ST_CONNECT;
	if ((c->timer = evtimer_new(base, client_timer_cb, c)) == NULL)
		goto fail;
	if ((c->chunk = malloc(SMTP_CLIENT_CHUNK)) == NULL)
		goto fail;
	c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (c->bev == NULL)
		goto fail;
	bufferevent_setcb(c->bev, client_read_cb, client_write_cb, client_event_cb, c);
	bufferevent_setwatermark(c->bev, EV_READ, 0, SMTP_CLIENT_INPUT_MAX);
	bufferevent_setwatermark(c->bev, EV_WRITE, SMTP_CLIENT_BODY_LOW, 0);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	client_expect(c, SMTP_ST_CONNECT);
	log_debug("upstream id=%s event=connect host=%s port=%u tls=%s", c->id, t->host,
	    t->port, t->tls == UPSTREAM_TLS_IMPLICIT ? "implicit" : "starttls");
	/* Callbacks are deferred, so a failure here is reported from the loop. */
	if (bufferevent_socket_connect_hostname(c->bev, dns, AF_UNSPEC, t->host, t->port) == -1)
		goto fail;
	return c;
fail:
	client_destroy(c);
	return NULL;
}

/* Replies. */

static void
greeting_resp(struct smtp_client *c)
{
	if (c->reply.code != 220) {
		client_fail_reply(c, SMTP_ERR_REPLY);
		return;
	}
	perform_ehlo(c);
}

static void
perform_ehlo(struct smtp_client *c)
{
	const char *helo = c->t.helo[0] != '\0' ? c->t.helo : SMTP_CLIENT_DEFAULT_HELO;

	client_cmd(c, "EHLO %s", helo);
	client_expect(c, SMTP_ST_EHLO);
}

static int
param_has_word(const char *p, size_t len, const char *word)
{
	size_t wlen = strlen(word), i = 0, start;

	while (i < len) {
		while (i < len && p[i] == ' ')
			i++;
		start = i;
		while (i < len && p[i] != ' ')
			i++;
		if (i - start == wlen && strncasecmp(p + start, word, wlen) == 0)
			return 1;
	}
	return 0;
}

static void
ehlo_parse(struct smtp_client *c)
{
	const char *p;
	size_t plen, i;
	uint64_t size = 0;

	c->ext_starttls = smtp_reply_ehlo_has(&c->reply, "STARTTLS", &p, &plen);
	c->ext_pipelining = smtp_reply_ehlo_has(&c->reply, "PIPELINING", &p, &plen);
	c->ext_8bitmime = smtp_reply_ehlo_has(&c->reply, "8BITMIME", &p, &plen);
	c->ext_smtputf8 = smtp_reply_ehlo_has(&c->reply, "SMTPUTF8", &p, &plen);
	c->ext_chunking = smtp_reply_ehlo_has(&c->reply, "CHUNKING", &p, &plen);
	c->ext_size = 0;
	if (smtp_reply_ehlo_has(&c->reply, "SIZE", &p, &plen)) {
		/* Digits only, with an overflow guard; anything else means "no limit". */
		for (i = 0; i < plen && p[i] >= '0' && p[i] <= '9'; i++) {
			if (size > (UINT64_MAX - 9) / 10) {
				size = 0;
				break;
			}
			size = size * 10 + (uint64_t)(p[i] - '0');
		}
		if (i == plen)
			c->ext_size = size;
	}
	c->mech = SMTP_AUTH_NONE;
	if (smtp_reply_ehlo_has(&c->reply, "AUTH", &p, &plen)) {
		if (param_has_word(p, plen, "PLAIN"))
			c->mech = SMTP_AUTH_PLAIN;
		else if (param_has_word(p, plen, "LOGIN"))
			c->mech = SMTP_AUTH_LOGIN;
	}
}

static void
perform_starttls(struct smtp_client *c)
{
	client_cmd(c, "STARTTLS");
	client_expect(c, SMTP_ST_STARTTLS);
}

static void
ehlo_resp(struct smtp_client *c)
{
	if (c->reply.code != 250) {
		client_fail_reply(c, SMTP_ERR_REPLY);
		return;
	}
	ehlo_parse(c);
	if (!c->tls_on) {
		/* Only tls = starttls gets here: never a plaintext fallback. */
		if (!c->ext_starttls) {
			client_fail(c, SMTP_ERR_NO_STARTTLS, 1, "upstream does not offer STARTTLS");
			return;
		}
		perform_starttls(c);
		return;
	}
	perform_auth(c);
}

static void
starttls_resp(struct smtp_client *c)
{
	size_t extra;

	if (c->reply.code != 220) {
		client_fail_reply(c, SMTP_ERR_REPLY);
		return;
	}
	/* Anything already buffered after the 220 was injected in plaintext
	 * (CVE-2011-0411 style); it must not be read as if it came over TLS. */
	if ((extra = evbuffer_get_length(bufferevent_get_input(c->bev))) > 0) {
		client_fail(c, SMTP_ERR_PROTOCOL, 1, "upstream sent %zu bytes after its STARTTLS "
		    "reply (possible response injection); session abandoned", extra);
		return;
	}
	client_start_tls(c);
}

static int
client_fetch_cred(struct smtp_client *c)
{
	char err[256] = "no credential";

	if (c->cred_cb == NULL || c->cred_cb(c->arg, &c->cred, err, sizeof(err)) == -1) {
		cred_wipe(&c->cred);
		client_fail(c, SMTP_ERR_CREDENTIAL, 1, "%s", err);
		return -1;
	}
	c->have_cred = 1;
	c->cred_version = c->cred.version;
	return 0;
}

static void
client_drop_cred(struct smtp_client *c)
{
	if (c->have_cred) {
		cred_wipe(&c->cred);
		c->have_cred = 0;
	}
}

static void
perform_auth(struct smtp_client *c)
{
	unsigned char *raw;
	size_t ulen, rawlen;
	int rc;

	if (c->mech == SMTP_AUTH_NONE) {
		client_fail(c, SMTP_ERR_NO_AUTH, 1, "upstream offers neither AUTH PLAIN nor "
		    "AUTH LOGIN");
		return;
	}
	if (client_fetch_cred(c) == -1)
		return;
	if (c->mech == SMTP_AUTH_LOGIN) {
		client_cmd(c, "AUTH LOGIN");
		client_expect(c, SMTP_ST_AUTH_LOGIN);
		return;
	}
	/* RFC 4616: authzid NUL authcid NUL passwd, authzid empty. */
	ulen = strlen(c->cred.user);
	rawlen = 1 + ulen + 1 + c->cred.secret.len;
	if ((raw = sodium_malloc(rawlen)) == NULL) {
		client_fail(c, SMTP_ERR_CREDENTIAL, 1, "out of guarded memory");
		return;
	}
	raw[0] = '\0';
	memcpy(raw + 1, c->cred.user, ulen);
	raw[1 + ulen] = '\0';
	memcpy(raw + 2 + ulen, c->cred.secret.buf, c->cred.secret.len);
	rc = client_cmd_secret(c, "AUTH PLAIN ", raw, rawlen);
	sodium_free(raw);
	client_drop_cred(c);
	if (rc == -1) {
		client_fail(c, SMTP_ERR_CREDENTIAL, 1, "out of guarded memory");
		return;
	}
	client_expect(c, SMTP_ST_AUTH_PLAIN);
}

static void
client_logged_in(struct smtp_client *c)
{
	char esc[256];

	client_drop_cred(c);
	evtimer_del(c->timer);
	client_enter(c, SMTP_ST_IDLE);
	log_info("upstream id=%s event=login host=%s port=%u mech=%s version=%u pipelining=%d "
	    "chunking=%d size=%llu reply=\"%s\"", c->id, c->t.host, c->t.port,
	    c->mech == SMTP_AUTH_PLAIN ? "PLAIN" : "LOGIN", c->cred_version, c->ext_pipelining,
	    c->ext_chunking, (unsigned long long)c->ext_size,
	    log_escape(esc, sizeof(esc), c->reply.text, c->reply.textlen));
	outcome_reply(&c->out, SMTP_STAGE_AUTH, SMTP_ERR_NONE, &c->reply);
	client_notify(c, SMTP_CLIENT_READY, &c->out);
}

/* 235 logs in; 5xx is the credential refused; anything else is temporary. */
static void
auth_result(struct smtp_client *c)
{
	client_drop_cred(c);
	if (c->reply.code == 235) {
		client_logged_in(c);
		return;
	}
	client_fail_reply(c, SMTP_REPLY_IS_5XX(c->reply.code) ? SMTP_ERR_AUTH_REFUSED :
	    SMTP_ERR_REPLY);
}

static void
auth_login_resp(struct smtp_client *c)
{
	int rc;

	if (c->reply.code != 334) {
		auth_result(c);
		return;
	}
	rc = client_cmd_secret(c, "", (const unsigned char *)c->cred.user,
	    strlen(c->cred.user));
	if (rc == -1) {
		client_fail(c, SMTP_ERR_CREDENTIAL, 1, "out of guarded memory");
		return;
	}
	client_expect(c, SMTP_ST_AUTH_USER);
}

static void
auth_user_resp(struct smtp_client *c)
{
	int rc;

	if (c->reply.code != 334) {
		auth_result(c);
		return;
	}
	rc = client_cmd_secret(c, "", c->cred.secret.buf, c->cred.secret.len);
	client_drop_cred(c);
	if (rc == -1) {
		client_fail(c, SMTP_ERR_CREDENTIAL, 1, "out of guarded memory");
		return;
	}
	client_expect(c, SMTP_ST_AUTH_PASS);
}

/* Transactions. */

/* Paths come from the LAN session, which checks them; a CR, LF or bracket
 * here would inject a command upstream, so check again. */
static int
path_ok(const char *p)
{
	const unsigned char *s;

	for (s = (const unsigned char *)p; *s != '\0'; s++)
		if (*s <= 0x20 || *s == 0x7f || *s == '<' || *s == '>')
			return 0;
	return s - (const unsigned char *)p < RELAY_PATH_MAX;
}

static void
perform_mail(struct smtp_client *c)
{
	char size[32] = "";
	const struct relay_msg *m = c->msg;

	if (c->ext_size > 0)
		snprintf(size, sizeof(size), " SIZE=%zu", evbuffer_get_length(m->data));
	client_cmd(c, "MAIL FROM:<%s>%s%s%s", m->mail_from, size,
	    m->body_8bit && c->ext_8bitmime ? " BODY=8BITMIME" : "",
	    m->smtputf8 && c->ext_smtputf8 ? " SMTPUTF8" : "");
}

static void
perform_rcpt(struct smtp_client *c)
{
	client_cmd(c, "RCPT TO:<%s>", c->msg->rcpts[c->rcpt_sent]);
	c->rcpt_sent++;
}

/* BDAT goes with the envelope, before its replies (see the top). */
static int
txn_one_flight(const struct smtp_client *c)
{
	return c->ext_chunking && c->ext_pipelining && c->msg->n_rcpts == 1;
}

/*
 * "BDAT <size> LAST"; then body_fill() writes the message as it is, ended
 * with CRLF if it does not end so (as DATA does before its dot), so that
 * the upstream gets the same bytes either way. The caller starts body_fill()
 * or leaves it to the write callback, and waits for the reply.
 */
static void
perform_bdat(struct smtp_client *c)
{
	size_t total = evbuffer_get_length(c->msg->data);
	struct evbuffer_ptr pos;
	unsigned char last = '\n';

	if (total > 0 && (evbuffer_ptr_set(c->msg->data, &pos, total - 1,
	    EVBUFFER_PTR_SET) == -1 || evbuffer_copyout_from(c->msg->data, &pos, &last, 1) != 1))
		last = '\0';
	client_cmd(c, "BDAT %zu LAST", total + (last == '\n' ? 0 : 2));
	c->body_out = SMTP_BODY_RAW;
}

int
smtp_client_send(struct smtp_client *c, const struct relay_msg *msg, struct smtp_outcome *o)
{
	size_t len, i;

	if (c->state != SMTP_ST_IDLE || c->bev == NULL) {
		outcome_set(o, SMTP_STAGE_MAIL, SMTP_ERR_ABORTED, 1, "upstream session not ready");
		return -1;
	}
	len = evbuffer_get_length(msg->data);
	if (c->ext_size > 0 && len > c->ext_size) {
		outcome_set(o, SMTP_STAGE_MAIL, SMTP_ERR_TOO_BIG, 0,
		    "message size %zu exceeds the upstream's limit of %llu bytes", len,
		    (unsigned long long)c->ext_size);
		o->code = 552;
		strlcpy(o->enhanced, "5.3.4", sizeof(o->enhanced));
		return -1;
	}
	if (msg->smtputf8 && !c->ext_smtputf8) {
		outcome_set(o, SMTP_STAGE_MAIL, SMTP_ERR_UNSUPPORTED, 0,
		    "the upstream does not support SMTPUTF8");
		o->code = 553;
		strlcpy(o->enhanced, "5.6.7", sizeof(o->enhanced));
		return -1;
	}
	if (msg->body_8bit && !c->ext_8bitmime) {
		outcome_set(o, SMTP_STAGE_MAIL, SMTP_ERR_UNSUPPORTED, 0,
		    "the upstream does not support 8BITMIME");
		o->code = 554;
		strlcpy(o->enhanced, "5.6.3", sizeof(o->enhanced));
		return -1;
	}
	if (msg->n_rcpts == 0 || !path_ok(msg->mail_from)) {
		outcome_set(o, SMTP_STAGE_MAIL, SMTP_ERR_UNSUPPORTED, 0, "invalid envelope");
		o->code = 501;
		strlcpy(o->enhanced, "5.5.4", sizeof(o->enhanced));
		return -1;
	}
	for (i = 0; i < msg->n_rcpts; i++) {
		if (msg->rcpts[i][0] == '\0' || !path_ok(msg->rcpts[i])) {
			outcome_set(o, SMTP_STAGE_RCPT, SMTP_ERR_UNSUPPORTED, 0, "invalid recipient");
			o->code = 501;
			strlcpy(o->enhanced, "5.5.4", sizeof(o->enhanced));
			o->rcpt_index = i;
			return -1;
		}
	}

	c->msg = msg;
	c->rcpt_next = 0;
	c->rcpt_sent = 0;
	c->txn_failed = 0;
	c->body_out = SMTP_BODY_IDLE;
	c->body_off = 0;
	c->body_bol = 1;
	/*
	 * RSET before every transaction but the first: it clears whatever an
	 * earlier failed transaction left, and proves the reused session alive.
	 * With PIPELINING the whole envelope and DATA go in one write (RFC 2920),
	 * or with CHUNKING and one recipient the envelope and the message.
	 */
	if (c->n_txn++ > 0) {
		client_cmd(c, "RSET");
		if (c->ext_pipelining)
			perform_mail(c);
		client_expect(c, SMTP_ST_RSET);
	} else {
		perform_mail(c);
		client_expect(c, SMTP_ST_MAIL);
	}
	if (c->ext_pipelining) {
		while (c->rcpt_sent < msg->n_rcpts)
			perform_rcpt(c);
		if (!c->ext_chunking)
			client_cmd(c, "DATA");
		else if (txn_one_flight(c))
			/* The bytes follow from the write callback as soon as the
			 * commands are out: no event ever comes from inside this
			 * function, not even for a message that cannot be read. */
			perform_bdat(c);
	}
	return 0;
}

/* The transaction is over with outcome o; the session stays usable. */
static void
txn_finish(struct smtp_client *c, const struct smtp_outcome *o)
{
	c->msg = NULL;
	c->body_out = SMTP_BODY_IDLE;
	evtimer_del(c->timer);
	client_enter(c, SMTP_ST_IDLE);
	if (client_notify(c, SMTP_CLIENT_DONE, o) == -1 || c->state != SMTP_ST_IDLE)
		return;
	outcome_set(&c->out, SMTP_STAGE_MAIL, SMTP_ERR_NONE, 0, "ready");
	client_notify(c, SMTP_CLIENT_READY, &c->out);
}

/*
 * The transaction is over with outcome o, and so is the session: QUIT, and
 * closed whatever the reply (quit_resp). The owner gets DONE now and CLOSED
 * at the end, never READY: the session is not reused.
 */
static void
txn_finish_quit(struct smtp_client *c, const struct smtp_outcome *o)
{
	c->msg = NULL;
	c->body_out = SMTP_BODY_IDLE;
	evtimer_del(c->timer);
	log_info("upstream id=%s host=%s port=%u event=quit_after_refusal code=%d", c->id,
	    c->t.host, c->t.port, o->code);
	client_cmd(c, "QUIT");
	client_expect(c, SMTP_ST_QUIT);
	client_notify(c, SMTP_CLIENT_DONE, o);
}

/* Remember the first refusal of the transaction. */
static void
txn_refused(struct smtp_client *c, enum smtp_stage stage)
{
	const char *rcpt;
	char text[SMTP_CLIENT_REPLY_MAX];

	if (c->txn_failed)
		return;
	c->txn_failed = 1;
	outcome_reply(&c->txn_fail, stage, SMTP_ERR_REPLY, &c->reply);
	if (stage == SMTP_STAGE_RCPT) {
		c->txn_fail.rcpt_index = c->rcpt_next;
		rcpt = c->msg->rcpts[c->rcpt_next];
		/* Say which recipient, the way people expect to read it. */
		if (snprintf(text, sizeof(text), "<%s>: %s", rcpt, c->txn_fail.text) >= 0)
			strlcpy(c->txn_fail.text, text, sizeof(c->txn_fail.text));
	}
}

static void
rset_resp(struct smtp_client *c)
{
	if (c->reply.code != 250) {
		/*
		 * A server that cannot reset is not one to send a message to. RFC
		 * 5321 knows no refusal of RSET but 421, after which the server
		 * takes no command, so a one-flight BDAT behind it is not
		 * delivered either.
		 */
		txn_refused(c, SMTP_STAGE_MAIL);
		c->txn_fail.temporary = 1;
		client_close(c, &c->txn_fail);
		return;
	}
	if (!c->ext_pipelining)
		perform_mail(c);
	client_expect(c, SMTP_ST_MAIL);
}

static void
mail_resp(struct smtp_client *c)
{
	if (!SMTP_REPLY_IS_2XX(c->reply.code)) {
		txn_refused(c, SMTP_STAGE_MAIL);
		if (!c->ext_pipelining) {
			txn_finish(c, &c->txn_fail);
			return;
		}
		/* Pipelined: the RCPT and DATA replies are still to come. */
		client_expect(c, SMTP_ST_RCPT);
		return;
	}
	if (!c->ext_pipelining)
		perform_rcpt(c);
	client_expect(c, SMTP_ST_RCPT);
}

/*
 * All or nothing: the client gets one reply to its final dot, so a message
 * goes upstream only when every recipient was accepted. The first refused
 * recipient's reply becomes the message's reply.
 */
static void
rcpt_resp(struct smtp_client *c)
{
	if (!SMTP_REPLY_IS_2XX(c->reply.code))
		txn_refused(c, SMTP_STAGE_RCPT);
	c->rcpt_next++;
	if (!c->ext_pipelining && c->txn_failed) {
		txn_finish(c, &c->txn_fail);
		return;
	}
	perform_next_rcpt_or_data(c);
}

static void
perform_next_rcpt_or_data(struct smtp_client *c)
{
	if (c->rcpt_next < c->msg->n_rcpts) {
		if (!c->ext_pipelining)
			perform_rcpt(c);
		client_expect(c, SMTP_ST_RCPT);
		return;
	}
	if (c->ext_chunking) {
		if (!txn_one_flight(c)) {
			/* Every recipient has answered: nothing sent yet to take back. */
			if (c->txn_failed) {
				txn_finish(c, &c->txn_fail);
				return;
			}
			perform_bdat(c);
			client_expect(c, SMTP_ST_BDAT);
			body_fill(c);
			return;
		}
		client_expect(c, SMTP_ST_BDAT);
		return;
	}
	if (!c->ext_pipelining)
		client_cmd(c, "DATA");
	client_expect(c, SMTP_ST_DATA);
}

static void
data_resp(struct smtp_client *c)
{
	if (c->reply.code == 354) {
		if (c->txn_failed) {
			/*
			 * Pipelined DATA was accepted although a recipient was
			 * refused. Sending a dot would deliver to the others, and
			 * there is no way to cancel DATA: drop the connection, which
			 * makes the server discard the transaction (RFC 5321 4.1.1.4).
			 */
			client_close(c, &c->txn_fail);
			return;
		}
		evtimer_del(c->timer);
		client_enter(c, SMTP_ST_BODY);
		c->body_out = SMTP_BODY_DOTTED;
		body_fill(c);
		return;
	}
	if (c->txn_failed) {
		txn_finish(c, &c->txn_fail);
		return;
	}
	txn_refused(c, SMTP_STAGE_DATA);
	txn_finish(c, &c->txn_fail);
}

/*
 * Copy the next part of the message into the output. DATA: dot-stuffed (RFC
 * 5321 4.5.2): a line that starts with '.' gets another '.'; the message is
 * CRLF normalised, so a line starts after every LF; at the end CRLF if the
 * data does not end with one, then ".\r\n", and the wait for the reply
 * begins. BDAT: the bytes as they are, and the same CRLF at the end (counted
 * in the BDAT size); the reply is waited for by the envelope's state.
 */
static void
body_fill(struct smtp_client *c)
{
	struct evbuffer *out = bufferevent_get_output(c->bev);
	struct evbuffer_ptr pos;
	size_t total = evbuffer_get_length(c->msg->data), n, i, start;
	ev_ssize_t got;
	struct timeval tv;

	while (evbuffer_get_length(out) < SMTP_CLIENT_BODY_HIGH && c->body_off < total) {
		n = total - c->body_off;
		if (n > SMTP_CLIENT_CHUNK)
			n = SMTP_CLIENT_CHUNK;
		if (evbuffer_ptr_set(c->msg->data, &pos, c->body_off, EVBUFFER_PTR_SET) == -1 ||
		    (got = evbuffer_copyout_from(c->msg->data, &pos, c->chunk, n)) != (ev_ssize_t)n) {
			client_fail(c, SMTP_ERR_ABORTED, 1, "cannot read the message buffer");
			return;
		}
		if (c->body_out == SMTP_BODY_RAW) {
			evbuffer_add(out, c->chunk, n);
			c->body_bol = c->chunk[n - 1] == '\n';
			c->body_off += n;
			continue;
		}
		for (i = 0, start = 0; i < n; i++) {
			if (c->body_bol && c->chunk[i] == '.') {
				evbuffer_add(out, c->chunk + start, i - start);
				evbuffer_add(out, ".", 1);
				start = i;
			}
			c->body_bol = c->chunk[i] == '\n';
		}
		evbuffer_add(out, c->chunk + start, n - start);
		c->body_off += n;
	}
	/* Progress restarts the clock; a stalled reader still times out. */
	tv.tv_sec = (time_t)(c->t.timeout < SMTP_CLIENT_MIN_TIMEOUT ?
	    SMTP_CLIENT_MIN_TIMEOUT : c->t.timeout);
	tv.tv_usec = 0;
	evtimer_add(c->timer, &tv);
	if (c->body_off < total)
		return;
	if (!c->body_bol)
		evbuffer_add(out, "\r\n", 2);
	if (c->body_out == SMTP_BODY_RAW) {
		c->body_out = SMTP_BODY_IDLE;
		log_debug("upstream id=%s send=\"<%zu bytes>\"", c->id, total);
		return;
	}
	c->body_out = SMTP_BODY_IDLE;
	evbuffer_add(out, ".\r\n", 3);
	log_debug("upstream id=%s send=\"<%zu bytes>\" send=\".\"", c->id, total);
	client_expect(c, SMTP_ST_DOT);
}

static void
dot_resp(struct smtp_client *c)
{
	if (SMTP_REPLY_IS_2XX(c->reply.code)) {
		outcome_reply(&c->out, SMTP_STAGE_DATA, SMTP_ERR_NONE, &c->reply);
		txn_finish(c, &c->out);
		return;
	}
	txn_refused(c, SMTP_STAGE_DATA);
	txn_finish(c, &c->txn_fail);
}

/*
 * The reply to BDAT LAST means what a reply to the final dot means. After
 * a refusal in the envelope (one-flight BDAT), the transaction ends with
 * that refusal whatever BDAT got: the message has nobody to go to. Nor is
 * the session used again: the chunk went out behind the refused command,
 * and a server that refused BDAT without reading the chunk (RFC 3030 says
 * it must read it) would take the LAN client's bytes for commands, and
 * their replies for ours.
 */
static void
bdat_resp(struct smtp_client *c)
{
	if (c->body_out != SMTP_BODY_IDLE) {
		/* An answer before all of the chunk: the session is out of step. */
		txn_refused(c, SMTP_STAGE_DATA);
		client_close(c, &c->txn_fail);
		return;
	}
	if (c->txn_failed) {
		if (txn_one_flight(c))
			txn_finish_quit(c, &c->txn_fail);
		else
			txn_finish(c, &c->txn_fail);
		return;
	}
	dot_resp(c);
}

int
smtp_client_quit(struct smtp_client *c)
{
	if (c->state != SMTP_ST_IDLE || c->bev == NULL)
		return -1;
	client_cmd(c, "QUIT");
	client_expect(c, SMTP_ST_QUIT);
	return 0;
}

static void
quit_resp(struct smtp_client *c)
{
	outcome_reply(&c->out, SMTP_STAGE_QUIT, SMTP_ERR_NONE, &c->reply);
	client_close(c, &c->out);
}

/* A reply nobody asked for: 421 is the server going away (idle timeout). */
static void
idle_resp(struct smtp_client *c)
{
	client_fail_reply(c, c->reply.code == 421 ? SMTP_ERR_REPLY : SMTP_ERR_PROTOCOL);
}

static void
client_dispatch(struct smtp_client *c)
{
	switch (c->state) {
	case SMTP_ST_GREETING:
		greeting_resp(c);
		break;
	case SMTP_ST_EHLO:
		ehlo_resp(c);
		break;
	case SMTP_ST_STARTTLS:
		starttls_resp(c);
		break;
	case SMTP_ST_AUTH_PLAIN:
	case SMTP_ST_AUTH_PASS:
		auth_result(c);
		break;
	case SMTP_ST_AUTH_LOGIN:
		auth_login_resp(c);
		break;
	case SMTP_ST_AUTH_USER:
		auth_user_resp(c);
		break;
	case SMTP_ST_IDLE:
		idle_resp(c);
		break;
	case SMTP_ST_RSET:
		rset_resp(c);
		break;
	case SMTP_ST_MAIL:
		mail_resp(c);
		break;
	case SMTP_ST_RCPT:
		rcpt_resp(c);
		break;
	case SMTP_ST_DATA:
		data_resp(c);
		break;
	case SMTP_ST_DOT:
		dot_resp(c);
		break;
	case SMTP_ST_BDAT:
		bdat_resp(c);
		break;
	case SMTP_ST_QUIT:
		quit_resp(c);
		break;
	case SMTP_ST_BODY:
		/* Refused while we were still writing: the session is spoilt. */
		txn_refused(c, SMTP_STAGE_DATA);
		client_close(c, &c->txn_fail);
		break;
	case SMTP_ST_CONNECT:
	case SMTP_ST_HANDSHAKE:
	case SMTP_ST_CLOSED:
		client_fail(c, SMTP_ERR_PROTOCOL, 1, "unexpected upstream reply");
		break;
	}
}

/* Parse every complete reply in the input, one line at a time. */
static void
client_read_replies(struct smtp_client *c)
{
	struct evbuffer *in;
	struct evbuffer_ptr eol;
	size_t eol_len, avail;
	int rc;

	while (!client_gone(c) && c->bev != NULL && c->state != SMTP_ST_HANDSHAKE &&
	    c->state != SMTP_ST_CONNECT) {
		in = bufferevent_get_input(c->bev);
		if ((avail = evbuffer_get_length(in)) == 0)
			return;
		eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
		if (eol.pos < 0) {
			if (avail > SMTP_REPLY_LINE_MAX + 1)
				client_fail(c, SMTP_ERR_PROTOCOL, 1, "upstream reply line too long");
			return;
		}
		if ((size_t)eol.pos > SMTP_REPLY_LINE_MAX + 1) {
			client_fail(c, SMTP_ERR_PROTOCOL, 1, "upstream reply line too long");
			return;
		}
		evbuffer_copyout(in, c->line, (size_t)eol.pos);
		evbuffer_drain(in, (size_t)eol.pos + eol_len);
		rc = smtp_reply_feed(&c->reply, c->line, (size_t)eol.pos);
		if (rc == SMTP_REPLY_ERROR) {
			client_fail(c, SMTP_ERR_PROTOCOL, 1, "malformed upstream reply: %s",
			    c->reply.error);
			return;
		}
		if (rc == SMTP_REPLY_MORE)
			continue;
		client_dispatch(c);
		/* Handlers that wait for another reply have reset the parser. */
		if (!client_gone(c) && c->reply.done)
			smtp_reply_init(&c->reply);
	}
}

static void
client_read_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *c = arg;

	client_hold(c);
	client_read_replies(c);
	client_release(c);
}

static void
client_write_cb(struct bufferevent *bev, void *arg)
{
	struct smtp_client *c = arg;

	client_hold(c);
	if (c->body_out != SMTP_BODY_IDLE && c->msg != NULL && c->bev != NULL)
		body_fill(c);
	client_release(c);
}

static void
client_error_text(struct smtp_client *c, char *buf, size_t len)
{
	unsigned long e;
	int dnserr, err = EVUTIL_SOCKET_ERROR();

	if (c->state == SMTP_ST_CONNECT &&
	    (dnserr = bufferevent_socket_get_dns_error(c->bev)) != 0) {
		snprintf(buf, len, "cannot resolve %s: %s", c->t.host, evutil_gai_strerror(dnserr));
		return;
	}
	if (c->tls_on || c->state == SMTP_ST_HANDSHAKE) {
		if ((e = bufferevent_get_openssl_error(c->bev)) != 0) {
			char ebuf[256];

			ERR_error_string_n(e, ebuf, sizeof(ebuf));
			snprintf(buf, len, "%s:%u: TLS error: ", c->t.host, c->t.port);
			strlcat(buf, ebuf, len);
			return;
		}
	}
	snprintf(buf, len, "%s:%u: %s", c->t.host, c->t.port,
	    err != 0 ? evutil_socket_error_to_string(err) : "connection failed");
}

static void
client_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct smtp_client *c = arg;
	char text[512];
	long vr;

	client_hold(c);
	if (what & BEV_EVENT_CONNECTED) {
		if (c->state == SMTP_ST_CONNECT)
			client_connected(c);
		else if (c->state == SMTP_ST_HANDSHAKE)
			client_tls_done(c);
		goto done;
	}
	/* A last reply (a 421 before the close) is still worth reading. */
	client_read_replies(c);
	if (client_gone(c))
		goto done;
	if (what & BEV_EVENT_EOF) {
		if (c->state == SMTP_ST_QUIT) {
			outcome_set(&c->out, SMTP_STAGE_QUIT, SMTP_ERR_NONE, 0, "closed");
			client_close(c, &c->out);
		} else {
			client_fail(c, SMTP_ERR_NETWORK, 1, "upstream %s:%u closed the connection",
			    c->t.host, c->t.port);
		}
		goto done;
	}
	if (what & BEV_EVENT_ERROR) {
		if (c->state == SMTP_ST_HANDSHAKE && c->ssl != NULL &&
		    (vr = SSL_get_verify_result(c->ssl)) != X509_V_OK) {
			client_fail(c, SMTP_ERR_TLS_VERIFY, 1, "upstream TLS verification failed: %s",
			    X509_verify_cert_error_string(vr));
			goto done;
		}
		client_error_text(c, text, sizeof(text));
		if (c->state == SMTP_ST_CONNECT)
			client_fail(c, SMTP_ERR_NETWORK, 1, "upstream unreachable: %s", text);
		else if (c->state == SMTP_ST_HANDSHAKE)
			client_fail(c, SMTP_ERR_TLS, 1, "upstream TLS handshake failed: %s", text);
		else
			client_fail(c, SMTP_ERR_NETWORK, 1, "upstream connection lost: %s", text);
		goto done;
	}
	if (what & BEV_EVENT_TIMEOUT)
		client_fail(c, SMTP_ERR_TIMEOUT, 1, "upstream timeout");
done:
	ERR_clear_error();
	client_release(c);
}

void
smtp_client_free(struct smtp_client *c)
{
	if (c == NULL)
		return;
	c->event_cb = NULL;
	if (c->busy > 0) {
		client_teardown(c);
		c->state = SMTP_ST_CLOSED;
		c->free_pending = 1;
		return;
	}
	client_destroy(c);
}

/* The probe: one session on a private event loop. */

struct probe {
	const char			*user;
	const struct vault_secret	*secret;
	struct event_base		*base;
	int				ok;
	int				auth_refused;
	int				finished;
	char				reply[SMTP_CLIENT_REPLY_MAX];
};

static int
probe_cred(void *arg, struct cred *out, char *err, size_t errlen)
{
	struct probe *p = arg;

	memset(out, 0, sizeof(*out));
	if (strlcpy(out->user, p->user, sizeof(out->user)) >= sizeof(out->user)) {
		snprintf(err, errlen, "user name too long");
		return -1;
	}
	if (vault_secret_set(&out->secret, p->secret->buf, p->secret->len) == -1) {
		snprintf(err, errlen, "out of guarded memory");
		return -1;
	}
	return 0;
}

static void
probe_event(struct smtp_client *c, enum smtp_client_event ev, const struct smtp_outcome *o,
    void *arg)
{
	struct probe *p = arg;

	switch (ev) {
	case SMTP_CLIENT_READY:
		p->ok = 1;
		smtp_outcome_reply(o, p->reply, sizeof(p->reply));
		if (smtp_client_quit(c) == -1) {
			p->finished = 1;
			event_base_loopbreak(p->base);
		}
		break;
	case SMTP_CLIENT_DONE:
		break;
	case SMTP_CLIENT_CLOSED:
		if (!p->ok) {
			smtp_outcome_reply(o, p->reply, sizeof(p->reply));
			p->auth_refused = o->auth_failed;
		}
		p->finished = 1;
		event_base_loopbreak(p->base);
		break;
	}
}

int
smtp_client_probe(const struct upstream_target *t, const char *user,
    const struct vault_secret *secret, char *reply, size_t replylen, int *auth_refused)
{
	struct probe p;
	struct smtp_client *c = NULL;
	SSL_CTX *ctx = NULL;
	char err[512];
	int rc = -1, i;

	memset(&p, 0, sizeof(p));
	p.user = user;
	p.secret = secret;
	*auth_refused = 0;
	if ((p.base = event_base_new()) == NULL) {
		snprintf(reply, replylen, "cannot create an event loop");
		goto done;
	}
	if ((ctx = smtp_client_tls_ctx_new(t->ca_file, err, sizeof(err))) == NULL) {
		snprintf(reply, replylen, "%s", err);
		goto done;
	}
	if ((c = smtp_client_new(p.base, NULL, ctx, t, probe_cred, probe_event, &p)) == NULL) {
		snprintf(reply, replylen, "cannot connect to %s:%u", t->host, t->port);
		goto done;
	}
	while (!p.finished)
		if (event_base_loop(p.base, EVLOOP_ONCE) != 0)
			break;
	snprintf(reply, replylen, "%s", p.finished ? p.reply : "event loop failed");
	*auth_refused = p.auth_refused;
	rc = p.ok ? 0 : -1;
done:
	smtp_client_free(c);
	SSL_CTX_free(ctx);
	if (p.base != NULL) {
		/* A freed TLS filter, then its socket, are finalised from the loop. */
		for (i = 0; i < SMTP_CLIENT_FINALIZE_TURNS; i++)
			event_base_loop(p.base, EVLOOP_NONBLOCK);
		event_base_free(p.base);
	}
	sodium_memzero(&p, sizeof(p));
	return rc;
}

void
smtp_outcome_reply(const struct smtp_outcome *o, char *buf, size_t len)
{
	if (o->code != 0)
		snprintf(buf, len, "%d%s%s %s", o->code, o->enhanced[0] != '\0' ? " " : "",
		    o->enhanced, o->text);
	else
		snprintf(buf, len, "%s", o->text);
}
