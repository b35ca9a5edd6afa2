/* log: one line per event on stderr (or syslog), "key=value" pairs.
 * Untrusted bytes go through log_escape() before they reach a line. */
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
 * Returns out. */
const char *log_escape(char *out, size_t outsz, const char *in, size_t inlen);

/* Size of a buffer that holds an escaped value for a log line. */
#define LOG_VALUE_MAX 256

#endif
