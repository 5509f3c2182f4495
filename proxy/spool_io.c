/*
 * spool_io.c: the spool's I/O thread and its group commit (see spool_io.h).
 *
 * One worker thread takes everything submitted so far as a batch. New
 * messages of the batch are written to temporary files and made durable
 * (one fsync each, or one syncfs() for them all). Then the audit events of
 * the whole batch, the new messages' first, go to the log as one append
 * (one write and one fdatasync in the keeper, audit_append_many()). Only a
 * new message whose "queued" event is durable is renamed into place; its
 * names share a single fsync of queue/, and then it is answered. So a
 * failed or interrupted append (the keeper gone, its link timed out, which
 * ends this process) leaves nothing but temporary files, which start-up
 * discards: no message is ever kept, and delivered, without its event.
 * The other operations come after, and every directory they touched is
 * fsync'd once at the end.
 * No timer is needed to form batches: under load, the sessions that arrive
 * while a batch is on its way to the disk make up the next one.
 *
 * The thread touches nothing of the event loop: results come back through
 * an eventfd that the loop watches.
 */
#include "spool_io.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>

#include "audit.h"
#include "log.h"
#include "util.h"

#define SPOOL_IO_SYNCFS_MIN	8	/* new messages in a batch for one syncfs() */
#define SPOOL_IO_PROBE_EVERY	32	/* large batches between tries of the other way */
#define SPOOL_IO_EWMA_WEIGHT	8	/* cost averages: new sample weighs 1/8 */

TAILQ_HEAD(op_list, spool_io_op);

struct spool_io {
	struct spool		*sp;
	struct audit		*audit;		/* the thread's own handle */
	struct audit		*batch_audit;	/* the same, read by the thread */
	/* Thread only: what a new message has cost lately, ns, each way. */
	uint64_t		cost_fsync, cost_syncfs;
	unsigned		since_probe;
	pthread_t		thread;
	int			started;
	pthread_mutex_t		mu;
	pthread_cond_t		cv;
	struct op_list		pending;	/* submitted, for the thread */
	struct op_list		finished;	/* done, for the loop */
	int			stopping;
	int			efd;
	struct event		*ev;
	struct spool_io_stats	stats;
};

struct spool_io_op *
spool_io_op_new(enum spool_io_kind kind, const char *id)
{
	struct spool_io_op *op;

	if ((op = calloc(1, sizeof(*op))) == NULL)
		return NULL;
	op->kind = kind;
	strlcpy(op->id, id, sizeof(op->id));
	return op;
}

void
spool_io_op_free(struct spool_io_op *op)
{
	if (op == NULL)
		return;
	free(op->text);
	json_decref(op->event);
	if (op->loaded.data != NULL)
		evbuffer_free(op->loaded.data);
	spool_msg_clear(&op->loaded);
	spool_meta_free(&op->meta);
	spool_state_free(&op->state);
	free(op);
}

static uint64_t
mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void
op_error(struct spool_io_op *op, int error, const char *what)
{
	if (op->error != 0)
		return;
	op->error = error != 0 ? error : EIO;
	snprintf(op->errtext, sizeof(op->errtext), "%s: %s", what, strerror(op->error));
}

/* Append n events at once; the ops whose event did not make it fail. */
static void
audit_flush(struct spool_io *io, struct spool_io_op **ops, json_t **events, size_t n)
{
	char err[512];
	size_t written, i;

	if (n == 0 || audit_append_many(io->batch_audit, events, n, &written, err,
	    sizeof(err)) == 0)
		return;
	for (i = written; i < n; i++) {
		ops[i]->audit_failed = 1;
		log_err("event=audit_failed queue_id=%s error=\"%s\"", ops[i]->id, err);
		if (ops[i]->kind != SPOOL_IO_CREATE)
			continue;
		/* Nothing is accepted unrecorded: its file was never published. */
		op_error(ops[i], EIO, "cannot write the audit log");
		spool_discard(io->sp, ops[i]->id);
	}
}

