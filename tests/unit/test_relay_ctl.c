/*
 * test_relay_ctl.c: the admin <-> relay control link (proxy/relay_ctl.c) as
 * a specification. A relay with relay_ctl_new() serving its end of a
 * socketpair runs in a child process; the admin's client in this process
 * asks every question over the wire and must get what the relay's own
 * (local) answers are: in direct mode empty figures, no listing, no holds,
 * a retry or delete of nothing refused, the message counters of the relay
 * process; in queue mode the spooled messages (recipients cut at
 * RELAY_CTL_RCPTS_MAX, "rcpt_count" all), per-account figures, a retry and a
 * delete answered once the files are gone. Then malformed requests, one per
 * fresh relay: each ends the relay with IPC_EXIT_FATAL and a log line, and
 * nothing comes back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>
#include <sodium.h>

#include "config.h"
#include "credential.h"
#include "ipc.h"
#include "log.h"
#include "metrics.h"
#include "relay.h"
#include "relay_ctl.h"
#include "util.h"

#define ERRLEN		512
#define ACCOUNT		"team@example.com"
#define LOG_MAX		8192
#define WAIT_MS		5000
#define RCPTS		(RELAY_CTL_RCPTS_MAX + 5)

static const unsigned char test_key[VAULT_KEY_BYTES] = { 7, 7, 7, 7, 7, 7, 7, 7 };

static char dir[PATH_MAX], vaultfile[PATH_MAX + 16], spool_path[PATH_MAX + 16];

static void
keysrc(struct vault_keysrc *src)
{
	src->is_keyfile = 1;
	src->len = VAULT_KEY_BYTES;
	src->material = sodium_malloc(VAULT_KEY_BYTES);
	assert_non_null(src->material);
	memcpy(src->material, test_key, VAULT_KEY_BYTES);
}

static int
setup(void **state)
{
	struct vault_keysrc src;
	struct vault_account t;
	struct vault *v = NULL;
	char err[ERRLEN], tmpl[] = "/tmp/smtpvault-relayctl.XXXXXX";

	if (sodium_init() == -1 || mkdtemp(tmpl) == NULL)
		return -1;
	strlcpy(dir, tmpl, sizeof(dir));
	snprintf(vaultfile, sizeof(vaultfile), "%s/vault", dir);
	snprintf(spool_path, sizeof(spool_path), "%s/spool", dir);
	keysrc(&src);
	if (vault_create(vaultfile, &src, VAULT_KDF_MODERATE, err, sizeof(err)) == -1 ||
	    vault_open(vaultfile, &src, 1, &v, err, sizeof(err)) == -1)
		return -1;
	memset(&t, 0, sizeof(t));
	strlcpy(t.address, ACCOUNT, sizeof(t.address));
	t.upstream_tls = -1;
	if (vault_account_add(v, &t, (const unsigned char *)"secretsecret", 12, 1700000000,
	    err, sizeof(err)) == -1 || vault_save(v, err, sizeof(err)) == -1)
		return -1;
	vault_close(v);
	vault_keysrc_wipe(&src);
	return 0;
}

static int
teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* One message for ACCOUNT with RCPTS recipients, or the one given. */
static struct relay_msg *
msg_new(const char *id)
{
	struct relay_msg *m = calloc(1, sizeof(*m));
	size_t i;

	assert_non_null(m);
	strlcpy(m->queue_id, id, sizeof(m->queue_id));
	strlcpy(m->account, ACCOUNT, sizeof(m->account));
	strlcpy(m->mail_from, "sender@lan.test", sizeof(m->mail_from));
	assert_non_null(m->rcpts = calloc(RCPTS, sizeof(*m->rcpts)));
	for (i = 0; i < RCPTS; i++)
		snprintf(m->rcpts[i], sizeof(m->rcpts[i]), "rcpt%zu@example.net", i);
	m->n_rcpts = RCPTS;
	assert_non_null(m->data = evbuffer_new());
	evbuffer_add_printf(m->data, "Subject: test\r\n\r\nhello\r\n");
	strlcpy(m->client_ip, "127.0.0.1", sizeof(m->client_ip));
	return m;
}

