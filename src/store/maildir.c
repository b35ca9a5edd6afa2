/* maildir: the Maildir format (see maildir.h): where an address's Maildir
 * is, new unique names, and reading for POP3 and IMAP.  The files were
 * written by maildir_deliver with LF line ends and ",S=<size>,W=<size with
 * CRLF>" in their names; files written by other tools are read too (CRLF or
 * LF, no W=: the size is then counted). */
#include "store/maildir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>

#include "lib/strbuf.h"
#include "lib/util.h"

enum {
	MAILDIR_STREAM_BUF = 16 * 1024, /* bytes read from the file at a time */
	MAILDIR_COUNT_BUF = 16 * 1024,
	MAILDIR_HOST_MAX = 256,         /* of gethostname(2)'s answer */
	MAILDIR_TMP_STALE = 36 * 3600,  /* a tmp/ file this old is left over (maildir(5)) */
	MAILDIR_TMP_SWEEP_MAX = 1000,   /* tmp/ entries looked at per sweep */
};

static const char *const maildir_subs[] = {"new", "cur"};

/* ---- folders ----------------------------------------------------------- */

int maildir_create(const char *dir, char *err, size_t errsz)
{
	static const char *const subs[] = {"tmp", "new", "cur"};
	if (mkdir_p(dir, 0700) < 0) {
		errfmt(err, errsz, "cannot create %s: %s", dir, strerror(errno));
		return -1;
	}
	for (size_t i = 0; i < ARRAY_LEN(subs); i++) {
		char *p = xasprintf("%s/%s", dir, subs[i]);
		int r = mkdir(p, 0700);
		if (r < 0 && errno != EEXIST) {
			errfmt(err, errsz, "cannot create %s: %s", p, strerror(errno));
			free(p);
			return -1;
		}
		free(p);
	}
	return 0;
}

int maildir_sync(const char *dir)
{
	int r = 0;
	for (size_t i = 0; i < ARRAY_LEN(maildir_subs); i++) {
		char *p = xasprintf("%s/%s", dir, maildir_subs[i]);
		if (fsync_dir(p) < 0 && errno != ENOENT)
			r = -1;
		free(p);
	}
	return r;
}

/* ---- the store's layout ------------------------------------------------ */

bool maildir_is_ctl(unsigned char c)
{
	return c < 0x20 || c == 0x7f;
}

/* '%', '/', a leading '.' and control bytes become %XX: every local part
 * gets its own folder, and none is hidden or leaves <domain>/. */
static char *maildir_encode_local(const char *local, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t cap = len * 3 + 1;
	char *out = xmalloc(cap);
	struct strbuf sb;
	strbuf_init(&sb, out, cap);
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)local[i];
		if (c == '%' || c == '/' || (i == 0 && c == '.') || maildir_is_ctl(c)) {
			char esc[3] = {'%', hex[c >> 4], hex[c & 15]};
			strbuf_add(&sb, esc, sizeof esc);
		} else {
			strbuf_addc(&sb, (char)c);
		}
	}
	if (!strbuf_ok(&sb))
		fatal("maildir_encode_local: buffer too small");
	return out;
}

/* The domain as a folder name: lower-cased; NULL when it could escape or
 * hide ("", ".", "..", a leading '.', '/', control bytes). */
static char *maildir_domain(const char *domain)
{
	if (domain[0] == '\0' || domain[0] == '.')
		return NULL;
	for (const char *p = domain; *p; p++)
		if (*p == '/' || maildir_is_ctl((unsigned char)*p))
			return NULL;
	return str_lower(xstrdup(domain));
}

char *maildir_path(const char *mailboxes, const char *address)
{
	const char *at = strrchr(address, '@');
	if (!at || at == address)
		return NULL;
	char *domain = maildir_domain(at + 1);
	if (!domain)
		return NULL;
	char *local = maildir_encode_local(address, (size_t)(at - address));
	char *path = xasprintf("%s/%s/%s", mailboxes, domain, local);
	free(domain);
	free(local);
	return path;
}

/* ---- names ------------------------------------------------------------- */

static bool maildir_is_digit(char c)
{
	return c >= '0' && c <= '9';
}

static bool maildir_is_upper(char c)
{
	return c >= 'A' && c <= 'Z';
}

/* Length of the name without its ":INFO". */
static size_t maildir_base_len(const char *name)
{
	return strcspn(name, ":");
}

