/* libFuzzer entry point for the folder listing's snapshot (listing.c), the
 * bytes of a posthorn-listing file that another node or a crash may have
 * left.  Checks: a snapshot read has its UIDs ascending below UIDNEXT,
 * MODSEQs at most HIGHESTMODSEQ, every name a NUL-terminated string inside
 * the names block; and written again it reads back the same.
 *
 * Input: the file's bytes. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "harness.h"
#include "store/listing.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_listing(const struct listing *l)
{
	CHECK(l->n == l->h.count);
	for (size_t i = 0; i < l->n; i++) {
		const struct listing_msg *m = &l->v[i];
		CHECK(m->uid > 0 && m->uid < l->h.uidnext);
		CHECK(i == 0 || l->v[i - 1].uid < m->uid);
		CHECK(m->modseq <= l->h.highest);
		CHECK(m->name >= l->names && m->name < l->names + l->names_len);
		size_t left = (size_t)(l->names + l->names_len - m->name);
		size_t len = strnlen(m->name, left);
		CHECK(len > 0 && len < left && len <= LISTING_NAME_MAX);
		CHECK(strchr(m->name, '/') == NULL);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct listing l;
	if (listing_decode(data, size, &l) != LISTING_OK)
		return 0;
	check_listing(&l);
	struct listing_out o;
	listing_out_begin(&o, &l.h);
	for (size_t i = 0; i < l.n; i++)
		CHECK(listing_out_add(&o, &l.v[i]));
	CHECK(listing_out_seal(&o));
	CHECK(o.n == size && memcmp(o.p, data, size) == 0);
	listing_out_free(&o);
	listing_free(&l);
	return 0;
}
