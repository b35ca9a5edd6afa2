/* Unit tests for imap_sort and imap_subject: the base subject of RFC
 * 5256 §2.1, i;unicode-casemap (RFC 5051), and the order of SORT's keys
 * with REVERSE and the tie on sequence numbers (§3). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/imap/imap_sort.h"
#include "proto/imap/imap_subject.h"

static void test_base_subject(void **state)
{
	static const struct {
		const char *in;
		const char *base;
		bool reply;
	} cases[] = {
		{NULL, "", false},
		{"", "", false},
		{"a", "A", false},
		{"  Hello\t  world  ", "HELLO WORLD", false},
		{"Re: hello", "HELLO", true},
		{"RE: Re: re:hello", "HELLO", true},
		{"Fwd: hello", "HELLO", true},
		{"fw: hello", "HELLO", true},
		{"Re [foo]: hello", "HELLO", true},            /* subj-refwd with a blob */
		{"[foo] Fwd: [bar] Re: fw: b (fWd)  (fwd)", "B", true},
		{"hello (fwd)", "HELLO", true},
		{"Re: [FWD: c]", "C", true},
		{"[xyz]", "[XYZ]", false},                      /* a blob that is all of it stays */
		{"[list] topic", "TOPIC", false},               /* a leading blob goes */
		{"[a][b] topic", "TOPIC", false},
		{"re: [fwd: [fwd: re: [fwd: babylon]]]", "BABYLON", true},
		{"Ad: Re: Ad: Re: Ad: x", "AD: RE: AD: RE: AD: X", false},
		{"Rex: hello", "REX: HELLO", false},             /* not "re" then ":" */
		{"Re:", "", true},
		{"[fwd: ]", "", true},
		{"_", "_", false},
		{"b (a)", "B (A)", false},
		{"Réponse: été", "RE\xcc\x81PONSE: E\xcc\x81TE\xcc\x81", false}, /* NFKD, titlecase */
	};
	for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
		bool reply = !cases[i].reply;
		char *b = imap_base_subject(cases[i].in, &reply);
		if (strcmp(b, cases[i].base) != 0 || reply != cases[i].reply)
			fail_msg("case %zu \"%s\": got \"%s\" reply=%d", i, cases[i].in ? cases[i].in : "(null)",
				 b, reply);
		free(b);
	}
}

static void test_casemap(void **state)
{
	char *a = imap_casemap("foo_bar[1]");
	assert_string_equal(a, "FOO_BAR[1]");
	free(a);
	/* precomposed "é" and "e" with a combining acute accent are one */
	char *b = imap_casemap("caf\xc3\xa9");
	char *c = imap_casemap("CAFe\xcc\x81");
	assert_string_equal(b, c);
	assert_string_equal(b, "CAFE\xcc\x81");
	free(b);
	free(c);
	char *d = imap_casemap("\xff\xfe"); /* invalid UTF-8 is made valid */
	assert_non_null(d);
	free(d);
}

static struct imap_sortkey *key(const char *subject, const char *from, int64_t date)
{
	struct imap_sortkey *k = calloc(1, sizeof *k);
	k->subject = (char *)subject;
	k->from = (char *)from;
	k->to = k->cc = k->display_from = k->display_to = (char *)"";
	k->date = date;
	return k;
}

static void order_is(const struct imap_sortitem *items, size_t n, const uint32_t *want)
{
	for (size_t i = 0; i < n; i++)
		if (items[i].seq != want[i])
			fail_msg("position %zu: %u, want %u", i, items[i].seq, want[i]);
}

