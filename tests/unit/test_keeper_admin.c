/*
 * test_keeper_admin.c: the admin process's channel to the vault keeper
 * (keeper_rules_admin) as a specification. A keeper runs in a child process
 * over a real vault with one admin user; the admin side is a credstore
 * connected to the admin channel. An admin login is checked by the keeper
 * (KEEPER_ADMIN_VERIFY): the right password is OK with the name as stored,
 * a wrong password or an unknown user is FAILED, and no answer ever holds
 * the Argon2id hash. The keeper answers other requests while a check runs
 * (it runs on a thread), and an answer that arrives while the client waits
 * for another reply is handed over from the loop. A request the admin
 * channel may not make (a credential FETCH, an audit append, address
 * resolution) ends the keeper with IPC_EXIT_FATAL and nothing comes back.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <sodium.h>

#include "audit.h"
#include "credential.h"
#include "ipc.h"
#include "keeper.h"
#include "keeper_verify.h"
#include "log.h"
#include "util.h"

#define ERRLEN		512
#define ADMIN		"Alice"
#define PASSWORD	"correct horse battery staple"
#define ACCOUNT		"team@example.com"
#define APP_PASSWORD	"abcdabcdabcdabcd"
#define LOG_MAX		8192
#define WAIT_MS		60000	/* Argon2id under valgrind on a busy machine */

static const unsigned char test_key[VAULT_KEY_BYTES] = { 3, 1, 4, 1, 5, 9, 2, 6 };

static char dir[PATH_MAX], vaultfile[PATH_MAX + 16], auditfile[PATH_MAX + 16];
static char stored_hash[VAULT_HASH_MAX];

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
	char err[ERRLEN], tmpl[] = "/tmp/smtpvault-keeperadm.XXXXXX";

	if (sodium_init() == -1 || mkdtemp(tmpl) == NULL)
		return -1;
	strlcpy(dir, tmpl, sizeof(dir));
	snprintf(vaultfile, sizeof(vaultfile), "%s/vault", dir);
	snprintf(auditfile, sizeof(auditfile), "%s/audit.log", dir);
	keysrc(&src);
	if (vault_create(vaultfile, &src, VAULT_KDF_MODERATE, err, sizeof(err)) == -1 ||
	    vault_open(vaultfile, &src, 1, &v, err, sizeof(err)) == -1)
		return -1;
	memset(&t, 0, sizeof(t));
	strlcpy(t.address, ACCOUNT, sizeof(t.address));
	t.upstream_tls = -1;
	if (vault_account_add(v, &t, (const unsigned char *)APP_PASSWORD,
	    strlen(APP_PASSWORD), 1700000000, err, sizeof(err)) == -1 ||
	    vault_admin_add(v, ADMIN, (const unsigned char *)PASSWORD, strlen(PASSWORD),
	    1700000000, err, sizeof(err)) == -1 || vault_save(v, err, sizeof(err)) == -1)
		return -1;
	strlcpy(stored_hash, vault_admin_at(v, 0)->hash, sizeof(stored_hash));
	vault_close(v);
	vault_keysrc_wipe(&src);
	return strncmp(stored_hash, "$argon2id$", 10) == 0 ? 0 : -1;
}

static int
teardown(void **state)
{
	char cmd[PATH_MAX + 16];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) == 0 ? 0 : -1;
}

/* A keeper with the parent's channel (*pfd: its close ends the keeper) and
 * the admin channel (*afd). Its log goes to *logfd. */
