/* userdb: the user database, one SCRAM-SHA-256 record per line (RFC 5802
 * §3, RFC 7677): salted, iterated keys only, never a password.  Lookups
 * are a binary search over the records sorted by address; edits lock,
 * rewrite a temporary file with mode 0600, fsync and rename. */
#include "auth/userdb.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "lib/util.h"

/* Named limits of the file format. */
enum {
	USERDB_SALT_LEN = 16,           /* bytes of fresh salt per record */
	USERDB_ITERATIONS_MIN = 1,
	USERDB_ITERATIONS_MAX = 10000000, /* bounds the cost of one login */
	USERDB_LINE_MAX = 4096,         /* a record is ~200 bytes */
	USERDB_B64_MAX = 4 * ((USERDB_SALT_MAX + 2) / 3), /* longest field */
	USERDB_LOCAL_MAX = 64,          /* RFC 5321 §4.5.3.1.1 */
	USERDB_DOMAIN_MAX = 255,        /* RFC 5321 §4.5.3.1.2 */
	USERDB_LABEL_MAX = 63,          /* RFC 1035 §2.3.4 */
	USERDB_MESSAGE_MAX = 1024,      /* one parse error, FILE:LINE:COL aside */
};

static const char userdb_mech[] = "SCRAM-SHA-256";

/* A record and the line it came from (for duplicate messages). */
struct userdb_entry {
	struct user_record rec;
	unsigned line;
};

struct userdb {
	struct userdb_entry *entries;   /* sorted by address */
	size_t n, cap;
};

/* ---- key derivation (RFC 5802 §3) ------------------------------------- */

static int userdb_hmac(const uint8_t *key, const char *data, uint8_t out[USERDB_KEY_LEN])
{
	unsigned int len = 0;
	if (!HMAC(EVP_sha256(), key, USERDB_KEY_LEN, (const unsigned char *)data, strlen(data),
		  out, &len) ||
	    len != USERDB_KEY_LEN)
		return -1;
	return 0;
}

int userdb_derive_keys(const char *password, size_t password_len, const uint8_t *salt,
		       size_t salt_len, unsigned iterations, uint8_t stored_key[USERDB_KEY_LEN],
		       uint8_t server_key[USERDB_KEY_LEN])
{
	if (password_len > INT_MAX || salt_len == 0 || salt_len > USERDB_SALT_MAX ||
	    iterations < USERDB_ITERATIONS_MIN || iterations > USERDB_ITERATIONS_MAX)
		return -1;
	uint8_t salted[USERDB_KEY_LEN], client_key[USERDB_KEY_LEN];
	int r = -1;
	if (PKCS5_PBKDF2_HMAC(password, (int)password_len, salt, (int)salt_len, (int)iterations,
			      EVP_sha256(), USERDB_KEY_LEN, salted) != 1)
		goto out;
	if (userdb_hmac(salted, "Client Key", client_key) < 0 ||
	    userdb_hmac(salted, "Server Key", server_key) < 0)
		goto out;
	if (!SHA256(client_key, sizeof client_key, stored_key))
		goto out;
	r = 0;
out:
	OPENSSL_cleanse(salted, sizeof salted);
	OPENSSL_cleanse(client_key, sizeof client_key);
	return r;
}

int userdb_make_record(const char *address, const char *password, size_t password_len,
		       unsigned iterations, struct user_record *out)
{
	memset(out, 0, sizeof *out);
	out->iterations = iterations;
	out->salt_len = USERDB_SALT_LEN;
	if (RAND_bytes(out->salt, USERDB_SALT_LEN) != 1 ||
	    userdb_derive_keys(password, password_len, out->salt, out->salt_len, iterations,
			       out->stored_key, out->server_key) < 0) {
		user_record_clear(out);
		return -1;
	}
	out->address = str_lower(xstrdup(address));
	return 0;
}

