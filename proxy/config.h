/*
 * config.h: the configuration of SPEC section 3, loaded from an INI file.
 * All limits and defaults live in one table in config.c. Errors are reported
 * as "file:line: what is wrong" in the caller's buffer.
 *
 * Paths (vault path, passphrase_file, key_file, spool_dir, tls_cert, tls_key,
 * ca_file, audit path) may be absolute, or relative to the directory of the
 * configuration file, so that deploy/dev/smtpvault.conf can say
 * "path = state/vault". They are stored resolved and absolute.
 */
#ifndef SMTPVAULT_CONFIG_H
#define SMTPVAULT_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "util.h"

#define CONFIG_PATH_MAX		1024
#define CONFIG_HOST_MAX		256
#define CONFIG_ADDR_MAX		320	/* an e-mail address, RFC 5321 path limit 256 + slack */
#define CONFIG_NAME_MAX		64
#define CONFIG_MAX_LISTEN	16
#define CONFIG_MAX_NETS		64
#define CONFIG_MAX_CLIENTS	256
#define CONFIG_MAX_LIST		64	/* accounts and senders per client */
#define CONFIG_MAX_RETRY	16
/* The largest [smtp] max_recipients and max_message_size a configuration
 * may set: also the bounds of the link between the front end and the relay,
 * whose two processes may hold different configurations (relay_link.h). */
#define CONFIG_RECIPIENTS_MAX	10000
#define CONFIG_MESSAGE_SIZE_MAX	(UINT64_C(1024) * 1024 * 1024)
/*
 * Longest line, without its "\n" or "\r\n". Debian's inih reads lines into a
 * 200-byte buffer and silently splits longer ones, and a line of 199 bytes
 * already shifts its line numbers; longer lines are refused instead.
 */
#define CONFIG_LINE_MAX		198
#define CONFIG_FILE_MAX		(1024 * 1024)	/* bytes */

enum delivery_mode { DELIVERY_QUEUE, DELIVERY_DIRECT };
enum upstream_tls { UPSTREAM_TLS_STARTTLS, UPSTREAM_TLS_IMPLICIT };

struct listen_cfg {
	char			text[CONFIG_HOST_MAX];	/* as written, for logs */
	struct sockaddr_storage	ss;
	socklen_t		sslen;
};

struct client_cfg {
	char		name[CONFIG_NAME_MAX];
	struct netmask	nets[CONFIG_MAX_NETS];
	size_t		n_nets;
	char		account[CONFIG_ADDR_MAX];	/* "" when unset */
	char		accounts[CONFIG_MAX_LIST][CONFIG_ADDR_MAX];
	size_t		n_accounts;			/* 0: may use all */
	char		senders[CONFIG_MAX_LIST][CONFIG_ADDR_MAX];	/* "*@dom" allowed */
	size_t		n_senders;			/* 0: any sender */
	uint64_t	rate_count;			/* 0: no rate limit */
	uint64_t	rate_period;			/* seconds */
	int		line;				/* section line, for errors */
};

struct config {
	char		file[CONFIG_PATH_MAX];

	/* [vault] */
	char		vault_path[CONFIG_PATH_MAX];
	char		passphrase_file[CONFIG_PATH_MAX];
	char		key_file[CONFIG_PATH_MAX];

	/* [smtp] */
	struct listen_cfg listen[CONFIG_MAX_LISTEN];
	size_t		n_listen;
	char		hostname[CONFIG_HOST_MAX];
	struct netmask	trusted[CONFIG_MAX_NETS];
	size_t		n_trusted;
	uint64_t	max_message_size;
	uint64_t	max_recipients;
	uint64_t	max_connections;
	uint64_t	max_connections_per_ip;
	uint64_t	smtp_timeout;			/* seconds */
	enum delivery_mode delivery;
	char		spool_dir[CONFIG_PATH_MAX];
	char		default_account[CONFIG_ADDR_MAX];
	char		smtp_tls_cert[CONFIG_PATH_MAX];
	char		smtp_tls_key[CONFIG_PATH_MAX];

	/* [client "NAME"] */
	struct client_cfg *clients;			/* n_clients entries */
	size_t		n_clients;

	/* [upstream] */
	char		upstream_host[CONFIG_HOST_MAX];
	uint16_t	upstream_port;
	enum upstream_tls upstream_tls;
	char		upstream_ca_file[CONFIG_PATH_MAX];
	uint64_t	upstream_timeout;		/* seconds */
	uint64_t	max_sessions_per_account;
	uint64_t	retry_schedule[CONFIG_MAX_RETRY];	/* seconds */
	size_t		n_retry;
	uint64_t	queue_lifetime;			/* seconds */

	/* [admin] */
	struct listen_cfg admin_listen;
	char		admin_tls_cert[CONFIG_PATH_MAX];
	char		admin_tls_key[CONFIG_PATH_MAX];

	/* [audit] */
	char		audit_path[CONFIG_PATH_MAX];
	int		log_subject;
};

/* Fill every field with its default (the values of SPEC section 3). */
void config_defaults(struct config *cfg);

/*
 * Load path over the defaults (config_defaults() is applied first; cfg must
 * not hold clients of an earlier load: config_free() it or use a fresh one).
 * Returns 0, or -1 with "file:line: message" (or "file: message (reason)")
 * in err. On error cfg is left freed.
 */
int config_load(const char *path, struct config *cfg, char *err, size_t errlen);

/* Parse an in-memory INI text over the defaults, like config_load(); name is
 * used in error messages and its directory for relative paths. */
int config_parse(const char *name, const char *text, struct config *cfg,
    char *err, size_t errlen);

void config_free(struct config *cfg);

/* The client a peer address belongs to: first [client] whose networks match,
 * else NULL with *trusted set when trusted_networks match. */
const struct client_cfg *config_client_for(const struct config *cfg,
    const struct sockaddr *sa, int *trusted);

#endif
