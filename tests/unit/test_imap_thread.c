/* Unit tests for imap_thread: the REFERENCES and ORDEREDSUBJECT
 * algorithms of RFC 5256 (§2.2, §3) on tables of small folders, and a
 * reply chain as deep as a folder is long. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "proto/imap/imap_subject.h"
#include "proto/imap/imap_thread.h"

enum { MSGS_MAX = 12, REFS_MAX = 4 };

struct msg_spec {
	const char *id;                  /* NULL: no Message-ID */
	const char *refs[REFS_MAX];      /* References, oldest first */
	const char *subject;
	int64_t date;
};

struct thread_case {
	const char *name;
	struct msg_spec m[MSGS_MAX];
	size_t n;
	const char *want;
};

/* The messages of a case as the algorithms take them (subjects reduced
 * to base subjects, numbered 1..n); free with msgs_free. */
static struct imap_thread_msg *msgs_of(const struct thread_case *c)
{
	struct imap_thread_msg *m = calloc(c->n, sizeof *m);
	for (size_t i = 0; i < c->n; i++) {
		const struct msg_spec *s = &c->m[i];
		size_t nrefs = 0;
		while (nrefs < REFS_MAX && s->refs[nrefs])
			nrefs++;
		m[i] = (struct imap_thread_msg){.num = (uint32_t)(i + 1), .date = s->date,
						.message_id = s->id, .refs = (char *const *)s->refs,
						.nrefs = nrefs};
		m[i].subject = imap_base_subject(s->subject, &m[i].reply);
	}
	return m;
}

static void msgs_free(struct imap_thread_msg *m, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free((char *)m[i].subject);
	free(m);
}

static const struct thread_case references_cases[] = {
	{"chain through a reference", {{"a", {0}, "", 3}, {"b", {"a", "c"}, "", 1}, {"c", {"b"}, "", 2}},
	 3, "(3 2)(1)"},
	{"same ID twice: two threads", {{"a", {0}, "", 1}, {"a", {0}, "", 1}}, 2, "(1)(2)"},
	{"same ID, subject reply", {{"a", {0}, "foo", 1}, {"a", {0}, "Re: foo", 2}}, 2, "(1 2)"},
	{"missing parent, subject merge", {{"a", {0}, "foo", 1}, {"b", {"c"}, "Re: foo", 2}}, 2, "(1 2)"},
	{"dummy root of two", {{NULL, {"a"}, "", 1}, {NULL, {"a"}, "", 2}}, 2, "((1)(2))"},
	{"replies in order", {{"1", {0}, "", 5}, {"2", {"1"}, "", 1}, {"3", {"1"}, "", 1}, {"4", {"2"}, "", 1}},
	 4, "(1 (2 4)(3))"},
	{"dummy with one child goes", {{"3", {"1"}, "", 1}, {"4", {"2"}, "", 1}}, 2, "(1)(2)"},
	{"duplicate ID under its reference",
	 {{"a", {0}, "", 1}, {"b", {"a"}, "", 1}, {"c", {"b"}, "", 1}, {"b", {"a"}, "", 1}}, 4,
	 "(1 (2 3)(4))"},
	{"a reply arriving before its parent", {{"b", {"a"}, "", 2}, {"a", {0}, "", 1}}, 2, "(2 1)"},
	{"a loop of references is cut", {{"a", {"b"}, "", 1}, {"b", {"a"}, "", 2}}, 2, "(2 1)"},
	{"own ID as reference", {{"a", {"a"}, "", 1}}, 1, "(1)"},
	{"two non-replies of a subject under a dummy",
	 {{"x", {0}, "hello", 1}, {"y", {0}, "hello", 2}, {"z", {0}, "other", 3}}, 3, "((1)(2))(3)"},
	{"replies join the original",
	 {{"x", {0}, "Re: hello", 2}, {"y", {0}, "hello", 1}, {"z", {0}, "Fwd: hello", 3}}, 3,
	 "(2 (1)(3))"},
	{"empty subjects never merge", {{"x", {0}, "", 1}, {"y", {0}, "Re:", 2}}, 2, "(1)(2)"},
	{"roots by date, dummy by its first child",
	 {{"p", {"q"}, "a", 5}, {"r", {"q"}, "b", 3}, {"s", {0}, "c", 4}}, 3, "((2)(1))(3)"},
};

static void test_references(void **state)
{
	for (size_t i = 0; i < sizeof references_cases / sizeof references_cases[0]; i++) {
		const struct thread_case *c = &references_cases[i];
		struct imap_thread_msg *m = msgs_of(c);
		size_t len;
		char *got = imap_thread_references(m, c->n, &len);
		if (strcmp(got, c->want) != 0 || len != strlen(c->want))
			fail_msg("%s: got %s, want %s", c->name, got, c->want);
		free(got);
		msgs_free(m, c->n);
	}
}

static const struct thread_case orderedsubject_cases[] = {
	{"one subject", {{NULL, {0}, "a", 1}}, 1, "(1)"},
	{"a reply is a child", {{NULL, {0}, "a", 1}, {NULL, {0}, "Re: a", 2}}, 2, "(1 2)"},
	{"children by date, threads by their first date",
	 {{NULL, {0}, "b", 4}, {NULL, {0}, "Re: a", 3}, {NULL, {0}, "a", 2}, {NULL, {0}, "b", 1},
	  {NULL, {0}, "re: b", 5}, {NULL, {0}, "A", 6}},
	 6, "(4 (1)(5))(3 (2)(6))"},
	{"date ties by sequence", {{NULL, {0}, "x", 1}, {NULL, {0}, "y", 1}, {NULL, {0}, "x", 1}}, 3,
	 "(1 3)(2)"},
};

static void test_orderedsubject(void **state)
{
	for (size_t i = 0; i < sizeof orderedsubject_cases / sizeof orderedsubject_cases[0]; i++) {
		const struct thread_case *c = &orderedsubject_cases[i];
		struct imap_thread_msg *m = msgs_of(c);
		size_t len;
		char *got = imap_thread_orderedsubject(m, c->n, &len);
		if (strcmp(got, c->want) != 0)
			fail_msg("%s: got %s, want %s", c->name, got, c->want);
		free(got);
		msgs_free(m, c->n);
	}
}

/* 100,000 messages each replying to the one before: no recursion, one
 * thread "(1 2 3 ... n)". */
static void test_deep_chain(void **state)
{
	enum { N = 100000 };
	struct imap_thread_msg *m = calloc(N, sizeof *m);
	char (*ids)[16] = calloc(N, sizeof *ids);
	char **refs = calloc(N, sizeof *refs);
	for (size_t i = 0; i < N; i++) {
		snprintf(ids[i], sizeof ids[i], "m%zu", i);
		refs[i] = i ? ids[i - 1] : NULL;
		m[i] = (struct imap_thread_msg){.num = (uint32_t)(i + 1), .date = (int64_t)i,
						.subject = "", .message_id = ids[i],
						.refs = &refs[i], .nrefs = i ? 1 : 0};
	}
	size_t len;
	char *got = imap_thread_references(m, N, &len);
	assert_int_equal(got[0], '(');
	assert_int_equal(strncmp(got, "(1 2 3 ", 7), 0);
	assert_non_null(strstr(got, " 99999 100000)"));
	assert_null(strchr(got + 1, '('));
	free(got);
	free(m);
	free(ids);
	free(refs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_references),
		cmocka_unit_test(test_orderedsubject),
		cmocka_unit_test(test_deep_chain),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
