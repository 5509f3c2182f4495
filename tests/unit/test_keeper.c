/*
 * test_keeper.c: the vault keeper (proxy/keeper.c) as a specification. A
 * keeper loop runs in a child process over a real key-file vault and audit
 * log; a credstore connected to it (credstore_connect) gets the same
 * answers the local one gives (resolve, info, fetch, rotate, views, audit
 * appends). Then malformed requests, one per fresh keeper: each
 * is refused with a log line and exit status IPC_EXIT_FATAL, no reply (so
 * no secret) goes back, and the keeper never dies of a signal.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "audit.h"
#include "credential.h"
#include "ipc.h"
#include "keeper.h"
#include "log.h"
#include "util.h"

#define ERRLEN		512
#define ACCOUNT		"team@example.com"
#define ALIAS		"alias@example.com"
#define SECRET_OLD	"oldsecretpassword"
#define SECRET_NEW	"newsecretpassword"
#define LOG_MAX		8192
#define WAIT_MS		5000

static const unsigned char test_key[VAULT_KEY_BYTES] = {
	1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16,
	17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31, 32
};

struct fixture {
	char	dir[PATH_MAX];
	char	vault[PATH_MAX];
	char	audit[PATH_MAX];
};

static struct fixture fx;

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
	char err[ERRLEN], tmpl[] = "/tmp/smtpvault-keeper.XXXXXX";

	if (sodium_init() == -1 || mkdtemp(tmpl) == NULL)
		return -1;
	strlcpy(fx.dir, tmpl, sizeof(fx.dir));
	if ((size_t)snprintf(fx.vault, sizeof(fx.vault), "%s/vault", tmpl) >= sizeof(fx.vault) ||
	    (size_t)snprintf(fx.audit, sizeof(fx.audit), "%s/audit.log", tmpl) >=
	    sizeof(fx.audit))
		return -1;
	keysrc(&src);
	if (vault_create(fx.vault, &src, VAULT_KDF_MODERATE, err, sizeof(err)) == -1 ||
	    vault_open(fx.vault, &src, 1, &v, err, sizeof(err)) == -1)
		return -1;
	memset(&t, 0, sizeof(t));
	strlcpy(t.address, ACCOUNT, sizeof(t.address));
	strlcpy(t.aliases[0], ALIAS, sizeof(t.aliases[0]));
	t.n_aliases = 1;
	t.upstream_tls = -1;
	if (vault_account_add(v, &t, (const unsigned char *)SECRET_OLD, strlen(SECRET_OLD),
	    1700000000, err, sizeof(err)) == -1 || vault_save(v, err, sizeof(err)) == -1)
		return -1;
	vault_close(v);
	vault_keysrc_wipe(&src);
	return 0;
}

static int
teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx.dir);
	return system(cmd) == 0 ? 0 : -1;
}

/*
 * Fork a keeper over the fixture's vault with two channels: the first with
 * the daemon's rules (its close ends the keeper), the second, when rules is
 * not NULL, with those rules under the name peer. Its log goes to *logfd.
 */
