/*
 * config.c: load smtpvault.conf (SPEC section 3).
 *
 * Every key is one row of config_keys[] below: its section, type, default,
 * limits and where it is stored, so that all limits are visible in one place
 * (the Postfix way). Defaults are written as text and go through the same
 * parser as the file, so a default can never be out of range.
 *
 * The INI syntax is read by inih. Debian's build of inih has limits that
 * would silently change the meaning of a file, so a pre-scan checks each line
 * first and hands inih a normalised copy:
 *   - lines longer than INI_MAX_LINE are split into two by inih; the pre-scan
 *     refuses lines longer than CONFIG_LINE_MAX instead;
 *   - inih knows only ';' as an inline comment; the pre-scan strips inline
 *     comments that start with white space and '#' or ';';
 *   - inih treats an indented line after a key as a continuation of its
 *     value; the copy has no indentation;
 *   - inih never reports an empty section; the pre-scan checks every
 *     section header, and records each key line so that the handler knows
 *     the line number of every key (for duplicate and cross-key errors).
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <arpa/inet.h>

#include <ini.h>

_Static_assert(sizeof(enum delivery_mode) == sizeof(int), "enum fields are int");
_Static_assert(sizeof(enum upstream_tls) == sizeof(int), "enum fields are int");

#define KEY_NAME_MAX	64	/* longer key names are unknown keys anyway */
#define LOCAL_PART_MAX	64	/* RFC 5321 section 4.5.3.1.1 */
#define DOMAIN_MAX	255	/* RFC 5321 section 4.5.3.1.2 */
#define MSG_MAX		512	/* one error message before "file:line: " */

#define SECONDS_MINUTE	UINT64_C(60)
#define SECONDS_HOUR	UINT64_C(3600)
#define SECONDS_DAY	UINT64_C(86400)
#define KIB		UINT64_C(1024)
#define MIB		(KIB * 1024)
#define GIB		(MIB * 1024)

enum section {
	SEC_NONE,
	SEC_VAULT,
	SEC_SMTP,
	SEC_CLIENT,
	SEC_UPSTREAM,
	SEC_ADMIN,
	SEC_AUDIT,
	SEC_COUNT
};

static const char *const section_names[SEC_COUNT] = {
	[SEC_NONE] = "",
	[SEC_VAULT] = "vault",
	[SEC_SMTP] = "smtp",
	[SEC_CLIENT] = "client",
	[SEC_UPSTREAM] = "upstream",
	[SEC_ADMIN] = "admin",
	[SEC_AUDIT] = "audit",
};

enum key_type {
	KT_PATH,		/* absolute, or relative to the config file's directory */
	KT_HOSTNAME,		/* a DNS name */
	KT_HOST,		/* a DNS name or an IP address */
	KT_ADDR,		/* local@domain, or empty */
	KT_ADDR_LIST,		/* local@domain, ... */
	KT_SENDER_LIST,		/* local@domain or *@domain, ... */
	KT_LISTEN,		/* one address:port */
	KT_LISTEN_LIST,		/* address:port, ... */
	KT_NETS,		/* CIDR masks, ... */
	KT_COUNT,		/* a plain number in [min, max] */
	KT_PORT,		/* 1..65535 into a uint16_t */
	KT_SIZE,		/* bytes with K/M/G suffix, in [min, max] */
	KT_DURATION,		/* seconds with s/m/h/d suffix, in [min, max] */
	KT_DURATION_LIST,	/* durations, each in [min, max] */
	KT_ENUM,		/* one of choices[] into an int-sized enum */
	KT_BOOL,		/* yes/no and friends into an int */
	KT_RATE,		/* N/unit; count in [min, max] */
};

struct choice {
	const char	*name;
	int		 value;
};

static const struct choice delivery_choices[] = {
	{ "queue", DELIVERY_QUEUE },
	{ "direct", DELIVERY_DIRECT },
	{ NULL, 0 }
};

static const struct choice tls_choices[] = {
	{ "starttls", UPSTREAM_TLS_STARTTLS },
	{ "implicit", UPSTREAM_TLS_IMPLICIT },
	{ NULL, 0 }
};

static const struct choice bool_choices[] = {
	{ "yes", 1 }, { "no", 0 },
	{ "true", 1 }, { "false", 0 },
	{ "on", 1 }, { "off", 0 },
	{ "1", 1 }, { "0", 0 },
	{ NULL, 0 }
};

/* Units of rate_limit = N/unit. */
static const struct {
	const char	*name;
	uint64_t	 seconds;
} rate_units[] = {
	{ "s", 1 }, { "sec", 1 }, { "second", 1 },
	{ "m", SECONDS_MINUTE }, { "min", SECONDS_MINUTE }, { "minute", SECONDS_MINUTE },
	{ "h", SECONDS_HOUR }, { "hr", SECONDS_HOUR }, { "hour", SECONDS_HOUR },
	{ "d", SECONDS_DAY }, { "day", SECONDS_DAY },
};

#define KF_NONEMPTY	0x01	/* an empty value is an error */
#define KF_REQUIRED	0x02	/* must appear in every section of its kind */

struct keydef {
	enum section		 sec;
	const char		*name;
	enum key_type		 type;
	const char		*def;		/* default as text; NULL: zero */
	uint64_t		 min, max;	/* value or element range */
	size_t			 off;		/* in struct config or struct client_cfg */
	size_t			 size;		/* of the field at off */
	size_t			 off_n;		/* list count (size_t), or rate period */
	int			 flags;
	const struct choice	*choices;	/* KT_ENUM */
};

#define CF(f)	offsetof(struct config, f), sizeof(((struct config *)0)->f)
#define CN(f)	offsetof(struct config, f)
#define CL(f)	offsetof(struct client_cfg, f), sizeof(((struct client_cfg *)0)->f)
#define CLN(f)	offsetof(struct client_cfg, f)

/*
 * All keys, their defaults and limits. SEC_CLIENT rows are offsets into
 * struct client_cfg, all others into struct config.
 */
