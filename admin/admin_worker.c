/*
 * admin_worker.c: a few threads for the admin server's slow work (scans of
 * the audit log), so that the event loop never waits for them.
 *
 * A job is run() on a worker and then done() on the loop thread. Finished
 * jobs go onto a list under the same mutex and a byte on a pipe wakes the
 * loop (the loop is libevent without its thread support, so the pipe is the
 * one hand-off point; nothing else crosses threads). A job must only touch
 * memory it owns while it runs.
 */
#include "admin_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "log.h"

TAILQ_HEAD(admin_job_list, admin_job);

struct admin_workers {
	pthread_mutex_t		 mu;
	pthread_cond_t		 cv;
	struct admin_job_list	 todo;
	struct admin_job_list	 finished;
	size_t			 jobs;		/* queued + running + finished, not yet done() */
	size_t			 max_jobs;
	int			 stop;
	pthread_t		*threads;
	size_t			 n_threads;
	int			 pipe_rd, pipe_wr;
	struct event		*ev;
};

static void *
worker_main(void *arg)
{
	struct admin_workers *w = arg;
	struct admin_job *job;
	char one = 1;

	pthread_mutex_lock(&w->mu);
	for (;;) {
		while (!w->stop && TAILQ_EMPTY(&w->todo))
			pthread_cond_wait(&w->cv, &w->mu);
		if (w->stop)
			break;
		job = TAILQ_FIRST(&w->todo);
		TAILQ_REMOVE(&w->todo, job, entry);
		pthread_mutex_unlock(&w->mu);
		job->run(job);
		pthread_mutex_lock(&w->mu);
		TAILQ_INSERT_TAIL(&w->finished, job, entry);
		/* The pipe only wakes the loop; a full pipe already will. */
		(void)!write(w->pipe_wr, &one, 1);
	}
	pthread_mutex_unlock(&w->mu);
	return NULL;
}

/* On the loop: hand every finished job to its done(). */
static void
workers_wake(evutil_socket_t fd, short what, void *arg)
{
	struct admin_workers *w = arg;
	struct admin_job_list ready;
	struct admin_job *job;
	char buf[64];

	while (read(w->pipe_rd, buf, sizeof(buf)) > 0)
		;
	TAILQ_INIT(&ready);
	pthread_mutex_lock(&w->mu);
	while ((job = TAILQ_FIRST(&w->finished)) != NULL) {
		TAILQ_REMOVE(&w->finished, job, entry);
		TAILQ_INSERT_TAIL(&ready, job, entry);
		w->jobs--;
	}
	pthread_mutex_unlock(&w->mu);
	while ((job = TAILQ_FIRST(&ready)) != NULL) {
		TAILQ_REMOVE(&ready, job, entry);
		job->done(job);
	}
}

struct admin_workers *
admin_workers_new(struct event_base *base, size_t threads, size_t max_jobs)
{
	struct admin_workers *w;
	int fds[2];

	if ((w = calloc(1, sizeof(*w))) == NULL)
		return NULL;
	w->pipe_rd = w->pipe_wr = -1;
	TAILQ_INIT(&w->todo);
	TAILQ_INIT(&w->finished);
	w->max_jobs = max_jobs;
	if (pthread_mutex_init(&w->mu, NULL) != 0) {
		free(w);
		return NULL;
	}
	if (pthread_cond_init(&w->cv, NULL) != 0) {
		pthread_mutex_destroy(&w->mu);
		free(w);
		return NULL;
	}
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) == -1)
		goto fail;
	w->pipe_rd = fds[0];
	w->pipe_wr = fds[1];
	if ((w->ev = event_new(base, w->pipe_rd, EV_READ | EV_PERSIST, workers_wake, w)) == NULL ||
	    event_add(w->ev, NULL) == -1)
		goto fail;
	if ((w->threads = calloc(threads, sizeof(*w->threads))) == NULL)
		goto fail;
	for (w->n_threads = 0; w->n_threads < threads; w->n_threads++)
		if (pthread_create(&w->threads[w->n_threads], NULL, worker_main, w) != 0)
			goto fail;
	return w;
fail:
	admin_workers_free(w);
	return NULL;
}

int
admin_workers_submit(struct admin_workers *w, struct admin_job *job)
{
	int rc = -1;

	job->cancelled = 0;
	pthread_mutex_lock(&w->mu);
	if (!w->stop && w->jobs < w->max_jobs) {
		TAILQ_INSERT_TAIL(&w->todo, job, entry);
		w->jobs++;
		pthread_cond_signal(&w->cv);
		rc = 0;
	}
	pthread_mutex_unlock(&w->mu);
	return rc;
}

void
admin_workers_free(struct admin_workers *w)
{
	struct admin_job *job;
	size_t i;

	if (w == NULL)
		return;
	pthread_mutex_lock(&w->mu);
	w->stop = 1;
	pthread_cond_broadcast(&w->cv);
	pthread_mutex_unlock(&w->mu);
	for (i = 0; i < w->n_threads; i++)
		pthread_join(w->threads[i], NULL);
	/* No thread left: the lists are ours. */
	while ((job = TAILQ_FIRST(&w->finished)) != NULL) {
		TAILQ_REMOVE(&w->finished, job, entry);
		job->cancelled = 1;
		job->done(job);
	}
	while ((job = TAILQ_FIRST(&w->todo)) != NULL) {
		TAILQ_REMOVE(&w->todo, job, entry);
		job->cancelled = 1;
		job->done(job);
	}
	if (w->ev != NULL)
		event_free(w->ev);
	if (w->pipe_rd != -1)
		close(w->pipe_rd);
	if (w->pipe_wr != -1)
		close(w->pipe_wr);
	free(w->threads);
	pthread_cond_destroy(&w->cv);
	pthread_mutex_destroy(&w->mu);
	free(w);
}
