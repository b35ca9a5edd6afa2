/* libFuzzer entry point for the aliases file and the user database file:
 * the loaders (every error as FILE:LINE:COL) and alias expansion, which
 * SMTP runs for every RCPT (recursion, loops, de-duplication, the depth
 * limit).  Checks: an expansion is de-duplicated and lower case, an
 * address that is no alias expands to itself, and no expansion takes
 * long (libFuzzer's timeout).
 *
 * Input: byte 0 = mode (bit 0: a users file instead of aliases), then the
 * file's text. */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "auth/aliases.h"
#include "harness.h"
#include "auth/userdb.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static FILE *devnull;

static void check_expansion(const struct aliases *al, const char *address)
{
	char **list = NULL;
	size_t n = aliases_expand(al, address, &list);
	CHECK((n == 0) == (list == NULL));
	for (size_t i = 0; i < n; i++) {
		CHECK(list[i] && list[i][0]);
		for (const char *p = list[i]; *p; p++)
			CHECK(!(*p >= 'A' && *p <= 'Z'));
		for (size_t k = 0; k < i; k++)
			CHECK(strcmp(list[k], list[i]) != 0);
		/* a final address is no alias */
		size_t m;
		CHECK(aliases_lookup(al, list[i], &m) == NULL);
	}
	size_t direct;
	if (!aliases_lookup(al, address, &direct)) {
		CHECK(n == 1);
		CHECK(strcasecmp(list[0], address) == 0);
	}
	aliases_free_list(list, n);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 32768)
		return 0;
	if (!devnull)
		devnull = fopen("/dev/null", "w");
	CHECK(devnull != NULL);
	char name[64];
	snprintf(name, sizeof name, "file-%d", (int)(data[0] & 1));
	char *text = malloc(size);
	CHECK(text != NULL);
	memcpy(text, data + 1, size - 1);
	text[size - 1] = '\0';
	const char *path = fuzz_put(name, text);
	if (data[0] & 1) {
		struct userdb *db = NULL;
		if (userdb_load(path, &db, devnull) == 0) {
			for (size_t i = 0; i < userdb_count(db); i++) {
				const struct user_record *r = userdb_at(db, i);
				CHECK(r && r->address && userdb_find(db, r->address) != NULL);
				CHECK(userdb_check_address(r->address) == NULL);
				CHECK(r->salt_len <= USERDB_SALT_MAX);
			}
			userdb_free(db);
		}
	} else {
		struct aliases *al = NULL;
		if (aliases_load(path, &al, devnull) == 0) {
			CHECK(al != NULL);
			/* the key of each line, and a name that is no alias */
			const char *line = text;
			for (int k = 0; line && k < 32; k++) {
				const char *colon = strchr(line, ':');
				const char *nl = strchr(line, '\n');
				if (colon && (!nl || colon < nl) && colon - line < 300) {
					char key[300];
					memcpy(key, line, (size_t)(colon - line));
					key[colon - line] = '\0';
					check_expansion(al, key);
				}
				line = nl ? nl + 1 : NULL;
			}
			check_expansion(al, "nobody@nowhere.example");
			aliases_free(al);
		}
	}
	free(text);
	return 0;
}