bool userdb_verify_password(const struct user_record *rec, const char *password,
			    size_t password_len)
{
	uint8_t stored[USERDB_KEY_LEN], server[USERDB_KEY_LEN];
	bool ok = userdb_derive_keys(password, password_len, rec->salt, rec->salt_len,
				     rec->iterations, stored, server) == 0 &&
		  CRYPTO_memcmp(stored, rec->stored_key, USERDB_KEY_LEN) == 0;
	OPENSSL_cleanse(stored, sizeof stored);
	OPENSSL_cleanse(server, sizeof server);
	return ok;
}

void user_record_clear(struct user_record *rec)
{
	free(rec->address);
	OPENSSL_cleanse(rec, sizeof *rec);
}

/* ---- addresses -------------------------------------------------------- */

/* RFC 5322 atext, less '/' so that a local part can never name a path
 * when it becomes a Maildir folder; UTF-8 bytes are allowed (RFC 6531). */
static bool userdb_is_atext(unsigned char c)
{
	if (c >= 0x80)
		return true;
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr("!#$%&'*+-=?^_`{|}~", c) != NULL;
}

/* Dot-atom (RFC 5322 §3.2.3): atoms separated by single dots. */
static const char *userdb_check_local(const char *s, size_t len)
{
	if (len == 0)
		return "empty local part";
	if (len > USERDB_LOCAL_MAX)
		return "local part longer than 64 characters";
	for (size_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.') {
			if (i == 0 || i + 1 == len || s[i + 1] == '.')
				return "misplaced '.' in local part";
		} else if (!userdb_is_atext(c)) {
			return "invalid character in local part";
		}
	}
	return NULL;
}

static bool userdb_is_label_char(unsigned char c)
{
	return c >= 0x80 || c == '-' || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9');
}

/* Labels of letters, digits, '-' (not at either end) or UTF-8 bytes. */
static const char *userdb_check_domain(const char *s)
{
	size_t len = strlen(s);
	if (len == 0)
		return "empty domain";
	if (len > USERDB_DOMAIN_MAX)
		return "domain longer than 255 characters";
	size_t label = 0;
	for (size_t i = 0; i <= len; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '.' || c == '\0') {
			if (label == 0)
				return "empty label in domain";
			if (s[i - 1] == '-')
				return "domain label ends with '-'";
			label = 0;
			continue;
		}
		if (!userdb_is_label_char(c))
			return "invalid character in domain";
		if (label == 0 && c == '-')
			return "domain label starts with '-'";
		if (++label > USERDB_LABEL_MAX)
			return "domain label longer than 63 characters";
	}
	return NULL;
}

const char *userdb_check_address(const char *address)
{
	const char *at = strchr(address, '@');
	if (!at)
		return "missing '@'";
	if (strchr(at + 1, '@'))
		return "more than one '@'";
	const char *why = userdb_check_local(address, (size_t)(at - address));
	return why ? why : userdb_check_domain(at + 1);
}

/* ---- the in-memory database ------------------------------------------- */

static int userdb_entry_cmp(const void *a, const void *b)
{
	const struct userdb_entry *x = a, *y = b;
	return strcasecmp(x->rec.address, y->rec.address);
}

static int userdb_key_cmp(const void *key, const void *elem)
{
	const struct userdb_entry *e = elem;
	return strcasecmp(key, e->rec.address);
}

static struct userdb_entry *userdb_lookup(const struct userdb *db, const char *address)
{
	if (!db || db->n == 0)
		return NULL;
	return bsearch(address, db->entries, db->n, sizeof *db->entries, userdb_key_cmp);
}

const struct user_record *userdb_find(const struct userdb *db, const char *address)
{
	const struct userdb_entry *e = userdb_lookup(db, address);
	return e ? &e->rec : NULL;
}

size_t userdb_count(const struct userdb *db)
{
	return db ? db->n : 0;
}

const struct user_record *userdb_at(const struct userdb *db, size_t i)
{
	return db && i < db->n ? &db->entries[i].rec : NULL;
}

void userdb_free(struct userdb *db)
{
	if (!db)
		return;
	for (size_t i = 0; i < db->n; i++)
		user_record_clear(&db->entries[i].rec);
	free(db->entries);
	free(db);
}