size_t maildir_unique_len(const char *name)
{
	size_t base = maildir_base_len(name);
	for (size_t i = 0; i + 2 < base; i++)
		if (name[i] == ',' && maildir_is_upper(name[i + 1]) && name[i + 2] == '=')
			return i;
	return base;
}

bool maildir_name_field(const char *name, char key, uint64_t *out)
{
	size_t base = maildir_base_len(name);
	for (size_t i = 0; i + 3 < base; i++) {
		if (name[i] != ',' || name[i + 1] != key || name[i + 2] != '=' ||
		    !maildir_is_digit(name[i + 3]))
			continue;
		uint64_t v = 0;
		size_t j = i + 3;
		for (; j < base && maildir_is_digit(name[j]); j++) {
			unsigned d = (unsigned)(name[j] - '0');
			if (v > (UINT64_MAX - d) / 10)
				return false; /* no size that large */
			v = v * 10 + d;
		}
		if (j < base && name[j] != ',')
			return false;
		*out = v;
		return true;
	}
	return false;
}

static void maildir_sha256_hex(const char *data, size_t len, char out[MAILDIR_UID_MAX + 1])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	if (!EVP_Digest(data, len, md, &mdlen, EVP_sha256(), NULL) || mdlen * 2 > MAILDIR_UID_MAX)
		fatal("maildir: SHA-256 failed");
	for (unsigned i = 0; i < mdlen; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[2 * mdlen] = '\0';
}

void maildir_uid(const char *name, char out[MAILDIR_UID_MAX + 1])
{
	size_t n = maildir_unique_len(name);
	bool safe = n > 0 && n <= MAILDIR_UID_MAX;
	for (size_t i = 0; safe && i < n; i++) {
		unsigned char c = (unsigned char)name[i];
		safe = c >= 0x21 && c <= 0x7e;
	}
	if (!safe) {
		maildir_sha256_hex(name, n, out);
		return;
	}
	memcpy(out, name, n);
	out[n] = '\0';
}

void maildir_escape_host(const char *host, char *out, size_t outsz)
{
	struct strbuf sb;
	strbuf_init(&sb, out, outsz);
	for (const char *p = host; *p; p++) {
		bool ok = *p == '/'   ? strbuf_adds(&sb, "\\057")
			  : *p == ':' ? strbuf_adds(&sb, "\\072")
				      : strbuf_addc(&sb, *p);
		if (!ok)
			break; /* cut before the character that does not fit */
	}
}

static struct {
	pthread_once_t once;
	long pid;
	time_t started;         /* before any name this process makes */
	char host[MAILDIR_HOST_MAX * 4 + 1];
} maildir_self = {.once = PTHREAD_ONCE_INIT};

/* The process's ID and host name, read once: not two system calls for
 * every new name. */
static void maildir_self_init(void)
{
	char host[MAILDIR_HOST_MAX + 1];
	if (gethostname(host, sizeof host - 1) < 0 || host[0] == '\0')
		memcpy(host, "localhost", sizeof "localhost");
	host[sizeof host - 1] = '\0';
	maildir_self.pid = (long)getpid();
	maildir_self.started = time(NULL);
	maildir_escape_host(host, maildir_self.host, sizeof maildir_self.host);
}

char *maildir_unique_name(long long when)
{
	static uint64_t count;
	pthread_once(&maildir_self.once, maildir_self_init);
	struct timespec ts;
	if (clock_gettime(CLOCK_REALTIME, &ts) < 0)
		fatal("clock_gettime: %s", strerror(errno));
	unsigned char rnd[4];
	if (RAND_bytes(rnd, sizeof rnd) != 1)
		fatal("maildir: no random bytes for a file name");
	uint32_t r = (uint32_t)rnd[0] << 24 | (uint32_t)rnd[1] << 16 | (uint32_t)rnd[2] << 8 | rnd[3];
	uint64_t q = __atomic_add_fetch(&count, 1, __ATOMIC_RELAXED);
	if (when <= 0)
		when = (long long)ts.tv_sec;
	return xasprintf("%lld.M%06ldP%ldQ%lluR%08x.%s", when, ts.tv_nsec / 1000, maildir_self.pid,
			 (unsigned long long)q, (unsigned)r, maildir_self.host);
}