static const struct keydef config_keys[] = {
	{ SEC_VAULT, "path", KT_PATH, "/var/lib/smtpvault/vault", 0, 0,
	    CF(vault_path), 0, KF_NONEMPTY, NULL },
	{ SEC_VAULT, "passphrase_file", KT_PATH, "", 0, 0,
	    CF(passphrase_file), 0, 0, NULL },
	{ SEC_VAULT, "key_file", KT_PATH, "", 0, 0,
	    CF(key_file), 0, 0, NULL },

	{ SEC_SMTP, "listen", KT_LISTEN_LIST, "0.0.0.0:2525, [::]:2525", 0, 0,
	    CF(listen), CN(n_listen), KF_NONEMPTY, NULL },
	/* The default is gethostname(), filled in by config_defaults(). */
	{ SEC_SMTP, "hostname", KT_HOSTNAME, NULL, 0, 0,
	    CF(hostname), 0, KF_NONEMPTY, NULL },
	{ SEC_SMTP, "trusted_networks", KT_NETS, "127.0.0.0/8, ::1/128", 0, 0,
	    CF(trusted), CN(n_trusted), 0, NULL },
	{ SEC_SMTP, "max_message_size", KT_SIZE, "35M", KIB, CONFIG_MESSAGE_SIZE_MAX,
	    CF(max_message_size), 0, 0, NULL },
	{ SEC_SMTP, "max_recipients", KT_COUNT, "100", 1, CONFIG_RECIPIENTS_MAX,
	    CF(max_recipients), 0, 0, NULL },
	{ SEC_SMTP, "max_connections", KT_COUNT, "1000", 1, 100000,
	    CF(max_connections), 0, 0, NULL },
	{ SEC_SMTP, "max_connections_per_ip", KT_COUNT, "50", 1, 100000,
	    CF(max_connections_per_ip), 0, 0, NULL },
	{ SEC_SMTP, "timeout", KT_DURATION, "5m", 1, SECONDS_HOUR,
	    CF(smtp_timeout), 0, 0, NULL },
	{ SEC_SMTP, "delivery", KT_ENUM, "queue", 0, 0,
	    CF(delivery), 0, 0, delivery_choices },
	{ SEC_SMTP, "spool_dir", KT_PATH, "/var/spool/smtpvault", 0, 0,
	    CF(spool_dir), 0, KF_NONEMPTY, NULL },
	{ SEC_SMTP, "default_account", KT_ADDR, "", 0, 0,
	    CF(default_account), 0, 0, NULL },
	{ SEC_SMTP, "tls_cert", KT_PATH, "", 0, 0,
	    CF(smtp_tls_cert), 0, 0, NULL },
	{ SEC_SMTP, "tls_key", KT_PATH, "", 0, 0,
	    CF(smtp_tls_key), 0, 0, NULL },

	{ SEC_CLIENT, "networks", KT_NETS, NULL, 0, 0,
	    CL(nets), CLN(n_nets), KF_NONEMPTY | KF_REQUIRED, NULL },
	{ SEC_CLIENT, "account", KT_ADDR, NULL, 0, 0,
	    CL(account), 0, 0, NULL },
	{ SEC_CLIENT, "accounts", KT_ADDR_LIST, NULL, 0, 0,
	    CL(accounts), CLN(n_accounts), 0, NULL },
	{ SEC_CLIENT, "senders", KT_SENDER_LIST, NULL, 0, 0,
	    CL(senders), CLN(n_senders), 0, NULL },
	{ SEC_CLIENT, "rate_limit", KT_RATE, NULL, 1, 1000000,
	    CL(rate_count), CLN(rate_period), 0, NULL },

	{ SEC_UPSTREAM, "host", KT_HOST, "smtp.gmail.com", 0, 0,
	    CF(upstream_host), 0, KF_NONEMPTY, NULL },
	{ SEC_UPSTREAM, "port", KT_PORT, "587", 1, 65535,
	    CF(upstream_port), 0, 0, NULL },
	{ SEC_UPSTREAM, "tls", KT_ENUM, "starttls", 0, 0,
	    CF(upstream_tls), 0, 0, tls_choices },
	{ SEC_UPSTREAM, "ca_file", KT_PATH, "", 0, 0,
	    CF(upstream_ca_file), 0, 0, NULL },
	{ SEC_UPSTREAM, "timeout", KT_DURATION, "60s", 1, 10 * SECONDS_MINUTE,
	    CF(upstream_timeout), 0, 0, NULL },
	{ SEC_UPSTREAM, "max_sessions_per_account", KT_COUNT, "3", 1, 100,
	    CF(max_sessions_per_account), 0, 0, NULL },
	{ SEC_UPSTREAM, "retry_schedule", KT_DURATION_LIST, "1m, 5m, 15m, 1h",
	    1, 7 * SECONDS_DAY, CF(retry_schedule), CN(n_retry), KF_NONEMPTY, NULL },
	{ SEC_UPSTREAM, "queue_lifetime", KT_DURATION, "5d",
	    SECONDS_MINUTE, 30 * SECONDS_DAY, CF(queue_lifetime), 0, 0, NULL },

	{ SEC_ADMIN, "listen", KT_LISTEN, "127.0.0.1:8025", 0, 0,
	    CF(admin_listen), 0, KF_NONEMPTY, NULL },
	{ SEC_ADMIN, "tls_cert", KT_PATH, "", 0, 0,
	    CF(admin_tls_cert), 0, 0, NULL },
	{ SEC_ADMIN, "tls_key", KT_PATH, "", 0, 0,
	    CF(admin_tls_key), 0, 0, NULL },

	{ SEC_AUDIT, "path", KT_PATH, "/var/lib/smtpvault/audit.log", 0, 0,
	    CF(audit_path), 0, KF_NONEMPTY, NULL },
	{ SEC_AUDIT, "log_subject", KT_BOOL, "yes", 0, 0,
	    CF(log_subject), 0, 0, bool_choices },
};

#define N_KEYS	ARRAY_SIZE(config_keys)

/* One "key = value" line of the file, as found by the pre-scan. */
struct keyline {
	int		 line;
	enum section	 sec;
	size_t		 client;		/* index, when sec is SEC_CLIENT */
	char		 name[KEY_NAME_MAX];
};

struct parse_ctx {
	struct config	*cfg;
	char		 basedir[CONFIG_PATH_MAX];	/* for relative paths */

