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

#endif
