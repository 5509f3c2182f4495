/*
 * metrics.c: a fixed table of per-account counters. One process, one event
 * loop: no locking. Accounts beyond METRICS_ACCOUNTS_MAX share one
 * "(other)" row rather than growing without bound.
 */
#include "metrics.h"

#include <string.h>
#include <strings.h>

#include "util.h"
#include "vault.h"

#define METRICS_OTHER	"(other)"

struct metrics_row {
	char		account[VAULT_ADDR_MAX];
	uint64_t	messages[METRICS_STATUS_COUNT];
	uint64_t	auth_failures;
};

static struct metrics_row metrics_rows[METRICS_ACCOUNTS_MAX + 1];
static size_t metrics_nrows;

static const char *const metrics_status_names[METRICS_STATUS_COUNT] = {
	"queued", "delivered", "deferred", "failed", "rejected",
};

const char *
metrics_status_name(enum metrics_status st)
{
	return (unsigned)st < METRICS_STATUS_COUNT ? metrics_status_names[st] : "unknown";
}

static struct metrics_row *
metrics_row(const char *account, int create)
{
	size_t i;

	if (account == NULL || account[0] == '\0')
		account = "-";
	for (i = 0; i < metrics_nrows; i++)
		if (strcasecmp(metrics_rows[i].account, account) == 0)
			return &metrics_rows[i];
	if (!create)
		return NULL;
	if (metrics_nrows == METRICS_ACCOUNTS_MAX)
		account = METRICS_OTHER;
	for (i = 0; i < metrics_nrows; i++)
		if (strcmp(metrics_rows[i].account, account) == 0)
			return &metrics_rows[i];
	strlcpy(metrics_rows[metrics_nrows].account, account,
	    sizeof(metrics_rows[metrics_nrows].account));
	return &metrics_rows[metrics_nrows++];
}

void
metrics_message(const char *account, enum metrics_status st)
{
	struct metrics_row *r;

	if ((unsigned)st < METRICS_STATUS_COUNT && (r = metrics_row(account, 1)) != NULL)
		r->messages[st]++;
}

void
metrics_auth_failure(const char *account)
{
	struct metrics_row *r;

	if ((r = metrics_row(account, 1)) != NULL)
		r->auth_failures++;
}

uint64_t
metrics_messages(const char *account, enum metrics_status st)
{
	struct metrics_row *r = metrics_row(account, 0);

	return (r != NULL && (unsigned)st < METRICS_STATUS_COUNT) ? r->messages[st] : 0;
}

uint64_t
metrics_auth_failures(const char *account)
{
	struct metrics_row *r = metrics_row(account, 0);

	return r != NULL ? r->auth_failures : 0;
}

const char *
metrics_account_at(size_t i)
{
	return i < metrics_nrows ? metrics_rows[i].account : NULL;
}

void
metrics_reset(void)
{
	memset(metrics_rows, 0, sizeof(metrics_rows));
	metrics_nrows = 0;
}