	/* From the pre-scan. */
	char		*copy;			/* normalised text for inih */
	size_t		 copy_len, copy_cap;
	struct keyline	*keys;
	size_t		 n_keys;
	int		 section_line[SEC_COUNT];	/* 0: not seen */
	size_t		 next_key;		/* handler's position in keys[] */

	/* Line of each key already set: row 0 for the fixed sections, row
	 * 1 + i for client i. Used for duplicates and cross-key errors. */
	int		*seen;

	/* The first error: line (0 when it has none) and message. */
	int		 err_line;
	char		 err_msg[MSG_MAX];
};

static void ctx_error(struct parse_ctx *, int, const char *, ...)
    __attribute__((format(printf, 3, 4)));
static void copy_put(struct parse_ctx *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

static void
ctx_error(struct parse_ctx *ctx, int line, const char *fmt, ...)
{
	va_list ap;
	char *p;

	if (ctx->err_msg[0] != '\0')
		return;
	ctx->err_line = line;
	va_start(ap, fmt);
	vsnprintf(ctx->err_msg, sizeof(ctx->err_msg), fmt, ap);
	va_end(ap);
	if (ctx->err_msg[0] == '\0')
		strlcpy(ctx->err_msg, "error", sizeof(ctx->err_msg));
	/*
	 * Messages quote the file, which may hold any bytes; every valid
	 * value is ASCII, so show anything else as '?' on the terminal.
	 */
	for (p = ctx->err_msg; *p != '\0'; p++)
		if ((unsigned char)*p < ' ' || (unsigned char)*p >= 0x7f)
			*p = '?';
}

/* Append one line to the copy for inih; prescan() sized it to fit. */
static void
copy_put(struct parse_ctx *ctx, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(ctx->copy + ctx->copy_len, ctx->copy_cap - ctx->copy_len,
	    fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= ctx->copy_cap - ctx->copy_len)
		abort();	/* the capacity computed in prescan() is wrong */
	ctx->copy_len += (size_t)n;
}

/* "[smtp]" or "[client "monitoring"]", for messages. */
static void
section_label(const struct parse_ctx *ctx, enum section sec, size_t client,
    char *buf, size_t len)
{
	if (sec == SEC_CLIENT)
		snprintf(buf, len, "[client \"%s\"]", ctx->cfg->clients[client].name);
	else
		snprintf(buf, len, "[%s]", section_names[sec]);
}

static const struct keydef *
key_find(enum section sec, const char *name)
{
	size_t i;

	for (i = 0; i < N_KEYS; i++)
		if (config_keys[i].sec == sec && strcmp(config_keys[i].name, name) == 0)
			return &config_keys[i];
	return NULL;
}

static int *
seen_slot(struct parse_ctx *ctx, enum section sec, size_t client,
    const struct keydef *kd)
{
	size_t row = sec == SEC_CLIENT ? 1 + client : 0;

	return &ctx->seen[row * N_KEYS + (size_t)(kd - config_keys)];
}

static int
seen_line(struct parse_ctx *ctx, enum section sec, size_t client, const char *name)
{
	return *seen_slot(ctx, sec, client, key_find(sec, name));
}

/* "90s" -> "90s", "3600" -> "1h": the largest unit that divides evenly. */
static void
fmt_duration(uint64_t s, char *buf, size_t len)
{
	if (s != 0 && s % SECONDS_DAY == 0)
		snprintf(buf, len, "%llud", (unsigned long long)(s / SECONDS_DAY));
	else if (s != 0 && s % SECONDS_HOUR == 0)
		snprintf(buf, len, "%lluh", (unsigned long long)(s / SECONDS_HOUR));
	else if (s != 0 && s % SECONDS_MINUTE == 0)
		snprintf(buf, len, "%llum", (unsigned long long)(s / SECONDS_MINUTE));
	else
		snprintf(buf, len, "%llus", (unsigned long long)s);
}

static void
fmt_size(uint64_t b, char *buf, size_t len)
{
	if (b != 0 && b % GIB == 0)
		snprintf(buf, len, "%lluG", (unsigned long long)(b / GIB));
	else if (b != 0 && b % MIB == 0)
		snprintf(buf, len, "%lluM", (unsigned long long)(b / MIB));
	else if (b != 0 && b % KIB == 0)
		snprintf(buf, len, "%lluK", (unsigned long long)(b / KIB));
	else
		snprintf(buf, len, "%llu", (unsigned long long)b);
}

static void
fmt_range(const struct keydef *kd, char *buf, size_t len)
{
	char lo[32], hi[32];

	switch (kd->type) {
	case KT_DURATION:
	case KT_DURATION_LIST:
		fmt_duration(kd->min, lo, sizeof(lo));
		fmt_duration(kd->max, hi, sizeof(hi));
		break;
	case KT_SIZE:
		fmt_size(kd->min, lo, sizeof(lo));
		fmt_size(kd->max, hi, sizeof(hi));
		break;
	default:
		snprintf(lo, sizeof(lo), "%llu", (unsigned long long)kd->min);
		snprintf(hi, sizeof(hi), "%llu", (unsigned long long)kd->max);
		break;
	}
	snprintf(buf, len, "%s and %s", lo, hi);
}

/* Letters, digits, '-' and '.' in non-empty labels: a mail domain. */
static int
domain_valid(const char *d)
{
	return strlen(d) <= DOMAIN_MAX && hostname_valid(d);
}

/*
 * Does s look like local@domain? The local part is any printable ASCII
 * except the RFC 5322 specials that would need quoting; quoted local parts
 * are not supported in the config. With wildcard, "*@domain" is allowed.
 */
static int
address_valid(const char *s, int wildcard)
{
	const char *at = strrchr(s, '@');
	const char *p;
	size_t local;

	if (at == NULL || strchr(s, '@') != at)
		return 0;
	local = (size_t)(at - s);
	if (local == 0 || local > LOCAL_PART_MAX || !domain_valid(at + 1))
		return 0;
	/* "*" alone is a wildcard in senders, never an address of its own. */
	if (local == 1 && s[0] == '*')
		return wildcard;
	for (p = s; p < at; p++) {
		unsigned char c = (unsigned char)*p;

		if (c <= ' ' || c >= 0x7f || strchr("\"(),:;<>[\\]", c) != NULL)
			return 0;
	}
	return s[0] != '.' && at[-1] != '.' && strstr(s, "..") == NULL;
}

/* Make a relative path relative to the config file's directory. */
static int
path_resolve(const struct parse_ctx *ctx, const char *value, char *out, size_t outlen)
{
	int n;

	if (value[0] == '\0' || value[0] == '/')
		return strlcpy(out, value, outlen) < outlen ? 0 : -1;
	n = snprintf(out, outlen, "%s%s%s", ctx->basedir,
	    strcmp(ctx->basedir, "/") == 0 ? "" : "/", value);
	return n >= 0 && (size_t)n < outlen ? 0 : -1;
}

/*
 * Split a comma-separated list in buf (modified) into at most max trimmed,
 * non-empty items. An empty value is an empty list.
 */
static int
list_split(char *buf, char **items, size_t max, size_t *n, char *msg, size_t msglen)
{
	char *p = buf, *item;

	*n = 0;
	if (str_trim(buf)[0] == '\0')
		return 0;
	while ((item = strsep(&p, ",")) != NULL) {
		str_trim(item);
		if (item[0] == '\0') {
			snprintf(msg, msglen, "empty entry in the list");
			return -1;
		}
		if (*n == max) {
			snprintf(msg, msglen, "too many entries (at most %zu)", max);
			return -1;
		}
		items[(*n)++] = item;
	}
	return 0;
}

static int
set_rate(const struct keydef *kd, const char *value, uint64_t *count,
    uint64_t *period, char *msg, size_t msglen)
{
	char buf[CONFIG_LINE_MAX + 1];
	char *slash, *unit;
	size_t i;

	if (value[0] == '\0') {
		*count = 0;
		*period = 0;
		return 0;
	}
	if (strlcpy(buf, value, sizeof(buf)) >= sizeof(buf) ||
	    (slash = strchr(buf, '/')) == NULL)
		goto bad;
	*slash = '\0';
	unit = str_trim(slash + 1);
	if (parse_u64(str_trim(buf), 0, UINT64_MAX, count) == -1)
		goto bad;
	for (i = 0; i < ARRAY_SIZE(rate_units); i++) {
		if (strcasecmp(unit, rate_units[i].name) == 0)
			break;
	}
	if (i == ARRAY_SIZE(rate_units))
		goto bad;
	if (*count < kd->min || *count > kd->max) {
		snprintf(msg, msglen, " = %s: the count must be between %llu and %llu",
		    value, (unsigned long long)kd->min, (unsigned long long)kd->max);
		return -1;
	}
	*period = rate_units[i].seconds;
	return 0;
bad:
	snprintf(msg, msglen, " = %s: expected N/second, N/minute, N/hour or N/day "
	    "(e.g. 600/hour)", value);
	return -1;
}

static int
set_nets(const char *value, struct netmask *nets, size_t max, size_t *n,
    int *open_relay, char *msg, size_t msglen)
{
	char buf[CONFIG_LINE_MAX + 1], *items[CONFIG_MAX_NETS];
	size_t i, count;

	if (strlcpy(buf, value, sizeof(buf)) >= sizeof(buf)) {
		snprintf(msg, msglen, ": value too long");
		return -1;
	}
	if (max > CONFIG_MAX_NETS)
		max = CONFIG_MAX_NETS;
	if (list_split(buf, items, max, &count, msg + 2, msglen - 2) == -1) {
		memcpy(msg, ": ", 2);
		return -1;
	}
	for (i = 0; i < count; i++) {
		if (netmask_parse(items[i], &nets[i]) == -1) {
			snprintf(msg, msglen, ": '%s' is not a network (an IPv4 or "
			    "IPv6 address, optionally /prefix with the host bits zero)",
			    items[i]);
			return -1;
		}
		if (netmask_is_any(&nets[i])) {
			*open_relay = 1;
			snprintf(msg, msglen, "%s would make smtpvault an open relay",
			    nets[i].family == AF_INET ? "0.0.0.0/0" : "::/0");
			return -1;
		}
	}
	*n = count;
	return 0;
}

/*
 * Parse value for key kd into the field at base + kd->off. On error, msg
 * gets the part after "[section] key" (starting with " = ..." or ": ..."),
 * or a whole message when *whole is set.
 */
static int
key_set(const struct parse_ctx *ctx, const struct keydef *kd, void *base,
    const char *value, int *whole, char *msg, size_t msglen)
{
	char *field = (char *)base + kd->off;
	char buf[CONFIG_LINE_MAX + 1], range[80], *items[CONFIG_MAX_LIST];
	const struct choice *c;
	struct listen_cfg *lc;
	uint64_t v;
	size_t i, j, n, max;
	int iv;

	*whole = 0;
	/* Numbers and choices have no "unset" value: empty is a mistake. */
	if (value[0] == '\0' && ((kd->flags & KF_NONEMPTY) ||
	    kd->type == KT_COUNT || kd->type == KT_PORT || kd->type == KT_SIZE ||
	    kd->type == KT_DURATION || kd->type == KT_ENUM || kd->type == KT_BOOL)) {
		snprintf(msg, msglen, " must not be empty");
		return -1;
	}

	switch (kd->type) {
	case KT_PATH:
		if (path_resolve(ctx, value, field, kd->size) == -1) {
			snprintf(msg, msglen, ": path too long (at most %zu characters)",
			    kd->size - 1);
			return -1;
		}
		return 0;

	case KT_HOSTNAME:
	case KT_HOST:
		if (value[0] != '\0' && !hostname_valid(value) &&
		    !(kd->type == KT_HOST && (inet_pton(AF_INET, value, buf) == 1 ||
		    inet_pton(AF_INET6, value, buf) == 1))) {
			snprintf(msg, msglen, " = %s: not a valid host name", value);
			return -1;
		}
		if (strlcpy(field, value, kd->size) >= kd->size) {
			snprintf(msg, msglen, ": too long (at most %zu characters)",
			    kd->size - 1);
			return -1;
		}
		return 0;

	case KT_ADDR:
		if (value[0] != '\0' && !address_valid(value, 0)) {
			snprintf(msg, msglen, " = %s: not an e-mail address "
			    "(local@domain)", value);
			return -1;
		}
		if (strlcpy(field, value, kd->size) >= kd->size) {
			snprintf(msg, msglen, ": address too long");
			return -1;
		}
		return 0;

	case KT_ADDR_LIST:
	case KT_SENDER_LIST:
		/* A char[CONFIG_MAX_LIST][CONFIG_ADDR_MAX] array. */
		strlcpy(buf, value, sizeof(buf));
		max = kd->size / CONFIG_ADDR_MAX;
		if (max > CONFIG_MAX_LIST)
			max = CONFIG_MAX_LIST;
		if (list_split(buf, items, max, &n, msg + 2, msglen - 2) == -1) {
			memcpy(msg, ": ", 2);
			return -1;
		}
		memset(field, 0, kd->size);
		for (i = 0; i < n; i++) {
			if (!address_valid(items[i], kd->type == KT_SENDER_LIST)) {
				snprintf(msg, msglen, ": '%s' is not an e-mail "
				    "address (%s)", items[i],
				    kd->type == KT_SENDER_LIST ?
				    "local@domain or *@domain" : "local@domain");
				return -1;
			}
			strlcpy(field + i * CONFIG_ADDR_MAX, items[i], CONFIG_ADDR_MAX);
		}
		memcpy((char *)base + kd->off_n, &n, sizeof(n));
		return 0;

	case KT_LISTEN:
	case KT_LISTEN_LIST:
		strlcpy(buf, value, sizeof(buf));
		max = kd->type == KT_LISTEN ? 1 : kd->size / sizeof(struct listen_cfg);
		if (list_split(buf, items, max, &n, msg + 2, msglen - 2) == -1) {
			memcpy(msg, ": ", 2);
			return -1;
		}
		memset(field, 0, kd->size);
		lc = (struct listen_cfg *)(void *)field;
		for (i = 0; i < n; i++) {
			if (listen_addr_parse(items[i], &lc[i].ss, &lc[i].sslen) == -1) {
				snprintf(msg, msglen, ": '%s' is not an address:port "
				    "(e.g. 0.0.0.0:2525, [::]:2525, *:25)", items[i]);
				return -1;
			}
			strlcpy(lc[i].text, items[i], sizeof(lc[i].text));
			for (j = 0; j < i; j++) {
				if (lc[j].sslen == lc[i].sslen &&
				    memcmp(&lc[j].ss, &lc[i].ss, lc[i].sslen) == 0) {
					snprintf(msg, msglen, ": '%s' is listed twice",
					    items[i]);
					return -1;
				}
			}
		}
		if (kd->off_n != 0)
			memcpy((char *)base + kd->off_n, &n, sizeof(n));
		return 0;

	case KT_NETS:
		if (set_nets(value, (struct netmask *)(void *)field,
		    kd->size / sizeof(struct netmask), &n, whole, msg, msglen) == -1)
			return -1;
		memcpy((char *)base + kd->off_n, &n, sizeof(n));
		return 0;

	case KT_COUNT:
	case KT_PORT:
		if (parse_u64(value, 0, UINT64_MAX, &v) == -1) {
			snprintf(msg, msglen, " = %s: not a number", value);
			return -1;
		}
		break;

	case KT_SIZE:
		if (parse_size(value, &v) == -1) {
			snprintf(msg, msglen, " = %s: not a size (e.g. 512K, 10M, 1G)",
			    value);
			return -1;
		}
		break;

	case KT_DURATION:
		if (parse_duration(value, &v) == -1) {
			snprintf(msg, msglen, " = %s: not a duration (e.g. 30s, 5m, "
			    "2h, 1d)", value);
			return -1;
		}
		break;

	case KT_DURATION_LIST:
		strlcpy(buf, value, sizeof(buf));
		max = kd->size / sizeof(uint64_t);
		if (list_split(buf, items, max, &n, msg + 2, msglen - 2) == -1) {
			memcpy(msg, ": ", 2);
			return -1;
		}
		memset(field, 0, kd->size);
		for (i = 0; i < n; i++) {
			if (parse_duration(items[i], &v) == -1) {
				snprintf(msg, msglen, ": '%s' is not a duration "
				    "(e.g. 30s, 5m, 2h, 1d)", items[i]);
				return -1;
			}
			if (v < kd->min || v > kd->max) {
				fmt_range(kd, range, sizeof(range));
				snprintf(msg, msglen, ": '%s' must be between %s",
				    items[i], range);
				return -1;
			}
			memcpy(field + i * sizeof(uint64_t), &v, sizeof(v));
		}
		memcpy((char *)base + kd->off_n, &n, sizeof(n));
		return 0;

	case KT_ENUM:
	case KT_BOOL:
		for (c = kd->choices; c->name != NULL; c++) {
			if (strcasecmp(value, c->name) == 0)
				break;
		}
		if (c->name == NULL) {
			if (kd->type == KT_BOOL)
				snprintf(msg, msglen, " = %s: must be yes or no", value);
			else
				snprintf(msg, msglen, " = %s: must be %s or %s",
				    value, kd->choices[0].name, kd->choices[1].name);
			return -1;
		}
		iv = c->value;
		memcpy(field, &iv, sizeof(iv));
		return 0;

	case KT_RATE:
		return set_rate(kd, value, (uint64_t *)(void *)field,
		    (uint64_t *)(void *)((char *)base + kd->off_n), msg, msglen);
	}

	/* The numeric types share the range check. */
	if (v < kd->min || v > kd->max) {
		fmt_range(kd, range, sizeof(range));
		snprintf(msg, msglen, " = %s: must be between %s", value, range);
		return -1;
	}
	if (kd->type == KT_PORT) {
		uint16_t port = (uint16_t)v;

		memcpy(field, &port, sizeof(port));
	} else
		memcpy(field, &v, sizeof(v));
	return 0;
}

void
config_defaults(struct config *cfg)
{
	struct parse_ctx ctx;
	const struct keydef *kd;
	char msg[MSG_MAX];
	size_t i;
	int whole;

	memset(cfg, 0, sizeof(*cfg));
	memset(&ctx, 0, sizeof(ctx));
	ctx.cfg = cfg;
	strlcpy(ctx.basedir, "/", sizeof(ctx.basedir));
	for (i = 0; i < N_KEYS; i++) {
		kd = &config_keys[i];
		if (kd->sec == SEC_CLIENT || kd->def == NULL)
			continue;
		/* A default that does not parse is a bug caught by the unit tests. */
		if (key_set(&ctx, kd, cfg, kd->def, &whole, msg, sizeof(msg)) == -1)
			abort();
	}
	if (gethostname(cfg->hostname, sizeof(cfg->hostname)) == -1 ||
	    cfg->hostname[0] == '\0')
		strlcpy(cfg->hostname, "localhost", sizeof(cfg->hostname));
	cfg->hostname[sizeof(cfg->hostname) - 1] = '\0';
}

/* The configuration file's directory, made absolute, for relative paths. */
static int
basedir_init(struct parse_ctx *ctx, const char *name)
{
	char cwd[CONFIG_PATH_MAX];
	const char *slash = strrchr(name, '/');
	size_t dlen;
	int n;

	if (slash != NULL && name[0] == '/') {
		dlen = slash == name ? 1 : (size_t)(slash - name);
		if (dlen >= sizeof(ctx->basedir))
			return -1;
		memcpy(ctx->basedir, name, dlen);
		ctx->basedir[dlen] = '\0';
		return 0;
	}
	if (getcwd(cwd, sizeof(cwd)) == NULL)
		return -1;
	if (slash == NULL)
		return strlcpy(ctx->basedir, cwd, sizeof(ctx->basedir)) <
		    sizeof(ctx->basedir) ? 0 : -1;
	dlen = (size_t)(slash - name);
	if (dlen == 1 && name[0] == '.')
		n = snprintf(ctx->basedir, sizeof(ctx->basedir), "%s", cwd);
	else
		n = snprintf(ctx->basedir, sizeof(ctx->basedir), "%s%s%.*s", cwd,
		    strcmp(cwd, "/") == 0 ? "" : "/", (int)dlen, name);
	return n >= 0 && (size_t)n < sizeof(ctx->basedir) ? 0 : -1;
}

/* 1..63 of [A-Za-z0-9._-]. */
static int
client_name_valid(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len >= CONFIG_NAME_MAX)
		return 0;
	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!isalnum(c) && c != '.' && c != '_' && c != '-')
			return 0;
	}
	return 1;
}

