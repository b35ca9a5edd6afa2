/* libFuzzer entry point for imap_notify's parser: the bytes after
 * "t NOTIFY " as a client sends them, through the IMAP command parser and
 * then imap_notify_parse (RFC 5465 §8).  Checks the bounds the session
 * relies on: at most IMAP_NOTIFY_GROUPS_MAX groups and
 * IMAP_NOTIFY_NAMES_MAX names in each, every name a non-empty C string,
 * only known events and fetch attributes, a reason for every refusal.
 * Leaks are found by LeakSanitizer. */
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <event2/buffer.h>

#include "harness.h"
#include "proto/imap/imap_notify.h"
#include "proto/imap/imap_parse.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check_spec(const struct imap_notify_spec *spec)
{
	const unsigned events = IMAP_NOTIFY_MESSAGE_NEW | IMAP_NOTIFY_MESSAGE_EXPUNGE |
				IMAP_NOTIFY_FLAG_CHANGE | IMAP_NOTIFY_MAILBOX_NAME |
				IMAP_NOTIFY_SUBSCRIPTION_CHANGE;
	const unsigned fetch = IMAP_NOTIFY_FETCH_UID | IMAP_NOTIFY_FETCH_FLAGS |
			       IMAP_NOTIFY_FETCH_SIZE | IMAP_NOTIFY_FETCH_INTERNALDATE;
	CHECK(spec->ngroups <= IMAP_NOTIFY_GROUPS_MAX);
	CHECK((spec->fetch & ~fetch) == 0);
	CHECK(!spec->none || spec->ngroups == 0);
	for (size_t i = 0; i < spec->ngroups; i++) {
		const struct imap_notify_group *g = &spec->groups[i];
		CHECK((g->events & ~events) == 0);
		CHECK(g->nnames <= IMAP_NOTIFY_NAMES_MAX);
		for (size_t k = 0; k < g->nnames; k++)
			CHECK(g->names[k] && g->names[k][0] != '\0');
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct imap_parser *p = imap_parser_new();
	struct evbuffer *in = evbuffer_new();
	CHECK(in != NULL);
	CHECK(evbuffer_add(in, "t NOTIFY ", 9) == 0);
	CHECK(evbuffer_add(in, data, size) == 0);
	CHECK(evbuffer_add(in, "\r\n", 2) == 0);
	struct imap_command *c = NULL;
	if (imap_parse_feed(p, in, &c) == IMAP_PARSE_COMMAND && c) {
		struct imap_notify_spec spec;
		const char *why = NULL;
		enum imap_notify_parse_result r = imap_notify_parse(&c->args, &spec, &why);
		if (r == IMAP_NOTIFY_PARSE_OK)
			check_spec(&spec);
		else
			CHECK(why != NULL && strlen(why) > 0);
		imap_notify_spec_free(&spec);
		imap_command_free(c);
	}
	imap_parser_free(p);
	evbuffer_free(in);
	return 0;
}
