/*
 * spool.c: the queue's file operations (see spool.h for the layout and the
 * rules). Everything works relative to directory descriptors opened once,
 * so that a long spool_dir path or a rename of the directory above cannot
 * make a write land elsewhere. Blocking calls only: the daemon runs them
 * on its spool I/O thread (spool_io.c), the CLI directly under the lock.
 */
#include "spool.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "util.h"

#define SPOOL_LOCK_NAME		"lock"
#define SPOOL_STATE_SUFFIX	".st"
#define SPOOL_TMP_SUFFIX	".tmp"
#define SPOOL_NAME_MAX		(SPOOL_ID_MAX + 16)	/* ".ID.st.tmp" */
#define SPOOL_LOCK_POLL_MS	10
#define SPOOL_IOV_MAX		64	/* iovecs per writev() */
#define SPOOL_SCAN_MAX		(16 * 1024 * 1024)	/* directory entries looked at */

static const char *const area_names[SPOOL_AREAS] = { "queue", "failed", "corrupt" };

struct spool {
	char	path[PATH_MAX];
	int	dirfd;
	int	areafd[SPOOL_AREAS];	/* -1 when the area does not exist */
	int	lockfd;
	int	locked;
	uid_t	uid;			/* owner of spool_dir: files made by root go to it */
	gid_t	gid;
};

/* Root (a CLI command) hands what it creates to the spool's owner. */
static void
adopt(const struct spool *sp, int fd)
{
	if (geteuid() == 0 && sp->uid != 0)
		(void)!fchown(fd, sp->uid, sp->gid);
}

int
spool_open(const char *dir, int flags, struct spool **out, char *err, size_t errlen)
{
	struct spool *sp;
	struct stat st;
	int i, fd;

	*out = NULL;
	if ((sp = calloc(1, sizeof(*sp))) == NULL) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	sp->dirfd = sp->lockfd = -1;
	for (i = 0; i < SPOOL_AREAS; i++)
		sp->areafd[i] = -1;
	if (strlcpy(sp->path, dir, sizeof(sp->path)) >= sizeof(sp->path)) {
		snprintf(err, errlen, "spool_dir path too long: %s", dir);
		goto fail;
	}
	if ((flags & SPOOL_CREATE) && mkdir(dir, 0700) == -1 && errno != EEXIST) {
		snprintf(err, errlen, "cannot create spool_dir %s: %s", dir, strerror(errno));
		goto fail;
	}
	if ((sp->dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) == -1) {
		snprintf(err, errlen, "cannot open spool_dir %s: %s", dir, strerror(errno));
		goto fail;
	}
	if (fstat(sp->dirfd, &st) == -1) {
		snprintf(err, errlen, "cannot stat spool_dir %s: %s", dir, strerror(errno));
		goto fail;
	}
	sp->uid = st.st_uid;
	sp->gid = st.st_gid;
	for (i = 0; i < SPOOL_AREAS; i++) {
		if ((flags & SPOOL_CREATE) && mkdirat(sp->dirfd, area_names[i], 0700) == 0) {
			if ((fd = openat(sp->dirfd, area_names[i], O_RDONLY | O_DIRECTORY |
			    O_CLOEXEC)) != -1) {
				adopt(sp, fd);
				close(fd);
			}
		} else if ((flags & SPOOL_CREATE) && errno != EEXIST) {
			snprintf(err, errlen, "cannot create %s/%s: %s", dir, area_names[i],
			    strerror(errno));
			goto fail;
		}
		sp->areafd[i] = openat(sp->dirfd, area_names[i], O_RDONLY | O_DIRECTORY |
		    O_CLOEXEC);
		if (sp->areafd[i] == -1 && ((flags & SPOOL_CREATE) || errno != ENOENT)) {
			snprintf(err, errlen, "cannot open %s/%s: %s", dir, area_names[i],
			    strerror(errno));
			goto fail;
		}
	}
	if ((sp->lockfd = openat(sp->dirfd, SPOOL_LOCK_NAME, O_RDWR | O_CREAT | O_CLOEXEC,
	    0600)) == -1) {
		snprintf(err, errlen, "cannot open %s/%s: %s", dir, SPOOL_LOCK_NAME,
		    strerror(errno));
		goto fail;
	}
	adopt(sp, sp->lockfd);
	*out = sp;
	return 0;
fail:
	spool_close(sp);
	return -1;
}

