/*
 * queue_ctl.h: the daemon's control socket for "smtpvault queue ..." while
 * it runs: spool_dir/control.sock, a Unix stream socket of mode 0600 owned
 * by the spool's owner; the peer must be root or the daemon's own user
 * (SO_PEERCRED). The daemon alone changes the spool while it runs, so CLI
 * actions cannot race with deliveries.
 *
 * Protocol: the client sends one JSON object on one line:
 *
 *   {"cmd":"list"}
 *   {"cmd":"retry","id":"ID"}  or  {"cmd":"retry","all":true}
 *   {"cmd":"delete","id":"ID","by":"cli:alice"}
 *
 * and reads lines until the daemon closes: for "list" one JSON object per
 * message (spool_entry_json()), then always a final status line
 * {"ok":true,"count":N} or {"ok":false,"status":1|2,"error":"..."} (status
 * is the CLI's exit status: 1 not found / failed, 2 bad request).
 */
#ifndef SMTPVAULT_QUEUE_CTL_H
#define SMTPVAULT_QUEUE_CTL_H

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

struct event_base;
struct queue;

#define QUEUE_CTL_SOCKET	"control.sock"
#define QUEUE_CTL_REQUEST_MAX	4096		/* one request line */
#define QUEUE_CTL_LINE_MAX	(1024 * 1024)	/* one response line */
#define QUEUE_CTL_CONN_MAX	16		/* clients at once */
#define QUEUE_CTL_TIMEOUT	30		/* s, idle client */
#define QUEUE_CTL_BACKLOG	16

struct queue_ctl;

/* Listen on spool_dir/control.sock (dirfd: spool_dir, open). */
struct queue_ctl *queue_ctl_new(struct event_base *base, struct queue *q,
	    const char *spool_dir, int dirfd, char *err, size_t errlen);
/* Close, and remove the socket file. */
void	queue_ctl_free(struct queue_ctl *c);

/*
 * The address of spool_dir's socket. A path too long for sun_path goes
 * through /proc/self/fd/DIRFD/ (dirfd: spool_dir, open, kept open while
 * the address is used). Returns 0, or -1 (errno ENAMETOOLONG).
 */
int	queue_ctl_addr(const char *spool_dir, int dirfd, struct sockaddr_un *sun,
	    socklen_t *len);

#endif
