/*
 * spool_io.h: the spool's I/O thread. Every write to the spool and every
 * audit event of the queue goes through here, so that the event loop never
 * waits for a disk, and so that the fsyncs of many concurrent sessions are
 * batched (group commit): while one batch is being made durable, the next
 * collects; a batch's new message files share one fsync of the directory.
 *
 * Order: operations are carried out in the order they were submitted, with
 * one exception that is safe because the queue never has two operations in
 * flight for the same message: within a batch, new messages (CREATE) go
 * first and are answered first, so that a client's "250" does not wait for
 * the bookkeeping of deliveries.
 *
 * For a CREATE the client's 250 may only follow once done() reports success:
 * the message is written to a temporary file and fsync'd, its "queued"
 * event fsync'd in the audit log, and only then is the file renamed into
 * place and its directory fsync'd. When the event cannot be written (or
 * this process ends while it is being written) only the temporary file is
 * left, which start-up discards: no message is kept without its event.
 * When the rename or the directory's fsync fails after the event, the op
 * fails and a "rejected" event follows the "queued" one.
 *
 * done() runs on the event loop thread, in completion order. The op stays
 * the caller's: free it with spool_io_op_free() (in done() or later).
 */
#ifndef SMTPVAULT_SPOOL_IO_H
#define SMTPVAULT_SPOOL_IO_H

#include <stddef.h>
#include <stdint.h>
#include <sys/queue.h>

#include <jansson.h>

#include "spool.h"

struct event_base;
struct evbuffer;
struct audit;

#define SPOOL_IO_ERR_MAX	256

enum spool_io_kind {
	SPOOL_IO_CREATE,	/* write and sync a temporary file, the event, publish queue/ID */
	SPOOL_IO_STATE,		/* the event, then replace area/ID.st with text */
	SPOOL_IO_REMOVE,	/* the event, then remove area/ID */
	SPOOL_IO_FAIL,		/* the event, state text into queue/, move to failed/ */
	SPOOL_IO_RESTORE,	/* state text into failed/, move to queue/ */
	SPOOL_IO_LOAD,		/* read area/ID back, with its body */
};

struct spool_io_op {
	TAILQ_ENTRY(spool_io_op) entry;
	enum spool_io_kind	kind;
	char			id[SPOOL_ID_MAX];
	enum spool_area		area;		/* STATE, REMOVE, LOAD */
	char			*text;		/* envelope or state text, owned */
	size_t			textlen;
	struct evbuffer		*body;		/* CREATE: borrowed, read only */
	json_t			*event;		/* audit event, owned, or NULL */

	/* Results. */
	int			error;		/* errno of the spool operation, 0 = done */
	int			audit_failed;	/* the event could not be written */
	char			errtext[SPOOL_IO_ERR_MAX];
	struct relay_msg	loaded;		/* LOAD: envelope and body (msg.data) */
	struct spool_meta	meta;
	struct spool_state	state;

	void			(*done)(struct spool_io_op *op, void *arg);
	void			*arg;
};

struct spool_io;

/* Start the thread. sp stays the caller's. */
struct spool_io *spool_io_new(struct event_base *base, struct spool *sp, char *err,
	    size_t errlen);
/* The audit log for the events of later ops: a handle for this thread alone
 * (NULL: no audit), closed by spool_io_free(). Set it once. */
void	spool_io_set_audit(struct spool_io *io, struct audit *a);
/* Carry out everything submitted (done() is not called any more), stop the
 * thread, free the ops still waiting for their done(). */
void	spool_io_free(struct spool_io *io);

struct spool_io_op *spool_io_op_new(enum spool_io_kind kind, const char *id);
void	spool_io_op_free(struct spool_io_op *op);
void	spool_io_submit(struct spool_io *io, struct spool_io_op *op);

/* Figures for logs and the benchmark. */
struct spool_io_stats {
	uint64_t	batches;	/* rounds of the thread */
	uint64_t	ops;
	uint64_t	creates;
	uint64_t	dir_syncs;
	uint64_t	syncfs;		/* batches made durable with one syncfs() */
	/* Where the thread's time went, nanoseconds. */
	uint64_t	ns_files;	/* new message files: write, fsync, rename */
	uint64_t	ns_dir_syncs;
	uint64_t	ns_audit;	/* audit appends (one fdatasync a batch) */
	uint64_t	ns_other;	/* state files, removals, moves, loads */
};
void	spool_io_stats(struct spool_io *io, struct spool_io_stats *st);

#endif