/*
 * The events of a batch in as few appends as possible (AUDIT_BATCH_MAX
 * each): those of the new messages whose temporary files are durable, then
 * those of the other operations, each of which is carried out after its
 * event. A new message whose event could not be written loses its
 * temporary file; the other operations go ahead and report audit_failed.
 */
static void
batch_audit(struct spool_io *io, struct op_list *creates, struct op_list *others,
    struct spool_io_stats *st)
{
	struct spool_io_op *ops[AUDIT_BATCH_MAX], *op;
	json_t *events[AUDIT_BATCH_MAX];
	struct op_list *lists[2] = { creates, others };
	uint64_t t0 = mono_ns();
	size_t n = 0, l;

	if (io->batch_audit == NULL)
		return;
	for (l = 0; l < 2; l++) {
		TAILQ_FOREACH(op, lists[l], entry) {
			if (op->event == NULL || op->error != 0 || op->kind == SPOOL_IO_LOAD)
				continue;
			ops[n] = op;
			events[n++] = op->event;
			if (n == AUDIT_BATCH_MAX) {
				audit_flush(io, ops, events, n);
				n = 0;
			}
		}
	}
	audit_flush(io, ops, events, n);
	st->ns_audit += mono_ns() - t0;
}

/* Hand finished ops to the loop. */
static void
publish(struct spool_io *io, struct op_list *done)
{
	uint64_t one = 1;
	ssize_t n;

	if (TAILQ_EMPTY(done))
		return;
	pthread_mutex_lock(&io->mu);
	TAILQ_CONCAT(&io->finished, done, entry);
	pthread_mutex_unlock(&io->mu);
	do {
		n = write(io->efd, &one, sizeof(one));
	} while (n == -1 && errno == EINTR);
}

/*
 * New messages, first half: durable temporary files. A large batch can be
 * made durable with one syncfs() instead of one fsync() per file: the files
 * are written and the filesystem flushed. syncfs() also flushes whatever
 * else is dirty on that filesystem, so which way is cheaper depends on the
 * neighbours: the thread keeps the recent cost per message of both ways,
 * uses the cheaper one, and tries the other now and then. Small batches
 * always fsync per file. Either way no name points to data that is not on
 * disk: the files are renamed into place only after their events
 * (batch_creates_publish).
 */
static int
choose_syncfs(struct spool_io *io, size_t n)
{
	int cheaper;

	if (n < SPOOL_IO_SYNCFS_MIN)
		return 0;
	if (io->cost_syncfs == 0 || io->cost_fsync == 0)
		return io->cost_syncfs == 0;		/* try each way once */
	cheaper = io->cost_syncfs <= io->cost_fsync;
	if (++io->since_probe >= SPOOL_IO_PROBE_EVERY) {
		io->since_probe = 0;
		return !cheaper;
	}
	return cheaper;
}

static void
cost_update(uint64_t *avg, uint64_t total_ns, size_t n)
{
	uint64_t sample = total_ns / (n > 0 ? n : 1);

	*avg = *avg == 0 ? sample :
	    (*avg * (SPOOL_IO_EWMA_WEIGHT - 1) + sample) / SPOOL_IO_EWMA_WEIGHT;
}

static void
batch_creates_write(struct spool_io *io, struct op_list *ops, struct spool_io_stats *st)
{
	struct spool_io_op *op;
	uint64_t t0 = mono_ns();
	size_t n = 0;
	int written = 0, saved, defer;

	TAILQ_FOREACH(op, ops, entry)
		n++;
	defer = choose_syncfs(io, n);
	TAILQ_FOREACH(op, ops, entry) {
		if (spool_write_temp(io->sp, op->id, op->text, op->textlen, op->body,
		    defer ? SPOOL_DEFER_SYNC : 0) == -1)
			op_error(op, errno, "cannot write the spool file");
		else
			written++;
		st->creates++;
	}
	if (defer && written > 0 && spool_sync_data(io->sp) == -1) {
		saved = errno;
		TAILQ_FOREACH(op, ops, entry) {
			if (op->error != 0)
				continue;
			op_error(op, saved, "cannot sync the spool");
			spool_discard(io->sp, op->id);
		}
	}
	if (defer)
		st->syncfs++;
	t0 = mono_ns() - t0;
	st->ns_files += t0;
	cost_update(defer ? &io->cost_syncfs : &io->cost_fsync, t0, n);
}

