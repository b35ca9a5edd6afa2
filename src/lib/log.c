/* log: timestamped "level key=value ..." lines on stderr, or syslog. */
#include "lib/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "lib/strbuf.h"
#include "lib/util.h"

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
		if (!gmtime_r(&now, &tm) ||
		    strftime(stamp, sizeof stamp, "%Y-%m-%dT%H:%M:%S", &tm) == 0)
			xsnprintf(stamp, sizeof stamp, "@%lld", (long long)now); /* fits: 21 bytes */
		last = now;
	}
	return stamp;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	if (level > log_max)
		return;
	char body[LOG_LINE_MAX];
	va_list ap;
	va_start(ap, fmt);
	verrfmt(body, sizeof body, fmt, ap); /* a cut line ends in "..." */
	va_end(ap);

	if (log_to_syslog) {
		syslog(syslog_priority(level), "%s", body);
		return;
	}
	struct timeval tv;
	gettimeofday(&tv, NULL);
	char line[LOG_LINE_MAX + 96];
	struct strbuf sb;
	strbuf_init(&sb, line, sizeof line);
	if (!strbuf_addf(&sb, "%s.%03dZ posthorn[%ld]: %s %s\n", log_stamp(tv.tv_sec),
			 (int)(tv.tv_usec / 1000), log_pid ? log_pid : (long)getpid(),
			 level_names[level], body))
		return; /* cannot happen: the prefix is shorter than 96 bytes */
	/* one write(2) per line keeps lines whole across threads; when stderr
	 * fails there is nowhere left to say so */
	(void)write_all(STDERR_FILENO, line, strbuf_len(&sb));
}

static bool log_byte_is_plain(unsigned char c, bool keep_space)
{
	return (c >= 0x21 && c < 0x7f && c != '"' && c != '\\' && c != '=') ||
	       (keep_space && c == ' ');
}

/* How many bytes from in on stand in a log value as themselves. */
static size_t log_plain_run(const char *in, size_t len, bool keep_space)
{
	size_t n = 0;
	while (n < len && log_byte_is_plain((unsigned char)in[n], keep_space))
		n++;
	return n;
}

/* in as a log value into out: runs of plain bytes as they are, any other
 * byte as \xNN; what does not fit ends in "..." (every byte only with room
 * left for that mark after it). */
static const char *log_escape_into(char *out, size_t outsz, const char *in, size_t inlen,
				   bool keep_space)
{
	static const char hex[] = "0123456789abcdef";
	static const char cut[] = "...";
	const size_t mark = sizeof cut - 1;
	if (outsz == 0)
		return out;
	struct strbuf sb;
	strbuf_init(&sb, out, outsz);
	for (size_t i = 0; i < inlen;) {
		size_t run = log_plain_run(in + i, inlen - i, keep_space);
		char one[4] = {'\\', 'x', hex[(unsigned char)in[i] >> 4], hex[in[i] & 15]};
		const char *piece = run ? in + i : one;
		size_t n = run ? run : sizeof one;
		size_t room = strbuf_avail(&sb) > mark ? strbuf_avail(&sb) - mark : 0;
		if (n > room) {
			if (run && room > 0)
				(void)strbuf_add(&sb, piece, room); /* fits: room is what is left */
			(void)strbuf_adds(&sb, cut); /* when even that cannot fit, no mark */
			break;
		}
		(void)strbuf_add(&sb, piece, n); /* fits: checked above */
		i += run ? run : 1;
	}
	return out;
}

const char *log_escape(char *out, size_t outsz, const char *in, size_t inlen)
{
	return log_escape_into(out, outsz, in, inlen, false);
}

const char *log_quote(char *out, size_t outsz, const char *in, size_t inlen)
{
	return log_escape_into(out, outsz, in, inlen, true);
}

/* ---- lists ---------------------------------------------------------------- */

void log_list_begin(struct log_list *l, struct strbuf *sb, const char *open, const char *close)
{
	l->sb = sb;
	l->open = open;
	l->close = close;
	l->shown = 0;
	l->left_out = 0;
}

void log_list_add(struct log_list *l, const char *item)
{
	if (l->left_out > 0) { /* the list stays a prefix, in order */
		l->left_out++;
		return;
	}
	char esc[LOG_VALUE_MAX];
	log_escape(esc, sizeof esc, item, strlen(item));
	size_t need = (l->shown ? 1 : 0) + strlen(l->open) + strlen(esc) + strlen(l->close);
	/* what is shown always leaves room for the marker that may follow */
	if (need + LOG_LIST_MARKER_MAX > strbuf_avail(l->sb)) {
		l->left_out++;
		return;
	}
	if (l->shown)
		(void)strbuf_addc(l->sb, ',');
	(void)strbuf_adds(l->sb, l->open);
	(void)strbuf_adds(l->sb, esc);
	(void)strbuf_adds(l->sb, l->close); /* all fit: checked above */
	l->shown++;
}

bool log_list_end(struct log_list *l)
{
	if (l->left_out > 0)
		(void)strbuf_addf(l->sb, "%s+%zu-more", l->shown ? "," : "", l->left_out);
	return strbuf_ok(l->sb);
}
