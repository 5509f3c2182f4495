/*
 * fuzz_relay_link.c: libFuzzer harness for the relay process's decoder of
 * the front end's SUBMIT records (relay_link_decode() of
 * proxy/relay_link.h): what a compromised smtp process could send to the
 * process that holds credentials.
 *
 * Input: 1 byte picks the limits (bits 0-1: max_rcpts 1, 2, 10 or 10000;
 * bit 2: log_subject; bits 3-4: max_data 0, 10, 1000 or 1 MiB), the rest is
 * the payload, copied to a buffer of exactly its length (no fd: the fd's
 * checks are in tests/unit/test_relay_link.c). Properties:
 *  - nothing is read past the payload (ASan), nothing leaks (LSan);
 *  - a refusal leaves *out NULL and says why;
 *  - an accepted message keeps the limits (1..max_rcpts recipients, none
 *    empty, data within max_data, no Subject unless log_subject), and the
 *    wire form is canonical: encoding the message again (after the wire
 *    form in relay_link.c) gives back the payload byte for byte.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "ipc.h"
#include "relay.h"
#include "relay_link.h"

#include "fuzz_util.h"

/* relay_link.o's other neighbours, never called by the decoder. */
int
relay_submit(struct relay *r, struct relay_msg *msg, relay_cb *cb, void *arg,
    struct relay_result *res)
{
	abort();
}

void
relay_cancel(struct relay *r, void *arg)
{
	abort();
}

void
relay_msg_free(struct relay_msg *msg)
{
	if (msg == NULL)
		return;
	if (msg->data != NULL)
		evbuffer_free(msg->data);
	free(msg->rcpts);
	free(msg->fields.header_from);
	free(msg->fields.subject);
	free(msg->fields.message_id);
	free(msg);
}

static size_t
encode(const struct relay_msg *m, unsigned char *buf, size_t cap)
{
	struct ipc_buf b = { buf, 0, cap, 0 };
	size_t i, rcpts_len = 0, len = evbuffer_get_length(m->data);

	for (i = 0; i < m->n_rcpts; i++)
		rcpts_len += 2 + strlen(m->rcpts[i]);
	ipc_put_u32(&b, (m->body_8bit ? 1 : 0) | (m->smtputf8 ? 2 : 0));
	ipc_put_str(&b, m->queue_id);
	ipc_put_str(&b, m->account);
	ipc_put_str(&b, m->mail_from);
	ipc_put_str(&b, m->client_ip);
	ipc_put_str(&b, m->client_name);
	ipc_put_str(&b, m->helo);
	ipc_put_nstr(&b, m->fields.header_from);
	ipc_put_nstr(&b, m->fields.subject);
	ipc_put_nstr(&b, m->fields.message_id);
	ipc_put_u32(&b, (uint32_t)m->n_rcpts);
	ipc_put_u32(&b, (uint32_t)rcpts_len);
	ipc_put_u64(&b, len);
	for (i = 0; i < m->n_rcpts; i++)
		ipc_put_str(&b, m->rcpts[i]);
	ipc_put_raw(&b, evbuffer_pullup(m->data, -1), len);
	FUZZ_CHECK(!b.failed, "re-encoding overflows");
	return b.len;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const size_t rcpts[] = { 1, 2, 10, 10000 };
	static const uint64_t datas[] = { 0, 10, 1000, 1024 * 1024 };
	static unsigned char again[IPC_PAYLOAD_MAX];
	struct relay_link_limits lim;
	struct relay_msg *m;
	unsigned char *p;
	char why[256];
	size_t i, n;
	int rc;

	if (size < 1 || size - 1 > IPC_PAYLOAD_MAX)
		return 0;
	lim.max_rcpts = rcpts[data[0] & 3];
	lim.log_subject = (data[0] >> 2) & 1;
	lim.max_data = datas[(data[0] >> 3) & 3];
	n = size - 1;
	if ((p = malloc(n > 0 ? n : 1)) == NULL)
		return 0;
	memcpy(p, data + 1, n);
	why[0] = '\0';
	m = (struct relay_msg *)p;
	rc = relay_link_decode(p, n, -1, &lim, &m, why, sizeof(why));
	if (rc != 0) {
		FUZZ_CHECK(m == NULL, "refused, but a message came out");
		FUZZ_CHECK(why[0] != '\0', "refused without a reason");
		free(p);
		return 0;
	}
	FUZZ_CHECK(m->n_rcpts >= 1 && m->n_rcpts <= lim.max_rcpts, "%zu recipients",
	    m->n_rcpts);
	for (i = 0; i < m->n_rcpts; i++)
		FUZZ_CHECK(m->rcpts[i][0] != '\0', "recipient %zu is empty", i);
	FUZZ_CHECK(evbuffer_get_length(m->data) <= lim.max_data, "data over the limit");
	FUZZ_CHECK(lim.log_subject || m->fields.subject == NULL, "a subject not to be logged");
	if (lim.log_subject) {
		FUZZ_CHECK(encode(m, again, sizeof(again)) == n, "re-encoded length differs");
		FUZZ_CHECK(memcmp(again, p, n) == 0, "re-encoded bytes differ");
	}
	relay_msg_free(m);
	free(p);
	return 0;
}
