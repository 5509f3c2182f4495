/*
 * test_sandbox.c: proxy/sandbox.c as a specification, each case in a child
 * process. Under the keeper's filter, files, memory and time still work,
 * and socket() or execve() kill the process (SIGSYS). The parent of serve
 * may not open files (EACCES) nor make a network socket; the front end
 * reads files but makes no socket; the relay makes sockets; none of them
 * runs a program or ptraces. The keeper starts threads (its login checker)
 * but no process; the admin process connects and reads files but binds
 * nothing and makes no other kind of socket. Under the network
 * process's filter, sockets work and execve() and ptrace() are refused
 * (killed; in an ASan build, whose runtime needs them, execve() gets EPERM
 * and ptrace() is allowed).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/sysinfo.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox.h"

#define ERRLEN		256
#define CHILD_OK	0
#define CHILD_FAILED	1
#define CHILD_EPERM	7
#define CHILD_EACCES	8

#if defined(__SANITIZE_ADDRESS__)
#define ASAN_BUILD	1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define ASAN_BUILD	1
#endif
#endif
#ifndef ASAN_BUILD
#define ASAN_BUILD	0
#endif

/* Valgrind runs the program's system calls itself and needs more than a
 * filter allows: these cases run natively only. */
static int
under_valgrind(void)
{
	const char *pre = getenv("LD_PRELOAD");

	return pre != NULL && strstr(pre, "vgpreload") != NULL;
}

enum probe { PROBE_FILES, PROBE_SOCKET, PROBE_EXEC, PROBE_PTRACE, PROBE_OPEN, PROBE_BIND,
	PROBE_NETLINK, PROBE_THREAD, PROBE_FORK, PROBE_SYSINFO, PROBE_FCHOWN };

static void *
probe_thread(void *arg)
{
	return arg;
}

static int
run(int (*install)(char *, size_t), enum probe p)
{
	char err[ERRLEN], *const argv[] = { "/bin/true", NULL }, *const envp[] = { NULL };
	static int token, token_fd = -1;
	struct sockaddr_in sin;
	struct timespec ts;
	struct sysinfo si;
	pthread_t t;
	void *ret;
	int st, fd;
	pid_t pid;

	if (under_valgrind())
		skip();
	unsetenv(SANDBOX_DISABLE_ENV);
	if (p == PROBE_FCHOWN && (token_fd = open("/dev/null", O_RDONLY)) == -1)
		fail_msg("open /dev/null: %s", strerror(errno));
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (install(err, sizeof(err)) == -1)
			_exit(CHILD_FAILED);
		switch (p) {
		case PROBE_FILES:
			if ((fd = open("/dev/null", O_RDONLY)) == -1 ||
			    clock_gettime(CLOCK_REALTIME, &ts) == -1 || malloc(1 << 20) == NULL)
				_exit(CHILD_FAILED);
			close(fd);
			_exit(CHILD_OK);
		case PROBE_SOCKET:
			fd = socket(AF_INET, SOCK_STREAM, 0);
			_exit(fd >= 0 ? CHILD_OK : CHILD_FAILED);
		case PROBE_EXEC:
			execve(argv[0], argv, envp);
			_exit(errno == EPERM ? CHILD_EPERM : CHILD_FAILED);
		case PROBE_OPEN:
			if ((fd = open("/dev/null", O_RDONLY)) >= 0)
				_exit(CHILD_OK);
			_exit(errno == EACCES ? CHILD_EACCES : CHILD_FAILED);
		case PROBE_PTRACE:
			if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) == -1)
				_exit(errno == EPERM ? CHILD_EPERM : CHILD_FAILED);
			_exit(CHILD_OK);
		case PROBE_BIND:
			memset(&sin, 0, sizeof(sin));
			sin.sin_family = AF_INET;
			sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
			if ((fd = socket(AF_INET, SOCK_STREAM, 0)) == -1)
				_exit(CHILD_FAILED);
			_exit(bind(fd, (struct sockaddr *)&sin, sizeof(sin)) == 0 ? CHILD_OK :
			    CHILD_FAILED);
		case PROBE_NETLINK:
			fd = socket(AF_NETLINK, SOCK_RAW, 0);
			_exit(fd >= 0 ? CHILD_OK : CHILD_FAILED);
		case PROBE_THREAD:
			if (pthread_create(&t, NULL, probe_thread, &token) != 0 ||
			    pthread_join(t, &ret) != 0 || ret != &token)
				_exit(CHILD_FAILED);
			_exit(CHILD_OK);
		case PROBE_FORK:
			if ((pid = fork()) == 0)
				_exit(CHILD_OK);
			_exit(pid > 0 ? CHILD_OK : CHILD_FAILED);
		case PROBE_SYSINFO:
			/* What glibc's qsort() calls the first time it sorts 1 KiB. */
			_exit(sysinfo(&si) == 0 ? CHILD_OK : CHILD_FAILED);
		case PROBE_FCHOWN:
			/* Opened before the filter (the relay's spool files are). */
			_exit(fchown(token_fd, (uid_t)-1, (gid_t)-1) == 0 ? CHILD_OK :
			    CHILD_FAILED);
		}
		_exit(CHILD_FAILED);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
	if (token_fd != -1) {
		close(token_fd);
		token_fd = -1;
	}
	return st;
}

static void
assert_killed(int st)
{
	assert_true(WIFSIGNALED(st));
	assert_int_equal(WTERMSIG(st), SIGSYS);
}

static void
assert_refused(int st)
{
	if (ASAN_BUILD) {
		assert_true(WIFEXITED(st));
		assert_int_equal(WEXITSTATUS(st), CHILD_EPERM);
	} else {
		assert_killed(st);
	}
}

