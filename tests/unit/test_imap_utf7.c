/* test_imap_utf7: mailbox names between modified UTF-7 (RFC 3501 §5.1.3)
 * and UTF-8 (RFC 6855): RFC 3501's own example, "&" itself, characters
 * outside the BMP (surrogate pairs), both ways; invalid input on each
 * side refused; a result that does not fit refused. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "lib/util.h"
#include "proto/imap/imap_utf7.h"

struct pair {
	const char *utf8, *utf7;
};

static const struct pair pairs[] = {
    {"INBOX", "INBOX"},
    {"", ""},
    {"Entw\xc3\xbcrfe", "Entw&APw-rfe"},
    {"~peter/mail/\xe5\x8f\xb0\xe5\x8c\x97/\xe6\x97\xa5\xe6\x9c\xac\xe8\xaa\x9e",
     "~peter/mail/&U,BTFw-/&ZeVnLIqe-"}, /* RFC 3501 §5.1.3 */
    {"A&B", "A&-B"},
    {"&", "&-"},
    {"\xc3\xa4\xc3\xb6\xc3\xbc", "&AOQA9gD8-"},
    {"x\xf0\x9f\x93\xa7y", "x&2D3c5w-y"},                  /* U+1F4E7, a pair */
    {"tab\there", "tab&AAk-here"},                        /* control: encoded */
    {"\xc3\xa9&\xc3\xa9", "&AOk-&-&AOk-"},
};

static void test_both_ways(void **state)
{
	(void)state;
	char out[IMAP_UTF7_NAME_SIZE];
	for (size_t i = 0; i < ARRAY_LEN(pairs); i++) {
		assert_true(imap_utf7_encode(pairs[i].utf8, out, sizeof out));
		assert_string_equal(out, pairs[i].utf7);
		assert_true(imap_utf7_decode(pairs[i].utf7, out, sizeof out));
		assert_string_equal(out, pairs[i].utf8);
	}
}

static void test_invalid(void **state)
{
	(void)state;
	char out[IMAP_UTF7_NAME_SIZE];
	static const char *const bad_utf8[] = {
	    "\xc3",              /* cut short */
	    "\xc0\xaf",          /* overlong "/" */
	    "\xed\xa0\x80",      /* a surrogate */
	    "\xf4\x90\x80\x80",  /* above U+10FFFF */
	    "\xff",
	};
	for (size_t i = 0; i < ARRAY_LEN(bad_utf8); i++)
		assert_false(imap_utf7_encode(bad_utf8[i], out, sizeof out));
	static const char *const bad_utf7[] = {
	    "Entw\xc3\xbcrfe",   /* 8-bit */
	    "&APw",              /* no "-" */
	    "&-&",
	    "&AGE-",             /* "a" encoded */
	    "&2D0-",             /* a lone high surrogate */
	    "&3OcA-",            /* a lone low surrogate */
	    "&APx-",             /* bits left that are not zero */
	    "&A!w-",             /* not base64 */
	    "&APw/-",            /* "/" is not modified base64 */
	    "&AAA-",             /* U+0000 */
	    "&AOQ-&APY-",        /* two runs where one does */
	};
	for (size_t i = 0; i < ARRAY_LEN(bad_utf7); i++)
		if (imap_utf7_decode(bad_utf7[i], out, sizeof out))
			fail_msg("decoded %s", bad_utf7[i]);
}

static void test_does_not_fit(void **state)
{
	(void)state;
	char out[8];
	assert_false(imap_utf7_encode("\xc3\xa4\xc3\xb6\xc3\xbc", out, sizeof out));
	assert_true(imap_utf7_encode("Entw", out, sizeof out));
	assert_false(imap_utf7_decode("&AOQA9gD8-&AOQA9gD8-", out, sizeof out));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_both_ways),
	    cmocka_unit_test(test_invalid),
	    cmocka_unit_test(test_does_not_fit),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
