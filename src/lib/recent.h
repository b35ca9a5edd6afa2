/* recent: a small ring of the latest refusals and lockouts, for the status
 * page.  Bounded (RECENT_MAX events, each field cut with a visible "..."),
 * guarded by a lock: any thread may note an event. */
#ifndef POSTHORN_RECENT_H
#define POSTHORN_RECENT_H

#include <time.h>

enum {
	RECENT_MAX = 32,
	RECENT_KIND_MAX = 32,
	RECENT_SERVER_MAX = 72,   /* a server name (64 bytes at most, conf) */
	RECENT_DETAIL_MAX = 256,
};

struct recent_event {
	time_t when;
	char kind[RECENT_KIND_MAX];       /* "refused", "lockout", ... */
	char server[RECENT_SERVER_MAX];
	char detail[RECENT_DETAIL_MAX];   /* raw text: escape it for the output */
};

/* Remember an event; the oldest is forgotten when the ring is full. */
void recent_note(const char *kind, const char *server, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Copies the events, newest first, into out (RECENT_MAX entries); returns
 * how many. */
size_t recent_list(struct recent_event out[RECENT_MAX]);

/* Forget every event (tests). */
void recent_clear(void);

#endif
