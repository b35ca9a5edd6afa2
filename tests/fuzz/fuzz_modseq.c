/* libFuzzer entry point for the MODSEQ file (modseq.c, RFC 7162): its
 * parser, on any bytes, then a listing reconciled against what was read.
 * Checks: a parsed table is sorted by UID with MODSEQs in 1 .. HIGHESTMODSEQ,
 * its expunges sorted by MODSEQ and at or below HIGHESTMODSEQ; a listing
 * gives every message a MODSEQ, never one given before (above the parsed
 * HIGHESTMODSEQ when new, the old one when unchanged), and HIGHESTMODSEQ
 * only rises.
 *
 * Input: the file's text. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "store/modseq.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_table(const struct modseq_table *t)
{
	CHECK(t->forgotten <= t->highest);
	for (size_t i = 0; i < t->n; i++) {
		CHECK(t->v[i].modseq >= 1 && t->v[i].modseq <= t->highest);
		CHECK(i == 0 || t->v[i - 1].uid < t->v[i].uid);
	}
	for (size_t i = 0; i < t->nx; i++) {
		CHECK(t->x[i].modseq >= 1 && t->x[i].modseq <= t->highest);
		CHECK(i == 0 || t->x[i - 1].modseq <= t->x[i].modseq);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct modseq_table t;
	if (!modseq_parse((const char *)data, size, &t))
		return 0;
	check_table(&t);
	/* a listing: every other message of the table kept, one flag changed,
	 * one new message above them */
	uint64_t before = t.highest;
	struct modseq_table old = t;
	old.v = t.n ? malloc(t.n * sizeof *t.v) : NULL;
	if (t.n)
		memcpy(old.v, t.v, t.n * sizeof *t.v);
	struct modseq_msg *cur = calloc(t.n + 1, sizeof *cur);
	CHECK(cur != NULL);
	size_t n = 0;
	for (size_t i = 0; i < t.n; i += 2) {
		cur[n] = t.v[i];
		cur[n].modseq = 0;
		if (i == 2)
			cur[n].flags ^= 1;
		n++;
	}
	uint32_t top = t.n ? t.v[t.n - 1].uid : 0;
	if (top < UINT32_MAX)
		cur[n++] = (struct modseq_msg){.uid = top + 1};
	modseq_reconcile(&t, t.validity, cur, n);
	CHECK(t.highest >= before);
	for (size_t i = 0; i < n; i++) {
		CHECK(cur[i].modseq >= 1);
		bool same = false;
		for (size_t k = 0; k < old.n; k++)
			if (old.v[k].uid == cur[i].uid && old.v[k].flags == cur[i].flags)
				same = cur[i].modseq == old.v[k].modseq;
		CHECK(same || cur[i].modseq > before || before == 0x7fffffffffffffffULL);
	}
	check_table(&t);
	free(cur);
	free(old.v);
	modseq_free(&t);
	return 0;
}
