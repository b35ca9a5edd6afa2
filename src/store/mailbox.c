/* mailbox: the IMAP mail store (see mailbox.h) on a Maildir with Maildir++
 * folders: the per-folder UID index (appended to; its upkeep on a worker),
 * views that follow the disk and queue RFC 3501 §7 unilateral responses,
 * flags in file names, EXPUNGE, COPY, MOVE (RFC 6851), APPEND with
 * APPENDUID/COPYUID (RFC 4315) as jobs for a worker, folders,
 * subscriptions and special-use folders (RFC 6154). */
#define _GNU_SOURCE /* nftw, inotify, utimensat */
#include "store/mailbox.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/inotify.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "store/listing.h"
#include "store/maildir.h"
#include "store/modseq.h"
#include "lib/log.h"
#include "lib/offload.h"
#include "lib/util.h"

#define MAILBOX_INDEX "posthorn-uidlist"
#define MAILBOX_INDEX_TMP "posthorn-uidlist.tmp"
#define MAILBOX_INDEX_LOCK "posthorn-uidlist.lock"
#define MAILBOX_SUBSCRIPTIONS "subscriptions"
/* A folder's special uses (RFC 6154): "\Sent\n", in its own directory */
#define MAILBOX_USES "posthorn-special-use"
#define MAILBOX_USES_TMP "posthorn-special-use.tmp"
/* At the root: the default folders were given their uses (mailbox_prepare) */
#define MAILBOX_USES_DONE "posthorn-special-use.defaults"

enum {
	MAILBOX_INFO_MAX = 64,           /* letters of a name's ":2," info kept */
	MAILBOX_COPY_BUF = 64 * 1024,
	MAILBOX_DIRTY_SECONDS = 2,       /* file times in whole seconds: rescanned this long */
	MAILBOX_SCAN_TRIES = 3,          /* rescans while a directory changes under readdir */
	MAILBOX_TMP_STALE = 36 * 3600,   /* a tmp/ file this old is left over (maildir(5)) */
	MAILBOX_TMP_SWEEP = 1000,        /* tmp/ entries looked at per sweep */
	MAILBOX_USES_FILE_MAX = 256,     /* octets of a uses file read */
	MAILBOX_COMPACT_MIN = 64,        /* lines of removed messages worth a rewrite */
	MAILBOX_STORE_TRIES = 8,         /* STORE passes while others rename the same files */
	MAILBOX_EXPUNGE_TRIES = 4,       /* looks for a file renamed while EXPUNGE removes it */
};

_Static_assert((long)LISTING_MESSAGES_MAX == (long)MAILBOX_MESSAGES_MAX, "a snapshot holds any folder");

/* qsort and bsearch that accept an empty array (NULL base). */
static void mailbox_sort(void *base, size_t n, size_t size, int (*cmp)(const void *, const void *))
{
	if (n > 1)
		qsort(base, n, size, cmp);
}

static void *mailbox_search(const void *key, const void *base, size_t n, size_t size,
			    int (*cmp)(const void *, const void *))
{
	return n > 0 ? bsearch(key, base, n, size, cmp) : NULL;
}

/* ---- flags ---------------------------------------------------------------- */

static const struct {
	unsigned flag;
	char letter;                 /* Maildir info letter */
	const char *name;
} mailbox_flags[] = {
	{MAILBOX_DRAFT, 'D', "\\Draft"},
	{MAILBOX_FLAGGED, 'F', "\\Flagged"},
	{MAILBOX_ANSWERED, 'R', "\\Answered"},
	{MAILBOX_SEEN, 'S', "\\Seen"},
	{MAILBOX_DELETED, 'T', "\\Deleted"},
};

const char *mailbox_flag_name(unsigned flag)
{
	if (flag == MAILBOX_RECENT)
		return "\\Recent";
	for (size_t i = 0; i < ARRAY_LEN(mailbox_flags); i++)
		if (mailbox_flags[i].flag == flag)
			return mailbox_flags[i].name;
	return NULL;
}

bool mailbox_flag_parse(const char *word, unsigned *flag)
{
	for (size_t i = 0; i < ARRAY_LEN(mailbox_flags); i++) {
		if (str_ieq(word, mailbox_flags[i].name)) {
			*flag = mailbox_flags[i].flag;
			return true;
		}
	}
	return false;
}

static bool mailbox_is_system_letter(char c)
{
	for (size_t i = 0; i < ARRAY_LEN(mailbox_flags); i++)
		if (mailbox_flags[i].letter == c)
			return true;
	return false;
}

/* The ":2," info of a name, NULL when it has none. */
static const char *mailbox_info(const char *name)
{
	const char *c = strchr(name, ':');
	return c && c[1] == '2' && c[2] == ',' ? c + 3 : NULL;
}

static bool mailbox_is_keyword_letter(char c)
{
	return c >= 'a' && c < 'a' + MAILBOX_KEYWORDS_MAX;
}

/* The flag word of a name's info: system letters and keyword letters. */
static unsigned mailbox_name_flags(const char *name)
{
	const char *info = mailbox_info(name);
	unsigned f = 0;
	for (const char *p = info; p && *p; p++) {
		if (mailbox_is_keyword_letter(*p))
			f |= MAILBOX_KEYWORD(*p - 'a');
		for (size_t i = 0; i < ARRAY_LEN(mailbox_flags); i++)
			if (mailbox_flags[i].letter == *p)
				f |= mailbox_flags[i].flag;
	}
	return f;
}

static int mailbox_cmp_char(const void *a, const void *b)
{
	return *(const char *)a - *(const char *)b;
}

/* name with its info replaced by flags: system and keyword letters (plus
 * letters of the old info that are neither, kept as they were), sorted as
 * Maildir wants (uppercase before lowercase). */
static char *mailbox_name_with_flags(const char *name, unsigned flags)
{
	char letters[MAILBOX_INFO_MAX + ARRAY_LEN(mailbox_flags) + MAILBOX_KEYWORDS_MAX + 1];
	size_t n = 0;
	const char *info = mailbox_info(name);
	for (const char *p = info; p && *p && n < MAILBOX_INFO_MAX; p++)
		if (!mailbox_is_system_letter(*p) && !mailbox_is_keyword_letter(*p) &&
		    !memchr(letters, *p, n) && *p > ' ' && *p < 0x7f)
			letters[n++] = *p;
	for (size_t i = 0; i < ARRAY_LEN(mailbox_flags); i++)
		if (flags & mailbox_flags[i].flag)
			letters[n++] = mailbox_flags[i].letter;
	for (unsigned i = 0; i < MAILBOX_KEYWORDS_MAX; i++)
		if (flags & MAILBOX_KEYWORD(i))
			letters[n++] = (char)('a' + i);
	mailbox_sort(letters, n, 1, mailbox_cmp_char);
	letters[n] = '\0';
	size_t base = strcspn(name, ":");
	return xasprintf("%.*s:2,%s", (int)base, name, letters);
}

/* ---- names ------------------------------------------------------------- */

bool mailbox_is_inbox(const char *name)
{
	return str_ieq(name, "INBOX");
}

/* The value of a modified BASE64 character (RFC 3501 §5.1.3: "," for
 * "/"), -1 for any other. */
static int mailbox_b64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == ',')
		return 63;
	return -1;
}

/* One UTF-16 unit of an encoded run; *high holds a high surrogate that
 * waits for its low one. */
static const char *mailbox_utf16_problem(unsigned u, unsigned *high)
{
	bool is_high = u >= 0xd800 && u <= 0xdbff, is_low = u >= 0xdc00 && u <= 0xdfff;
	if (*high) {
		*high = 0;
		return is_low ? NULL : "a UTF-16 surrogate without its pair";
	}
	if (is_high) {
		*high = u;
		return NULL;
	}
	if (is_low)
		return "a UTF-16 surrogate without its pair";
	if (u < 0x20 || u == 0x7f)
		return "an encoded control character";
	if (u < 0x7f)
		return "printable US-ASCII written encoded";
	return NULL;
}

/* The shifted run after "&" at *p, up to and past its "-". */
static const char *mailbox_run_problem(const char **p)
{
	unsigned bits = 0, high = 0;
	int nbits = 0;
	size_t units = 0;
	const char *q = *p;
	for (; *q && *q != '-'; q++) {
		int v = mailbox_b64_value(*q);
		if (v < 0)
			return "a character outside modified BASE64 in an encoded run";
		bits = ((bits << 6) | (unsigned)v) & 0x3fffffu; /* never more than 21 bits pending */
		nbits += 6;
		if (nbits >= 16) {
			nbits -= 16;
			const char *why = mailbox_utf16_problem((bits >> nbits) & 0xffffu, &high);
			if (why)
				return why;
			units++;
		}
	}
	if (*q != '-')
		return "an encoded run without its closing \"-\"";
	if (units == 0 || nbits >= 6 || (bits & ((1u << nbits) - 1)) != 0)
		return "an encoded run of no whole UTF-16 character";
	if (high)
		return "a UTF-16 surrogate without its pair";
	*p = q + 1;
	return NULL;
}

/* RFC 3501 §5.1.3: "&" starts a run of modified BASE64 of UTF-16 ended by
 * "-", "&-" is "&" itself.  Valid only as an encoder writes it (so that
 * one folder has one name): nothing that can stand for itself encoded, no
 * padding bits set, no run right after another, surrogates in pairs. */
static const char *mailbox_mutf7_problem(const char *name)
{
	bool after_run = false;
	for (const char *p = name; *p;) {
		if (p[0] != '&') {
			p++;
			after_run = false;
		} else if (p[1] == '-') {
			p += 2;
			after_run = false;
		} else if (after_run) {
			return "two encoded runs side by side (one run must hold both)";
		} else {
			p++;
			const char *why = mailbox_run_problem(&p);
			if (why)
				return why;
			after_run = true;
		}
	}
	return NULL;
}

/* Why a name cannot be a folder's (RFC 3501 §5.1), NULL when it can.
 * The name becomes the directory ".<name>" of the Maildir (Maildir++), so
 * nothing may make it another path: no "/", no empty hierarchy level
 * (".." or a "." at either end). */
static const char *mailbox_name_problem(const char *name)
{
	size_t len = strlen(name);
	if (len == 0)
		return "the name is empty";
	if (len > MAILBOX_NAME_MAX)
		return "the name is longer than 254 octets";
	if (mailbox_is_inbox(name))
		return NULL;
	for (const char *p = name; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c >= 0x80)
			return "8-bit characters must be written in modified UTF-7 (RFC 3501 §5.1.3)";
		if (c < 0x20 || c == 0x7f)
			return "control characters are not allowed";
		if (c == '/')
			return "\"/\" is not allowed (the hierarchy delimiter is \".\")";
		if (c == '%' || c == '*')
			return "\"%\" and \"*\" are LIST wildcards";
	}
	if (name[0] == MAILBOX_DELIM || name[len - 1] == MAILBOX_DELIM || strstr(name, ".."))
		return "empty hierarchy level (\".\" at an end, or \"..\")";
	/* INBOX is the Maildir root and has no children of its own */
	if (len > 5 && strncasecmp(name, "INBOX", 5) == 0 && name[5] == MAILBOX_DELIM)
		return "INBOX cannot have children";
	return mailbox_mutf7_problem(name);
}

bool mailbox_name_valid(const char *name)
{
	return mailbox_name_problem(name) == NULL;
}

/* Wildcard matching row by row (row[j]: the pattern so far matches the
 * first j octets of n): O(pattern x name) whatever the pattern, where
 * backtracking would be exponential in the number of wildcards. */
static bool mailbox_match_at(const char *p, const char *n)
{
	size_t nl = strlen(n);
	if (nl > MAILBOX_NAME_MAX)
		return false;
	bool a[MAILBOX_NAME_MAX + 1], b[MAILBOX_NAME_MAX + 1];
	bool *row = a, *next = b;
	memset(row, 0, sizeof a);
	row[0] = true;
	for (; *p; p++) {
		if (*p == '*' || *p == '%') {
			next[0] = row[0];
			for (size_t j = 1; j <= nl; j++)
				next[j] = row[j] ||
					  (next[j - 1] && (*p == '*' || n[j - 1] != MAILBOX_DELIM));
		} else {
			next[0] = false;
			for (size_t j = 1; j <= nl; j++)
				next[j] = row[j - 1] && n[j - 1] == *p;
		}
		bool *t = row;
		row = next;
		next = t;
	}
	return row[nl];
}

bool mailbox_match(const char *pattern, const char *name)
{
	if (mailbox_is_inbox(name)) {
		/* INBOX in any case (RFC 3501 §5.1): "inb*" finds it too */
		char *upper = xstrdup(pattern);
		for (char *c = upper; *c; c++)
			if (*c >= 'a' && *c <= 'z')
				*c = (char)(*c - 'a' + 'A');
		bool r = mailbox_match_at(upper, "INBOX");
		free(upper);
		return r;
	}
	return mailbox_match_at(pattern, name);
}

static const struct {
	unsigned bit;
	const char *attr;
} mailbox_special_attrs[] = {
	{MAILBOX_SPECIAL_SENT, "\\Sent"},
	{MAILBOX_SPECIAL_DRAFTS, "\\Drafts"},
	{MAILBOX_SPECIAL_TRASH, "\\Trash"},
	{MAILBOX_SPECIAL_JUNK, "\\Junk"},
	{MAILBOX_SPECIAL_ARCHIVE, "\\Archive"},
};

const char *mailbox_special_attr(unsigned bit)
{
	for (size_t i = 0; i < ARRAY_LEN(mailbox_special_attrs); i++)
		if (mailbox_special_attrs[i].bit == bit)
			return mailbox_special_attrs[i].attr;
	return NULL;
}

bool mailbox_special_parse(const char *attr, unsigned *bit)
{
	for (size_t i = 0; i < ARRAY_LEN(mailbox_special_attrs); i++) {
		if (str_ieq(attr, mailbox_special_attrs[i].attr)) {
			*bit = mailbox_special_attrs[i].bit;
			return true;
		}
	}
	return false;
}

/* The folders every user gets at the first login, with their uses. */
static const struct {
	const char *name;
	unsigned special;
} mailbox_specials[] = {
	{"Sent", MAILBOX_SPECIAL_SENT},
	{"Drafts", MAILBOX_SPECIAL_DRAFTS},
	{"Trash", MAILBOX_SPECIAL_TRASH},
	{"Junk", MAILBOX_SPECIAL_JUNK},
};

/* The directory of a folder (caller frees). */
static char *mailbox_dir(const char *root, const char *name)
{
	if (mailbox_is_inbox(name))
		return xstrdup(root);
	return xasprintf("%s/.%s", root, name);
}

static bool mailbox_is_dir(const char *path)
{
	struct stat st;
	return lstat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Does a folder (a directory with cur/) exist at dir? */
static bool mailbox_folder_exists(const char *dir)
{
	char *cur = xasprintf("%s/cur", dir);
	bool r = mailbox_is_dir(dir) && mailbox_is_dir(cur);
	free(cur);
	return r;
}

/* ---- special uses (RFC 6154) ----------------------------------------------- */

/* The uses stored in the folder at dir (MAILBOX_SPECIAL_* bits): none when
 * the file is missing or unreadable; words that are no use are skipped. */
static unsigned mailbox_uses_read(const char *dir)
{
	char *path = xasprintf("%s/" MAILBOX_USES, dir);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	free(path);
	if (fd < 0)
		return 0;
	char buf[MAILBOX_USES_FILE_MAX + 1];
	ssize_t n;
	do
		n = read(fd, buf, MAILBOX_USES_FILE_MAX);
	while (n < 0 && errno == EINTR);
	close(fd);
	if (n <= 0)
		return 0;
	buf[n] = '\0';
	unsigned uses = 0, bit;
	char *save = NULL;
	for (char *w = strtok_r(buf, " \t\r\n", &save); w; w = strtok_r(NULL, " \t\r\n", &save))
		if (mailbox_special_parse(w, &bit))
			uses |= bit;
	return uses;
}

/* Store uses in the folder at dir: a new file, fsync, rename over the old
 * one, fsync of the directory.  0, or -1 with a reason in err. */
static int mailbox_uses_write(const char *dir, unsigned uses, char *err, size_t errsz)
{
	char text[MAILBOX_USES_FILE_MAX];
	size_t len = 0;
	for (size_t i = 0; i < ARRAY_LEN(mailbox_special_attrs); i++) {
		if (!(uses & mailbox_special_attrs[i].bit))
			continue;
		const char *a = mailbox_special_attrs[i].attr;
		size_t alen = strlen(a); /* all of them fit: 5 short words */
		if (len)
			text[len++] = ' ';
		memcpy(text + len, a, alen);
		len += alen;
	}
	text[len++] = '\n';
	/* a name of this writer's own: another node may write it at once */
	char *unique = maildir_unique_name(0);
	char *tmp = xasprintf("%s/" MAILBOX_USES_TMP ".%s", dir, unique);
	free(unique);
	char *path = xasprintf("%s/" MAILBOX_USES, dir);
	int r = -1;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd >= 0) {
		bool ok = write_all(fd, text, len) == 0 && fsync(fd) == 0;
		ok = close(fd) == 0 && ok;
		r = ok && rename(tmp, path) == 0 && fsync_dir(dir) == 0 ? 0 : -1;
	}
	if (r < 0) {
		errfmt(err, errsz, "cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
	}
	free(tmp);
	free(path);
	return r;
}

static long long mailbox_name_time(const char *name)
{
	long long t = 0;
	for (const char *p = name; *p >= '0' && *p <= '9' && t < 100000000000LL; p++)
		t = t * 10 + (*p - '0');
	return t;
}

/* ---- the folder's disk listing ------------------------------------------- */

struct mailbox_disk {
	char *name;
	uint32_t ulen;               /* maildir_unique_len(name) */
	uint32_t uid;                /* 0 until the index gives one */
	long long time;              /* the name's leading number */
	int hint;                    /* order among the hinted (copied, appended) files; -1 */
	uint64_t modseq;             /* RFC 7162: given under the index lock (modseq.c) */
	bool in_new;
	bool fresh;                  /* its UID given by this listing */
};

struct mailbox_scan {
	struct mailbox_disk *v;
	size_t n, cap;
};

static void mailbox_scan_free(struct mailbox_scan *s)
{
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i].name);
	free(s->v);
	memset(s, 0, sizeof *s);
}