void
spool_close(struct spool *sp)
{
	int i;

	if (sp == NULL)
		return;
	for (i = 0; i < SPOOL_AREAS; i++)
		if (sp->areafd[i] != -1)
			close(sp->areafd[i]);
	if (sp->lockfd != -1)
		close(sp->lockfd);	/* releases the lock */
	if (sp->dirfd != -1)
		close(sp->dirfd);
	free(sp);
}

const char *
spool_path(const struct spool *sp)
{
	return sp->path;
}

int
spool_dirfd(const struct spool *sp)
{
	return sp->dirfd;
}

int
spool_lock(struct spool *sp, unsigned wait_ms)
{
	struct timespec nap = { 0, SPOOL_LOCK_POLL_MS * 1000000L };
	unsigned waited = 0;

	if (sp->locked)
		return 0;
	for (;;) {
		if (flock(sp->lockfd, LOCK_EX | LOCK_NB) == 0) {
			sp->locked = 1;
			return 0;
		}
		if (errno == EINTR)
			continue;
		if (errno != EWOULDBLOCK || waited >= wait_ms)
			return -1;
		nanosleep(&nap, NULL);
		waited += SPOOL_LOCK_POLL_MS;
	}
}

int
spool_file_path(const struct spool *sp, enum spool_area a, const char *id, char *buf,
    size_t len)
{
	int n = snprintf(buf, len, "%s/%s/%s", sp->path, area_names[a], id);

	return n < 0 || (size_t)n >= len ? -1 : 0;
}

static int
area_fd(const struct spool *sp, enum spool_area a)
{
	if ((unsigned)a >= SPOOL_AREAS || sp->areafd[a] == -1) {
		errno = ENOENT;
		return -1;
	}
	return sp->areafd[a];
}

static int
name_of(char *buf, size_t len, const char *id, const char *suffix1, const char *suffix2,
    int hidden)
{
	int n;

	if (!spool_id_valid(id)) {
		errno = EINVAL;
		return -1;
	}
	n = snprintf(buf, len, "%s%s%s%s", hidden ? "." : "", id, suffix1, suffix2);
	if (n < 0 || (size_t)n >= len) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return 0;
}