/* Room for one more entry at the end; returns it, zeroed. */
static struct userdb_entry *userdb_grow(struct userdb *db)
{
	return xgrow(&db->entries, &db->n, &db->cap, sizeof *db->entries);
}

/* Insert rec (taken over) at its sorted place. */
static void userdb_insert(struct userdb *db, struct user_record *rec)
{
	userdb_grow(db);
	size_t i = db->n - 1;
	while (i > 0 && strcasecmp(db->entries[i - 1].rec.address, rec->address) > 0) {
		db->entries[i] = db->entries[i - 1];
		i--;
	}
	db->entries[i].rec = *rec;
	db->entries[i].line = 0;
	memset(rec, 0, sizeof *rec);
}

static void userdb_remove(struct userdb *db, struct userdb_entry *e)
{
	size_t i = (size_t)(e - db->entries);
	user_record_clear(&e->rec);
	memmove(e, e + 1, (db->n - i - 1) * sizeof *e);
	db->n--;
}

/* ---- parsing ---------------------------------------------------------- */

/* Where parsing stands, for "FILE:LINE:COL: message". */
struct userdb_parse {
	const char *path;
	unsigned line;
	const char *start;      /* the line's first byte */
	FILE *errout;
};

static int userdb_error(const struct userdb_parse *p, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int userdb_error(const struct userdb_parse *p, const char *at, const char *fmt, ...)
{
	char msg[USERDB_MESSAGE_MAX];
	va_list ap;
	va_start(ap, fmt);
	verrfmt(msg, sizeof msg, fmt, ap); /* a cut message ends in "..." */
	va_end(ap);
	report(p->errout, "%s:%u:%u: %s\n", p->path, p->line, (unsigned)(at - p->start) + 1, msg);
	return -1;
}

/* Decode a padded base64 field of at most max bytes; -1 when malformed.
 * EVP_DecodeBlock() counts the '=' padding as zero bytes, so subtract it. */
static int userdb_b64_decode(const char *in, size_t inlen, uint8_t *out, size_t max,
			     size_t *outlen)
{
	if (inlen == 0 || inlen % 4 != 0 || inlen > USERDB_B64_MAX)
		return -1;
	size_t pad = 0;
	for (size_t i = 0; i < inlen; i++) {
		unsigned char c = (unsigned char)in[i];
		bool b64 = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
			   (c >= '0' && c <= '9') || c == '+' || c == '/';
		if (c == '=' && i + 2 >= inlen)
			pad++;
		else if (!b64 || pad > 0)
			return -1;
	}
	uint8_t buf[USERDB_B64_MAX];
	int n = EVP_DecodeBlock(buf, (const unsigned char *)in, (int)inlen);
	if (n < 0 || (size_t)n < pad || (size_t)n - pad > max) {
		OPENSSL_cleanse(buf, sizeof buf);
		return -1;
	}
	*outlen = (size_t)n - pad;
	memcpy(out, buf, *outlen);
	OPENSSL_cleanse(buf, sizeof buf);
	return 0;
}

static int userdb_parse_iterations(const char *s, size_t len, unsigned *out)
{
	unsigned long v = 0;
	if (len == 0 || len > 9)
		return -1;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -1;
		v = v * 10 + (unsigned long)(s[i] - '0');
	}
	if (v < USERDB_ITERATIONS_MIN || v > USERDB_ITERATIONS_MAX)
		return -1;
	*out = (unsigned)v;
	return 0;
}

enum { USERDB_NFIELDS = 6, USERDB_QUOTA_FIELD = 6, USERDB_NFIELDS_MAX = 7 };

/* Split the line at ':' into six fields, and the optional seventh (the
 * user's quota): *n of them. */
