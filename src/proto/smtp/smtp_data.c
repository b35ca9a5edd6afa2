/* smtp_data: end-of-data detection, dot-unstuffing and smuggling defence
 * for the DATA phase (RFC 5321 §4.1.1.4, §4.5.2, §2.3.8). */
#include "proto/smtp/smtp_data.h"

#include <string.h>

#include "lib/linebuf.h"

void smtp_data_begin(struct smtp_data *d, uint64_t limit)
{
	memset(d, 0, sizeof *d);
	d->at_start = true;
	d->limit = limit;
}

void smtp_data_long_line(struct smtp_data *d)
{
	/* the line reader drops the rest of it; how it ended reaches the
	 * next line as after_crlf, so a dot line after it still ends the
	 * data and the refusal is given at once */
	d->flags |= SMTP_DATA_LONG_LINE;
	d->at_start = false;
}

static bool is_end_of_data(const struct smtp_data *d, const struct linebuf_line *line)
{
	/* <CRLF>.<CRLF> exactly: the preceding line ended in CRLF (for the
	 * first line, that is the DATA command) and this one is a lone dot
	 * ended in CRLF (§4.1.1.4).  ".\n" or a dot after a bare LF is text,
	 * never the end (§2.3.8). */
	return (d->at_start || line->after_crlf) && line->crlf && line->len == 1 &&
	       line->data[0] == '.';
}

enum smtp_data_result smtp_data_line(struct smtp_data *d, const struct linebuf_line *line,
				     const char **text, size_t *len)
{
	if (is_end_of_data(d, line))
		return SMTP_DATA_END;

	d->at_start = false;
	if (line->bare_lf || line->bare_cr)
		d->flags |= SMTP_DATA_BARE_EOL;
	if (line->has_nul)
		d->flags |= SMTP_DATA_NUL;

	const char *t = line->data;
	size_t n = line->len;
	if (n > 0 && t[0] == '.') { /* §4.5.2 transparency */
		t++;
		n--;
	}
	if (n + 2 > LINE_MAX_TEXT) /* counted without the stuffing dot */
		d->flags |= SMTP_DATA_LONG_LINE;
	d->size += n + 2;
	if (d->size > d->limit)
		d->flags |= SMTP_DATA_TOO_BIG;

	if (d->flags) {
		*text = NULL;
		*len = 0;
	} else {
		*text = t;
		*len = n;
	}
	return SMTP_DATA_TEXT;
}

/* The length of the plain line at p (smtp_data.h), LF included, or 0. */
static size_t smtp_data_plain_line(const char *p, size_t n)
{
	size_t window = n < LINE_MAX_TEXT ? n : LINE_MAX_TEXT; /* CRLF counted */
	const char *lf = memchr(p, '\n', window);
	if (!lf)
		return 0; /* not all here yet, or too long */
	size_t len = (size_t)(lf - p) + 1;
	if (len < 2 || lf[-1] != '\r' || p[0] == '.' || memchr(p, '\r', len - 2) ||
	    memchr(p, '\0', len - 2))
		return 0;
	return len;
}

size_t smtp_data_plain_lines(struct smtp_data *d, const char *p, size_t n)
{
	if (d->flags || d->size >= d->limit)
		return 0;
	uint64_t room = d->limit - d->size;
	if (n > room)
		n = (size_t)room; /* a line that would pass the limit is not plain */
	size_t done = 0;
	for (size_t len; done < n && (len = smtp_data_plain_line(p + done, n - done)) > 0;)
		done += len;
	if (done > 0) {
		d->size += done;
		d->at_start = false;
	}
	return done;
}