char *maildir_spooled_name(long long arrival, const char *id, size_t rcpt)
{
	pthread_once(&maildir_self.once, maildir_self_init);
	return xasprintf("%lld.D%sR%zu.%s", arrival, id, rcpt, maildir_self.host);
}

bool maildir_has_unique(const char *dir, const char *unique)
{
	size_t ulen = strlen(unique);
	for (size_t i = 0; i < ARRAY_LEN(maildir_subs); i++) {
		char *path = xasprintf("%s/%s", dir, maildir_subs[i]);
		DIR *d = opendir(path);
		free(path);
		if (!d)
			continue;
		bool found = false;
		const struct dirent *de;
		while (!found && (de = readdir(d)))
			found = maildir_unique_len(de->d_name) == ulen &&
				memcmp(de->d_name, unique, ulen) == 0;
		closedir(d);
		if (found)
			return true;
	}
	return false;
}

/* ---- leftovers in tmp/ ----------------------------------------------------- */

/* p past at least min (at most max) characters of set; NULL when fewer. */
static const char *maildir_skip_run(const char *p, const char *set, size_t min, size_t max)
{
	size_t n = 0;
	while (n < max && p[n] && strchr(set, p[n]))
		n++;
	return n >= min ? p + n : NULL;
}

/* The PID in a name that maildir_unique_name() made on this host,
 * "WHEN.M<usec>P<pid>Q<count>R<8 hex>.<host>"; -1 for any other name. */
static long maildir_own_name_pid(const char *name)
{
	static const char digits[] = "0123456789";
	const char *p = maildir_skip_run(name, digits, 1, 20);
	if (!p || strncmp(p, ".M", 2) != 0 || !(p = maildir_skip_run(p + 2, digits, 6, 6)) ||
	    *p != 'P')
		return -1;
	const char *pid = p + 1;
	if (!(p = maildir_skip_run(pid, digits, 1, 10)) || *p != 'Q' ||
	    !(p = maildir_skip_run(p + 1, digits, 1, 20)) || *p != 'R' ||
	    !(p = maildir_skip_run(p + 1, "0123456789abcdef", 8, 8)) || *p != '.' ||
	    strcmp(p + 1, maildir_self.host) != 0)
		return -1;
	return strtol(pid, NULL, 10);
}

/* Is a process with this PID running?  Asked of /proc (seccomp lets the
 * daemon signal only itself); unsure counts as running. */
static bool maildir_pid_running(long pid)
{
	char path[32];
	struct stat st;
	if (!bsnprintf(path, sizeof path, "/proc/%ld", pid))
		return true;
	return stat(path, &st) == 0 || errno != ENOENT;
}

bool maildir_tmp_leftover(const char *name, const struct stat *st, time_t now)
{
	if (!S_ISREG(st->st_mode))
		return false;
	if (now - st->st_mtime > MAILDIR_TMP_STALE && now - st->st_atime > MAILDIR_TMP_STALE)
		return true;
	pthread_once(&maildir_self.once, maildir_self_init);
	long pid = maildir_own_name_pid(name);
	if (pid <= 0)
		return false;
	if (pid != maildir_self.pid)
		return !maildir_pid_running(pid);
	/* this PID before this process started: a restarted container gives
	 * the daemon the PID it had (a second of slack for the clocks) */
	return st->st_mtime + 1 < maildir_self.started;
}

