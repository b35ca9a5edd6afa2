/* log: timestamped "level key=value ..." lines on stderr, or syslog. */
#include "lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static bool log_to_syslog;
static enum log_level log_max = LOG_INFO;
static long log_pid; /* read once: posthorn never forks */

static const char *const level_names[] = {"error", "warning", "info", "debug"};

void log_init(bool use_syslog, enum log_level max_level)
{
	log_to_syslog = use_syslog;
	log_max = max_level;
	log_pid = (long)getpid();
	if (use_syslog)
		openlog("posthorn", LOG_PID | LOG_NDELAY, LOG_MAIL);
}

static int syslog_priority(enum log_level level)
{
	static const int prio[] = {3 /* LOG_ERR */, 4 /* LOG_WARNING */, 6 /* LOG_INFO */, 7};
	return prio[level];
}

/* The line's time to the second, formatted once a second per thread. */
static const char *log_stamp(time_t now)
{
	static __thread time_t last = -1;
	static __thread char stamp[32];
	if (now != last) {
		struct tm tm;
		gmtime_r(&now, &tm);
		strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm);
		last = now;
	}
	return stamp;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	if (level > log_max)
		return;
	char body[2048];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(body, sizeof body, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	if ((size_t)n >= sizeof body)
		memcpy(body + sizeof body - 4, "...", 4);

	if (log_to_syslog) {
		syslog(syslog_priority(level), "%s", body);
		return;
	}
	struct timeval tv;
	gettimeofday(&tv, NULL);
	char line[2200];
	int len = snprintf(line, sizeof line, "%s.%03dZ posthorn[%ld]: %s %s\n",
			   log_stamp(tv.tv_sec), (int)(tv.tv_usec / 1000),
			   log_pid ? log_pid : (long)getpid(), level_names[level], body);
	if (len < 0)
		return;
	if ((size_t)len >= sizeof line)
		len = (int)sizeof line - 1;
	/* one write(2) per line keeps lines whole across threads */
	ssize_t w = write(STDERR_FILENO, line, (size_t)len);
	(void)w;
}

const char *log_escape(char *out, size_t outsz, const char *in, size_t inlen)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;
	if (outsz == 0)
		return out;
	for (size_t i = 0; i < inlen; i++) {
		unsigned char c = (unsigned char)in[i];
		bool plain = c >= 0x21 && c < 0x7f && c != '"' && c != '\\' && c != '=';
		size_t need = plain ? 1 : 4;
		if (o + need + 4 > outsz) { /* room for "..." and NUL */
			if (o + 4 <= outsz) {
				memcpy(out + o, "...", 3);
				o += 3;
			}
			break;
		}
		if (plain) {
			out[o++] = (char)c;
		} else {
			out[o++] = '\\';
			out[o++] = 'x';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return out;
}
