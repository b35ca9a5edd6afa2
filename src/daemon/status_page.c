/* status_page: the administrator's page (see status_page.h).  HTML 5
 * without script; text is escaped for element content and attribute values
 * alike (&, <, >, ", '). */
#define _GNU_SOURCE /* open_memstream */
#include "daemon/status_page.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "conf/conf.h"
#include "lib/recent.h"
#include "lib/util.h"
#include "net/tls.h"
#include "queue/delivery.h"
#include "queue/outbound.h"
#include "runtime/runtime.h"

/* ---- the queue -------------------------------------------------------------- */

struct queue_walk {
	struct status_queue *q;
	char **ids;                    /* owned copies, to count each message once */
	size_t nids;
};

static void queue_note_recipient(struct status_queue *q, const char *rcpt)
{
	const char *at = strrchr(rcpt, '@');
	const char *domain = at ? at + 1 : rcpt;
	for (size_t i = 0; i < q->ndests; i++) {
		if (strcasecmp(q->dests[i].domain, domain) == 0) {
			q->dests[i].recipients++;
			return;
		}
	}
	if (q->ndests == STATUS_DEST_MAX ||
	    !bsnprintf(q->dests[q->ndests].domain, STATUS_DOMAIN_MAX, "%s", domain)) {
		q->other_recipients++;
		return;
	}
	q->dests[q->ndests++].recipients = 1;
}

static void queue_note_message(struct queue_walk *w, const char *id, time_t arrival)
{
	*(char **)xappend(&w->ids, &w->nids, sizeof(char *)) = xstrdup(id);
	if (arrival > 0 && (w->q->oldest == 0 || arrival < w->q->oldest))
		w->q->oldest = arrival;
}

static void queue_remote(void *arg, const struct outbound_entry *e)
{
	struct queue_walk *w = arg;
	queue_note_message(w, e->id, e->arrival);
	for (size_t i = 0; i < e->npending; i++)
		queue_note_recipient(w->q, e->pending[i]);
}

static void queue_local(void *arg, const struct delivery_waiting *d)
{
	struct queue_walk *w = arg;
	queue_note_message(w, d->id, d->described ? d->arrival : 0);
	for (size_t i = 0; d->described && i < d->nrcpts; i++)
		queue_note_recipient(w->q, d->rcpts[i]);
}

