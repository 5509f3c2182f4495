/*
 * test_sandbox.c: proxy/sandbox.c as a specification, each case in a child
 * process. Under the keeper's filter, files, memory and time still work,
 * and socket() or execve() kill the process (SIGSYS). Under the network
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
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "sandbox.h"

#define ERRLEN		256
#define CHILD_OK	0
#define CHILD_FAILED	1
#define CHILD_EPERM	7

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

enum probe { PROBE_FILES, PROBE_SOCKET, PROBE_EXEC, PROBE_PTRACE };

static int
run(int (*install)(char *, size_t), enum probe p)
{
	char err[ERRLEN], *const argv[] = { "/bin/true", NULL }, *const envp[] = { NULL };
	struct timespec ts;
	int st, fd;
	pid_t pid;

	if (under_valgrind())
		skip();
	unsetenv(SANDBOX_DISABLE_ENV);
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
		case PROBE_PTRACE:
			if (ptrace(PTRACE_TRACEME, 0, NULL, NULL) == -1)
				_exit(errno == EPERM ? CHILD_EPERM : CHILD_FAILED);
			_exit(CHILD_OK);
		}
		_exit(CHILD_FAILED);
	}
	assert_int_equal(waitpid(pid, &st, 0), pid);
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

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_keeper_keeps_files_memory_time),
		cmocka_unit_test(test_keeper_has_no_socket_and_no_exec),
		cmocka_unit_test(test_network_keeps_sockets),
		cmocka_unit_test(test_network_has_no_exec_and_no_ptrace),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