static pid_t
keeper_fork_with(const struct ipc_rule *rules, size_t n_rules, const char *const *events,
    const char *peer, int *fd,
    int *fd2, int *logfd)
{
	struct vault_keysrc src;
	unsigned char key[VAULT_KEY_BYTES];
	struct credstore *cs;
	struct vault *v = NULL;
	struct audit *a;
	char err[ERRLEN];
	int sv[2], sv2[2] = { -1, -1 };
	pid_t pid;

	assert_int_equal(ipc_socketpair(sv), 0);
	if (rules != NULL)
		assert_int_equal(ipc_socketpair(sv2), 0);
	*logfd = memfd_create("keeper-log", MFD_CLOEXEC);
	assert_true(*logfd >= 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(sv[0]);
		if (rules != NULL)
			close(sv2[0]);
		dup2(*logfd, STDERR_FILENO);
		log_init("keeper", 0);
		keysrc(&src);
		if (vault_open(fx.vault, &src, 0, &v, err, sizeof(err)) == -1)
			_exit(90);
		vault_keysrc_wipe(&src);
		cs = credstore_new(v);
		if (cs == NULL || credstore_audit_key(cs, key) == -1)
			_exit(91);
		if ((a = audit_open(fx.audit, key, err, sizeof(err))) == NULL)
			_exit(92);
		credstore_set_audit(cs, a);
		{
			const struct keeper_channel ch[2] = {
				{ sv[1], "daemon", keeper_rules_daemon, keeper_n_rules_daemon, NULL },
				{ sv2[1], peer, rules, n_rules, events },
			};

			keeper_serve(ch, rules != NULL ? 2 : 1, cs, a);
		}
	}
	close(sv[1]);
	*fd = sv[0];
	if (rules != NULL) {
		close(sv2[1]);
		*fd2 = sv2[0];
	}
	return pid;
}

static pid_t
keeper_fork(int *fd, int *logfd)
{
	return keeper_fork_with(NULL, 0, NULL, NULL, fd, NULL, logfd);
}

static int
keeper_wait(pid_t pid, int logfd, char *log, size_t loglen)
{
	ssize_t n;
	int st;

	assert_int_equal(waitpid(pid, &st, 0), pid);
	n = pread(logfd, log, loglen - 1, 0);
	log[n > 0 ? n : 0] = '\0';
	close(logfd);
	return st;
}

