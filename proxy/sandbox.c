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
#include <sys/socket.h>
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
	/* glibc's qsort() asks for the machine's memory (sysconf(_SC_PHYS_PAGES))
	 * the first time it sorts 1 KiB or more: the vault's names once a vault
	 * grows past ~128 of them (vault_payload.c) */
	"sysinfo",
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

/*
 * What one process may do beyond its list of calls: threads (clone for
 * threads only), filters for every thread at once (tsync), socket() for
 * these address families only, open() refused with EACCES instead of the
 * kill (a process that never opens files, but whose libraries may try),
 * ioctl(FIONREAD) for libevent's reads besides stdio's TCGETS.
 */
struct sandbox_policy {
	const char		 *what;
	const char *const	 *calls;
	size_t			  n;
	const char *const	 *more[2];	/* further lists, or NULL */
	size_t			  n_more[2];
	int			  threads;
	int			  tsync;
	const int		 *families;
	size_t			  n_families;
	int			  no_files;
	int			  fionread;
};

static int
sandbox_add_list(scmp_filter_ctx ctx, const char *const *calls, size_t n, char *err,
    size_t errlen)
{
	size_t i;
	int nr, rc;

	for (i = 0; i < n; i++) {
		if ((nr = seccomp_syscall_resolve_name(calls[i])) == __NR_SCMP_ERROR)
			continue;
		if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)) < 0) {
			snprintf(err, errlen, "seccomp: allow %s: %s", calls[i], strerror(-rc));
			return -1;
		}
	}
	return 0;
}

/* One rule: allow call when argument arg equals value. */
static int
sandbox_allow_arg(scmp_filter_ctx ctx, const char *call, unsigned arg, uint64_t value,
    char *err, size_t errlen)
{
	struct scmp_arg_cmp cmp;
	int nr, rc;

	if ((nr = seccomp_syscall_resolve_name(call)) == __NR_SCMP_ERROR)
		return 0;
	memset(&cmp, 0, sizeof(cmp));
	cmp.arg = arg;
	cmp.op = SCMP_CMP_EQ;
	cmp.datum_a = value;
	if ((rc = seccomp_rule_add_array(ctx, SCMP_ACT_ALLOW, nr, 1, &cmp)) < 0) {
		snprintf(err, errlen, "seccomp: allow %s: %s", call, strerror(-rc));
		return -1;
	}
	return 0;
}

static int
sandbox_apply(const struct sandbox_policy *p, char *err, size_t errlen)
{
	static const char *const opens[] = { "open", "openat", "openat2" };
	scmp_filter_ctx ctx;
	size_t i;
	int nr, rc;

	if (getenv(SANDBOX_DISABLE_ENV) != NULL) {
		log_warn("event=sandbox process=%s state=disabled reason=\"%s is set\"", p->what,
		    SANDBOX_DISABLE_ENV);
		return 0;
	}
	if ((ctx = seccomp_init(SCMP_ACT_KILL_PROCESS)) == NULL) {
		snprintf(err, errlen, "seccomp: cannot create a filter");
		return -1;
	}
	if (sandbox_add_list(ctx, p->calls, p->n, err, errlen) == -1)
		goto fail;
	for (i = 0; i < 2; i++)
		if (p->more[i] != NULL && sandbox_add_list(ctx, p->more[i], p->n_more[i], err,
		    errlen) == -1)
			goto fail;
	if (p->threads && sandbox_allow_threads(ctx, err, errlen) == -1)
		goto fail;
	for (i = 0; i < p->n_families; i++)
		if (sandbox_allow_arg(ctx, "socket", 0, (uint64_t)p->families[i], err,
		    errlen) == -1)
			goto fail;
	for (i = 0; p->no_files && i < sizeof(opens) / sizeof(opens[0]); i++) {
		if ((nr = seccomp_syscall_resolve_name(opens[i])) == __NR_SCMP_ERROR)
			continue;
		if ((rc = seccomp_rule_add(ctx, SCMP_ACT_ERRNO(EACCES), nr, 0)) < 0) {
			snprintf(err, errlen, "seccomp: refuse %s: %s", opens[i], strerror(-rc));
			goto fail;
		}
	}
	/* stdio asks whether stderr is a terminal; libevent how much to read. */
	if (sandbox_allow_arg(ctx, "ioctl", 1, TCGETS, err, errlen) == -1 ||
	    (p->fionread && sandbox_allow_arg(ctx, "ioctl", 1, FIONREAD, err, errlen) == -1))
		goto fail;
	if (p->tsync && (rc = seccomp_attr_set(ctx, SCMP_FLTATR_CTL_TSYNC, 1)) < 0) {
		snprintf(err, errlen, "seccomp: every thread: %s", strerror(-rc));
		goto fail;
	}
	if ((rc = seccomp_load(ctx)) < 0) {
		snprintf(err, errlen, "seccomp: load: %s", strerror(-rc));
		goto fail;
	}
	seccomp_release(ctx);
	log_info("event=sandbox process=%s state=on calls=%zu", p->what,
	    p->n + p->n_more[0] + p->n_more[1] + 1);
	return 0;
fail:
	seccomp_release(ctx);
	return -1;
}