static void
submitted(void *arg, const struct relay_result *res)
{
	int *code = arg;

	*code = res->code;
}

/*
 * The relay process: a relay in direct or queue mode (messages spooled
 * first, against an upstream that refuses connections), serving fd.
 */
static void __attribute__((noreturn))
relay_child(int fd, int queue, int logfd)
{
	static const char ini[] =
	    "[vault]\npath = %s\n[smtp]\nhostname = relay.test\ndelivery = %s\n"
	    "spool_dir = %s\n[upstream]\nhost = 127.0.0.1\nport = 1\n"
	    "retry_schedule = 1h\n";
	struct vault_keysrc src;
	struct relay_result res;
	struct credstore *cs;
	struct event_base *base;
	struct relay_ctl *ctl;
	struct relay *r;
	struct vault *v = NULL;
	struct config cfg;
	char text[3 * PATH_MAX], err[ERRLEN];
	int code[2] = { 0, 0 };

	dup2(logfd, STDERR_FILENO);
	log_init("relay", 0);
	snprintf(text, sizeof(text), ini, vaultfile, queue ? "queue" : "direct", spool_path);
	memset(&cfg, 0, sizeof(cfg));
	keysrc(&src);
	if (config_parse("t.conf", text, &cfg, err, sizeof(err)) != 0 ||
	    vault_open(vaultfile, &src, 0, &v, err, sizeof(err)) == -1 ||
	    (cs = credstore_new(v)) == NULL || (base = event_base_new()) == NULL ||
	    (r = relay_new(base, &cfg, cs)) == NULL) {
		fprintf(stderr, "relay_child: %s\n", err);
		_exit(90);
	}
	relay_set_audit(r, NULL, NULL);
	/* Counters of the relay process: the client must see these. */
	metrics_message(ACCOUNT, METRICS_DELIVERED);
	metrics_message(ACCOUNT, METRICS_DELIVERED);
	metrics_message("other@example.com", METRICS_FAILED);
	metrics_auth_failure(ACCOUNT);
	if (queue) {
		if (relay_submit(r, msg_new("AAAA1"), submitted, &code[0], &res) == -1 ||
		    relay_submit(r, msg_new("AAAA2"), submitted, &code[1], &res) == -1)
			_exit(91);
		while (code[0] == 0 || code[1] == 0)
			event_base_loop(base, EVLOOP_ONCE);
		if (code[0] != 250 || code[1] != 250)
			_exit(92);
	}
	if ((ctl = relay_ctl_new(base, fd, r)) == NULL)
		_exit(93);
	event_base_dispatch(base);
	_exit(0);
}

static pid_t
relay_fork(int queue, int *fd, int *logfd)
{
	int sv[2];
	pid_t pid;

	assert_int_equal(ipc_socketpair(sv), 0);
	*logfd = memfd_create("relay-log", MFD_CLOEXEC);
	assert_true(*logfd >= 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(sv[0]);
		relay_child(sv[1], queue, *logfd);
	}
	close(sv[1]);
	*fd = sv[0];
	return pid;
}

static int
relay_wait(pid_t pid, int logfd, int kill_it, char *log, size_t loglen)
{
	ssize_t n;
	int st;

	if (kill_it)
		kill(pid, SIGKILL);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	n = pread(logfd, log, loglen - 1, 0);
	log[n > 0 ? n : 0] = '\0';
	close(logfd);
	return st;
}

/* ---- Answers -------------------------------------------------------------- */

struct got {
	json_t			*entries;
	struct relay_ctl_hold	 holds[4];
	size_t			 n_holds;
	struct relay_ctl_counts	 counts[4];
	size_t			 n_counts;
	int			 deleted, rc, error;
};

static void
got_entry(void *arg, json_t *entry)
{
	struct got *g = arg;

	assert_int_equal(json_array_append_new(g->entries, entry), 0);
}

static void
got_hold(void *arg, const struct relay_ctl_hold *h)
{
	struct got *g = arg;

	assert_true(g->n_holds < 4);
	g->holds[g->n_holds++] = *h;
}

static void
got_counts(void *arg, const struct relay_ctl_counts *n)
{
	struct got *g = arg;

	assert_true(g->n_counts < 4);
	g->counts[g->n_counts++] = *n;
}

