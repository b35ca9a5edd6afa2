/* imap_date: RFC 3501 §9 date ("d-Mon-yyyy": SEARCH BEFORE, ON, SINCE and
 * the SENT* keys) and date-time ("dd-Mon-yyyy hh:mm:ss +zzzz": APPEND's
 * internal date, FETCH INTERNALDATE), parsed and formatted without the C
 * library's locale. */
#ifndef POSTHORN_IMAP_DATE_H
#define POSTHORN_IMAP_DATE_H

#include <stdbool.h>

enum {
	IMAP_DATETIME_SIZE = 64,         /* imap_format_datetime's buffer */
};

/* Days since 1970-01-01 of a proleptic Gregorian date. */
long long imap_days_from_civil(int y, int m, int d);
/* "d-Mon-yyyy" -> its day number; false when malformed. */
bool imap_parse_date(const char *v, long long *day);
/* "dd-Mon-yyyy hh:mm:ss +zzzz" -> seconds since the epoch. */
bool imap_parse_datetime(const char *v, long long *out);
/* Seconds since the epoch -> INTERNALDATE text in the server's zone;
 * false (out empty) when t has none: outside years 0 to 9999 (the
 * grammar's four digits) or not convertible by localtime_r(). */
bool imap_format_datetime(long long t, char out[IMAP_DATETIME_SIZE])
    __attribute__((warn_unused_result));

#endif