static int
key_name_valid(const char *s)
{
	size_t len = strlen(s);

	if (len == 0 || len >= KEY_NAME_MAX)
		return 0;
	for (; *s != '\0'; s++)
		if (!isalnum((unsigned char)*s) && *s != '_' && *s != '-' &&
		    *s != '.')
			return 0;
	return 1;
}

/*
 * A section header line (already trimmed, starting with '['). Sets *sec and,
 * for clients, adds the client and sets *client. Appends the canonical
 * header to the copy at *out.
 */
static int
prescan_section(struct parse_ctx *ctx, int line, char *s, enum section *sec,
    size_t *client)
{
	struct config *cfg = ctx->cfg;
	struct client_cfg *nc;
	size_t len = strlen(s), i;
	char *name, *q;
	int k;

	if (s[len - 1] != ']') {
		ctx_error(ctx, line, "a section header must end with ']'");
		return -1;
	}
	s[len - 1] = '\0';
	name = str_trim(s + 1);

	if (strncmp(name, "client", 6) == 0 &&
	    (name[6] == '\0' || isspace((unsigned char)name[6]) || name[6] == '"')) {
		q = name + 6;
		while (isspace((unsigned char)*q))
			q++;
		len = strlen(q);
		if (len < 2 || q[0] != '"' || q[len - 1] != '"') {
			ctx_error(ctx, line, "a client section needs a name: "
			    "[client \"NAME\"]");
			return -1;
		}
		q[len - 1] = '\0';
		q++;
		if (!client_name_valid(q, len - 2)) {
			ctx_error(ctx, line, "bad client name \"%s\" (1 to %d of "
			    "A-Z a-z 0-9 . _ -)", q, CONFIG_NAME_MAX - 1);
			return -1;
		}
		for (i = 0; i < cfg->n_clients; i++) {
			if (strcmp(cfg->clients[i].name, q) == 0) {
				ctx_error(ctx, line, "duplicate section [client \"%s\"] "
				    "(first at line %d)", q, cfg->clients[i].line);
				return -1;
			}
		}
		if (cfg->n_clients == CONFIG_MAX_CLIENTS) {
			ctx_error(ctx, line, "too many client sections (at most %d)",
			    CONFIG_MAX_CLIENTS);
			return -1;
		}
		nc = reallocarray(cfg->clients, cfg->n_clients + 1, sizeof(*nc));
		if (nc == NULL) {
			ctx_error(ctx, line, "out of memory");
			return -1;
		}
		cfg->clients = nc;
		nc = &cfg->clients[cfg->n_clients];
		memset(nc, 0, sizeof(*nc));
		strlcpy(nc->name, q, sizeof(nc->name));
		nc->line = line;
		*sec = SEC_CLIENT;
		*client = cfg->n_clients++;
		copy_put(ctx, "[client \"%s\"]\n", q);
		return 0;
	}

	for (k = SEC_VAULT; k < SEC_COUNT; k++) {
		if (k != SEC_CLIENT && strcmp(name, section_names[k]) == 0)
			break;
	}
	if (k == SEC_COUNT) {
		ctx_error(ctx, line, "unknown section [%s]", name);
		return -1;
	}
	if (ctx->section_line[k] != 0) {
		ctx_error(ctx, line, "duplicate section [%s] (first at line %d)",
		    name, ctx->section_line[k]);
		return -1;
	}
	ctx->section_line[k] = line;
	*sec = (enum section)k;
	copy_put(ctx, "[%s]\n", name);
	return 0;
}

