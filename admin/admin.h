/*
 * admin.h: the admin page and JSON API of SPEC section 8, served with
 * libmicrohttpd on [admin] listen from inside the daemon's libevent loop.
 *
 * Threading: every request is handled on the event-loop thread, so the
 * credential store, the audit writer, the relay and the metrics (none of
 * which lock) are only ever touched from there. Work that would stall mail
 * (Argon2id for a login, a scan of a large audit log) runs on a small pool
 * of worker threads that see only copies; upstream verification of a new
 * App Password runs asynchronously on the loop itself. See admin_server.c.
 */
#ifndef SMTPVAULT_ADMIN_H
#define SMTPVAULT_ADMIN_H

#include <stddef.h>

struct event_base;
struct config;
struct credstore;
struct audit;
struct relay;
struct admin_server;

/*
 * Bind [admin] listen and start serving. cfg must stay valid until
 * admin_server_set_config() replaces it or admin_server_free(). Returns NULL
 * with one line in err (cannot bind, unreadable TLS files, ...).
 */
struct admin_server *admin_server_new(struct event_base *base, const struct config *cfg,
	    struct credstore *cs, struct audit *audit, struct relay *relay,
	    char *err, size_t errlen);

/* A reloaded configuration (SIGHUP): upstream settings for verification and
 * the audit path. The listen address and TLS files change only at restart. */
void	admin_server_set_config(struct admin_server *srv, const struct config *cfg);

/* Stop listening, wait for worker threads, close every connection. NULL ok. */
void	admin_server_free(struct admin_server *srv);

#endif