static int
sandbox_install(const char *what, const char *const *calls, size_t n, int threads, char *err,
    size_t errlen)
{
	struct sandbox_policy p;

	memset(&p, 0, sizeof(p));
	p.what = what;
	p.calls = calls;
	p.n = n;
	p.threads = threads;
	return sandbox_apply(&p, err, errlen);
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

/* What every process with an event loop does once it serves. */
static const char *const sandbox_base_calls[] = {
	/* its channels, stderr and the event loop */
	"read", "write", "readv", "writev", "close", "recvmsg", "sendmsg", "recvfrom",
	"sendto", "epoll_ctl", "epoll_wait", "epoll_pwait", "epoll_pwait2", "poll", "ppoll",
	"fcntl", "fstat", "newfstatat", "lseek",
	/* memory (guarded memory: mprotect, mlock, madvise) */
	"mmap", "munmap", "mprotect", "madvise", "brk", "mremap", "mlock", "munlock",
	"mlock2",
	/* time, randomness, identity */
	"clock_gettime", "clock_nanosleep", "nanosleep", "gettimeofday", "time",
	"getrandom", "getpid", "gettid", "getppid", "getuid", "geteuid", "getgid",
	"getegid", "getresuid", "getresgid",
	/* signals, locks, the end */
	"rt_sigreturn", "rt_sigprocmask", "rt_sigaction", "sigaltstack", "restart_syscall",
	"futex", "sched_yield", "prlimit64", "getrlimit", "set_robust_list", "rseq",
	"exit", "exit_group",
	/* glibc's qsort() of 1 KiB or more reads the machine's memory size once */
	"sysinfo",
};
#define SANDBOX_N(list)	(sizeof(list) / sizeof((list)[0]))

/* The parent: its children and sd_notify (an AF_UNIX datagram). */
static const char *const sandbox_parent_calls[] = {
	"wait4", "waitid", "kill", "connect", "getsockopt", "setsockopt",
};
static const int sandbox_parent_families[] = { AF_UNIX };

/*
 * The front end: accepted LAN connections and TLS on them, the relay link's
 * sealed memfd, the configuration and certificate re-read on SIGHUP.
 */
static const char *const sandbox_smtp_calls[] = {
	"accept", "accept4", "shutdown", "getsockname", "getpeername", "getsockopt",
	"setsockopt", "open", "openat", "stat", "lstat", "statx", "access", "faccessat",
	"faccessat2", "readlink", "readlinkat", "uname", "memfd_create", "ftruncate",
	"getdents64",
};

/*
 * The relay: upstream connections (DNS through /etc/hosts, nscd's socket or
 * UDP and TCP to a resolver, TLS with the system's CAs), the spool and its
 * folders (atomic renames, fsync, the lock), the queue's control socket
 * (bound before the filter: no bind or listen after it), the relay link's
 * memfd, its I/O thread.
 */
static const char *const sandbox_relay_calls[] = {
	"connect", "sendmmsg", "recvmmsg", "fadvise64",
	"rename", "renameat", "renameat2", "unlink", "unlinkat", "mkdir", "mkdirat", "link",
	"linkat", "fsync", "fdatasync", "syncfs", "flock", "fchmod", "fchmodat", "pread64",
	"pwrite64", "getdents", "statfs", "fstatfs", "pipe2", "eventfd2",
	/* root's files go to the spool's owner (spool.c adopt(), as root with
	 * SMTPVAULT_ALLOW_ROOT=1 only) */
	"fchown", "fchownat",
};
static const int sandbox_relay_families[] = { AF_UNIX, AF_INET, AF_INET6 };

#define SANDBOX_BASE	sandbox_base_calls, SANDBOX_N(sandbox_base_calls)
#define SANDBOX_LIST(l)	l, SANDBOX_N(l)

static const struct sandbox_policy sandbox_parent_policy = {
	"parent", SANDBOX_BASE, { sandbox_parent_calls, NULL },
	{ SANDBOX_N(sandbox_parent_calls), 0 }, 0, 0, SANDBOX_LIST(sandbox_parent_families),
	1, 0
};
static const struct sandbox_policy sandbox_relay_policy = {
	"relay", SANDBOX_BASE, { sandbox_smtp_calls, sandbox_relay_calls },
	{ SANDBOX_N(sandbox_smtp_calls), SANDBOX_N(sandbox_relay_calls) }, 1, 1,
	SANDBOX_LIST(sandbox_relay_families), 0, 1
};
static const struct sandbox_policy sandbox_smtp_policy = {
	"smtp", SANDBOX_BASE, { sandbox_smtp_calls, NULL }, { SANDBOX_N(sandbox_smtp_calls), 0 },
	0, 1, NULL, 0, 0, 1
};

/*
 * The admin process: accepted admin connections (HTTP, TLS), its worker
 * threads' reads of the audit log, and one upstream connection to verify a
 * new App Password (DNS through /etc/hosts, nscd's socket or UDP and TCP to
 * a resolver; TLS with the configured or the system's CAs). No spool, no
 * renames or links, no bind or listen after the filter.
 */
static const char *const sandbox_admin_calls[] = {
	"connect", "sendmmsg", "recvmmsg", "fadvise64", "pread64", "pipe2", "eventfd2",
	"getdents",
};
static const struct sandbox_policy sandbox_admin_policy = {
	"admin", SANDBOX_BASE, { sandbox_smtp_calls, sandbox_admin_calls },
	{ SANDBOX_N(sandbox_smtp_calls), SANDBOX_N(sandbox_admin_calls) }, 1, 1,
	SANDBOX_LIST(sandbox_relay_families), 0, 1
};

/*
 * Under a sanitizer the process exits through LeakSanitizer, which clones a
 * tracer and ptraces its threads: an allow list would kill it. There the
 * deny list of sandbox_network() stands in (sandbox.h).
 */
static int
sandbox_role(const struct sandbox_policy *p, char *err, size_t errlen)
{
	if (SANDBOX_SANITIZER)
		return sandbox_deny(p->what, err, errlen);
	return sandbox_apply(p, err, errlen);
}

int
sandbox_parent(char *err, size_t errlen)
{
	return sandbox_role(&sandbox_parent_policy, err, errlen);
}

int
sandbox_relay(char *err, size_t errlen)
{
	return sandbox_role(&sandbox_relay_policy, err, errlen);
}

int
sandbox_smtp(char *err, size_t errlen)
{
	return sandbox_role(&sandbox_smtp_policy, err, errlen);
}

int
sandbox_admin(char *err, size_t errlen)
{
	return sandbox_role(&sandbox_admin_policy, err, errlen);
}