static int userdb_split(const struct userdb_parse *p, const char *line, const char *f[],
			size_t flen[], size_t *n)
{
	const char *s = line;
	for (*n = 0; *n < USERDB_NFIELDS_MAX; (*n)++) {
		const char *end = strchr(s, ':');
		if (!end)
			end = s + strlen(s);
		f[*n] = s;
		flen[*n] = (size_t)(end - s);
		if (!*end) {
			(*n)++;
			break;
		}
		s = end + 1;
	}
	if (*n < USERDB_NFIELDS)
		return userdb_error(p, line + strlen(line),
				    "expected 6 fields separated by ':', found %zu", *n);
	const char *extra = strchr(f[*n - 1], ':');
	if (extra)
		return userdb_error(p, extra, "unexpected ':' after the quota");
	return 0;
}

/* A number of at most 19 digits in f (len octets). */
static bool userdb_parse_u64(const char *f, size_t len, uint64_t *out)
{
	if (len == 0 || len > 19)
		return false;
	uint64_t v = 0;
	for (size_t i = 0; i < len; i++) {
		if (f[i] < '0' || f[i] > '9')
			return false;
		v = v * 10 + (uint64_t)(f[i] - '0');
	}
	*out = v;
	return true;
}

/* The quota field: "BYTES,MESSAGES" (0: no limit on that one). */
static int userdb_parse_quota(const struct userdb_parse *p, const char *f, size_t len,
			      struct user_record *rec)
{
	const char *comma = memchr(f, ',', len);
	if (!comma || !userdb_parse_u64(f, (size_t)(comma - f), &rec->quota_bytes) ||
	    !userdb_parse_u64(comma + 1, len - (size_t)(comma + 1 - f), &rec->quota_messages))
		return userdb_error(p, f, "quota is not BYTES,MESSAGES");
	rec->quota_set = true;
	return 0;
}

static int userdb_parse_key(const struct userdb_parse *p, const char *f, size_t len,
			    const char *what, uint8_t key[USERDB_KEY_LEN])
{
	size_t n = 0;
	if (userdb_b64_decode(f, len, key, USERDB_KEY_LEN, &n) < 0 || n != USERDB_KEY_LEN)
		return userdb_error(p, f, "%s is not %d bytes of base64", what, USERDB_KEY_LEN);
	return 0;
}

/* Parse one record line into rec (address allocated on success). */
static int userdb_parse_record(const struct userdb_parse *p, const char *line,
			       struct user_record *rec)
{
	const char *f[USERDB_NFIELDS_MAX];
	size_t len[USERDB_NFIELDS_MAX], n;
	if (userdb_split(p, line, f, len, &n) < 0)
		return -1;
	char *address = xstrndup(f[0], len[0]);
	const char *why = userdb_check_address(address);
	free(address);
	if (why)
		return userdb_error(p, f[0], "invalid address: %s", why);
	if (len[1] != strlen(userdb_mech) || strncmp(f[1], userdb_mech, len[1]) != 0)
		return userdb_error(p, f[1], "unknown scheme, expected %s", userdb_mech);
	if (userdb_parse_iterations(f[2], len[2], &rec->iterations) < 0)
		return userdb_error(p, f[2], "iteration count must be a number from %d to %d",
				    USERDB_ITERATIONS_MIN, USERDB_ITERATIONS_MAX);
	if (userdb_b64_decode(f[3], len[3], rec->salt, USERDB_SALT_MAX, &rec->salt_len) < 0 ||
	    rec->salt_len == 0)
		return userdb_error(p, f[3], "salt is not 1 to %d bytes of base64",
				    USERDB_SALT_MAX);
	if (userdb_parse_key(p, f[4], len[4], "stored key", rec->stored_key) < 0 ||
	    userdb_parse_key(p, f[5], len[5], "server key", rec->server_key) < 0)
		return -1;
	if (n > USERDB_QUOTA_FIELD &&
	    userdb_parse_quota(p, f[USERDB_QUOTA_FIELD], len[USERDB_QUOTA_FIELD], rec) < 0)
		return -1;
	rec->address = str_lower(xstrndup(f[0], len[0]));
	return 0;
}

/* One line of the file, without its line end: blank lines and lines
 * starting with '#' are skipped (`posthorn user` does not keep them). */