size_t maildir_sweep_tmp(const char *dir)
{
	char *path = xasprintf("%s/tmp", dir);
	DIR *d = opendir(path);
	free(path);
	if (!d)
		return 0;
	time_t now = time(NULL);
	size_t removed = 0;
	struct dirent *de;
	for (int seen = 0; seen < MAILDIR_TMP_SWEEP_MAX && (de = readdir(d)); seen++) {
		struct stat st;
		if (de->d_name[0] == '.' ||
		    fstatat(dirfd(d), de->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 ||
		    !maildir_tmp_leftover(de->d_name, &st, now))
			continue;
		if (unlinkat(dirfd(d), de->d_name, 0) == 0)
			removed++;
	}
	closedir(d);
	return removed;
}

static long long maildir_name_time(const char *name)
{
	long long t = 0;
	for (const char *p = name; maildir_is_digit(*p) && t < 100000000000000LL; p++)
		t = t * 10 + (*p - '0');
	return t;
}

char *maildir_msg_path(const char *dir, const struct maildir_msg *m)
{
	return xasprintf("%s/%s/%s", dir, m->in_new ? "new" : "cur", m->name);
}

int maildir_move_to_cur(const char *dir, struct maildir_msg *m)
{
	if (!m->in_new)
		return 0;
	bool has_info = strchr(m->name, ':') != NULL;
	char *name = has_info ? xstrdup(m->name) : xasprintf("%s:2,", m->name);
	char *from = xasprintf("%s/new/%s", dir, m->name);
	char *to = xasprintf("%s/cur/%s", dir, name);
	int r = rename(from, to);
	int saved = errno;
	free(from);
	free(to);
	if (r < 0) {
		free(name);
		errno = saved;
		return -1;
	}
	free(m->name);
	m->name = name;
	m->in_new = false;
	return 0;
}

int maildir_delete(const char *dir, const struct maildir_msg *m)
{
	char *path = maildir_msg_path(dir, m);
	int r = unlink(path);
	int saved = errno;
	free(path);
	if (r < 0 && saved == ENOENT)
		return 0;
	errno = saved;
	return r;
}

/* ---- listing ----------------------------------------------------------- */

void maildir_list_free(struct maildir_list *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->msgs[i].name);
	free(l->msgs);
	memset(l, 0, sizeof *l);
}

static int maildir_cmp_time(const void *a, const void *b)
{
	const struct maildir_msg *x = a, *y = b;
	if (x->time != y->time)
		return x->time < y->time ? -1 : 1;
	return strcmp(x->uid, y->uid);
}

static int maildir_cmp_uid(const void *a, const void *b)
{
	const struct maildir_msg *const *x = a, *const *y = b;
	return strcmp((*x)->uid, (*y)->uid);
}

/* RFC 1939 §7: unique-ids are unique within the maildrop.  Two files with
 * one unique part (a copy, a tool's mistake) keep the first UID; the
 * others get one made of their folder and whole name. */
static void maildir_unique_uids(struct maildir_list *l)
{
	if (l->n < 2)
		return;
	struct maildir_msg **by_uid = xcalloc(l->n, sizeof *by_uid);
	for (size_t i = 0; i < l->n; i++)
		by_uid[i] = &l->msgs[i];
	qsort(by_uid, l->n, sizeof *by_uid, maildir_cmp_uid);
	for (size_t i = 1; i < l->n; i++) {
		if (strcmp(by_uid[i]->uid, by_uid[i - 1]->uid) != 0)
			continue;
		char *full = xasprintf("%s/%s", by_uid[i]->in_new ? "new" : "cur", by_uid[i]->name);
		maildir_sha256_hex(full, strlen(full), by_uid[i]->uid);
		free(full);
	}
	free(by_uid);
}

static bool maildir_is_regular(int dfd, const struct dirent *de)
{
	if (de->d_type == DT_REG)
		return true;
	if (de->d_type != DT_UNKNOWN)
		return false;
	struct stat st;
	return fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode);
}

int maildir_each_file(const char *dir, bool in_new, maildir_file_fn fn, void *arg, char *err,
		      size_t errsz)
{
	char *path = xasprintf("%s/%s", dir, in_new ? "new" : "cur");
	DIR *d = opendir(path);
	if (!d) {
		int e = errno;
		if (e != ENOENT)
			errfmt(err, errsz, "cannot open %s: %s", path, strerror(e));
		free(path);
		return e == ENOENT ? 0 : -1;
	}
	int r = 0;
	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de) {
			if (errno) {
				errfmt(err, errsz, "cannot read %s: %s", path, strerror(errno));
				r = -1;
			}
			break;
		}
		if (de->d_name[0] == '.' || !maildir_is_regular(dirfd(d), de))
			continue;
		if (fn(arg, de->d_name, in_new, err, errsz) < 0) {
			r = -1;
			break;
		}
	}
	closedir(d);
	free(path);
	return r;
}

struct maildir_read_state {
	struct maildir_list *l;
	size_t *cap;
};

static int maildir_add_file(void *arg, const char *name, bool in_new, char *err, size_t errsz)
{
	struct maildir_read_state *st = arg;
	struct maildir_msg *m = xgrow(&st->l->msgs, &st->l->n, st->cap, sizeof *m);
	m->name = xstrdup(name);
	m->in_new = in_new;
	return 0;
}

