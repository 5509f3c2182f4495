/*
 * keeper_verify.c: admin logins checked on a thread of the vault keeper
 * (keeper_verify.h). The loop prepares each check (a copy of the user's
 * hash and the password in guarded memory) and queues it; the thread runs
 * Argon2id on that copy alone and hands it back under the mutex; a byte on
 * a pipe wakes the loop, which sends the answer on the channel the request
 * came by and wipes the check. The thread is started after the keeper's
 * seccomp filter is on: sandbox_keeper() allows clone() for threads only.
 */
#include "keeper_verify.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <unistd.h>

#include <event2/event.h>
#include <sodium.h>

#include "credential.h"
#include "ipc.h"
#include "keeper.h"
#include "log.h"
#include "util.h"

struct keeper_check {
	TAILQ_ENTRY(keeper_check) entry;
	struct ipc		*ipc;
	uint16_t		 type;
	uint32_t		 id;
	struct cred_admin_check	 chk;
};
TAILQ_HEAD(keeper_check_list, keeper_check);

struct keeper_verifier {
	pthread_mutex_t		 mu;
	pthread_cond_t		 cv;
	struct keeper_check_list todo, done;
	size_t			 n;		/* queued, running or done, not yet answered */
	int			 stop;
	int			 started;
	pthread_t		 thread;
	int			 pipe_rd, pipe_wr;
	struct event		*ev;
};

static void
check_free(struct keeper_check *c)
{
	cred_admin_check_wipe(&c->chk);
	sodium_memzero(c, sizeof(*c));
	free(c);
}

static void *
verifier_main(void *arg)
{
	struct keeper_verifier *kv = arg;
	struct keeper_check *c;
	char one = 1;

	pthread_mutex_lock(&kv->mu);
	for (;;) {
		while (!kv->stop && TAILQ_EMPTY(&kv->todo))
			pthread_cond_wait(&kv->cv, &kv->mu);
		if (kv->stop)
			break;
		c = TAILQ_FIRST(&kv->todo);
		TAILQ_REMOVE(&kv->todo, c, entry);
		pthread_mutex_unlock(&kv->mu);
		cred_admin_check_run(&c->chk);
		/* The password is not needed any more. */
		vault_secret_wipe(&c->chk.password);
		pthread_mutex_lock(&kv->mu);
		TAILQ_INSERT_TAIL(&kv->done, c, entry);
		/* The pipe only wakes the loop; a full pipe already will. */
		(void)!write(kv->pipe_wr, &one, 1);
	}
	pthread_mutex_unlock(&kv->mu);
	return NULL;
}

static void
verifier_answer(struct ipc *ipc, uint16_t type, uint32_t id, enum keeper_verify_result res,
    const char *name)
{
	unsigned char out[KEEPER_VERIFY_REPLY_MAX];
	struct ipc_buf b = { out, 0, sizeof(out), 0 };

	ipc_put_u32(&b, (uint32_t)res);
	ipc_put_str(&b, res == KEEPER_VERIFY_OK ? name : "");
	if (b.failed)
		fatal("keeper: login answer does not fit");
	/* -1: the admin process is gone meanwhile; nobody to tell. */
	if (ipc_send(ipc, (uint16_t)(type | KEEPER_REPLY), id, -1, b.p, b.len) == -1)
		log_warn("event=keeper_admin_verify note=\"channel %s closed; answer dropped\"",
		    ipc_peer(ipc));
}

/* On the loop: answer every finished check. */
static void
verifier_wake(evutil_socket_t fd, short what, void *arg)
{
	struct keeper_verifier *kv = arg;
	struct keeper_check_list ready;
	struct keeper_check *c;
	char buf[64];

	while (read(kv->pipe_rd, buf, sizeof(buf)) > 0)
		;
	TAILQ_INIT(&ready);
	pthread_mutex_lock(&kv->mu);
	while ((c = TAILQ_FIRST(&kv->done)) != NULL) {
		TAILQ_REMOVE(&kv->done, c, entry);
		TAILQ_INSERT_TAIL(&ready, c, entry);
		kv->n--;
	}
	pthread_mutex_unlock(&kv->mu);
	while ((c = TAILQ_FIRST(&ready)) != NULL) {
		TAILQ_REMOVE(&ready, c, entry);
		verifier_answer(c->ipc, c->type, c->id, c->chk.ok ? KEEPER_VERIFY_OK :
		    KEEPER_VERIFY_FAILED, c->chk.name);
		check_free(c);
	}
}

