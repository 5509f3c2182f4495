/*
 * relay_link.h: relay.h's submit / cancel contract between the smtp front
 * end and the relay process (issue 8), over one IPC channel (ipc.h).
 *
 * Use (proc.h: env->relay_fd in the smtp process, env->smtp_fd in the
 * relay process):
 *
 *   smtp process (proc_smtp.c), after smtp_server_new():
 *	struct relay_link *rl = relay_link_client_new(base, env->relay_fd);
 *	struct smtp_server_hooks h = { .resolve = <as now>,
 *	    .submit = relay_link_submit, .cancel = relay_link_cancel, .arg = rl };
 *	smtp_server_set_hooks(srv, &h);
 *	relay_link_set_event_cb(rl, on_relay_gone, arg);	(optional)
 *	... on SIGTERM: smtp_server_drain(), then relay_link_client_drain()
 *	(or simply relay_link_free() once the sessions are gone).
 *
 *   relay process (proc_relay.c), after relay_new():
 *	struct relay_link *rl = relay_link_server_new(base, env->smtp_fd, r, cfg);
 *	relay_link_set_event_cb(rl, on_smtp_gone, arg);		(optional)
 *	... on SIGHUP: relay_link_server_set_config(rl, newcfg);
 *	... at exit: relay_link_free(rl) before relay_free(r).
 *
 * One SUBMIT record and one RESULT record per message. The envelope (every
 * field of struct relay_msg, with the audit header fields the front end
 * read) and the message data travel inline when they fit in one record,
 * otherwise the record carries the envelope and a sealed memfd carries the
 * recipients and the data, which the relay maps instead of copying.
 *
 * The guarantees:
 *  - a 2xx reaches a client only when the relay said so, i.e. the message
 *    is on disk (queue) or accepted upstream (direct);
 *  - when a session goes away before its reply, relay_link_cancel() tells
 *    the relay, which calls relay_cancel(): in queue mode the message stays
 *    queued and is delivered (RFC 5321 6.1), in direct mode a message still
 *    waiting for an upstream session is dropped and one already upstream
 *    finishes and is audited, exactly as in one process; a RESULT already
 *    on its way is dropped;
 *  - when the link dies (the other process is gone), each pending submit
 *    is answered 451 4.3.0 once and new ones are refused with 451 4.3.0.
 *    The message may still have been queued or delivered: the client
 *    retries, and a duplicate is possible, never a loss;
 *  - the relay side checks every record against the wire form's fixed
 *    bounds (the largest max_recipients and max_message_size any
 *    configuration may set, string lengths, NUL bytes, the memfd's seals
 *    and size); a record that breaks one is a protocol error, handled like
 *    ipc.h's malformed records;
 *  - the relay's current [smtp] max_recipients and max_message_size are a
 *    per-message answer, never a protocol error: the two processes re-read
 *    the configuration separately on SIGHUP (and the front end may keep the
 *    old one), so a message the front end took under larger limits gets
 *    452 4.5.3 or 552 5.3.4, as the front end would have answered, and the
 *    link stays up.
 */
#ifndef SMTPVAULT_RELAY_LINK_H
#define SMTPVAULT_RELAY_LINK_H

#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "ipc.h"
#include "relay.h"

struct event_base;
struct config;

/* Message types on the link (a channel of its own: the numbers are not
 * shared with the keeper's). */
enum relay_link_msg {
	RELAY_LINK_SUBMIT = 0x200,	/* smtp -> relay: envelope [+ data] [+ memfd] */
	RELAY_LINK_CANCEL,		/* smtp -> relay: no payload */
	RELAY_LINK_RESULT		/* relay -> smtp: code, enhanced, text */
};

/* Slack above [smtp] max_message_size for what the front end adds to the
 * data (our Received: header) and for line ends. */
#define RELAY_LINK_DATA_SLACK	(16 * 1024)
/* Longest audit header field carried (relay.c keeps 1023 bytes). */
#define RELAY_LINK_FIELD_MAX	1024

struct relay_link;