/* write() all of buf, retrying short writes. */
static int
write_full(int fd, const char *buf, size_t len)
{
	ssize_t n;

	while (len > 0) {
		n = write(fd, buf, len);
		if (n == -1 && errno == EINTR)
			continue;
		if (n == -1)
			return -1;
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Write the whole evbuffer without draining it (it stays the caller's). */
static int
write_evbuffer(int fd, struct evbuffer *body)
{
	struct evbuffer_iovec v[SPOOL_IOV_MAX];
	struct iovec iov[SPOOL_IOV_MAX];
	struct evbuffer_ptr pos;
	size_t total = evbuffer_get_length(body), done = 0, want;
	ssize_t n;
	int i, cnt;

	while (done < total) {
		if (evbuffer_ptr_set(body, &pos, done, EVBUFFER_PTR_SET) == -1) {
			errno = EIO;
			return -1;
		}
		cnt = evbuffer_peek(body, (ev_ssize_t)(total - done), &pos, v, SPOOL_IOV_MAX);
		if (cnt <= 0) {
			errno = EIO;
			return -1;
		}
		if (cnt > SPOOL_IOV_MAX)
			cnt = SPOOL_IOV_MAX;
		want = 0;
		for (i = 0; i < cnt; i++) {
			iov[i].iov_base = v[i].iov_base;
			iov[i].iov_len = v[i].iov_len;
			if (want + v[i].iov_len > total - done)
				iov[i].iov_len = total - done - want;
			want += iov[i].iov_len;
		}
		do {
			n = writev(fd, iov, cnt);
		} while (n == -1 && errno == EINTR);
		if (n == -1)
			return -1;
		if (n == 0) {
			errno = EIO;
			return -1;
		}
		/* After a short writev the next round starts where it stopped. */
		done += (size_t)n;
	}
	return 0;
}

/*
 * Write a new file atomically: temporary name, data, fsync, close, rename.
 * On failure the temporary file is gone and errno tells why.
 */
static int
write_temp(const struct spool *sp, int dfd, const char *tmp, const char *a, size_t alen,
    struct evbuffer *b, int sync)
{
	int fd, saved;

	if ((fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600)) == -1)
		return -1;
	adopt(sp, fd);
	if (write_full(fd, a, alen) == -1 || (b != NULL && write_evbuffer(fd, b) == -1) ||
	    (sync && fsync(fd) == -1))
		goto fail;
	if (close(fd) == -1) {
		fd = -1;
		goto fail;
	}
	return 0;
fail:
	saved = errno;
	if (fd != -1)
		close(fd);
	(void)unlinkat(dfd, tmp, 0);
	errno = saved;
	return -1;
}

static int
write_atomic(const struct spool *sp, int dfd, const char *tmp, const char *final,
    const char *a, size_t alen, struct evbuffer *b)
{
	int saved;

	if (write_temp(sp, dfd, tmp, a, alen, b, 1) == -1)
		return -1;
	if (renameat(dfd, tmp, dfd, final) == -1) {
		saved = errno;
		(void)unlinkat(dfd, tmp, 0);
		errno = saved;
		return -1;
	}
	return 0;
}

int
spool_write_temp(struct spool *sp, const char *id, const char *hdr, size_t hdrlen,
    struct evbuffer *body, int flags)
{
	char tmp[SPOOL_NAME_MAX];
	int dfd;

	if ((dfd = area_fd(sp, SPOOL_QUEUE)) == -1 ||
	    name_of(tmp, sizeof(tmp), id, SPOOL_TMP_SUFFIX, "", 1) == -1)
		return -1;
	return write_temp(sp, dfd, tmp, hdr, hdrlen, body, !(flags & SPOOL_DEFER_SYNC));
}

int
spool_commit(struct spool *sp, const char *id)
{
	char tmp[SPOOL_NAME_MAX], final[SPOOL_NAME_MAX];
	int dfd;

	if ((dfd = area_fd(sp, SPOOL_QUEUE)) == -1 ||
	    name_of(tmp, sizeof(tmp), id, SPOOL_TMP_SUFFIX, "", 1) == -1 ||
	    name_of(final, sizeof(final), id, "", "", 0) == -1)
		return -1;
	return renameat(dfd, tmp, dfd, final);
}

void
spool_discard(struct spool *sp, const char *id)
{
	char tmp[SPOOL_NAME_MAX];
	int dfd, saved = errno;

	if ((dfd = area_fd(sp, SPOOL_QUEUE)) != -1 &&
	    name_of(tmp, sizeof(tmp), id, SPOOL_TMP_SUFFIX, "", 1) == 0)
		(void)unlinkat(dfd, tmp, 0);
	errno = saved;
}

int
spool_sync_data(struct spool *sp)
{
	return syncfs(sp->dirfd);
}

int
spool_create(struct spool *sp, const char *id, const char *hdr, size_t hdrlen,
    struct evbuffer *body)
{
	int saved;

	if (spool_write_temp(sp, id, hdr, hdrlen, body, 0) == -1)
		return -1;
	if (spool_commit(sp, id) == -1) {
		saved = errno;
		spool_discard(sp, id);
		errno = saved;
		return -1;
	}
	return 0;
}

int
spool_state_write(struct spool *sp, enum spool_area a, const char *id, const char *text,
    size_t len)
{
	char tmp[SPOOL_NAME_MAX], final[SPOOL_NAME_MAX];
	int dfd;

	if ((dfd = area_fd(sp, a)) == -1 ||
	    name_of(tmp, sizeof(tmp), id, SPOOL_STATE_SUFFIX, SPOOL_TMP_SUFFIX, 1) == -1 ||
	    name_of(final, sizeof(final), id, SPOOL_STATE_SUFFIX, "", 0) == -1)
		return -1;
	return write_atomic(sp, dfd, tmp, final, text, len, NULL);
}

int
spool_remove(struct spool *sp, enum spool_area a, const char *id)
{
	char name[SPOOL_NAME_MAX];
	int dfd;

	if ((dfd = area_fd(sp, a)) == -1 || name_of(name, sizeof(name), id, "", "", 0) == -1)
		return -1;
	/* The message first: a state file alone is cleaned up at start. */
	if (unlinkat(dfd, name, 0) == -1 && errno != ENOENT)
		return -1;
	if (name_of(name, sizeof(name), id, SPOOL_STATE_SUFFIX, "", 0) == -1)
		return -1;
	if (unlinkat(dfd, name, 0) == -1 && errno != ENOENT)
		return -1;
	return 0;
}

int
spool_move(struct spool *sp, const char *id, enum spool_area from, enum spool_area to)
{
	char name[SPOOL_NAME_MAX];
	int ffd, tfd;

	if ((ffd = area_fd(sp, from)) == -1 || (tfd = area_fd(sp, to)) == -1 ||
	    name_of(name, sizeof(name), id, "", "", 0) == -1)
		return -1;
	if (renameat(ffd, name, tfd, name) == -1)
		return -1;
	if (name_of(name, sizeof(name), id, SPOOL_STATE_SUFFIX, "", 0) == -1)
		return -1;
	if (renameat(ffd, name, tfd, name) == -1 && errno != ENOENT)
		return -1;
	return 0;
}

int
spool_sync(struct spool *sp, enum spool_area a)
{
	int dfd;

	if ((dfd = area_fd(sp, a)) == -1)
		return -1;
	return fsync(dfd);
}

/* ---- Reading ------------------------------------------------------------- */

static ssize_t
read_some(int fd, char *buf, size_t len)
{
	ssize_t n;

	do {
		n = read(fd, buf, len);
	} while (n == -1 && errno == EINTR);
	return n;
}

/* Read the state file of area/ID, or make a fresh state when there is none. */
static int
load_state(int dfd, const char *id, size_t n_rcpts, struct spool_state *st, char *err,
    size_t errlen)
{
	char name[SPOOL_NAME_MAX], *buf = NULL;
	size_t len = 0;
	ssize_t n;
	int fd, rc = -1;

	memset(st, 0, sizeof(*st));
	if (name_of(name, sizeof(name), id, SPOOL_STATE_SUFFIX, "", 0) == -1)
		return -1;
	if ((fd = openat(dfd, name, O_RDONLY | O_CLOEXEC)) == -1) {
		if (errno == ENOENT)
			return 0;
		snprintf(err, errlen, "cannot open %s.st: %s", id, strerror(errno));
		return -1;
	}
	if ((buf = malloc(SPOOL_STATE_MAX + 1)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto done;
	}
	while (len <= SPOOL_STATE_MAX && (n = read_some(fd, buf + len,
	    SPOOL_STATE_MAX + 1 - len)) > 0)
		len += (size_t)n;
	if (len > SPOOL_STATE_MAX) {
		snprintf(err, errlen, "%s.st: longer than %d bytes", id, SPOOL_STATE_MAX);
		errno = EBADMSG;
		goto done;
	}
	if (spool_state_parse(buf, len, n_rcpts, st, err, errlen) == -1) {
		errno = EBADMSG;
		goto done;
	}
	rc = 0;
done:
	close(fd);
	free(buf);
	return rc;
}

int
spool_load(struct spool *sp, enum spool_area a, const char *id, struct relay_msg *msg,
    struct spool_meta *meta, struct spool_state *st, int with_body, char *err, size_t errlen)
{
	char name[SPOOL_NAME_MAX], perr[256], *buf = NULL, *nbuf;
	struct evbuffer_iovec v[1];
	struct stat fst;
	size_t len = 0, cap = SPOOL_READ_CHUNK, hdrlen = 0, left;
	ssize_t n;
	int dfd, fd = -1, rc, saved;

	memset(msg, 0, sizeof(*msg));
	memset(meta, 0, sizeof(*meta));
	memset(st, 0, sizeof(*st));
	if ((dfd = area_fd(sp, a)) == -1 || name_of(name, sizeof(name), id, "", "", 0) == -1) {
		snprintf(err, errlen, "%s: %s", id, strerror(errno));
		return -1;
	}
	if ((fd = openat(dfd, name, O_RDONLY | O_CLOEXEC)) == -1 || fstat(fd, &fst) == -1) {
		saved = errno;
		snprintf(err, errlen, "cannot open %s/%s: %s", area_names[a], id, strerror(errno));
		if (fd != -1)
			close(fd);
		errno = saved;
		return -1;
	}
	if ((buf = malloc(cap)) == NULL)
		goto oom;
	for (;;) {
		if (len == cap) {
			if (cap >= SPOOL_HEADER_MAX)
				goto bad_header;
			cap = cap * 2 > SPOOL_HEADER_MAX ? SPOOL_HEADER_MAX : cap * 2;
			if ((nbuf = realloc(buf, cap)) == NULL)
				goto oom;
			buf = nbuf;
		}
		if ((n = read_some(fd, buf + len, cap - len)) == -1) {
			saved = errno;
			snprintf(err, errlen, "cannot read %s/%s: %s", area_names[a], id,
			    strerror(errno));
			errno = saved;
			goto fail;
		}
		len += (size_t)n;
		rc = spool_envelope_parse(buf, len, msg, meta, &hdrlen, perr, sizeof(perr));
		if (rc == 0)
			break;
		if (rc == -1 || n == 0)
			goto bad_header;
	}
	if (strcmp(msg->queue_id, id) != 0) {
		snprintf(perr, sizeof(perr), "its id is %s", msg->queue_id);
		goto bad_header;
	}
	if ((uint64_t)fst.st_size != hdrlen + meta->size) {
		snprintf(err, errlen, "%s/%s: %llu bytes, the envelope says %llu (cut off or "
		    "damaged)", area_names[a], id, (unsigned long long)fst.st_size,
		    (unsigned long long)(hdrlen + meta->size));
		errno = EBADMSG;
		goto fail;
	}
	if (with_body) {
		if ((msg->data = evbuffer_new()) == NULL)
			goto oom;
		left = (size_t)meta->size;
		if (len > hdrlen) {
			evbuffer_add(msg->data, buf + hdrlen, len - hdrlen);
			left -= len - hdrlen;
		}
		while (left > 0) {
			if (evbuffer_reserve_space(msg->data, (ev_ssize_t)(left < SPOOL_READ_CHUNK ?
			    left : SPOOL_READ_CHUNK), v, 1) < 1)
				goto oom;
			if (v[0].iov_len > left)
				v[0].iov_len = left;
			if ((n = read_some(fd, v[0].iov_base, v[0].iov_len)) <= 0) {
				snprintf(err, errlen, "cannot read %s/%s: %s", area_names[a], id,
				    n == 0 ? "file shrank" : strerror(errno));
				errno = n == 0 ? EBADMSG : errno;
				goto fail;
			}
			v[0].iov_len = (size_t)n;
			evbuffer_commit_space(msg->data, v, 1);
			left -= (size_t)n;
		}
	}
	if (load_state(dfd, id, msg->n_rcpts, st, perr, sizeof(perr)) == -1) {
		saved = errno;
		snprintf(err, errlen, "%s/%s.st: %s", area_names[a], id, perr);
		errno = saved;
		goto fail;
	}
	close(fd);
	free(buf);
	return 0;
oom:
	snprintf(err, errlen, "out of memory");
	errno = ENOMEM;
	goto fail;
bad_header:
	snprintf(err, errlen, "%s/%s: bad envelope: %s", area_names[a], id, perr);
	errno = EBADMSG;
fail:
	saved = errno;
	if (msg->data != NULL)
		evbuffer_free(msg->data);
	msg->data = NULL;
	spool_msg_clear(msg);
	spool_meta_free(meta);
	spool_state_free(st);
	close(fd);
	free(buf);
	errno = saved;
	return -1;
}

/* ---- Scanning ------------------------------------------------------------ */

static int
ends_with(const char *s, const char *suffix)
{
	size_t n = strlen(s), m = strlen(suffix);

	return n >= m && strcmp(s + n - m, suffix) == 0;
}

static int
exists_at(int dfd, const char *name)
{
	struct stat st;

	return dfd != -1 && fstatat(dfd, name, &st, AT_SYMLINK_NOFOLLOW) == 0;
}

static int
name_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

int
spool_scan(struct spool *sp, enum spool_area a, int cleanup, int (*cb)(void *, const char *),
    void *arg, size_t *cleaned, char *err, size_t errlen)
{
	struct dirent *de;
	DIR *d;
	char **names = NULL, **nn, id[SPOOL_ID_MAX];
	size_t n = 0, cap = 0, i, len, looked = 0;
	enum spool_area other;
	int dfd, ofd, fd, rc = -1;

	if (cleaned != NULL)
		*cleaned = 0;
	if ((unsigned)a >= SPOOL_AREAS || sp->areafd[a] == -1)
		return 0;	/* no such area yet: nothing in it */
	dfd = sp->areafd[a];
	if ((fd = dup(dfd)) == -1 || (d = fdopendir(fd)) == NULL) {
		snprintf(err, errlen, "cannot read %s/%s: %s", sp->path, area_names[a],
		    strerror(errno));
		if (fd != -1)
			close(fd);
		return -1;
	}
	rewinddir(d);
	while ((de = readdir(d)) != NULL && looked++ < SPOOL_SCAN_MAX) {
		if (strcmp(de->d_name, ".") == 0 || strcmp(de->d_name, "..") == 0)
			continue;
		if (n == cap) {
			cap = cap == 0 ? 256 : cap * 2;
			if ((nn = reallocarray(names, cap, sizeof(*names))) == NULL)
				goto oom;
			names = nn;
		}
		if ((names[n] = strdup(de->d_name)) == NULL)
			goto oom;
		n++;
	}
	closedir(d);
	d = NULL;
	if (n > 1)
		qsort(names, n, sizeof(*names), name_cmp);
	other = a == SPOOL_QUEUE ? SPOOL_FAILED : SPOOL_QUEUE;
	ofd = a == SPOOL_CORRUPT ? -1 : sp->areafd[other];
	for (i = 0; i < n; i++) {
		const char *name = names[i];

		if (name[0] == '.') {
			/* A write that never finished: nobody was told about it. */
			if (cleanup && ends_with(name, SPOOL_TMP_SUFFIX) &&
			    unlinkat(dfd, name, 0) == 0 && cleaned != NULL)
				(*cleaned)++;
			continue;
		}
		if (ends_with(name, SPOOL_STATE_SUFFIX)) {
			len = strlen(name) - strlen(SPOOL_STATE_SUFFIX);
			if (!cleanup || len >= sizeof(id))
				continue;
			memcpy(id, name, len);
			id[len] = '\0';
			if (!spool_id_valid(id) || exists_at(dfd, id))
				continue;
			/* A move between areas stopped half way: finish it. */
			if (exists_at(ofd, id) && !exists_at(ofd, name) &&
			    renameat(dfd, name, ofd, name) == 0)
				continue;
			if (unlinkat(dfd, name, 0) == 0 && cleaned != NULL)
				(*cleaned)++;
			continue;
		}
		if (!spool_id_valid(name))
			continue;
		if (cb(arg, name) != 0)
			break;
	}
	rc = 0;
	goto done;
oom:
	snprintf(err, errlen, "out of memory");
	if (d != NULL)
		closedir(d);
done:
	for (i = 0; i < n; i++)
		free(names[i]);
	free(names);
	return rc;
}
