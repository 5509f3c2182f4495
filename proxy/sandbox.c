/*
 * sandbox.c: seccomp filters (sandbox.h). The lists name system calls, not
 * numbers, so that one list serves every architecture; a name this kernel
 * or architecture does not know is skipped. The keeper's list was checked
 * against the whole integration suite, plain and under ASan (whose runtime
 * needs a few calls of its own: sched_yield, sigaltstack, prlimit64).
 */
#include "sandbox.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <sys/ioctl.h>
#include <termios.h>

#include <seccomp.h>

#include "log.h"

static const char *const sandbox_keeper_calls[] = {
	/* IPC and the event loop */
	"recvmsg", "sendmsg", "recvfrom", "sendto", "epoll_create1", "epoll_ctl",
	"epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll", "eventfd2", "pipe2",
	/* vault, lock and audit files */
	"read", "write", "readv", "writev", "pread64", "pwrite64", "lseek", "close",
	"open", "openat", "fstat", "newfstatat", "stat", "lstat", "statx", "fcntl", "flock",
	"fsync", "fdatasync", "ftruncate", "rename", "renameat", "renameat2", "link",
	"linkat", "unlink", "unlinkat", "fchmod", "fchown", "getdents64", "readlink",
	"readlinkat",
	/* memory (guarded memory: mprotect, mlock, madvise) */
	"mmap", "munmap", "mprotect", "madvise", "brk", "mremap", "mlock", "munlock",
	"mlock2",
	/* time, randomness, identity */
	"clock_gettime", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
	"getrandom", "getpid", "gettid", "getuid", "geteuid", "getgid", "getegid",
	/* signals, threads' locks, the end */
	"rt_sigreturn", "rt_sigprocmask", "rt_sigaction", "sigaltstack", "futex",
	"sched_yield", "prlimit64", "getrlimit", "exit", "exit_group",
	/* the login checker's thread (keeper_verify.c): a new thread sets these
	 * up (ASan's runtime asks for its stack with pthread_getattr_np, which
	 * reads the affinity); clone() itself only for threads
	 * (sandbox_allow_threads) */
	"set_robust_list", "rseq", "sched_getaffinity",
};

/*
 * Threads, never processes: clone() only with CLONE_THREAD. clone3() passes
 * its flags in memory, out of a filter's sight: it fails with ENOSYS, and
 * glibc's pthread_create() then falls back to clone().
 */
static int
sandbox_allow_threads(scmp_filter_ctx ctx, char *err, size_t errlen)
{
	struct scmp_arg_cmp thread;
	int rc, nr;

	memset(&thread, 0, sizeof(thread));
	thread.arg = 0;
	thread.op = SCMP_CMP_MASKED_EQ;
	thread.datum_a = CLONE_THREAD;
	thread.datum_b = CLONE_THREAD;
	if ((rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, SCMP_SYS(clone), 1,
	    &thread)) < 0) {
		snprintf(err, errlen, "seccomp: allow clone for threads: %s", strerror(-rc));
		return -1;
	}
	if ((nr = seccomp_syscall_resolve_name("clone3")) != __NR_SCMP_ERROR &&
	    (rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(ENOSYS), nr, 0)) < 0) {
		snprintf(err, errlen, "seccomp: clone3: %s", strerror(-rc));
		return -1;
	}
	return 0;
}

static int
sandbox_install(const char *what, const char *const *calls, size_t n, int threads, char *err,
    size_t errlen)
{
	struct scmp_arg_cmp tcgets;
	scmp_filter_ctx ctx;
	size_t i;
	int nr, rc;

	if (getenv(SANDBOX_DISABLE_ENV) != NULL) {
		log_warn("event=sandbox process=%s state=disabled reason=\"%s is set\"", what,
		    SANDBOX_DISABLE_ENV);
		return 0;
	}
	memset(&tcgets, 0, sizeof(tcgets));
	tcgets.arg = 1;
	tcgets.op = SCMP_CMP_EQ;
	tcgets.datum_a = TCGETS;
	if ((ctx = seccomp_init(SCMP_ACT_KILL_PROCESS)) == NULL) {
		snprintf(err, errlen, "seccomp: cannot create a filter");
		return -1;
	}
	for (i = 0; i < n; i++) {
		if ((nr = seccomp_syscall_resolve_name(calls[i])) == __NR_SCMP_ERROR)
			continue;
		if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)) < 0) {
			snprintf(err, errlen, "seccomp: allow %s: %s", calls[i], strerror(-rc));
			goto fail;
		}
	}
	if (threads && sandbox_allow_threads(ctx, err, errlen) == -1)
		goto fail;
	/* stdio asks whether stderr is a terminal; nothing else. */
	if ((rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, SCMP_SYS(ioctl), 1,
	    &tcgets)) < 0) {
		snprintf(err, errlen, "seccomp: allow ioctl: %s", strerror(-rc));
		goto fail;
	}
	if ((rc = seccomp_load(ctx)) < 0) {
		snprintf(err, errlen, "seccomp: load: %s", strerror(-rc));
		goto fail;
	}
	seccomp_release(ctx);
	log_info("event=sandbox process=%s state=on calls=%zu", what, n + 1);
	return 0;
