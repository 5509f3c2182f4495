/*
 * metrics.h: the daemon's counters for GET /metrics (Prometheus text
 * exposition format). Message and auth-failure counters are bumped where
 * the event happens (relay, queue); gauges are read on demand. In-memory,
 * reset at restart, as Prometheus counters may be.
 */
#ifndef SMTPVAULT_METRICS_H
#define SMTPVAULT_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_ACCOUNTS_MAX	1024	/* distinct accounts tracked (vault maximum) */

/* Message outcomes, the "status" label (SPEC section 7 vocabulary). */
enum metrics_status {
	METRICS_QUEUED,
	METRICS_DELIVERED,
	METRICS_DEFERRED,
	METRICS_FAILED,
	METRICS_REJECTED,
	METRICS_STATUS_COUNT
};

void	metrics_message(const char *account, enum metrics_status st);
void	metrics_auth_failure(const char *account);

/* Counters of one account, for the admin page (0 for an unknown account). */
uint64_t metrics_messages(const char *account, enum metrics_status st);
uint64_t metrics_auth_failures(const char *account);

/* Iterate the accounts seen so far; NULL past the end. */
const char *metrics_account_at(size_t i);

const char *metrics_status_name(enum metrics_status st);

void	metrics_reset(void);	/* tests */

#endif
