/* Shared pieces of the libFuzzer targets (tests/fuzz/fuzz_*.c): a scratch
 * folder, a user database with one known user, and an in-process daemon
 * runtime for whole protocol sessions fed through a socket pair. */
#ifndef POSTHORN_FUZZ_HARNESS_H
#define POSTHORN_FUZZ_HARNESS_H
#include <stddef.h>
#include <stdint.h>

/* A failed invariant says which, then stops like a crash. */
#define CHECK(x) do { if (!(x)) fuzz_check_failed(__FILE__, __LINE__, #x); } while (0)
void fuzz_check_failed(const char *file, int line, const char *what) __attribute__((noreturn));

/* The one user: alice@example.test with password "fuzz-secret", SCRAM
 * salt "posthorn-fuzz-salt", 1 iteration (cheap to check), so that seeds
 * can hold complete PLAIN, LOGIN and SCRAM-SHA-256 logins. */
#define FUZZ_USER "alice@example.test"
#define FUZZ_PASSWORD "fuzz-secret"
/* The SCRAM server nonce the targets fix with sasl_test_set_nonce(). */
#define FUZZ_SERVER_NONCE "SERVERNONCE"

struct userdb;
struct runtime;
struct conf_server;

/* A private folder under /tmp, made once per process. */
const char *fuzz_dir(void);
/* Write text to fuzz_dir()/name; returns the path (static storage). */
const char *fuzz_put(const char *name, const char *text);
/* The user database above (loaded once). */
struct userdb *fuzz_userdb(void);

/* Split data at the first octet sep: *part is data up to it, the return
 * value the rest (NULL when no sep: *part is everything). */
const uint8_t *fuzz_split(const uint8_t *data, size_t size, uint8_t sep, size_t *part_len,
			  size_t *rest_len);

/* A certificate and key for mail.example.test in fuzz_dir() (made once,
 * as `posthorn cert new` does); returns the certificate's path.  Its key
 * is fuzz_dir()/mail.example.test.key. */
const char *fuzz_cert(void);

/* A daemon runtime from configuration text: @DIR@ stands for fuzz_dir(),
 * spool and mailboxes are in it, the user above, servers with a tls block
 * get their certificate loaded, no DNS server is ever contacted. */
struct runtime *fuzz_runtime(const char *conf_text);
/* Run one session of server number srv of rt: the bytes go in as a
 * client would send them (in chunks chosen by seed, then the client's
 * write side shuts), everything the server says is read and handed to
 * check_reply line by line; returns when the server has closed the
 * connection and freed the session.  start is smtp_session_start,
 * pop3_session_start, ... */
struct session_start;
enum {
	FUZZ_REFUSED = 1,       /* the connection rules refused the client */
	FUZZ_NO_NAME = 2,       /* no forward-confirmed reverse name */
	FUZZ_IMPLICIT_TLS = 4,  /* a server with a certificate: TLS on connect */
};
void fuzz_session(struct runtime *rt, size_t srv, void (*start)(const struct session_start *),
		  const uint8_t *data, size_t size, uint32_t seed, unsigned flags,
		  void (*check_reply)(const char *line, size_t len));
/* Before fuzz_session(): also hand check_bytes everything the server says
 * exactly as it arrives, in chunks (for responses that carry literals,
 * which are not lines); NULL for none. */
void fuzz_session_raw(void (*check_bytes)(const char *buf, size_t len));
/* Every message in the spool's queue must read back: its envelope (the
 * xtext of hostile addresses included) and a message of CRLF lines with
 * no bare CR or LF (SMTP smuggling).  Returns how many there are. */
unsigned fuzz_check_spool(struct runtime *rt);
/* Empty the spool's queue and put alice's Maildir back as it was: no
 * folders, no UID list or subscriptions, two messages in new/ (between
 * inputs). */
void fuzz_clean_store(struct runtime *rt);
/* Put a message file into alice's Maildir: folder "" is INBOX, ".Name"
 * a Maildir++ folder (made when missing); file is "new/NAME" or
 * "cur/NAME:2,FLAGS". */
void fuzz_add_message(struct runtime *rt, const char *folder, const char *file, const char *text);
#endif