fail:
	seccomp_release(ctx);
	return -1;
}

#if defined(__SANITIZE_ADDRESS__)
#define SANDBOX_SANITIZER	1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANDBOX_SANITIZER	1
#endif
#endif
#ifndef SANDBOX_SANITIZER
#define SANDBOX_SANITIZER	0
#endif

static const char *const sandbox_network_denied[] = {
	"execve", "execveat",
#if !SANDBOX_SANITIZER
	/* LeakSanitizer stops the threads with ptrace at exit. */
	"ptrace", "process_vm_readv", "process_vm_writev",
#endif
	"bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
	"mount", "umount2", "pivot_root", "chroot", "kexec_load", "kexec_file_load",
	"init_module", "finit_module", "delete_module", "setns", "unshare",
	"open_by_handle_at", "name_to_handle_at", "iopl", "ioperm", "swapon", "swapoff",
	"reboot", "acct", "quotactl",
};

static int
sandbox_deny(const char *what, char *err, size_t errlen)
{
	scmp_filter_ctx ctx;
	uint32_t deny = SANDBOX_SANITIZER ? SCMP_ACT_ERRNO(EPERM) : SCMP_ACT_KILL_PROCESS;
	size_t i, n = sizeof(sandbox_network_denied) / sizeof(sandbox_network_denied[0]);
	int nr, rc;

	if (getenv(SANDBOX_DISABLE_ENV) != NULL) {
		log_warn("event=sandbox process=%s state=disabled reason=\"%s is set\"", what,
		    SANDBOX_DISABLE_ENV);
		return 0;
	}
	if ((ctx = seccomp_init(SCMP_ACT_ALLOW)) == NULL) {
		snprintf(err, errlen, "seccomp: cannot create a filter");
		return -1;
	}
	for (i = 0; i < n; i++) {
		if ((nr = seccomp_syscall_resolve_name(sandbox_network_denied[i])) ==
		    __NR_SCMP_ERROR)
			continue;
		if ((rc = seccomp_rule_add(ctx, deny, nr, 0)) < 0) {
			snprintf(err, errlen, "seccomp: deny %s: %s", sandbox_network_denied[i],
			    strerror(-rc));
			goto fail;
		}
	}
	/* Every thread, including libmicrohttpd's and the admin workers. */
	if ((rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)) < 0 ||
	    (rc = seccomp_load(ctx)) < 0) {
		snprintf(err, errlen, "seccomp: load: %s", strerror(-rc));
		goto fail;
	}
	seccomp_release(ctx);
	log_info("event=sandbox process=%s state=on denied=%zu", what, n);
	return 0;
fail:
	seccomp_release(ctx);
	return -1;
}

int
sandbox_keeper(char *err, size_t errlen)
{
	return sandbox_install("keeper", sandbox_keeper_calls,
	    sizeof(sandbox_keeper_calls) / sizeof(sandbox_keeper_calls[0]), 1, err, errlen);
}

int
sandbox_network(char *err, size_t errlen)
{
	return sandbox_deny("network", err, errlen);
}

int
sandbox_parent(char *err, size_t errlen)
{
	return sandbox_deny("parent", err, errlen);
}

int
sandbox_relay(char *err, size_t errlen)
{
	return sandbox_deny("relay", err, errlen);
}

int
sandbox_smtp(char *err, size_t errlen)
{
	return sandbox_deny("smtp", err, errlen);
}

int
sandbox_admin(char *err, size_t errlen)
{
	return sandbox_deny("admin", err, errlen);
}