static pid_t
keeper_fork(int *pfd, int *afd, int *logfd)
{
	struct vault_keysrc src;
	unsigned char key[VAULT_KEY_BYTES];
	struct credstore *cs;
	struct vault *v = NULL;
	struct audit *a;
	char err[ERRLEN];
	int sp[2], sa[2];
	pid_t pid;

	assert_int_equal(ipc_socketpair(sp), 0);
	assert_int_equal(ipc_socketpair(sa), 0);
	*logfd = memfd_create("keeper-log", MFD_CLOEXEC);
	assert_true(*logfd >= 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(sp[0]);
		close(sa[0]);
		dup2(*logfd, STDERR_FILENO);
		log_init("keeper", 0);
		keysrc(&src);
		if (vault_open(vaultfile, &src, 0, &v, err, sizeof(err)) == -1)
			_exit(90);
		vault_keysrc_wipe(&src);
		if ((cs = credstore_new(v)) == NULL || credstore_audit_key(cs, key) == -1)
			_exit(91);
		if ((a = audit_open(auditfile, key, err, sizeof(err))) == NULL)
			_exit(92);
		credstore_set_audit(cs, a);
		{
			const struct keeper_channel ch[2] = {
				{ sp[1], "parent", keeper_rules_daemon, keeper_n_rules_daemon, NULL },
				{ sa[1], "admin", keeper_rules_admin, keeper_n_rules_admin,
				    keeper_audit_events_none },
			};

			keeper_serve(ch, 2, cs, a);
		}
	}
	close(sp[1]);
	close(sa[1]);
	*pfd = sp[0];
	*afd = sa[0];
	return pid;
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

/* ---- Logins through the credstore client ----------------------------------- */

struct login {
	int		answered;
	enum cred_login	res;
	char		name[VAULT_NAME_MAX];
};

static void
login_cb(void *arg, enum cred_login res, const char *name)
{
	struct login *l = arg;

	l->answered++;
	l->res = res;
	strlcpy(l->name, name, sizeof(l->name));
}

static void
never_cb(void *arg, enum cred_login res, const char *name)
{
	fail_msg("a cancelled login was answered");
}

static void
verify(struct credstore *cs, struct event_base *base, const char *name, const char *pw,
    struct login *l)
{
	struct vault_secret s = { NULL, 0 };

	memset(l, 0, sizeof(*l));
	assert_int_equal(vault_secret_set(&s, (const unsigned char *)pw, strlen(pw)), 0);
	assert_int_equal(credstore_admin_verify(cs, base, name, &s, login_cb, l), 0);
	vault_secret_wipe(&s);
	/* Never from inside the call. */
	assert_int_equal(l->answered, 0);
}

static void
wait_answers(struct event_base *base, const int *answered, int n)
{
	int i;

	for (i = 0; i < WAIT_MS / 10 && *answered < n; i++) {
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
		if (*answered < n)
			usleep(10000);
	}
	assert_int_equal(*answered, n);
}

static void
test_admin_login_is_checked_by_the_keeper(void **state)
{
	struct event_base *base;
	struct credstore *cs;
	struct login ok, wrong, unknown, caseless, cancelled;
	char log[LOG_MAX], err[ERRLEN];
	int pfd, afd, logfd, st;
	pid_t pid;

	pid = keeper_fork(&pfd, &afd, &logfd);
	assert_non_null(base = event_base_new());
	assert_non_null(cs = credstore_connect(afd));

	verify(cs, base, ADMIN, PASSWORD, &ok);
	wait_answers(base, &ok.answered, 1);
	assert_int_equal(ok.res, CRED_LOGIN_OK);
	assert_string_equal(ok.name, ADMIN);

	verify(cs, base, ADMIN, "wrong password", &wrong);
	wait_answers(base, &wrong.answered, 1);
	assert_int_equal(wrong.res, CRED_LOGIN_FAILED);
	assert_string_equal(wrong.name, "");

	verify(cs, base, "mallory", PASSWORD, &unknown);
	wait_answers(base, &unknown.answered, 1);
	assert_int_equal(unknown.res, CRED_LOGIN_FAILED);

	/* The name as stored comes back (users are matched regardless of case). */
	verify(cs, base, "ALICE", PASSWORD, &caseless);
	/* Its answer arrives while other calls wait for theirs: kept for the loop. */
	assert_int_equal(credstore_account_count(cs), 1);
	usleep(300000);
	assert_int_equal(credstore_healthy(cs, err, sizeof(err)), 0);
	wait_answers(base, &caseless.answered, 1);
	assert_int_equal(caseless.res, CRED_LOGIN_OK);
	assert_string_equal(caseless.name, ADMIN);

	/* A cancelled login: its answer is recognised and dropped. */
	{
		struct vault_secret s = { NULL, 0 };

		assert_int_equal(vault_secret_set(&s, (const unsigned char *)PASSWORD,
		    strlen(PASSWORD)), 0);
		assert_int_equal(credstore_admin_verify(cs, base, ADMIN, &s, never_cb,
		    &cancelled), 0);
		vault_secret_wipe(&s);
		credstore_admin_verify_cancel(cs, &cancelled);
		usleep(300000);
		assert_int_equal(credstore_account_count(cs), 1);
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
	/* The admin channel also writes its login events (the keeper audits). */
	assert_int_equal(credstore_admin_audit(cs, AUDIT_ADMIN_LOGIN, ADMIN, "127.0.0.1", NULL,
	    err, sizeof(err)), 0);

	credstore_free(cs);
	event_base_free(base);
	close(pfd);
	st = keeper_wait(pid, logfd, log, sizeof(log));
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

/* ---- Raw records ----------------------------------------------------------------- */

static size_t
rec(unsigned char *b, uint16_t type, uint32_t id, const void *p, size_t len)
{
	b[0] = IPC_VERSION;
	b[1] = 0;
	b[2] = (unsigned char)(type >> 8);
	b[3] = (unsigned char)type;
	b[4] = (unsigned char)(id >> 24);
	b[5] = (unsigned char)(id >> 16);
	b[6] = (unsigned char)(id >> 8);
	b[7] = (unsigned char)id;
	b[8] = (unsigned char)(len >> 24);
	b[9] = (unsigned char)(len >> 16);
	b[10] = (unsigned char)(len >> 8);
	b[11] = (unsigned char)len;
	memcpy(b + IPC_HDR_LEN, p, len);
	return IPC_HDR_LEN + len;
}

/* A VERIFY payload: name, password. */
static size_t
verify_payload(unsigned char *p, const char *name, const char *pw)
{
	size_t n = 0, l;

	l = strlen(name);
	p[n++] = (unsigned char)(l >> 8);
	p[n++] = (unsigned char)l;
	memcpy(p + n, name, l);
	n += l;
	l = strlen(pw);
	p[n++] = (unsigned char)(l >> 8);
	p[n++] = (unsigned char)l;
	memcpy(p + n, pw, l);
	return n + l;
}

static ssize_t
recv_wait(int fd, unsigned char *b, size_t len)
{
	struct pollfd pfd = { fd, POLLIN, 0 };

	if (poll(&pfd, 1, WAIT_MS) != 1)
		return -1;
	return recv(fd, b, len, 0);
}

static void
test_keeper_stays_responsive_and_never_sends_the_hash(void **state)
{
	unsigned char b[1024], p[512], r[IPC_MSG_MAX];
	char log[LOG_MAX];
	ssize_t n;
	size_t len, i;
	int pfd, afd, logfd, st, got_busy = 0;
	pid_t pid;

	pid = keeper_fork(&pfd, &afd, &logfd);
	/* A login, then at once a COUNT: the COUNT is answered first. */
	len = rec(b, KEEPER_ADMIN_VERIFY, 7, p, verify_payload(p, ADMIN, PASSWORD));
	assert_int_equal(send(afd, b, len, 0), (ssize_t)len);
	len = rec(b, KEEPER_COUNT, 8, "", 0);
	assert_int_equal(send(afd, b, len, 0), (ssize_t)len);
	assert_true((n = recv_wait(afd, r, sizeof(r))) >= IPC_HDR_LEN);
	assert_int_equal(r[2] << 8 | r[3], KEEPER_COUNT | KEEPER_REPLY);
	assert_true((n = recv_wait(afd, r, sizeof(r))) >= IPC_HDR_LEN);
	assert_int_equal(r[2] << 8 | r[3], KEEPER_ADMIN_VERIFY | KEEPER_REPLY);
	assert_int_equal(r[7], 7);
	/* OK, then the name: nothing else. */
	assert_int_equal(n, IPC_HDR_LEN + 4 + 2 + strlen(ADMIN));
	assert_int_equal(r[IPC_HDR_LEN + 3], KEEPER_VERIFY_OK);

	/* Right, wrong, unknown, in bursts: no answer holds the hash or any part
	 * of an Argon2id string; past KEEPER_VERIFY_MAX at once, BUSY. */
	for (i = 0; i < KEEPER_VERIFY_MAX + 4; i++) {
		len = rec(b, KEEPER_ADMIN_VERIFY, (uint32_t)(100 + i), p, verify_payload(p,
		    i % 3 == 2 ? "nobody" : ADMIN, i % 3 == 0 ? PASSWORD : "nope"));
		assert_int_equal(send(afd, b, len, 0), (ssize_t)len);
	}
	for (i = 0; i < KEEPER_VERIFY_MAX + 4; i++) {
		assert_true((n = recv_wait(afd, r, sizeof(r))) >= IPC_HDR_LEN + 6);
		assert_int_equal(r[2] << 8 | r[3], KEEPER_ADMIN_VERIFY | KEEPER_REPLY);
		assert_null(memmem(r, (size_t)n, "$argon2", 7));
		assert_null(memmem(r, (size_t)n, stored_hash, strlen(stored_hash)));
		assert_null(memmem(r, (size_t)n, stored_hash + strlen(stored_hash) - 16, 16));
		if (r[IPC_HDR_LEN + 3] == KEEPER_VERIFY_BUSY)
			got_busy++;
	}
	assert_true(got_busy >= 1);
	close(afd);
	close(pfd);
	st = keeper_wait(pid, logfd, log, sizeof(log));
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), 0);
}

static void
test_admin_channel_refuses_what_it_may_not_ask(void **state)
{
	static const struct {
		const char	*name;
		uint16_t	 type;
		const char	*payload;
		size_t		 len;
		const char	*why;
	} cases[] = {
		{ "a credential", KEEPER_FETCH, "\0\20team@example.com", 18, "unexpected type" },
		{ "address resolution", KEEPER_RESOLVE, "\0\20team@example.com", 18,
		    "unexpected type" },
		{ "an audit line of its own", KEEPER_AUDIT_APPEND, "{\"event\":\"x\"}", 13,
		    "unexpected type" },
		{ "an upstream login result", KEEPER_REPORT_AUTH,
		    "\0\1a\0\0\0\1\0\0\0\1\0\0", 13, "unexpected type" },
		{ "a reply", KEEPER_ADMIN_VERIFY | KEEPER_REPLY, "\0\0\0\1\0\0", 6,
		    "unexpected type" },
		{ "login without a password", KEEPER_ADMIN_VERIFY, "\0\5Alice\0\0", 9,
		    "malformed payload" },
		{ "login record too short", KEEPER_ADMIN_VERIFY, "\0\1A\0\0", 5, "outside" },
		{ "login with an empty name", KEEPER_ADMIN_VERIFY, "\0\0\0\4abcd", 8,
		    "malformed payload" },
		{ "login with trailing bytes", KEEPER_ADMIN_VERIFY, "\0\1A\0\1bxx", 8,
		    "malformed payload" },
		{ "login name too long", KEEPER_ADMIN_VERIFY,
		    "\0\100" "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA" "\0\1b",
		    69, "malformed payload" },
	};
	unsigned char b[256], junk[64];
	char log[LOG_MAX];
	size_t i, n;
	int pfd, afd, logfd, st;
	pid_t pid;

	for (i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		pid = keeper_fork(&pfd, &afd, &logfd);
		n = rec(b, cases[i].type, 1, cases[i].payload, cases[i].len);
		assert_int_equal(send(afd, b, n, MSG_NOSIGNAL), (ssize_t)n);
		st = keeper_wait(pid, logfd, log, sizeof(log));
		if (!WIFEXITED(st) || WEXITSTATUS(st) != IPC_EXIT_FATAL)
			fail_msg("%s: status 0x%x, log: %s", cases[i].name, st, log);
		if (strstr(log, "ipc_refused") == NULL || strstr(log, cases[i].why) == NULL)
			fail_msg("%s: log: %s", cases[i].name, log);
		/* Nothing came back: EOF at once. */
		assert_int_equal(recv_wait(afd, junk, sizeof(junk)), 0);
		close(afd);
		close(pfd);
	}
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_admin_login_is_checked_by_the_keeper),
		cmocka_unit_test(test_keeper_stays_responsive_and_never_sends_the_hash),
		cmocka_unit_test(test_admin_channel_refuses_what_it_may_not_ask),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, teardown);
}
