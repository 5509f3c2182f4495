/*
 * smtp_session.h: the LAN-side SMTP server (RFC 5321): listeners, the
 * per-connection session state machine, limits, and hand-over of complete
 * messages to the relay. It never sees a credential: routing asks the
 * credstore only which account an address belongs to.
 */
#ifndef SMTPVAULT_SMTP_SESSION_H
#define SMTPVAULT_SMTP_SESSION_H

#include <sys/socket.h>

#include "routing.h"

struct event_base;
struct config;
struct relay;
struct credstore;
struct relay_msg;
struct relay_result;

struct smtp_server;

/* Binds every [smtp] listen address; NULL with err set on failure. */
struct smtp_server *smtp_server_new(struct event_base *base, const struct config *cfg,
	    struct relay *relay, struct credstore *cs, char *err, size_t errlen);

/* Swap in a reloaded configuration (SIGHUP); sessions in progress keep
 * working, new sessions use the new one. cfg must outlive the server. */
void	smtp_server_set_config(struct smtp_server *srv, const struct config *cfg);

/* Record refused connections and commands in this audit log ("reject"
 * events, SPEC section 7). NULL: log lines only. */
struct audit;
void	smtp_server_set_audit(struct smtp_server *srv, struct audit *a);

/* Stop listening; done() runs once every session has ended (the in-flight
 * transactions are finished, idle sessions get 421 and are closed). */
void	smtp_server_drain(struct smtp_server *srv, void (*done)(void *), void *arg);

void	smtp_server_free(struct smtp_server *srv);

/*
 * Take over a connected socket as a new session from peer sa: what the
 * listeners do with each accepted connection (access checks included). Tests
 * use it with one end of a socketpair and a chosen peer address.
 */
void	smtp_server_accept(struct smtp_server *srv, int fd, const struct sockaddr *sa,
	    socklen_t salen);

/* The address listener i is bound to (for port 0); 0, or -1 if no such listener. */
int	smtp_server_local_addr(const struct smtp_server *srv, size_t i,
	    struct sockaddr_storage *ss, socklen_t *sslen);

/*
 * A test seam: route account lookups and message hand-over through these
 * functions instead of credstore_resolve() and relay_submit()/relay_cancel().
 * The contract is the one of relay.h. Not for production use.
 */
struct smtp_server_hooks {
	routing_resolve_fn *resolve;
	int	(*submit)(void *arg, struct relay_msg *msg,
		    void (*cb)(void *cbarg, const struct relay_result *res), void *cbarg,
		    struct relay_result *res);
	void	(*cancel)(void *arg, void *cbarg);
	void	*arg;
};
void	smtp_server_set_hooks(struct smtp_server *srv, const struct smtp_server_hooks *hooks);

#endif
