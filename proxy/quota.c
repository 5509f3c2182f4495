/*
 * quota.c: rolling 24-hour message and recipient counters per account (see
 * quota.h), and their sent log.
 */
#include "quota.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "util.h"
#include "vault.h"

#define QUOTA_ACCOUNT_MAX	VAULT_ADDR_MAX

struct quota_account {
	TAILQ_ENTRY(quota_account) entry;
	char		account[QUOTA_ACCOUNT_MAX];
	uint32_t	minute[QUOTA_BUCKETS];	/* unix minute of the bucket, 0 = empty */
	uint32_t	msgs[QUOTA_BUCKETS];
	uint32_t	rcpts[QUOTA_BUCKETS];
};
TAILQ_HEAD(quota_account_list, quota_account);

struct quota {
	struct quota_account_list accounts;
	size_t		n_accounts;
	int		log_fd;			/* -1: no sent log */
	char		log_path[PATH_MAX];
	off_t		log_size;
};

struct quota *
quota_new(void)
{
	struct quota *q;

	if ((q = calloc(1, sizeof(*q))) == NULL)
		return NULL;
	TAILQ_INIT(&q->accounts);
	q->log_fd = -1;
	return q;
}

void
quota_free(struct quota *q)
{
	struct quota_account *qa;

	if (q == NULL)
		return;
	while ((qa = TAILQ_FIRST(&q->accounts)) != NULL) {
		TAILQ_REMOVE(&q->accounts, qa, entry);
		free(qa);
	}
	if (q->log_fd != -1)
		close(q->log_fd);
	free(q);
}

void
quota_limits(uint64_t daily_limit, uint64_t daily_rcpt_limit, struct quota_limits *out)
{
	out->messages = daily_limit != 0 ? daily_limit : VAULT_DEFAULT_DAILY_LIMIT;
	out->rcpts = daily_rcpt_limit != 0 ? daily_rcpt_limit : VAULT_DEFAULT_RCPT_LIMIT;
}

static uint32_t
quota_minute(time_t t)
{
	return t <= 0 ? 0 : (uint32_t)((uint64_t)t / QUOTA_BUCKET_SECS);
}

/* Is bucket i inside the window that ends in minute now? */
static int
bucket_live(const struct quota_account *qa, size_t i, uint32_t now)
{
	return qa->minute[i] != 0 && qa->minute[i] <= now && now - qa->minute[i] < QUOTA_BUCKETS;
}

static struct quota_account *
account_find(struct quota *q, const char *account, int create)
{
	struct quota_account *qa;

	TAILQ_FOREACH(qa, &q->accounts, entry)
		if (strcasecmp(qa->account, account) == 0)
			return qa;
	if (!create || q->n_accounts >= QUOTA_ACCOUNTS_MAX)
		return NULL;
	if ((qa = calloc(1, sizeof(*qa))) == NULL)
		return NULL;
	strlcpy(qa->account, account, sizeof(qa->account));
	TAILQ_INSERT_TAIL(&q->accounts, qa, entry);
	q->n_accounts++;
	return qa;
}

static void
account_sum(const struct quota_account *qa, uint32_t now, uint64_t *msgs, uint64_t *rcpts)
{
	size_t i;

	*msgs = *rcpts = 0;
	for (i = 0; i < QUOTA_BUCKETS; i++) {
		if (!bucket_live(qa, i, now))
			continue;
		*msgs += qa->msgs[i];
		*rcpts += qa->rcpts[i];
	}
}

void
quota_usage(struct quota *q, const char *account, time_t now, uint64_t *msgs, uint64_t *rcpts)
{
	struct quota_account *qa;

	*msgs = *rcpts = 0;
	if ((qa = account_find(q, account, 0)) != NULL)
		account_sum(qa, quota_minute(now), msgs, rcpts);
}

int
quota_check(struct quota *q, const char *account, const struct quota_limits *lim,
    uint32_t msgs, uint32_t rcpts, time_t now, time_t *room_at)
{
	struct quota_account *qa;
	uint64_t used_m, used_r;
	uint32_t nowm = quota_minute(now);
	size_t k, i;

	*room_at = 0;
	if (msgs > lim->messages || rcpts > lim->rcpts)
		return -1;	/* never, not even in an empty window */
	if ((qa = account_find(q, account, 0)) == NULL)
		return 0;
	account_sum(qa, nowm, &used_m, &used_r);
	if (used_m + msgs <= lim->messages && used_r + rcpts <= lim->rcpts)
		return 0;
	/* Age the buckets out oldest first until the message fits. */
	for (k = 1; k <= QUOTA_BUCKETS; k++) {
		i = (nowm + k) % QUOTA_BUCKETS;
		if (!bucket_live(qa, i, nowm))
			continue;
		used_m -= qa->msgs[i];
		used_r -= qa->rcpts[i];
		if (used_m + msgs <= lim->messages && used_r + rcpts <= lim->rcpts) {
			*room_at = (time_t)((uint64_t)(qa->minute[i] + QUOTA_BUCKETS) *
			    QUOTA_BUCKET_SECS);
			return -1;
		}
	}
	/* Unreachable: an empty window always fits (checked above). */
	*room_at = now + QUOTA_BUCKET_SECS;
	return -1;
}

