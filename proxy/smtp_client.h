/*
 * smtp_client.h: the upstream SMTP client (RFC 5321, 3207 STARTTLS, 4954
 * AUTH, 4616 PLAIN) over verified TLS, as an explicit state machine, plus
 * the per-account session pools that reuse logged-in sessions.
 */
#ifndef SMTPVAULT_SMTP_CLIENT_H
#define SMTPVAULT_SMTP_CLIENT_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "vault.h"

#define SMTP_CLIENT_REPLY_MAX	4096	/* kept text of one upstream reply */

/* Where and how to connect. */
struct upstream_target {
	char		host[CONFIG_HOST_MAX];
	uint16_t	port;
	enum upstream_tls tls;
	char		ca_file[CONFIG_PATH_MAX];	/* "" = system store only */
	uint64_t	timeout;			/* seconds, per step */
	char		helo[CONFIG_HOST_MAX];
};

/*
 * Connect, TLS, EHLO, AUTH with user/secret, QUIT: used by "account test" and
 * by "account rotate" to prove a credential before it is stored. Runs its own
 * event loop and blocks until done. Returns 0 when AUTH succeeded; -1
 * otherwise. reply gets the upstream's last reply (or a description of the
 * network / TLS failure); auth_refused is set when the server answered AUTH
 * with a 5xx (the credential itself was refused).
 */
int	smtp_client_probe(const struct upstream_target *t, const char *user,
	    const struct vault_secret *secret, char *reply, size_t replylen,
	    int *auth_refused);

/*
 * The session API below drives one upstream connection; upstream_pool.c
 * keeps pools of them and the probe above uses one. Added for the pools.
 */
struct event_base;
struct evdns_base;
struct relay_msg;
struct cred;
struct ssl_ctx_st;
struct smtp_client;

/* Where a session or a transaction stopped. */
enum smtp_stage {
	SMTP_STAGE_CONNECT,	/* DNS, TCP, the greeting */
	SMTP_STAGE_TLS,		/* EHLO, STARTTLS, the handshake and verification */
	SMTP_STAGE_AUTH,
	SMTP_STAGE_MAIL,	/* RSET and MAIL FROM */
	SMTP_STAGE_RCPT,
	SMTP_STAGE_DATA,	/* DATA, the message, the final dot */
	SMTP_STAGE_QUIT,
};

enum smtp_error {
	SMTP_ERR_NONE,		/* success: code is the upstream's 2xx */
	SMTP_ERR_REPLY,		/* the upstream answered with a failure code */
	SMTP_ERR_NETWORK,	/* DNS, connect, reset, EOF */
	SMTP_ERR_TIMEOUT,
	SMTP_ERR_TLS,		/* handshake failed */
	SMTP_ERR_TLS_VERIFY,	/* certificate or host name not acceptable */
	SMTP_ERR_NO_STARTTLS,	/* tls = starttls and the server does not offer it */
	SMTP_ERR_PROTOCOL,	/* garbage reply, injected bytes after STARTTLS, ... */
	SMTP_ERR_AUTH_REFUSED,	/* 5xx to AUTH: the credential itself was refused */
	SMTP_ERR_NO_AUTH,	/* no AUTH mechanism we can use */
	SMTP_ERR_CREDENTIAL,	/* no credential to log in with */
	SMTP_ERR_TOO_BIG,	/* over the upstream's SIZE; nothing was sent */
	SMTP_ERR_UNSUPPORTED,	/* message needs SMTPUTF8 / 8BITMIME the upstream lacks */
	SMTP_ERR_ABORTED,	/* the session was closed by us */
};

/* The structured result of a session set-up or of one message. */
struct smtp_outcome {
	enum smtp_stage	stage;
	enum smtp_error	error;
	int		code;		/* the upstream's reply code, 0 when none */
	char		enhanced[16];	/* the upstream's enhanced code, "" when none */
	char		text[SMTP_CLIENT_REPLY_MAX];	/* its text (lines joined by '\n'),
							 * or a description */
	int		temporary;	/* 1: try again later; 0: permanent */
	int		auth_failed;	/* the credential was refused (error AUTH_REFUSED) */
	size_t		rcpt_index;	/* stage RCPT: which recipient */
	uint32_t	cred_version;	/* credential version the session logged in
					 * with, 0 when no login happened */
};

enum smtp_client_event {
	SMTP_CLIENT_READY,	/* logged in and idle: smtp_client_send() may be called */
	SMTP_CLIENT_DONE,	/* the message given to smtp_client_send() is finished */
	SMTP_CLIENT_CLOSED,	/* the session is over (failed, died while idle, or QUIT) */
};

/*
 * Events: READY after login; DONE once per smtp_client_send(), followed by
 * READY if the session can take another message or CLOSED if not; CLOSED
 * when the session ends without a message in flight. The owner may call
 * smtp_client_free() from the callback (it is deferred).
 */
typedef void smtp_client_event_cb(struct smtp_client *c, enum smtp_client_event ev,
	    const struct smtp_outcome *o, void *arg);

/* Fill *out with the credential just before AUTH; 0, or -1 (text in err). */
typedef int smtp_client_cred_cb(void *arg, struct cred *out, char *err, size_t errlen);

/* A verifying TLS context (TLS 1.2+, system store plus ca_file). */
struct ssl_ctx_st *smtp_client_tls_ctx_new(const char *ca_file, char *err, size_t errlen);

/* Start connecting; events follow from the loop. dns may be NULL (blocking
 * resolver). The target and ctx must outlive the session. */
struct smtp_client *smtp_client_new(struct event_base *base, struct evdns_base *dns,
	    struct ssl_ctx_st *ctx, const struct upstream_target *t,
	    smtp_client_cred_cb *cred_cb, smtp_client_event_cb *event_cb, void *arg);
/*
 * Send one message (only after READY). msg must stay valid until DONE.
 * Returns 0 when the transaction started, or -1 with *o filled when the
 * message was refused before any byte was sent (over the upstream's SIZE,
 * needs an extension it lacks, session not idle); no event follows then and
 * the session stays as it was.
 */
int	smtp_client_send(struct smtp_client *c, const struct relay_msg *msg,
	    struct smtp_outcome *o);
/* Say QUIT and close; CLOSED follows. Returns -1 (and does nothing) when the
 * session is not idle: use smtp_client_free() then. */
int	smtp_client_quit(struct smtp_client *c);
/* Close at once, no callback any more. Safe inside the event callback. */
void	smtp_client_free(struct smtp_client *c);
/* The credential version this session logged in with. */
uint32_t smtp_client_cred_version(const struct smtp_client *c);

/* The outcome as the upstream's full reply, "535 5.7.8 text..." (its text
 * alone when no reply code was received), for logs and the audit log. */
void	smtp_outcome_reply(const struct smtp_outcome *o, char *buf, size_t len);
/* Messages sent on this session. */
uint64_t smtp_client_messages(const struct smtp_client *c);
/* A short id for logs ("u12"). */
const char *smtp_client_id(const struct smtp_client *c);
const char *smtp_stage_name(enum smtp_stage s);

#endif