/* Read one folder's entries into l.  ENOENT: an empty folder. */
static int maildir_read_folder(const char *dir, bool in_new, struct maildir_list *l, size_t *cap,
			       char *err, size_t errsz)
{
	struct maildir_read_state st = {l, cap};
	return maildir_each_file(dir, in_new, maildir_add_file, &st, err, errsz);
}

/* Size, time and UID of each entry; moves new/ into cur/ when asked.
 * Entries that vanished are dropped. */
static void maildir_complete(const char *dir, unsigned flags, struct maildir_list *l)
{
	size_t o = 0;
	for (size_t i = 0; i < l->n; i++) {
		struct maildir_msg m = l->msgs[i];
		bool keep = true;
		bool move = (flags & MAILDIR_SCAN_MOVE_NEW) && m.in_new;
		if (move && maildir_move_to_cur(dir, &m) < 0 && errno == ENOENT)
			keep = false; /* taken away meanwhile; another error: read it from new/ */
		if (keep && !maildir_name_field(m.name, 'W', &m.size)) {
			char *path = maildir_msg_path(dir, &m);
			keep = maildir_count_size(path, &m.size) == 0;
			free(path);
		}
		if (!keep) {
			free(m.name);
			continue;
		}
		m.time = maildir_name_time(m.name);
		maildir_uid(m.name, m.uid);
		l->total += m.size;
		l->msgs[o++] = m;
	}
	l->n = o;
}

int maildir_scan(const char *dir, unsigned flags, struct maildir_list *out, char *err,
		 size_t errsz)
{
	struct maildir_list l = {0};
	size_t cap = 0;
	for (size_t i = 0; i < ARRAY_LEN(maildir_subs); i++) {
		if (maildir_read_folder(dir, i == 0, &l, &cap, err, errsz) < 0) {
			maildir_list_free(&l);
			*out = l;
			return -1;
		}
	}
	maildir_complete(dir, flags, &l);
	if (l.n > 1)
		qsort(l.msgs, l.n, sizeof *l.msgs, maildir_cmp_time);
	maildir_unique_uids(&l);
	*out = l;
	return 0;
}

/* ---- streaming --------------------------------------------------------- */

struct maildir_stream {
	int fd;
	unsigned flags;
	long body_lines;           /* < 0: all */
	long body_sent;            /* body lines sent so far */
	bool in_body;              /* past the blank line after the header */
	bool line_start;           /* the next byte starts a line */
	bool line_blank;           /* the current line holds nothing but CR so far */
	bool prev_cr;
	bool eof;
	bool done;
	bool cut;                  /* ended by body_lines before the end of the file */
	size_t pos, len;
	char buf[MAILDIR_STREAM_BUF];
};

struct maildir_stream *maildir_stream_fdopen(int fd, unsigned flags, long body_lines)
{
	struct maildir_stream *s = xcalloc(1, sizeof *s);
	s->fd = fd;
	s->flags = flags;
	s->body_lines = body_lines;
	s->line_start = true;
	return s;
}

struct maildir_stream *maildir_stream_open(const char *path, unsigned flags, long body_lines)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return NULL;
	return maildir_stream_fdopen(fd, flags, body_lines);
}

void maildir_stream_close(struct maildir_stream *s)
{
	if (!s)
		return;
	close(s->fd);
	free(s);
}