static void
got_deleted(void *arg, int rc, int error)
{
	struct got *g = arg;

	g->deleted++;
	g->rc = rc;
	g->error = error;
}

static void
never_called(void *arg, int rc, int error)
{
	fail_msg("a cancelled delete was answered");
}

static void
wait_deleted(struct event_base *base, struct got *g, int n)
{
	int i;

	for (i = 0; i < 500 && g->deleted < n; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(2000);
	assert_int_equal(g->deleted, n);
}

static void
test_direct_mode_answers_empty(void **state)
{
	struct upstream_pool_stats ps;
	struct relay_ctl_client *c;
	struct event_base *base;
	struct queue_stats st;
	struct got g;
	char log[LOG_MAX];
	int fd, logfd, trunc = 7;
	pid_t pid;
	size_t i;

	pid = relay_fork(0, &fd, &logfd);
	assert_non_null(base = event_base_new());
	assert_non_null(c = relay_ctl_client_connect(base, fd));
	memset(&g, 0, sizeof(g));
	assert_non_null(g.entries = json_array());

	assert_int_equal(relay_ctl_stats(c, &st), RELAY_CTL_DIRECT);
	assert_int_equal(st.messages, 0);
	assert_int_equal(relay_ctl_list(c, RELAY_CTL_LIST_MAX, got_entry, &g, &trunc), 0);
	assert_int_equal(trunc, 0);
	relay_ctl_holds(c, got_hold, &g);
	assert_int_equal(g.n_holds, 0);
	memset(&ps, 0xff, sizeof(ps));
	relay_ctl_pool(c, ACCOUNT, &ps);
	assert_int_equal(ps.sessions, 0);
	assert_int_equal(ps.connects, 0);
	assert_int_equal(relay_ctl_retry(c, "AAAA1"), -1);
	assert_int_equal(relay_ctl_retry(c, "not an id"), -1);

	/* The relay process's counters, not this one's (all zero here). */
	relay_ctl_metrics(c, got_counts, &g);
	assert_int_equal(g.n_counts, 2);
	for (i = 0; i < g.n_counts; i++) {
		if (strcmp(g.counts[i].account, ACCOUNT) == 0) {
			assert_int_equal(g.counts[i].messages[METRICS_DELIVERED], 2);
			assert_int_equal(g.counts[i].messages[METRICS_FAILED], 0);
			assert_int_equal(g.counts[i].auth_failures, 1);
		} else {
			assert_string_equal(g.counts[i].account, "other@example.com");
			assert_int_equal(g.counts[i].messages[METRICS_FAILED], 1);
		}
	}

	/* A delete in direct mode: answered later, "no such message". */
	assert_int_equal(relay_ctl_delete(c, "AAAA1", "admin:test (127.0.0.1)", got_deleted,
	    &g), 0);
	assert_int_equal(g.deleted, 0);
	wait_deleted(base, &g, 1);
	assert_int_equal(g.rc, RELAY_CTL_NO_SUCH);
	/* Its answer may arrive in the middle of another call. */
	assert_int_equal(relay_ctl_delete(c, "AAAA2", "admin:test", got_deleted, &g), 0);
	assert_int_equal(relay_ctl_stats(c, &st), RELAY_CTL_DIRECT);
	wait_deleted(base, &g, 2);
	/* A cancelled one is never answered. */
	assert_int_equal(relay_ctl_delete(c, "AAAA3", "admin:test", never_called, &g), 0);
	relay_ctl_delete_cancel(c, &g);
	assert_int_equal(relay_ctl_stats(c, &st), RELAY_CTL_DIRECT);
	for (i = 0; i < 20; i++)
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), usleep(2000);

	json_decref(g.entries);
	relay_ctl_client_free(c);
	event_base_free(base);
	(void)relay_wait(pid, logfd, 1, log, sizeof(log));
}