static bool mailbox_name_ok(const char *name)
{
	if (name[0] == '.')
		return false;
	for (const char *p = name; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return false; /* the index is line based */
	return maildir_unique_len(name) > 0;
}

struct mailbox_read_state {
	struct mailbox_scan *scan;
	const char *dir;
};

static int mailbox_add_file(void *arg, const char *name, bool in_new, char *err, size_t errsz)
{
	struct mailbox_read_state *st = arg;
	struct mailbox_scan *s = st->scan;
	if (!mailbox_name_ok(name))
		return 0;
	if (s->n >= MAILBOX_MESSAGES_MAX) {
		errfmt(err, errsz, "more than %d messages in %s", MAILBOX_MESSAGES_MAX, st->dir);
		return -1;
	}
	struct mailbox_disk *m = xgrow(&s->v, &s->n, &s->cap, sizeof *m);
	m->name = xstrdup(name);
	m->ulen = (uint32_t)maildir_unique_len(m->name);
	m->time = mailbox_name_time(m->name);
	m->in_new = in_new;
	m->hint = -1;
	return 0;
}

static int mailbox_read_sub(const char *dir, bool in_new, struct mailbox_scan *s, char *err,
			    size_t errsz)
{
	struct mailbox_read_state st = {s, dir};
	return maildir_each_file(dir, in_new, mailbox_add_file, &st, err, errsz);
}

/* The modification times of new/ and cur/, which change with every file
 * added, renamed or removed there, the identity of the UID index (a new
 * file each time it is written, none when it is lost), and when they were
 * read. */
struct mailbox_stamp {
	struct timespec new_m, cur_m;
	ino_t index_ino;             /* 0: no index */
	struct timespec index_c;
	struct timespec read_at;     /* CLOCK_REALTIME_COARSE, the clock of file times */
};

static void mailbox_stamp_read(const char *dir, struct mailbox_stamp *st)
{
	memset(st, 0, sizeof *st);
	clock_gettime(CLOCK_REALTIME_COARSE, &st->read_at);
	struct stat sb;
	char *p = xasprintf("%s/new", dir);
	if (stat(p, &sb) == 0)
		st->new_m = sb.st_mtim;
	free(p);
	p = xasprintf("%s/cur", dir);
	if (stat(p, &sb) == 0)
		st->cur_m = sb.st_mtim;
	free(p);
	p = xasprintf("%s/" MAILBOX_INDEX, dir);
	if (stat(p, &sb) == 0) {
		st->index_ino = sb.st_ino;
		st->index_c = sb.st_ctim;
	}
	free(p);
}

static bool mailbox_time_eq(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static bool mailbox_stamp_eq(const struct mailbox_stamp *a, const struct mailbox_stamp *b)
{
	return mailbox_time_eq(&a->new_m, &b->new_m) && mailbox_time_eq(&a->cur_m, &b->cur_m) &&
	       a->index_ino == b->index_ino && mailbox_time_eq(&a->index_c, &b->index_c);
}

/* Was m set before the clock tick at? Then any later change gives a later
 * time.  A time without nanoseconds may come from a file system that
 * keeps whole seconds: settled only two seconds on. */
static bool mailbox_time_settled(const struct timespec *m, const struct timespec *at)
{
	if (m->tv_nsec == 0)
		return m->tv_sec + MAILBOX_DIRTY_SECONDS <= at->tv_sec;
	return m->tv_sec < at->tv_sec || (m->tv_sec == at->tv_sec && m->tv_nsec < at->tv_nsec);
}

/* Would every change after this stamp show in the directories' times?
 * Not when one happened in the clock tick of the reading. */
static bool mailbox_stamp_settled(const struct mailbox_stamp *st)
{
	return mailbox_time_settled(&st->new_m, &st->read_at) &&
	       mailbox_time_settled(&st->cur_m, &st->read_at) &&
	       mailbox_time_settled(&st->index_c, &st->read_at);
}

/* List new/ then cur/ (a file moving from new/ to cur/ meanwhile is seen
 * in cur/); again while the directories change under readdir. */
static int mailbox_scan(const char *dir, struct mailbox_scan *s, struct mailbox_stamp *stamp,
			char *err, size_t errsz)
{
	for (int t = 0; t < MAILBOX_SCAN_TRIES; t++) {
		struct mailbox_stamp before, after;
		mailbox_stamp_read(dir, &before);
		mailbox_scan_free(s);
		if (mailbox_read_sub(dir, true, s, err, errsz) < 0 ||
		    mailbox_read_sub(dir, false, s, err, errsz) < 0) {
			mailbox_scan_free(s);
			return -1;
		}
		mailbox_stamp_read(dir, &after);
		*stamp = before;
		if (mailbox_stamp_eq(&before, &after))
			break;
	}
	return 0;
}

static int mailbox_cmp_unique(const struct mailbox_disk *a, const struct mailbox_disk *b)
{
	size_t n = a->ulen < b->ulen ? a->ulen : b->ulen;
	int c = memcmp(a->name, b->name, n);
	if (c)
		return c;
	return a->ulen < b->ulen ? -1 : a->ulen > b->ulen;
}

static int mailbox_qcmp_unique(const void *a, const void *b)
{
	return mailbox_cmp_unique(a, b);
}

/* For the listing: by unique part, then the copy to keep first (cur/
 * before new/, then by name), so the same file wins every time. */
static int mailbox_qcmp_listing(const void *a, const void *b)
{
	const struct mailbox_disk *x = a, *y = b;
	int c = mailbox_cmp_unique(x, y);
	if (c)
		return c;
	if (x->in_new != y->in_new)
		return x->in_new ? 1 : -1;
	return strcmp(x->name, y->name);
}

static int mailbox_qcmp_uid(const void *a, const void *b)
{
	const struct mailbox_disk *x = a, *y = b;
	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* New files: the hinted ones first in hint order, then by delivery time. */
static int mailbox_qcmp_fresh(const void *a, const void *b)
{
	const struct mailbox_disk *x = *(struct mailbox_disk *const *)a;
	const struct mailbox_disk *y = *(struct mailbox_disk *const *)b;
	if ((x->hint < 0) != (y->hint < 0))
		return x->hint < 0 ? 1 : -1;
	if (x->hint != y->hint)
		return x->hint < y->hint ? -1 : 1;
	if (x->time != y->time)
		return x->time < y->time ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* ---- the UID index ---------------------------------------------------------- */

/* The index file, posthorn-uidlist:
 *
 *   V<uidvalidity> N<uidnext>      the header, written whole by a rewrite
 *   <uid> <unique>                 a message, UIDs ascending
 *   N<uidnext>                     the next UID is at least this
 *
 * New messages are appended ("<uid> <unique>" lines); the file is
 * rewritten (a new file renamed over it) only when it is lost or damaged
 * (a new UIDVALIDITY) and to drop the lines of removed messages once they
 * are most of it.  A crash during an append can leave a torn tail: a line
 * without its LF, or zeros where the file grew but its data never reached
 * the disk.  Reading stops at the first line that is not whole and valid;
 * the tail after it is ignored, and the next append cuts it off and writes
 * an "N" line first, which skips at least as many UIDs as the tail had
 * octets (each line has more than one), so no UID the tail named is ever
 * given to another message.  A line is only written under the folder's
 * lock, and only what was made durable (fdatasync before a tagged OK)
 * was promised to a client. */

struct mailbox_ient {
	uint32_t uid;
	uint32_t ulen;
	char *unique;
};

struct mailbox_index {
	uint32_t validity, next;
	struct mailbox_ient *v;        /* with keep: every entry, in file order */
	size_t n, cap;
	size_t lines;                  /* entries read (kept or not) */
	off_t valid_len;               /* octets of the whole, valid lines */
	off_t size;                    /* octets of the file as read */
	uint32_t tail_next;            /* a torn tail: the next UID skips to this */
};

/* Uniques looked up while the index is read (keys sorted by unique; uid
 * set when found). */
struct mailbox_lookup {
	struct mailbox_disk *keys;
	size_t n;
};

static void mailbox_index_free(struct mailbox_index *ix)
{
	for (size_t i = 0; i < ix->n; i++)
		free(ix->v[i].unique);
	free(ix->v);
	memset(ix, 0, sizeof *ix);
}

static bool mailbox_parse_u32(const char *s, char **end, uint32_t *out)
{
	if (*s < '0' || *s > '9')
		return false;
	errno = 0;
	unsigned long v = strtoul(s, end, 10);
	if (errno || v > UINT32_MAX)
		return false;
	*out = (uint32_t)v;
	return true;
}

/* Text built in memory (index lines), grown as needed. */
struct mailbox_text {
	char *p;
	size_t n, cap;
};

static void mailbox_text_addf(struct mailbox_text *t, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void mailbox_text_addf(struct mailbox_text *t, const char *fmt, ...)
{
	for (;;) {
		va_list ap;
		va_start(ap, fmt);
		int k = vsnprintf(t->p ? t->p + t->n : NULL, t->cap - t->n, fmt, ap);
		va_end(ap);
		if (k < 0)
			fatal("mailbox: cannot format an index line");
		if ((size_t)k < t->cap - t->n) {
			t->n += (size_t)k;
			return;
		}
		t->cap = (t->cap + (size_t)k + 1) * 2;
		t->p = xrealloc(t->p, t->cap);
	}
}

/* One line of the index (LF included) into ix; false when it is not a
 * whole, valid line: there the valid part ends. */
static bool mailbox_index_line(struct mailbox_index *ix, const char *line, size_t len, bool keep,
			       uint32_t *last, const struct mailbox_lookup *find)
{
	char *e;
	uint32_t v;
	if (len < 3 || line[len - 1] != '\n' || memchr(line, '\0', len))
		return false;
	if (line[0] == 'N') {
		if (!mailbox_parse_u32(line + 1, &e, &v) || *e != '\n' || v == 0)
			return false;
		if (v > ix->next)
			ix->next = v;
		return true;
	}
	if (!mailbox_parse_u32(line, &e, &v) || *e != ' ' || v <= *last || v == UINT32_MAX ||
	    e + 2 > line + len - 1 || ix->lines >= MAILBOX_MESSAGES_MAX)
		return false;
	const char *u = e + 1;
	size_t ulen = (size_t)(line + len - 1 - u);
	for (size_t i = 0; i < ulen; i++)
		if ((unsigned char)u[i] < 0x20 || u[i] == 0x7f)
			return false; /* names with control octets are never indexed */
	*last = v;
	if (v >= ix->next)
		ix->next = v + 1;
	if (find && find->n) {
		struct mailbox_disk key = {.name = (char *)u, .ulen = (uint32_t)ulen};
		struct mailbox_disk *k =
		    mailbox_search(&key, find->keys, find->n, sizeof *find->keys, mailbox_qcmp_unique);
		if (k)
			k->uid = v;
	}
	ix->lines++;
	if (keep) {
		struct mailbox_ient *en = xgrow(&ix->v, &ix->n, &ix->cap, sizeof *en);
		en->uid = v;
		en->ulen = (uint32_t)ulen;
		en->unique = xstrndup(u, ulen);
	}
	return true;
}

/* The largest number a line of a torn tail may stand for (0: none). */
static uint64_t mailbox_tail_number(const char *line)
{
	const char *p = line[0] == 'N' ? line + 1 : line;
	uint64_t v = 0;
	for (; *p >= '0' && *p <= '9' && v <= UINT32_MAX; p++)
		v = v * 10 + (uint64_t)(*p - '0');
	return v;
}

/* After a torn tail: the next UID skips every UID the tail may have named
 * (see above).  Past the UID space it is UINT32_MAX: the index is then
 * rebuilt under a new UIDVALIDITY. */
static void mailbox_index_skip_tail(struct mailbox_index *ix, uint64_t tail_max)
{
	uint64_t next = ix->next;
	if (tail_max + 1 > next)
		next = tail_max + 1;
	next += (uint64_t)(ix->size - ix->valid_len);
	ix->next = ix->tail_next = next >= UINT32_MAX ? UINT32_MAX : (uint32_t)next;
}

/* Read the index open at fd (from its start).  With keep the entries are
 * kept in ix; with find their UIDs are looked up.  1: read; 0: no valid
 * header (*old_validity is the damaged file's UIDVALIDITY when it had
 * one); -1: I/O error. */
static int mailbox_index_read(int fd, const char *dir, struct mailbox_index *ix, bool keep,
			      const struct mailbox_lookup *find, uint32_t *old_validity, char *err,
			      size_t errsz)
{
	memset(ix, 0, sizeof *ix);
	if (lseek(fd, 0, SEEK_SET) < 0) {
		errfmt(err, errsz, "cannot read %s/%s: %s", dir, MAILBOX_INDEX, strerror(errno));
		return -1;
	}
	int dfd = dup(fd);
	FILE *fp = dfd >= 0 ? fdopen(dfd, "re") : NULL;
	if (!fp) {
		errfmt(err, errsz, "cannot read %s/%s: %s", dir, MAILBOX_INDEX, strerror(errno));
		if (dfd >= 0)
			close(dfd);
		return -1;
	}
	char *line = NULL;
	size_t linecap = 0;
	ssize_t len = getline(&line, &linecap, fp);
	char *e;
	bool ok = len > 0 && line[0] == 'V' && mailbox_parse_u32(line + 1, &e, &ix->validity) &&
		  ix->validity > 0;
	if (ok)
		*old_validity = ix->validity;
	ok = ok && e[0] == ' ' && e[1] == 'N' && mailbox_parse_u32(e + 2, &e, &ix->next) &&
	     *e == '\n' && ix->next > 0;
	uint32_t last = 0;
	uint64_t tail_max = 0;
	bool torn = false;
	if (ok)
		ix->valid_len = ix->size = len;
	while (ok && (len = getline(&line, &linecap, fp)) > 0) {
		ix->size += len;
		if (!torn && mailbox_index_line(ix, line, (size_t)len, keep, &last, find)) {
			ix->valid_len = ix->size;
			continue;
		}
		torn = true;
		uint64_t v = mailbox_tail_number(line);
		if (v > tail_max)
			tail_max = v;
	}
	int r = ok ? 1 : 0;
	if (ferror(fp)) {
		errfmt(err, errsz, "cannot read %s/%s: %s", dir, MAILBOX_INDEX, strerror(errno));
		r = -1;
	}
	free(line);
	(void)fclose(fp); /* read only: what was read is all there is */
	if (r == 1 && torn)
		mailbox_index_skip_tail(ix, tail_max);
	if (r != 1)
		mailbox_index_free(ix);
	return r;
}

/* The index of dir opened for reading and appending: the descriptor, or
 * -1 with *missing (no index) or with a reason in err. */
static int mailbox_index_open(const char *dir, bool *missing, char *err, size_t errsz)
{
	char *path = xasprintf("%s/%s", dir, MAILBOX_INDEX);
	int fd = open(path, O_RDWR | O_CLOEXEC | O_NOFOLLOW);
	*missing = fd < 0 && errno == ENOENT;
	if (fd < 0 && !*missing)
		errfmt(err, errsz, "cannot read %s: %s", path, strerror(errno));
	free(path);
	return fd;
}

/* Append text (whole lines) to the index at fd, read into ix: a torn tail
 * is cut off first and an "N" line stands in its place.  0, or -1 with a
 * reason in err (a part written is a torn tail for the next reader). */
static int mailbox_index_append(int fd, const char *dir, struct mailbox_index *ix,
				const struct mailbox_text *lines, char *err, size_t errsz)
{
	struct mailbox_text t = {0};
	if (ix->size > ix->valid_len) {
		if (ftruncate(fd, ix->valid_len) < 0) {
			errfmt(err, errsz, "cannot cut %s/%s: %s", dir, MAILBOX_INDEX, strerror(errno));
			return -1;
		}
		ix->size = ix->valid_len;
		mailbox_text_addf(&t, "N%u\n", ix->tail_next);
	}
	mailbox_text_addf(&t, "%.*s", (int)lines->n, lines->p ? lines->p : "");
	off_t at = ix->valid_len;
	size_t done = 0;
	int r = 0;
	while (done < t.n) {
		ssize_t w = pwrite(fd, t.p + done, t.n - done, at + (off_t)done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			errfmt(err, errsz, "cannot write %s/%s: %s", dir, MAILBOX_INDEX,
			       w < 0 ? strerror(errno) : "nothing written");
			r = -1;
			break;
		}
		done += (size_t)w;
	}
	if (r == 0)
		ix->valid_len = ix->size = at + (off_t)t.n;
	free(t.p);
	return r;
}

/* The index at fd made durable, and the file dir/posthorn-uidlist too
 * when a rewrite put another one in its place since fd was opened (it
 * holds what fd held: rewrites read the index under the lock). */
static int mailbox_index_sync_fd(int fd, const char *dir, char *err, size_t errsz)
{
	if (fdatasync(fd) < 0) {
		errfmt(err, errsz, "cannot sync %s/%s: %s", dir, MAILBOX_INDEX, strerror(errno));
		return -1;
	}
	char *path = xasprintf("%s/%s", dir, MAILBOX_INDEX);
	struct stat a, b;
	int r = 0;
	if (fstat(fd, &a) == 0 && stat(path, &b) == 0 && (a.st_ino != b.st_ino || a.st_dev != b.st_dev)) {
		int nfd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
		r = nfd >= 0 && fdatasync(nfd) == 0 && fsync_dir(dir) == 0 ? 0 : -1;
		if (r < 0)
			errfmt(err, errsz, "cannot sync %s: %s", path, strerror(errno));
		if (nfd >= 0)
			close(nfd);
	}
	free(path);
	return r;
}

/* Rewrite the index: ix's header, then the files of the listing s that
 * have a UID (s sorted by UID); a new file renamed over the old one.
 * durable: synced before the rename and the folder after it; else the
 * caller has an upkeep make it durable (a crash before then costs at
 * most a new UIDVALIDITY or a torn tail, both safe). */
static int mailbox_index_write(const char *dir, const struct mailbox_index *ix,
			       const struct mailbox_scan *s, bool durable, char *err, size_t errsz)
{
	char *tmp = xasprintf("%s/%s", dir, MAILBOX_INDEX_TMP);
	char *path = xasprintf("%s/%s", dir, MAILBOX_INDEX);
	FILE *fp = replace_open(tmp);
	int r = -1;
	if (!fp) {
		errfmt(err, errsz, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	report(fp, "V%u N%u\n", ix->validity, ix->next);
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i].uid)
			report(fp, "%u %.*s\n", s->v[i].uid, (int)s->v[i].ulen, s->v[i].name);
	if (replace_commit(fp, tmp, path, durable) < 0) {
		errfmt(err, errsz, "cannot write %s: %s", tmp, strerror(errno));
		goto out;
	}
	/* the rename durable too: a lost index costs the clients a resync */
	if (durable && fsync_dir(dir) < 0) {
		errfmt(err, errsz, "cannot sync %s: %s", dir, strerror(errno));
		goto out;
	}
	r = 0;
out:
	free(tmp);
	free(path);
	return r;
}

/* A new UIDVALIDITY: the time, strictly greater than any this process
 * gave and than the lost index's (RFC 3501 §2.3.1.1).  Any thread. */
static uint32_t mailbox_new_validity(uint32_t old)
{
	static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
	static uint32_t last;
	pthread_mutex_lock(&lock);
	uint32_t v = (uint32_t)time(NULL);
	if (v <= last)
		v = last + 1;
	if (v <= old)
		v = old + 1;
	if (v == 0)
		v = 1;
	last = v;
	pthread_mutex_unlock(&lock);
	return v;
}

enum { MAILBOX_LOCK_BUSY = -2 };

/* The folder's index lock: the descriptor holding it, -1 with a reason in
 * err, or MAILBOX_LOCK_BUSY when wait is false and someone holds it.  A
 * holder reads and writes and syncs after unlocking, except a rewrite on
 * a worker (a compaction, or a rebuild for APPEND or COPY), which syncs
 * the new file before it renames it: the event loop's syncs take the lock
 * only when it is free (try), or wait for it when their answer depends
 * on it (SELECT, STATUS, after EXPUNGE or MOVE). */
static int mailbox_lock(const char *dir, bool wait, char *err, size_t errsz)
{
	char *path = xasprintf("%s/%s", dir, MAILBOX_INDEX_LOCK);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		errfmt(err, errsz, "cannot open %s: %s", path, strerror(errno));
		free(path);
		return -1;
	}
	/* an fcntl lock, which holds between nodes on a shared file system */
	if (file_lock(fd, wait) < 0) {
		int e = errno;
		close(fd);
		if (e == EWOULDBLOCK) {
			free(path);
			return MAILBOX_LOCK_BUSY;
		}
		errfmt(err, errsz, "cannot lock %s: %s", path, strerror(e));
		free(path);
		return -1;
	}
	free(path);
	return fd;
}

static void mailbox_unlock(int fd)
{
	close(fd); /* releases the lock */
}

/* ---- keywords (dovecot-keywords) ------------------------------------------- */

static bool mailbox_is_atom_char(unsigned char c)
{
	/* RFC 3501 §9 ATOM-CHAR: not atom-specials, CTL, SP or 8-bit */
	return c > ' ' && c < 0x7f && !strchr("(){%*\"\\]", c);
}

bool mailbox_keyword_valid(const char *name)
{
	size_t len = strlen(name);
	if (len == 0 || len > MAILBOX_KEYWORD_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!mailbox_is_atom_char((unsigned char)name[i]))
			return false;
	return true;
}

int mailbox_keywords_find(const struct mailbox_keywords *k, const char *name)
{
	for (int i = 0; i < MAILBOX_KEYWORDS_MAX; i++)
		if (k->name[i][0] && str_ieq(k->name[i], name))
			return i;
	return -1;
}

size_t mailbox_keywords_count(const struct mailbox_keywords *k)
{
	size_t n = 0;
	for (size_t i = 0; i < MAILBOX_KEYWORDS_MAX; i++)
		n += k->name[i][0] != '\0';
	return n;
}

/* One "N name" line into k; false (ignored) when it is not one. */
static bool mailbox_keywords_line(const char *line, size_t len, struct mailbox_keywords *k)
{
	size_t i = 0;
	unsigned idx = 0;
	while (i < len && i < 3 && line[i] >= '0' && line[i] <= '9')
		idx = idx * 10 + (unsigned)(line[i++] - '0');
	if (i == 0 || i >= len || line[i] != ' ' || idx >= MAILBOX_KEYWORDS_MAX ||
	    len - i - 1 > MAILBOX_KEYWORD_LEN || k->name[idx][0])
		return false;
	char name[MAILBOX_KEYWORD_LEN + 1];
	memcpy(name, line + i + 1, len - i - 1);
	name[len - i - 1] = '\0';
	if (!mailbox_keyword_valid(name) || mailbox_keywords_find(k, name) >= 0)
		return false;
	memcpy(k->name[idx], name, len - i);
	return true;
}

void mailbox_keywords_parse(const char *text, size_t len, struct mailbox_keywords *out)
{
	memset(out, 0, sizeof *out);
	size_t at = 0;
	while (at < len) {
		const char *nl = memchr(text + at, '\n', len - at);
		size_t end = nl ? (size_t)(nl - text) : len;
		size_t l = end - at;
		if (l > 0 && text[at + l - 1] == '\r')
			l--;
		(void)mailbox_keywords_line(text + at, l, out);
		at = end + 1;
	}
}

#define MAILBOX_KEYWORDS_FILE "dovecot-keywords"
#define MAILBOX_KEYWORDS_TMP "dovecot-keywords.posthorn-tmp"
/* 26 lines of "NN " and 64 octets fit in far less; more is read as far
 * as this and the rest ignored like any bad line. */
enum { MAILBOX_KEYWORDS_FILE_MAX = 8192 };

/* Read dir's dovecot-keywords into k (empty when there is none).  0, or
 * -1 with a reason in err. */
static int mailbox_keywords_load(const char *dir, struct mailbox_keywords *k, char *err,
				 size_t errsz)
{
	memset(k, 0, sizeof *k);
	char *path = xasprintf("%s/%s", dir, MAILBOX_KEYWORDS_FILE);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		int e = errno;
		if (e != ENOENT)
			errfmt(err, errsz, "cannot open %s: %s", path, strerror(e));
		free(path);
		return e == ENOENT ? 0 : -1;
	}
	char *buf = xmalloc(MAILBOX_KEYWORDS_FILE_MAX);
	size_t len = 0;
	while (len < MAILBOX_KEYWORDS_FILE_MAX) {
		ssize_t r = read(fd, buf + len, MAILBOX_KEYWORDS_FILE_MAX - len);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			errfmt(err, errsz, "cannot read %s: %s", path, strerror(errno));
			free(buf);
			free(path);
			close(fd);
			return -1;
		}
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	free(path);
	mailbox_keywords_parse(buf, len, k);
	free(buf);
	return 0;
}

/* Write k as dir's dovecot-keywords: a temporary file of our own, then a
 * rename, so a reader sees the old or the new file whole.  0 or -1. */
static int mailbox_keywords_write(const char *dir, const struct mailbox_keywords *k, char *err,
				  size_t errsz)
{
	char text[MAILBOX_KEYWORDS_MAX * (MAILBOX_KEYWORD_LEN + 4) + 1];
	size_t len = 0;
	for (int i = 0; i < MAILBOX_KEYWORDS_MAX; i++)
		if (k->name[i][0] &&
		    !bsnprintf(text + len, sizeof text - len, "%d %s\n", i, k->name[i]))
			fatal("mailbox: keyword line does not fit");
		else if (k->name[i][0])
			len += strlen(text + len);
	char *tmp = xasprintf("%s/%s", dir, MAILBOX_KEYWORDS_TMP);
	char *path = xasprintf("%s/%s", dir, MAILBOX_KEYWORDS_FILE);
	int rc = -1;
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		errfmt(err, errsz, "cannot create %s: %s", tmp, strerror(errno));
	} else if (write_all(fd, text, len) < 0) {
		errfmt(err, errsz, "cannot write %s: %s", tmp, strerror(errno));
		close(fd);
	} else if (close(fd) < 0 || rename(tmp, path) < 0) {
		errfmt(err, errsz, "cannot write %s: %s", path, strerror(errno));
	} else {
		rc = 0;
	}
	if (rc < 0 && unlink(tmp) < 0 && errno != ENOENT)
		log_warn("mailbox: cannot remove %s: %s", tmp, strerror(errno));
	free(tmp);
	free(path);
	return rc;
}

/* The bits of names in k; with create, missing names take the first free
 * index.  added: k changed.  LIMIT when no index is free. */
static enum mailbox_result mailbox_keywords_resolve(struct mailbox_keywords *k,
						    const char *const *names, size_t n,
						    bool create, unsigned *bits, bool *added,
						    char *err, size_t errsz)
{
	*bits = 0;
	*added = false;
	for (size_t i = 0; i < n; i++) {
		int idx = mailbox_keywords_find(k, names[i]);
		if (idx < 0 && create && mailbox_keyword_valid(names[i])) {
			for (int f = 0; f < MAILBOX_KEYWORDS_MAX && idx < 0; f++)
				if (!k->name[f][0])
					idx = f;
			if (idx < 0) {
				errfmt(err, errsz, "This mailbox has %d keywords, no more can be added",
				       MAILBOX_KEYWORDS_MAX);
				return MAILBOX_ERR_LIMIT;
			}
			xsnprintf(k->name[idx], sizeof k->name[idx], "%s", names[i]);
			*added = true;
		}
		if (idx >= 0)
			*bits |= MAILBOX_KEYWORD(idx);
	}
	return MAILBOX_OK;
}

/* mailbox_keywords_resolve on dir's file: without create (or when all
 * names are known) from the file as read; else under the index lock,
 * re-read, added to and written.  k holds the folder's keywords after. */
static enum mailbox_result mailbox_dir_keywords_bits(const char *dir, struct mailbox_keywords *k,
						     const char *const *names, size_t n,
						     bool create, unsigned *bits, char *err,
						     size_t errsz)
{
	bool added;
	if (mailbox_keywords_load(dir, k, err, errsz) < 0)
		return MAILBOX_ERR_IO;
	enum mailbox_result r = mailbox_keywords_resolve(k, names, n, false, bits, &added, err, errsz);
	unsigned known = 0;
	for (size_t i = 0; i < n; i++)
		known += mailbox_keywords_find(k, names[i]) >= 0;
	if (r != MAILBOX_OK || !create || known == n)
		return r;
	int lock = mailbox_lock(dir, true, err, errsz);
	if (lock < 0)
		return MAILBOX_ERR_IO;
	if (mailbox_keywords_load(dir, k, err, errsz) < 0) {
		mailbox_unlock(lock);
		return MAILBOX_ERR_IO;
	}
	r = mailbox_keywords_resolve(k, names, n, true, bits, &added, err, errsz);
	if (r == MAILBOX_OK && added && mailbox_keywords_write(dir, k, err, errsz) < 0)
		r = MAILBOX_ERR_IO;
	mailbox_unlock(lock);
	if (r != MAILBOX_OK && mailbox_keywords_load(dir, k, err, errsz) < 0)
		memset(k, 0, sizeof *k);
	return r;
}

/* Give s's files their UIDs from ix.  Returns how many of ix's entries
 * name no file any more (removed messages). */
static size_t mailbox_index_match(struct mailbox_index *ix, struct mailbox_scan *s)
{
	size_t stale = 0;
	mailbox_sort(s->v, s->n, sizeof *s->v, mailbox_qcmp_listing);
	/* one file per unique part: a second one (a tool's copy) is ignored */
	size_t o = 0;
	for (size_t i = 0; i < s->n; i++) {
		if (o > 0 && mailbox_cmp_unique(&s->v[o - 1], &s->v[i]) == 0) {
			free(s->v[i].name);
			continue;
		}
		s->v[o++] = s->v[i];
	}
	s->n = o;
	struct mailbox_disk *keys = xcalloc(ix->n ? ix->n : 1, sizeof *keys);
	for (size_t i = 0; i < ix->n; i++) {
		keys[i].name = ix->v[i].unique;
		keys[i].ulen = ix->v[i].ulen;
		keys[i].uid = ix->v[i].uid;
	}
	mailbox_sort(keys, ix->n, sizeof *keys, mailbox_qcmp_unique);
	size_t i = 0, j = 0;
	while (i < s->n && j < ix->n) {
		int c = mailbox_cmp_unique(&s->v[i], &keys[j]);
		if (c == 0) {
			s->v[i++].uid = keys[j++].uid;
		} else if (c < 0) {
			i++;
		} else {
			stale++; /* a removed message's entry */
			j++;
		}
	}
	stale += ix->n - j;
	free(keys);
	return stale;
}

/* UIDs for the files that have none (marked fresh).  0, or -1 when the
 * UID space is used up (the caller rebuilds). */
static int mailbox_index_assign(struct mailbox_index *ix, struct mailbox_scan *s, size_t *nfresh)
{
	*nfresh = 0;
	for (size_t i = 0; i < s->n; i++)
		*nfresh += s->v[i].uid == 0;
	if (*nfresh == 0)
		return 0;
	if ((uint64_t)ix->next + *nfresh >= UINT32_MAX)
		return -1;
	struct mailbox_disk **fresh = xcalloc(*nfresh, sizeof *fresh);
	size_t k = 0;
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i].uid == 0)
			fresh[k++] = &s->v[i];
	mailbox_sort(fresh, *nfresh, sizeof *fresh, mailbox_qcmp_fresh);
	for (k = 0; k < *nfresh; k++) {
		fresh[k]->uid = ix->next++;
		fresh[k]->fresh = true;
	}
	free(fresh);
	return 0;
}

