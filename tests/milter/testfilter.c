/* testfilter: a mail filter on Debian's libmilter for posthorn's
 * integration tests (tests/integration/test_milter.py).  What it does
 * with a message is chosen by the message itself:
 *   HELO reject-helo              SMFIS_REJECT at HELO
 *   HELO tempfail-helo            SMFIS_TEMPFAIL at HELO
 *   MAIL FROM:<reject-mail@...>   SMFIS_REJECT at MAIL
 *   RCPT TO:<alice@example.org>   SMFIS_TEMPFAIL at RCPT
 *   RCPT TO:<postmaster@...>      SMFIS_REJECT at RCPT (that recipient only)
 *   X-Test-Action: WORD[,WORD]    at the end of the message, one or more of
 *     accept reject tempfail discard quarantine replycode multiline
 *     addheader insheader chgheader delheader chgfrom addrcpt delrcpt
 *     replbody replbody-big (a 10 MiB body) macros (the macros seen,
 *     as a header field) progress (smfi_progress, then continue)
 * and continue for anything else.  In the environment,
 * TESTFILTER_CONNECT=reject|tempfail refuses every connection at the
 * connect step, and TESTFILTER_EVENTS=FILE gets a line per connection
 * ("connect"), aborted transaction ("abort") and closed one ("close").
 * Usage: testfilter inet:PORT@127.0.0.1 (foreground; SIGTERM stops it). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <libmilter/mfapi.h>

enum { BIG_BODY = 10 * 1024 * 1024, ACTION_MAX = 512, MACROS_MAX = 1024 };

struct msg {
	char action[ACTION_MAX];
	char macros[MACROS_MAX];
};

static struct msg *msg_of(SMFICTX *ctx)
{
	struct msg *m = smfi_getpriv(ctx);
	if (!m) {
		m = calloc(1, sizeof *m);
		if (m && smfi_setpriv(ctx, m) != MI_SUCCESS) {
			free(m);
			m = NULL;
		}
	}
	return m;
}

static int has(const struct msg *m, const char *word)
{
	char copy[ACTION_MAX];
	snprintf(copy, sizeof copy, "%s", m->action);
	for (char *save = NULL, *w = strtok_r(copy, ", ", &save); w; w = strtok_r(NULL, ", ", &save))
		if (strcasecmp(w, word) == 0)
			return 1;
	return 0;
}

static void note_macro(SMFICTX *ctx, struct msg *m, const char *name)
{
	const char *v = smfi_getsymval(ctx, (char *)name);
	size_t n = strlen(m->macros);
	snprintf(m->macros + n, sizeof m->macros - n, "%s%s=%s", n ? " " : "", name, v ? v : "-");
}

/* A line in TESTFILTER_EVENTS, when set. */
static void note_event(const char *what)
{
	const char *path = getenv("TESTFILTER_EVENTS");
	if (!path)
		return;
	FILE *f = fopen(path, "a");
	if (!f)
		return;
	fprintf(f, "%s\n", what);
	fclose(f);
}

static sfsistat tf_connect(SMFICTX *ctx, char *name, struct sockaddr *addr)
{
	const char *mode = getenv("TESTFILTER_CONNECT");
	note_event("connect");
	if (mode && strcmp(mode, "reject") == 0)
		return SMFIS_REJECT;
	if (mode && strcmp(mode, "tempfail") == 0)
		return SMFIS_TEMPFAIL;
	return SMFIS_CONTINUE;
}

static sfsistat tf_helo(SMFICTX *ctx, char *helo)
{
	if (strcmp(helo, "reject-helo") == 0)
		return SMFIS_REJECT;
	if (strcmp(helo, "tempfail-helo") == 0)
		return SMFIS_TEMPFAIL;
	return SMFIS_CONTINUE;
}

static sfsistat tf_envfrom(SMFICTX *ctx, char **argv)
{
	struct msg *m = msg_of(ctx);
	if (!m)
		return SMFIS_TEMPFAIL;
	memset(m, 0, sizeof *m);
	note_macro(ctx, m, "{client_addr}");
	note_macro(ctx, m, "j");
	note_macro(ctx, m, "{daemon_name}");
	note_macro(ctx, m, "{mail_addr}");
	note_macro(ctx, m, "{auth_authen}");
	note_macro(ctx, m, "{tls_version}");
	note_macro(ctx, m, "{cipher}");
	if (strncasecmp(argv[0], "<reject-mail@", 13) == 0)
		return SMFIS_REJECT;
	return SMFIS_CONTINUE;
}

static sfsistat tf_envrcpt(SMFICTX *ctx, char **argv)
{
	struct msg *m = msg_of(ctx);
	if (m)
		note_macro(ctx, m, "{rcpt_addr}");
	if (strcasecmp(argv[0], "<alice@example.org>") == 0)
		return SMFIS_TEMPFAIL;
	if (strncasecmp(argv[0], "<postmaster@", 12) == 0)
		return SMFIS_REJECT;
	return SMFIS_CONTINUE;
}

static sfsistat tf_header(SMFICTX *ctx, char *name, char *value)
{
	struct msg *m = msg_of(ctx);
	if (m && strcasecmp(name, "X-Test-Action") == 0)
		snprintf(m->action, sizeof m->action, "%s", value);
	return SMFIS_CONTINUE;
}

