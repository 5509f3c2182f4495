/*
 * admin_session.c: admin page sessions and login throttling, in memory.
 *
 * Sessions: a fresh random 256-bit id at every login (the cookie value),
 * kept only as its BLAKE2b hash so that a memory dump does not hand out
 * live cookies and lookups compare in constant time; each has its own
 * 256-bit CSRF token. A session ends ADMIN_SESSION_IDLE seconds after its
 * last request or ADMIN_SESSION_ABSOLUTE seconds after login, whichever
 * comes first; a restart ends them all. The table is bounded: beyond
 * ADMIN_SESSIONS_MAX the least recently used session is dropped.
 *
 * Throttling: per key ("user:<name>" or "ip:<address>"), the times of the
 * last ADMIN_THROTTLE_FAILS failures. When that many fall inside the
 * window (attempts still being verified count too, so a burst of parallel
 * guesses is cut off as well), further attempts are refused until the
 * oldest of them leaves the window. Times are monotonic seconds.
 */
#include "admin_internal.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <sodium.h>

#include "util.h"

struct admin_sessions {
	struct admin_session	s[ADMIN_SESSIONS_MAX];
};

struct throttle_entry {
	char		key[ADMIN_THROTTLE_KEY_MAX];
	time_t		fails[ADMIN_THROTTLE_FAILS];	/* ascending; n_fails used */
	size_t		n_fails;
	unsigned	pending;
	time_t		last;
	time_t		noted_until;	/* a refusal was reported until then */
	int		used;
};

struct admin_throttle {
	struct throttle_entry	e[ADMIN_THROTTLE_KEYS];
};

/* ---- Sessions ------------------------------------------------------------- */

struct admin_sessions *
admin_sessions_new(void)
{
	return calloc(1, sizeof(struct admin_sessions));
}

void
admin_sessions_free(struct admin_sessions *ss)
{
	if (ss == NULL)
		return;
	sodium_memzero(ss, sizeof(*ss));
	free(ss);
}

static void
session_hash(const char *id, unsigned char out[32])
{
	crypto_generichash(out, 32, (const unsigned char *)id, strlen(id), NULL, 0);
}

static int
session_live(const struct admin_session *s, time_t now)
{
	return s->used && now - s->last < ADMIN_SESSION_IDLE &&
	    now - s->created < ADMIN_SESSION_ABSOLUTE;
}

static int
id_well_formed(const char *id)
{
	size_t i;

	if (id == NULL || strlen(id) != ADMIN_TOKEN_HEX)
		return 0;
	for (i = 0; i < ADMIN_TOKEN_HEX; i++)
		if (!((id[i] >= '0' && id[i] <= '9') || (id[i] >= 'a' && id[i] <= 'f')))
			return 0;
	return 1;
}

const struct admin_session *
admin_session_create(struct admin_sessions *ss, const char *user, const char *ip, time_t now,
    char id_out[ADMIN_TOKEN_HEX + 1])
{
	struct admin_session *s = NULL;
	size_t i;

	for (i = 0; i < ADMIN_SESSIONS_MAX; i++) {
		if (!session_live(&ss->s[i], now)) {
			s = &ss->s[i];
			break;
		}
		if (s == NULL || ss->s[i].last < s->last)
			s = &ss->s[i];
	}
	memset(s, 0, sizeof(*s));
	admin_token_new(id_out);
	session_hash(id_out, s->idhash);
	admin_token_new(s->csrf);
	strlcpy(s->user, user, sizeof(s->user));
	strlcpy(s->ip, ip, sizeof(s->ip));
	s->created = s->last = now;
	s->used = 1;
	return s;
}

static struct admin_session *
session_lookup(struct admin_sessions *ss, const char *id)
{
	unsigned char h[32];
	size_t i;

	if (!id_well_formed(id))
		return NULL;
	session_hash(id, h);
	for (i = 0; i < ADMIN_SESSIONS_MAX; i++)
		if (ss->s[i].used && sodium_memcmp(ss->s[i].idhash, h, sizeof(h)) == 0)
			return &ss->s[i];
	return NULL;
}

const struct admin_session *
admin_session_find(struct admin_sessions *ss, const char *id, time_t now)
{
	struct admin_session *s;

	if ((s = session_lookup(ss, id)) == NULL)
		return NULL;
	if (!session_live(s, now)) {
		sodium_memzero(s, sizeof(*s));
		return NULL;
	}
	s->last = now;
	return s;
}