static void
test_keeper_answers_like_the_vault(void **state)
{
	struct cred_account_view view;
	struct vault_secret s = { NULL, 0 };
	struct cred_info ci;
	struct cred c;
	struct credstore *cs;
	struct audit *fw;
	char acct[VAULT_ADDR_MAX], err[ERRLEN], log[LOG_MAX];
	uint32_t version = 0;
	json_t *ev, *batch[3];
	char reason[32];
	uint8_t *text;
	const uint8_t *b0, *b2;
	size_t written, len, i, lines;
	int fd, logfd, st;
	pid_t pid;

	pid = keeper_fork(&fd, &logfd);
	assert_non_null(cs = credstore_connect(fd));
	assert_int_equal(credstore_resolve(cs, ALIAS, acct, sizeof(acct)), CRED_OK);
	assert_string_equal(acct, ACCOUNT);
	assert_int_equal(credstore_resolve(cs, "nobody@example.com", acct, sizeof(acct)),
	    CRED_PERMFAIL);
	assert_int_equal(credstore_info(cs, ACCOUNT, &ci), CRED_OK);
	assert_string_equal(ci.address, ACCOUNT);
	assert_int_equal(ci.version, 1);
	assert_int_equal(ci.upstream_tls, -1);
	assert_int_equal(credstore_fetch(cs, ACCOUNT, &c), CRED_OK);
	assert_int_equal(c.secret.len, strlen(SECRET_OLD));
	assert_memory_equal(c.secret.buf, SECRET_OLD, c.secret.len);
	cred_wipe(&c);
	assert_int_equal(credstore_account_count(cs), 1);
	assert_int_equal(credstore_account_view(cs, 0, &view), 0);
	assert_int_equal(view.n_aliases, 1);
	assert_string_equal(view.aliases[0], ALIAS);
	assert_int_equal(credstore_account_view(cs, 1, &view), -1);
	assert_int_equal(credstore_healthy(cs, err, sizeof(err)), 0);
	/* The audit key stays in the keeper. */
	assert_int_equal(credstore_audit_key(cs, (unsigned char *)err), -1);

	/* A rotation: the secret goes in, a version comes back. */
	assert_int_equal(vault_secret_set(&s, (const unsigned char *)SECRET_NEW,
	    strlen(SECRET_NEW)), 0);
	assert_int_equal(credstore_account_rotate(cs, ACCOUNT, &s, "admin:test", "127.0.0.1",
	    &version, err, sizeof(err)), CRED_ADMIN_OK);
	vault_secret_wipe(&s);
	assert_int_equal(version, 2);
	assert_int_equal(credstore_fetch(cs, ACCOUNT, &c), CRED_OK);
	assert_memory_equal(c.secret.buf, SECRET_NEW, c.secret.len);
	cred_wipe(&c);
	assert_int_equal(credstore_account_rollback(cs, "nobody@example.com", "admin:test",
	    NULL, &version, err, sizeof(err)), CRED_ADMIN_NOT_FOUND);
	assert_string_equal(err, "no account nobody@example.com");

	/* Admin logins: test_keeper_admin.c. */

	/* Audit events go to the keeper's log. */
	assert_non_null(fw = credstore_audit_forwarder(cs));
	ev = audit_reject_event("10.0.0.1", "lan", "test", NULL);
	assert_non_null(ev);
	assert_int_equal(audit_append(fw, ev, err, sizeof(err)), 0);
	json_decref(ev);
	assert_int_equal(credstore_admin_audit(cs, AUDIT_ADMIN_LOGIN, "alice", "127.0.0.1",
	    NULL, err, sizeof(err)), 0);
	/* A batch: one request, several lines, in order. */
	for (i = 0; i < 3; i++) {
		snprintf(reason, sizeof(reason), "batch %zu", i);
		assert_non_null(batch[i] = audit_reject_event("10.0.0.2", "lan", reason, NULL));
	}
	assert_int_equal(audit_append_many(fw, batch, 3, &written, err, sizeof(err)), 0);
	assert_int_equal(written, 3);
	for (i = 0; i < 3; i++)
		json_decref(batch[i]);
	audit_close(fw);

	/* Closing the channel ends the keeper cleanly. */
	credstore_free(cs);
	st = keeper_wait(pid, logfd, log, sizeof(log));
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
	assert_non_null(strstr(log, "event=keeper_exit"));
	assert_int_equal(file_read_all(fx.audit, 1024 * 1024, &text, &len), 0);
	for (i = 0, lines = 0; i < len; i++)
		lines += text[i] == '\n';
	assert_int_equal(lines, 6);	/* rotate, reject, login, the batch of 3 */
	assert_non_null(b0 = memmem(text, len, "batch 0", 7));
	assert_non_null(b2 = memmem(text, len, "batch 2", 7));
	assert_true(b0 < b2);
	free(text);
}