static sfsistat tf_body(SMFICTX *ctx, unsigned char *chunk, size_t len)
{
	return SMFIS_CONTINUE;
}

static int replace_big_body(SMFICTX *ctx)
{
	/* 10 MiB of 76-character lines, "BIG" at the start of each */
	static const char line[] = "BIG-0123456789012345678901234567890123456789012345678901234567890123456\r\n";
	size_t n = strlen(line);
	size_t lines = BIG_BODY / n;
	char *buf = malloc(64 * n);
	if (!buf)
		return MI_FAILURE;
	for (size_t i = 0; i < 64; i++)
		memcpy(buf + i * n, line, n);
	int r = MI_SUCCESS;
	for (size_t done = 0; done < lines && r == MI_SUCCESS; done += 64)
		r = smfi_replacebody(ctx, (unsigned char *)buf, (int)(64 * n));
	free(buf);
	return r;
}

static int modify(SMFICTX *ctx, struct msg *m)
{
	int r = MI_SUCCESS;
	if (has(m, "addheader"))
		r |= smfi_addheader(ctx, "X-Test-Added", "yes");
	if (has(m, "insheader"))
		r |= smfi_insheader(ctx, 0, "X-Test-First", "inserted at the top");
	if (has(m, "chgheader"))
		r |= smfi_chgheader(ctx, "Subject", 1, "changed by the filter");
	if (has(m, "delheader"))
		r |= smfi_chgheader(ctx, "X-Test-Remove", 1, NULL);
	if (has(m, "chgfrom"))
		r |= smfi_chgfrom(ctx, "<changed@example.net>", NULL);
	if (has(m, "addrcpt"))
		r |= smfi_addrcpt(ctx, "<carol@example.test>");
	if (has(m, "delrcpt"))
		r |= smfi_delrcpt(ctx, "<dave@example.test>");
	if (has(m, "quarantine"))
		r |= smfi_quarantine(ctx, "test quarantine");
	if (has(m, "macros"))
		r |= smfi_addheader(ctx, "X-Test-Macros", m->macros);
	if (has(m, "progress"))
		r |= smfi_progress(ctx);
	if (has(m, "replbody")) {
		static const char body[] = "The body was replaced.\r\n";
		r |= smfi_replacebody(ctx, (unsigned char *)body, (int)strlen(body));
	}
	if (has(m, "replbody-big"))
		r |= replace_big_body(ctx);
	return r;
}

static sfsistat tf_eom(SMFICTX *ctx)
{
	struct msg *m = msg_of(ctx);
	if (!m)
		return SMFIS_TEMPFAIL;
	note_macro(ctx, m, "i"); /* the queue ID: known at the end of the message */
	if (has(m, "reject"))
		return SMFIS_REJECT;
	if (has(m, "tempfail"))
		return SMFIS_TEMPFAIL;
	if (has(m, "discard"))
		return SMFIS_DISCARD;
	if (has(m, "replycode")) {
		smfi_setreply(ctx, "554", "5.7.0", "Rejected by the test filter");
		return SMFIS_REJECT;
	}
	if (has(m, "multiline")) {
		smfi_setmlreply(ctx, "450", "4.7.0", "first line", "second line", NULL);
		return SMFIS_TEMPFAIL;
	}
	if (modify(ctx, m) != MI_SUCCESS)
		return SMFIS_TEMPFAIL;
	return has(m, "accept") ? SMFIS_ACCEPT : SMFIS_CONTINUE;
}

static sfsistat tf_abort(SMFICTX *ctx)
{
	note_event("abort");
	return SMFIS_CONTINUE;
}

static sfsistat tf_close(SMFICTX *ctx)
{
	note_event("close");
	free(smfi_getpriv(ctx));
	smfi_setpriv(ctx, NULL);
	return SMFIS_CONTINUE;
}

int main(int argc, char **argv)
{
	struct smfiDesc desc = {
		.xxfi_name = "posthorn-testfilter",
		.xxfi_version = SMFI_VERSION,
		.xxfi_flags = SMFIF_ADDHDRS | SMFIF_CHGHDRS | SMFIF_CHGBODY | SMFIF_ADDRCPT |
			      SMFIF_DELRCPT | SMFIF_QUARANTINE | SMFIF_CHGFROM,
		.xxfi_connect = tf_connect,
		.xxfi_helo = tf_helo,
		.xxfi_envfrom = tf_envfrom,
		.xxfi_envrcpt = tf_envrcpt,
		.xxfi_header = tf_header,
		.xxfi_body = tf_body,
		.xxfi_eom = tf_eom,
		.xxfi_abort = tf_abort,
		.xxfi_close = tf_close,
	};
	if (argc != 2) {
		fprintf(stderr, "usage: testfilter inet:PORT@127.0.0.1\n");
		return 2;
	}
	if (smfi_setconn(argv[1]) != MI_SUCCESS || smfi_register(desc) != MI_SUCCESS) {
		fprintf(stderr, "testfilter: cannot set up %s\n", argv[1]);
		return 1;
	}
	return smfi_main() == MI_SUCCESS ? 0 : 1;
}
