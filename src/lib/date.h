/* date: the RFC 5322 §3.3 date-time of Date:, Received: and the DSN date
 * fields (RFC 3464 §2.2.5, §2.3.4), e.g. "Mon, 07 Dec 2026 17:22:59 +0100". */
#ifndef POSTHORN_DATE_H
#define POSTHORN_DATE_H

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

/* Longest date_rfc5322() text with its NUL: a four-digit year. */
#define DATE_RFC5322_MAX sizeof "Mon, 07 Dec 2026 17:22:59 +0000"

/* t in the local time zone, with its offset (localtime(3), tm_gmtoff).
 * False, with out empty, when t has no such date (a year outside 1900 to
 * 9999, which RFC 5322 §3.3 cannot write as 4DIGIT) or out is too small;
 * out never holds half a date. */
bool date_rfc5322(time_t t, char *out, size_t outsz) __attribute__((warn_unused_result));

#endif
