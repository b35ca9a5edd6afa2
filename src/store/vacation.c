/* vacation: the out-of-office setting of a Maildir and the record of the
 * senders it answered (RFC 5230 §4.2), each one bounded file replaced
 * atomically.  The setting's format:
 *
 *   posthorn-vacation 1
 *   state on|off
 *   days N
 *   until YYYY-MM-DD          (optional)
 *   subject TEXT              (optional)
 *                             (an empty line)
 *   the reply's text, to the end of the file
 */
#define _GNU_SOURCE
#include "store/vacation.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/util.h"

static const char vacation_magic[] = "posthorn-vacation 1";
static const char vacation_file[] = "posthorn-vacation";
static const char vacation_senders_file[] = "posthorn-vacation.senders";

enum {
	VACATION_SENDER_MAX = 512,      /* bytes of one remembered address */
	/* a record line: seconds, a space, the address, LF */
	VACATION_SENDERS_FILE_MAX = VACATION_SENDERS_MAX * (VACATION_SENDER_MAX + 24),
};

/* ---- the setting ---------------------------------------------------------- */

/* The number of the n digits at s, or -1 when one is no digit. */
static int vacation_digits(const char *s, size_t n)
{
	int v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (s[i] - '0');
	}
	return v;
}

bool vacation_parse_date(const char *s, time_t *end)
{
	if (strlen(s) != 10 || s[4] != '-' || s[7] != '-')
		return false;
	int y = vacation_digits(s, 4), m = vacation_digits(s + 5, 2), d = vacation_digits(s + 8, 2);
	if (y < 1970 || m < 1 || m > 12 || d < 1 || d > 31)
		return false;
	struct tm tm = {.tm_year = y - 1900, .tm_mon = m - 1, .tm_mday = d};
	time_t t = timegm(&tm);
	/* timegm normalises 2026-02-30 into March: such a day does not exist */
	if (t == (time_t)-1 || tm.tm_mday != d || tm.tm_mon != m - 1)
		return false;
	*end = t + 86400;
	return true;
}

bool vacation_active(const struct vacation *v, time_t now)
{
	if (!v->on)
		return false;
	time_t end;
	return !v->until[0] || (vacation_parse_date(v->until, &end) && now < end);
}

void vacation_clear(struct vacation *v)
{
	free(v->subject);
	free(v->message);
	memset(v, 0, sizeof *v);
}

