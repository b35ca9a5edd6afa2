/* imap_date: RFC 3501 §9 date and date-time (see imap_date.h). */
#include "proto/imap/imap_date.h"

#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include "lib/util.h"

static const char *const imap_months[12] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					    "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};

/* RFC 3501 date-time: "dd-Mon-yyyy hh:mm:ss +zzzz", in local time.  The
 * grammar has four digits for the year (date-year = 4DIGIT): a time
 * outside years 0 to 9999, or one the C library cannot convert, has no
 * date-time at all, and the caller decides what to do instead. */
bool imap_format_datetime(long long t, char out[IMAP_DATETIME_SIZE])
{
	out[0] = '\0';
	time_t tt = (time_t)t;
	struct tm tm;
	if ((long long)tt != t || !localtime_r(&tt, &tm) || tm.tm_year < -1900 ||
	    tm.tm_year > 9999 - 1900)
		return false;
	long off = tm.tm_gmtoff / 60;
	char sign = off < 0 ? '-' : '+';
	if (off < 0)
		off = -off;
	/* with the year and the zone's hours in range the text is 26 bytes, far
	 * below IMAP_DATETIME_SIZE: a cut is a bug, and then still no date */
	if (off > 99 * 60 + 59 ||
	    !bsnprintf(out, IMAP_DATETIME_SIZE, "%02d-%s-%04d %02d:%02d:%02d %c%02ld%02ld",
		       tm.tm_mday, imap_months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour,
		       tm.tm_min, tm.tm_sec, sign, off / 60, off % 60)) {
		out[0] = '\0';
		return false;
	}
	return true;
}

static int imap_month(const char *m)
{
	for (int i = 0; i < 12; i++)
		if (strncasecmp(m, imap_months[i], 3) == 0)
			return i;
	return -1;
}

/* Days since 1970-01-01 of a civil date (proleptic Gregorian). */
long long imap_days_from_civil(int y, int m, int d)
{
	y -= m <= 2;
	long long era = (y >= 0 ? y : y - 399) / 400;
	unsigned yoe = (unsigned)(y - era * 400);
	unsigned doy = (unsigned)((153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1);
	unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
	return era * 146097 + (long long)doe - 719468;
}

/* Exactly n decimal digits at *p (n <= 4); the value, p moved past them;
 * -1 when anything else is there (no sign, no blank, no more digits). */
static int imap_digits(const char **p, int n)
{
	int v = 0;
	for (int i = 0; i < n; i++) {
		unsigned char c = (unsigned char)(*p)[i];
		if (c < '0' || c > '9')
			return -1;
		v = v * 10 + (c - '0');
	}
	*p += n;
	return v;
}

/* "Mon-yyyy" after the day and its '-': month index and year, p moved. */
static bool imap_parse_month_year(const char **p, int *m, int *y)
{
	const char *s = *p;
	if (strlen(s) < 8 || s[3] != '-')
		return false;
	char mon[4] = {s[0], s[1], s[2], '\0'};
	*m = imap_month(mon);
	s += 4;
	*y = imap_digits(&s, 4);
	*p = s;
	return *m >= 0 && *y >= 1000;
}

/* RFC 3501 date: "d-Mon-yyyy" (day 1 or 2 digits); the day number since
 * the epoch (dates compare by day, RFC 3501 §6.4.4). */
bool imap_parse_date(const char *v, long long *day)
{
	const char *p = v;
	int d = imap_digits(&p, v[0] && v[1] == '-' ? 1 : 2);
	int m, y;
	if (d < 1 || d > 31 || *p++ != '-' || !imap_parse_month_year(&p, &m, &y) || *p != '\0')
		return false;
	*day = imap_days_from_civil(y, m + 1, d);
	return true;
}

/* RFC 3501 date-time for APPEND: "dd-Mon-yyyy hh:mm:ss +zzzz" (day may
 * start with a space).  Seconds since the epoch. */
bool imap_parse_datetime(const char *v, long long *out)
{
	if (strlen(v) != 26)
		return false;
	const char *p = v + (v[0] == ' ');
	int d = imap_digits(&p, v[0] == ' ' ? 1 : 2);
	int m, y;
	if (d < 1 || d > 31 || *p++ != '-' || !imap_parse_month_year(&p, &m, &y) || *p++ != ' ')
		return false;
	int hh = imap_digits(&p, 2);
	int mm = *p++ == ':' ? imap_digits(&p, 2) : -1;
	int ss = mm >= 0 && *p++ == ':' ? imap_digits(&p, 2) : -1;
	char sign = ss >= 0 && *p++ == ' ' ? *p++ : '\0';
	int zone = sign == '+' || sign == '-' ? imap_digits(&p, 4) : -1;
	if (hh < 0 || hh > 23 || mm > 59 || ss < 0 || ss > 60 || zone < 0 || zone % 100 > 59 ||
	    *p != '\0')
		return false;
	long long t = imap_days_from_civil(y, m + 1, d) * 86400 + hh * 3600 + mm * 60 + ss;
	long long off = (zone / 100) * 3600 + (zone % 100) * 60;
	*out = sign == '+' ? t - off : t + off;
	return true;
}