/*
 * Check every line and build the copy for inih (see the top of the file).
 * On error the copy ends before the bad line, so that an error the handler
 * finds earlier in the file is still the one reported.
 */
static int
prescan(struct parse_ctx *ctx, const char *text)
{
	const char *p = text, *nl;
	char line[CONFIG_LINE_MAX + 1], *s, *eq, *key, *value;
	enum section sec = SEC_NONE;
	size_t len, i, nlines = 1, client = 0;
	struct keyline *kl;
	char label[CONFIG_NAME_MAX + 16];
	int lineno;

	for (i = 0; text[i] != '\0'; i++)
		if (text[i] == '\n')
			nlines++;
	/*
	 * A canonical line is at most one byte longer than the original
	 * ([client"x"] gains a space) plus its "\n".
	 */
	ctx->copy_cap = strlen(text) + 2 * nlines + 1;
	if ((ctx->copy = malloc(ctx->copy_cap)) == NULL ||
	    (ctx->keys = calloc(nlines, sizeof(*ctx->keys))) == NULL) {
		ctx_error(ctx, 0, "out of memory");
		return -1;
	}
	ctx->copy[0] = '\0';

	/* A UTF-8 byte order mark, as written by some editors. */
	if (strncmp(p, "\xef\xbb\xbf", 3) == 0)
		p += 3;

	for (lineno = 1; *p != '\0'; lineno++, p = nl + 1) {
		if ((nl = strchr(p, '\n')) == NULL)
			nl = p + strlen(p);
		len = (size_t)(nl - p);
		if (len > 0 && p[len - 1] == '\r')
			len--;
		if (len > CONFIG_LINE_MAX) {
			ctx_error(ctx, lineno, "line too long (at most %d characters)",
			    CONFIG_LINE_MAX);
			return -1;
		}
		memcpy(line, p, len);
		line[len] = '\0';
		for (i = 0; i < len; i++) {
			if ((iscntrl((unsigned char)line[i]) && line[i] != '\t')) {
				ctx_error(ctx, lineno, "control character in line");
				return -1;
			}
		}

		s = str_trim(line);
		/* An inline comment starts with white space and '#' or ';'. */
		for (i = 1; s[0] != '\0' && s[0] != '#' && s[0] != ';' &&
		    s[i] != '\0'; i++) {
			if ((s[i] == '#' || s[i] == ';') &&
			    isspace((unsigned char)s[i - 1])) {
				s[i] = '\0';
				str_trim(s);
				break;
			}
		}

		if (s[0] == '\0' || s[0] == '#' || s[0] == ';') {
			copy_put(ctx, "\n");
		} else if (s[0] == '[') {
			if (prescan_section(ctx, lineno, s, &sec, &client) == -1)
				return -1;
		} else {
			if ((eq = strchr(s, '=')) == NULL) {
				ctx_error(ctx, lineno, "expected 'key = value', "
				    "'[section]' or a comment");
				return -1;
			}
			*eq = '\0';
			key = str_trim(s);
			value = str_trim(eq + 1);
			if (key[0] == '\0') {
				ctx_error(ctx, lineno, "missing key name before '='");
				return -1;
			}
			if (sec == SEC_NONE) {
				ctx_error(ctx, lineno, "key '%s' outside any section",
				    key);
				return -1;
			}
			if (!key_name_valid(key) || key_find(sec, key) == NULL) {
				section_label(ctx, sec, client, label, sizeof(label));
				ctx_error(ctx, lineno, "unknown key '%s' in %s", key,
				    label);
				return -1;
			}
			kl = &ctx->keys[ctx->n_keys++];
			kl->line = lineno;
			kl->sec = sec;
			kl->client = client;
			strlcpy(kl->name, key, sizeof(kl->name));
			/* No spaces around '=': inih would read " ;x" as a comment. */
			copy_put(ctx, "%s=%s\n", key, value);
		}
		if (*nl == '\0')
			break;
	}
	return 0;
}

