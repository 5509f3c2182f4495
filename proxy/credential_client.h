/*
 * credential_client.h: credential.c's other half: the same questions asked
 * of the vault keeper (keeper.h) over a blocking IPC channel. Only
 * credential.c includes this; everyone else sees credential.h.
 */
#ifndef SMTPVAULT_CREDENTIAL_CLIENT_H
#define SMTPVAULT_CREDENTIAL_CLIENT_H

#include "credential.h"

struct credclient;

struct credclient *credclient_new(int fd);
void	credclient_free(struct credclient *cc);

enum cred_result credclient_resolve(struct credclient *cc, const char *addr,
	    char *account, size_t len);
enum cred_result credclient_info(struct credclient *cc, const char *account,
	    struct cred_info *out);
enum cred_result credclient_fetch(struct credclient *cc, const char *account,
	    struct cred *out);
void	credclient_report_auth(struct credclient *cc, const char *account,
	    uint32_t version, int ok, const char *reply);
int	credclient_healthy(struct credclient *cc, char *err, size_t errlen);
size_t	credclient_account_count(struct credclient *cc);
int	credclient_account_view(struct credclient *cc, size_t i,
	    struct cred_account_view *out);
enum cred_admin_result credclient_account_add(struct credclient *cc,
	    const struct vault_account *tmpl, const struct vault_secret *secret,
	    const char *by, const char *ip, char *err, size_t errlen);
enum cred_admin_result credclient_account_rotate(struct credclient *cc, const char *addr,
	    const struct vault_secret *secret, const char *by, const char *ip,
	    uint32_t *version, char *err, size_t errlen);
enum cred_admin_result credclient_account_change(struct credclient *cc, int type,
	    const char *addr, const char *by, const char *ip, uint32_t *version,
	    char *err, size_t errlen);
int	credclient_admin_verify(struct credclient *cc, struct event_base *base,
	    const char *name, const struct vault_secret *password, cred_login_cb *cb,
	    void *arg);
void	credclient_admin_verify_cancel(struct credclient *cc, void *arg);
int	credclient_admin_audit(struct credclient *cc, int action, const char *user,
	    const char *ip, const char *reason, char *err, size_t errlen);
/* The audit forwarder's callbacks (arg: the credclient). */
int	credclient_audit_append(void *arg, const char *json, size_t len, char *err,
	    size_t errlen);
int	credclient_audit_reopen(void *arg, char *err, size_t errlen);

#endif