/*
 * What the link does when it dies (ev as in ipc.h, why for the log), after
 * its own clean-up (pending submits answered, or in-flight messages
 * cancelled). Without one: a closed channel is logged, a malformed record
 * is logged and ends the process (exit(IPC_EXIT_FATAL)), as in ipc.h. The
 * link must not be freed from inside this callback.
 */
typedef void relay_link_event_cb(struct relay_link *rl, enum ipc_event ev, const char *why,
    void *arg);
void	relay_link_set_event_cb(struct relay_link *rl, relay_link_event_cb *cb, void *arg);

/* ---- The smtp front end's side ---------------------------------------- */

/* Takes over fd (a SOCK_SEQPACKET channel to the relay): closed by
 * relay_link_free(), or at once when this fails. NULL on error. */
struct relay_link *relay_link_client_new(struct event_base *base, int fd);

/* The smtp_server_hooks submit / cancel (arg is the link), with the
 * contract of relay_submit() / relay_cancel(). */
int	relay_link_submit(void *arg, struct relay_msg *msg, relay_cb *cb, void *cbarg,
	    struct relay_result *res);
void	relay_link_cancel(void *arg, void *cbarg);

/* done() runs (from the event loop) once no submit is pending. */
void	relay_link_client_drain(struct relay_link *rl, void (*done)(void *), void *arg);

/* Submits still waiting for their result. */
size_t	relay_link_pending(const struct relay_link *rl);

/* ---- The relay process's side ------------------------------------------ */

/* Takes over fd (the channel from the smtp front end; closed as above);
 * each SUBMIT becomes relay_submit(r, ...), bounded by cfg (read now and at
 * relay_link_server_set_config(), not kept). NULL on error. */
struct relay_link *relay_link_server_new(struct event_base *base, int fd, struct relay *r,
	    const struct config *cfg);
/* A reloaded configuration (SIGHUP): new bounds for new records. */
void	relay_link_server_set_config(struct relay_link *rl, const struct config *cfg);

/*
 * A test seam: hand messages to these functions instead of relay_submit() /
 * relay_cancel() on r, with the same contract. Not for production use.
 */
struct relay_link_hooks {
	int	(*submit)(void *arg, struct relay_msg *msg, relay_cb *cb, void *cbarg,
		    struct relay_result *res);
	void	(*cancel)(void *arg, void *cbarg);
	void	*arg;
};
void	relay_link_server_set_hooks(struct relay_link *rl, const struct relay_link_hooks *h);

/* Either side. The server cancels its in-flight messages (relay_cancel);
 * the client drops its pending callbacks (they are never called). */
void	relay_link_free(struct relay_link *rl);

/* ---- The wire form, for tests and the fuzz harness ---------------------- */

/* The wire form's bounds: a SUBMIT beyond them is malformed. */
#define RELAY_LINK_RCPTS_MAX	CONFIG_RECIPIENTS_MAX
#define RELAY_LINK_DATA_MAX	(CONFIG_MESSAGE_SIZE_MAX + RELAY_LINK_DATA_SLACK)

/* Bounds the relay side applies to a SUBMIT: in decoding, the wire form's
 * (RELAY_LINK_RCPTS_MAX, RELAY_LINK_DATA_MAX); per message, the current
 * configuration's. */
struct relay_link_limits {
	size_t		max_rcpts;	/* recipients */
	uint64_t	max_data;	/* bytes of data, our Received: header included */
	int		log_subject;	/* [audit] log_subject: else Subject is dropped */
};

/*
 * Decode one SUBMIT payload (and its memfd, or -1; the fd is not closed).
 * 0 with *out a new message (relay_msg_free); -1 with why when the record
 * breaks the wire form or a bound (a protocol error); -2 with why when
 * memory runs out (the relay side answers that one 451).
 */
int	relay_link_decode(const unsigned char *p, size_t len, int fd,
	    const struct relay_link_limits *lim, struct relay_msg **out, char *why,
	    size_t whylen);

/* The rules the relay side applies to the link (RELAY_LINK_SUBMIT, CANCEL). */
extern const struct ipc_rule relay_link_server_rules[];
extern const size_t relay_link_n_server_rules;

#endif