static int
config_ini_line(void *user, const char *section, const char *name, const char *value)
{
	struct parse_ctx *ctx = user;
	const struct keydef *kd;
	struct keyline *kl;
	char label[CONFIG_NAME_MAX + 16], expect[CONFIG_NAME_MAX + 16];
	char msg[MSG_MAX];
	void *base;
	int *seen, whole;

	if (ctx->err_msg[0] != '\0')
		return 0;
	if (ctx->next_key >= ctx->n_keys || section == NULL || name == NULL ||
	    value == NULL) {
		ctx_error(ctx, 0, "internal error: configuration parser out of step");
		return 0;
	}
	kl = &ctx->keys[ctx->next_key++];
	if (kl->sec == SEC_CLIENT)
		snprintf(expect, sizeof(expect), "client \"%s\"",
		    ctx->cfg->clients[kl->client].name);
	else
		strlcpy(expect, section_names[kl->sec], sizeof(expect));
	if (strcmp(kl->name, name) != 0 || strcmp(expect, section) != 0) {
		ctx_error(ctx, kl->line, "internal error: configuration parser "
		    "out of step");
		return 0;
	}

	kd = key_find(kl->sec, name);
	section_label(ctx, kl->sec, kl->client, label, sizeof(label));
	seen = seen_slot(ctx, kl->sec, kl->client, kd);
	if (*seen != 0) {
		ctx_error(ctx, kl->line, "duplicate key '%s' in %s (first at line %d)",
		    name, label, *seen);
		return 0;
	}
	*seen = kl->line;

	base = kl->sec == SEC_CLIENT ? (void *)&ctx->cfg->clients[kl->client] :
	    (void *)ctx->cfg;
	if (key_set(ctx, kd, base, value, &whole, msg, sizeof(msg)) == -1) {
		if (whole)
			ctx_error(ctx, kl->line, "%s", msg);
		else
			ctx_error(ctx, kl->line, "%s %s%s", label, name, msg);
		return 0;
	}
	return 1;
}