static void
bucket_add(struct quota_account *qa, uint32_t minute, uint32_t msgs, uint32_t rcpts)
{
	size_t i = minute % QUOTA_BUCKETS;

	if (qa->minute[i] != minute) {
		qa->minute[i] = minute;
		qa->msgs[i] = 0;
		qa->rcpts[i] = 0;
	}
	qa->msgs[i] = qa->msgs[i] > UINT32_MAX - msgs ? UINT32_MAX : qa->msgs[i] + msgs;
	qa->rcpts[i] = qa->rcpts[i] > UINT32_MAX - rcpts ? UINT32_MAX : qa->rcpts[i] + rcpts;
}

int
quota_take(struct quota *q, const char *account, uint32_t msgs, uint32_t rcpts, time_t now,
    struct quota_ticket *t)
{
	memset(t, 0, sizeof(*t));
	if ((t->qa = account_find(q, account, 1)) == NULL)
		return -1;
	t->bucket = quota_minute(now);
	t->msgs = msgs;
	t->rcpts = rcpts;
	bucket_add(t->qa, t->bucket, msgs, rcpts);
	return 0;
}

void
quota_give_back(struct quota_ticket *t, uint32_t msgs, uint32_t rcpts)
{
	struct quota_account *qa = t->qa;
	size_t i;

	if (qa == NULL)
		return;
	msgs = msgs > t->msgs ? t->msgs : msgs;
	rcpts = rcpts > t->rcpts ? t->rcpts : rcpts;
	t->msgs -= msgs;
	t->rcpts -= rcpts;
	i = t->bucket % QUOTA_BUCKETS;
	if (qa->minute[i] != t->bucket)
		return;
	qa->msgs[i] = qa->msgs[i] > msgs ? qa->msgs[i] - msgs : 0;
	qa->rcpts[i] = qa->rcpts[i] > rcpts ? qa->rcpts[i] - rcpts : 0;
}

/* ---- The sent log ------------------------------------------------------- */

int
quota_log_parse(const char *line, size_t len, time_t *when, uint32_t *msgs, uint32_t *rcpts,
    char *account, size_t accountlen)
{
	char buf[QUOTA_LOG_LINE_MAX], *f[3], *rest, *sp;
	uint64_t v[3];
	size_t i;

	if (len == 0 || len >= sizeof(buf) || memchr(line, '\0', len) != NULL)
		return -1;
	memcpy(buf, line, len);
	buf[len] = '\0';
	rest = buf;
	for (i = 0; i < 3; i++) {
		if ((sp = strchr(rest, ' ')) == NULL)
			return -1;
		*sp = '\0';
		f[i] = rest;
		rest = sp + 1;
	}
	if (parse_u64(f[0], 1, INT64_MAX, &v[0]) == -1 ||
	    parse_u64(f[1], 0, UINT32_MAX, &v[1]) == -1 ||
	    parse_u64(f[2], 0, UINT32_MAX, &v[2]) == -1)
		return -1;
	if (rest[0] == '\0' || strlen(rest) >= accountlen)
		return -1;
	for (i = 0; rest[i] != '\0'; i++)
		if ((unsigned char)rest[i] <= ' ' || (unsigned char)rest[i] == 0x7f)
			return -1;
	*when = (time_t)v[0];
	*msgs = (uint32_t)v[1];
	*rcpts = (uint32_t)v[2];
	strlcpy(account, rest, accountlen);
	return 0;
}

static int
log_format(char *buf, size_t len, time_t when, uint32_t msgs, uint32_t rcpts,
    const char *account)
{
	int n = snprintf(buf, len, "%lld %u %u %s\n", (long long)when, msgs, rcpts, account);

	return n < 0 || (size_t)n >= len ? -1 : n;
}

