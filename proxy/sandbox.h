/*
 * sandbox.h: a seccomp filter (libseccomp) per process, allowing only the
 * system calls that process needs once it serves. A call outside the list
 * kills the whole process (SCMP_ACT_KILL_PROCESS): a keeper that tries to
 * open a socket or run a program is no longer ours, and the daemon ends.
 */
#ifndef SMTPVAULT_SANDBOX_H
#define SMTPVAULT_SANDBOX_H

#include <stddef.h>

/* Set by tests or an operator to turn the filter off (e.g. to strace).
 * Logged loudly when used. */
#define SANDBOX_DISABLE_ENV	"SMTPVAULT_NO_SECCOMP"

/* The vault keeper: files (vault, lock, audit log), its IPC socket, the
 * event loop, memory and time, and clone() for threads only (the login
 * checker). No socket(), connect(), bind(), execve(), fork(), ptrace(). 0,
 * or -1 with err. */
int	sandbox_keeper(char *err, size_t errlen);

/*
 * The network process (SMTP front end, relay, admin page) needs sockets,
 * threads, DNS and TLS, so its filter is a deny list instead: no running
 * programs (execve, execveat), no reading or writing other processes'
 * memory (ptrace, process_vm_readv, process_vm_writev), no new privileges
 * or kernel surfaces it never uses (bpf, perf_event_open, userfaultfd,
 * keyctl, mount, kexec, modules). Killed, except under ASan, whose reports
 * run a symbolizer (execve: EPERM there) and whose leak checker uses ptrace
 * (allowed there).
 */
int	sandbox_network(char *err, size_t errlen);

/* The parent of "serve" once its children run: signals, waiting for
 * children, its channels, sd_notify. */
int	sandbox_parent(char *err, size_t errlen);
/* The relay process: upstream sockets, DNS, TLS, the spool and its I/O
 * thread, the queue's control socket, its keeper channels. */
int	sandbox_relay(char *err, size_t errlen);
/* The SMTP front end: accepting LAN connections, TLS, its channels; on
 * SIGHUP it re-reads the configuration and the certificate. */
int	sandbox_smtp(char *err, size_t errlen);
/* The admin process: accepting admin connections (HTTP, TLS), worker
 * threads, reading the audit log, its channels to the keeper and the relay,
 * and one upstream connection (DNS, TLS) to verify a new App Password. */
int	sandbox_admin(char *err, size_t errlen);

#endif
