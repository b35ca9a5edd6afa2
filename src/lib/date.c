/* date: RFC 5322 §3.3 date-time, in the local time zone. */
#include "lib/date.h"

#include "lib/strbuf.h"

bool date_rfc5322(time_t t, char *out, size_t outsz)
{
	static const char *const days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					     "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	if (outsz == 0)
		return false;
	out[0] = '\0';
	struct tm tm;
	if (!localtime_r(&t, &tm) || tm.tm_year < 0 || tm.tm_year > 9999 - 1900 ||
	    tm.tm_wday < 0 || tm.tm_wday > 6 || tm.tm_mon < 0 || tm.tm_mon > 11)
		return false;
	/* zone = ("+" / "-") 4DIGIT: hours and minutes east of UTC */
	long off = tm.tm_gmtoff / 60;
	char sign = off < 0 ? '-' : '+';
	if (off < 0)
		off = -off;
	if (off / 60 > 99)
		return false;
	struct strbuf sb;
	strbuf_init(&sb, out, outsz);
	/* all or nothing: a date that does not fit leaves out empty */
	return strbuf_addf(&sb, "%s, %02d %s %04d %02d:%02d:%02d %c%02ld%02ld", days[tm.tm_wday],
			   tm.tm_mday, months[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
			   tm.tm_sec, sign, off / 60, off % 60);
}