static bool vacation_subject_ok(const char *s)
{
	if (strlen(s) > VACATION_SUBJECT_MAX)
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

char *vacation_format(const struct vacation *v, size_t *len)
{
	char *head = xasprintf("%s\nstate %s\ndays %u\n%s%s%s%s%s%s\n", vacation_magic,
			       v->on ? "on" : "off", v->days, v->until[0] ? "until " : "", v->until,
			       v->until[0] ? "\n" : "", v->subject ? "subject " : "",
			       v->subject ? v->subject : "", v->subject ? "\n" : "");
	char *out = xasprintf("%s%s", head, v->message ? v->message : "");
	free(head);
	*len = strlen(out);
	return out;
}

/* One "KEY VALUE" line of the setting's head. */
static int vacation_parse_field(struct vacation *v, const char *line, char *err, size_t errsz)
{
	const char *sp = strchr(line, ' ');
	const char *value = sp ? sp + 1 : "";
	size_t klen = sp ? (size_t)(sp - line) : strlen(line);
	if (klen == 5 && strncmp(line, "state", 5) == 0 &&
	    (strcmp(value, "on") == 0 || strcmp(value, "off") == 0)) {
		v->on = strcmp(value, "on") == 0;
		return 0;
	}
	char *end;
	if (klen == 4 && strncmp(line, "days", 4) == 0) {
		unsigned long d = strtoul(value, &end, 10);
		if (*value >= '1' && *value <= '9' && !*end && d <= VACATION_DAYS_MAX) {
			v->days = (unsigned)d;
			return 0;
		}
	}
	time_t t;
	if (klen == 5 && strncmp(line, "until", 5) == 0 && vacation_parse_date(value, &t)) {
		memcpy(v->until, value, sizeof v->until);
		return 0;
	}
	if (klen == 7 && strncmp(line, "subject", 7) == 0 && vacation_subject_ok(value)) {
		free(v->subject);
		v->subject = xstrdup(value);
		return 0;
	}
	errfmt(err, errsz, "bad line \"%.40s\"", line);
	return -1;
}

int vacation_parse(const char *text, size_t len, struct vacation *v, char *err, size_t errsz)
{
	memset(v, 0, sizeof *v);
	v->days = VACATION_DAYS_DEFAULT;
	if (len > VACATION_FILE_MAX || memchr(text, '\0', len)) {
		errfmt(err, errsz, "not a setting (over %d bytes, or binary)", VACATION_FILE_MAX);
		return -1;
	}
	char *copy = xstrndup(text, len);
	char *line = copy, *nl;
	int r = -1;
	if (!(nl = strchr(line, '\n')) || (*nl = '\0', strcmp(line, vacation_magic) != 0)) {
		errfmt(err, errsz, "does not start with \"%s\"", vacation_magic);
		goto out;
	}
	for (line = nl + 1; (nl = strchr(line, '\n')) != NULL; line = nl + 1) {
		*nl = '\0';
		if (!*line)
			break;
		if (vacation_parse_field(v, line, err, errsz) < 0)
			goto out;
	}
	if (!nl) {
		errfmt(err, errsz, "%s", "no empty line before the message");
		goto out;
	}
	if (strlen(nl + 1) > VACATION_MESSAGE_MAX) {
		errfmt(err, errsz, "message longer than %d bytes", VACATION_MESSAGE_MAX);
		goto out;
	}
	v->message = xstrdup(nl + 1);
	r = 0;
out:
	free(copy);
	if (r < 0)
		vacation_clear(v);
	return r;
}

/* ---- files ------------------------------------------------------------------ */

/* The whole of dir/name, at most max bytes: 1 read, 0 no such file, -1. */
static int vacation_slurp(const char *dir, const char *name, size_t max, char **out, size_t *len,
			  char *err, size_t errsz)
{
	char *path = xasprintf("%s/%s", dir, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	int r = -1;
	*out = NULL;
	if (fd < 0 && errno == ENOENT) {
		r = 0;
	} else if (fd < 0 || fstat(fd, &st) < 0) {
		errfmt(err, errsz, "cannot read %s: %s", path, strerror(errno));
	} else if (!S_ISREG(st.st_mode) || (size_t)st.st_size > max) {
		errfmt(err, errsz, "%s is not a regular file of at most %zu bytes", path, max);
	} else {
		*out = xmalloc((size_t)st.st_size + 1);
		ssize_t n = pread(fd, *out, (size_t)st.st_size, 0);
		if (n == st.st_size) {
			(*out)[n] = '\0';
			*len = (size_t)n;
			r = 1;
		} else {
			errfmt(err, errsz, "cannot read %s: %s", path, n < 0 ? strerror(errno) : "short read");
			free(*out);
			*out = NULL;
		}
	}
	if (fd >= 0)
		close(fd);
	free(path);
	return r;
}

/* Replace dir/name with data: a temporary file beside it, fsync, rename,
 * fsync of dir. */
static int vacation_replace(const char *dir, const char *name, const char *data, size_t len,
			    char *err, size_t errsz)
{
	char *tmp = xasprintf("%s/.%s.%ld.tmp", dir, name, (long)getpid());
	char *path = xasprintf("%s/%s", dir, name);
	int r = -1;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		errfmt(err, errsz, "cannot create %s: %s", tmp, strerror(errno));
		goto out;
	}
	if (write_all(fd, data, len) < 0 || fsync(fd) < 0) {
		errfmt(err, errsz, "cannot write %s: %s", tmp, strerror(errno));
		close(fd);
		(void)unlink(tmp); /* a leftover would only be written over */
		goto out;
	}
	if (close(fd) < 0 || rename(tmp, path) < 0) {
		errfmt(err, errsz, "cannot replace %s: %s", path, strerror(errno));
		(void)unlink(tmp); /* as above */
		goto out;
	}
	if (fsync_dir(dir) < 0) {
		errfmt(err, errsz, "cannot sync %s: %s", dir, strerror(errno));
		goto out;
	}
	r = 0;
out:
	free(tmp);
	free(path);
	return r;
}

int vacation_read(const char *dir, struct vacation *v, char *err, size_t errsz)
{
	char *text;
	size_t len = 0;
	memset(v, 0, sizeof *v);
	int r = vacation_slurp(dir, vacation_file, VACATION_FILE_MAX, &text, &len, err, errsz);
	if (r <= 0)
		return r;
	char why[160];
	r = vacation_parse(text, len, v, why, sizeof why);
	free(text);
	if (r < 0) {
		errfmt(err, errsz, "%s/%s: %s", dir, vacation_file, why);
		return -1;
	}
	return 1;
}

int vacation_write(const char *dir, const struct vacation *v, char *err, size_t errsz)
{
	size_t len;
	char *text = vacation_format(v, &len);
	int r = vacation_replace(dir, vacation_file, text, len, err, errsz);
	free(text);
	if (r == 0) {
		char *senders = xasprintf("%s/%s", dir, vacation_senders_file);
		if (unlink(senders) < 0 && errno != ENOENT) {
			errfmt(err, errsz, "cannot remove %s: %s", senders, strerror(errno));
			r = -1;
		}
		free(senders);
	}
	return r;
}

/* ---- the senders answered ------------------------------------------------------ */

struct vacation_sender {
	long long when;
	const char *address;    /* into the record's text */
};

/* The record's lines, oldest first; malformed lines are left out. */
static size_t vacation_senders_parse(char *text, struct vacation_sender **out)
{
	size_t n = 0;
	*out = NULL;
	for (char *line = text, *nl; line && *line; line = nl ? nl + 1 : NULL) {
		nl = strchr(line, '\n');
		if (nl)
			*nl = '\0';
		char *end;
		long long when = strtoll(line, &end, 10);
		if (end == line || *end != ' ' || !end[1])
			continue;
		struct vacation_sender *s = xappend(out, &n, sizeof *s);
		s->when = when;
		s->address = end + 1;
	}
	return n;
}

static bool vacation_sender_ok(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > VACATION_SENDER_MAX)
		return false;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

/* The record after noting sender at now: the entries still within the
 * window, sender's old one left out, the newest VACATION_SENDERS_MAX. */
static char *vacation_senders_format(const struct vacation_sender *s, size_t n, const char *sender,
				     long long now, long long since, size_t *len)
{
	size_t keep = 0, first = 0;
	for (size_t i = 0; i < n; i++)
		keep += s[i].when > since && strcasecmp(s[i].address, sender) != 0;
	/* one slot for the new entry */
	size_t skip = keep + 1 > VACATION_SENDERS_MAX ? keep + 1 - VACATION_SENDERS_MAX : 0;
	char *out = NULL;
	size_t cap = 0;
	FILE *f = open_memstream(&out, &cap);
	if (!f)
		fatal("open_memstream: %s", strerror(errno));
	for (size_t i = 0; i < n; i++) {
		if (s[i].when <= since || strcasecmp(s[i].address, sender) == 0)
			continue;
		if (first++ < skip)
			continue;
		(void)fprintf(f, "%lld %s\n", s[i].when, s[i].address); /* fclose() tells */
	}
	(void)fprintf(f, "%lld %s\n", now, sender); /* fclose() tells */
	if (fclose(f) != 0)
		fatal("cannot write the senders record in memory: %s", strerror(errno));
	*len = cap;
	return out;
}

int vacation_note_sender(const char *dir, const char *sender, unsigned days, time_t now,
			 bool *due, char *err, size_t errsz)
{
	*due = false;
	if (!vacation_sender_ok(sender)) {
		errfmt(err, errsz, "%s", "a sender address that cannot be remembered");
		return -1;
	}
	char *text;
	size_t len = 0;
	int r = vacation_slurp(dir, vacation_senders_file, VACATION_SENDERS_FILE_MAX, &text, &len,
			       err, errsz);
	if (r < 0)
		return -1;
	struct vacation_sender *s = NULL;
	size_t n = text ? vacation_senders_parse(text, &s) : 0;
	long long since = (long long)now - (long long)days * 86400;
	bool answered = false;
	for (size_t i = 0; i < n && !answered; i++)
		answered = s[i].when > since && strcasecmp(s[i].address, sender) == 0;
	r = 0;
	if (!answered) {
		char *out = vacation_senders_format(s, n, sender, (long long)now, since, &len);
		r = vacation_replace(dir, vacation_senders_file, out, len, err, errsz);
		free(out);
		*due = r == 0;
	}
	free(s);
	free(text);
	return r;
}
