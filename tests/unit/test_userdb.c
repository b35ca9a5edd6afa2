/* Unit tests for userdb: RFC 5802 §3 key derivation against the RFC 7677
 * §3 example, password checks, address rules, loading (errors with
 * FILE:LINE:COL, file mode) and atomic edits. */
#define _GNU_SOURCE /* memmem */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "auth/userdb.h"
#include "lib/util.h"

/* RFC 7677 §3: user "user", password "pencil", salt below, 4096 iterations.
 * The RFC shows only the exchange, so the keys were derived once with
 * python3:
 *   sp = hashlib.pbkdf2_hmac('sha256', b'pencil', b64decode(SALT), 4096)
 *   ck = hmac.new(sp, b'Client Key', sha256).digest()
 *   stored = sha256(ck).digest(); server = hmac.new(sp, b'Server Key', sha256).digest()
 * and checked by recomputing the RFC's ClientProof
 * (p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=) and ServerSignature
 * (v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=) from them. */
static const char rfc7677_salt_b64[] = "W22ZaJ0SNY7soEsUEjb6gQ==";
static const char rfc7677_stored_b64[] = "WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY=";
static const char rfc7677_server_b64[] = "wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=";
static const uint8_t rfc7677_stored[USERDB_KEY_LEN] = {
    0x58, 0x6e, 0x5d, 0xf2, 0x83, 0xe6, 0xdc, 0xeb, 0x5c, 0x3e, 0x79, 0x1d, 0x8b, 0x85, 0x28, 0xec,
    0x19, 0x1e, 0x66, 0x40, 0x45, 0xce, 0x97, 0x17, 0x92, 0xe2, 0xe6, 0xb5, 0xbb, 0x13, 0xe2, 0xa6};
static const uint8_t rfc7677_server[USERDB_KEY_LEN] = {
    0xc1, 0xf3, 0xcb, 0xc1, 0xc1, 0x3a, 0x9d, 0x35, 0xa1, 0x4c, 0x09, 0x90, 0xee, 0xd9, 0x76, 0x29,
    0xea, 0x22, 0x58, 0x63, 0xe5, 0x66, 0xa4, 0x31, 0x4a, 0xb9, 0x9f, 0x3f, 0x00, 0xe5, 0xd9, 0xd5};
static const uint8_t rfc7677_salt[16] = {0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
					 0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81};

/* ---- helpers ---------------------------------------------------------- */

static void write_file(const char *path, const char *text, mode_t mode)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, text, strlen(text)), 0);
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(close(fd), 0);
}

static char *read_file(const char *path, size_t *len)
{
	FILE *fp = fopen(path, "r");
	assert_non_null(fp);
	char *buf = xmalloc(1 << 20);
	*len = fread(buf, 1, (1 << 20) - 1, fp);
	buf[*len] = '\0';
	fclose(fp);
	return buf;
}

/* A scratch folder per test, removed with its files afterwards. */
struct scratch {
	char dir[64];
	char users[128];
};

static int scratch_setup(void **state)
{
	struct scratch *s = xcalloc(1, sizeof *s);
	assert_true(bsnprintf(s->dir, sizeof s->dir, "/tmp/test_userdb.XXXXXX"));
	assert_non_null(mkdtemp(s->dir));
	assert_true(bsnprintf(s->users, sizeof s->users, "%s/users", s->dir));
	*state = s;
	return 0;
}

