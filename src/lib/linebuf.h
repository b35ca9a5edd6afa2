/* linebuf: the one bounded line reader for all untrusted input (SMTP now,
 * POP3 and IMAP later).  It never holds more than the caller's limit: a line
 * that does not fit is reported once as too long and the rest of it, up to
 * the next LF, is thrown away.  (Postfix smtp_get() is the model.) */
#ifndef POSTHORN_LINEBUF_H
#define POSTHORN_LINEBUF_H

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;

/* Named limits, RFC 5321 §4.5.3.1 and RFC 4954 §4; each counts the line
 * ending. */
enum {
	LINE_MAX_COMMAND = 512,    /* command line incl. CRLF */
	LINE_MAX_COMMAND_EXT = 1024, /* with the MAIL/RCPT parameters we advertise */
	LINE_MAX_AUTH = 12288,     /* AUTH and SASL continuation lines */
	LINE_MAX_TEXT = 1000,      /* a line of message text incl. CRLF */
	LINE_MAX_ANY = LINE_MAX_AUTH,
};

enum linebuf_status {
	LINEBUF_NEED_MORE,      /* no complete line yet */
	LINEBUF_LINE,           /* *line filled */
	LINEBUF_TOO_LONG,       /* reported once; rest of that line discarded */
};

struct linebuf {
	bool discarding;        /* inside an over-long line, dropping to LF */
	bool dropped_cr;        /* the last octet dropped was a CR */
	bool after_bare_lf;     /* the last line taken, returned or dropped,
				 * did not end in CRLF */
	size_t scanned;         /* head bytes already searched for LF in vain */
};

struct linebuf_line {
	char *data;             /* caller's storage, NUL-terminated, no line end */
	size_t len;
	bool crlf;              /* ended in CRLF */
	bool bare_lf;           /* ended in LF without CR */
	bool bare_cr;           /* a CR not followed by LF inside the line */
	bool has_nul;           /* a NUL byte inside the line */
	bool after_crlf;        /* the line before this one, returned or dropped
				 * as too long, ended in CRLF (true for the
				 * first line and after linebuf_reset) */
};

/* Take the next line from in.  limit counts the line end and must be
 * <= storage_size - 1 (storage gets the NUL).  Bytes of an over-long line
 * are drained from in as they come, so in never holds more than limit
 * bytes on their account; how that line ended (CRLF or a bare LF) is
 * still known to the line after it (after_crlf). */
enum linebuf_status linebuf_get(struct linebuf *lb, struct evbuffer *in, size_t limit,
				char *storage, size_t storage_size, struct linebuf_line *line);

/* The same in two steps, for storage sized to the line: peek finds where
 * the next line ends (LINEBUF_LINE with *len, the line end included,
 * <= limit) or deals with an over-long one exactly as linebuf_get does,
 * and leaves the line in; take then moves those len bytes into storage
 * (len < storage_size) and describes them.  Call take right after a peek
 * that found a line, with nothing drained in between. */
enum linebuf_status linebuf_peek(struct linebuf *lb, struct evbuffer *in, size_t limit,
				 size_t *len);
void linebuf_take(struct linebuf *lb, struct evbuffer *in, size_t len, char *storage,
		  size_t storage_size, struct linebuf_line *line);

/* For a caller that checks whole runs of lines itself (the DATA phase's
 * plain lines, smtp_data.h): is the reader between lines (not dropping the
 * rest of an over-long one)?  Then linebuf_skip_lines drains the n bytes
 * at the head of in that such a run took — whole lines, the last ended in
 * CRLF, each within the limit the caller would have given — and the
 * reader goes on as after that line. */
bool linebuf_between_lines(const struct linebuf *lb);
void linebuf_skip_lines(struct linebuf *lb, struct evbuffer *in, size_t n);

/* Forget what was learnt about the buffer: call after draining it by
 * other means (STARTTLS throws away pipelined plaintext). */
void linebuf_reset(struct linebuf *lb);

#endif
