/*
 * cli_queue.c: "smtpvault queue list [--json] | retry ID|--all | delete ID".
 *
 * While the daemon runs, the command asks it over its control socket
 * (queue_ctl.h): the daemon alone changes the spool then, so an action can
 * never race with a delivery. Without a daemon, the command takes the
 * spool's lock (the same one a starting daemon waits for) and works on the
 * files itself. Exit status: 0, 1 no such message or the action failed,
 * 2 usage.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "audit.h"
#include "cli.h"
#include "log.h"
#include "queue_ctl.h"
#include "relay.h"
#include "spool.h"
#include "util.h"

#define CLI_QUEUE_LOCK_WAIT_MS	5000	/* for the spool lock without a daemon */
#define CLI_QUEUE_IO_TIMEOUT	30	/* s, for the daemon's answer */
#define CLI_QUEUE_CELL_MAX	256
#define CLI_QUEUE_REPLY_COL	60	/* last reply shown in the table */

static const char *queue_usage =
    "smtpvault queue list [--json] | retry ID|--all | delete ID";

enum queue_cmd { QC_LIST, QC_RETRY, QC_DELETE };

struct queue_args {
	enum queue_cmd	cmd;
	const char	*id;
	int		all;
	int		json;
};

/* ---- Output ------------------------------------------------------------- */

static void
fmt_age(char *buf, size_t len, json_int_t s)
{
	if (s < 0)
		snprintf(buf, len, "-");
	else if (s < 120)
		snprintf(buf, len, "%llds", (long long)s);
	else if (s < 7200)
		snprintf(buf, len, "%lldm", (long long)s / 60);
	else if (s < 172800)
		snprintf(buf, len, "%lldh", (long long)s / 3600);
	else
		snprintf(buf, len, "%lldd", (long long)s / 86400);
}

static void
fmt_size(char *buf, size_t len, json_int_t n)
{
	if (n < 1024)
		snprintf(buf, len, "%lld", (long long)n);
	else if (n < 1024 * 1024)
		snprintf(buf, len, "%.1fK", (double)n / 1024);
	else
		snprintf(buf, len, "%.1fM", (double)n / (1024 * 1024));
}

/* A cell: printable ASCII only, bounded (a reply or address is client text). */
static const char *
cell(char *buf, size_t len, json_t *v, size_t max)
{
	const char *s = json_is_string(v) ? json_string_value(v) : "-";

	relay_text_sanitize(buf, len, s[0] != '\0' ? s : "<>", max);
	return buf;
}

static void
print_header(void)
{
	printf("%-16s %-24s %-24s %-28s %6s %5s %4s %6s %-8s %s\n", "ID", "ACCOUNT", "FROM",
	    "RCPTS", "SIZE", "AGE", "TRY", "NEXT", "STATUS", "LAST REPLY");
}

static void
print_row(json_t *e, time_t now)
{
	char id[CLI_QUEUE_CELL_MAX], acct[CLI_QUEUE_CELL_MAX], from[CLI_QUEUE_CELL_MAX];
	char rcpt[CLI_QUEUE_CELL_MAX], rcpts[CLI_QUEUE_CELL_MAX + 32], reply[CLI_QUEUE_CELL_MAX];
	char size[32], age[32], next[32], status[32];
	json_t *r = json_object_get(e, "rcpts"), *na = json_object_get(e, "next_attempt");
	size_t n = json_array_size(r);
	time_t t;

	cell(rcpt, sizeof(rcpt), json_array_get(r, 0), 40);
	if (n > 1)
		snprintf(rcpts, sizeof(rcpts), "%s +%zu", rcpt, n - 1);
	else
		snprintf(rcpts, sizeof(rcpts), "%s", rcpt);
	fmt_size(size, sizeof(size), json_integer_value(json_object_get(e, "size")));
	fmt_age(age, sizeof(age), json_integer_value(json_object_get(e, "age")));
	if (json_is_string(na) && time_parse(json_string_value(na), now, &t) == 0)
		fmt_age(next, sizeof(next), t > now ? (json_int_t)(t - now) : 0);
	else
		snprintf(next, sizeof(next), "-");
	if (strcmp(next, "0s") == 0)
		snprintf(next, sizeof(next), "now");
	printf("%-16s %-24s %-24s %-28s %6s %5s %4lld %6s %-8s %s\n",
	    cell(id, sizeof(id), json_object_get(e, "id"), 24),
	    cell(acct, sizeof(acct), json_object_get(e, "account"), 64),
	    cell(from, sizeof(from), json_object_get(e, "from"), 64), rcpts, size, age,
	    (long long)json_integer_value(json_object_get(e, "attempts")), next,
	    cell(status, sizeof(status), json_object_get(e, "status"), 16),
	    json_is_string(json_object_get(e, "last_reply")) ? cell(reply, sizeof(reply),
	    json_object_get(e, "last_reply"), CLI_QUEUE_REPLY_COL) : "-");
}