static int userdb_parse_line(struct userdb_parse *p, struct userdb *db, char *line, size_t len)
{
	p->start = line;
	if (memchr(line, '\0', len))
		return userdb_error(p, line + strlen(line), "NUL byte in line");
	if (len >= USERDB_LINE_MAX)
		return userdb_error(p, line, "line longer than %d bytes", USERDB_LINE_MAX - 1);
	if (len == 0 || line[0] == '#')
		return 0;
	struct user_record rec;
	memset(&rec, 0, sizeof rec);
	if (userdb_parse_record(p, line, &rec) < 0) {
		user_record_clear(&rec);
		return -1;
	}
	struct userdb_entry *e = userdb_grow(db);
	e->rec = rec;
	e->line = p->line;
	return 0;
}

/* After sorting, equal addresses are neighbours. */
static int userdb_check_duplicates(const struct userdb_parse *p, const struct userdb *db)
{
	for (size_t i = 1; i < db->n; i++) {
		const struct userdb_entry *a = &db->entries[i - 1], *b = &db->entries[i];
		if (strcmp(a->rec.address, b->rec.address) != 0)
			continue;
		const struct userdb_entry *first = a->line < b->line ? a : b;
		const struct userdb_entry *dup = a->line < b->line ? b : a;
		report(p->errout, "%s:%u:1: duplicate user %s (first on line %u)\n", p->path,
		       dup->line, dup->rec.address, first->line);
		return -1;
	}
	return 0;
}

static int userdb_parse_file(FILE *fp, const char *path, struct userdb *db, FILE *errout)
{
	struct userdb_parse p = {.path = path, .line = 0, .errout = errout};
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	int r = 0;
	while (r == 0 && (n = getline(&line, &cap, fp)) >= 0) {
		size_t len = (size_t)n;
		p.line++;
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (len > 0 && line[len - 1] == '\r')
			line[--len] = '\0';
		r = userdb_parse_line(&p, db, line, len);
	}
	if (r == 0 && ferror(fp)) {
		report(errout, "%s: read error: %s\n", path, strerror(errno));
		r = -1;
	}
	if (line)
		OPENSSL_cleanse(line, cap);
	free(line);
	if (r == 0 && db->n > 1) {
		qsort(db->entries, db->n, sizeof *db->entries, userdb_entry_cmp);
		r = userdb_check_duplicates(&p, db);
	}
	return r;
}

/* The file holds keys equivalent to a password for SCRAM (RFC 5802 §9):
 * like a private key, it must be readable by its owner only. */
static int userdb_check_mode(const char *path, int fd, FILE *errout)
{
	struct stat st;
	if (fstat(fd, &st) < 0) {
		report(errout, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISREG(st.st_mode)) {
		report(errout, "%s: not a regular file\n", path);
		return -1;
	}
	if (st.st_mode & 077) {
		report(errout,
		       "%s: readable or writable by group or others (mode %04o); "
		       "run chmod 600 %s\n",
		       path, (unsigned)(st.st_mode & 07777), path);
		return -1;
	}
	return 0;
}

int userdb_load(const char *path, struct userdb **out, FILE *errout)
{
	*out = NULL;
	struct userdb *db = xcalloc(1, sizeof *db);
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		if (errno == ENOENT) {
			*out = db;
			return 0;
		}
		report(errout, "%s: cannot open: %s\n", path, strerror(errno));
		free(db);
		return -1;
	}
	if (userdb_check_mode(path, fd, errout) < 0) {
		close(fd);
		free(db);
		return -1;
	}
	FILE *fp = fdopen(fd, "r");
	if (!fp)
		fatal("fdopen: %s", strerror(errno));
	int r = userdb_parse_file(fp, path, db, errout);
	(void)fclose(fp); /* read only: what was read is all there is */
	if (r < 0) {
		userdb_free(db);
		return -1;
	}
	*out = db;
	return 0;
}

/* ---- writing ---------------------------------------------------------- */

/* "address:SCRAM-SHA-256:i:salt:storedkey:serverkey\n" into a growing
 * buffer; the buffer is wiped by the caller. */