static int
later(int a, int b)
{
	return a > b ? a : b;
}

static void
check_tls_pair(struct parse_ctx *ctx, enum section sec, const char *cert,
    const char *key)
{
	const char *set, *unset;
	int line;

	if ((cert[0] == '\0') == (key[0] == '\0'))
		return;
	set = cert[0] != '\0' ? "tls_cert" : "tls_key";
	unset = cert[0] != '\0' ? "tls_key" : "tls_cert";
	line = seen_line(ctx, sec, 0, set);
	ctx_error(ctx, line, "[%s] %s is set but %s is not (set both or neither)",
	    section_names[sec], set, unset);
}

/* Checks that involve more than one key, after the whole file is read. */
static void
check_cross(struct parse_ctx *ctx)
{
	struct config *cfg = ctx->cfg;
	struct client_cfg *c;
	size_t i, j;

	if (cfg->passphrase_file[0] != '\0' && cfg->key_file[0] != '\0')
		ctx_error(ctx, later(seen_line(ctx, SEC_VAULT, 0, "passphrase_file"),
		    seen_line(ctx, SEC_VAULT, 0, "key_file")),
		    "[vault] passphrase_file and key_file are both set; "
		    "keep only one");
	check_tls_pair(ctx, SEC_SMTP, cfg->smtp_tls_cert, cfg->smtp_tls_key);
	check_tls_pair(ctx, SEC_ADMIN, cfg->admin_tls_cert, cfg->admin_tls_key);

	for (i = 0; i < cfg->n_clients; i++) {
		c = &cfg->clients[i];
		if (c->n_nets == 0)
			ctx_error(ctx, c->line, "[client \"%s\"] needs networks",
			    c->name);
		if (c->account[0] == '\0' || c->n_accounts == 0)
			continue;
		for (j = 0; j < c->n_accounts; j++)
			if (strcasecmp(c->accounts[j], c->account) == 0)
				break;
		if (j == c->n_accounts)
			ctx_error(ctx, later(seen_line(ctx, SEC_CLIENT, i, "account"),
			    seen_line(ctx, SEC_CLIENT, i, "accounts")),
			    "[client \"%s\"] account %s is not in its accounts list",
			    c->name, c->account);
	}
}