void
admin_session_destroy(struct admin_sessions *ss, const char *id)
{
	struct admin_session *s;

	if ((s = session_lookup(ss, id)) != NULL)
		sodium_memzero(s, sizeof(*s));
}

size_t
admin_session_count(const struct admin_sessions *ss, time_t now)
{
	size_t i, n = 0;

	for (i = 0; i < ADMIN_SESSIONS_MAX; i++)
		n += session_live(&ss->s[i], now) ? 1 : 0;
	return n;
}

/* ---- Throttling ------------------------------------------------------------ */

struct admin_throttle *
admin_throttle_new(void)
{
	return calloc(1, sizeof(struct admin_throttle));
}

void
admin_throttle_free(struct admin_throttle *t)
{
	free(t);
}

/* Drop failures that have left the window. */
static void
entry_prune(struct throttle_entry *e, time_t now)
{
	size_t i = 0;

	while (i < e->n_fails && now - e->fails[i] >= ADMIN_THROTTLE_WINDOW)
		i++;
	if (i > 0) {
		memmove(e->fails, e->fails + i, (e->n_fails - i) * sizeof(e->fails[0]));
		e->n_fails -= i;
	}
}

static struct throttle_entry *
entry_get(struct admin_throttle *t, const char *key, time_t now, int create)
{
	struct throttle_entry *e, *victim = NULL;
	size_t i;

	for (i = 0; i < ADMIN_THROTTLE_KEYS; i++) {
		e = &t->e[i];
		if (e->used && strcasecmp(e->key, key) == 0) {
			entry_prune(e, now);
			return e;
		}
	}
	if (!create)
		return NULL;
	/* A free or idle slot first; else the one unused the longest. */
	for (i = 0; i < ADMIN_THROTTLE_KEYS; i++) {
		e = &t->e[i];
		if (e->used) {
			entry_prune(e, now);
			if (e->n_fails > 0 || e->pending > 0) {
				if (victim == NULL || (victim->used && e->last < victim->last))
					victim = e;
				continue;
			}
		}
		victim = e;
		break;
	}
	memset(victim, 0, sizeof(*victim));
	strlcpy(victim->key, key, sizeof(victim->key));
	victim->used = 1;
	victim->last = now;
	return victim;
}

int
admin_throttle_check(struct admin_throttle *t, const char *key, time_t now,
    time_t *retry_after, int *first_refusal)
{
	struct throttle_entry *e = entry_get(t, key, now, 0);
	time_t wait;

	*retry_after = 0;
	*first_refusal = 0;
	if (e == NULL || e->n_fails + e->pending < ADMIN_THROTTLE_FAILS)
		return 0;
	/* Only parallel attempts in flight: they end within a second. */
	wait = 1;
	if (e->n_fails >= ADMIN_THROTTLE_FAILS ||
	    (e->n_fails > 0 && e->fails[0] + ADMIN_THROTTLE_WINDOW - now > wait))
		wait = e->fails[0] + ADMIN_THROTTLE_WINDOW - now;
	if (wait < 1)
		wait = 1;
	*retry_after = wait;
	if (now >= e->noted_until) {
		*first_refusal = 1;
		e->noted_until = now + wait;
	}
	return -1;
}

void
admin_throttle_begin(struct admin_throttle *t, const char *key, time_t now)
{
	struct throttle_entry *e = entry_get(t, key, now, 1);

	e->pending++;
	e->last = now;
}

void
admin_throttle_end(struct admin_throttle *t, const char *key, time_t now, int failed)
{
	struct throttle_entry *e = entry_get(t, key, now, failed);

	if (e == NULL)
		return;
	if (e->pending > 0)
		e->pending--;
	e->last = now;
	if (!failed)
		return;
	if (e->n_fails == ADMIN_THROTTLE_FAILS) {
		memmove(e->fails, e->fails + 1, (ADMIN_THROTTLE_FAILS - 1) * sizeof(e->fails[0]));
		e->n_fails--;
	}
	e->fails[e->n_fails++] = now;
}

void
admin_throttle_clear(struct admin_throttle *t, const char *key)
{
	struct throttle_entry *e;
	size_t i;

	for (i = 0; i < ADMIN_THROTTLE_KEYS; i++) {
		e = &t->e[i];
		if (e->used && strcasecmp(e->key, key) == 0) {
			e->n_fails = 0;
			e->noted_until = 0;
			return;
		}
	}
}