/*
 * A new message whose "queued" event is durable but whose file could not be
 * published: the client gets no 250, and the log says so with a second
 * event, "rejected", carrying the error (best effort: when it cannot be
 * written either, the error log line stays).
 */
static void
audit_unqueue(struct spool_io *io, struct spool_io_op *op)
{
	char err[512], reply[SPOOL_IO_ERR_MAX + 32];
	json_t *ev;
	int rc = -1;

	log_err("event=spool_failed queue_id=%s error=\"%s\" note=\"its queued event is in "
	    "the audit log; the message was refused\"", op->id, op->errtext);
	if (io->batch_audit == NULL || op->event == NULL)
		return;
	snprintf(reply, sizeof(reply), "451 4.3.0 %s", op->errtext);
	if ((ev = json_deep_copy(op->event)) == NULL ||
	    json_object_set_new(ev, "status",
	    json_string(audit_status_name(AUDIT_STATUS_REJECTED))) == -1 ||
	    json_object_set_new(ev, "upstream_reply", json_string(reply)) == -1)
		snprintf(err, sizeof(err), "out of memory");
	else
		rc = audit_append(io->batch_audit, ev, err, sizeof(err));
	if (rc == -1)
		log_err("event=audit_failed queue_id=%s error=\"%s\"", op->id, err);
	json_decref(ev);
}

/*
 * New messages, second half, once their events are durable: rename each
 * into place and fsync queue/ once for all of them.
 */
static void
batch_creates_publish(struct spool_io *io, struct op_list *ops, struct spool_io_stats *st)
{
	struct spool_io_op *op;
	uint64_t t0 = mono_ns();
	int renamed = 0, saved, rc;

	TAILQ_FOREACH(op, ops, entry) {
		if (op->error != 0)
			continue;
		if (spool_commit(io->sp, op->id) == -1) {
			op_error(op, errno, "cannot rename the spool file");
			spool_discard(io->sp, op->id);
			audit_unqueue(io, op);
		} else {
			renamed++;
		}
	}
	st->ns_files += mono_ns() - t0;
	if (renamed == 0)
		return;
	st->dir_syncs++;
	t0 = mono_ns();
	rc = spool_sync(io->sp, SPOOL_QUEUE);
	st->ns_dir_syncs += mono_ns() - t0;
	if (rc == 0)
		return;
	/* Whether the names are durable is unknown: take them back. */
	saved = errno;
	TAILQ_FOREACH(op, ops, entry) {
		if (op->error != 0)
			continue;
		op_error(op, saved, "cannot sync the spool directory");
		(void)spool_remove(io->sp, SPOOL_QUEUE, op->id);
		audit_unqueue(io, op);
	}
}

static void
run_one(struct spool_io *io, struct spool_io_op *op, int touched[SPOOL_AREAS],
    struct spool_io_stats *st)
{
	char err[SPOOL_IO_ERR_MAX];
	uint64_t t0;

	t0 = mono_ns();