static void
test_queue_mode_lists_retries_and_deletes(void **state)
{
	struct relay_ctl_client *c;
	struct event_base *base;
	struct queue_stats st;
	json_t *e;
	struct got g;
	char log[LOG_MAX];
	int fd, logfd, trunc = 7;
	pid_t pid;

	pid = relay_fork(1, &fd, &logfd);
	assert_non_null(base = event_base_new());
	assert_non_null(c = relay_ctl_client_connect(base, fd));
	memset(&g, 0, sizeof(g));
	assert_non_null(g.entries = json_array());

	assert_int_equal(relay_ctl_stats(c, &st), RELAY_CTL_QUEUE);
	if (st.messages != 2) {
		(void)relay_wait(pid, logfd, 1, log, sizeof(log));
		fail_msg("messages %zu; relay log: %s", st.messages, log);
	}
	assert_int_equal(relay_ctl_list(c, RELAY_CTL_LIST_MAX, got_entry, &g, &trunc), 2);
	assert_int_equal(trunc, 0);
	e = json_array_get(g.entries, 0);
	assert_string_equal(json_string_value(json_object_get(e, "id")), "AAAA1");
	assert_string_equal(json_string_value(json_object_get(e, "account")), ACCOUNT);
	assert_int_equal(json_array_size(json_object_get(e, "rcpts")), RELAY_CTL_RCPTS_MAX);
	assert_int_equal(json_integer_value(json_object_get(e, "rcpt_count")), RCPTS);
	/* A bounded listing says it was cut. */
	json_array_clear(g.entries);
	assert_int_equal(relay_ctl_list(c, 1, got_entry, &g, &trunc), 1);
	assert_int_equal(trunc, 1);

	relay_ctl_holds(c, got_hold, &g);
	assert_int_equal(g.n_holds, 1);
	assert_string_equal(g.holds[0].account, ACCOUNT);
	assert_int_equal(g.holds[0].queued, 2);

	assert_int_equal(relay_ctl_retry(c, "AAAA1"), 0);
	assert_int_equal(relay_ctl_retry(c, "ZZZZ9"), -1);

	assert_int_equal(relay_ctl_delete(c, "AAAA2", "admin:test (127.0.0.1)", got_deleted,
	    &g), 0);
	wait_deleted(base, &g, 1);
	assert_int_equal(g.rc, RELAY_CTL_DELETED);
	assert_int_equal(relay_ctl_delete(c, "AAAA2", "admin:test", got_deleted, &g), 0);
	wait_deleted(base, &g, 2);
	assert_int_equal(g.rc, RELAY_CTL_NO_SUCH);
	json_array_clear(g.entries);
	assert_int_equal(relay_ctl_list(c, RELAY_CTL_LIST_MAX, got_entry, &g, &trunc), 1);

	json_decref(g.entries);
	relay_ctl_client_free(c);
	event_base_free(base);
	(void)relay_wait(pid, logfd, 1, log, sizeof(log));
}

/* ---- Malformed requests ------------------------------------------------------- */

static size_t
rec(unsigned char *b, uint16_t type, uint8_t flags, const void *p, size_t len)
{
	b[0] = IPC_VERSION;
	b[1] = flags;
	b[2] = (unsigned char)(type >> 8);
	b[3] = (unsigned char)type;
	memset(b + 4, 0, 4);
	b[8] = (unsigned char)(len >> 24);
	b[9] = (unsigned char)(len >> 16);
	b[10] = (unsigned char)(len >> 8);
	b[11] = (unsigned char)len;
	memcpy(b + IPC_HDR_LEN, p, len);
	return IPC_HDR_LEN + len;
}

