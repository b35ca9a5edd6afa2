/* strbuf: the one bounded string builder.  A strbuf writes into storage
 * the caller gives it and never past it; every append is all or nothing,
 * and the text is NUL-terminated after every call.  Sizes are checked here
 * and nowhere else (vsftpd str.c, Postfix vstring.c). */
#ifndef POSTHORN_STRBUF_H
#define POSTHORN_STRBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

struct strbuf {
	char *buf;              /* the caller's storage */
	size_t cap;             /* its size, the NUL included */
	size_t len;             /* text in it, the NUL excluded */
	bool overflow;          /* an append did not fit (sticky until reset) */
};

/* Use buf (cap >= 1 bytes) as empty storage: buf[0] = '\0'. */
void strbuf_init(struct strbuf *sb, char *buf, size_t cap);

/* Appends.  When the text does not fit, nothing of it is appended,
 * overflow is set and false is returned; a later append that fits is
 * still made, but strbuf_ok() stays false until strbuf_reset(). */
bool strbuf_add(struct strbuf *sb, const void *s, size_t n);
bool strbuf_adds(struct strbuf *sb, const char *s);
bool strbuf_addc(struct strbuf *sb, char c);
bool strbuf_addf(struct strbuf *sb, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
bool strbuf_vaddf(struct strbuf *sb, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

/* No append has failed since init or reset. */
bool strbuf_ok(const struct strbuf *sb);
const char *strbuf_str(const struct strbuf *sb);
size_t strbuf_len(const struct strbuf *sb);
/* Bytes that an append may still add. */
size_t strbuf_avail(const struct strbuf *sb);
/* Empty again, overflow cleared. */
void strbuf_reset(struct strbuf *sb);
/* Cut the text to len bytes (no-op when it is shorter); overflow stays. */
void strbuf_truncate(struct strbuf *sb, size_t len);

#endif