static int maildir_stream_fill(struct maildir_stream *s)
{
	for (;;) {
		ssize_t n = read(s->fd, s->buf, sizeof s->buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -1;
		s->pos = 0;
		s->len = (size_t)n;
		s->eof = n == 0;
		return 0;
	}
}

/* A line ended (its LF was written). */
static void maildir_stream_line_end(struct maildir_stream *s)
{
	if (!s->in_body && s->line_blank)
		s->in_body = true; /* the blank line ends the header (RFC 5322 §2.1) */
	else if (s->in_body)
		s->body_sent++;
	s->line_start = true;
	s->prev_cr = false;
}

ssize_t maildir_stream_read(struct maildir_stream *s, char *out, size_t outsz)
{
	if (outsz < MAILDIR_STREAM_MIN)
		fatal("maildir_stream_read: buffer of %zu bytes", outsz);
	size_t o = 0;
	/* every step below writes at most 2 bytes */
	while (!s->done && o + 2 <= outsz) {
		if (s->pos == s->len) {
			if (!s->eof && maildir_stream_fill(s) < 0)
				return -1;
			if (s->eof) {
				/* an unterminated last line still ends in CRLF */
				if (!s->line_start) {
					if (!s->prev_cr)
						out[o++] = '\r';
					out[o++] = '\n';
				}
				s->done = true;
				break;
			}
			continue;
		}
		if (s->line_start && s->in_body && s->body_lines >= 0 &&
		    s->body_sent >= s->body_lines) {
			s->done = true; /* TOP: enough body lines */
			s->cut = true;
			break;
		}
		char c = s->buf[s->pos++];
		if (s->line_start) {
			s->line_start = false;
			s->line_blank = true;
			if (c == '.' && (s->flags & MAILDIR_STREAM_DOTSTUFF))
				out[o++] = '.'; /* RFC 1939 §3: byte-stuffing */
		}
		if (c == '\n') {
			if (!s->prev_cr)
				out[o++] = '\r';
			out[o++] = '\n';
			maildir_stream_line_end(s);
			continue;
		}
		out[o++] = c;
		s->prev_cr = c == '\r';
		if (c != '\r')
			s->line_blank = false;
	}
	return (ssize_t)o;
}

bool maildir_stream_whole(const struct maildir_stream *s)
{
	return s->done && !s->cut;
}

int maildir_count_size(const char *path, uint64_t *out)
{
	struct maildir_stream *s = maildir_stream_open(path, 0, -1);
	if (!s)
		return -1;
	char *buf = xmalloc(MAILDIR_COUNT_BUF);
	uint64_t total = 0;
	ssize_t n;
	while ((n = maildir_stream_read(s, buf, MAILDIR_COUNT_BUF)) > 0)
		total += (uint64_t)n;
	int saved = errno;
	free(buf);
	maildir_stream_close(s);
	if (n < 0) {
		errno = saved;
		return -1;
	}
	*out = total;
	return 0;
}

/* ---- the mailbox lock -------------------------------------------------- */

struct maildir_lock {
	struct maildir_lock *next;
	dev_t dev;
	ino_t ino;
	int fd;
};

/* Locks held by this process (the event loop's thread only). */
static struct maildir_lock *maildir_locks;

static bool maildir_lock_held(dev_t dev, ino_t ino)
{
	for (const struct maildir_lock *l = maildir_locks; l; l = l->next)
		if (l->dev == dev && l->ino == ino)
			return true;
	return false;
}

enum maildir_lock_result maildir_lock(const char *dir, struct maildir_lock **out, char *err,
				      size_t errsz)
{
	*out = NULL;
	char *path = xasprintf("%s/%s", dir, MAILDIR_LOCK_FILE);
	int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0) {
		errfmt(err, errsz, "cannot open %s: %s", path, strerror(errno));
		if (fd >= 0)
			close(fd);
		free(path);
		return MAILDIR_LOCK_ERROR;
	}
	if (maildir_lock_held(st.st_dev, st.st_ino)) {
		close(fd);
		free(path);
		return MAILDIR_LOCK_BUSY;
	}
	/* an OFD lock: it belongs to this open file, so another process,
	 * another node sharing the folder, or another open here cannot take it
	 * until the descriptor is closed, which a crash does too. */
	if (file_lock(fd, false) < 0) {
		enum maildir_lock_result r = MAILDIR_LOCK_BUSY;
		if (errno != EWOULDBLOCK) {
			errfmt(err, errsz, "cannot lock %s: %s", path, strerror(errno));
			r = MAILDIR_LOCK_ERROR;
		}
		close(fd);
		free(path);
		return r;
	}
	free(path);
	struct maildir_lock *l = xcalloc(1, sizeof *l);
	l->dev = st.st_dev;
	l->ino = st.st_ino;
	l->fd = fd;
	l->next = maildir_locks;
	maildir_locks = l;
	*out = l;
	return MAILDIR_LOCK_OK;
}

void maildir_unlock(struct maildir_lock *l)
{
	if (!l)
		return;
	for (struct maildir_lock **pp = &maildir_locks; *pp; pp = &(*pp)->next) {
		if (*pp == l) {
			*pp = l->next;
			break;
		}
	}
	close(l->fd); /* releases the lock */
	free(l);
}