static int scratch_teardown(void **state)
{
	struct scratch *s = *state;
	DIR *d = opendir(s->dir);
	struct dirent *de;
	while (d && (de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		char *p = xasprintf("%s/%s", s->dir, de->d_name);
		unlink(p);
		free(p);
	}
	if (d)
		closedir(d);
	rmdir(s->dir);
	free(s);
	return 0;
}

/* Run userdb_load on text; return what it printed (caller frees). */
static char *load_text(const struct scratch *s, const char *text, mode_t mode, int *r)
{
	write_file(s->users, text, mode);
	char *msg = NULL;
	size_t len = 0;
	FILE *err = open_memstream(&msg, &len);
	struct userdb *db = NULL;
	*r = userdb_load(s->users, &db, err);
	fclose(err);
	if (*r == 0)
		assert_non_null(db);
	else
		assert_null(db);
	userdb_free(db);
	return msg;
}

static int edit(const struct scratch *s, enum userdb_edit op, const char *address,
		const char *password, char **msg)
{
	size_t len = 0;
	*msg = NULL;
	FILE *err = open_memstream(msg, &len);
	int r = userdb_edit(s->users, op, address, password, password ? strlen(password) : 0,
			    -1, -1, err);
	fclose(err);
	return r;
}

static void edit_ok(const struct scratch *s, enum userdb_edit op, const char *address,
		    const char *password)
{
	char *msg;
	int r = edit(s, op, address, password, &msg);
	if (r != 0)
		fprintf(stderr, "unexpected: %s", msg);
	assert_int_equal(r, 0);
	assert_string_equal(msg, "");
	free(msg);
}

static struct userdb *load_ok(const struct scratch *s)
{
	struct userdb *db = NULL;
	assert_int_equal(userdb_load(s->users, &db, stderr), 0);
	assert_non_null(db);
	return db;
}

/* ---- derivation and verification -------------------------------------- */

static void test_derive_rfc7677(void **state)
{
	uint8_t stored[USERDB_KEY_LEN], server[USERDB_KEY_LEN];
	assert_int_equal(userdb_derive_keys("pencil", 6, rfc7677_salt, sizeof rfc7677_salt, 4096,
					    stored, server),
			 0);
	assert_memory_equal(stored, rfc7677_stored, USERDB_KEY_LEN);
	assert_memory_equal(server, rfc7677_server, USERDB_KEY_LEN);
}

static void test_derive_rejects_bad_parameters(void **state)
{
	uint8_t stored[USERDB_KEY_LEN], server[USERDB_KEY_LEN];
	assert_int_equal(userdb_derive_keys("pencil", 6, rfc7677_salt, 0, 4096, stored, server),
			 -1);
	assert_int_equal(userdb_derive_keys("pencil", 6, rfc7677_salt, USERDB_SALT_MAX + 1, 4096,
					    stored, server),
			 -1);
	assert_int_equal(
	    userdb_derive_keys("pencil", 6, rfc7677_salt, sizeof rfc7677_salt, 0, stored, server),
	    -1);
}

/* The record of the RFC 7677 example, as userdb_load would build it. */
static void rfc7677_record(struct user_record *rec)
{
	memset(rec, 0, sizeof *rec);
	rec->address = xstrdup("user@example.test");
	rec->iterations = 4096;
	rec->salt_len = sizeof rfc7677_salt;
	memcpy(rec->salt, rfc7677_salt, sizeof rfc7677_salt);
	memcpy(rec->stored_key, rfc7677_stored, USERDB_KEY_LEN);
	memcpy(rec->server_key, rfc7677_server, USERDB_KEY_LEN);
}

static void test_verify_password(void **state)
{
	struct user_record rec;
	rfc7677_record(&rec);
	assert_true(userdb_verify_password(&rec, "pencil", 6));
	assert_false(userdb_verify_password(&rec, "Pencil", 6));
	assert_false(userdb_verify_password(&rec, "pencil2", 7));
	assert_false(userdb_verify_password(&rec, "pencil", 5));
	assert_false(userdb_verify_password(&rec, "", 0));
	user_record_clear(&rec);
	assert_null(rec.address);
}

static void test_make_record(void **state)
{
	struct user_record a, b;
	assert_int_equal(userdb_make_record("Alice@Example.TEST", "s3cret", 6,
					    USERDB_DEFAULT_ITERATIONS, &a),
			 0);
	assert_int_equal(userdb_make_record("alice@example.test", "s3cret", 6,
					    USERDB_DEFAULT_ITERATIONS, &b),
			 0);
	assert_string_equal(a.address, "alice@example.test");
	assert_int_equal(a.iterations, USERDB_DEFAULT_ITERATIONS);
	assert_int_equal(a.salt_len, 16);
	/* Fresh salt each time, hence different keys for one password. */
	assert_memory_not_equal(a.salt, b.salt, 16);
	assert_memory_not_equal(a.stored_key, b.stored_key, USERDB_KEY_LEN);
	assert_true(userdb_verify_password(&a, "s3cret", 6));
	assert_true(userdb_verify_password(&b, "s3cret", 6));
	assert_false(userdb_verify_password(&a, "s3cret ", 7));
	user_record_clear(&a);
	user_record_clear(&b);
}

static void test_check_address(void **state)
{
	static const char *const good[] = {
	    "user@example.test", "a@b", "first.last@sub.example.test", "x+tag@example.test",
	    "o'brien@example.test", "UPPER@EXAMPLE.TEST", "a-b_c@x-y.example",
	};
	static const char *const bad[] = {
	    "", "user", "@example.test", "user@", "a@b@c", "a b@example.test",
	    "a:b@example.test", ".a@example.test", "a.@example.test", "a..b@example.test",
	    "a/b@example.test", "a@exa mple.test", "a@example..test", "a@.example.test",
	    "a@example.test.", "a@-example.test", "a@example-.test", "a\t@example.test",
	    "a\x01@example.test", "\"a\"@example.test", "a,b@example.test", "a@[192.0.2.1]",
	    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa@example.test",
	};
	for (size_t i = 0; i < ARRAY_LEN(good); i++) {
		const char *why = userdb_check_address(good[i]);
		if (why)
			fprintf(stderr, "%s: %s\n", good[i], why);
		assert_null(why);
	}
	for (size_t i = 0; i < ARRAY_LEN(bad); i++) {
		if (!userdb_check_address(bad[i]))
			fprintf(stderr, "accepted: %s\n", bad[i]);
		assert_non_null(userdb_check_address(bad[i]));
	}
	/* 64 octets is the limit, not 63 (RFC 5321 §4.5.3.1.1). */
	char local64[80];
	memset(local64, 'a', 64);
	assert_true(bsnprintf(local64 + 64, sizeof local64 - 64, "@x"));
	assert_null(userdb_check_address(local64));
}

/* ---- loading ---------------------------------------------------------- */

static void test_load_missing_is_empty(void **state)
{
	struct scratch *s = *state;
	struct userdb *db = load_ok(s);
	assert_int_equal(userdb_count(db), 0);
	assert_null(userdb_find(db, "user@example.test"));
	assert_null(userdb_at(db, 0));
	userdb_free(db);
}

static char *rfc7677_line(const char *address)
{
	return xasprintf("%s:SCRAM-SHA-256:4096:%s:%s:%s\n", address, rfc7677_salt_b64,
			 rfc7677_stored_b64, rfc7677_server_b64);
}

static void test_load_record(void **state)
{
	struct scratch *s = *state;
	char *a = rfc7677_line("User@Example.Test");
	char *text = xasprintf("# users\n\n%s", a);
	/* CRLF line ends are tolerated too. */
	char *b = xasprintf("%.*s\r\n", (int)strlen(a) - 1, a);
	b[0] = 'x';
	char *all = xasprintf("%s%s", text, b);
	write_file(s->users, all, 0600);
	struct userdb *db = load_ok(s);
	assert_int_equal(userdb_count(db), 2);
	const struct user_record *rec = userdb_find(db, "USER@example.test");
	assert_non_null(rec);
	assert_string_equal(rec->address, "user@example.test");
	assert_int_equal(rec->iterations, 4096);
	assert_int_equal(rec->salt_len, 16);
	assert_memory_equal(rec->salt, rfc7677_salt, 16);
	assert_memory_equal(rec->stored_key, rfc7677_stored, USERDB_KEY_LEN);
	assert_memory_equal(rec->server_key, rfc7677_server, USERDB_KEY_LEN);
	assert_true(userdb_verify_password(rec, "pencil", 6));
	assert_non_null(userdb_find(db, "xser@example.test"));
	assert_null(userdb_find(db, "nobody@example.test"));
	userdb_free(db);
	free(a);
	free(b);
	free(text);
	free(all);
}

static void test_load_many_sorted(void **state)
{
	struct scratch *s = *state;
	enum { N = 3000 };
	char *text = NULL;
	size_t len = 0;
	FILE *fp = open_memstream(&text, &len);
	/* Written in descending order; loaded sorted. */
	for (int i = N - 1; i >= 0; i--) {
		char addr[64];
		assert_true(bsnprintf(addr, sizeof addr, "u%05d@example.test", i));
		char *line = rfc7677_line(addr);
		fputs(line, fp);
		free(line);
	}
	fclose(fp);
	write_file(s->users, text, 0600);
	free(text);
	struct userdb *db = load_ok(s);
	assert_int_equal(userdb_count(db), N);
	for (int i = 0; i < N; i++) {
		char addr[64];
		assert_true(bsnprintf(addr, sizeof addr, "U%05d@EXAMPLE.test", i));
		const struct user_record *rec = userdb_find(db, addr);
		assert_non_null(rec);
		assert_ptr_equal(rec, userdb_at(db, (size_t)i));
	}
	for (size_t i = 1; i < userdb_count(db); i++)
		assert_true(strcmp(userdb_at(db, i - 1)->address, userdb_at(db, i)->address) < 0);
	userdb_free(db);
}

struct bad_case {
	const char *text;
	const char *where;      /* "LINE:COL: " */
	const char *words;      /* part of the message */
};

static void test_load_malformed(void **state)
{
	struct scratch *s = *state;
	const char *S = rfc7677_salt_b64, *K = rfc7677_stored_b64;
	char *good = rfc7677_line("ok@example.test");
	struct bad_case cases[] = {
	    {"a@b:SCRAM-SHA-256:4096\n", "1:23: ", "expected 6 fields"},
	    {"nobody\n", "1:7: ", "expected 6 fields"},
	    {NULL, "1:1: ", "invalid address"},
	    {NULL, "1:5: ", "unknown scheme"},
	    {NULL, "1:19: ", "iteration count"},
	    {NULL, "1:19: ", "iteration count"},
	    {NULL, "1:24: ", "salt"},
	    {NULL, "1:49: ", "stored key"},
	    {NULL, "1:94: ", "server key"},
	    {NULL, "1:142: ", "unexpected ':'"},
	    {NULL, "2:1: ", "invalid address"},
	    {NULL, "3:1: ", "duplicate user ok@example.test (first on line 1)"},
	    {NULL, "1:19: ", "iteration count"},
	    {NULL, "1:49: ", "stored key"},
	    {NULL, "1:139: ", "quota is not BYTES,MESSAGES"},
	    {NULL, "1:139: ", "quota is not BYTES,MESSAGES"},
	};
	char *texts[ARRAY_LEN(cases)];
	memset(texts, 0, sizeof texts);
	texts[2] = xasprintf("a b@c:SCRAM-SHA-256:4096:%s:%s:%s\n", S, K, K);
	texts[3] = xasprintf("a@b:SCRAM-SHA-1:4096:%s:%s:%s\n", S, K, K);
	texts[4] = xasprintf("a@b:SCRAM-SHA-256:0:%s:%s:%s\n", S, K, K);
	texts[5] = xasprintf("a@b:SCRAM-SHA-256:40x6:%s:%s:%s\n", S, K, K);
	texts[6] = xasprintf("a@b:SCRAM-SHA-256:4096:W22ZaJ0SNY7soEsUEjb6gQ=:%s:%s\n", K, K);
	texts[7] = xasprintf("a@b:SCRAM-SHA-256:4096:%s:%s:%s\n", S, S, K);
	texts[8] = xasprintf("a@b:SCRAM-SHA-256:4096:%s:%s:%s\n", S, K, "WG5d8oPm3OtcPnkd");
	texts[9] = xasprintf("a@b:SCRAM-SHA-256:4096:%s:%s:%s:1,2:x\n", S, K, K);
	texts[10] = xasprintf("%sx:y:z:v:w:u\n", good);
	texts[11] = xasprintf("%s# comment\nOK@example.test:SCRAM-SHA-256:1:%s:%s:%s\n", good, S,
			      K, K);
	texts[12] = xasprintf("a@b:SCRAM-SHA-256:99999999999:%s:%s:%s\n", S, K, K);
	/* Base64 with a character outside the alphabet. */
	texts[13] = xasprintf("a@b:SCRAM-SHA-256:4096:%s:WG5d8oPm3OtcPnkdi4Uo7BkeZkBF*pcXkuLmtbsT4qY=:%s\n",
			      S, K);
	texts[14] = xasprintf("a@b:SCRAM-SHA-256:4096:%s:%s:%s:x\n", S, K, K);
	texts[15] = xasprintf("a@b:SCRAM-SHA-256:4096:%s:%s:%s:12345678901234567890,1\n", S, K, K);
	for (size_t i = 0; i < ARRAY_LEN(cases); i++) {
		int r;
		char *msg = load_text(s, cases[i].text ? cases[i].text : texts[i], 0600, &r);
		char *want = xasprintf("%s:%s", s->users, cases[i].where);
		if (r != -1 || strncmp(msg, want, strlen(want)) != 0 ||
		    !strstr(msg, cases[i].words))
			fprintf(stderr, "case %zu: %s", i, msg);
		assert_int_equal(r, -1);
		assert_true(strncmp(msg, want, strlen(want)) == 0);
		assert_non_null(strstr(msg, cases[i].words));
		/* One line. */
		assert_ptr_equal(strchr(msg, '\n'), msg + strlen(msg) - 1);
		free(want);
		free(msg);
		free(texts[i]);
	}
	free(good);
}

static void test_load_refuses_open_mode(void **state)
{
	struct scratch *s = *state;
	char *line = rfc7677_line("a@example.test");
	static const mode_t modes[] = {0640, 0604, 0620, 0602, 0644};
	for (size_t i = 0; i < ARRAY_LEN(modes); i++) {
		int r;
		char *msg = load_text(s, line, modes[i], &r);
		assert_int_equal(r, -1);
		assert_true(strncmp(msg, s->users, strlen(s->users)) == 0);
		assert_non_null(strstr(msg, "group or others"));
		assert_non_null(strstr(msg, "chmod 600"));
		free(msg);
	}
	int r;
	char *msg = load_text(s, line, 0400, &r);
	assert_int_equal(r, 0);
	assert_string_equal(msg, "");
	free(msg);
	free(line);
}

/* ---- editing ---------------------------------------------------------- */

static void assert_file_private(const char *path)
{
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0600);
}

