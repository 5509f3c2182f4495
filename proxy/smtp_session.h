/*
 * smtp_session.h: the LAN-side SMTP server (RFC 5321): listeners, the
 * per-connection session state machine, limits, and hand-over of complete
 * messages to the relay. It never sees a credential: routing asks the
 * credstore only which account an address belongs to.
 */
#ifndef SMTPVAULT_SMTP_SESSION_H
#define SMTPVAULT_SMTP_SESSION_H

struct event_base;
struct config;
struct relay;
struct credstore;

struct smtp_server;

/* Binds every [smtp] listen address; NULL with err set on failure. */
struct smtp_server *smtp_server_new(struct event_base *base, const struct config *cfg,
	    struct relay *relay, struct credstore *cs, char *err, size_t errlen);

/* Swap in a reloaded configuration (SIGHUP); sessions in progress keep
 * working, new sessions use the new one. cfg must outlive the server. */
void	smtp_server_set_config(struct smtp_server *srv, const struct config *cfg);

/* Stop listening; done() runs once every session has ended (the in-flight
 * transactions are finished, idle sessions get 421 and are closed). */
void	smtp_server_drain(struct smtp_server *srv, void (*done)(void *), void *arg);

void	smtp_server_free(struct smtp_server *srv);

#endif