	switch (op->kind) {
	case SPOOL_IO_CREATE:
		break;
	case SPOOL_IO_STATE:
		if (spool_state_write(io->sp, op->area, op->id, op->text, op->textlen) == -1)
			op_error(op, errno, "cannot write the state file");
		touched[op->area] = 1;
		break;
	case SPOOL_IO_REMOVE:
		if (spool_remove(io->sp, op->area, op->id) == -1)
			op_error(op, errno, "cannot remove the message");
		touched[op->area] = 1;
		break;
	case SPOOL_IO_FAIL:
		if (spool_state_write(io->sp, SPOOL_QUEUE, op->id, op->text, op->textlen) == -1)
			op_error(op, errno, "cannot write the state file");
		else if (spool_move(io->sp, op->id, SPOOL_QUEUE, SPOOL_FAILED) == -1)
			op_error(op, errno, "cannot move the message to failed/");
		touched[SPOOL_QUEUE] = touched[SPOOL_FAILED] = 1;
		break;
	case SPOOL_IO_RESTORE:
		if (spool_state_write(io->sp, SPOOL_FAILED, op->id, op->text, op->textlen) == -1)
			op_error(op, errno, "cannot write the state file");
		else if (spool_move(io->sp, op->id, SPOOL_FAILED, SPOOL_QUEUE) == -1)
			op_error(op, errno, "cannot move the message to queue/");
		touched[SPOOL_QUEUE] = touched[SPOOL_FAILED] = 1;
		break;
	case SPOOL_IO_LOAD:
		if (spool_load(io->sp, op->area, op->id, &op->loaded, &op->meta, &op->state, 1,
		    err, sizeof(err)) == -1) {
			op->error = errno != 0 ? errno : EIO;
			strlcpy(op->errtext, err, sizeof(op->errtext));
		}
		break;
	}
	st->ns_other += mono_ns() - t0;
}

static void
batch_run(struct spool_io *io, struct op_list *batch)
{
	struct op_list creates, others;
	struct spool_io_op *op;
	struct spool_io_stats st;
	uint64_t t0;
	int touched[SPOOL_AREAS] = { 0 }, a;

	memset(&st, 0, sizeof(st));

	TAILQ_INIT(&creates);
	TAILQ_INIT(&others);
	while ((op = TAILQ_FIRST(batch)) != NULL) {
		TAILQ_REMOVE(batch, op, entry);
		st.ops++;
		if (op->kind == SPOOL_IO_CREATE)
			TAILQ_INSERT_TAIL(&creates, op, entry);
		else
			TAILQ_INSERT_TAIL(&others, op, entry);
	}
	st.batches = 1;
	if (!TAILQ_EMPTY(&creates))
		batch_creates_write(io, &creates, &st);
	batch_audit(io, &creates, &others, &st);
	if (!TAILQ_EMPTY(&creates))
		batch_creates_publish(io, &creates, &st);
	publish(io, &creates);
	TAILQ_FOREACH(op, &others, entry)
		run_one(io, op, touched, &st);
	for (a = 0; a < SPOOL_AREAS; a++) {
		if (!touched[a])
			continue;
		st.dir_syncs++;
		t0 = mono_ns();
		if (spool_sync(io->sp, (enum spool_area)a) == -1)
			log_warn("event=spool_sync area=%d error=\"%s\"", a, strerror(errno));
		st.ns_dir_syncs += mono_ns() - t0;
	}
	publish(io, &others);
	pthread_mutex_lock(&io->mu);
	io->stats.batches += st.batches;
	io->stats.ops += st.ops;
	io->stats.creates += st.creates;
	io->stats.dir_syncs += st.dir_syncs;
	io->stats.syncfs += st.syncfs;
	io->stats.ns_files += st.ns_files;
	io->stats.ns_dir_syncs += st.ns_dir_syncs;
	io->stats.ns_audit += st.ns_audit;
	io->stats.ns_other += st.ns_other;
	pthread_mutex_unlock(&io->mu);
}