/* A raw request: header + payload as given. */
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
test_keeper_refuses_malformed_requests(void **state)
{
	static const struct {
		const char	*name;
		uint16_t	 type;
		const char	*payload;
		size_t		 len;
		const char	*why;
	} cases[] = {
		{ "nul in a string", KEEPER_FETCH, "\0\5team\0", 7, "malformed payload" },
		{ "string longer than the record", KEEPER_FETCH, "\0\50team", 6,
		    "malformed payload" },
		{ "trailing bytes", KEEPER_RESOLVE, "\0\1axx", 5, "malformed payload" },
		{ "empty where a string must be", KEEPER_INFO, "", 0, "outside" },
		{ "ok flag not 0 or 1", KEEPER_REPORT_AUTH,
		    "\0\1a\0\0\0\1\0\0\0\2\0\0", 13, "malformed payload" },
		{ "view index of the wrong size", KEEPER_VIEW, "\0\0\0\0", 4, "outside" },
		{ "not JSON", KEEPER_AUDIT_APPEND, "{{{", 3, "not an audit event" },
		{ "forged chain fields", KEEPER_AUDIT_APPEND,
		    "{\"event\":\"x\",\"mac\":\"00\"}", 24, "not an audit event" },
		{ "a batch with a bad line", KEEPER_AUDIT_APPEND,
		    "{\"event\":\"x\"}\n{{{", 17, "not an audit event" },
		{ "a batch with an empty line", KEEPER_AUDIT_APPEND,
		    "{\"event\":\"x\"}\n\n{\"event\":\"y\"}", 28, "not an audit event" },
		{ "a batch that ends in a newline", KEEPER_AUDIT_APPEND,
		    "{\"event\":\"x\"}\n", 14, "not an audit event" },
		{ "a reply sent to the keeper", KEEPER_FETCH | KEEPER_REPLY, "", 0,
		    "unexpected type" },
		{ "the keeper's own READY", KEEPER_READY, "", 0, "unexpected type" },
		{ "unknown type", 999, "", 0, "unexpected type 999" },
		{ "rotate without a secret", KEEPER_ROTATE,
		    "\0\20team@example.com\0\0\0\1a\0\0", 24, "malformed payload" },
	};
	unsigned char b[256], junk[64];
	char log[LOG_MAX];
	struct pollfd pfd;
	size_t i, n;
	int fd, logfd, st;
	pid_t pid;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pid = keeper_fork(&fd, &logfd);
		n = rec(b, cases[i].type, 0, cases[i].payload, cases[i].len);
		assert_int_equal(send(fd, b, n, MSG_NOSIGNAL), (ssize_t)n);
		st = keeper_wait(pid, logfd, log, sizeof(log));
		if (!WIFEXITED(st) || WEXITSTATUS(st) != IPC_EXIT_FATAL)
			fail_msg("%s: status 0x%x, log: %s", cases[i].name, st, log);
		if (strstr(log, "event=ipc_refused") == NULL ||
		    strstr(log, cases[i].why) == NULL)
			fail_msg("%s: log: %s", cases[i].name, log);
		/* Nothing came back: EOF at once. */
		pfd.fd = fd;
		pfd.events = POLLIN;
		assert_int_equal(poll(&pfd, 1, WAIT_MS), 1);
		assert_int_equal(recv(fd, junk, sizeof(junk), 0), 0);
		close(fd);
	}
	/* An fd where none belongs. */
	pid = keeper_fork(&fd, &logfd);
	n = rec(b, KEEPER_FETCH, IPC_FLAG_FD, "\0\1a", 3);
	{
		union {
			struct cmsghdr	hdr;
			unsigned char	buf[CMSG_SPACE(sizeof(int))];
		} cbuf;
		struct msghdr msg;
		struct iovec iov = { b, n };
		struct cmsghdr *cm;
		int passfd = STDIN_FILENO;

		memset(&msg, 0, sizeof(msg));
		memset(&cbuf, 0, sizeof(cbuf));
		msg.msg_iov = &iov;
		msg.msg_iovlen = 1;
		msg.msg_control = cbuf.buf;
		msg.msg_controllen = sizeof(cbuf.buf);
		cm = CMSG_FIRSTHDR(&msg);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &passfd, sizeof(int));
		assert_int_equal(sendmsg(fd, &msg, MSG_NOSIGNAL), (ssize_t)n);
	}
	st = keeper_wait(pid, logfd, log, sizeof(log));
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), IPC_EXIT_FATAL);
	assert_non_null(strstr(log, "an fd where none belongs"));
	close(fd);
}

/*
 * Each process's channel allows only what that process needs: a request
 * outside its table, however well formed, ends the keeper with a log line
 * naming the channel, and nothing (above all no credential) comes back.
 */