/* Only "users" and "users.lock" may remain: no temporary file. */
static void assert_no_leftovers(const struct scratch *s)
{
	DIR *d = opendir(s->dir);
	assert_non_null(d);
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.')
			continue;
		if (strcmp(de->d_name, "users") != 0 && strcmp(de->d_name, "users.lock") != 0)
			fprintf(stderr, "leftover: %s\n", de->d_name);
		assert_true(strcmp(de->d_name, "users") == 0 ||
			    strcmp(de->d_name, "users.lock") == 0);
	}
	closedir(d);
}

static void test_edit_round_trip(void **state)
{
	struct scratch *s = *state;
	mode_t old = umask(0); /* the file must be 0600 whatever the umask */
	edit_ok(s, USERDB_ADD, "Bob@Example.TEST", "correct horse");
	umask(old);
	edit_ok(s, USERDB_ADD, "alice@example.test", "battery staple");
	edit_ok(s, USERDB_ADD, "carol@example.org", "s3cret");
	assert_file_private(s->users);
	char *lock = xasprintf("%s.lock", s->users);
	assert_file_private(lock);
	free(lock);
	assert_no_leftovers(s);

	/* Sorted, lower case, and the passwords are nowhere in the file. */
	size_t len;
	char *bytes = read_file(s->users, &len);
	assert_null(memmem(bytes, len, "correct horse", 13));
	assert_null(memmem(bytes, len, "battery staple", 14));
	assert_null(memmem(bytes, len, "s3cret", 6));
	assert_non_null(strstr(bytes, "bob@example.test:SCRAM-SHA-256:4096:"));
	free(bytes);

	struct userdb *db = load_ok(s);
	assert_int_equal(userdb_count(db), 3);
	assert_string_equal(userdb_at(db, 0)->address, "alice@example.test");
	assert_string_equal(userdb_at(db, 1)->address, "bob@example.test");
	assert_string_equal(userdb_at(db, 2)->address, "carol@example.org");
	const struct user_record *bob = userdb_find(db, "BOB@example.test");
	assert_true(userdb_verify_password(bob, "correct horse", 13));
	assert_false(userdb_verify_password(bob, "battery staple", 14));
	uint8_t old_key[USERDB_KEY_LEN];
	memcpy(old_key, bob->stored_key, USERDB_KEY_LEN);
	userdb_free(db);

	/* passwd: new salt and keys; the old password no longer works. */
	edit_ok(s, USERDB_PASSWD, "bob@example.test", "tr0ub4dor");
	db = load_ok(s);
	assert_int_equal(userdb_count(db), 3);
	bob = userdb_find(db, "bob@example.test");
	assert_memory_not_equal(old_key, bob->stored_key, USERDB_KEY_LEN);
	assert_true(userdb_verify_password(bob, "tr0ub4dor", 9));
	assert_false(userdb_verify_password(bob, "correct horse", 13));
	userdb_free(db);

	/* a quota of bob's own: written as a seventh field, kept by passwd,
	 * cleared again */
	const struct userdb_quota q = {true, 1048576, 50};
	assert_int_equal(userdb_set_quota(s->users, "BOB@example.test", &q, -1, -1, stderr), 0);
	bytes = read_file(s->users, &len);
	assert_non_null(strstr(bytes, ":1048576,50\n"));
	free(bytes);
	edit_ok(s, USERDB_PASSWD, "bob@example.test", "n3w pass");
	db = load_ok(s);
	bob = userdb_find(db, "bob@example.test");
	assert_true(bob->quota_set);
	assert_int_equal(bob->quota_bytes, 1048576);
	assert_int_equal(bob->quota_messages, 50);
	assert_false(userdb_find(db, "carol@example.org")->quota_set);
	userdb_free(db);
	const struct userdb_quota none = {false, 0, 0};
	assert_int_equal(userdb_set_quota(s->users, "bob@example.test", &none, -1, -1, stderr), 0);
	db = load_ok(s);
	assert_false(userdb_find(db, "bob@example.test")->quota_set);
	userdb_free(db);
	assert_int_equal(userdb_set_quota(s->users, "nobody@example.test", &q, -1, -1, stderr), -1);

	/* del */
	edit_ok(s, USERDB_DELETE, "ALICE@example.test", NULL);
	db = load_ok(s);
	assert_int_equal(userdb_count(db), 2);
	assert_null(userdb_find(db, "alice@example.test"));
	assert_string_equal(userdb_at(db, 0)->address, "bob@example.test");
	userdb_free(db);
	assert_file_private(s->users);
	assert_no_leftovers(s);
}

