/*
 * admin_metrics.c: GET /metrics in the Prometheus text exposition format
 * (version 0.0.4): a HELP and a TYPE line per metric, label values escaped
 * (backslash, double quote, newline). Counters are the relay's in-memory
 * ones (metrics.h, reset at restart as Prometheus counters may be), asked
 * of it once per scrape (relay_ctl.h); gauges are read now. Runs on the
 * event-loop thread.
 */
#include "admin_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/buffer.h>

#include "credential.h"
#include "metrics.h"
#include "relay_ctl.h"
#include "util.h"

#define METRIC_LABEL_MAX	(2 * VAULT_ADDR_MAX + 1)

static void
metric_head(struct evbuffer *b, const char *name, const char *type, const char *help)
{
	evbuffer_add_printf(b, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* The relay's counters, as one snapshot for the whole scrape. */
struct metric_counts {
	struct relay_ctl_counts	*v;
	size_t			 n;
};

static void
counts_cb(void *arg, const struct relay_ctl_counts *c)
{
	struct metric_counts *mc = arg;
	struct relay_ctl_counts *grown;

	if ((grown = reallocarray(mc->v, mc->n + 1, sizeof(*mc->v))) == NULL)
		return;
	mc->v = grown;
	mc->v[mc->n++] = *c;
}

static const struct relay_ctl_counts *
counts_find(const struct metric_counts *mc, const char *account)
{
	size_t i;

	for (i = 0; i < mc->n; i++)
		if (strcasecmp(mc->v[i].account, account) == 0)
			return &mc->v[i];
	return NULL;
}

/* Every account the vault holds, then those the counters saw besides. */
static const char *
account_name(struct admin_server *srv, const struct metric_counts *mc, size_t i,
    struct cred_account_view *view)
{
	size_t nv = credstore_account_count(srv->cs), j, k;
	const char *m;

	if (i < nv)
		return credstore_account_view(srv->cs, i, view) == 0 ? view->info.address : "";
	for (j = 0, k = nv; j < mc->n; j++) {
		struct cred_info ci;

		m = mc->v[j].account;
		if (credstore_info(srv->cs, m, &ci) == CRED_OK &&
		    strcasecmp(ci.address, m) == 0)
			continue;
		if (k++ == i)
			return m;
	}
	return NULL;
}

char *
admin_metrics_text(struct admin_server *srv, size_t *len)
{
	struct evbuffer *b;
	struct cred_account_view *view;
	struct upstream_pool_stats st;
	struct metric_counts mc = { NULL, 0 };
	const struct relay_ctl_counts *cnt;
	char label[METRIC_LABEL_MAX];
	const char *name;
	size_t i, n;
	int s;
	time_t now = time(NULL);
	char *out = NULL;

	if ((b = evbuffer_new()) == NULL || (view = malloc(sizeof(*view))) == NULL) {
		if (b != NULL)
			evbuffer_free(b);
		return NULL;
	}
	if (srv->rc != NULL)
		relay_ctl_metrics(srv->rc, counts_cb, &mc);
	metric_head(b, "smtpvault_messages_total", "counter",
	    "Messages by account and outcome since the daemon started.");
	for (i = 0; (name = account_name(srv, &mc, i, view)) != NULL; i++) {
		admin_prom_escape(name, label, sizeof(label));
		cnt = counts_find(&mc, name);
		for (s = 0; s < METRICS_STATUS_COUNT; s++)
			evbuffer_add_printf(b, "smtpvault_messages_total{account=\"%s\","
			    "status=\"%s\"} %llu\n", label, metrics_status_name(s),
			    (unsigned long long)(cnt != NULL ? cnt->messages[s] : 0));
	}
	metric_head(b, "smtpvault_queue_depth", "gauge",
	    "Messages waiting in the queue (0 in direct mode).");
	evbuffer_add_printf(b, "smtpvault_queue_depth %zu\n", admin_queue_depth(srv));
	metric_head(b, "smtpvault_upstream_sessions", "gauge",
	    "Open upstream SMTP sessions by account.");
	n = credstore_account_count(srv->cs);
	for (i = 0; i < n; i++) {
		if (credstore_account_view(srv->cs, i, view) == -1)
			continue;
		memset(&st, 0, sizeof(st));
		if (srv->rc != NULL)
			relay_ctl_pool(srv->rc, view->info.address, &st);
		admin_prom_escape(view->info.address, label, sizeof(label));
		evbuffer_add_printf(b, "smtpvault_upstream_sessions{account=\"%s\"} %zu\n", label,
		    st.sessions);
	}
	metric_head(b, "smtpvault_upstream_auth_failures_total", "counter",
	    "Upstream refusals of an account's credential since the daemon started.");
	for (i = 0; (name = account_name(srv, &mc, i, view)) != NULL; i++) {
		admin_prom_escape(name, label, sizeof(label));
		cnt = counts_find(&mc, name);
		evbuffer_add_printf(b, "smtpvault_upstream_auth_failures_total{account=\"%s\"} "
		    "%llu\n", label, (unsigned long long)(cnt != NULL ? cnt->auth_failures : 0));
	}
	metric_head(b, "smtpvault_credential_age_seconds", "gauge",
	    "Seconds since the account's current credential became current.");
	for (i = 0; i < n; i++) {
		if (credstore_account_view(srv->cs, i, view) == -1)
			continue;
		admin_prom_escape(view->info.address, label, sizeof(label));
		evbuffer_add_printf(b, "smtpvault_credential_age_seconds{account=\"%s\"} %lld\n",
		    label, (long long)(now - view->rotated > 0 ? now - view->rotated : 0));
	}
	*len = evbuffer_get_length(b);
	if ((out = malloc(*len + 1)) != NULL) {
		evbuffer_remove(b, out, *len);
		out[*len] = '\0';
	}
	free(mc.v);
	free(view);
	evbuffer_free(b);
	return out;
}