static void test_sort_items(void **state)
{
	struct imap_sortkey *k[5] = {key("B", "X", 30), key("A", "Y", 10), key("B", "X", 20),
				     key("A", "X", 10), key("", "", 40)};
	struct imap_sortitem items[5];
	for (size_t i = 0; i < 5; i++)
		items[i] = (struct imap_sortitem){.seq = (uint32_t)(i + 1), .uid = (uint32_t)(10 * (i + 1)),
						  .arrival = 100 - (long long)i, .size = i % 2, .key = k[i]};
	struct imap_sort_criteria cr = {.n = 1, .v = {{IMAP_SORT_SUBJECT, false}}};
	imap_sort_items(items, 5, &cr);
	order_is(items, 5, (const uint32_t[]){5, 2, 4, 1, 3}); /* ties by sequence */
	cr = (struct imap_sort_criteria){.n = 2, .v = {{IMAP_SORT_SUBJECT, true}, {IMAP_SORT_DATE, false}}};
	imap_sort_items(items, 5, &cr);
	order_is(items, 5, (const uint32_t[]){3, 1, 2, 4, 5});
	cr = (struct imap_sort_criteria){.n = 1, .v = {{IMAP_SORT_DATE, true}}};
	imap_sort_items(items, 5, &cr);
	order_is(items, 5, (const uint32_t[]){5, 1, 3, 2, 4}); /* REVERSE keeps ties ascending */
	cr = (struct imap_sort_criteria){.n = 2, .v = {{IMAP_SORT_SIZE, false}, {IMAP_SORT_ARRIVAL, false}}};
	imap_sort_items(items, 5, &cr);
	order_is(items, 5, (const uint32_t[]){5, 3, 1, 4, 2});
	cr = (struct imap_sort_criteria){.n = 2, .v = {{IMAP_SORT_FROM, false}, {IMAP_SORT_SUBJECT, true}}};
	imap_sort_items(items, 5, &cr);
	order_is(items, 5, (const uint32_t[]){5, 1, 3, 4, 2});
	for (size_t i = 0; i < 5; i++)
		free(k[i]);
}

/* Keys alike in their first 16 or 24 octets (what a sort abbreviates),
 * equal long keys, dates either side of the epoch: the order strcmp and
 * the numbers give, whichever way round. */
static void test_sort_long_keys(void **state)
{
	(void)state;
	static const char *const subjects[] = {
		"topic 12345 throughput", "topic 12345 throughpus", "topic 12345 through",
		"topic 12345 throughput and more", "topic 12345 throughput and less",
		"topic 12345 throughput", "a", "", "topic 12345 throughput and more",
		"\xc3\xa9t\xc3\xa9", "topic 12345 throughputs",
	};
	enum { N = sizeof subjects / sizeof *subjects };
	struct imap_sortkey *k[N];
	struct imap_sortitem items[N];
	for (size_t i = 0; i < N; i++) {
		k[i] = key(subjects[i], "", (int64_t)i * 1000 - 4000);
		items[i] = (struct imap_sortitem){.seq = (uint32_t)(i + 1), .key = k[i]};
	}
	struct imap_sort_criteria cr = {.n = 1, .v = {{IMAP_SORT_SUBJECT, false}}};
	imap_sort_items(items, N, &cr);
	order_is(items, N, (const uint32_t[]){8, 7, 3, 2, 1, 6, 5, 4, 9, 11, 10});
	cr = (struct imap_sort_criteria){.n = 2, .v = {{IMAP_SORT_SUBJECT, true}, {IMAP_SORT_DATE, true}}};
	imap_sort_items(items, N, &cr);
	order_is(items, N, (const uint32_t[]){10, 11, 9, 4, 5, 6, 1, 2, 3, 7, 8});
	cr = (struct imap_sort_criteria){.n = 1, .v = {{IMAP_SORT_DATE, true}}};
	imap_sort_items(items, N, &cr);
	order_is(items, N, (const uint32_t[]){11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1});
	for (size_t i = 0; i < N; i++)
		free(k[i]);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base_subject),
		cmocka_unit_test(test_casemap),
		cmocka_unit_test(test_sort_items),
		cmocka_unit_test(test_sort_long_keys),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
