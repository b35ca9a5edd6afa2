/* smtp_client: one outbound SMTP transaction for the queue runner
 * (outbound.c): the destination's mail exchangers (RFC 5321 §5.1,
 * RFC 7505 null MX) or the smarthost, a connection with a timeout to each
 * address in turn, EHLO/HELO, STARTTLS (RFC 3207), AUTH PLAIN (RFC 4954,
 * RFC 4616) to a smarthost, MAIL/RCPT/DATA with PIPELINING (RFC 2920), the
 * spooled message streamed with dot-stuffing (RFC 5321 §4.5.2), a result
 * per recipient, QUIT. */
#ifndef POSTHORN_SMTP_CLIENT_H
#define POSTHORN_SMTP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>
#include <time.h>

#include <openssl/ssl.h>

#include "conf/conf.h"

struct event_base;
struct dns_resolver;
struct smtp_client;

enum {
	SMTP_CLIENT_CONNECT_TIMEOUT = 30,       /* seconds for the TCP connection */
	SMTP_CLIENT_MAX_HOSTS = 10,             /* mail exchangers tried per attempt */
	SMTP_CLIENT_MAX_CONNECTS = 10,          /* connections tried per attempt */
	SMTP_REPLY_LINE_MAX = 1024,             /* a reply line incl. CRLF (RFC: 512) */
	SMTP_REPLY_LINES_MAX = 100,             /* lines of one multi-line reply */
	SMTP_REPLY_TEXT_MAX = 512,              /* reply text kept for logs and bounces */
	SMTP_STATUS_MAX = 16,                   /* "5.1.10" and its NUL, with room */
	SMTP_CLIENT_TLS_NOTE_MAX = 80,          /* the TLS note of a recipient's result */
};

enum smtp_client_result {
	SMTP_CLIENT_PENDING,    /* no answer yet */
	SMTP_CLIENT_SENT,       /* the remote end took responsibility */
	SMTP_CLIENT_DEFERRED,   /* temporary failure: try again later */
	SMTP_CLIENT_FAILED,     /* permanent failure: bounce */
};

/* One recipient of the transaction.  address is the caller's; the client
 * fills the rest (reply and remote_mta are allocated: free them with
 * smtp_client_rcpt_clear()). */
struct smtp_client_rcpt {
	const char *address;
	enum smtp_client_result result;
	char status[SMTP_STATUS_MAX];   /* RFC 3463, e.g. "5.1.1" */
	char *reply;                    /* the remote reply, or what went wrong */
	char *remote_mta;               /* host that answered, or NULL */
	char tls[SMTP_CLIENT_TLS_NOTE_MAX]; /* "tls-policy=dane tls-result=tlsa-mismatch", or "" */
};

void smtp_client_rcpt_clear(struct smtp_client_rcpt *r);

struct smtp_client_params {
	struct event_base *base;
	struct dns_resolver *dns;
	SSL_CTX *ssl_ctx;               /* from smtp_client_tls_new() */
	const char *id;                 /* queue ID, for the log */
	time_t arrival;                 /* for delay= in the log */
	const char *helo;               /* our name for EHLO */
	const char *sender;             /* "" for <> */
	const char *domain;             /* destination: MX lookup (unused with a smarthost) */
	const char *smarthost;          /* host name or address; NULL: MX delivery */
	unsigned short port;            /* of the mail exchangers, or of the smarthost */
	const char *auth_user;          /* smarthost login, or NULL */
	const char *auth_secret;        /* file holding the password (first line) */
	enum conf_outbound_tls tls;
	bool dane;                      /* tls-policy dane (RFC 7672) for MX delivery */
	bool mta_sts;                   /* tls-policy mta-sts (RFC 8461) for MX delivery */
	const char *spool_dir;          /* where MTA-STS policies are cached */
	const char *cafile;             /* CAs for MTA-STS (NULL: the system's) */
	bool requiretls;                /* MAIL FROM ... REQUIRETLS (RFC 8689) */
	bool tls_optional;              /* "TLS-Required: No" (RFC 8689 §5): policy failures do not stop it */
	bool tls_report;                /* the message is a TLS report: its sessions are not counted */
	const char *prefix;             /* header fields sent before the message
					 * (DKIM-Signature, CRLF ends), or NULL */
	int fd;                         /* the spooled message, read with pread */
	off_t offset;
	off_t size;
	struct smtp_client_rcpt *rcpts; /* every result is written here */
	size_t nrcpts;
};

