/* smtp_data: the message text of DATA, line by line (RFC 5321 §4.1.1.4,
 * §4.5.2): <CRLF>.<CRLF> is the only end of data, a leading dot is removed
 * (dot-unstuffing), and a bare CR or LF is flagged — never taken as a line
 * end — so that no "SMTP smuggling" can split one message into two. */
#ifndef POSTHORN_SMTP_DATA_H
#define POSTHORN_SMTP_DATA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "lib/linebuf.h"

struct linebuf_line;

/* What the line reader must allow in DATA: a 1000-octet text line
 * (§4.5.3.1.6) plus the dot that transparency may add before it. */
#define SMTP_DATA_READ_MAX (LINE_MAX_TEXT + 1)

enum smtp_data_flag {
	SMTP_DATA_BARE_EOL = 1u << 0,  /* a bare CR or LF somewhere */
	SMTP_DATA_NUL = 1u << 1,       /* a NUL byte */
	SMTP_DATA_LONG_LINE = 1u << 2, /* a line over 1000 octets */
	SMTP_DATA_TOO_BIG = 1u << 3,   /* over the size limit */
};

struct smtp_data {
	bool at_start;          /* no line yet: the DATA command came before */
	unsigned flags;
	uint64_t size;          /* octets of unstuffed text, CRLF counted */
	uint64_t limit;         /* message-size */
};

enum smtp_data_result { SMTP_DATA_TEXT, SMTP_DATA_END };

void smtp_data_begin(struct smtp_data *d, uint64_t limit);
/* One line from the line reader.  On SMTP_DATA_TEXT, (*text, *len) is the
 * line without its stuffing dot and without line end (the caller stores
 * it followed by CRLF) — or *len is 0 and *text NULL when the message is
 * already refused and nothing more needs storing. */
enum smtp_data_result smtp_data_line(struct smtp_data *d, const struct linebuf_line *line,
				     const char **text, size_t *len);
/* The longest run of whole plain lines at the start of p[0, n), taken as
 * smtp_data_line would take them one by one, and its length (0: none;
 * the next line goes through the line reader and smtp_data_line).  A
 * plain line ends in CRLF, holds no other CR, no LF and no NUL, does not
 * start with a dot (so it is neither the end of data nor stuffed), fits
 * the 1000-octet text limit, and keeps the message within its size;
 * once the message is refused, no line is plain.  Such a run is stored as
 * it came, in one write: it is exactly the text smtp_data_line would give
 * with CRLF after each line.  Each line costs a bounded look (LF within
 * LINE_MAX_TEXT octets, then CR and NUL within the line), so a run that
 * stops early costs no more than the line it stops at. */
size_t smtp_data_plain_lines(struct smtp_data *d, const char *p, size_t n);
/* The line reader reported an over-long line (and drops the rest of it). */
void smtp_data_long_line(struct smtp_data *d);

#endif
