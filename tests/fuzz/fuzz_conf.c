/* libFuzzer entry point for conf, the configuration language: lexer,
 * parser, validation with FILE:LINE:COL errors, the include directive and
 * `posthorn check`'s plain-words policy.  A configuration is trusted
 * input, but it is the largest parser and `posthorn check` is what an
 * administrator runs on an unreviewed file.
 *
 * Includes are confined to a scratch folder holding a.conf (a server
 * block part), b.conf (includes a.conf), loop.conf (includes itself) and
 * bad.conf (errors): when the input mentions include, every '/' becomes
 * '_' so that no path leaves that folder.
 *
 * Input: the file's text (a NUL ends it, as a NUL in a file is refused). */
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "conf/conf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

#include "harness.h"

static char basedir[] = "/tmp/posthorn-fuzz-conf-XXXXXX";
static FILE *devnull;

static void put(const char *name, const char *text)
{
	char path[256];
	snprintf(path, sizeof path, "%s/%s", basedir, name);
	FILE *f = fopen(path, "w");
	CHECK(f != NULL);
	fputs(text, f);
	CHECK(fclose(f) == 0);
}

static void remove_basedir(void)
{
	static const char *const names[] = {"a.conf", "b.conf", "loop.conf", "bad.conf"};
	char path[256];
	for (size_t i = 0; i < 4; i++) {
		snprintf(path, sizeof path, "%s/%s", basedir, names[i]);
		unlink(path);
	}
	rmdir(basedir);
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	CHECK(mkdtemp(basedir) != NULL);
	atexit(remove_basedir);
	put("a.conf", "domains example.test\nhostname mx.example.test\n");
	put("b.conf", "include a.conf\naliases x/aliases\n");
	put("loop.conf", "include loop.conf\n");
	put("bad.conf", "nonsense 1 2 3\nserver {\n");
	devnull = fopen("/dev/null", "w");
	CHECK(devnull != NULL);
	return 0;
}

static void check_conf(const struct conf *c)
{
	CHECK(c->nfiles >= 1);
	for (size_t i = 0; i < c->ndomains; i++) {
		CHECK(c->domains[i] && c->domains[i][0]);
		CHECK(conf_is_local_domain(c, c->domains[i]));
	}
	for (size_t i = 0; i < c->nservers; i++) {
		const struct conf_server *s = &c->servers[i];
		CHECK(s->name && s->hostname);
		CHECK(s->auth.mechanisms < (1u << 3));
		for (size_t k = 0; k < s->connection.nrules; k++) {
			const struct conf_rule *r = &s->connection.rules[k];
			CHECK(r->text != NULL);
			CHECK(r->kind != RULE_NETWORK || r->prefix <= (r->family == AF_INET ? 32u : 128u));
			CHECK(r->kind != RULE_DOMAIN || r->domain != NULL);
		}
	}
	(void)conf_print_policy(c, devnull);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 65536)
		return 0;
	char *text = malloc(size + 1);
	CHECK(text != NULL);
	memcpy(text, data, size);
	text[size] = '\0';
	if (strstr(text, "include"))
		for (char *p = text; *p; p++)
			if (*p == '/')
				*p = '_';
	struct conf *c = (struct conf *)1;
	int errors = conf_parse_string("fuzz.conf", text, basedir, &c, devnull);
	CHECK(errors >= 0);
	if (errors == 0) {
		CHECK(c != NULL);
		check_conf(c);
		conf_free(c);
	} else {
		CHECK(c == NULL);
	}
	free(text);
	return 0;
}