int
config_parse(const char *name, const char *text, struct config *cfg,
    char *err, size_t errlen)
{
	struct parse_ctx *ctx;
	char pre_msg[MSG_MAX] = "";
	int rc, pre_line = 0, ret = -1;

	config_defaults(cfg);
	strlcpy(cfg->file, name, sizeof(cfg->file));
	/* The context is large (the key-line table); keep it off the stack. */
	if ((ctx = calloc(1, sizeof(*ctx))) == NULL) {
		snprintf(err, errlen, "%s: out of memory", name);
		return -1;
	}
	ctx->cfg = cfg;
	if (basedir_init(ctx, name) == -1) {
		snprintf(err, errlen, "%s: cannot find the configuration "
		    "directory (%s)", name, strerror(errno));
		goto done;
	}

	if (prescan(ctx, text) == -1) {
		/*
		 * The copy ends before the line the pre-scan refused, so an
		 * error the handler finds is earlier in the file and wins.
		 */
		pre_line = ctx->err_line;
		strlcpy(pre_msg, ctx->err_msg, sizeof(pre_msg));
		ctx->err_line = 0;
		ctx->err_msg[0] = '\0';
	}
	if (ctx->copy == NULL)
		goto report;
	/* Clients are known now: one row of seen-lines for each. */
	if ((ctx->seen = calloc(1 + cfg->n_clients, N_KEYS * sizeof(int))) == NULL) {
		ctx_error(ctx, 0, "out of memory");
		goto report;
	}
	rc = ini_parse_string(ctx->copy, config_ini_line, ctx);
	if (rc > 0)
		ctx_error(ctx, rc, "syntax error");	/* unless the handler said why */
	else if (rc < 0)
		ctx_error(ctx, 0, "out of memory");
	if (pre_msg[0] != '\0')
		ctx_error(ctx, pre_line, "%s", pre_msg);
	if (ctx->err_msg[0] == '\0')
		check_cross(ctx);

report:
	if (ctx->err_msg[0] == '\0' && pre_msg[0] != '\0')
		ctx_error(ctx, pre_line, "%s", pre_msg);

	if (ctx->err_msg[0] != '\0') {
		if (ctx->err_line > 0)
			snprintf(err, errlen, "%s:%d: %s", name, ctx->err_line,
			    ctx->err_msg);
		else
			snprintf(err, errlen, "%s: %s", name, ctx->err_msg);
		goto done;
	}
	ret = 0;
done:
	if (ret == -1)
		config_free(cfg);
	free(ctx->copy);
	free(ctx->keys);
	free(ctx->seen);
	free(ctx);
	return ret;
}

int
config_load(const char *path, struct config *cfg, char *err, size_t errlen)
{
	uint8_t *buf;
	size_t len, i;
	int line, rc;

	config_defaults(cfg);
	if (file_read_all(path, CONFIG_FILE_MAX, &buf, &len) == -1) {
		if (errno == EFBIG)
			snprintf(err, errlen, "%s: too large (at most %d bytes)",
			    path, CONFIG_FILE_MAX);
		else
			snprintf(err, errlen, "%s: cannot read (%s)", path,
			    strerror(errno));
		return -1;
	}
	/* config_parse() sees a C string: a NUL byte would hide the rest. */
	if ((uint8_t *)memchr(buf, '\0', len) != NULL) {
		for (i = 0, line = 1; buf[i] != '\0'; i++)
			if (buf[i] == '\n')
				line++;
		snprintf(err, errlen, "%s:%d: NUL byte in line", path, line);
		free(buf);
		return -1;
	}
	rc = config_parse(path, (const char *)buf, cfg, err, errlen);
	free(buf);
	return rc;
}

void
config_free(struct config *cfg)
{
	free(cfg->clients);
	cfg->clients = NULL;
	cfg->n_clients = 0;
}

const struct client_cfg *
config_client_for(const struct config *cfg, const struct sockaddr *sa,
    int *trusted)
{
	size_t i, j;

	if (trusted != NULL)
		*trusted = 0;
	for (i = 0; i < cfg->n_clients; i++)
		for (j = 0; j < cfg->clients[i].n_nets; j++)
			if (netmask_match(&cfg->clients[i].nets[j], sa))
				return &cfg->clients[i];
	for (j = 0; j < cfg->n_trusted; j++) {
		if (netmask_match(&cfg->trusted[j], sa)) {
			if (trusted != NULL)
				*trusted = 1;
			break;
		}
	}
	return NULL;
}