static void
test_keeper_channel_rules(void **state)
{
	static const char fetch[] = "\0\20" ACCOUNT;
	static const struct {
		const char		*peer;
		const struct ipc_rule	*rules;
		const size_t		*n_rules;
		uint16_t		 allowed;	/* answered first */
		uint16_t		 refused;
	} cases[] = {
		{ "smtp", keeper_rules_smtp, &keeper_n_rules_smtp, KEEPER_RESOLVE, KEEPER_FETCH },
		{ "smtp", keeper_rules_smtp, &keeper_n_rules_smtp, KEEPER_RESOLVE, KEEPER_INFO },
		{ "admin", keeper_rules_admin, &keeper_n_rules_admin, KEEPER_INFO, KEEPER_FETCH },
		{ "relay", keeper_rules_relay, &keeper_n_rules_relay, KEEPER_FETCH,
		    KEEPER_RESOLVE },
		{ "queue-io", keeper_rules_audit, &keeper_n_rules_audit, 0, KEEPER_FETCH },
	};
	unsigned char b[256], *rbuf;
	char log[LOG_MAX], err[ERRLEN], want[64];
	const struct ipc_rule reply = { 0, 0, KEEPER_REPLY_MAX, IPC_FD_NONE };
	struct ipc_rule r;
	struct ipc_msg m;
	struct pollfd pfd;
	size_t i, n;
	int fd, fd2, logfd, st;
	pid_t pid;

	assert_non_null(rbuf = malloc(IPC_MSG_MAX));
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pid = keeper_fork_with(cases[i].rules, *cases[i].n_rules, NULL, cases[i].peer, &fd,
		    &fd2, &logfd);
		if (cases[i].allowed != 0) {
			r = reply;
			r.type = (uint16_t)(cases[i].allowed | KEEPER_REPLY);
			assert_int_equal(ipc_send_sync(fd2, cases[i].allowed, 1, -1, fetch,
			    sizeof(fetch) - 1, err, sizeof(err)), 0);
			assert_int_equal(ipc_recv_sync(fd2, &r, 1, rbuf, IPC_MSG_MAX, &m, err,
			    sizeof(err)), 0);
			sodium_memzero(rbuf, IPC_MSG_MAX);
		}
		n = rec(b, cases[i].refused, 0, fetch, sizeof(fetch) - 1);
		assert_int_equal(send(fd2, b, n, MSG_NOSIGNAL), (ssize_t)n);
		st = keeper_wait(pid, logfd, log, sizeof(log));
		if (!WIFEXITED(st) || WEXITSTATUS(st) != IPC_EXIT_FATAL)
			fail_msg("%s type %u: status 0x%x, log: %s", cases[i].peer,
			    cases[i].refused, st, log);
		snprintf(want, sizeof(want), "peer=%s error=\"unexpected type %u\"",
		    cases[i].peer, cases[i].refused);
		if (strstr(log, "event=keeper_fatal") == NULL || strstr(log, want) == NULL)
			fail_msg("%s: log: %s", cases[i].peer, log);
		/* Nothing came back: EOF at once. */
		pfd.fd = fd2;
		pfd.events = POLLIN;
		assert_int_equal(poll(&pfd, 1, WAIT_MS), 1);
		assert_int_equal(recv(fd2, b, sizeof(b), 0), 0);
		close(fd);
		close(fd2);
	}
	free(rbuf);
}

/*
 * Each channel may write only its own process's audit events: a front end
 * that appends a "message" (or any event but "reject") ends the keeper, and
 * nothing of its batch reaches the log, so a compromised front end cannot
 * forge a delivery or an admin login in the chain.
 */
