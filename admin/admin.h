/*
 * admin.h: the admin page and JSON API of SPEC section 8, served with
 * libmicrohttpd on [admin] listen from inside the admin process's libevent
 * loop (admin_proc.c).
 *
 * Threading: every request is handled on the event-loop thread, so the
 * credential store (the keeper's client), the relay's control link and the
 * rest (none of which lock) are only ever touched from there. Work that
 * would stall the loop (a scan of a large audit log) runs on a small pool of
 * worker threads that see only copies; an admin login is checked by the
 * keeper, asynchronously; upstream verification of a new App Password runs
 * asynchronously on the loop itself. See admin_server.c.
 */
#ifndef SMTPVAULT_ADMIN_H
#define SMTPVAULT_ADMIN_H

#include <stddef.h>

struct event_base;
struct config;
struct credstore;
struct relay_ctl_client;
struct admin_server;

/*
 * Bind [admin] listen and start serving. cfg must stay valid until
 * admin_server_set_config() replaces it or admin_server_free(). Returns NULL
 * with one line in err (cannot bind, unreadable TLS files, ...).
 * The queue, the upstream pools and the counters are asked of rc (the admin
 * process's link to the relay, relay_ctl.h; it stays the caller's and must
 * outlive the server); NULL: there are none (direct mode, nothing to show).
 */
struct admin_server *admin_server_start(struct event_base *base, const struct config *cfg,
	    struct credstore *cs, struct relay_ctl_client *rc, char *err, size_t errlen);

/* A reloaded configuration (SIGHUP): upstream settings for verification and
 * the audit path. The listen address and TLS files change only at restart. */
void	admin_server_set_config(struct admin_server *srv, const struct config *cfg);

/* Stop listening, wait for worker threads, close every connection. NULL ok. */
void	admin_server_free(struct admin_server *srv);

#endif