static void
test_keeper_keeps_files_memory_time(void **state)
{
	int st = run(sandbox_keeper, PROBE_FILES);

	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), CHILD_OK);
}

static void
test_keeper_has_no_socket_and_no_exec(void **state)
{
	assert_killed(run(sandbox_keeper, PROBE_SOCKET));
	assert_killed(run(sandbox_keeper, PROBE_EXEC));
}

static void
test_network_keeps_sockets(void **state)
{
	int st = run(sandbox_network, PROBE_SOCKET);

	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), CHILD_OK);
}

static void
test_network_has_no_exec_and_no_ptrace(void **state)
{
	assert_refused(run(sandbox_network, PROBE_EXEC));
	/* An ASan build allows ptrace: its leak checker needs it. */
	if (!ASAN_BUILD)
		assert_killed(run(sandbox_network, PROBE_PTRACE));
}

static void
assert_exited(int st, int code)
{
	assert_true(WIFEXITED(st));
	assert_int_equal(WEXITSTATUS(st), code);
}

/* The parent of serve opens no file (refused, not killed: a preloaded
 * library may try) and makes no network socket. Under ASan every process
 * but the keeper has the network deny list instead. */
static void
test_parent_has_no_files_and_no_network(void **state)
{
	if (ASAN_BUILD) {
		assert_exited(run(sandbox_parent, PROBE_OPEN), CHILD_OK);
		return;
	}
	assert_exited(run(sandbox_parent, PROBE_OPEN), CHILD_EACCES);
	assert_killed(run(sandbox_parent, PROBE_SOCKET));
	assert_killed(run(sandbox_parent, PROBE_EXEC));
}

/* The front end accepts, it never makes a socket; it reads files (SIGHUP). */
static void
test_smtp_reads_files_makes_no_socket(void **state)
{
	assert_exited(run(sandbox_smtp, PROBE_FILES), CHILD_OK);
	if (ASAN_BUILD)
		return;
	assert_killed(run(sandbox_smtp, PROBE_SOCKET));
	assert_killed(run(sandbox_smtp, PROBE_EXEC));
	assert_killed(run(sandbox_smtp, PROBE_PTRACE));
}

static void
test_relay_connects_but_runs_nothing(void **state)
{
	assert_exited(run(sandbox_relay, PROBE_SOCKET), CHILD_OK);
	assert_exited(run(sandbox_relay, PROBE_FILES), CHILD_OK);
	assert_refused(run(sandbox_relay, PROBE_EXEC));
	if (!ASAN_BUILD)
		assert_killed(run(sandbox_relay, PROBE_PTRACE));
}

/* The keeper checks admin logins on a thread: threads yes, processes no. */
static void
test_keeper_starts_threads_not_processes(void **state)
{
	assert_exited(run(sandbox_keeper, PROBE_THREAD), CHILD_OK);
	assert_killed(run(sandbox_keeper, PROBE_FORK));
}

/* The admin process connects (an upstream check of a new App Password) and
 * reads files (the audit log, CA files), but binds nothing after its
 * filter, makes no other kind of socket and runs nothing. */
static void
test_admin_connects_but_binds_nothing(void **state)
{
	assert_exited(run(sandbox_admin, PROBE_SOCKET), CHILD_OK);
	assert_exited(run(sandbox_admin, PROBE_FILES), CHILD_OK);
	assert_exited(run(sandbox_admin, PROBE_THREAD), CHILD_OK);
	assert_refused(run(sandbox_admin, PROBE_EXEC));
	if (ASAN_BUILD)
		return;
	assert_killed(run(sandbox_admin, PROBE_BIND));
	assert_killed(run(sandbox_admin, PROBE_NETLINK));
	assert_killed(run(sandbox_admin, PROBE_FORK));
	assert_killed(run(sandbox_admin, PROBE_PTRACE));
}

/*
 * glibc's qsort() calls sysinfo() the first time it sorts 1 KiB or more: the
 * keeper re-reading a vault that grew past ~128 names did, and was killed.
 * Every process may ask.
 */
static void
test_every_process_may_call_sysinfo(void **state)
{
	int (*const install[])(char *, size_t) = { sandbox_keeper, sandbox_parent,
	    sandbox_relay, sandbox_smtp, sandbox_admin, sandbox_network };
	size_t i;

	for (i = 0; i < sizeof(install) / sizeof(install[0]); i++)
		assert_exited(run(install[i], PROBE_SYSINFO), CHILD_OK);
}

/* Run as root (SMTPVAULT_ALLOW_ROOT=1), the relay hands the spool files it
 * makes to the spool's owner. */
static void
test_relay_may_chown_its_files(void **state)
{
	assert_exited(run(sandbox_relay, PROBE_FCHOWN), CHILD_OK);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keeper_keeps_files_memory_time),
		cmocka_unit_test(test_keeper_has_no_socket_and_no_exec),
		cmocka_unit_test(test_network_keeps_sockets),
		cmocka_unit_test(test_network_has_no_exec_and_no_ptrace),
		cmocka_unit_test(test_parent_has_no_files_and_no_network),
		cmocka_unit_test(test_smtp_reads_files_makes_no_socket),
		cmocka_unit_test(test_relay_connects_but_runs_nothing),
		cmocka_unit_test(test_keeper_starts_threads_not_processes),
		cmocka_unit_test(test_admin_connects_but_binds_nothing),
		cmocka_unit_test(test_every_process_may_call_sysinfo),
		cmocka_unit_test(test_relay_may_chown_its_files),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