static void
test_keeper_audit_events_per_channel(void **state)
{
	static const struct {
		const char		*peer;
		const struct ipc_rule	*rules;
		const size_t		*n_rules;
		const char *const	*events;
		const char		*allowed;	/* appended first */
		const char		*refused;
	} cases[] = {
		{ "smtp", keeper_rules_smtp, &keeper_n_rules_smtp, keeper_audit_events_smtp,
		    "{\"event\":\"reject\",\"reason\":\"ok-smtp\"}",
		    "{\"event\":\"message\",\"status\":\"delivered\",\"queue_id\":\"forged-1\"}" },
		{ "smtp", keeper_rules_smtp, &keeper_n_rules_smtp, keeper_audit_events_smtp,
		    NULL, "{\"event\":\"admin\",\"user\":\"forged-2\"}" },
		{ "smtp", keeper_rules_smtp, &keeper_n_rules_smtp, keeper_audit_events_smtp,
		    NULL, "{\"event\":\"reject\",\"reason\":\"forged-3\"}\n"
		    "{\"event\":\"vault\",\"by\":\"forged-3\"}" },
		{ "relay", keeper_rules_relay, &keeper_n_rules_relay, keeper_audit_events_relay,
		    "{\"event\":\"message\",\"queue_id\":\"ok-relay\"}",
		    "{\"event\":\"account\",\"by\":\"forged-4\"}" },
		{ "queue-io", keeper_rules_audit, &keeper_n_rules_audit, keeper_audit_events_relay,
		    "{\"event\":\"message\",\"queue_id\":\"ok-queue\"}",
		    "{\"event\":\"reject\",\"reason\":\"forged-5\"}" },
	};
	const struct ipc_rule reply = { KEEPER_AUDIT_APPEND | KEEPER_REPLY, 0, KEEPER_REPLY_MAX,
	    IPC_FD_NONE };
	unsigned char *rbuf;
	char log[LOG_MAX], err[ERRLEN];
	uint8_t *text;
	struct ipc_msg m;
	struct ipc_rd r;
	struct pollfd pfd;
	size_t i, len;
	int fd, fd2, logfd, st;
	pid_t pid;

	assert_non_null(rbuf = malloc(IPC_MSG_MAX));
	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pid = keeper_fork_with(cases[i].rules, *cases[i].n_rules, cases[i].events,
		    cases[i].peer, &fd, &fd2, &logfd);
		if (cases[i].allowed != NULL) {
			assert_int_equal(ipc_send_sync(fd2, KEEPER_AUDIT_APPEND, 1, -1,
			    cases[i].allowed, strlen(cases[i].allowed), err, sizeof(err)), 0);
			assert_int_equal(ipc_recv_sync(fd2, &reply, 1, rbuf, IPC_MSG_MAX, &m, err,
			    sizeof(err)), 0);
			r = (struct ipc_rd){ m.data, m.len, 0, 0 };
			assert_int_equal(ipc_get_u32(&r), 0);
		}
		assert_int_equal(ipc_send_sync(fd2, KEEPER_AUDIT_APPEND, 2, -1, cases[i].refused,
		    strlen(cases[i].refused), err, sizeof(err)), 0);
		/* No answer: the channel closes (a keeper that took it would hang
		 * this test in keeper_wait()). */
		pfd.fd = fd2;
		pfd.events = POLLIN;
		if (poll(&pfd, 1, WAIT_MS) != 1 || recv(fd2, rbuf, IPC_MSG_MAX, 0) != 0) {
			kill(pid, SIGKILL);
			fail_msg("%s case %zu: the keeper took the event", cases[i].peer, i);
		}
		st = keeper_wait(pid, logfd, log, sizeof(log));
		if (!WIFEXITED(st) || WEXITSTATUS(st) != IPC_EXIT_FATAL)
			fail_msg("%s case %zu: status 0x%x, log: %s", cases[i].peer, i, st, log);
		if (strstr(log, "may not write") == NULL)
			fail_msg("%s case %zu: log: %s", cases[i].peer, i, log);
		close(fd);
		close(fd2);
	}
	free(rbuf);
	assert_int_equal(file_read_all(fx.audit, 1024 * 1024, &text, &len), 0);
	assert_non_null(memmem(text, len, "ok-smtp", 7));
	assert_non_null(memmem(text, len, "ok-relay", 8));
	assert_non_null(memmem(text, len, "ok-queue", 8));
	assert_null(memmem(text, len, "forged-", 7));
	free(text);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keeper_answers_like_the_vault),
		cmocka_unit_test(test_keeper_refuses_malformed_requests),
		cmocka_unit_test(test_keeper_channel_rules),
		cmocka_unit_test(test_keeper_audit_events_per_channel),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