static int compare_ids(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void status_queue_read(struct status_queue *q)
{
	memset(q, 0, sizeof *q);
	struct queue_walk w = {.q = q};
	outbound_each(queue_remote, &w);
	delivery_each_waiting(queue_local, &w);
	/* a message can wait for both parts: count it once */
	if (w.nids)
		qsort(w.ids, w.nids, sizeof *w.ids, compare_ids);
	for (size_t i = 0; i < w.nids; i++)
		if (i == 0 || strcmp(w.ids[i], w.ids[i - 1]) != 0)
			q->messages++;
	for (size_t i = 0; i < w.nids; i++)
		free(w.ids[i]);
	free(w.ids);
}

/* ---- writing HTML ------------------------------------------------------------- */

struct html_out {
	FILE *f;
	bool failed;
};

/* Markup: fmt and its arguments are written as they are. */
static void h_markup(struct html_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void h_markup(struct html_out *o, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (vfprintf(o->f, fmt, ap) < 0)
		o->failed = true;
	va_end(ap);
}

/* Text: n bytes, the HTML metacharacters as entities. */
static void h_textn(struct html_out *o, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		switch (s[i]) {
		case '&': h_markup(o, "&amp;"); break;
		case '<': h_markup(o, "&lt;"); break;
		case '>': h_markup(o, "&gt;"); break;
		case '"': h_markup(o, "&quot;"); break;
		case '\'': h_markup(o, "&#39;"); break;
		default: h_markup(o, "%c", s[i]); break;
		}
	}
}

static void h_text(struct html_out *o, const char *s)
{
	h_textn(o, s, strlen(s));
}

static void h_date(struct html_out *o, time_t t)
{
	struct tm tm;
	char text[64];
	if (!gmtime_r(&t, &tm) || strftime(text, sizeof text, "%Y-%m-%d %H:%M:%S UTC", &tm) == 0)
		h_text(o, "(unknown)");
	else
		h_text(o, text);
}

/* What fill() writes on a memory stream, escaped inside <pre>. */
static void h_pre_of(struct html_out *o, int (*fill)(FILE *f, const void *arg), const void *arg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *m = open_memstream(&text, &len);
	if (!m) {
		o->failed = true;
		return;
	}
	int r = fill(m, arg);
	if (fclose(m) != 0 || r < 0) {
		h_markup(o, "<p>(could not be written)</p>\n");
	} else {
		h_markup(o, "<pre>");
		h_textn(o, text, len);
		h_markup(o, "</pre>\n");
	}
	free(text);
}

/* ---- the sections --------------------------------------------------------------- */

static int fill_policy(FILE *f, const void *arg)
{
	return conf_print_policy(arg, f) < 0 ? -1 : 0;
}

/* tls_report() of every server with certificates; problems on the same
 * page, beside the report. */
static int fill_certificates(FILE *f, const void *arg)
{
	const struct conf *c = arg;
	bool any = false;
	for (size_t i = 0; i < c->nservers; i++) {
		const struct conf_server *s = &c->servers[i];
		if (s->tls.ncerts == 0)
			continue;
		any = true;
		(void)tls_report(&s->tls, s->name, s->hostname, f, f); /* errors are on f too */
	}
	if (c->metrics_tls.ncerts > 0) {
		any = true;
		(void)tls_report(&c->metrics_tls, "metrics-tls", c->hostname, f, f);
	}
	if (!any && fputs("no server has a certificate\n", f) == EOF)
		return -1;
	return 0;
}

static void section_queue(struct html_out *o)
{
	struct status_queue q;
	status_queue_read(&q);
	h_markup(o, "<h2>Queue</h2>\n<p>Messages waiting: <span id=\"queue-count\">%zu</span>",
		 q.messages);
	if (q.oldest) {
		h_markup(o, "; the oldest arrived ");
		h_date(o, q.oldest);
	}
	h_markup(o, ".</p>\n");
	if (q.ndests == 0)
		return;
	h_markup(o, "<table>\n<tr><th>Destination</th><th>Recipients</th></tr>\n");
	for (size_t i = 0; i < q.ndests; i++) {
		h_markup(o, "<tr><td>");
		h_text(o, q.dests[i].domain);
		h_markup(o, "</td><td>%zu</td></tr>\n", q.dests[i].recipients);
	}
	if (q.other_recipients)
		h_markup(o, "<tr><td>(other destinations)</td><td>%zu</td></tr>\n",
			 q.other_recipients);
	h_markup(o, "</table>\n");
}

static void section_recent(struct html_out *o)
{
	struct recent_event ev[RECENT_MAX];
	size_t n = recent_list(ev);
	h_markup(o, "<h2>Recent refusals and lockouts</h2>\n");
	if (n == 0) {
		h_markup(o, "<p>None since the start.</p>\n");
		return;
	}
	h_markup(o, "<table>\n<tr><th>Time</th><th>Event</th><th>Server</th><th>Detail</th></tr>\n");
	for (size_t i = 0; i < n; i++) {
		h_markup(o, "<tr><td>");
		h_date(o, ev[i].when);
		h_markup(o, "</td><td>");
		h_text(o, ev[i].kind);
		h_markup(o, "</td><td>");
		h_text(o, ev[i].server);
		h_markup(o, "</td><td>");
		h_text(o, ev[i].detail);
		h_markup(o, "</td></tr>\n");
	}
	h_markup(o, "</table>\n");
}

static void section_servers(struct html_out *o, const struct conf *c)
{
	h_markup(o, "<h2>Virtual servers</h2>\n<ul>\n");
	for (size_t i = 0; i < c->nservers; i++) {
		h_markup(o, "<li class=\"server\">");
		h_text(o, c->servers[i].name);
		h_markup(o, " (%s), hostname ", conf_protocol_name(c->servers[i].protocol));
		h_text(o, c->servers[i].hostname);
		h_markup(o, "</li>\n");
	}
	h_markup(o, "</ul>\n<h2>Effective policy</h2>\n");
	h_pre_of(o, fill_policy, c);
}

int status_page_write(FILE *f, const struct runtime *rt)
{
	struct html_out o = {.f = f};
	const struct conf *c = rt->conf;
	time_t now = time(NULL);
	h_markup(&o, "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
		     "<title>posthorn on ");
	h_text(&o, c->hostname);
	h_markup(&o, "</title>\n<style>body{font-family:sans-serif;margin:2em}"
		     "pre{background:#f4f4f4;padding:1em;white-space:pre-wrap}"
		     "table{border-collapse:collapse}td,th{border:1px solid #999;padding:.2em .6em}"
		     "</style>\n</head>\n<body>\n<h1>posthorn on ");
	h_text(&o, c->hostname);
	h_markup(&o, "</h1>\n<p>Version %s; page made ", POSTHORN_VERSION);
	h_date(&o, now);
	h_markup(&o, ". Metrics: <a href=\"/metrics\">/metrics</a>.</p>\n");
	section_queue(&o);
	section_recent(&o);
	h_markup(&o, "<h2>Certificates</h2>\n");
	h_pre_of(&o, fill_certificates, c);
	section_servers(&o, c);
	h_markup(&o, "</body>\n</html>\n");
	return o.failed ? -1 : 0;
}
