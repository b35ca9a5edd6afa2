/* log: one line per event on stderr (or syslog), "key=value" pairs.
 * Untrusted bytes go through log_escape(), log_quote() or a log_list
 * before they reach a line. */
#ifndef POSTHORN_LOG_H
#define POSTHORN_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum log_level { LOG_ERR, LOG_WARN, LOG_INFO, LOG_DEBUG };

void log_init(bool use_syslog, enum log_level max_level);
/* Thread-safe: one write per line. */
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_err(...)   log_msg(LOG_ERR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_DEBUG, __VA_ARGS__)

/* Copy at most inlen bytes of untrusted text into out (size outsz) with
 * every byte outside printable ASCII, '"', '\\' and '=' written as \xNN;
 * truncated with "..." when it does not fit.  Always NUL-terminated.
 * Returns out.  For a bare value: key=VALUE. */
const char *log_escape(char *out, size_t outsz, const char *in, size_t inlen);
/* The same, but spaces are kept: for a quoted value, key="VALUE". */
const char *log_quote(char *out, size_t outsz, const char *in, size_t inlen);

/* Size of a buffer that holds an escaped value for a log line. */
#define LOG_VALUE_MAX 256
/* A formatted line is cut (ending in "...") at this many bytes. */
#define LOG_LINE_MAX 2048

/* A list of untrusted items as one bare log value, "<a>,<b>,<c>": each
 * item escaped (log_escape) between open and close.  When the next item
 * does not fit, it and all after it are left out and counted, and the
 * list ends in a marker "+N-more" (no space: the value stays one word):
 * "<a>,<b>,+3-more".  Nothing is ever cut silently.
 *
 *	struct log_list l;
 *	log_list_begin(&l, &sb, "<", ">");
 *	for (...) log_list_add(&l, rcpt[i]);
 *	log_list_end(&l);
 */
struct strbuf;
struct log_list {
	struct strbuf *sb;      /* appended to */
	const char *open, *close;
	size_t shown;
	size_t left_out;
};

/* Room kept free for the marker: "," "+" 20 digits "-more". */
#define LOG_LIST_MARKER_MAX (sizeof ",+18446744073709551615-more" - 1)

void log_list_begin(struct log_list *l, struct strbuf *sb, const char *open, const char *close);
void log_list_add(struct log_list *l, const char *item);
/* Adds the marker when items were left out; false when sb overflowed
 * (a buffer too small for even the marker). */
bool log_list_end(struct log_list *l);

#endif