/* Hints: uniques (sorted copy) that get the first new UIDs, in given order. */
struct mailbox_hints {
	char *const *uniques;        /* in the wanted order */
	size_t n;
};

/* Sorted (unique, position) keys of the hints; caller frees. */
static struct mailbox_disk *mailbox_hint_keys(const struct mailbox_hints *h)
{
	struct mailbox_disk *keys = xcalloc(h->n ? h->n : 1, sizeof *keys);
	for (size_t i = 0; i < h->n; i++) {
		keys[i].name = h->uniques[i];
		keys[i].ulen = (uint32_t)strlen(h->uniques[i]);
		keys[i].hint = (int)i;
	}
	mailbox_sort(keys, h->n, sizeof *keys, mailbox_qcmp_unique);
	return keys;
}

static void mailbox_apply_hints(struct mailbox_scan *s, const struct mailbox_hints *h)
{
	if (!h || h->n == 0)
		return;
	/* sorted (unique, position) pairs, then one lookup per fresh file */
	struct mailbox_disk *keys = mailbox_hint_keys(h);
	for (size_t i = 0; i < s->n; i++) {
		if (s->v[i].uid != 0)
			continue;
		struct mailbox_disk *k =
		    mailbox_search(&s->v[i], keys, h->n, sizeof *keys, mailbox_qcmp_unique);
		if (k)
			s->v[i].hint = k->hint;
	}
	free(keys);
}

/* The lines of the fresh files of s (sorted by UID). */
static void mailbox_fresh_lines(const struct mailbox_scan *s, struct mailbox_text *t)
{
	for (size_t i = 0; i < s->n; i++)
		if (s->v[i].fresh)
			mailbox_text_addf(t, "%u %.*s\n", s->v[i].uid, (int)s->v[i].ulen,
					  s->v[i].name);
}

static void mailbox_upkeep(const char *dir, bool compact);

/* Is it time to drop the lines of removed messages: more of them than of
 * messages, and enough to be worth a rewrite? */
static bool mailbox_compaction_due(size_t stale, size_t entries)
{
	return stale >= MAILBOX_COMPACT_MIN && stale > entries - stale;
}

/* How mailbox_index_sync works, and what it found. */
struct mailbox_ixsync {
	const struct mailbox_hints *hints; /* in: files that get the first new UIDs */
	bool try_lock;               /* in: a busy lock is no error, just busy */
	bool durable;                /* in: synced before returning (a worker's call);
				      * else an upkeep job makes the changes durable */
	bool busy;                   /* out: the lock was busy, nothing done */
	uint32_t validity, next;     /* out: the index's */
	uint64_t highest;            /* out: HIGHESTMODSEQ */
	/* in: the caller holds the index lock already (held_fd) and goes on
	 * changing MODSEQs under it: the table comes back in *keep */
	bool held;
	int held_fd;
	struct modseq_table *keep;
	/* in: an earlier listing that stood for the folder (or NULL): while
	 * cur/ keeps its time, its messages are cur/ and only new/ is read */
	const struct mailbox_prior *prior;
};

/* Write what the listing s changed in the index: a rebuild writes it
 * whole, new files are appended.  The lock is held. */
static int mailbox_index_store(const char *dir, int fd, struct mailbox_index *ix,
			       const struct mailbox_scan *s, bool rebuild, size_t nfresh,
			       bool durable, char *err, size_t errsz)
{
	if (rebuild)
		return mailbox_index_write(dir, ix, s, durable, err, errsz);
	if (nfresh == 0)
		return 0;
	struct mailbox_text t = {0};
	mailbox_fresh_lines(s, &t);
	int r = mailbox_index_append(fd, dir, ix, &t, err, errsz);
	free(t.p);
	return r;
}

/* MODSEQs for the listing s (sorted by UID, every file with its UID)
 * under the index lock: a message new or with other flags than at its
 * last MODSEQ gets a new one, an indexed one that is gone an expunge
 * (modseq.c).  *wrote: the file changed (an upkeep makes it durable). */
static int mailbox_modseq_sync(const char *dir, struct mailbox_ixsync *o, struct mailbox_scan *s,
			       bool *wrote, char *err, size_t errsz)
{
	struct modseq_table t;
	*wrote = false;
	if (modseq_load(dir, &t, err, errsz) < 0)
		return -1;
	struct modseq_msg *cur = xcalloc(s->n ? s->n : 1, sizeof *cur);
	for (size_t i = 0; i < s->n; i++) {
		cur[i].uid = s->v[i].uid;
		cur[i].flags = mailbox_name_flags(s->v[i].name) & MAILBOX_FLAGS_PERMANENT;
	}
	modseq_reconcile(&t, o->validity, cur, s->n);
	for (size_t i = 0; i < s->n; i++)
		s->v[i].modseq = cur[i].modseq;
	free(cur);
	*wrote = t.rewrite || t.out_n > 0;
	int r = modseq_store(dir, &t, err, errsz);
	o->highest = t.highest;
	if (r == 0 && o->keep)
		*o->keep = t;
	else
		modseq_free(&t);
	return r;
}

/* An earlier complete listing of the folder (a view's messages or the
 * listing cache's): every message in cur/ under its name, by ascending
 * UID, all below uidnext, listed under stamp (settled). */
struct mailbox_prior {
	const struct mailbox_msg *msgs;
	size_t n;
	struct mailbox_stamp stamp;
	uint32_t validity, uidnext;
};

/* s: prior's messages (cur/ as it was) then the files of new/ (no UID
 * yet), while cur/ keeps prior's time; again while new/ changes under
 * readdir.  1: done; 0: cur/ changed (list it whole); -1: error. */
static int mailbox_scan_new_only(const char *dir, const struct mailbox_prior *p,
				 struct mailbox_scan *s, struct mailbox_stamp *stamp, char *err,
				 size_t errsz)
{
	for (int t = 0; t < MAILBOX_SCAN_TRIES; t++) {
		struct mailbox_stamp before, after;
		mailbox_stamp_read(dir, &before);
		if (!mailbox_time_eq(&before.cur_m, &p->stamp.cur_m))
			return 0;
		mailbox_scan_free(s);
		s->cap = p->n + 16;
		s->v = xcalloc(s->cap, sizeof *s->v);
		for (size_t i = 0; i < p->n; i++) {
			struct mailbox_disk *d = &s->v[s->n++];
			d->name = xstrdup(p->msgs[i].name);
			d->ulen = (uint32_t)maildir_unique_len(d->name);
			d->uid = p->msgs[i].uid;
			d->time = mailbox_name_time(d->name);
			d->hint = -1;
		}
		if (mailbox_read_sub(dir, true, s, err, errsz) < 0) {
			mailbox_scan_free(s);
			return -1;
		}
		mailbox_stamp_read(dir, &after);
		*stamp = before;
		if (mailbox_stamp_eq(&before, &after))
			return 1;
	}
	return 0; /* new/ or cur/ keep changing: list it whole */
}

/* The files of new/ (s from p->n on) looked up in the index at fd: 1 with
 * ix read (entries not kept) and the UIDs found set; 0 when the index
 * does not continue p (another UIDVALIDITY, damaged, or a file of new/
 * under a UID p could know: a copy of a message in cur/); -1: error. */
static int mailbox_index_read_new(int fd, const char *dir, const struct mailbox_prior *p,
				  struct mailbox_scan *s, struct mailbox_index *ix, char *err,
				  size_t errsz)
{
	struct mailbox_disk *fresh = s->v + p->n;
	size_t nfresh = s->n - p->n, o = 0;
	mailbox_sort(fresh, nfresh, sizeof *fresh, mailbox_qcmp_listing);
	for (size_t i = 0; i < nfresh; i++) {
		if (o > 0 && mailbox_cmp_unique(&fresh[o - 1], &fresh[i]) == 0) {
			free(fresh[i].name); /* one file per unique part, as a whole listing */
			continue;
		}
		fresh[o++] = fresh[i];
	}
	s->n = p->n + o;
	struct mailbox_lookup find = {fresh, o};
	uint32_t old_validity = 0;
	int rd = mailbox_index_read(fd, dir, ix, false, &find, &old_validity, err, errsz);
	if (rd <= 0)
		return rd;
	bool follows = ix->validity == p->validity;
	for (size_t i = 0; i < o && follows; i++)
		follows = fresh[i].uid == 0 || fresh[i].uid >= p->uidnext;
	if (!follows)
		mailbox_index_free(ix);
	return follows ? 1 : 0;
}

/* For the compaction rule after a listing of new/ only: the index's
 * entries that name no file are its lines but those of the files. */
static void mailbox_count_only_new(size_t lines, const struct mailbox_scan *s, size_t *stale)
{
	size_t indexed = 0;
	for (size_t i = 0; i < s->n; i++)
		indexed += !s->v[i].fresh;
	*stale = lines > indexed ? lines - indexed : 0;
}

/* List the folder, match it to the index, give new files UIDs (hinted
 * ones first) and note them in the index, and their MODSEQs; under the
 * folder's lock.  s comes back sorted by UID. */
static enum mailbox_result mailbox_index_sync(const char *dir, struct mailbox_ixsync *o,
					      struct mailbox_scan *s, struct mailbox_stamp *stamp,
					      char *err, size_t errsz)
{
	memset(s, 0, sizeof *s);
	o->busy = false;
	int lk = o->held ? o->held_fd : mailbox_lock(dir, !o->try_lock, err, errsz);
	if (lk == MAILBOX_LOCK_BUSY) {
		o->busy = true;
		return MAILBOX_OK;
	}
	if (lk < 0)
		return MAILBOX_ERR_IO;
	enum mailbox_result res = MAILBOX_ERR_IO;
	struct mailbox_index ix = {0};
	uint32_t old_validity = 0;
	bool missing, rebuild = false, modseq_wrote = false;
	int fd = -1, rd = 0, only_new = 0;
	size_t stale = 0, nfresh = 0, entries = 0;
	if (o->prior && (only_new = mailbox_scan_new_only(dir, o->prior, s, stamp, err, errsz)) < 0)
		goto out_unlock;
	fd = mailbox_index_open(dir, &missing, err, errsz);
	if (fd < 0 && !missing)
		goto out_unlock;
	if (only_new && fd >= 0 &&
	    (only_new = mailbox_index_read_new(fd, dir, o->prior, s, &ix, err, errsz)) < 0)
		goto out_unlock;
	if (only_new && fd >= 0 && mailbox_index_assign(&ix, s, &nfresh) == 0) {
		mailbox_count_only_new(ix.lines, s, &stale);
		entries = ix.lines;
		goto indexed;
	}
	mailbox_index_free(&ix);
	if (mailbox_scan(dir, s, stamp, err, errsz) < 0)
		goto out_unlock;
	if (fd >= 0 && (rd = mailbox_index_read(fd, dir, &ix, true, NULL, &old_validity, err,
						 errsz)) < 0)
		goto out_unlock;
	rebuild = rd == 0;
	for (int attempt = 0;; attempt++) {
		if (rebuild) {
			/* lost or damaged: fresh UIDs under a new UIDVALIDITY */
			mailbox_index_free(&ix);
			ix.validity = mailbox_new_validity(old_validity);
			ix.next = 1;
			for (size_t i = 0; i < s->n; i++)
				s->v[i].uid = 0;
		}
		stale = mailbox_index_match(&ix, s);
		mailbox_apply_hints(s, o->hints);
		if (mailbox_index_assign(&ix, s, &nfresh) == 0)
			break;
		if (attempt > 0) {
			errfmt(err, errsz, "UIDs of %s used up", dir);
			res = MAILBOX_ERR_LIMIT;
			goto out_index;
		}
		old_validity = ix.validity;
		rebuild = true;
	}
	entries = ix.n;
indexed:
	mailbox_sort(s->v, s->n, sizeof *s->v, mailbox_qcmp_uid);
	if (mailbox_index_store(dir, fd, &ix, s, rebuild, nfresh, o->durable, err, errsz) < 0)
		goto out_index;
	o->validity = ix.validity;
	o->next = ix.next;
	res = mailbox_modseq_sync(dir, o, s, &modseq_wrote, err, errsz) == 0 ? MAILBOX_OK
									       : MAILBOX_ERR_IO;
out_index:
	mailbox_index_free(&ix);
out_unlock:
	if (!o->held)
		mailbox_unlock(lk);
	if (res == MAILBOX_OK && modseq_wrote && o->durable && modseq_flush(dir, err, errsz) < 0)
		res = MAILBOX_ERR_IO;
	bool wrote = res == MAILBOX_OK && (rebuild || nfresh > 0 || modseq_wrote);
	if (wrote && o->durable && !rebuild && mailbox_index_sync_fd(fd, dir, err, errsz) < 0)
		res = MAILBOX_ERR_IO;
	if (fd >= 0)
		close(fd);
	if (res != MAILBOX_OK) {
		mailbox_scan_free(s);
		return res;
	}
	bool compact = mailbox_compaction_due(stale, entries);
	if (!o->durable && (wrote || compact))
		mailbox_upkeep(dir, compact);
	return res;
}

/* ---- the index's upkeep, on a worker ------------------------------------------ */

/* Drop the lines of removed messages: the index rewritten with the
 * entries of the files there are, synced before it is renamed into
 * place (the only sync made under the lock; compactions are rare). */
static int mailbox_index_compact(const char *dir, char *err, size_t errsz)
{
	int lk = mailbox_lock(dir, true, err, errsz);
	if (lk < 0)
		return -1;
	struct mailbox_scan s = {0};
	struct mailbox_stamp stamp;
	struct mailbox_index ix = {0};
	uint32_t old_validity = 0;
	bool missing;
	int r = -1, rd = 0;
	int fd = mailbox_index_open(dir, &missing, err, errsz);
	if (fd >= 0 && mailbox_scan(dir, &s, &stamp, err, errsz) == 0)
		rd = mailbox_index_read(fd, dir, &ix, true, NULL, &old_validity, err, errsz);
	if (fd < 0 || rd <= 0) {
		r = missing || rd == 0 ? 0 : -1; /* nothing to compact: the next sync rebuilds */
	} else {
		size_t stale = mailbox_index_match(&ix, &s);
		mailbox_sort(s.v, s.n, sizeof *s.v, mailbox_qcmp_uid);
		r = mailbox_compaction_due(stale, ix.n)
			? mailbox_index_write(dir, &ix, &s, true, err, errsz)
			: 0;
	}
	mailbox_index_free(&ix);
	mailbox_scan_free(&s);
	if (fd >= 0)
		close(fd);
	mailbox_unlock(lk);
	return r;
}

/* What an earlier rewrite or append without a sync left: the index and
 * the folder's entry of it made durable. */
static int mailbox_index_flush(const char *dir, char *err, size_t errsz)
{
	char *path = xasprintf("%s/%s", dir, MAILBOX_INDEX);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	int r = 0;
	if (fd >= 0 && fdatasync(fd) < 0)
		r = -1;
	if (fd < 0 && errno != ENOENT)
		r = -1;
	if (r < 0)
		errfmt(err, errsz, "cannot sync %s: %s", path, strerror(errno));
	if (fd >= 0)
		close(fd);
	free(path);
	if (r == 0 && fsync_dir(dir) < 0 && errno != ENOENT) {
		errfmt(err, errsz, "cannot sync %s: %s", dir, strerror(errno));
		r = -1;
	}
	return r;
}

/* Upkeep jobs, one at a time per folder: a request made while one runs
 * is remembered and runs after it.  The list lives on the event loop's
 * thread (requests come from there, and so do the jobs' ends). */
struct mailbox_upkeep {
	char *dir;
	bool compact;                /* this run: compact (else flush) */
	bool again, again_compact;   /* asked meanwhile */
	char err[256];
	struct mailbox_upkeep *next;
};

static struct mailbox_upkeep *mailbox_upkeeps;

static void mailbox_upkeep_run(void *work)
{
	struct mailbox_upkeep *u = work;
	u->err[0] = '\0';
	/* a compaction syncs what it writes; what was appended meanwhile, or
	 * a compaction that found nothing to do, needs the flush too */
	if (u->compact)
		(void)mailbox_index_compact(u->dir, u->err, sizeof u->err);
	if (u->err[0] == '\0')
		(void)mailbox_index_flush(u->dir, u->err, sizeof u->err);
	if (u->err[0] == '\0')
		(void)modseq_flush(u->dir, u->err, sizeof u->err);
}

static void mailbox_upkeep_unlist(struct mailbox_upkeep *u)
{
	for (struct mailbox_upkeep **p = &mailbox_upkeeps; *p; p = &(*p)->next) {
		if (*p == u) {
			*p = u->next;
			return;
		}
	}
}

static void mailbox_upkeep_free(void *work)
{
	struct mailbox_upkeep *u = work;
	mailbox_upkeep_unlist(u);
	free(u->dir);
	free(u);
}

static void mailbox_upkeep_submit(struct mailbox_upkeep *u);

static void mailbox_upkeep_done(void *owner, void *work)
{
	(void)owner;
	struct mailbox_upkeep *u = work;
	if (u->err[0]) {
		char q[LOG_VALUE_MAX];
		log_warn("event=mailbox-error operation=index-upkeep error=\"%s\"",
			 log_quote(q, sizeof q, u->err, strlen(u->err)));
	}
	if (!u->again) {
		mailbox_upkeep_free(u);
		return;
	}
	u->compact = u->again_compact;
	u->again = u->again_compact = false;
	mailbox_upkeep_submit(u);
}

static void mailbox_upkeep_submit(struct mailbox_upkeep *u)
{
	/* without workers (tools, unit tests) it runs here and now */
	(void)offload_submit(mailbox_upkeep_run, mailbox_upkeep_done, mailbox_upkeep_free, u,
			     NULL);
}

/* Have a worker make dir's index durable (and compact it). */
static void mailbox_upkeep(const char *dir, bool compact)
{
	for (struct mailbox_upkeep *u = mailbox_upkeeps; u; u = u->next) {
		if (strcmp(u->dir, dir) == 0) {
			u->again = true;
			u->again_compact |= compact;
			return;
		}
	}
	struct mailbox_upkeep *u = xcalloc(1, sizeof *u);
	u->dir = xstrdup(dir);
	u->compact = compact;
	u->next = mailbox_upkeeps;
	mailbox_upkeeps = u;
	mailbox_upkeep_submit(u);
}

/* ---- new messages' UIDs from a worker (APPEND, COPY, MOVE) --------------------- */

/* UIDs for the new files uniques[0..n) of dir, in that order, appended to
 * the index without listing the folder (a worker's call: durable on
 * return).  A file that a listing indexed meanwhile keeps the UID it got;
 * a lost or damaged index (or UIDs used up) is rebuilt from a listing. */