static void test_edit_errors(void **state)
{
	struct scratch *s = *state;
	char *msg;
	edit_ok(s, USERDB_ADD, "bob@example.test", "pw");

	assert_int_equal(edit(s, USERDB_ADD, "BOB@example.test", "other", &msg), -1);
	assert_string_equal(msg, "user bob@example.test already exists\n");
	free(msg);
	assert_int_equal(edit(s, USERDB_PASSWD, "nobody@example.test", "pw", &msg), -1);
	assert_string_equal(msg, "no such user nobody@example.test\n");
	free(msg);
	assert_int_equal(edit(s, USERDB_DELETE, "nobody@example.test", NULL, &msg), -1);
	assert_string_equal(msg, "no such user nobody@example.test\n");
	free(msg);
	assert_int_equal(edit(s, USERDB_ADD, "new@example.test", "", &msg), -1);
	assert_string_equal(msg, "empty password\n");
	free(msg);
	assert_int_equal(edit(s, USERDB_ADD, "not an address", "pw", &msg), -1);
	assert_non_null(strstr(msg, "invalid address"));
	free(msg);

	/* The failed edits left the file as it was. */
	struct userdb *db = load_ok(s);
	assert_int_equal(userdb_count(db), 1);
	assert_true(userdb_verify_password(userdb_find(db, "bob@example.test"), "pw", 2));
	userdb_free(db);
	assert_no_leftovers(s);

	/* A file the daemon would refuse is not edited either. */
	assert_int_equal(chmod(s->users, 0644), 0);
	assert_int_equal(edit(s, USERDB_ADD, "new@example.test", "pw", &msg), -1);
	assert_non_null(strstr(msg, "group or others"));
	free(msg);

	/* Nor a folder that does not exist. */
	char *saved = xstrdup(s->users);
	assert_true(bsnprintf(s->users, sizeof s->users, "%s/missing/users", s->dir));
	assert_int_equal(edit(s, USERDB_ADD, "new@example.test", "pw", &msg), -1);
	assert_non_null(strstr(msg, "cannot open"));
	free(msg);
	assert_true(bsnprintf(s->users, sizeof s->users, "%s", saved));
	free(saved);
}

