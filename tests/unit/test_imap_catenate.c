/* Unit tests for imap_catenate.c's IMAP URL parser (RFC 5092 relative
 * URLs as CATENATE takes them, RFC 4469 §5): a table of good and bad
 * URLs. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "proto/imap/imap_catenate.h"

static struct imap_url parse_ok(const char *s)
{
	struct imap_url u;
	if (!imap_url_parse(s, strlen(s), &u))
		fail_msg("refused: %s", s);
	return u;
}

static void test_url_good(void **state)
{
	struct imap_url u = parse_ok("/INBOX/;UID=20");
	assert_string_equal(u.mailbox, "INBOX");
	assert_int_equal(u.uid, 20);
	assert_int_equal(u.uidvalidity, 0);
	assert_false(u.has_section);
	assert_false(u.partial);
	imap_url_free(&u);

	u = parse_ok("/Sent%20Items;UIDVALIDITY=385759045/;UID=7/;SECTION=1.2.MIME");
	assert_string_equal(u.mailbox, "Sent Items");
	assert_int_equal(u.uidvalidity, 385759045);
	assert_int_equal(u.uid, 7);
	assert_true(u.has_section);
	assert_int_equal(u.section.nparts, 2);
	assert_int_equal(u.section.parts[1], 2);
	assert_int_equal(u.section.text, MESSAGE_SECTION_MIME);
	imap_url_free(&u);

	/* names are case-insensitive, as imaptest writes them */
	u = parse_ok("/a.b/;uid=3/;section=header");
	assert_string_equal(u.mailbox, "a.b");
	assert_int_equal(u.section.nparts, 0);
	assert_int_equal(u.section.text, MESSAGE_SECTION_HEADER);
	imap_url_free(&u);

	u = parse_ok("/INBOX/;UID=3/;SECTION=2.TEXT/;PARTIAL=100000.1");
	assert_int_equal(u.section.text, MESSAGE_SECTION_TEXT);
	assert_true(u.partial);
	assert_int_equal(u.origin, 100000);
	assert_int_equal(u.count, 1);
	imap_url_free(&u);

	u = parse_ok("/INBOX/;UID=3/;PARTIAL=5");
	assert_int_equal(u.origin, 5);
	assert_int_equal(u.count, 0);
	imap_url_free(&u);
}

static void test_url_bad(void **state)
{
	static const char *const bad[] = {
		"", "/", "INBOX/;UID=1", "/INBOX", "/INBOX/;UID=0", "/INBOX/;UID=x",
		"/INBOX/;UID=4294967296", "/INBOX;UIDVALIDITY=0/;UID=1", "/INBOX/;UID=1/;SECTION=0",
		"/INBOX/;UID=1/;SECTION=MIME", "/INBOX/;UID=1/;SECTION=1.", "/INBOX/;UID=1/;SECTION=HEADER.FIELDS",
		"/INBOX/;UID=1/;PARTIAL=1.0", "/INBOX/;UID=1/;URLAUTH=anonymous", "/IN%0BOX/;UID=1",
		"/IN%00BOX/;UID=1", "/IN%zzBOX/;UID=1", "/IN%4/;UID=1", "/INBOX/;UID", "/INBOX/UID=1",
		"imap://joe@example.com/INBOX/;UID=1", "/IN\x18" "BOX/;UID=1", "/IN BOX/;UID=1",
		"/IN\xc3\xa9/;UID=1",
	};
	for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
		struct imap_url u;
		if (imap_url_parse(bad[i], strlen(bad[i]), &u))
			fail_msg("accepted: %s", bad[i]);
	}
	/* NUL inside the given length */
	struct imap_url u;
	assert_false(imap_url_parse("/INBOX/;UID=1\0", 14, &u));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_url_good),
		cmocka_unit_test(test_url_bad),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
