/*
 * ipc.h: typed, versioned messages between smtpvault's processes, in the
 * spirit of OpenSMTPD's mproc/imsg. One message is one SOCK_SEQPACKET
 * record: a fixed header (version, flags, type, request id, payload length)
 * and a payload whose length each side checks against a per-type rule table.
 * An fd may ride along (SCM_RIGHTS). Anything malformed or unexpected is a
 * broken invariant between our own processes: by default the receiving
 * process logs it and exits (STYLE.md: fatal() is for broken invariants).
 * Payload buffers are wiped after use, because some messages carry secrets.
 */
#ifndef SMTPVAULT_IPC_H
#define SMTPVAULT_IPC_H

#include <stddef.h>
#include <stdint.h>

struct event_base;

#define IPC_VERSION		1
#define IPC_HDR_LEN		12		/* version, flags, type, id, len */
#define IPC_PAYLOAD_MAX		(128 * 1024)	/* hard bound on any payload */
#define IPC_MSG_MAX		(IPC_HDR_LEN + IPC_PAYLOAD_MAX)
#define IPC_FLAG_FD		0x01		/* an fd accompanies the message */
#define IPC_FLAGS_KNOWN		IPC_FLAG_FD
#define IPC_EXIT_FATAL		3		/* exit status after a protocol error */
#define IPC_SYNC_TIMEOUT_MS	60000		/* a blocking call gives up after this */

enum ipc_fd_rule { IPC_FD_NONE = 0, IPC_FD_REQUIRED, IPC_FD_OPTIONAL };

/* What one side accepts: each type with its payload length bounds. */
struct ipc_rule {
	uint16_t	type;
	uint32_t	min_len;
	uint32_t	max_len;
	enum ipc_fd_rule fd;
};

/* A received message; data is valid (and then wiped) during the callback
 * only. fd is -1 or owned by the receiver. */
struct ipc_msg {
	uint16_t		 type;
	uint32_t		 id;
	int			 fd;
	const unsigned char	*data;
	size_t			 len;
};

enum ipc_event { IPC_EV_CLOSED = 1, IPC_EV_MALFORMED, IPC_EV_IOERROR };

struct ipc;
typedef void ipc_recv_cb(struct ipc *ipc, const struct ipc_msg *m, void *arg);
/* The channel is dead after this. NULL: log and exit(IPC_EXIT_FATAL). */
typedef void ipc_event_cb(struct ipc *ipc, enum ipc_event ev, const char *why, void *arg);

/* A connected SOCK_SEQPACKET pair, close-on-exec. 0 or -1. */
int	ipc_socketpair(int sv[2]);

/* Event-driven channel over fd (taken over: closed by ipc_free). */
struct ipc *ipc_new(struct event_base *base, int fd, const char *peer,
	    const struct ipc_rule *rules, size_t n_rules, ipc_recv_cb *recv_cb,
	    ipc_event_cb *event_cb, void *arg);
void	ipc_free(struct ipc *ipc);
const char *ipc_peer(const struct ipc *ipc);
/* Queue one message (the payload is copied; passfd, if >= 0, is dup'ed).
 * 0, or -1 when it is too large or memory runs out. */
int	ipc_send(struct ipc *ipc, uint16_t type, uint32_t id, int passfd,
	    const void *data, size_t len);
/* The same with the payload in pieces (copied once, into the record). */
struct iovec;
int	ipc_sendv(struct ipc *ipc, uint16_t type, uint32_t id, int passfd,
	    const struct iovec *iov, size_t iovcnt);

/*
 * Check one raw record against the rules: header version, known flags,
 * declared length equal to the record's, a known type, its length bounds
 * and fd rule. 0 with out filled (data points into raw), or -1 with why.
 */
int	ipc_validate(const struct ipc_rule *rules, size_t n_rules,
	    const unsigned char *raw, size_t rawlen, int has_fd, int truncated,
	    struct ipc_msg *out, char *why, size_t whylen);

/* Blocking use, for a synchronous client with its own socket. */
int	ipc_send_sync(int fd, uint16_t type, uint32_t id, int passfd, const void *data,
	    size_t len, char *err, size_t errlen);
/* Receive one message into buf (IPC_MSG_MAX bytes); m->data points into it.
 * -1 on close, timeout, or a record the rules refuse. */
int	ipc_recv_sync(int fd, const struct ipc_rule *rules, size_t n_rules,
	    unsigned char *buf, size_t buflen, struct ipc_msg *m, char *err, size_t errlen);

/* Payload helpers: a bounded reader/writer of fixed-width fields and
 * length-prefixed strings (u16 length, no NUL on the wire). */
struct ipc_buf {
	unsigned char	*p;
	size_t		 len, cap;
	int		 failed;
};
struct ipc_rd {
	const unsigned char *p;
	size_t		 len, off;
	int		 failed;
};
void	ipc_put_u32(struct ipc_buf *b, uint32_t v);
void	ipc_put_u64(struct ipc_buf *b, uint64_t v);
void	ipc_put_str(struct ipc_buf *b, const char *s);
void	ipc_put_bytes(struct ipc_buf *b, const void *p, size_t len);
/* Bytes with no length prefix (the rest of a payload). */
void	ipc_put_raw(struct ipc_buf *b, const void *p, size_t len);
uint32_t ipc_get_u32(struct ipc_rd *r);
uint64_t ipc_get_u64(struct ipc_rd *r);
/* Copies a string into dst (NUL-terminated); fails if it does not fit or
 * holds a NUL. */
void	ipc_get_str(struct ipc_rd *r, char *dst, size_t dstlen);
/* A string that may be NULL: a u32 presence flag (0 or 1), then the string.
 * ipc_get_nstr returns dst, or NULL when it was NULL. */
void	ipc_put_nstr(struct ipc_buf *b, const char *s);
char	*ipc_get_nstr(struct ipc_rd *r, char *dst, size_t dstlen);
/* Points at the next len-prefixed bytes without copying. */
const unsigned char *ipc_get_bytes(struct ipc_rd *r, size_t *len);
/* 0 when every field was read and nothing is left over, else -1. */
int	ipc_rd_done(const struct ipc_rd *r);

#endif