/* A stale temporary file (a crash, then the same pid) does not block. */
static void test_edit_replaces_stale_tmp(void **state)
{
	struct scratch *s = *state;
	char *tmp = xasprintf("%s.tmp.%ld", s->users, (long)getpid());
	write_file(tmp, "garbage", 0644);
	edit_ok(s, USERDB_ADD, "a@example.test", "pw");
	assert_int_equal(access(tmp, F_OK), -1);
	free(tmp);
	assert_no_leftovers(s);
}

/* Base64 round trip of odd salt lengths (padding). */
static void test_load_salt_lengths(void **state)
{
	struct scratch *s = *state;
	static const size_t lens[] = {1, 2, 3, 17, 63, 64};
	for (size_t i = 0; i < ARRAY_LEN(lens); i++) {
		uint8_t salt[USERDB_SALT_MAX];
		for (size_t j = 0; j < lens[i]; j++)
			salt[j] = (uint8_t)(0xa0 + j);
		char b64[128];
		EVP_EncodeBlock((unsigned char *)b64, salt, (int)lens[i]);
		char *text = xasprintf("a@b:SCRAM-SHA-256:1:%s:%s:%s\n", b64, rfc7677_stored_b64,
				       rfc7677_server_b64);
		write_file(s->users, text, 0600);
		free(text);
		struct userdb *db = load_ok(s);
		const struct user_record *rec = userdb_find(db, "a@b");
		assert_non_null(rec);
		assert_int_equal(rec->salt_len, lens[i]);
		assert_memory_equal(rec->salt, salt, lens[i]);
		userdb_free(db);
	}
	/* 65 bytes is too long. */
	uint8_t big[65] = {0};
	char b64[128];
	EVP_EncodeBlock((unsigned char *)b64, big, (int)sizeof big);
	char *text = xasprintf("a@b:SCRAM-SHA-256:1:%s:%s:%s\n", b64, rfc7677_stored_b64,
			       rfc7677_server_b64);
	int r;
	char *msg = load_text(s, text, 0600, &r);
	assert_int_equal(r, -1);
	assert_non_null(strstr(msg, ":1:21: salt"));
	free(msg);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_derive_rfc7677),
	    cmocka_unit_test(test_derive_rejects_bad_parameters),
	    cmocka_unit_test(test_verify_password),
	    cmocka_unit_test(test_make_record),
	    cmocka_unit_test(test_check_address),
	    cmocka_unit_test_setup_teardown(test_load_missing_is_empty, scratch_setup,
					    scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_load_record, scratch_setup, scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_load_many_sorted, scratch_setup,
					    scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_load_malformed, scratch_setup, scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_load_refuses_open_mode, scratch_setup,
					    scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_load_salt_lengths, scratch_setup,
					    scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_edit_round_trip, scratch_setup, scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_edit_errors, scratch_setup, scratch_teardown),
	    cmocka_unit_test_setup_teardown(test_edit_replaces_stale_tmp, scratch_setup,
					    scratch_teardown),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