/* done(arg) runs once, when every recipient has a result (never before
 * smtp_client_start() returns).  The client then says QUIT on its own and
 * frees itself: after done, the caller forgets the handle and may close fd
 * and free the recipients.  Strings in p are copied. */
typedef void (*smtp_client_done_cb)(void *arg);
struct smtp_client *smtp_client_start(const struct smtp_client_params *p, smtp_client_done_cb done,
				      void *arg);
/* Abandon a transaction before done ran: nothing more is sent or called,
 * results already written stay. */
void smtp_client_cancel(struct smtp_client *c);
/* Free every client, including those still saying QUIT (shutdown). */
void smtp_client_abort_all(void);

/* The TLS client context: TLS 1.2 or later, no compression, no
 * renegotiation.  Certificates are checked against the system's CAs and
 * the host name for the log only: opportunistic TLS (RFC 7435) does not
 * refuse a certificate it cannot verify.  NULL with a reason in err. */
SSL_CTX *smtp_client_tls_new(char *err, size_t errsz);

/* ---- parsers, exposed for the unit tests ---------------------------------- */

/* A reply being read, line by line (RFC 5321 §4.2). */
struct smtp_client_reply {
	unsigned code;                  /* 0 until the first line */
	size_t lines;
	bool bad;                       /* malformed: a protocol error */
	char text[SMTP_REPLY_TEXT_MAX]; /* "250 line one line two": printable, cut with "..." */
};

enum smtp_client_reply_status {
	SMTP_CLIENT_REPLY_MORE, /* a continuation line: more follow */
	SMTP_CLIENT_REPLY_DONE, /* the last line: the reply is complete */
	SMTP_CLIENT_REPLY_BAD,  /* not a reply line, or a code that changed */
};

void smtp_client_reply_reset(struct smtp_client_reply *r);
/* Feed one line (without its line end).  *rest, when not NULL, is set to
 * the line's text after "NNN " / "NNN-". */
enum smtp_client_reply_status smtp_client_reply_feed(struct smtp_client_reply *r,
						     const char *line, size_t len,
						     const char **rest);
/* The reply's enhanced status code (RFC 3463) when its first line has one
 * whose class matches the code, else "2.0.0", "4.0.0" or "5.0.0".  out
 * holds SMTP_STATUS_MAX bytes (outsz), which any of them fits in. */
void smtp_client_reply_status(const struct smtp_client_reply *r, char *out, size_t outsz);

/* EHLO keywords that matter here (RFC 5321 §4.1.1.1). */
enum {
	SMTP_EXT_PIPELINING = 1 << 0,
	SMTP_EXT_STARTTLS = 1 << 1,
	SMTP_EXT_SIZE = 1 << 2,
	SMTP_EXT_8BITMIME = 1 << 3,
	SMTP_EXT_SMTPUTF8 = 1 << 4,
	SMTP_EXT_AUTH_PLAIN = 1 << 5,
	SMTP_EXT_REQUIRETLS = 1 << 6,   /* RFC 8689 */
	SMTP_EXT_ALL = (1 << 7) - 1,    /* every flag above */
};
/* The flags one EHLO line (text after "250-") adds; keywords are
 * case-insensitive. */
unsigned smtp_client_ehlo_line(const char *text);

/* Copy n bytes of message text into out (room for 2 * n bytes), doubling a
 * '.' at the start of each line (RFC 5321 §4.5.2).  *bol says whether the
 * next byte starts a line; start with true.  Returns the bytes written. */
size_t smtp_client_dot_stuff(const char *in, size_t n, char *out, bool *bol);

#endif