/* Rewrite the log from the counters in memory, then reopen it for appends. */
static int
log_compact(struct quota *q, time_t now, char *err, size_t errlen)
{
	struct quota_account *qa;
	char line[QUOTA_LOG_LINE_MAX], *buf = NULL, *nbuf;
	size_t len = 0, cap = 0, i;
	uint32_t nowm = quota_minute(now);
	int n, fd, rc = -1;

	TAILQ_FOREACH(qa, &q->accounts, entry) {
		for (i = 0; i < QUOTA_BUCKETS; i++) {
			if (!bucket_live(qa, i, nowm) || (qa->msgs[i] == 0 && qa->rcpts[i] == 0))
				continue;
			if ((n = log_format(line, sizeof(line), (time_t)qa->minute[i] *
			    QUOTA_BUCKET_SECS, qa->msgs[i], qa->rcpts[i], qa->account)) == -1)
				continue;
			if (len + (size_t)n > cap) {
				cap = cap == 0 ? 64 * 1024 : cap * 2;
				if ((nbuf = realloc(buf, cap)) == NULL) {
					snprintf(err, errlen, "out of memory");
					goto done;
				}
				buf = nbuf;
			}
			memcpy(buf + len, line, (size_t)n);
			len += (size_t)n;
		}
	}
	if (file_write_atomic(q->log_path, buf != NULL ? buf : "", len, 0600) == -1) {
		snprintf(err, errlen, "cannot write %s: %s", q->log_path, strerror(errno));
		goto done;
	}
	if ((fd = open(q->log_path, O_WRONLY | O_APPEND | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "cannot open %s: %s", q->log_path, strerror(errno));
		goto done;
	}
	if (q->log_fd != -1)
		close(q->log_fd);
	q->log_fd = fd;
	q->log_size = (off_t)len;
	rc = 0;
done:
	free(buf);
	return rc;
}

int
quota_log_open(struct quota *q, const char *path, time_t now, size_t *skipped, char *err,
    size_t errlen)
{
	struct quota_account *qa;
	char line[QUOTA_LOG_LINE_MAX + 2], account[QUOTA_ACCOUNT_MAX];
	uint32_t nowm = quota_minute(now), m, msgs, rcpts;
	size_t bad = 0, len;
	time_t when;
	FILE *fp;
	int c;

	if (strlcpy(q->log_path, path, sizeof(q->log_path)) >= sizeof(q->log_path)) {
		snprintf(err, errlen, "sent log path too long: %s", path);
		return -1;
	}
	if ((fp = fopen(path, "re")) == NULL && errno != ENOENT) {
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return -1;
	}
	while (fp != NULL && fgets(line, sizeof(line), fp) != NULL) {
		len = strlen(line);
		if (len == 0 || line[len - 1] != '\n') {
			/* Too long (skip the rest of it) or cut off at the end. */
			bad++;
			while (len > 0 && line[len - 1] != '\n' && (c = fgetc(fp)) != EOF &&
			    c != '\n')
				;
			continue;
		}
		if (quota_log_parse(line, len - 1, &when, &msgs, &rcpts, account,
		    sizeof(account)) == -1) {
			bad++;
			continue;
		}
		m = quota_minute(when);
		if (m == 0 || m > nowm || nowm - m >= QUOTA_BUCKETS)
			continue;	/* outside the window */
		if ((qa = account_find(q, account, 1)) == NULL) {
			bad++;
			continue;
		}
		bucket_add(qa, m, msgs, rcpts);
	}
	if (fp != NULL)
		fclose(fp);
	if (skipped != NULL)
		*skipped = bad;
	return log_compact(q, now, err, errlen);
}

int
quota_log_append(struct quota *q, const char *account, uint32_t msgs, uint32_t rcpts,
    time_t when)
{
	char line[QUOTA_LOG_LINE_MAX], err[512];
	ssize_t w;
	int n;

	if (q->log_fd == -1)
		return 0;
	if ((n = log_format(line, sizeof(line), when, msgs, rcpts, account)) == -1)
		return -1;
	do {
		w = write(q->log_fd, line, (size_t)n);
	} while (w == -1 && errno == EINTR);
	if (w != n) {
		log_warn("event=sent_log_write path=%s error=\"%s\"", q->log_path,
		    w == -1 ? strerror(errno) : "short write");
		return -1;
	}
	q->log_size += n;
	if (q->log_size > QUOTA_LOG_COMPACT_BYTES &&
	    log_compact(q, when, err, sizeof(err)) == -1) {
		log_warn("event=sent_log_compact error=\"%s\"", err);
		return -1;
	}
	return 0;
}