static enum mailbox_result mailbox_index_add(const char *dir, char *const *uniques, size_t n,
					     uint32_t *validity, uint32_t *uids, char *err,
					     size_t errsz)
{
	memset(uids, 0, n * sizeof *uids);
	struct mailbox_hints hints = {uniques, n};
	struct mailbox_lookup find = {mailbox_hint_keys(&hints), n};
	int lk = mailbox_lock(dir, true, err, errsz);
	if (lk < 0) {
		free(find.keys);
		return MAILBOX_ERR_IO;
	}
	struct mailbox_index ix = {0};
	uint32_t old_validity = 0;
	bool missing;
	int rd = 0;
	int fd = mailbox_index_open(dir, &missing, err, errsz);
	if (fd >= 0)
		rd = mailbox_index_read(fd, dir, &ix, false, &find, &old_validity, err, errsz);
	enum mailbox_result r = MAILBOX_ERR_IO;
	bool fallback = (fd < 0 && missing) || (fd >= 0 && rd == 0) ||
			(rd == 1 && (uint64_t)ix.next + n >= UINT32_MAX);
	if (!fallback && rd == 1) {
		struct mailbox_text t = {0};
		for (size_t i = 0; i < n; i++) { /* keys[i].hint: the position of unique i */
			const struct mailbox_disk *k = &find.keys[i];
			uids[k->hint] = k->uid;
		}
		for (size_t i = 0; i < n; i++) {
			if (uids[i])
				continue;
			uids[i] = ix.next++;
			mailbox_text_addf(&t, "%u %s\n", uids[i], uniques[i]);
		}
		*validity = ix.validity;
		if (t.n == 0 || mailbox_index_append(fd, dir, &ix, &t, err, errsz) == 0)
			r = MAILBOX_OK;
		free(t.p);
	}
	mailbox_unlock(lk);
	/* lines a listing appended for these files may wait for an upkeep */
	if (r == MAILBOX_OK && mailbox_index_sync_fd(fd, dir, err, errsz) < 0)
		r = MAILBOX_ERR_IO;
	if (fd >= 0)
		close(fd);
	mailbox_index_free(&ix);
	free(find.keys);
	if (!fallback)
		return r;
	/* from a listing, the new files first */
	struct mailbox_ixsync o = {.hints = &hints, .durable = true};
	struct mailbox_scan s;
	struct mailbox_stamp stamp;
	r = mailbox_index_sync(dir, &o, &s, &stamp, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	*validity = o.validity;
	struct mailbox_disk *keys = mailbox_hint_keys(&hints);
	for (size_t i = 0; i < s.n; i++) {
		struct mailbox_disk *k =
		    mailbox_search(&s.v[i], keys, n, sizeof *keys, mailbox_qcmp_unique);
		if (k)
			uids[k->hint] = s.v[i].uid; /* 0 stays for one removed at once */
	}
	free(keys);
	mailbox_scan_free(&s);
	return MAILBOX_OK;
}

/* ---- folders ------------------------------------------------------------- */

static enum mailbox_result mailbox_check_name(const char *name, char *err, size_t errsz)
{
	const char *why = mailbox_name_problem(name);
	if (!why)
		return MAILBOX_OK;
	errfmt(err, errsz, "Invalid mailbox name: %s", why);
	return MAILBOX_ERR_NAME;
}

/* The folder names under root (without INBOX), unsorted. */
static int mailbox_folder_names(const char *root, struct mailbox_names *out, char *err,
				size_t errsz)
{
	memset(out, 0, sizeof *out);
	DIR *d = opendir(root);
	if (!d) {
		errfmt(err, errsz, "cannot open %s: %s", root, strerror(errno));
		return -1;
	}
	size_t cap = 0;
	int r = 0;
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de) {
			if (errno) {
				errfmt(err, errsz, "cannot read %s: %s", root, strerror(errno));
				r = -1;
			}
			break;
		}
		const char *n = de->d_name;
		if (n[0] != '.' || n[1] == '\0' || (n[1] == '.' && n[2] == '\0'))
			continue;
		if (de->d_type != DT_DIR && de->d_type != DT_UNKNOWN)
			continue;
		if (!mailbox_name_valid(n + 1) || mailbox_is_inbox(n + 1))
			continue;
		if (de->d_type == DT_UNKNOWN) {
			struct stat st;
			if (fstatat(dirfd(d), n, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
			    !S_ISDIR(st.st_mode))
				continue;
		}
		if (out->n >= MAILBOX_FOLDERS_MAX)
			break;
		char **slot = xgrow(&out->v, &out->n, &cap, sizeof *slot);
		*slot = xstrdup(n + 1);
	}
	closedir(d);
	if (r < 0)
		mailbox_names_free(out);
	return r;
}

void mailbox_names_free(struct mailbox_names *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof *l);
}

static int mailbox_qcmp_folder(const void *a, const void *b)
{
	const struct mailbox_folder *x = a, *y = b;
	bool xi = mailbox_is_inbox(x->name), yi = mailbox_is_inbox(y->name);
	if (xi != yi)
		return xi ? -1 : 1;
	return strcmp(x->name, y->name);
}

static int mailbox_qcmp_strp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Parents implied by a child ("A" of "A.B" without .A/) as \Noselect
 * entries.  out is sorted; every prefix is collected, sorted and
 * deduplicated, so the work is O(n log n) whatever the tree. */
static void mailbox_add_implied(struct mailbox_folder_list *out, size_t *cap)
{
	size_t real = out->n, n = 0, pcap = 0;
	char **prefixes = NULL;
	for (size_t i = 0; i < real && n < MAILBOX_FOLDERS_MAX * 4; i++) {
		const char *name = out->v[i].name;
		for (const char *d = strchr(name, MAILBOX_DELIM); d && n < MAILBOX_FOLDERS_MAX * 4;
		     d = strchr(d + 1, MAILBOX_DELIM)) {
			char **slot = xgrow(&prefixes, &n, &pcap, sizeof *slot);
			*slot = xstrndup(name, (size_t)(d - name));
		}
	}
	mailbox_sort(prefixes, n, sizeof *prefixes, mailbox_qcmp_strp);
	size_t o = 0;
	for (size_t i = 0; i < n; i++) {
		if (o > 0 && strcmp(prefixes[i], prefixes[o - 1]) == 0)
			free(prefixes[i]);
		else
			prefixes[o++] = prefixes[i];
	}
	n = o;
	for (size_t i = 0; i < n; i++) {
		struct mailbox_folder key = {.name = prefixes[i]};
		if (out->n >= MAILBOX_FOLDERS_MAX * 2 ||
		    mailbox_search(&key, out->v, real, sizeof *out->v, mailbox_qcmp_folder)) {
			free(prefixes[i]);
			continue;
		}
		struct mailbox_folder *f = xgrow(&out->v, &out->n, cap, sizeof *f);
		f->name = prefixes[i];
		f->noselect = true;
	}
	free(prefixes);
}

void mailbox_folders_free(struct mailbox_folder_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i].name);
	free(l->v);
	memset(l, 0, sizeof *l);
}

int mailbox_folders(const char *root, struct mailbox_folder_list *out, char *err, size_t errsz)
{
	memset(out, 0, sizeof *out);
	struct mailbox_names names;
	if (mailbox_folder_names(root, &names, err, errsz) < 0)
		return -1;
	size_t cap = 0;
	struct mailbox_folder *inbox = xgrow(&out->v, &out->n, &cap, sizeof *inbox);
	inbox->name = xstrdup("INBOX");
	for (size_t i = 0; i < names.n; i++) {
		struct mailbox_folder *f = xgrow(&out->v, &out->n, &cap, sizeof *f);
		f->name = names.v[i];
		names.v[i] = NULL;
		/* a directory that is no Maildir cannot be selected */
		char *dir = mailbox_dir(root, f->name);
		f->noselect = !mailbox_folder_exists(dir);
		f->special = f->noselect ? MAILBOX_SPECIAL_NONE : mailbox_uses_read(dir);
		free(dir);
	}
	mailbox_names_free(&names);
	mailbox_sort(out->v, out->n, sizeof *out->v, mailbox_qcmp_folder);
	mailbox_add_implied(out, &cap);
	mailbox_sort(out->v, out->n, sizeof *out->v, mailbox_qcmp_folder);
	/* a child "P.x" sorts after "P." which sorts after P: look it up */
	for (size_t i = 0; i < out->n; i++) {
		if (mailbox_is_inbox(out->v[i].name))
			continue;
		char *prefix = xasprintf("%s%c", out->v[i].name, MAILBOX_DELIM);
		struct mailbox_folder key = {.name = prefix};
		size_t lo = 0, hi = out->n;
		while (lo < hi) {
			size_t mid = lo + (hi - lo) / 2;
			if (mailbox_qcmp_folder(&out->v[mid], &key) < 0)
				lo = mid + 1;
			else
				hi = mid;
		}
		out->v[i].has_children =
		    lo < out->n && strncmp(out->v[lo].name, prefix, strlen(prefix)) == 0;
		free(prefix);
	}
	return 0;
}

/* Is there a folder below name (a directory ".name.x")? */
static bool mailbox_has_children(const char *root, const char *name)
{
	struct mailbox_names names;
	char err[64];
	if (mailbox_folder_names(root, &names, err, sizeof err) < 0)
		return false;
	size_t len = strlen(name);
	bool r = false;
	for (size_t i = 0; i < names.n && !r; i++)
		r = strncmp(names.v[i], name, len) == 0 && names.v[i][len] == MAILBOX_DELIM;
	mailbox_names_free(&names);
	return r;
}

static enum mailbox_result mailbox_make_folder(const char *root, const char *name, char *err,
					       size_t errsz)
{
	char *dir = mailbox_dir(root, name);
	int r = maildir_create(dir, err, errsz);
	free(dir);
	return r < 0 ? MAILBOX_ERR_IO : MAILBOX_OK;
}

/* The missing parents of name as folders (RFC 3501 §6.3.3 "SHOULD create
 * any superior hierarchical names"). */
static enum mailbox_result mailbox_make_parents(const char *root, const char *name, char *err,
						size_t errsz)
{
	enum mailbox_result r = MAILBOX_OK;
	for (const char *dot = strchr(name, MAILBOX_DELIM); dot && r == MAILBOX_OK;
	     dot = strchr(dot + 1, MAILBOX_DELIM)) {
		char *parent = xstrndup(name, (size_t)(dot - name));
		char *pdir = mailbox_dir(root, parent);
		if (!mailbox_folder_exists(pdir))
			r = mailbox_make_folder(root, parent, err, errsz);
		free(pdir);
		free(parent);
	}
	return r;
}

enum mailbox_result mailbox_create(const char *root, const char *name, char *err, size_t errsz)
{
	return mailbox_create_special(root, name, MAILBOX_SPECIAL_NONE, err, errsz);
}

static int mailbox_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw);