static int
print_list(json_t *entries, int as_json)
{
	time_t now = time(NULL);
	size_t i;
	json_t *e;
	char *s;

	if (as_json) {
		if ((s = json_dumps(entries, JSON_INDENT(2) | JSON_PRESERVE_ORDER)) == NULL) {
			cli_error("out of memory");
			return EXIT_FAILED;
		}
		printf("%s\n", s);
		free(s);
		return EXIT_OK;
	}
	if (json_array_size(entries) == 0) {
		printf("the queue is empty\n");
		return EXIT_OK;
	}
	print_header();
	json_array_foreach(entries, i, e)
		print_row(e, now);
	return EXIT_OK;
}

/* ---- Through the daemon --------------------------------------------------- */

/*
 * Send req, read the answer: entries (for list) appended to *entries, the
 * final status line into *status. Returns 0; -1 with errno ENOENT or
 * ECONNREFUSED when no daemon listens; -1 otherwise (message printed).
 */
static int
ctl_call(const char *spool_dir, json_t *req, json_t *entries, json_t **status)
{
	struct sockaddr_un sun;
	struct timeval tv = { CLI_QUEUE_IO_TIMEOUT, 0 };
	socklen_t len;
	char *line = NULL, *s = NULL;
	size_t cap = 0;
	ssize_t n;
	json_t *v, *last = NULL;
	json_error_t jerr;
	FILE *fp = NULL;
	int dirfd, fd = -1, rc = -1, saved;

	*status = NULL;
	if ((dirfd = open(spool_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1)
		return -1;
	if (queue_ctl_addr(spool_dir, dirfd, &sun, &len) == -1 ||
	    (fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) == -1 ||
	    connect(fd, (struct sockaddr *)&sun, len) == -1) {
		saved = errno;
		if (fd != -1)
			close(fd);
		close(dirfd);
		errno = saved;
		return -1;
	}
	close(dirfd);
	(void)setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	(void)setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	if ((s = json_dumps(req, JSON_COMPACT)) == NULL ||
	    dprintf(fd, "%s\n", s) < 0 || (fp = fdopen(fd, "r")) == NULL) {
		cli_error("cannot talk to the daemon on %s/%s: %s", spool_dir, QUEUE_CTL_SOCKET,
		    strerror(errno));
		goto done;
	}
	fd = -1;
	while ((n = getline(&line, &cap, fp)) > 0) {
		if ((size_t)n > QUEUE_CTL_LINE_MAX ||
		    (v = json_loadb(line, (size_t)n, 0, &jerr)) == NULL ||
		    !json_is_object(v)) {
			cli_error("the daemon sent a malformed answer");
			goto done;
		}
		if (last != NULL && json_array_append_new(entries, last) == -1) {
			json_decref(v);
			cli_error("out of memory");
			goto done;
		}
		last = v;
	}
	if (last == NULL || !json_is_boolean(json_object_get(last, "ok"))) {
		cli_error("the daemon closed the connection without an answer%s%s",
		    ferror(fp) ? ": " : "", ferror(fp) ? strerror(errno) : "");
		goto done;
	}
	*status = last;
	last = NULL;
	rc = 0;
done:
	json_decref(last);
	free(s);
	free(line);
	if (fp != NULL)
		fclose(fp);
	if (fd != -1)
		close(fd);
	if (rc == -1)
		errno = EPROTO;
	return rc;
}

/* ---- Without the daemon ---------------------------------------------------- */

struct offline {
	struct spool	*sp;
	enum spool_area	area;
	json_t		*entries;
	time_t		now;
	const char	*want;		/* retry / delete: this id only */
	int		found;
	size_t		count;
	int		failed;		/* an action failed */
};

static int
offline_list_one(void *arg, const char *id)
{
	struct offline *o = arg;
	struct relay_msg msg;
	struct spool_meta meta;
	struct spool_state st;
	char err[512];
	const char *status;
	json_t *e;

	if (spool_load(o->sp, o->area, id, &msg, &meta, &st, 0, err, sizeof(err)) == -1) {
		if (errno != ENOENT)
			fprintf(stderr, "smtpvault: skipping %s\n", err);
		return 0;
	}
	if (o->area == SPOOL_FAILED || st.failed)
		status = "failed";
	else
		status = st.next_attempt > o->now ? "deferred" : "active";
	if ((e = spool_entry_json(&msg, &meta, &st, status, NULL, o->now)) != NULL &&
	    json_array_append_new(o->entries, e) == -1)
		o->failed = 1;
	spool_msg_clear(&msg);
	spool_meta_free(&meta);
	spool_state_free(&st);
	return 0;
}

static int
entry_cmp(const void *a, const void *b)
{
	json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
	json_int_t ax = json_integer_value(json_object_get(x, "age"));
	json_int_t ay = json_integer_value(json_object_get(y, "age"));

	if (ax != ay)
		return ax > ay ? -1 : 1;	/* oldest first */
	return strcmp(json_string_value(json_object_get(x, "id")),
	    json_string_value(json_object_get(y, "id")));
}

/* Oldest first, like the daemon lists them. */
static int
sort_entries(json_t *entries)
{
	json_t **v, *sorted;
	size_t i, n = json_array_size(entries);
	int rc = -1;

	if (n < 2)
		return 0;
	if ((v = calloc(n, sizeof(*v))) == NULL)
		return -1;
	for (i = 0; i < n; i++)
		v[i] = json_incref(json_array_get(entries, i));
	qsort(v, n, sizeof(*v), entry_cmp);
	if ((sorted = json_array()) == NULL)
		goto done;
	for (i = 0; i < n; i++)
		if (json_array_append(sorted, v[i]) == -1)
			goto done;
	rc = json_array_clear(entries) == 0 && json_array_extend(entries, sorted) == 0 ? 0 : -1;
done:
	for (i = 0; i < n; i++)
		json_decref(v[i]);
	json_decref(sorted);
	free(v);
	return rc;
}

/* Make one message due now; a failed one goes back to queue/. */
static int
offline_retry_one(void *arg, const char *id)
{
	struct offline *o = arg;
	struct relay_msg msg;
	struct spool_meta meta;
	struct spool_state st;
	char err[512], *text = NULL;
	size_t len;
	int from_failed = o->area == SPOOL_FAILED;

	if (o->want != NULL && strcmp(o->want, id) != 0)
		return 0;
	if (spool_load(o->sp, o->area, id, &msg, &meta, &st, 0, err, sizeof(err)) == -1) {
		if (errno != ENOENT) {
			fprintf(stderr, "smtpvault: %s\n", err);
			o->failed = 1;
		}
		return 0;
	}
	o->found = 1;
	st.next_attempt = 0;
	if (from_failed) {
		st.failed = 0;
		st.since = o->now;	/* a new lifetime */
	}
	if (spool_state_encode(&st, msg.n_rcpts, &text, &len) == -1 ||
	    spool_state_write(o->sp, o->area, id, text, len) == -1 ||
	    (from_failed && spool_move(o->sp, id, SPOOL_FAILED, SPOOL_QUEUE) == -1)) {
		fprintf(stderr, "smtpvault: cannot retry %s: %s\n", id, strerror(errno));
		o->failed = 1;
	} else {
		o->count++;
	}
	free(text);
	spool_msg_clear(&msg);
	spool_meta_free(&meta);
	spool_state_free(&st);
	return o->want != NULL;
}

static int
offline_find(void *arg, const char *id)
{
	struct offline *o = arg;

	if (strcmp(o->want, id) != 0)
		return 0;
	o->found = 1;
	return 1;
}

static int
offline_delete(struct cli *cli, struct offline *o)
{
	struct relay_msg msg;
	struct spool_meta meta;
	struct spool_state st;
	struct vault *v = NULL;
	char err[512], reply[128];
	json_t *ev;
	int rc;

	if (spool_load(o->sp, o->area, o->want, &msg, &meta, &st, 0, err, sizeof(err)) == -1) {
		cli_error("%s", err);
		return EXIT_FAILED;
	}
	/* Nothing leaves the queue unrecorded: the audit event comes first. */
	snprintf(reply, sizeof(reply), "deleted from the queue by cli:%s", cli->actor);
	ev = relay_audit_event(&msg, &meta.fields, meta.size, AUDIT_STATUS_FAILED, reply, 0,
	    st.attempts, 0);
	spool_msg_clear(&msg);
	spool_meta_free(&meta);
	spool_state_free(&st);
	if ((rc = cli_open_vault(cli, 0, &v)) != EXIT_OK) {
		json_decref(ev);
		return rc;
	}
	rc = cli_audit_record(cli, v, ev);
	vault_close(v);
	if (rc != EXIT_OK)
		return rc;
	if (spool_remove(o->sp, o->area, o->want) == -1 || spool_sync(o->sp, o->area) == -1) {
		cli_error("cannot delete %s: %s", o->want, strerror(errno));
		return EXIT_FAILED;
	}
	return EXIT_OK;
}

static int
offline_run(struct cli *cli, const struct queue_args *qa, struct spool *sp)
{
	struct offline o;
	char err[512];
	enum spool_area areas[2] = { SPOOL_QUEUE, SPOOL_FAILED };
	size_t i;
	int rc = EXIT_OK;

	memset(&o, 0, sizeof(o));
	o.sp = sp;
	o.now = time(NULL);
	o.want = qa->id;
	if ((o.entries = json_array()) == NULL) {
		cli_error("out of memory");
		return EXIT_FAILED;
	}
	for (i = 0; i < 2 && !o.found; i++) {
		o.area = areas[i];
		switch (qa->cmd) {
		case QC_LIST:
			rc = spool_scan(sp, o.area, 0, offline_list_one, &o, NULL, err, sizeof(err));
			break;
		case QC_RETRY:
			rc = spool_scan(sp, o.area, 0, offline_retry_one, &o, NULL, err, sizeof(err));
			break;
		case QC_DELETE:
			rc = spool_scan(sp, o.area, 0, offline_find, &o, NULL, err, sizeof(err));
			break;
		}
		if (rc == -1) {
			cli_error("%s", err);
			rc = EXIT_FAILED;
			goto done;
		}
	}
	rc = EXIT_OK;
	switch (qa->cmd) {
	case QC_LIST:
		if (o.failed || sort_entries(o.entries) == -1) {
			cli_error("out of memory");
			rc = EXIT_FAILED;
			break;
		}
		rc = print_list(o.entries, qa->json);
		break;
	case QC_RETRY:
		(void)spool_sync(sp, SPOOL_QUEUE);
		(void)spool_sync(sp, SPOOL_FAILED);
		if (qa->id != NULL && !o.found) {
			cli_error("no message %s in the queue", qa->id);
			rc = EXIT_FAILED;
		} else if (o.failed) {
			rc = EXIT_FAILED;
		} else {
			printf("%zu message%s will be tried at the next start of the daemon\n",
			    o.count, o.count == 1 ? "" : "s");
		}
		break;
	case QC_DELETE:
		if (!o.found) {
			cli_error("no message %s in the queue", qa->id);
			rc = EXIT_FAILED;
			break;
		}
		o.area = areas[i - 1];
		if ((rc = offline_delete(cli, &o)) == EXIT_OK)
			printf("deleted %s\n", qa->id);
		break;
	}
done:
	json_decref(o.entries);
	return rc;
}

/* ---- The command ------------------------------------------------------------ */

static int
parse_args(int argc, char **argv, struct queue_args *qa)
{
	int i;

	memset(qa, 0, sizeof(*qa));
	if (argc < 2) {
		cli_error("missing subcommand; usage: %s", queue_usage);
		return EXIT_USAGE;
	}
	if (strcmp(argv[1], "list") == 0)
		qa->cmd = QC_LIST;
	else if (strcmp(argv[1], "retry") == 0)
		qa->cmd = QC_RETRY;
	else if (strcmp(argv[1], "delete") == 0)
		qa->cmd = QC_DELETE;
	else {
		cli_error("unknown subcommand '%s'; usage: %s", argv[1], queue_usage);
		return EXIT_USAGE;
	}
	for (i = 2; i < argc; i++) {
		if (qa->cmd == QC_LIST && strcmp(argv[i], "--json") == 0)
			qa->json = 1;
		else if (qa->cmd == QC_RETRY && strcmp(argv[i], "--all") == 0)
			qa->all = 1;
		else if (qa->cmd != QC_LIST && argv[i][0] != '-' && qa->id == NULL)
			qa->id = argv[i];
		else {
			cli_error("unexpected argument '%s'; usage: %s", argv[i], queue_usage);
			return EXIT_USAGE;
		}
	}
	if (qa->cmd != QC_LIST && (qa->id == NULL) == !qa->all) {
		cli_error("%s needs %s; usage: %s", argv[1], qa->cmd == QC_RETRY ?
		    "a queue id or --all" : "a queue id", queue_usage);
		return EXIT_USAGE;
	}
	if (qa->id != NULL && !spool_id_valid(qa->id)) {
		cli_error("'%s' is not a queue id (letters and digits, as in \"queued as "
		    "ID\"); usage: %s", qa->id, queue_usage);
		return EXIT_USAGE;
	}
	return EXIT_OK;
}

static json_t *
make_request(struct cli *cli, const struct queue_args *qa)
{
	char by[QUEUE_CTL_REQUEST_MAX / 16];

	snprintf(by, sizeof(by), "cli:%s", cli->actor != NULL ? cli->actor : "unknown");
	switch (qa->cmd) {
	case QC_LIST:
		return json_pack("{s:s}", "cmd", "list");
	case QC_RETRY:
		return qa->all ? json_pack("{s:s, s:b}", "cmd", "retry", "all", 1) :
		    json_pack("{s:s, s:s}", "cmd", "retry", "id", qa->id);
	case QC_DELETE:
		return json_pack("{s:s, s:s, s:s}", "cmd", "delete", "id", qa->id, "by", by);
	}
	return NULL;
}

/* The daemon answered: print and choose the exit status. */
static int
online_result(const struct queue_args *qa, json_t *entries, json_t *status)
{
	json_int_t count = json_integer_value(json_object_get(status, "count"));
	json_t *st;

	if (!json_is_true(json_object_get(status, "ok"))) {
		st = json_object_get(status, "status");
		cli_error("%s%s%s", json_string_value(json_object_get(status, "error")) != NULL ?
		    json_string_value(json_object_get(status, "error")) : "the daemon refused",
		    qa->id != NULL ? ": " : "", qa->id != NULL ? qa->id : "");
		return json_integer_value(st) == EXIT_USAGE ? EXIT_USAGE : EXIT_FAILED;
	}
	switch (qa->cmd) {
	case QC_LIST:
		return print_list(entries, qa->json);
	case QC_RETRY:
		printf("%lld message%s due now\n", (long long)count, count == 1 ? "" : "s");
		return EXIT_OK;
	case QC_DELETE:
		printf("deleted %s\n", qa->id);
		return EXIT_OK;
	}
	return EXIT_OK;
}

int
cmd_queue(struct cli *cli, int argc, char **argv)
{
	struct queue_args qa;
	struct spool *sp = NULL;
	json_t *req = NULL, *entries = NULL, *status = NULL;
	char err[1024];
	int rc, attempt;

	if (argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0)) {
		printf("usage: %s\n\n"
		    "  list [--json]     messages in the queue: id, account, sender, recipients,\n"
		    "                    size, age, attempts, next attempt, status\n"
		    "                    (active, deferred, held, failed) and the last reply\n"
		    "  retry ID|--all    make deferred, held or failed messages due now\n"
		    "  delete ID         remove a message from the queue (audited)\n\n"
		    "While the daemon runs these go through its control socket in spool_dir;\n"
		    "otherwise the spool files are changed directly, under the spool lock.\n",
		    queue_usage);
		return EXIT_OK;
	}
	if ((rc = parse_args(argc, argv, &qa)) != EXIT_OK)
		return rc;
	if ((rc = cli_load_config(cli)) != EXIT_OK)
		return rc;
	if ((req = make_request(cli, &qa)) == NULL || (entries = json_array()) == NULL) {
		cli_error("out of memory");
		rc = EXIT_FAILED;
		goto done;
	}
	/* The daemon first; without one, the files under the lock. A daemon
	 * that is starting holds the lock before it listens: ask again. */
	for (attempt = 0; attempt < 2; attempt++) {
		if (ctl_call(cli->cfg.spool_dir, req, entries, &status) == 0) {
			rc = online_result(&qa, entries, status);
			goto done;
		}
		if (errno != ENOENT && errno != ECONNREFUSED) {
			rc = EXIT_FAILED;
			if (errno != EPROTO)
				cli_error("cannot reach the daemon in %s: %s", cli->cfg.spool_dir,
				    strerror(errno));
			goto done;
		}
		if (spool_open(cli->cfg.spool_dir, 0, &sp, err, sizeof(err)) == -1) {
			if (errno == ENOENT && qa.cmd == QC_LIST) {
				rc = print_list(entries, qa.json);
				goto done;
			}
			cli_error("%s", err);
			rc = EXIT_FAILED;
			goto done;
		}
		if (spool_lock(sp, CLI_QUEUE_LOCK_WAIT_MS) == 0)
			break;
		spool_close(sp);
		sp = NULL;
	}
	if (sp == NULL) {
		cli_error("the spool %s is locked, but no daemon answers on its control socket",
		    cli->cfg.spool_dir);
		rc = EXIT_FAILED;
		goto done;
	}
	rc = offline_run(cli, &qa, sp);
done:
	spool_close(sp);
	json_decref(req);
	json_decref(entries);
	json_decref(status);
	return rc;
}
