/* libFuzzer entry point for MTA-STS texts (net/mtasts.h): the "_mta-sts"
 * TXT record and the policy file come from whoever runs the receiving
 * domain.  The input is read both ways.  Checks: an id is 1 to 32 letters
 * and digits; a parsed policy has a known mode, max_age at most a year, at
 * most MTASTS_MX_MAX patterns (at least one unless mode none), each lower
 * case; a copy matches exactly what the original matches. */
#include <ctype.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "net/mtasts.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#include "harness.h"

static void check_policy(const struct mtasts_policy *p)
{
	CHECK(p->mode == MTASTS_NONE || p->mode == MTASTS_TESTING || p->mode == MTASTS_ENFORCE);
	CHECK(p->max_age <= MTASTS_MAX_AGE_MAX);
	CHECK(p->nmx <= MTASTS_MX_MAX);
	CHECK(p->mode == MTASTS_NONE || p->nmx > 0);
	for (size_t i = 0; i < p->nmx; i++)
		for (const char *c = p->mx[i]; *c; c++)
			CHECK(!isupper((unsigned char)*c));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const char *text = (const char *)data;
	char id[MTASTS_ID_MAX + 1];
	if (mtasts_record_id(text, size, id)) {
		CHECK(mtasts_record_is_sts(text, size));
		size_t n = strlen(id);
		CHECK(n >= 1 && n <= MTASTS_ID_MAX);
		for (size_t i = 0; i < n; i++)
			CHECK(isalnum((unsigned char)id[i]));
	}
	struct mtasts_policy p, copy;
	char err[128];
	if (!mtasts_policy_parse(text, size, &p, err, sizeof err))
		return 0;
	check_policy(&p);
	mtasts_policy_copy(&copy, &p);
	static const char *const hosts[] = {"mx1.example.net", "a.b.example.net", "example.net",
					    "MX1.EXAMPLE.NET.", "x"};
	for (size_t i = 0; i < sizeof hosts / sizeof hosts[0]; i++)
		CHECK(mtasts_mx_matches(&p, hosts[i]) == mtasts_mx_matches(&copy, hosts[i]));
	mtasts_policy_clear(&copy);
	mtasts_policy_clear(&p);
	return 0;
}