/* The new folder at dir gets its uses, or goes again. */
static enum mailbox_result mailbox_give_uses(const char *dir, unsigned uses, char *err,
					     size_t errsz)
{
	char why[256];
	if (uses == MAILBOX_SPECIAL_NONE || mailbox_uses_write(dir, uses, why, sizeof why) == 0)
		return MAILBOX_OK;
	if (nftw(dir, mailbox_rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0)
		errfmt(err, errsz, "%s; cannot remove %s: %s", why, dir, strerror(errno));
	else
		errfmt(err, errsz, "%s", why);
	return MAILBOX_ERR_IO;
}

enum mailbox_result mailbox_create_special(const char *root, const char *name, unsigned uses,
					   char *err, size_t errsz)
{
	char buf[MAILBOX_NAME_MAX + 2];
	size_t len = strlen(name);
	if (len > 1 && len <= MAILBOX_NAME_MAX && name[len - 1] == MAILBOX_DELIM) {
		memcpy(buf, name, len - 1); /* RFC 3501 §6.3.3: "foo." creates foo */
		buf[len - 1] = '\0';
		name = buf;
	}
	enum mailbox_result r = mailbox_check_name(name, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	char *dir = mailbox_dir(root, name);
	bool exists = mailbox_is_inbox(name) || mailbox_folder_exists(dir);
	free(dir);
	if (exists) {
		errfmt(err, errsz, "Mailbox already exists");
		return MAILBOX_ERR_EXISTS;
	}
	struct mailbox_names names;
	if (mailbox_folder_names(root, &names, err, errsz) < 0)
		return MAILBOX_ERR_IO;
	size_t have = names.n;
	mailbox_names_free(&names);
	if (have >= MAILBOX_FOLDERS_MAX) {
		errfmt(err, errsz, "Too many mailboxes");
		return MAILBOX_ERR_LIMIT;
	}
	r = mailbox_make_parents(root, name, err, errsz);
	if (r == MAILBOX_OK)
		r = mailbox_make_folder(root, name, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	char *folder = mailbox_dir(root, name);
	r = mailbox_give_uses(folder, uses, err, errsz);
	free(folder);
	return r;
}

static int mailbox_rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	return flag == FTW_DP || flag == FTW_D ? rmdir(path) : unlink(path);
}

enum mailbox_result mailbox_delete(const char *root, const char *name, char *err, size_t errsz)
{
	enum mailbox_result r = mailbox_check_name(name, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	if (mailbox_is_inbox(name)) {
		errfmt(err, errsz, "INBOX cannot be deleted");
		return MAILBOX_ERR_INBOX;
	}
	char *dir = mailbox_dir(root, name);
	if (!mailbox_is_dir(dir)) {
		free(dir);
		if (mailbox_has_children(root, name)) {
			errfmt(err, errsz, "Mailbox has children and no messages of its own");
			return MAILBOX_ERR_NOSELECT;
		}
		errfmt(err, errsz, "Mailbox does not exist");
		return MAILBOX_ERR_NONEXISTENT;
	}
	/* the folder's own directory only: children are ".name.x", siblings */
	if (nftw(dir, mailbox_rm_entry, 16, FTW_DEPTH | FTW_PHYS) < 0) {
		errfmt(err, errsz, "cannot remove %s: %s", dir, strerror(errno));
		free(dir);
		return MAILBOX_ERR_IO;
	}
	free(dir);
	return MAILBOX_OK;
}

/* Move every message of INBOX (root) into the folder dir. */
static enum mailbox_result mailbox_move_inbox(const char *root, const char *dir, char *err,
					      size_t errsz)
{
	struct mailbox_scan s = {0};
	struct mailbox_stamp stamp;
	if (mailbox_scan(root, &s, &stamp, err, errsz) < 0)
		return MAILBOX_ERR_IO;
	enum mailbox_result r = MAILBOX_OK;
	for (size_t i = 0; i < s.n && r == MAILBOX_OK; i++) {
		const char *sub = s.v[i].in_new ? "new" : "cur";
		char *from = xasprintf("%s/%s/%s", root, sub, s.v[i].name);
		char *to = xasprintf("%s/%s/%s", dir, sub, s.v[i].name);
		if (rename(from, to) < 0 && errno != ENOENT) {
			errfmt(err, errsz, "cannot move %s: %s", from, strerror(errno));
			r = MAILBOX_ERR_IO;
		}
		free(from);
		free(to);
	}
	mailbox_scan_free(&s);
	if (r == MAILBOX_OK && (maildir_sync(root) < 0 || maildir_sync(dir) < 0)) {
		errfmt(err, errsz, "cannot sync %s: %s", dir, strerror(errno));
		r = MAILBOX_ERR_IO;
	}
	return r;
}

static enum mailbox_result mailbox_rename_inbox(const char *root, const char *to, char *err,
						size_t errsz)
{
	enum mailbox_result r = mailbox_create(root, to, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	char *dir = mailbox_dir(root, to);
	r = mailbox_move_inbox(root, dir, err, errsz);
	free(dir);
	return r;
}

/* The names to rename: from itself (when it is a folder) and its children. */
static int mailbox_rename_set(const char *root, const char *from, struct mailbox_names *set,
			      char *err, size_t errsz)
{
	struct mailbox_names all;
	if (mailbox_folder_names(root, &all, err, errsz) < 0)
		return -1;
	memset(set, 0, sizeof *set);
	size_t cap = 0, len = strlen(from);
	for (size_t i = 0; i < all.n; i++) {
		if (strncmp(all.v[i], from, len) == 0 &&
		    (all.v[i][len] == '\0' || all.v[i][len] == MAILBOX_DELIM)) {
			char **slot = xgrow(&set->v, &set->n, &cap, sizeof *slot);
			*slot = all.v[i];
			all.v[i] = NULL;
		}
	}
	mailbox_names_free(&all);
	return 0;
}

/* Every target of a RENAME free and valid, before anything moves. */
static enum mailbox_result mailbox_rename_check(const char *root, const struct mailbox_names *set,
						size_t flen, const char *to, char *err,
						size_t errsz)
{
	enum mailbox_result r = MAILBOX_OK;
	for (size_t i = 0; i < set->n && r == MAILBOX_OK; i++) {
		char *target = xasprintf("%s%s", to, set->v[i] + flen);
		char *tdir = mailbox_dir(root, target);
		if (mailbox_check_name(target, err, errsz) != MAILBOX_OK) {
			r = MAILBOX_ERR_NAME;
		} else if (mailbox_is_dir(tdir)) {
			errfmt(err, errsz, "Mailbox already exists");
			r = MAILBOX_ERR_EXISTS;
		}
		free(tdir);
		free(target);
	}
	return r;
}

enum mailbox_result mailbox_rename(const char *root, const char *from, const char *to, char *err,
				   size_t errsz)
{
	enum mailbox_result r = mailbox_check_name(from, err, errsz);
	if (r == MAILBOX_OK)
		r = mailbox_check_name(to, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	if (mailbox_is_inbox(to)) {
		errfmt(err, errsz, "Mailbox already exists");
		return MAILBOX_ERR_EXISTS;
	}
	if (mailbox_is_inbox(from))
		return mailbox_rename_inbox(root, to, err, errsz);
	size_t flen = strlen(from);
	if (strcmp(from, to) == 0 ||
	    (strncmp(to, from, flen) == 0 && to[flen] == MAILBOX_DELIM)) {
		errfmt(err, errsz, "Cannot rename a mailbox into itself");
		return MAILBOX_ERR_NAME;
	}
	struct mailbox_names set;
	if (mailbox_rename_set(root, from, &set, err, errsz) < 0)
		return MAILBOX_ERR_IO;
	if (set.n == 0) {
		mailbox_names_free(&set);
		errfmt(err, errsz, "Mailbox does not exist");
		return MAILBOX_ERR_NONEXISTENT;
	}
	r = mailbox_rename_check(root, &set, flen, to, err, errsz);
	for (size_t i = 0; i < set.n && r == MAILBOX_OK; i++) {
		char *target = xasprintf("%s%s", to, set.v[i] + flen);
		char *fdir = mailbox_dir(root, set.v[i]);
		char *tdir = mailbox_dir(root, target);
		if (rename(fdir, tdir) < 0) {
			errfmt(err, errsz, "cannot rename %s: %s", fdir, strerror(errno));
			r = MAILBOX_ERR_IO;
		}
		free(fdir);
		free(tdir);
		free(target);
	}
	mailbox_names_free(&set);
	/* the new name's parents, as CREATE makes them */
	return r == MAILBOX_OK ? mailbox_make_parents(root, to, err, errsz) : r;
}

/* Remove what a crash or a dropped APPEND left in dir's tmp/: files not
 * touched for 36 hours.  At most MAILBOX_TMP_SWEEP entries per call. */
static void mailbox_sweep_tmp(const char *dir)
{
	char *path = xasprintf("%s/tmp", dir);
	DIR *d = opendir(path);
	free(path);
	if (!d)
		return;
	time_t now = time(NULL);
	struct dirent *de;
	for (int seen = 0; seen < MAILBOX_TMP_SWEEP && (de = readdir(d)); seen++) {
		struct stat st;
		if (de->d_name[0] == '.' ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !S_ISREG(st.st_mode))
			continue;
		if (now - st.st_mtime > MAILBOX_TMP_STALE && now - st.st_atime > MAILBOX_TMP_STALE)
			unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
}

/* ---- subscriptions -------------------------------------------------------- */

enum mailbox_result mailbox_subscriptions(const char *root, struct mailbox_names *out, char *err,
					  size_t errsz)
{
	memset(out, 0, sizeof *out);
	char *path = xasprintf("%s/%s", root, MAILBOX_SUBSCRIPTIONS);
	FILE *fp = fopen(path, "re");
	if (!fp) {
		int e = errno;
		if (e != ENOENT)
			errfmt(err, errsz, "cannot open %s: %s", path, strerror(e));
		free(path);
		return e == ENOENT ? MAILBOX_OK : MAILBOX_ERR_IO;
	}
	char *line = NULL;
	size_t linecap = 0, cap = 0;
	ssize_t len;
	bool over = false;
	while (!over && (len = getline(&line, &linecap, fp)) > 0) {
		if (line[len - 1] == '\n')
			line[--len] = '\0';
		if (!mailbox_name_valid(line))
			continue;
		over = out->n >= MAILBOX_FOLDERS_MAX;
		if (!over) {
			char **slot = xgrow(&out->v, &out->n, &cap, sizeof *slot);
			*slot = xstrdup(line);
		}
	}
	/* a list cut by a failed read, or at the limit, must not be written
	 * back by (UN)SUBSCRIBE: either is an error, never a shorter list */
	enum mailbox_result r = MAILBOX_OK;
	if (ferror(fp)) {
		errfmt(err, errsz, "cannot read %s: %s", path, strerror(errno));
		r = MAILBOX_ERR_IO;
	} else if (over) {
		errfmt(err, errsz, "Too many subscriptions (more than %d)", MAILBOX_FOLDERS_MAX);
		r = MAILBOX_ERR_LIMIT;
	}
	if (r != MAILBOX_OK)
		mailbox_names_free(out);
	free(line);
	free(path);
	(void)fclose(fp); /* read only: what was read is all there is */
	return r;
}

static int mailbox_subscriptions_write(const char *root, const struct mailbox_names *l, char *err,
				       size_t errsz)
{
	/* a name of this writer's own: another node may write it at once */
	char *unique = maildir_unique_name(0);
	char *tmp = xasprintf("%s/%s.tmp.%s", root, MAILBOX_SUBSCRIPTIONS, unique);
	free(unique);
	char *path = xasprintf("%s/%s", root, MAILBOX_SUBSCRIPTIONS);
	int r = -1;
	FILE *fp = replace_open(tmp);
	if (fp) {
		for (size_t i = 0; i < l->n; i++)
			report(fp, "%s\n", l->v[i]);
		r = replace_commit(fp, tmp, path, true);
	}
	if (r < 0) {
		errfmt(err, errsz, "cannot write %s: %s", path, strerror(errno));
		unlink(tmp);
	}
	free(tmp);
	free(path);
	return r;
}

/* The lock on a user's subscriptions, which sessions on other nodes
 * may change at once: the descriptor holding it, or -1 with a reason. */
static int mailbox_subscriptions_lock(const char *root, char *err, size_t errsz)
{
	char *path = xasprintf("%s/%s.lock", root, MAILBOX_SUBSCRIPTIONS);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || file_lock(fd, true) < 0) {
		errfmt(err, errsz, "cannot lock %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		fd = -1;
	}
	free(path);
	return fd;
}

static enum mailbox_result mailbox_subscribe_locked(const char *root, const char *name, bool on,
						    char *err, size_t errsz);

/* Read, change and write the list under its lock: not one change lost. */
enum mailbox_result mailbox_subscribe(const char *root, const char *name, bool on, char *err,
				      size_t errsz)
{
	enum mailbox_result r = mailbox_check_name(name, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	int lk = mailbox_subscriptions_lock(root, err, errsz);
	if (lk < 0)
		return MAILBOX_ERR_IO;
	r = mailbox_subscribe_locked(root, name, on, err, errsz);
	close(lk); /* releases the lock */
	return r;
}

static enum mailbox_result mailbox_subscribe_locked(const char *root, const char *name, bool on,
						    char *err, size_t errsz)
{
	enum mailbox_result r;
	const char *canon = mailbox_is_inbox(name) ? "INBOX" : name;
	struct mailbox_names l;
	r = mailbox_subscriptions(root, &l, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	size_t at = l.n;
	for (size_t i = 0; i < l.n && at == l.n; i++)
		if (strcmp(l.v[i], canon) == 0)
			at = i;
	bool write = false;
	if (on && at == l.n) {
		if (l.n >= MAILBOX_FOLDERS_MAX) {
			errfmt(err, errsz, "Too many subscriptions");
			r = MAILBOX_ERR_LIMIT;
		} else {
			l.v = xrealloc(l.v, (l.n + 1) * sizeof *l.v);
			l.v[l.n++] = xstrdup(canon);
			write = true;
		}
	} else if (!on && at == l.n) {
		errfmt(err, errsz, "Not subscribed");
		r = MAILBOX_ERR_NONEXISTENT;
	} else if (!on) {
		free(l.v[at]);
		memmove(&l.v[at], &l.v[at + 1], (l.n - at - 1) * sizeof *l.v);
		l.n--;
		write = true;
	}
	if (write && mailbox_subscriptions_write(root, &l, err, errsz) < 0)
		r = MAILBOX_ERR_IO;
	mailbox_names_free(&l);
	return r;
}

/* The first login: the default folders, INBOX and them subscribed. */
static int mailbox_make_defaults(const char *root, char *err, size_t errsz)
{
	struct mailbox_names l = {0};
	l.v = xcalloc(ARRAY_LEN(mailbox_specials) + 1, sizeof *l.v);
	l.v[l.n++] = xstrdup("INBOX");
	int r = 0;
	for (size_t i = 0; i < ARRAY_LEN(mailbox_specials) && r == 0; i++) {
		char *dir = mailbox_dir(root, mailbox_specials[i].name);
		r = maildir_create(dir, err, errsz);
		free(dir);
		l.v[l.n++] = xstrdup(mailbox_specials[i].name);
	}
	if (r == 0)
		r = mailbox_subscriptions_write(root, &l, err, errsz);
	mailbox_names_free(&l);
	return r;
}

/* Uses held by any folder of the store. */
static int mailbox_uses_held(const char *root, unsigned *held, char *err, size_t errsz)
{
	struct mailbox_names names;
	if (mailbox_folder_names(root, &names, err, errsz) < 0)
		return -1;
	*held = 0;
	for (size_t i = 0; i < names.n; i++) {
		char *dir = mailbox_dir(root, names.v[i]);
		*held |= mailbox_uses_read(dir);
		free(dir);
	}
	mailbox_names_free(&names);
	return 0;
}

/* Once per store: the default folders get their uses by name, unless some
 * folder holds that use already (a Sent renamed to "Sent Items" keeps
 * \Sent; a new "Sent" does not get it too).  Run again after a crash, it
 * does the same, so the mark needs no sync. */
static int mailbox_default_uses(const char *root, char *err, size_t errsz)
{
	char *done = xasprintf("%s/" MAILBOX_USES_DONE, root);
	struct stat st;
	int r = 0;
	unsigned held = 0;
	if (lstat(done, &st) == 0)
		goto out;
	r = mailbox_uses_held(root, &held, err, errsz);
	for (size_t i = 0; i < ARRAY_LEN(mailbox_specials) && r == 0; i++) {
		char *dir = mailbox_dir(root, mailbox_specials[i].name);
		if (!(held & mailbox_specials[i].special) && mailbox_folder_exists(dir) &&
		    mailbox_uses_read(dir) == MAILBOX_SPECIAL_NONE)
			r = mailbox_uses_write(dir, mailbox_specials[i].special, err, errsz);
		free(dir);
	}
	if (r == 0) {
		int fd = open(done, O_WRONLY | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (fd < 0 || close(fd) < 0) {
			errfmt(err, errsz, "cannot create %s: %s", done, strerror(errno));
			r = -1;
		}
	}
out:
	free(done);
	return r;
}

int mailbox_prepare(const char *root, char *err, size_t errsz)
{
	if (maildir_create(root, err, errsz) < 0)
		return -1;
	mailbox_sweep_tmp(root);
	char *subs = xasprintf("%s/%s", root, MAILBOX_SUBSCRIPTIONS);
	struct stat st;
	bool first = lstat(subs, &st) < 0 && errno == ENOENT;
	free(subs);
	if (first && mailbox_make_defaults(root, err, errsz) < 0)
		return -1;
	return mailbox_default_uses(root, err, errsz);
}

/* ---- status ------------------------------------------------------------------ */

/* The directory of an existing selectable folder, or why not. */
static enum mailbox_result mailbox_open_dir(const char *root, const char *name, char **dir,
					    char *err, size_t errsz)
{
	enum mailbox_result r = mailbox_check_name(name, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	*dir = mailbox_dir(root, name);
	if (mailbox_folder_exists(*dir))
		return MAILBOX_OK;
	free(*dir);
	*dir = NULL;
	if (!mailbox_is_inbox(name) && mailbox_has_children(root, name)) {
		errfmt(err, errsz, "Mailbox cannot be selected");
		return MAILBOX_ERR_NOSELECT;
	}
	errfmt(err, errsz, "Mailbox does not exist");
	return MAILBOX_ERR_NONEXISTENT;
}

enum mailbox_result mailbox_status(const char *root, const char *name, struct mailbox_status *out,
				   char *err, size_t errsz)
{
	memset(out, 0, sizeof *out);
	char *dir;
	enum mailbox_result r = mailbox_open_dir(root, name, &dir, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	struct mailbox_scan s;
	struct mailbox_stamp stamp;
	struct mailbox_ixsync o = {0};
	r = mailbox_index_sync(dir, &o, &s, &stamp, err, errsz);
	free(dir);
	if (r != MAILBOX_OK)
		return r;
	out->uidvalidity = o.validity;
	out->uidnext = o.next;
	out->highestmodseq = o.highest;
	out->messages = (uint32_t)s.n;
	for (size_t i = 0; i < s.n; i++) {
		out->recent += s.v[i].in_new;
		unsigned flags = mailbox_name_flags(s.v[i].name);
		out->unseen += !(flags & MAILBOX_SEEN);
		uint64_t size;
		if ((flags & MAILBOX_DELETED) && (maildir_name_field(s.v[i].name, 'S', &size) ||
						  maildir_name_field(s.v[i].name, 'W', &size))) {
			out->deleted++;
			out->deleted_octets += size;
		} else if (flags & MAILBOX_DELETED) {
			out->deleted++; /* no size in its name: not counted in octets */
		}
	}
	mailbox_scan_free(&s);
	return MAILBOX_OK;
}

/* ---- views ---------------------------------------------------------------------- */

/* The file names of a listing, one block shared by the listing cache and
 * every view copied from it: a view that renames a message gives it a
 * name of its own and leaves the block alone.  Counted references, on
 * the event loop's thread only. */
struct mailbox_names_block {
	size_t refs;
	size_t len;
	char data[];
};

static struct mailbox_names_block *mailbox_block_new(size_t len)
{
	struct mailbox_names_block *b = xmalloc(sizeof *b + (len ? len : 1));
	b->refs = 1;
	b->len = len;
	return b;
}

static struct mailbox_names_block *mailbox_block_ref(struct mailbox_names_block *b)
{
	if (b)
		b->refs++;
	return b;
}

static void mailbox_block_unref(struct mailbox_names_block *b)
{
	if (b && --b->refs == 0)
		free(b);
}

struct mailbox {
	char *root, *name, *dir;
	bool read_only;
	bool broken;                 /* the index was rebuilt under us */
	uint32_t validity, uidnext;
	uint64_t highest;            /* HIGHESTMODSEQ at the last sync */
	struct mailbox_msg *msgs;    /* ascending UIDs */
	size_t n, cap;
	size_t recent;               /* messages with MAILBOX_RECENT */
	struct mailbox_stamp stamp;      /* new/ and cur/ at the last scan */
	bool stamp_valid;
	/* the queue of changes (mailbox_next_change) */
	size_t client_n;             /* messages the client knows of */
	size_t client_recent;
	size_t gone;                 /* expunged, not yet reported */
	size_t removed;              /* reported, not yet taken out of msgs */
	bool expunge_ok;             /* expunges may be reported now */
	size_t exp_cursor;           /* the expunge phase walks down from here */
	bool flags_pending;
	size_t flags_cursor;
	bool exists_sent;            /* this round sent EXISTS: RECENT follows */
	int watch_fd;
	struct mailbox_keywords kw;  /* the folder's keywords, as last read */
	struct mailbox_kwstamp {     /* dovecot-keywords when last read */
		ino_t ino;
		off_t size;
		struct timespec mtime;
	} kw_stamp;
	bool kw_changed;             /* kw differs from what the client was told */
	/* while SELECT lists the folder: its cached listing (stale), whose
	 * messages' sizes need not be counted again */
	const struct mailbox_cache_ent *prior;
	/* the names of a view copied from the cache; every other name is the
	 * message's own (mailbox_msg_drop_name) */
	struct mailbox_names_block *block;
};

/* Free m's name unless it is in the shared block. */
static void mailbox_msg_drop_name(struct mailbox *mb, struct mailbox_msg *m)
{
	const struct mailbox_names_block *b = mb->block;
	bool shared = b && m->name >= b->data && m->name < b->data + b->len;
	if (!shared)
		free(m->name);
	m->name = NULL;
}

bool mailbox_stale(const struct mailbox *mb)
{
	return mb->broken;
}

const char *mailbox_name(const struct mailbox *mb)
{
	return mb->name;
}

bool mailbox_read_only(const struct mailbox *mb)
{
	return mb->read_only;
}

uint32_t mailbox_uidvalidity(const struct mailbox *mb)
{
	return mb->validity;
}

uint32_t mailbox_uidnext(const struct mailbox *mb)
{
	return mb->uidnext;
}

uint64_t mailbox_highestmodseq(const struct mailbox *mb)
{
	return mb->highest;
}

size_t mailbox_count(const struct mailbox *mb)
{
	return mb->n;
}

size_t mailbox_recent(const struct mailbox *mb)
{
	return mb->recent;
}

size_t mailbox_first_unseen(const struct mailbox *mb)
{
	for (size_t i = 0; i < mb->n; i++)
		if (!(mb->msgs[i].flags & MAILBOX_SEEN) && mb->msgs[i].name)
			return i + 1;
	return 0;
}

const struct mailbox_msg *mailbox_msg(const struct mailbox *mb, size_t seq)
{
	return seq >= 1 && seq <= mb->n ? &mb->msgs[seq - 1] : NULL;
}

size_t mailbox_seq_from_uid(const struct mailbox *mb, uint32_t uid)
{
	size_t lo = 0, hi = mb->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (mb->msgs[mid].uid < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo + 1;
}

size_t mailbox_seq_of_uid(const struct mailbox *mb, uint32_t uid)
{
	size_t seq = mailbox_seq_from_uid(mb, uid);
	return seq <= mb->n && mb->msgs[seq - 1].uid == uid ? seq : 0;
}

char *mailbox_msg_path(const struct mailbox *mb, size_t seq)
{
	const struct mailbox_msg *m = mailbox_msg(mb, seq);
	if (!m || !m->name)
		return NULL;
	return xasprintf("%s/%s/%s", mb->dir, m->in_new ? "new" : "cur", m->name);
}

static char *mailbox_msg_file(const struct mailbox *mb, const struct mailbox_msg *m)
{
	return xasprintf("%s/%s/%s", mb->dir, m->in_new ? "new" : "cur", m->name);
}

/* Take the reported expunges out of the array. */
static void mailbox_compact(struct mailbox *mb)
{
	if (mb->removed == 0)
		return;
	size_t o = 0;
	for (size_t i = 0; i < mb->n; i++)
		if (mb->msgs[i].name)
			mb->msgs[o++] = mb->msgs[i];
	mb->n = o;
	mb->removed = 0;
	mb->flags_cursor = 0;
}

/* Move a message of new/ into cur/ (read-write views).  true when this
 * view moved it (it is then \Recent here, RFC 3501 §2.3.2). */
static bool mailbox_take_new(struct mailbox *mb, struct mailbox_msg *m)
{
	if (!m->in_new || mb->read_only)
		return false;
	char *to_name = mailbox_name_with_flags(m->name, mailbox_name_flags(m->name));
	char *from = xasprintf("%s/new/%s", mb->dir, m->name);
	char *to = xasprintf("%s/cur/%s", mb->dir, to_name);
	bool moved = rename(from, to) == 0;
	free(from);
	free(to);
	if (!moved) {
		free(to_name);
		return false; /* another session took it; the next scan sees it in cur/ */
	}
	mailbox_msg_drop_name(mb, m);
	m->name = to_name;
	m->in_new = false;
	return true;
}

static bool mailbox_cache_known_size(const struct mailbox *mb, uint32_t uid, uint64_t *size);

/* Size and date of a message new to the view.  false: it vanished. */
static bool mailbox_describe(const struct mailbox *mb, struct mailbox_msg *m)
{
	char *path = mailbox_msg_file(mb, m);
	bool ok = true;
	if (!maildir_name_field(m->name, 'W', &m->size) &&
	    !mailbox_cache_known_size(mb, m->uid, &m->size))
		ok = maildir_count_size(path, &m->size) == 0;
	if (ok && m->internal_date <= 0) {
		struct stat st;
		ok = stat(path, &st) == 0;
		m->internal_date = ok ? (long long)st.st_mtime : 0;
	}
	free(path);
	return ok;
}

/* A message vanished from disk.  One the client was never told of (its
 * EXISTS still queued) is dropped without a word: it sits above every
 * announced message, so no sequence number the client knows moves. */
static void mailbox_mark_gone(struct mailbox *mb, struct mailbox_msg *m)
{
	if (m->expunged || !m->name)
		return;
	m->expunged = true;
	m->flags_changed = false;
	if (m->announced) {
		mb->gone++;
		return;
	}
	if (m->flags & MAILBOX_RECENT)
		mb->recent--;
	mailbox_msg_drop_name(mb, m);
	mb->removed++;
}

/* Bring one message of the view in line with its file d. */
static void mailbox_update_msg(struct mailbox *mb, struct mailbox_msg *m, struct mailbox_disk *d)
{
	mailbox_msg_drop_name(mb, m);
	m->name = d->name;
	d->name = NULL;
	m->in_new = d->in_new;
	mailbox_take_new(mb, m);
	unsigned f = mailbox_name_flags(m->name);
	/* a new MODSEQ with the same flags: changed and changed back */
	if (f != (m->flags & MAILBOX_FLAGS_PERMANENT) || d->modseq != m->modseq) {
		m->flags = (uint32_t)(f | (m->flags & MAILBOX_RECENT));
		m->modseq = d->modseq;
		m->flags_changed = true;
		mb->flags_pending = true;
	}
}

static void mailbox_add_msg(struct mailbox *mb, struct mailbox_disk *d)
{
	struct mailbox_msg m = {
	    .name = d->name,
	    .uid = d->uid,
	    .in_new = d->in_new,
	    .internal_date = d->time,
	    .modseq = d->modseq,
	};
	d->name = NULL;
	bool recent = mb->read_only ? m.in_new : mailbox_take_new(mb, &m);
	if (!mailbox_describe(mb, &m)) {
		free(m.name);
		return; /* vanished meanwhile: never shown */
	}
	m.flags = (uint32_t)(mailbox_name_flags(m.name) | (recent ? MAILBOX_RECENT : 0));
	mb->recent += recent;
	struct mailbox_msg *slot = xgrow(&mb->msgs, &mb->n, &mb->cap, sizeof *slot);
	*slot = m;
}

/* Merge the listing s (by UID) into the view. */
static void mailbox_merge(struct mailbox *mb, struct mailbox_scan *s)
{
	uint32_t top = mb->n ? mb->msgs[mb->n - 1].uid : 0;
	size_t old_n = mb->n, j = 0;
	for (size_t i = 0; i < old_n; i++) {
		struct mailbox_msg *m = &mb->msgs[i];
		while (j < s->n && s->v[j].uid < m->uid)
			j++; /* unknown and below our UIDs: never happens with one index */
		if (j < s->n && s->v[j].uid == m->uid) {
			if (!m->expunged && m->name)
				mailbox_update_msg(mb, m, &s->v[j]);
			j++;
		} else {
			mailbox_mark_gone(mb, m);
		}
	}
	for (; j < s->n; j++)
		if (s->v[j].uid > top)
			mailbox_add_msg(mb, &s->v[j]);
}

static void mailbox_kwstamp_read(const char *dir, struct mailbox_kwstamp *st)
{
	char *path = xasprintf("%s/%s", dir, MAILBOX_KEYWORDS_FILE);
	struct stat sb;
	memset(st, 0, sizeof *st);
	if (stat(path, &sb) == 0) {
		st->ino = sb.st_ino;
		st->size = sb.st_size;
		st->mtime = sb.st_mtim;
	}
	free(path);
}

/* Re-read the folder's keywords when their file changed (another session
 * or node added one). */
static void mailbox_keywords_refresh(struct mailbox *mb, bool force)
{
	struct mailbox_kwstamp now;
	mailbox_kwstamp_read(mb->dir, &now);
	if (!force && now.ino == mb->kw_stamp.ino && now.size == mb->kw_stamp.size &&
	    mailbox_time_eq(&now.mtime, &mb->kw_stamp.mtime))
		return;
	struct mailbox_keywords k;
	char err[256];
	if (mailbox_keywords_load(mb->dir, &k, err, sizeof err) < 0) {
		log_warn("mailbox: %s", err);
		return; /* keep what we had; try again at the next sync */
	}
	mb->kw_stamp = now;
	if (memcmp(&k, &mb->kw, sizeof k) != 0) {
		mb->kw = k;
		mb->kw_changed = true;
	}
}

const struct mailbox_keywords *mailbox_keywords(const struct mailbox *mb)
{
	return &mb->kw;
}

bool mailbox_keywords_take_changed(struct mailbox *mb)
{
	bool c = mb->kw_changed;
	mb->kw_changed = false;
	return c;
}

enum mailbox_result mailbox_keywords_bits(struct mailbox *mb, const char *const *names, size_t n,
					  bool create, unsigned *bits, char *err, size_t errsz)
{
	struct mailbox_keywords k;
	if (create && mb->read_only) {
		errfmt(err, errsz, "Mailbox is read-only");
		return MAILBOX_ERR_READONLY;
	}
	/* The file's stamp is taken before it is read: another node may replace
	 * the file between that read and now, and a stamp taken after would
	 * match its file while k holds the older names, so that no later
	 * refresh would read the new ones.  A stamp older than k at worst makes
	 * the next refresh read the file once more. */
	struct mailbox_kwstamp before;
	mailbox_kwstamp_read(mb->dir, &before);
	enum mailbox_result r = mailbox_dir_keywords_bits(mb->dir, &k, names, n, create, bits, err,
							  errsz);
	if (r == MAILBOX_ERR_IO)
		return r; /* the view keeps what it knew */
	mb->kw_stamp = before;
	if (memcmp(&k, &mb->kw, sizeof k) != 0) {
		mb->kw = k;
		mb->kw_changed = true;
	}
	return r;
}

/* The folder an APPEND goes to: one that cannot hold messages (\Noselect)
 * is answered as one that does not exist. */
static enum mailbox_result mailbox_open_append_dir(const char *root, const char *name,
						   char **dir, char *err, size_t errsz)
{
	enum mailbox_result r = mailbox_open_dir(root, name, dir, err, errsz);
	return r == MAILBOX_ERR_NOSELECT ? MAILBOX_ERR_NONEXISTENT : r;
}

enum mailbox_result mailbox_folder_keywords_bits(const char *root, const char *name,
						 const char *const *names, size_t n,
						 unsigned *bits, char *err, size_t errsz)
{
	*bits = 0;
	if (n == 0)
		return MAILBOX_OK;
	char *dir;
	enum mailbox_result r = mailbox_open_append_dir(root, name, &dir, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	struct mailbox_keywords k;
	r = mailbox_dir_keywords_bits(dir, &k, names, n, true, bits, err, errsz);
	free(dir);
	return r;
}

/* Nothing changed on disk since the view's last listing: the MODSEQ
 * table as it is, for more changes under the lock the caller holds.
 * false when it does not match the view (then list again). */
static bool mailbox_modseq_current(const struct mailbox *mb, struct modseq_table *t, char *err,
				   size_t errsz)
{
	if (modseq_load(mb->dir, t, err, errsz) == 0 && !t->rewrite && t->validity == mb->validity &&
	    t->highest == mb->highest)
		return true;
	modseq_free(t);
	return false;
}

static const struct mailbox_prior *mailbox_prior_of(const struct mailbox *mb,
						    struct mailbox_prior *p);

/* A view's sync; with lock >= 0 under the index lock the caller holds,
 * the MODSEQ table coming back in *keep (mailbox_store). */
static enum mailbox_result mailbox_view_sync_locked(struct mailbox *mb, bool force, int lock,
						    struct modseq_table *keep, char *err,
						    size_t errsz);

static enum mailbox_result mailbox_view_sync(struct mailbox *mb, bool force, char *err,
					     size_t errsz)
{
	return mailbox_view_sync_locked(mb, force, -1, NULL, err, errsz);
}

static enum mailbox_result mailbox_view_sync_locked(struct mailbox *mb, bool force, int lock,
						    struct modseq_table *keep, char *err,
						    size_t errsz)
{
	if (mb->broken) {
		errfmt(err, errsz, "Mailbox %s changed under this session, select it again",
		       mb->name);
		return MAILBOX_ERR_IO;
	}
	mailbox_keywords_refresh(mb, force);
	/* Under the lock for a STORE (keep) a change in the clock tick of the
	 * last listing need not show in the times: another session's STORE
	 * raised HIGHESTMODSEQ (mailbox_modseq_current), and a file renamed or
	 * removed by anyone else makes the STORE's rename fail and list again */
	if (!force && mb->stamp_valid && (keep || mailbox_stamp_settled(&mb->stamp))) {
		struct mailbox_stamp now;
		mailbox_stamp_read(mb->dir, &now);
		if (mailbox_stamp_eq(&now, &mb->stamp) &&
		    (!keep || mailbox_modseq_current(mb, keep, err, errsz)))
			return MAILBOX_OK; /* nothing added, renamed or removed */
	}
	struct mailbox_scan s;
	/* a sync before a command may wait for the next one when a worker
	 * holds the index; one the answer depends on (force) waits */
	struct mailbox_prior prior;
	struct mailbox_ixsync o = {.try_lock = !force, .held = lock >= 0, .held_fd = lock,
				   .keep = keep, .prior = lock < 0 ? mailbox_prior_of(mb, &prior) : NULL};
	enum mailbox_result r = mailbox_index_sync(mb->dir, &o, &s, &mb->stamp, err, errsz);
	if (r == MAILBOX_OK && o.busy) {
		mb->stamp_valid = false; /* look again next time */
		return MAILBOX_OK;
	}
	uint32_t validity = o.validity, next = o.next;
	if (r != MAILBOX_OK && !mailbox_folder_exists(mb->dir)) {
		mb->broken = true; /* deleted or renamed by another session */
		errfmt(err, errsz, "Mailbox %s was deleted or renamed", mb->name);
	}
	if (r != MAILBOX_OK)
		return r;
	if (mb->validity && validity != mb->validity) {
		mailbox_scan_free(&s);
		mb->broken = true;
		errfmt(err, errsz, "UIDVALIDITY of %s changed, select it again", mb->name);
		return MAILBOX_ERR_IO;
	}
	mb->validity = validity;
	mb->uidnext = next;
	mb->highest = o.highest;
	mb->stamp_valid = true;
	mailbox_merge(mb, &s);
	mailbox_scan_free(&s);
	mailbox_compact(mb); /* the unannounced ones that vanished */
	return MAILBOX_OK;
}

enum mailbox_result mailbox_sync(struct mailbox *mb, unsigned flags, char *err, size_t errsz)
{
	mailbox_compact(mb);
	mb->expunge_ok = (flags & MAILBOX_SYNC_EXPUNGE) != 0;
	bool force = (flags & MAILBOX_SYNC_FORCE) != 0;
	enum mailbox_result r = mailbox_view_sync(mb, force, err, errsz);
	mb->exp_cursor = mb->n;
	return r;
}

/* ---- the listing cache (mailbox.h) ----------------------------------------- */

/* The identity of posthorn-modseq: rewritten in place or renamed over, so
 * its inode, length and change time. */
struct mailbox_filestamp {
	ino_t ino;
	off_t size;
	struct timespec c;
	struct timespec read_at;
};

struct mailbox_cache_ent {
	char *dir;                   /* NULL: a free slot */
	struct mailbox_stamp stamp;  /* of the listing, settled */
	struct mailbox_filestamp modseq; /* read before it */
	bool reusable;               /* else kept only for its messages' sizes */
	uint32_t validity, uidnext;
	uint64_t highest;
	struct mailbox_msg *msgs;    /* ascending UIDs, none in new/, no \Recent */
	size_t n;
	struct mailbox_names_block *names; /* the msgs' names */
	size_t bytes;
	uint64_t used;               /* the tick of its last use */
};

static struct {
	struct mailbox_cache_ent v[MAILBOX_CACHE_FOLDERS];
	size_t bytes;
	uint64_t tick;
	size_t hits, misses;
} mailbox_cache;

static void mailbox_filestamp_read(const char *dir, struct mailbox_filestamp *st)
{
	memset(st, 0, sizeof *st);
	clock_gettime(CLOCK_REALTIME_COARSE, &st->read_at);
	char *p = xasprintf("%s/%s", dir, MODSEQ_FILE_NAME);
	struct stat sb;
	if (stat(p, &sb) == 0) {
		st->ino = sb.st_ino;
		st->size = sb.st_size;
		st->c = sb.st_ctim;
	}
	free(p);
}

static bool mailbox_filestamp_eq(const struct mailbox_filestamp *a,
				 const struct mailbox_filestamp *b)
{
	return a->ino == b->ino && a->size == b->size && mailbox_time_eq(&a->c, &b->c);
}

static void mailbox_cache_drop(struct mailbox_cache_ent *e)
{
	mailbox_block_unref(e->names);
	free(e->msgs);
	free(e->dir);
	mailbox_cache.bytes -= e->bytes;
	memset(e, 0, sizeof *e);
}

static struct mailbox_cache_ent *mailbox_cache_find(const char *dir)
{
	for (size_t i = 0; i < MAILBOX_CACHE_FOLDERS; i++)
		if (mailbox_cache.v[i].dir && strcmp(mailbox_cache.v[i].dir, dir) == 0)
			return &mailbox_cache.v[i];
	return NULL;
}

/* The least recently used entry (a free slot first). */
static struct mailbox_cache_ent *mailbox_cache_victim(void)
{
	struct mailbox_cache_ent *v = &mailbox_cache.v[0];
	for (size_t i = 0; i < MAILBOX_CACHE_FOLDERS; i++) {
		struct mailbox_cache_ent *e = &mailbox_cache.v[i];
		if (!e->dir)
			return e;
		if (e->used < v->used)
			v = e;
	}
	return v;
}

static bool mailbox_cache_has_entries(void)
{
	for (size_t i = 0; i < MAILBOX_CACHE_FOLDERS; i++)
		if (mailbox_cache.v[i].dir)
			return true;
	return false;
}

static int mailbox_qcmp_msg_uid(const void *a, const void *b)
{
	const struct mailbox_msg *x = a, *y = b;
	return x->uid < y->uid ? -1 : x->uid > y->uid;
}

/* The size of message uid as the folder's cached listing counted it, when
 * that listing is of the same UIDVALIDITY (then the UID is the same
 * message, RFC 3501 §2.3.1.1). */
static bool mailbox_cache_known_size(const struct mailbox *mb, uint32_t uid, uint64_t *size)
{
	const struct mailbox_cache_ent *e = mb->prior;
	if (!e || e->validity != mb->validity)
		return false;
	struct mailbox_msg key = {.uid = uid};
	const struct mailbox_msg *m =
	    mailbox_search(&key, e->msgs, e->n, sizeof *e->msgs, mailbox_qcmp_msg_uid);
	if (!m)
		return false;
	*size = m->size;
	return true;
}

/* Can the view's fresh listing stand for the folder as long as its times
 * stay the same?  Not when a change in the clock tick of the listing
 * could hide, nor with files in new/ (a read-write view moves them), nor
 * when the index or the MODSEQ table did not exist before the listing
 * (a stamp without them would match the folder again if both were lost,
 * when the next listing gives new UIDs under a new UIDVALIDITY). */
static bool mailbox_cache_reusable(const struct mailbox *mb, const struct mailbox_filestamp *ms)
{
	if (!mailbox_stamp_settled(&mb->stamp) || !mailbox_time_settled(&ms->c, &ms->read_at) ||
	    mb->stamp.index_ino == 0 || ms->ino == 0)
		return false;
	for (size_t i = 0; i < mb->n; i++)
		if (mb->msgs[i].in_new || mb->msgs[i].expunged)
			return false;
	return true;
}

static bool mailbox_cache_storable(const struct mailbox *mb)
{
	for (size_t i = 0; i < mb->n; i++)
		if (!mb->msgs[i].name)
			return false;
	return true;
}

static size_t mailbox_cache_size(const struct mailbox *mb)
{
	size_t bytes = strlen(mb->dir) + 1 + mb->n * sizeof *mb->msgs;
	for (size_t i = 0; i < mb->n; i++)
		bytes += strlen(mb->msgs[i].name) + 1;
	return bytes;
}

/* An empty entry for dir's listing of bytes octets, in place of what was
 * kept for dir and of the least recently used entries; NULL when it is
 * larger than the whole cache. */
static struct mailbox_cache_ent *mailbox_cache_slot(const char *dir, size_t bytes)
{
	struct mailbox_cache_ent *e = mailbox_cache_find(dir);
	if (e)
		mailbox_cache_drop(e);
	if (bytes > MAILBOX_CACHE_BYTES)
		return NULL;
	while (mailbox_cache.bytes + bytes > MAILBOX_CACHE_BYTES && mailbox_cache_has_entries())
		mailbox_cache_drop(mailbox_cache_victim());
	e = mailbox_cache_victim();
	if (e->dir)
		mailbox_cache_drop(e);
	e->dir = xstrdup(dir);
	e->bytes = bytes;
	e->used = ++mailbox_cache.tick;
	mailbox_cache.bytes += bytes;
	return e;
}

/* Keep the view just listed (ms: posthorn-modseq read before the listing)
 * for the next SELECT of its folder, in place of what was kept; one that
 * cannot stand for the folder still gives its messages' sizes.  The entry
 * kept, or NULL. */
static const struct mailbox_cache_ent *mailbox_cache_put(const struct mailbox *mb,
							 const struct mailbox_filestamp *ms)
{
	struct mailbox_cache_ent *e = mailbox_cache_find(mb->dir);
	if (e)
		mailbox_cache_drop(e);
	if (!mailbox_cache_storable(mb))
		return NULL;
	size_t bytes = mailbox_cache_size(mb);
	e = mailbox_cache_slot(mb->dir, bytes);
	if (!e)
		return NULL;
	e->stamp = mb->stamp;
	e->modseq = *ms;
	e->reusable = mailbox_cache_reusable(mb, ms);
	e->validity = mb->validity;
	e->uidnext = mb->uidnext;
	e->highest = mb->highest;
	e->msgs = xcalloc(mb->n ? mb->n : 1, sizeof *e->msgs);
	size_t names = 0;
	for (size_t i = 0; i < mb->n; i++)
		names += strlen(mb->msgs[i].name) + 1;
	e->names = mailbox_block_new(names);
	size_t at = 0;
	for (size_t i = 0; i < mb->n; i++) {
		size_t len = strlen(mb->msgs[i].name) + 1;
		e->msgs[i] = mb->msgs[i];
		e->msgs[i].name = memcpy(e->names->data + at, mb->msgs[i].name, len);
		at += len;
		e->msgs[i].flags &= ~(uint32_t)MAILBOX_RECENT;
		e->msgs[i].flags_changed = false;
		e->msgs[i].announced = false;
	}
	e->n = mb->n;
	return e;
}

/* Does entry e stand for its folder as it is now (ms: posthorn-modseq
 * now)? */
static bool mailbox_cache_current(const struct mailbox_cache_ent *e,
				  const struct mailbox_filestamp *ms)
{
	if (!e || !e->reusable || !mailbox_filestamp_eq(ms, &e->modseq))
		return false;
	struct mailbox_stamp now;
	mailbox_stamp_read(e->dir, &now);
	return mailbox_stamp_eq(&now, &e->stamp);
}

/* The view from the cache when nothing changed on disk since it was kept:
 * the same directory times and index (mailbox_stamp_eq) and the same
 * posthorn-modseq.  Else false, *prior the stale entry (or NULL). */
static bool mailbox_cache_get(struct mailbox *mb, const struct mailbox_filestamp *ms,
			      const struct mailbox_cache_ent **prior)
{
	struct mailbox_cache_ent *e = mailbox_cache_find(mb->dir);
	*prior = e;
	struct mailbox_stamp now;
	if (e && e->reusable)
		mailbox_stamp_read(mb->dir, &now);
	if (!e || !e->reusable || !mailbox_stamp_eq(&now, &e->stamp) ||
	    !mailbox_filestamp_eq(ms, &e->modseq)) {
		mailbox_cache.misses++;
		return false;
	}
	/* the names stay in the entry's block, shared */
	mb->msgs = xcalloc(e->n ? e->n : 1, sizeof *mb->msgs);
	if (e->n)
		memcpy(mb->msgs, e->msgs, e->n * sizeof *mb->msgs);
	mb->block = mailbox_block_ref(e->names);
	mb->n = mb->cap = e->n;
	mb->validity = e->validity;
	mb->uidnext = e->uidnext;
	mb->highest = e->highest;
	mb->stamp = e->stamp;
	mb->stamp_valid = true;
	e->used = ++mailbox_cache.tick;
	mailbox_cache.hits++;
	return true;
}

void mailbox_cache_counts(struct mailbox_cache_counts *out)
{
	out->hits = mailbox_cache.hits;
	out->misses = mailbox_cache.misses;
	out->bytes = mailbox_cache.bytes;
	out->folders = 0;
	for (size_t i = 0; i < MAILBOX_CACHE_FOLDERS; i++)
		out->folders += mailbox_cache.v[i].dir != NULL;
}

void mailbox_cache_clear(void)
{
	for (size_t i = 0; i < MAILBOX_CACHE_FOLDERS; i++)
		if (mailbox_cache.v[i].dir)
			mailbox_cache_drop(&mailbox_cache.v[i]);
	mailbox_cache.hits = mailbox_cache.misses = 0;
}

/* What the view's next listing may take cur/ from when cur/ did not
 * change (mailbox_index_sync): while SELECT lists the folder, the cached
 * listing that stood for it; else the view's own messages when each is
 * in cur/ under the name it has.  Both listed under a settled stamp, so
 * any change to cur/ since shows in its time.  NULL when neither. */
static const struct mailbox_prior *mailbox_prior_of(const struct mailbox *mb,
						    struct mailbox_prior *p)
{
	const struct mailbox_cache_ent *e = mb->prior;
	if (e && e->reusable) {
		*p = (struct mailbox_prior){.msgs = e->msgs, .n = e->n, .stamp = e->stamp,
					    .validity = e->validity, .uidnext = e->uidnext};
		return p;
	}
	if (!mb->stamp_valid || !mb->validity || !mailbox_stamp_settled(&mb->stamp) || mb->gone ||
	    mb->removed)
		return NULL;
	for (size_t i = 0; i < mb->n; i++)
		if (!mb->msgs[i].name || mb->msgs[i].in_new || mb->msgs[i].expunged)
			return NULL;
	*p = (struct mailbox_prior){.msgs = mb->msgs, .n = mb->n, .stamp = mb->stamp,
				    .validity = mb->validity, .uidnext = mb->uidnext};
	return p;
}

/* ---- the listing's snapshot on disk (listing.h) ------------------------------ */

static struct listing_time mailbox_listing_time(const struct timespec *t)
{
	return (struct listing_time){.sec = (int64_t)t->tv_sec, .nsec = (uint64_t)t->tv_nsec};
}

static void mailbox_listing_stamp(const struct mailbox_stamp *st,
				  const struct mailbox_filestamp *ms, struct listing_stamp *out)
{
	memset(out, 0, sizeof *out);
	out->new_m = mailbox_listing_time(&st->new_m);
	out->cur_m = mailbox_listing_time(&st->cur_m);
	out->index_ino = (uint64_t)st->index_ino;
	out->index_c = mailbox_listing_time(&st->index_c);
	out->modseq_ino = (uint64_t)ms->ino;
	out->modseq_size = (uint64_t)ms->size;
	out->modseq_c = mailbox_listing_time(&ms->c);
}

/* A snapshot being written by a worker. */
struct mailbox_snapshot_job {
	char *dir;
	struct listing_out out;
	char err[256];
};

static void mailbox_snapshot_run(void *work)
{
	struct mailbox_snapshot_job *j = work;
	j->err[0] = '\0';
	(void)listing_write(j->dir, &j->out, j->err, sizeof j->err);
}

static void mailbox_snapshot_free(void *work)
{
	struct mailbox_snapshot_job *j = work;
	listing_out_free(&j->out);
	free(j->dir);
	free(j);
}

static void mailbox_snapshot_done(void *owner, void *work)
{
	(void)owner;
	struct mailbox_snapshot_job *j = work;
	if (j->err[0]) {
		char q[LOG_VALUE_MAX];
		log_warn("event=mailbox-error operation=listing-snapshot error=\"%s\"",
			 log_quote(q, sizeof q, j->err, strlen(j->err)));
	}
	mailbox_snapshot_free(j);
}

/* Have a worker write e (a listing that stands for its folder) as the
 * folder's snapshot.  The encoding is a copy made here, so the entry may
 * go meanwhile. */
static void mailbox_snapshot_save(const struct mailbox_cache_ent *e)
{
	if (!e || !e->reusable || e->n < MAILBOX_SNAPSHOT_MIN)
		return;
	struct listing_head h = {.validity = e->validity, .uidnext = e->uidnext,
				 .highest = e->highest, .count = (uint32_t)e->n};
	mailbox_listing_stamp(&e->stamp, &e->modseq, &h.stamp);
	struct mailbox_snapshot_job *j = xcalloc(1, sizeof *j);
	listing_out_begin(&j->out, &h);
	for (size_t i = 0; i < e->n; i++) {
		const struct mailbox_msg *m = &e->msgs[i];
		struct listing_msg lm = {.name = m->name, .size = m->size, .modseq = m->modseq,
					 .date = m->internal_date, .uid = m->uid};
		if (!listing_out_add(&j->out, &lm)) {
			mailbox_snapshot_free(j); /* too large for a snapshot: listed each time */
			return;
		}
	}
	j->dir = xstrdup(e->dir);
	/* without workers (tools, unit tests) it runs here and now */
	(void)offload_submit(mailbox_snapshot_run, mailbox_snapshot_done, mailbox_snapshot_free, j,
			     NULL);
}

/* The entry for the snapshot l of folder dir, read with the stamp st and
 * ms (l's names move into it).  false: a name in it that no listing
 * gives, or too large to keep. */
static bool mailbox_cache_put_snapshot(const char *dir, struct listing *l,
				       const struct mailbox_stamp *st,
				       const struct mailbox_filestamp *ms)
{
	for (size_t i = 0; i < l->n; i++)
		if (!mailbox_name_ok(l->v[i].name))
			return false;
	size_t bytes = strlen(dir) + 1 + l->n * sizeof(struct mailbox_msg) + l->names_len;
	struct mailbox_cache_ent *e = mailbox_cache_slot(dir, bytes);
	if (!e)
		return false;
	e->stamp = *st;
	e->modseq = *ms;
	e->reusable = true;
	e->validity = l->h.validity;
	e->uidnext = l->h.uidnext;
	e->highest = l->h.highest;
	e->msgs = xcalloc(l->n ? l->n : 1, sizeof *e->msgs);
	e->names = mailbox_block_new(l->names_len);
	if (l->names_len)
		memcpy(e->names->data, l->names, l->names_len);
	for (size_t i = 0; i < l->n; i++) {
		const struct listing_msg *lm = &l->v[i];
		e->msgs[i] = (struct mailbox_msg){
		    .name = e->names->data + (lm->name - l->names),
		    .size = lm->size,
		    .internal_date = (long long)lm->date,
		    .uid = lm->uid,
		    .flags = mailbox_name_flags(lm->name),
		    .modseq = lm->modseq,
		};
	}
	e->n = l->n;
	return true;
}

/* On a cache miss: the folder's snapshot into the cache when it was
 * written with the folder's stamp as it is now (settled: any change
 * since would show in the times).  Anything else is ignored. */
static void mailbox_snapshot_load(const char *dir, const struct mailbox_filestamp *ms)
{
	struct mailbox_stamp now;
	mailbox_stamp_read(dir, &now);
	if (!mailbox_stamp_settled(&now) || !mailbox_time_settled(&ms->c, &ms->read_at) ||
	    now.index_ino == 0 || ms->ino == 0)
		return;
	struct listing_stamp want;
	mailbox_listing_stamp(&now, ms, &want);
	struct listing l;
	char err[256] = "";
	enum listing_result r = listing_read(dir, &want, &l, err, sizeof err);
	if (r == LISTING_OK && !mailbox_cache_put_snapshot(dir, &l, &now, ms))
		r = LISTING_DAMAGED;
	listing_free(&l);
	if (r == LISTING_DAMAGED || r == LISTING_IO) {
		char q[LOG_VALUE_MAX], d[LOG_VALUE_MAX];
		log_info("event=mailbox-snapshot-ignored dir=\"%s\" reason=%s%s%s%s",
			 log_quote(d, sizeof d, dir, strlen(dir)),
			 r == LISTING_IO ? "io" : "damaged", err[0] ? " error=\"" : "",
			 err[0] ? log_quote(q, sizeof q, err, strlen(err)) : "", err[0] ? "\"" : "");
	}
}

/* The view of a folder just opened: from the cache, else from the
 * folder's snapshot, else listed (and then kept in the cache and, when
 * it stands for the folder, in the snapshot). */
static enum mailbox_result mailbox_open_sync(struct mailbox *mb, char *err, size_t errsz)
{
	struct mailbox_filestamp ms;
	mailbox_filestamp_read(mb->dir, &ms);
	const struct mailbox_cache_ent *prior;
	if (!mailbox_cache_current(mailbox_cache_find(mb->dir), &ms))
		mailbox_snapshot_load(mb->dir, &ms);
	if (mailbox_cache_get(mb, &ms, &prior)) {
		mailbox_keywords_refresh(mb, true);
		return MAILBOX_OK;
	}
	mb->prior = prior;
	enum mailbox_result r = mailbox_view_sync(mb, true, err, errsz);
	mb->prior = NULL;
	if (r == MAILBOX_OK)
		mailbox_snapshot_save(mailbox_cache_put(mb, &ms));
	return r;
}

enum mailbox_result mailbox_open(const char *root, const char *name, bool read_only,
				 struct mailbox **out, char *err, size_t errsz)
{
	*out = NULL;
	char *dir;
	enum mailbox_result r = mailbox_open_dir(root, name, &dir, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	struct mailbox *mb = xcalloc(1, sizeof *mb);
	mb->root = xstrdup(root);
	mb->name = xstrdup(mailbox_is_inbox(name) ? "INBOX" : name);
	mb->dir = dir;
	mb->read_only = read_only;
	mb->watch_fd = -1;
	r = mailbox_open_sync(mb, err, errsz);
	if (r != MAILBOX_OK) {
		mailbox_close(mb);
		return r;
	}
	/* SELECT reports the state itself: nothing is queued */
	mb->client_n = mb->n;
	mb->client_recent = mb->recent;
	for (size_t i = 0; i < mb->n; i++) {
		mb->msgs[i].flags_changed = false;
		mb->msgs[i].announced = true;
	}
	mb->flags_pending = false;
	mb->kw_changed = false; /* SELECT sends FLAGS itself */
	*out = mb;
	return MAILBOX_OK;
}

void mailbox_close(struct mailbox *mb)
{
	if (!mb)
		return;
	mailbox_unwatch(mb);
	for (size_t i = 0; i < mb->n; i++)
		mailbox_msg_drop_name(mb, &mb->msgs[i]);
	mailbox_block_unref(mb->block);
	free(mb->msgs);
	free(mb->root);
	free(mb->name);
	free(mb->dir);
	free(mb);
}

/* ---- the change queue ---------------------------------------------------------- */

static bool mailbox_next_expunge(struct mailbox *mb, struct mailbox_change *out)
{
	if (!mb->expunge_ok || mb->gone == 0)
		return false;
	if (mb->exp_cursor > mb->n)
		mb->exp_cursor = mb->n;
	while (mb->exp_cursor > 0) {
		struct mailbox_msg *m = &mb->msgs[--mb->exp_cursor];
		if (!m->expunged || !m->name)
			continue;
		/* below the cursor nothing has been taken out yet: seq = index + 1 */
		out->kind = MAILBOX_CHANGE_EXPUNGE;
		out->n = mb->exp_cursor + 1;
		out->uid = m->uid;
		out->flags = m->flags;
		if (m->flags & MAILBOX_RECENT)
			mb->recent--;
		mailbox_msg_drop_name(mb, m);
		mb->gone--;
		mb->removed++;
		mb->client_n--;
		if (mb->gone == 0)
			mailbox_compact(mb);
		return true;
	}
	mb->gone = 0; /* not reached: every gone message is below the cursor */
	return false;
}

static bool mailbox_next_flags(struct mailbox *mb, struct mailbox_change *out)
{
	if (!mb->flags_pending)
		return false;
	for (size_t i = mb->flags_cursor; i < mb->n; i++) {
		struct mailbox_msg *m = &mb->msgs[i];
		if (!m->flags_changed)
			continue;
		m->flags_changed = false;
		if (m->expunged || !m->name)
			continue;
		mb->flags_cursor = i + 1;
		out->kind = MAILBOX_CHANGE_FLAGS;
		out->n = i + 1;
		out->uid = m->uid;
		out->flags = m->flags;
		out->modseq = m->modseq;
		return true;
	}
	mb->flags_pending = false;
	mb->flags_cursor = 0;
	return false;
}

bool mailbox_next_change(struct mailbox *mb, struct mailbox_change *out)
{
	memset(out, 0, sizeof *out);
	if (mailbox_next_expunge(mb, out))
		return true;
	mailbox_compact(mb); /* the expunge phase (if any) is over */
	if (mb->n != mb->client_n) {
		/* the new ones sit at the end */
		for (size_t i = mb->n; i > 0 && !mb->msgs[i - 1].announced; i--)
			mb->msgs[i - 1].announced = true;
		mb->client_n = mb->n;
		mb->exists_sent = true;
		out->kind = MAILBOX_CHANGE_EXISTS;
		out->n = mb->n;
		return true;
	}
	if (mb->recent != mb->client_recent || mb->exists_sent) {
		mb->client_recent = mb->recent;
		mb->exists_sent = false;
		out->kind = MAILBOX_CHANGE_RECENT;
		out->n = mb->recent;
		return true;
	}
	return mailbox_next_flags(mb, out);
}

bool mailbox_changes_pending(const struct mailbox *mb)
{
	return (mb->expunge_ok && mb->gone > 0) || mb->n != mb->client_n ||
	       mb->recent != mb->client_recent || mb->exists_sent || mb->flags_pending;
}

/* ---- STORE ---------------------------------------------------------------------- */

static unsigned mailbox_apply_op(unsigned old, enum mailbox_store_op op, unsigned flags)
{
	switch (op) {
	case MAILBOX_STORE_ADD:
		return old | flags;
	case MAILBOX_STORE_REMOVE:
		return old & ~flags;
	case MAILBOX_STORE_REPLACE:
		break;
	}
	return flags;
}

/* Rename m's file for flags.  0, 1 when the file was not found (renamed
 * or removed by someone else), -1 on another error. */
static int mailbox_rename_flags(struct mailbox *mb, struct mailbox_msg *m, unsigned flags)
{
	char *to_name = mailbox_name_with_flags(m->name, flags);
	char *from = mailbox_msg_file(mb, m);
	char *to = xasprintf("%s/cur/%s", mb->dir, to_name);
	int r = rename(from, to);
	int e = errno;
	free(from);
	free(to);
	if (r < 0) {
		free(to_name);
		return e == ENOENT ? 1 : -1;
	}
	mailbox_msg_drop_name(mb, m);
	m->name = to_name;
	m->in_new = false;
	m->flags = (uint32_t)(flags | (m->flags & MAILBOX_RECENT));
	return 0;
}

/* Has uid been refused by UNCHANGEDSINCE (refused ascending)? */
static bool mailbox_uids_have(const struct mailbox_uids *l, uint32_t uid)
{
	size_t lo = 0, hi = l->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		if (l->v[mid] < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < l->n && l->v[lo] == uid;
}

static void mailbox_uids_add(struct mailbox_uids *l, uint32_t uid)
{
	*(uint32_t *)xgrow(&l->v, &l->n, &l->cap, sizeof uid) = uid;
}

void mailbox_uids_free(struct mailbox_uids *l)
{
	free(l->v);
	memset(l, 0, sizeof *l);
}

/* One pass of STORE over the view under the index lock: rename the files
 * of the messages that match and change, each getting its new MODSEQ in
 * t; messages whose MODSEQ is above unchanged go to refused in the first
 * pass (RFC 7162 §3.1.3) and are left alone after.  -1 on an error with
 * errno, else 0 and *retry when a file was renamed by someone else. */
static int mailbox_store_pass(struct mailbox *mb, const struct mailbox_store_req *q,
			      struct modseq_table *t, bool first, struct mailbox_uids *refused,
			      bool *retry)
{
	*retry = false;
	for (size_t i = 0; i < mb->n; i++) {
		struct mailbox_msg *m = &mb->msgs[i];
		if (m->expunged || !m->name || !q->match(q->arg, i + 1, m->uid))
			continue;
		if (first && m->modseq > q->unchangedsince)
			mailbox_uids_add(refused, m->uid);
		if (refused->n && mailbox_uids_have(refused, m->uid))
			continue;
		unsigned old = m->flags & MAILBOX_FLAGS_PERMANENT;
		unsigned nf = mailbox_apply_op(old, q->op, q->flags);
		if (nf == old && !m->in_new)
			continue;
		int r = mailbox_rename_flags(mb, m, nf);
		if (r < 0)
			return -1;
		if (r > 0)
			*retry = true;
		else if (nf != old)
			m->modseq = modseq_set(t, m->uid, nf);
	}
	if (t->highest > mb->highest)
		mb->highest = t->highest;
	return 0;
}

/* STORE's passes with the index lock held: each begins with the view
 * read again under the lock (current flags and MODSEQs: a flag set or
 * cleared elsewhere, by another session or node, would make this change
 * look like none, and UNCHANGEDSINCE must compare with the MODSEQ of
 * now) and ends with the new MODSEQs written. */
static enum mailbox_result mailbox_store_locked(struct mailbox *mb, int lock,
						const struct mailbox_store_req *q,
						struct mailbox_uids *refused, char *err,
						size_t errsz)
{
	bool retry = false;
	for (int pass = 0; pass < MAILBOX_STORE_TRIES; pass++) {
		if (pass > 0 && !retry)
			return MAILBOX_OK;
		/* someone renamed files under us: learn their names and flags,
		 * and apply the change to those (a file that is gone is marked
		 * expunged by the sync) */
		struct modseq_table t = {0};
		enum mailbox_result r = mailbox_view_sync_locked(mb, pass > 0 || !mb->stamp_valid,
								 lock, &t, err, errsz);
		if (r == MAILBOX_OK && mailbox_store_pass(mb, q, &t, pass == 0, refused, &retry) < 0) {
			errfmt(err, errsz, "cannot rename a message of %s: %s", mb->name,
			       strerror(errno));
			r = MAILBOX_ERR_IO;
		}
		if (r == MAILBOX_OK && modseq_store(mb->dir, &t, err, errsz) < 0)
			r = MAILBOX_ERR_IO;
		modseq_free(&t);
		if (r != MAILBOX_OK)
			return r;
	}
	if (!retry)
		return MAILBOX_OK;
	/* never reported as done when a change did not land */
	errfmt(err, errsz, "flags of %s keep changing under this session, try again", mb->name);
	return MAILBOX_ERR_IO;
}

enum mailbox_result mailbox_store_cond(struct mailbox *mb, const struct mailbox_store_req *q,
				       struct mailbox_uids *refused, char *err, size_t errsz)
{
	memset(refused, 0, sizeof *refused);
	if (mb->read_only) {
		errfmt(err, errsz, "Mailbox is read-only");
		return MAILBOX_ERR_READONLY;
	}
	mailbox_compact(mb);
	int lock = mailbox_lock(mb->dir, true, err, errsz);
	if (lock < 0)
		return MAILBOX_ERR_IO;
	struct mailbox_store_req req = *q;
	req.flags &= MAILBOX_FLAGS_PERMANENT;
	enum mailbox_result r = mailbox_store_locked(mb, lock, &req, refused, err, errsz);
	mailbox_unlock(lock);
	mailbox_upkeep(mb->dir, false); /* the new MODSEQs made durable */
	return r;
}

enum mailbox_result mailbox_store(struct mailbox *mb, mailbox_match_fn match, void *arg,
				  enum mailbox_store_op op, unsigned flags, char *err, size_t errsz)
{
	struct mailbox_store_req q = {match, arg, op, flags, MAILBOX_MODSEQ_NONE};
	struct mailbox_uids refused;
	enum mailbox_result r = mailbox_store_cond(mb, &q, &refused, err, errsz);
	mailbox_uids_free(&refused);
	return r;
}

/* ---- VANISHED (RFC 7162 §3.2.10) ------------------------------------------------ */

static void mailbox_ranges_add(struct mailbox_uid_ranges *out, uint32_t lo, uint32_t hi)
{
	if (out->n && out->v[out->n - 1].hi + 1 >= lo && out->v[out->n - 1].hi < UINT32_MAX) {
		if (hi > out->v[out->n - 1].hi)
			out->v[out->n - 1].hi = hi;
		return;
	}
	struct mailbox_uid_range *r = xgrow(&out->v, &out->n, &out->cap, sizeof *r);
	r->lo = lo;
	r->hi = hi;
}

void mailbox_uid_ranges_free(struct mailbox_uid_ranges *l)
{
	free(l->v);
	memset(l, 0, sizeof *l);
}

/* Every UID below UIDNEXT that the view does not hold. */
static void mailbox_not_in_view(const struct mailbox *mb, struct mailbox_uid_ranges *out)
{
	uint32_t next = 1;
	for (size_t i = 0; i < mb->n; i++) {
		const struct mailbox_msg *m = &mb->msgs[i];
		if (!m->name || m->expunged)
			continue;
		if (m->uid > next)
			mailbox_ranges_add(out, next, m->uid - 1);
		next = m->uid + 1;
	}
	if (mb->uidnext > next)
		mailbox_ranges_add(out, next, mb->uidnext - 1);
}

static int mailbox_qcmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;
	return x < y ? -1 : x > y;
}

enum mailbox_result mailbox_vanished(const struct mailbox *mb, uint64_t since,
				     struct mailbox_uid_ranges *out, char *err, size_t errsz)
{
	memset(out, 0, sizeof *out);
	int lock = mailbox_lock(mb->dir, true, err, errsz);
	if (lock < 0)
		return MAILBOX_ERR_IO;
	struct modseq_table t;
	int r = modseq_load(mb->dir, &t, err, errsz);
	mailbox_unlock(lock);
	if (r < 0)
		return MAILBOX_ERR_IO;
	if (t.rewrite || t.validity != mb->validity || since < t.forgotten) {
		/* expunges forgotten (or never known): every UID that is not here */
		mailbox_not_in_view(mb, out);
		modseq_free(&t);
		return MAILBOX_OK;
	}
	uint32_t *uids = xcalloc(t.nx ? t.nx : 1, sizeof *uids);
	size_t n = 0;
	for (size_t i = 0; i < t.nx; i++)
		if (t.x[i].modseq > since)
			uids[n++] = t.x[i].uid;
	mailbox_sort(uids, n, sizeof *uids, mailbox_qcmp_u32);
	for (size_t i = 0; i < n; i++)
		mailbox_ranges_add(out, uids[i], uids[i]);
	free(uids);
	modseq_free(&t);
	return MAILBOX_OK;
}

/* ---- work for a worker: EXPUNGE, COPY, MOVE, APPEND ------------------------------- */

enum mailbox_job_kind {
	MAILBOX_JOB_EXPUNGE,
	MAILBOX_JOB_COPY,
	MAILBOX_JOB_MOVE,
	MAILBOX_JOB_APPEND,
};

/* A message of the view that a job works on, as the view knew it. */
struct mailbox_job_msg {
	char *name;                  /* in the source's new/ or cur/ (the current
				      * name once found renamed) */
	bool in_new;
	uint32_t uid;
	uint32_t flags;              /* permanent flags */
	long long date;
	/* COPY, MOVE */
	char *copy_unique;           /* NULL: not copied (yet) */
	char *copy_path;             /* for an undo */
	uint32_t copy_uid;
};

struct mailbox_job {
	enum mailbox_job_kind kind;
	bool ran;
	enum mailbox_result r;
	char err[256];
	char *sdir, *ddir;           /* the view's folder; COPY's destination */
	struct mailbox_job_msg *v;
	size_t n, cap;
	uint32_t validity;           /* of the destination (COPY) or folder (APPEND) */
	bool copied;                 /* COPY, MOVE: the copies are in, with UIDs */
	/* APPEND: the messages' files in tmp/ are v[].name */
	char *root, *name;
};

void mailbox_job_free(struct mailbox_job *j)
{
	if (!j)
		return;
	for (size_t i = 0; i < j->n; i++) {
		if (j->kind == MAILBOX_JOB_APPEND && !j->ran)
			unlink(j->v[i].name); /* a message that never went in */
		free(j->v[i].name);
		free(j->v[i].copy_unique);
		free(j->v[i].copy_path);
	}
	free(j->v);
	free(j->sdir);
	free(j->ddir);
	free(j->root);
	free(j->name);
	free(j);
}

static struct mailbox_job *mailbox_job_new(enum mailbox_job_kind kind, const struct mailbox *mb)
{
	struct mailbox_job *j = xcalloc(1, sizeof *j);
	j->kind = kind;
	j->r = MAILBOX_OK;
	if (mb)
		j->sdir = xstrdup(mb->dir);
	return j;
}

/* Take the view's message m into the job. */
static void mailbox_job_add(struct mailbox_job *j, const struct mailbox_msg *m)
{
	struct mailbox_job_msg *jm = xgrow(&j->v, &j->n, &j->cap, sizeof *jm);
	jm->name = xstrdup(m->name);
	jm->in_new = m->in_new;
	jm->uid = m->uid;
	jm->flags = m->flags & MAILBOX_FLAGS_PERMANENT;
	jm->date = m->internal_date;
}

static char *mailbox_job_file(const struct mailbox_job *j, const struct mailbox_job_msg *m)
{
	return xasprintf("%s/%s/%s", j->sdir, m->in_new ? "new" : "cur", m->name);
}

/* The source folder's listing, sorted by unique part: made once, at the
 * first file that is not where the view saw it. */
struct mailbox_found {
	bool made;
	struct mailbox_scan s;
};

/* Where is m's file now (another session changed its flags, or took it
 * from new/ to cur/)?  false: it is gone. */
static bool mailbox_job_relocate(struct mailbox_job *j, struct mailbox_job_msg *m,
				 struct mailbox_found *f)
{
	if (!f->made) {
		struct mailbox_stamp stamp;
		char err[64];
		f->made = true;
		if (mailbox_scan(j->sdir, &f->s, &stamp, err, sizeof err) < 0)
			return false;
		mailbox_sort(f->s.v, f->s.n, sizeof *f->s.v, mailbox_qcmp_unique);
	}
	struct mailbox_disk key = {.name = m->name, .ulen = (uint32_t)maildir_unique_len(m->name)};
	const struct mailbox_disk *d =
	    mailbox_search(&key, f->s.v, f->s.n, sizeof *f->s.v, mailbox_qcmp_unique);
	if (!d || (strcmp(d->name, m->name) == 0 && d->in_new == m->in_new))
		return false;
	free(m->name);
	m->name = xstrdup(d->name);
	m->in_new = d->in_new;
	return true;
}

/* ---- EXPUNGE ---------------------------------------------------------------------- */

enum mailbox_result mailbox_expunge_begin(struct mailbox *mb, mailbox_match_fn match, void *arg,
					  struct mailbox_job **out, char *err, size_t errsz)
{
	*out = NULL;
	if (mb->read_only) {
		errfmt(err, errsz, "Mailbox is read-only");
		return MAILBOX_ERR_READONLY;
	}
	mailbox_compact(mb);
	/* current flags first: \Deleted may have been set or cleared elsewhere */
	enum mailbox_result r = mailbox_view_sync(mb, false, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	struct mailbox_job *j = mailbox_job_new(MAILBOX_JOB_EXPUNGE, mb);
	for (size_t i = 0; i < mb->n; i++) {
		const struct mailbox_msg *m = &mb->msgs[i];
		if (m->expunged || !m->name || !(m->flags & MAILBOX_DELETED))
			continue;
		if (match && !match(arg, i + 1, m->uid))
			continue;
		mailbox_job_add(j, m);
	}
	*out = j;
	return MAILBOX_OK;
}

/* Remove m's file; one that another session (here or on another node)
 * renamed meanwhile is found by its unique part and removed while it
 * still has \Deleted; one removed meanwhile, or whose \Deleted was
 * cleared, is left alone.  0, or -1 with errno. */
static int mailbox_expunge_one(struct mailbox_job *j, struct mailbox_job_msg *m,
			       struct mailbox_found *f)
{
	for (int t = 0; t < MAILBOX_EXPUNGE_TRIES; t++) {
		char *path = mailbox_job_file(j, m);
		int r = unlink(path);
		int e = errno;
		free(path);
		if (r == 0 || e != ENOENT) {
			errno = e;
			return r;
		}
		/* a fresh listing: one made before may predate the rename */
		mailbox_scan_free(&f->s);
		f->made = false;
		if (!mailbox_job_relocate(j, m, f) || !(mailbox_name_flags(m->name) & MAILBOX_DELETED))
			return 0;
	}
	return 0; /* still moving: it stays, with \Deleted, for the next EXPUNGE */
}

/* Remove the files, then make the removals durable. */
static void mailbox_expunge_run(struct mailbox_job *j)
{
	struct mailbox_found f = {0};
	for (size_t i = 0; i < j->n; i++) {
		if (mailbox_expunge_one(j, &j->v[i], &f) < 0) {
			errfmt(j->err, sizeof j->err, "cannot remove %s: %s", j->v[i].name,
			       strerror(errno));
			j->r = MAILBOX_ERR_IO;
			break;
		}
	}
	mailbox_scan_free(&f.s);
	if (j->n && maildir_sync(j->sdir) < 0 && j->r == MAILBOX_OK) {
		errfmt(j->err, sizeof j->err, "cannot sync %s: %s", j->sdir, strerror(errno));
		j->r = MAILBOX_ERR_IO;
	}
}

enum mailbox_result mailbox_expunge_end(struct mailbox *mb, struct mailbox_job *j, char *err,
					size_t errsz)
{
	enum mailbox_result r = j->r;
	if (r != MAILBOX_OK)
		errfmt(err, errsz, "%s", j->err);
	mailbox_job_free(j);
	/* the removals (and any other expunge found on disk) as EXPUNGE changes */
	mailbox_compact(mb);
	char ignored[64];
	enum mailbox_result r2 = mailbox_view_sync(mb, true, r == MAILBOX_OK ? err : ignored,
						   r == MAILBOX_OK ? errsz : sizeof ignored);
	mb->expunge_ok = true;
	mb->exp_cursor = mb->n;
	return r != MAILBOX_OK ? r : r2;
}

enum mailbox_result mailbox_expunge(struct mailbox *mb, mailbox_match_fn match, void *arg,
				    char *err, size_t errsz)
{
	struct mailbox_job *j;
	enum mailbox_result r = mailbox_expunge_begin(mb, match, arg, &j, err, errsz);
	if (r != MAILBOX_OK) {
		if (r != MAILBOX_ERR_READONLY) {
			mb->expunge_ok = true;
			mb->exp_cursor = mb->n;
		}
		return r;
	}
	mailbox_job_run(j);
	return mailbox_expunge_end(mb, j, err, errsz);
}

/* ---- COPY / MOVE ---------------------------------------------------------------- */

void mailbox_uidmap_free(struct mailbox_uidmap *m)
{
	free(m->src);
	free(m->dst);
	memset(m, 0, sizeof *m);
}

/* Copy the bytes of from into a new file to (through dir's tmp/). */
static int mailbox_copy_bytes(const char *from, const char *dir, const char *to)
{
	int in = open(from, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (in < 0)
		return -1;
	char *tmp = maildir_unique_name(0);
	char *tpath = xasprintf("%s/tmp/%s", dir, tmp);
	free(tmp);
	int outfd = open(tpath, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	int r = outfd < 0 ? -1 : 0;
	char *buf = xmalloc(MAILBOX_COPY_BUF);
	while (r == 0) {
		ssize_t n = read(in, buf, MAILBOX_COPY_BUF);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = n < 0 ? -1 : 0;
			break;
		}
		r = write_all(outfd, buf, (size_t)n);
	}
	free(buf);
	int e = errno;
	if (r == 0 && fsync(outfd) < 0)
		r = -1, e = errno;
	if (outfd >= 0 && close(outfd) < 0 && r == 0)
		r = -1, e = errno;
	close(in);
	if (r == 0 && rename(tpath, to) < 0)
		r = -1, e = errno;
	if (r < 0 && outfd >= 0)
		unlink(tpath);
	free(tpath);
	errno = e;
	return r;
}

/* The copy's name: a new unique part dated like the original, the
 * original's ",S=,W=" fields, and the flags. */
static char *mailbox_copy_name(const struct mailbox_job_msg *m, char **unique)
{
	*unique = maildir_unique_name(m->date);
	size_t ulen = maildir_unique_len(m->name), base = strcspn(m->name, ":");
	char *plain = xasprintf("%s%.*s", *unique, (int)(base - ulen), m->name + ulen);
	char *name = mailbox_name_with_flags(plain, m->flags);
	free(plain);
	return name;
}

/* Link (or copy) one message into ddir/new, with its flags in the name:
 * RFC 3501 §6.4.7 wants the copy \Recent, which is what new/ means here
 * (the next view to take it into cur/ has it \Recent).  0, 1 when its
 * file is not where the job saw it, -1 on an error (errno). */
static int mailbox_copy_one(struct mailbox_job *j, struct mailbox_job_msg *m)
{
	char *unique;
	char *name = mailbox_copy_name(m, &unique);
	char *from = mailbox_job_file(j, m);
	char *to = xasprintf("%s/new/%s", j->ddir, name);
	free(name);
	int r = link(from, to);
	if (r < 0 && (errno == EXDEV || errno == EPERM || errno == EMLINK || errno == ENOSYS))
		r = mailbox_copy_bytes(from, j->ddir, to);
	int e = errno;
	free(from);
	if (r < 0) {
		free(unique);
		free(to);
		errno = e;
		return e == ENOENT ? 1 : -1;
	}
	m->copy_unique = unique;
	m->copy_path = to;
	return 0;
}

/* All or nothing (RFC 3501 §6.4.7): an error takes back every copy made. */
static void mailbox_copy_undo(struct mailbox_job *j)
{
	for (size_t i = 0; i < j->n; i++)
		if (j->v[i].copy_path)
			unlink(j->v[i].copy_path);
}

/* Copy every message of the job; one not where the view saw it is looked
 * for once, and left out when it is gone.  How many were copied, or -1
 * (j->err says why). */
static ssize_t mailbox_copy_files(struct mailbox_job *j)
{
	struct mailbox_found found = {0};
	ssize_t copied = 0;
	for (size_t i = 0; i < j->n && copied >= 0; i++) {
		struct mailbox_job_msg *m = &j->v[i];
		int r = mailbox_copy_one(j, m);
		if (r > 0 && mailbox_job_relocate(j, m, &found))
			r = mailbox_copy_one(j, m);
		if (r < 0) {
			errfmt(j->err, sizeof j->err, "cannot copy %s: %s", m->name, strerror(errno));
			copied = -1;
		} else if (r == 0) {
			copied++;
		}
	}
	mailbox_scan_free(&found.s);
	return copied;
}

/* The copies' UIDs from the destination's index. */
static enum mailbox_result mailbox_copy_uids(struct mailbox_job *j, size_t copied)
{
	char **uniques = xcalloc(copied ? copied : 1, sizeof *uniques);
	uint32_t *uids = xcalloc(copied ? copied : 1, sizeof *uids);
	size_t k = 0;
	for (size_t i = 0; i < j->n; i++)
		if (j->v[i].copy_unique)
			uniques[k++] = j->v[i].copy_unique;
	enum mailbox_result r =
	    mailbox_index_add(j->ddir, uniques, k, &j->validity, uids, j->err, sizeof j->err);
	k = 0;
	for (size_t i = 0; i < j->n && r == MAILBOX_OK; i++)
		if (j->v[i].copy_unique)
			j->v[i].copy_uid = uids[k++];
	free(uniques);
	free(uids);
	return r;
}

/* MOVE: the sources of the copies removed, durably. */
static void mailbox_move_sources(struct mailbox_job *j)
{
	bool any = false;
	for (size_t i = 0; i < j->n; i++) {
		if (!j->v[i].copy_unique)
			continue;
		char *path = mailbox_job_file(j, &j->v[i]);
		int r = unlink(path);
		int e = errno;
		free(path);
		if (r < 0 && e != ENOENT) {
			errfmt(j->err, sizeof j->err, "cannot remove %s: %s", j->v[i].name, strerror(e));
			j->r = MAILBOX_ERR_IO;
			return;
		}
		any = true;
	}
	if (any && maildir_sync(j->sdir) < 0) {
		errfmt(j->err, sizeof j->err, "cannot sync %s: %s", j->sdir, strerror(errno));
		j->r = MAILBOX_ERR_IO;
	}
}

/* Copy, make the copies durable (their folder, then the index lines
 * that give them UIDs), and for MOVE remove the sources. */
static void mailbox_copy_run(struct mailbox_job *j)
{
	if (j->n == 0)
		return;
	if (!mailbox_folder_exists(j->ddir)) {
		errfmt(j->err, sizeof j->err, "Mailbox does not exist");
		j->r = MAILBOX_ERR_NONEXISTENT;
		return;
	}
	ssize_t copied = mailbox_copy_files(j);
	if (copied == 0) {
		errfmt(j->err, sizeof j->err, "Some of the messages were expunged");
		j->r = MAILBOX_ERR_EXPUNGED;
		return;
	}
	if (copied > 0 && maildir_sync(j->ddir) < 0) {
		errfmt(j->err, sizeof j->err, "cannot sync %s: %s", j->ddir, strerror(errno));
		copied = -1;
	}
	j->r = copied < 0 ? MAILBOX_ERR_IO : mailbox_copy_uids(j, (size_t)copied);
	if (j->r != MAILBOX_OK) {
		mailbox_copy_undo(j);
		return;
	}
	j->copied = true;
	if (j->kind == MAILBOX_JOB_MOVE)
		mailbox_move_sources(j);
}

/* Keyword letters are per folder: give the copies the destination's
 * letters for the sources' keyword names (added to its dovecot-keywords
 * as needed; a letter without a name in the source is not copied). */
static enum mailbox_result mailbox_copy_keywords(const struct mailbox *mb, struct mailbox_job *j,
						 char *err, size_t errsz)
{
	unsigned used = 0;
	for (size_t i = 0; i < j->n; i++)
		used |= j->v[i].flags & MAILBOX_KEYWORDS_ALL;
	const char *names[MAILBOX_KEYWORDS_MAX];
	size_t n = 0;
	for (unsigned i = 0; i < MAILBOX_KEYWORDS_MAX; i++)
		if ((used & MAILBOX_KEYWORD(i)) && mb->kw.name[i][0])
			names[n++] = mb->kw.name[i];
	struct mailbox_keywords dk;
	memset(&dk, 0, sizeof dk);
	unsigned bits;
	enum mailbox_result r = MAILBOX_OK;
	if (n > 0)
		r = mailbox_dir_keywords_bits(j->ddir, &dk, names, n, true, &bits, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	unsigned map[MAILBOX_KEYWORDS_MAX] = {0};
	for (unsigned i = 0; i < MAILBOX_KEYWORDS_MAX; i++) {
		int d = (used & MAILBOX_KEYWORD(i)) && mb->kw.name[i][0]
				? mailbox_keywords_find(&dk, mb->kw.name[i])
				: -1;
		map[i] = d >= 0 ? MAILBOX_KEYWORD(d) : 0;
	}
	for (size_t i = 0; i < j->n; i++) {
		unsigned f = j->v[i].flags & MAILBOX_FLAGS_SYSTEM;
		for (unsigned k = 0; k < MAILBOX_KEYWORDS_MAX; k++)
			if (j->v[i].flags & MAILBOX_KEYWORD(k))
				f |= map[k];
		j->v[i].flags = f;
	}
	return MAILBOX_OK;
}

enum mailbox_result mailbox_copy_begin(struct mailbox *mb, mailbox_match_fn match, void *arg,
				       const char *dest, bool move, struct mailbox_job **out,
				       char *err, size_t errsz)
{
	*out = NULL;
	if (move && mb->read_only) {
		errfmt(err, errsz, "Mailbox is read-only");
		return MAILBOX_ERR_READONLY;
	}
	char *ddir;
	enum mailbox_result r = mailbox_open_dir(mb->root, dest, &ddir, err, errsz);
	if (r == MAILBOX_ERR_NOSELECT)
		r = MAILBOX_ERR_NONEXISTENT;
	if (r != MAILBOX_OK)
		return r;
	mailbox_compact(mb);
	struct mailbox_job *j = mailbox_job_new(move ? MAILBOX_JOB_MOVE : MAILBOX_JOB_COPY, mb);
	j->ddir = ddir;
	for (size_t i = 0; i < mb->n; i++) {
		const struct mailbox_msg *m = &mb->msgs[i];
		if (!m->expunged && m->name && match(arg, i + 1, m->uid))
			mailbox_job_add(j, m);
	}
	r = mailbox_copy_keywords(mb, j, err, errsz);
	if (r != MAILBOX_OK) {
		mailbox_job_free(j);
		return r;
	}
	*out = j;
	return MAILBOX_OK;
}

/* The pairs of the copies that have a UID (one removed at once by
 * another client has none), ascending source UIDs as the view's order. */
static void mailbox_copy_map(const struct mailbox_job *j, struct mailbox_uidmap *out)
{
	size_t n = 0;
	for (size_t i = 0; i < j->n; i++)
		n += j->v[i].copy_uid != 0;
	out->uidvalidity = j->validity;
	out->src = xcalloc(n ? n : 1, sizeof *out->src);
	out->dst = xcalloc(n ? n : 1, sizeof *out->dst);
	for (size_t i = 0; i < j->n; i++) {
		if (!j->v[i].copy_uid)
			continue;
		out->src[out->n] = j->v[i].uid;
		out->dst[out->n] = j->v[i].copy_uid;
		out->n++;
	}
}

enum mailbox_result mailbox_copy_end(struct mailbox *mb, struct mailbox_job *j,
				     struct mailbox_uidmap *out, char *err, size_t errsz)
{
	memset(out, 0, sizeof *out);
	enum mailbox_result r = j->r;
	bool moved = j->kind == MAILBOX_JOB_MOVE && j->copied; /* sources removed, or some */
	if (r != MAILBOX_OK)
		errfmt(err, errsz, "%s", j->err);
	else
		mailbox_copy_map(j, out);
	mailbox_job_free(j);
	if (!moved)
		return r;
	/* MOVE: the removals as EXPUNGE changes (RFC 6851 §4.3) */
	mailbox_compact(mb);
	char ignored[64];
	enum mailbox_result r2 = mailbox_view_sync(mb, true, r == MAILBOX_OK ? err : ignored,
						   r == MAILBOX_OK ? errsz : sizeof ignored);
	mb->expunge_ok = true;
	mb->exp_cursor = mb->n;
	return r != MAILBOX_OK ? r : r2;
}

/* COPY or MOVE in one call, the job run right here. */
static enum mailbox_result mailbox_copy_now(struct mailbox *mb, mailbox_match_fn match, void *arg,
					    const char *dest, bool move,
					    struct mailbox_uidmap *out, char *err, size_t errsz)
{
	memset(out, 0, sizeof *out);
	struct mailbox_job *j;
	enum mailbox_result r = mailbox_copy_begin(mb, match, arg, dest, move, &j, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	mailbox_job_run(j);
	return mailbox_copy_end(mb, j, out, err, errsz);
}

enum mailbox_result mailbox_copy(struct mailbox *mb, mailbox_match_fn match, void *arg,
				 const char *dest, struct mailbox_uidmap *out, char *err,
				 size_t errsz)
{
	return mailbox_copy_now(mb, match, arg, dest, false, out, err, errsz);
}

enum mailbox_result mailbox_move(struct mailbox *mb, mailbox_match_fn match, void *arg,
				 const char *dest, struct mailbox_uidmap *out, char *err,
				 size_t errsz)
{
	return mailbox_copy_now(mb, match, arg, dest, true, out, err, errsz);
}

/* ---- APPEND ------------------------------------------------------------------ */

enum mailbox_result mailbox_append_begin(const char *root, const char *name, char **path, int *fd,
					 char *err, size_t errsz)
{
	*path = NULL;
	*fd = -1;
	char *dir;
	enum mailbox_result r = mailbox_open_append_dir(root, name, &dir, err, errsz);
	if (r != MAILBOX_OK)
		return r;
	mailbox_sweep_tmp(dir);
	char *unique = maildir_unique_name(0);
	char *p = xasprintf("%s/tmp/%s", dir, unique);
	free(unique);
	free(dir);
	int f = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (f < 0) {
		errfmt(err, errsz, "cannot create %s: %s", p, strerror(errno));
		free(p);
		return MAILBOX_ERR_IO;
	}
	*path = p;
	*fd = f;
	return MAILBOX_OK;
}

void mailbox_append_abort(const char *path)
{
	if (path)
		unlink(path);
}

/* fsync the file, learn its sizes, date it. */
static int mailbox_append_prepare(const char *path, long long date, off_t *bytes, uint64_t *crlf)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -1;
	struct stat st;
	int r = fsync(fd) == 0 && fstat(fd, &st) == 0 ? 0 : -1;
	int e = errno;
	close(fd);
	if (r == 0) {
		*bytes = st.st_size;
		r = maildir_count_size(path, crlf);
		e = errno;
	}
	if (r == 0) {
		/* the access time stays now: a file in tmp/ whose times are
		 * both old is left over (maildir(5)), and another session's or
		 * node's sweep would remove it before it is renamed */
		struct timespec ts[2] = {{.tv_nsec = UTIME_NOW}, {.tv_sec = (time_t)date}};
		r = utimensat(AT_FDCWD, path, ts, 0);
		e = errno;
	}
	errno = e;
	return r;
}

/* Name the written file UNIQUE,S=,W=[:2,flags] and move it into new/
 * (no flags) or cur/.  The final path, or NULL with a reason in err. */
static char *mailbox_append_place(const char *dir, const char *path, const char *unique,
				  unsigned flags, long long date, char *err, size_t errsz)
{
	off_t bytes = 0;
	uint64_t crlf = 0;
	if (mailbox_append_prepare(path, date, &bytes, &crlf) < 0) {
		errfmt(err, errsz, "cannot store the message: %s", strerror(errno));
		return NULL;
	}
	char *plain = xasprintf("%s,S=%lld,W=%llu", unique, (long long)bytes,
				(unsigned long long)crlf);
	char *fname = flags ? mailbox_name_with_flags(plain, flags) : xstrdup(plain);
	char *final = xasprintf("%s/%s/%s", dir, flags ? "cur" : "new", fname);
	free(plain);
	free(fname);
	if (rename(path, final) < 0) {
		errfmt(err, errsz, "cannot store the message: %s", strerror(errno));
		free(final);
		return NULL;
	}
	if (maildir_sync(dir) < 0) {
		errfmt(err, errsz, "cannot store the message: %s", strerror(errno));
		unlink(final);
		free(final);
		return NULL;
	}
	return final;
}

/* Whether every file of v is in dir's tmp/ (the folder was not renamed
 * while the messages arrived). */
static bool mailbox_append_in_tmp(const char *dir, const struct mailbox_job_msg *v, size_t n)
{
	char *tmpdir = xasprintf("%s/tmp/", dir);
	size_t tlen = strlen(tmpdir);
	bool ours = true;
	for (size_t k = 0; ours && k < n; k++)
		ours = strncmp(v[k].name, tmpdir, tlen) == 0 && !strchr(v[k].name + tlen, '/');
	free(tmpdir);
	return ours;
}

/* Move the written files v[0..n) (names in tmp/) into the folder dir and
 * give them UIDs (v[k].uid), all or none (RFC 3502 §6.3.11): each is
 * placed in new/ or cur/, then all are indexed at once; on any error the
 * ones placed are removed again, the others' files too. */
static enum mailbox_result mailbox_append_place_all(const char *dir, struct mailbox_job_msg *v,
						    size_t n, uint32_t *uidvalidity, char *err,
						    size_t errsz)
{
	char **uniques = xcalloc(n, sizeof *uniques);
	char **finals = xcalloc(n, sizeof *finals);
	uint32_t *uids = xcalloc(n, sizeof *uids);
	enum mailbox_result r = MAILBOX_OK;
	size_t placed = 0;
	for (; placed < n; placed++) {
		long long date = v[placed].date > 0 ? v[placed].date : (long long)time(NULL);
		uniques[placed] = maildir_unique_name(date);
		finals[placed] = mailbox_append_place(dir, v[placed].name, uniques[placed],
						      v[placed].flags & MAILBOX_FLAGS_PERMANENT,
						      date, err, errsz);
		if (!finals[placed]) {
			r = MAILBOX_ERR_IO;
			break;
		}
	}
	if (r == MAILBOX_OK)
		r = mailbox_index_add(dir, uniques, n, uidvalidity, uids, err, errsz);
	for (size_t k = 0; k < n; k++) {
		if (r != MAILBOX_OK && k < placed)
			unlink(finals[k]);
		else if (r != MAILBOX_OK)
			unlink(v[k].name);
		v[k].uid = r == MAILBOX_OK ? uids[k] : 0;
		free(uniques[k]);
		free(finals[k]);
	}
	free(uniques);
	free(finals);
	free(uids);
	return r;
}

/* The messages v[0..n) of one APPEND into folder name, all or none. */
static enum mailbox_result mailbox_append_commit_all(const char *root, const char *name,
						     struct mailbox_job_msg *v, size_t n,
						     uint32_t *uidvalidity, char *err, size_t errsz)
{
	*uidvalidity = 0;
	char *dir = NULL;
	enum mailbox_result r = mailbox_open_dir(root, name, &dir, err, errsz);
	if (r == MAILBOX_ERR_NOSELECT)
		r = MAILBOX_ERR_NONEXISTENT;
	if (r == MAILBOX_OK && !mailbox_append_in_tmp(dir, v, n)) {
		errfmt(err, errsz, "Mailbox was renamed meanwhile");
		r = MAILBOX_ERR_NONEXISTENT;
	} else if (r == MAILBOX_OK) {
		r = mailbox_append_place_all(dir, v, n, uidvalidity, err, errsz);
		free(dir);
		return r;
	}
	free(dir);
	for (size_t k = 0; k < n; k++)
		unlink(v[k].name);
	return r;
}

enum mailbox_result mailbox_append_commit(const char *root, const char *name, const char *path,
					  unsigned flags, long long internal_date,
					  uint32_t *uidvalidity, uint32_t *uid, char *err,
					  size_t errsz)
{
	struct mailbox_job_msg m = {.name = xstrdup(path), .flags = flags, .date = internal_date};
	enum mailbox_result r = mailbox_append_commit_all(root, name, &m, 1, uidvalidity, err, errsz);
	*uid = m.uid;
	free(m.name);
	return r;
}

struct mailbox_job *mailbox_append_job(const char *root, const char *name, const char *path,
				       unsigned flags, long long internal_date)
{
	struct mailbox_job *j = mailbox_job_new(MAILBOX_JOB_APPEND, NULL);
	j->root = xstrdup(root);
	j->name = xstrdup(name);
	mailbox_append_job_add(j, path, flags, internal_date);
	return j;
}

void mailbox_append_job_add(struct mailbox_job *j, const char *path, unsigned flags,
			    long long internal_date)
{
	struct mailbox_job_msg *m = xgrow(&j->v, &j->n, &j->cap, sizeof *m);
	m->name = xstrdup(path);
	m->flags = flags & MAILBOX_FLAGS_PERMANENT;
	m->date = internal_date;
}

enum mailbox_result mailbox_append_end(struct mailbox_job *j, uint32_t *uidvalidity,
				       uint32_t *uids, size_t nuids, char *err, size_t errsz)
{
	enum mailbox_result r = j->r;
	*uidvalidity = j->validity;
	for (size_t k = 0; k < nuids; k++)
		uids[k] = k < j->n ? j->v[k].uid : 0;
	if (r != MAILBOX_OK)
		errfmt(err, errsz, "%s", j->err);
	mailbox_job_free(j);
	return r;
}

void mailbox_job_run(struct mailbox_job *j)
{
	j->ran = true;
	switch (j->kind) {
	case MAILBOX_JOB_EXPUNGE:
		mailbox_expunge_run(j);
		break;
	case MAILBOX_JOB_COPY:
	case MAILBOX_JOB_MOVE:
		mailbox_copy_run(j);
		break;
	case MAILBOX_JOB_APPEND:
		j->r = mailbox_append_commit_all(j->root, j->name, j->v, j->n, &j->validity,
						 j->err, sizeof j->err);
		break;
	}
}

/* ---- IDLE ---------------------------------------------------------------------- */

/* Watches on dir's new/ and cur/ in the inotify instance fd (their
 * descriptors into wds, when given); 0, or -1 with err. */
static int mailbox_watch_add_dir(int fd, const char *dir, int wds[2], char *err, size_t errsz)
{
	static const char *const subs[] = {"new", "cur"};
	for (size_t i = 0; i < ARRAY_LEN(subs); i++) {
		char *p = xasprintf("%s/%s", dir, subs[i]);
		int w = inotify_add_watch(fd, p,
					  IN_CREATE | IN_DELETE | IN_MOVED_FROM | IN_MOVED_TO |
					      IN_ATTRIB | IN_CLOSE_WRITE | IN_ONLYDIR);
		int e = errno;
		free(p);
		if (w < 0) {
			errfmt(err, errsz, "inotify on %s/%s: %s", dir, subs[i], strerror(e));
			return -1;
		}
		if (wds)
			wds[i] = w;
	}
	return 0;
}

int mailbox_watch_open(char *err, size_t errsz)
{
	int fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (fd < 0)
		errfmt(err, errsz, "inotify: %s", strerror(errno));
	return fd;
}

int mailbox_watch(struct mailbox *mb, char *err, size_t errsz)
{
	if (mb->watch_fd >= 0)
		return mb->watch_fd;
	int fd = mailbox_watch_open(err, errsz);
	if (fd < 0)
		return -1;
	if (mailbox_watch_add_dir(fd, mb->dir, NULL, err, errsz) < 0) {
		close(fd);
		return -1;
	}
	mb->watch_fd = fd;
	return fd;
}

int mailbox_watch_folder(int fd, const char *root, const char *name, int wds[2], char *err,
			 size_t errsz)
{
	if (!mailbox_name_valid(name)) {
		errfmt(err, errsz, "invalid folder name");
		return -1;
	}
	char *dir = mailbox_dir(root, name);
	int r = mailbox_watch_add_dir(fd, dir, wds, err, errsz);
	free(dir);
	return r;
}

size_t mailbox_watch_fd_read(int fd, int *wds, size_t max, bool *overflow)
{
	size_t n = 0;
	*overflow = false;
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t got = read(fd, buf, sizeof buf);
		if (got < 0 && errno == EINTR)
			continue;
		if (got <= 0)
			break;
		for (size_t off = 0; off + sizeof(struct inotify_event) <= (size_t)got;) {
			const struct inotify_event *ev = (const void *)(buf + off);
			off += sizeof *ev + ev->len;
			if (ev->mask & IN_Q_OVERFLOW)
				*overflow = true;
			bool seen = false;
			for (size_t i = 0; i < n && !seen; i++)
				seen = wds[i] == ev->wd;
			if (seen || ev->wd < 0)
				continue;
			if (n == max)
				*overflow = true; /* more than asked for: look at all */
			else
				wds[n++] = ev->wd;
		}
	}
	return n;
}

static bool mailbox_watch_fd_drain(int fd)
{
	bool any = false;
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		any = true;
	}
	return any;
}

bool mailbox_watch_drain(struct mailbox *mb)
{
	return mb->watch_fd >= 0 && mailbox_watch_fd_drain(mb->watch_fd);
}

void mailbox_unwatch(struct mailbox *mb)
{
	if (mb->watch_fd >= 0)
		close(mb->watch_fd);
	mb->watch_fd = -1;
}
