/* status_page: GET / of the metrics listener, the administrator's page in
 * plain HTML (no script, read-only): the servers' effective policy as
 * `posthorn check` prints it, the queue, the recent refusals and lockouts,
 * the certificates' expiry.  Every value written is HTML-escaped. */
#ifndef POSTHORN_STATUS_PAGE_H
#define POSTHORN_STATUS_PAGE_H

#include <stddef.h>
#include <stdio.h>
#include <time.h>

struct runtime;

enum {
	STATUS_DEST_MAX = 20,          /* destinations listed; the rest summed */
	STATUS_DOMAIN_MAX = 256,       /* a domain name (255) and its end */
};

/* The queue as the page and the gauges show it: messages with remote
 * recipients not yet done or local deliveries waiting for a retry. */
struct status_queue {
	size_t messages;
	time_t oldest;                 /* arrival of the oldest; 0: empty */
	struct status_dest {
		char domain[STATUS_DOMAIN_MAX];
		size_t recipients;
	} dests[STATUS_DEST_MAX];
	size_t ndests;
	size_t other_recipients;       /* of destinations beyond STATUS_DEST_MAX */
};

/* Loop thread only. */
void status_queue_read(struct status_queue *q);

/* The whole page on f.  0, or -1 when f could not be written. */
int status_page_write(FILE *f, const struct runtime *rt);

#endif