struct keeper_verifier *
keeper_verifier_new(struct event_base *base)
{
	struct keeper_verifier *kv;
	int fds[2];

	if ((kv = calloc(1, sizeof(*kv))) == NULL)
		return NULL;
	kv->pipe_rd = kv->pipe_wr = -1;
	TAILQ_INIT(&kv->todo);
	TAILQ_INIT(&kv->done);
	if (pthread_mutex_init(&kv->mu, NULL) != 0) {
		free(kv);
		return NULL;
	}
	if (pthread_cond_init(&kv->cv, NULL) != 0) {
		pthread_mutex_destroy(&kv->mu);
		free(kv);
		return NULL;
	}
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) == -1)
		goto fail;
	kv->pipe_rd = fds[0];
	kv->pipe_wr = fds[1];
	if ((kv->ev = event_new(base, kv->pipe_rd, EV_READ | EV_PERSIST, verifier_wake,
	    kv)) == NULL || event_add(kv->ev, NULL) == -1)
		goto fail;
	if (pthread_create(&kv->thread, NULL, verifier_main, kv) != 0)
		goto fail;
	kv->started = 1;
	return kv;
fail:
	keeper_verifier_free(kv);
	return NULL;
}

void
keeper_verifier_free(struct keeper_verifier *kv)
{
	struct keeper_check *c;

	if (kv == NULL)
		return;
	pthread_mutex_lock(&kv->mu);
	kv->stop = 1;
	pthread_cond_broadcast(&kv->cv);
	pthread_mutex_unlock(&kv->mu);
	if (kv->started)
		pthread_join(kv->thread, NULL);
	/* No thread left: the lists are ours. */
	while ((c = TAILQ_FIRST(&kv->todo)) != NULL) {
		TAILQ_REMOVE(&kv->todo, c, entry);
		check_free(c);
	}
	while ((c = TAILQ_FIRST(&kv->done)) != NULL) {
		TAILQ_REMOVE(&kv->done, c, entry);
		check_free(c);
	}
	if (kv->ev != NULL)
		event_free(kv->ev);
	if (kv->pipe_rd != -1)
		close(kv->pipe_rd);
	if (kv->pipe_wr != -1)
		close(kv->pipe_wr);
	pthread_cond_destroy(&kv->cv);
	pthread_mutex_destroy(&kv->mu);
	free(kv);
}

void
keeper_verifier_submit(struct keeper_verifier *kv, struct credstore *cs, struct ipc *ipc,
    uint16_t type, uint32_t id, const char *name, const unsigned char *password, size_t len)
{
	struct keeper_check *c;
	int busy;

	pthread_mutex_lock(&kv->mu);
	busy = kv->n >= KEEPER_VERIFY_MAX;
	pthread_mutex_unlock(&kv->mu);
	if (busy || (c = calloc(1, sizeof(*c))) == NULL) {
		log_warn("event=keeper_admin_verify peer=%s note=\"%d logins being checked; "
		    "busy\"", ipc_peer(ipc), KEEPER_VERIFY_MAX);
		verifier_answer(ipc, type, id, KEEPER_VERIFY_BUSY, "");
		return;
	}
	c->ipc = ipc;
	c->type = type;
	c->id = id;
	/* The hash is copied on the loop, which alone reloads the vault. */
	credstore_admin_check_prepare(cs, name, &c->chk);
	if (vault_secret_set(&c->chk.password, password, len) == -1)
		fatal("keeper: out of guarded memory");
	pthread_mutex_lock(&kv->mu);
	TAILQ_INSERT_TAIL(&kv->todo, c, entry);
	kv->n++;
	pthread_cond_signal(&kv->cv);
	pthread_mutex_unlock(&kv->mu);
}
