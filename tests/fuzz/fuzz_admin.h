/*
 * fuzz_admin.h: a fake admin server for the admin API harnesses
 * (fuzz_admin_*.c). The real routes of admin/admin_api.c run on it
 * unchanged, with the real percent-decoding, cookie parsing, sessions,
 * throttling and JSON checks (admin_util.c, admin_session.c); what needs
 * libmicrohttpd, the vault, the audit log or the network is replaced by
 * fuzz_admin_fake.c, which records what reached it: the validated requests
 * (the login check, the account added, the address rotated...), every reply,
 * every header and every log line. A harness then states its properties
 * against those records.
 *
 * One request at a time: fake_begin() makes a fresh server (sessions,
 * throttle, one logged-in session whose cookie value and CSRF token are
 * fake.sid and fake.csrf), fake_request() the request, fake_dispatch() runs
 * the route, then every queued job and every pending upstream check the way
 * the server would, and checks what every reply must satisfy; fake_end()
 * frees it all.
 */
#ifndef SMTPVAULT_FUZZ_ADMIN_H
#define SMTPVAULT_FUZZ_ADMIN_H

#include <stddef.h>
#include <stdint.h>

#include "admin_internal.h"
#include "credential.h"
#include "vault.h"

/* The one account of the fake vault, with one alias, and the admin user. */
#define FAKE_ACCOUNT		"alice@example.com"
#define FAKE_ALIAS		"al@example.com"
#define FAKE_ADMIN		"admin"
#define FAKE_AUDIT_PATH		"/var/lib/smtpvault/audit.log"
#define FAKE_VERIFY_OK		"235 2.7.0 Accepted"
#define FAKE_VERIFY_REFUSED	"535 5.7.8 Username and Password not accepted"
/* Upstream text need not be UTF-8 (smtp_reply.c keeps bytes above 126). */
#define FAKE_VERIFY_OK_8BIT	"235 2.7.0 Accept\xe9"
#define FAKE_VERIFY_REFUSED_8BIT "535 5.7.8 Identifiants refus\xe9s \xc3"

#define FAKE_HEADERS_MAX	64
#define FAKE_OUT_MAX		(256 * 1024)	/* log and audit text kept per request */

enum fake_verify { FAKE_VERIFY_PASS, FAKE_VERIFY_REFUSE, FAKE_VERIFY_UNREACHABLE };

struct fake_opts {
	int			tls;		/* the server has a TLS certificate */
	int			login_ok;	/* the admin password check succeeds */
	enum fake_verify	verify;		/* the upstream's verdict on a new password */
	enum cred_admin_result	store;		/* what the vault answers to a change */
	int			workers_full;	/* admin_workers_submit() refuses */
	int			reply_8bit;	/* the upstream's text is not UTF-8 */
};

/* A secret as a stub saw it (a plain copy, for comparison only). */
struct fake_secret {
	int		seen;
	unsigned char	buf[VAULT_SECRET_MAX + 2];
	size_t		len;
};

struct fake_state {
	struct fake_opts	opts;
	struct admin_server	srv;
	char			sid[ADMIN_TOKEN_HEX + 1];	/* the live session's cookie */
	char			csrf[ADMIN_TOKEN_HEX + 1];
	/* The request's headers, in order (a name may repeat). */
	char			*hname[FAKE_HEADERS_MAX];
	char			*hval[FAKE_HEADERS_MAX];
	size_t			n_headers;
	/* What reached the fake. */
	int			suspended, resumed;
	int			privileged;	/* something only a session may see */
	int			changed;	/* a state change reached the vault */
	int			login_checked;	/* a password went to the Argon2id check */
	char			login_name[VAULT_NAME_MAX];
	struct fake_secret	login_pw;
	int			added;		/* credstore_account_add() */
	struct vault_account	add_tmpl;
	int			rotated, rolled_back, removed, info_asked;
	char			change_addr[VAULT_ADDR_MAX + 16];	/* rotate/rollback/remove */
	char			info_addr[VAULT_ADDR_MAX + 16];		/* last credstore_info() */
	struct fake_secret	stored;		/* secret given to add / rotate */
	int			verify_started;
	struct fake_secret	verified;	/* secret given to the upstream check */
	int			audit_queried;	/* admin_audit_page() / _csv() */
	int			audit_csv;
	struct admin_audit_query q;
	int			sessions_destroyed;
	/* Text the outside world could see: log lines, audit fields. */
	char			*out;
	size_t			out_len;
};

extern struct fake_state fake;

void	fake_begin(const struct fake_opts *opts);
/* Add a request header (copied). */
void	fake_header(const char *name, const char *value);
/*
 * A request as admin_access() hands it to admin_api_dispatch(): method,
 * target, body (copied, NUL-terminated as the server keeps it). NULL when
 * the server would have refused it before dispatch (method too long,
 * target too long).
 */
struct admin_req *fake_request(const char *method, const char *uri, const uint8_t *body,
	    size_t len);
/* Dispatch, run what was queued, check the reply. */
void	fake_dispatch(struct admin_req *r);
void	fake_end(struct admin_req *r);

/* Does any reply body, reply header, log line or audit field hold needle? */
int	fake_output_has(const struct admin_req *r, const void *needle, size_t len);

/* Maximum nesting of [ / { in a parsed JSON value (0 for a scalar). */
size_t	fake_json_depth(const json_t *v);

#endif
