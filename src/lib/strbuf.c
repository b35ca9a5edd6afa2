/* strbuf: the bounded string builder; the only place that does arithmetic
 * on its storage. */
#include "lib/strbuf.h"

#include <stdio.h>
#include <string.h>

#include "lib/util.h"

void strbuf_init(struct strbuf *sb, char *buf, size_t cap)
{
	if (!buf || cap == 0)
		fatal("strbuf_init: no storage");
	sb->buf = buf;
	sb->cap = cap;
	sb->len = 0;
	sb->overflow = false;
	buf[0] = '\0';
}

size_t strbuf_avail(const struct strbuf *sb)
{
	return sb->cap - 1 - sb->len;
}

bool strbuf_add(struct strbuf *sb, const void *s, size_t n)
{
	if (n > strbuf_avail(sb)) {
		sb->overflow = true;
		return false;
	}
	if (n > 0)
		memcpy(sb->buf + sb->len, s, n);
	sb->len += n;
	sb->buf[sb->len] = '\0';
	return true;
}

bool strbuf_adds(struct strbuf *sb, const char *s)
{
	return strbuf_add(sb, s, strlen(s));
}

bool strbuf_addc(struct strbuf *sb, char c)
{
	return strbuf_add(sb, &c, 1);
}

bool strbuf_vaddf(struct strbuf *sb, const char *fmt, va_list ap)
{
	size_t room = sb->cap - sb->len; /* the NUL included */
	int n = vsnprintf(sb->buf + sb->len, room, fmt, ap);
	if (n < 0 || (size_t)n >= room) {
		sb->buf[sb->len] = '\0'; /* take back what vsnprintf wrote */
		sb->overflow = true;
		return false;
	}
	sb->len += (size_t)n;
	return true;
}

bool strbuf_addf(struct strbuf *sb, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	bool ok = strbuf_vaddf(sb, fmt, ap);
	va_end(ap);
	return ok;
}

bool strbuf_ok(const struct strbuf *sb)
{
	return !sb->overflow;
}

const char *strbuf_str(const struct strbuf *sb)
{
	return sb->buf;
}

size_t strbuf_len(const struct strbuf *sb)
{
	return sb->len;
}

void strbuf_reset(struct strbuf *sb)
{
	sb->len = 0;
	sb->overflow = false;
	sb->buf[0] = '\0';
}

void strbuf_truncate(struct strbuf *sb, size_t len)
{
	if (len >= sb->len)
		return;
	sb->len = len;
	sb->buf[len] = '\0';
}