static void userdb_format(const struct user_record *rec, char **buf, size_t *len, size_t *cap)
{
	char salt[USERDB_B64_MAX + 1], stored[USERDB_B64_MAX + 1], server[USERDB_B64_MAX + 1];
	EVP_EncodeBlock((unsigned char *)salt, rec->salt, (int)rec->salt_len);
	EVP_EncodeBlock((unsigned char *)stored, rec->stored_key, USERDB_KEY_LEN);
	EVP_EncodeBlock((unsigned char *)server, rec->server_key, USERDB_KEY_LEN);
	size_t need = strlen(rec->address) + 3 * sizeof salt + 64;
	if (*cap - *len < need) {
		size_t ncap = *cap * 2 + need;
		char *nbuf = xmalloc(ncap);
		if (*buf) {
			memcpy(nbuf, *buf, *len);
			OPENSSL_cleanse(*buf, *cap);
			free(*buf);
		}
		*buf = nbuf;
		*cap = ncap;
	}
	char quota[2 * 24] = "";
	if (rec->quota_set) /* two numbers of at most 20 digits fit */
		xsnprintf(quota, sizeof quota, ":%llu,%llu", (unsigned long long)rec->quota_bytes,
			  (unsigned long long)rec->quota_messages);
	if (!bsnprintf(*buf + *len, *cap - *len, "%s:%s:%u:%s:%s:%s%s\n", rec->address,
		       userdb_mech, rec->iterations, salt, stored, server, quota))
		fatal("userdb: record does not fit its buffer");
	/* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker): *buf is allocated above: need > 0 and *cap - *len starts at 0 */
	*len += strlen(*buf + *len);
}

static int userdb_write_fd(int fd, const struct userdb *db)
{
	char *buf = NULL;
	size_t len = 0, cap = 0;
	for (size_t i = 0; i < db->n; i++)
		userdb_format(&db->entries[i].rec, &buf, &len, &cap);
	int r = write_all(fd, buf ? buf : "", len);
	if (buf) {
		OPENSSL_cleanse(buf, cap);
		free(buf);
	}
	return r;
}

/* Create the temporary file with mode 0600 whatever the umask; a file of
 * that name is a leftover of a crash (we hold the lock), so replace it. */
static int userdb_create_tmp(const char *tmp, long uid, long gid, FILE *errout)
{
	if (unlink(tmp) < 0 && errno != ENOENT) {
		report(errout, "%s: cannot remove: %s\n", tmp, strerror(errno));
		return -1;
	}
	int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		report(errout, "%s: cannot create: %s\n", tmp, strerror(errno));
		return -1;
	}
	if (fchmod(fd, 0600) < 0 ||
	    ((uid != -1 || gid != -1) && fchown(fd, (uid_t)uid, (gid_t)gid) < 0)) {
		report(errout, "%s: cannot set mode or owner: %s\n", tmp, strerror(errno));
		close(fd);
		unlink(tmp);
		return -1;
	}
	return fd;
}

/* Write db to path atomically: tmp file, fsync, rename, fsync the folder. */
static int userdb_save(const char *path, const struct userdb *db, long uid, long gid,
		       FILE *errout)
{
	char *tmp = xasprintf("%s.tmp.%ld", path, (long)getpid());
	int fd = userdb_create_tmp(tmp, uid, gid, errout);
	if (fd < 0) {
		free(tmp);
		return -1;
	}
	int r = 0;
	if (userdb_write_fd(fd, db) < 0 || fsync(fd) < 0) {
		report(errout, "%s: cannot write: %s\n", tmp, strerror(errno));
		r = -1;
	}
	if (close(fd) < 0 && r == 0) {
		report(errout, "%s: cannot write: %s\n", tmp, strerror(errno));
		r = -1;
	}
	if (r == 0 && rename(tmp, path) < 0) {
		report(errout, "%s: cannot rename to %s: %s\n", tmp, path, strerror(errno));
		r = -1;
	}
	if (r < 0)
		unlink(tmp);
	free(tmp);
	if (r < 0)
		return -1;
	char *dir = path_dirname(path);
	if (fsync_dir(dir) < 0) {
		report(errout, "%s: cannot fsync: %s\n", dir, strerror(errno));
		r = -1;
	}
	free(dir);
	return r;
}