static void
test_relay_refuses_malformed_requests(void **state)
{
	static const struct {
		const char	*name;
		uint16_t	 type;
		const char	*payload;
		size_t		 len;
		const char	*why;
	} cases[] = {
		{ "stats with a payload", RELAY_CTL_STATS, "x", 1, "outside" },
		{ "list of more than the page shows", RELAY_CTL_LIST, "\0\0\2\1", 4,
		    "malformed payload" },
		{ "list count cut", RELAY_CTL_LIST, "\0\1", 2, "outside" },
		{ "pool: string longer than the record", RELAY_CTL_POOL, "\0\50team", 6,
		    "malformed payload" },
		{ "pool: NUL in the account", RELAY_CTL_POOL, "\0\5te\0am", 7,
		    "malformed payload" },
		{ "retry: trailing bytes", RELAY_CTL_RETRY, "\0\1Axx", 5, "malformed payload" },
		{ "delete without who", RELAY_CTL_DELETE, "\0\2AB", 4, "malformed payload" },
		{ "an answer sent to the relay", RELAY_CTL_STATS | RELAY_CTL_REPLY, "", 0,
		    "unexpected type" },
		{ "a row sent to the relay", RELAY_CTL_LIST | RELAY_CTL_ROW, "{}", 2,
		    "unexpected type" },
		{ "unknown type", 999, "", 0, "unexpected type 999" },
	};
	unsigned char b[256], junk[64];
	char log[LOG_MAX];
	struct pollfd pfd;
	size_t i, n;
	int fd, logfd, st;
	pid_t pid;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pid = relay_fork(0, &fd, &logfd);
		n = rec(b, cases[i].type, 0, cases[i].payload, cases[i].len);
		assert_int_equal(send(fd, b, n, MSG_NOSIGNAL), (ssize_t)n);
		/* Nothing comes back: EOF once the relay is gone. */
		pfd.fd = fd;
		pfd.events = POLLIN;
		assert_int_equal(poll(&pfd, 1, WAIT_MS), 1);
		assert_int_equal(recv(fd, junk, sizeof(junk), 0), 0);
		st = relay_wait(pid, logfd, 0, log, sizeof(log));
		if (!WIFEXITED(st) || WEXITSTATUS(st) != IPC_EXIT_FATAL)
			fail_msg("%s: status 0x%x, log: %s", cases[i].name, st, log);
		if (strstr(log, "event=ipc_refused") == NULL || strstr(log, cases[i].why) == NULL)
			fail_msg("%s: log: %s", cases[i].name, log);
		close(fd);
	}
}

/* The client refuses what a relay must never send. */
static void
test_client_refuses_malformed_answers(void **state)
{
	static const struct {
		const char	*name;
		uint16_t	 type;
		const char	*payload;
		size_t		 len;
	} cases[] = {
		{ "stats answer cut", RELAY_CTL_STATS | RELAY_CTL_REPLY, "\0\0\0\0", 4 },
		{ "unknown mode", RELAY_CTL_STATS | RELAY_CTL_REPLY,
		    "\0\0\0\7" "\0\0\0\0\0\0\0\0" "\0\0\0\0\0\0\0\0" "\0\0\0\0\0\0\0\0"
		    "\0\0\0\0\0\0\0\0" "\0\0\0\0\0\0\0\0" "\0\0\0\0\0\0\0\0" "\0\0\0\0\0\0\0\0",
		    60 },
		{ "another request's answer", RELAY_CTL_POOL | RELAY_CTL_REPLY, "", 0 },
		{ "a delete nobody asked for", RELAY_CTL_DELETE | RELAY_CTL_REPLY,
		    "\0\0\0\0\0\0\0\0", 8 },
	};
	unsigned char b[256], req[IPC_MSG_MAX];
	struct queue_stats st;
	size_t i, n;
	int sv[2], status;
	pid_t pid;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		assert_int_equal(ipc_socketpair(sv), 0);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			struct event_base *base = event_base_new();
			struct relay_ctl_client *c;

			close(sv[1]);
			if (freopen("/dev/null", "w", stderr) == NULL)
				_exit(90);
			c = relay_ctl_client_connect(base, sv[0]);
			(void)relay_ctl_stats(c, &st);
			_exit(0);
		}
		close(sv[0]);
		/* The request, then the bad answer with its id. */
		assert_true(recv(sv[1], req, sizeof(req), 0) >= IPC_HDR_LEN);
		n = rec(b, cases[i].type, 0, cases[i].payload, cases[i].len);
		memcpy(b + 4, req + 4, 4);
		assert_int_equal(send(sv[1], b, n, MSG_NOSIGNAL), (ssize_t)n);
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != IPC_EXIT_FATAL)
			fail_msg("%s: status 0x%x", cases[i].name, status);
		close(sv[1]);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_direct_mode_answers_empty),
		cmocka_unit_test(test_queue_mode_lists_retries_and_deletes),
		cmocka_unit_test(test_relay_refuses_malformed_requests),
		cmocka_unit_test(test_client_refuses_malformed_answers),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
