/* recent: the ring of the latest refusals and lockouts (see recent.h). */
#include "lib/recent.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "lib/util.h"

static struct {
	pthread_mutex_t lock;
	struct recent_event ring[RECENT_MAX];
	size_t next;   /* where the next event goes */
	size_t n;      /* events held, up to RECENT_MAX */
} recent = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* Copy src into dst (size bytes); a text that does not fit ends in "...". */
static void recent_copy(char *dst, size_t size, const char *src)
{
	if (!bsnprintf(dst, size, "%s", src))
		memcpy(dst + size - 4, "...", 4);
}

void recent_note(const char *kind, const char *server, const char *fmt, ...)
{
	struct recent_event e = {.when = time(NULL)};
	recent_copy(e.kind, sizeof e.kind, kind);
	recent_copy(e.server, sizeof e.server, server);
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(e.detail, sizeof e.detail, fmt, ap);
	va_end(ap);
	if (n < 0)
		recent_copy(e.detail, sizeof e.detail, "(unprintable)");
	else if ((size_t)n >= sizeof e.detail)
		memcpy(e.detail + sizeof e.detail - 4, "...", 4);
	if (pthread_mutex_lock(&recent.lock) != 0)
		fatal("recent: cannot take the lock");
	recent.ring[recent.next] = e;
	recent.next = (recent.next + 1) % RECENT_MAX;
	if (recent.n < RECENT_MAX)
		recent.n++;
	if (pthread_mutex_unlock(&recent.lock) != 0)
		fatal("recent: cannot release the lock");
}

size_t recent_list(struct recent_event out[RECENT_MAX])
{
	if (pthread_mutex_lock(&recent.lock) != 0)
		fatal("recent: cannot take the lock");
	size_t n = recent.n;
	for (size_t i = 0; i < n; i++)
		out[i] = recent.ring[(recent.next + RECENT_MAX - 1 - i) % RECENT_MAX];
	if (pthread_mutex_unlock(&recent.lock) != 0)
		fatal("recent: cannot release the lock");
	return n;
}

void recent_clear(void)
{
	if (pthread_mutex_lock(&recent.lock) != 0)
		fatal("recent: cannot take the lock");
	recent.n = 0;
	recent.next = 0;
	if (pthread_mutex_unlock(&recent.lock) != 0)
		fatal("recent: cannot release the lock");
}