/* An exclusive lock on "PATH.lock" serialises concurrent editors; the
 * lock goes with the descriptor.  The lock file gets the database's owner
 * so that the run-as user can edit too. */
static int userdb_lock(const char *path, long uid, long gid, FILE *errout)
{
	char *lock = xasprintf("%s.lock", path);
	int fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0 || ((uid != -1 || gid != -1) && fchown(fd, (uid_t)uid, (gid_t)gid) < 0)) {
		report(errout, "%s: cannot open: %s\n", lock, strerror(errno));
		if (fd >= 0)
			close(fd);
		free(lock);
		return -1;
	}
	if (file_lock(fd, true) < 0) { /* fcntl: holds between hosts too */
		report(errout, "%s: cannot lock: %s\n", lock, strerror(errno));
		close(fd);
		free(lock);
		return -1;
	}
	free(lock);
	return fd;
}

/* Apply one change to the loaded database. */
static int userdb_apply(struct userdb *db, enum userdb_edit op, const char *address,
			const char *password, size_t password_len,
			const struct userdb_quota *quota, FILE *errout)
{
	struct userdb_entry *e = userdb_lookup(db, address);
	if (op == USERDB_ADD && e) {
		report(errout, "user %s already exists\n", e->rec.address);
		return -1;
	}
	if (op != USERDB_ADD && !e) {
		report(errout, "no such user %s\n", address);
		return -1;
	}
	if (op == USERDB_DELETE) {
		userdb_remove(db, e);
		return 0;
	}
	if (op == USERDB_QUOTA) {
		e->rec.quota_set = quota->set;
		e->rec.quota_bytes = quota->bytes;
		e->rec.quota_messages = quota->messages;
		return 0;
	}
	if (password_len == 0) {
		report(errout, "empty password\n");
		return -1;
	}
	struct user_record rec;
	if (userdb_make_record(address, password, password_len, USERDB_DEFAULT_ITERATIONS,
			       &rec) < 0) {
		report(errout, "cannot derive keys: OpenSSL error\n");
		return -1;
	}
	if (e) { /* a new password keeps the user's quota */
		rec.quota_set = e->rec.quota_set;
		rec.quota_bytes = e->rec.quota_bytes;
		rec.quota_messages = e->rec.quota_messages;
		userdb_remove(db, e);
	}
	userdb_insert(db, &rec);
	return 0;
}

static int userdb_change(const char *path, enum userdb_edit op, const char *address,
			 const char *password, size_t password_len,
			 const struct userdb_quota *quota, long owner_uid, long owner_gid,
			 FILE *errout)
{
	const char *why = userdb_check_address(address);
	if (why) {
		report(errout, "invalid address %s: %s\n", address, why);
		return -1;
	}
	int lock = userdb_lock(path, owner_uid, owner_gid, errout);
	if (lock < 0)
		return -1;
	struct userdb *db;
	int r = userdb_load(path, &db, errout);
	if (r == 0) {
		r = userdb_apply(db, op, address, password, password_len, quota, errout);
		if (r == 0)
			r = userdb_save(path, db, owner_uid, owner_gid, errout);
		userdb_free(db);
	}
	close(lock);
	return r;
}

int userdb_edit(const char *path, enum userdb_edit op, const char *address,
		const char *password, size_t password_len, long owner_uid, long owner_gid,
		FILE *errout)
{
	const struct userdb_quota none = {false, 0, 0};
	return userdb_change(path, op, address, password, password_len, &none, owner_uid,
			     owner_gid, errout);
}

int userdb_set_quota(const char *path, const char *address, const struct userdb_quota *quota,
		     long owner_uid, long owner_gid, FILE *errout)
{
	return userdb_change(path, USERDB_QUOTA, address, NULL, 0, quota, owner_uid, owner_gid,
			     errout);
}