static void *
worker(void *arg)
{
	struct spool_io *io = arg;
	struct op_list batch;

	TAILQ_INIT(&batch);
	pthread_mutex_lock(&io->mu);
	for (;;) {
		while (TAILQ_EMPTY(&io->pending) && !io->stopping)
			pthread_cond_wait(&io->cv, &io->mu);
		if (TAILQ_EMPTY(&io->pending))
			break;
		TAILQ_CONCAT(&batch, &io->pending, entry);
		io->batch_audit = io->audit;
		pthread_mutex_unlock(&io->mu);
		batch_run(io, &batch);
		pthread_mutex_lock(&io->mu);
	}
	pthread_mutex_unlock(&io->mu);
	return NULL;
}

/* On the loop: run the done() callbacks of finished ops. */
static void
finished_cb(evutil_socket_t fd, short what, void *arg)
{
	struct spool_io *io = arg;
	struct op_list done;
	struct spool_io_op *op;
	uint64_t n;

	(void)!read(io->efd, &n, sizeof(n));
	TAILQ_INIT(&done);
	pthread_mutex_lock(&io->mu);
	TAILQ_CONCAT(&done, &io->finished, entry);
	pthread_mutex_unlock(&io->mu);
	while ((op = TAILQ_FIRST(&done)) != NULL) {
		TAILQ_REMOVE(&done, op, entry);
		op->done(op, op->arg);
	}
}

struct spool_io *
spool_io_new(struct event_base *base, struct spool *sp, char *err, size_t errlen)
{
	struct spool_io *io;

	if ((io = calloc(1, sizeof(*io))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	io->sp = sp;
	io->efd = -1;
	TAILQ_INIT(&io->pending);
	TAILQ_INIT(&io->finished);
	pthread_mutex_init(&io->mu, NULL);
	pthread_cond_init(&io->cv, NULL);
	if ((io->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) == -1) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		goto fail;
	}
	if ((io->ev = event_new(base, io->efd, EV_READ | EV_PERSIST, finished_cb, io)) == NULL ||
	    event_add(io->ev, NULL) == -1) {
		snprintf(err, errlen, "cannot watch the spool I/O thread");
		goto fail;
	}
	if ((errno = pthread_create(&io->thread, NULL, worker, io)) != 0) {
		snprintf(err, errlen, "cannot start the spool I/O thread: %s", strerror(errno));
		goto fail;
	}
	io->started = 1;
	return io;
fail:
	spool_io_free(io);
	return NULL;
}

void
spool_io_set_audit(struct spool_io *io, struct audit *a)
{
	pthread_mutex_lock(&io->mu);
	if (io->audit == NULL)
		io->audit = a;
	else
		audit_close(a);
	pthread_mutex_unlock(&io->mu);
}

void
spool_io_submit(struct spool_io *io, struct spool_io_op *op)
{
	pthread_mutex_lock(&io->mu);
	TAILQ_INSERT_TAIL(&io->pending, op, entry);
	pthread_cond_signal(&io->cv);
	pthread_mutex_unlock(&io->mu);
}

void
spool_io_free(struct spool_io *io)
{
	struct spool_io_op *op;

	if (io == NULL)
		return;
	if (io->started) {
		pthread_mutex_lock(&io->mu);
		io->stopping = 1;
		pthread_cond_signal(&io->cv);
		pthread_mutex_unlock(&io->mu);
		pthread_join(io->thread, NULL);
	}
	while ((op = TAILQ_FIRST(&io->finished)) != NULL) {
		TAILQ_REMOVE(&io->finished, op, entry);
		spool_io_op_free(op);
	}
	while ((op = TAILQ_FIRST(&io->pending)) != NULL) {
		TAILQ_REMOVE(&io->pending, op, entry);
		spool_io_op_free(op);
	}
	if (io->ev != NULL)
		event_free(io->ev);
	if (io->efd != -1)
		close(io->efd);
	audit_close(io->audit);
	pthread_cond_destroy(&io->cv);
	pthread_mutex_destroy(&io->mu);
	free(io);
}

void
spool_io_stats(struct spool_io *io, struct spool_io_stats *st)
{
	pthread_mutex_lock(&io->mu);
	*st = io->stats;
	pthread_mutex_unlock(&io->mu);
}
