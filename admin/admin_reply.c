/*
 * admin_reply.c: how a route builds its reply (status, content type, body,
 * extra headers) into the request, for admin_server.c to queue with the
 * headers every response carries. Kept apart from the libmicrohttpd glue so
 * that the fuzz harnesses (tests/fuzz/fuzz_admin_*.c) run the real thing.
 */
#include "admin_internal.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "util.h"

void
admin_reply_buf(struct admin_req *r, int status, const char *ctype, int api, char *body,
    size_t len)
{
	/* Headers already added (a cookie, Retry-After) stay. */
	free(r->reply.body);
	r->reply.status = status;
	r->reply.ctype = ctype;
	r->reply.api = api;
	r->reply.body = body;
	r->reply.len = len;
	r->have_reply = 1;
}

void
admin_reply_json(struct admin_req *r, int status, json_t *obj)
{
	char *s;

	if (obj == NULL || (s = json_dumps(obj, JSON_COMPACT | JSON_ENSURE_ASCII)) == NULL) {
		json_decref(obj);
		admin_reply_buf(r, 500, "application/json", 1,
		    strdup("{\"error\":\"out of memory\"}"), 25);
		return;
	}
	json_decref(obj);
	admin_reply_buf(r, status, "application/json", 1, s, strlen(s));
}

const char *
admin_reply_text(const char *s, char *buf, size_t buflen)
{
	json_t *j;

	if (s == NULL)
		return NULL;
	/* jansson decides what a JSON string may hold: ask it. */
	if ((j = json_string(s)) != NULL) {
		json_decref(j);
		return s;
	}
	return log_escape(buf, buflen, s, strlen(s));
}

void
admin_reply_error(struct admin_req *r, int status, const char *fmt, ...)
{
	char msg[ADMIN_ERROR_MAX], esc[4 * ADMIN_ERROR_MAX];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/*
	 * msg may quote client text (a JSON key, a path segment) that is not
	 * UTF-8, or was cut inside a UTF-8 sequence; json_pack() would refuse
	 * it and the client would get 500 "out of memory" instead of this.
	 */
	admin_reply_json(r, status, json_pack("{s:s}", "error",
	    admin_reply_text(msg, esc, sizeof(esc))));
}

void
admin_reply_header(struct admin_req *r, const char *name, const char *value)
{
	struct admin_reply *rep = &r->reply;

	if (rep->n_headers >= ADMIN_REPLY_HEADERS)
		return;
	strlcpy(rep->hname[rep->n_headers], name, sizeof(rep->hname[0]));
	strlcpy(rep->hval[rep->n_headers], value, sizeof(rep->hval[0]));
	rep->n_headers++;
}
