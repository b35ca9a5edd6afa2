/* The cost of DKIM signing on the outbound path (mailauth/dkim_sign.h):
 * one message hashed and signed as the outbound signer does it, for three
 * message sizes and the keys rsa-sha256 (2048 bits), ed25519-sha256 and
 * both at once.  Each case runs for at most BENCH_SECONDS or BENCH_MAX
 * messages, one thread; prints microseconds per message.
 * Build and run: make bench-dkim. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lib/util.h"
#include "mailauth/dkim_key.h"
#include "mailauth/dkim_sign.h"

enum { BENCH_MAX = 5000, CHUNK = 64 * 1024 };
static const double BENCH_SECONDS = 1.0;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* A message of about size bytes: a usual header, lines of 76 characters. */
static char *make_message(size_t size, size_t *len)
{
	char *m = xmalloc(size + 1024);
	int n = snprintf(m, 1024,
			 "From: Alice <alice@example.test>\r\nTo: bob@example.net\r\n"
			 "Subject: benchmark\r\nDate: Mon, 7 Dec 2026 23:00:00 +0000\r\n"
			 "Message-ID: <bench@example.test>\r\nMIME-Version: 1.0\r\n"
			 "Content-Type: text/plain; charset=utf-8\r\n\r\n");
	size_t k = (size_t)n;
	while (k + 78 <= size) {
		memset(m + k, 'x', 76);
		memcpy(m + k + 76, "\r\n", 2);
		k += 78;
	}
	*len = k;
	return m;
}

static void sign_once(const struct dkim_privkey *keys, size_t nkeys, const char *msg, size_t len)
{
	struct dkim_sign *s = dkim_sign_new();
	for (size_t i = 0; i < len; i += CHUNK) /* as the signer reads the spool file */
		dkim_sign_feed(s, msg + i, len - i < CHUNK ? len - i : CHUNK);
	char err[128];
	char *f = dkim_sign_finish(s, keys, nkeys, time(NULL), err, sizeof err);
	if (!f)
		fatal("not signed: %s", err);
	free(f);
	dkim_sign_free(s);
}

static void key_of(struct dkim_privkey *k, enum dkim_key_type t, const char *sel)
{
	memset(k, 0, sizeof *k);
	k->domain = xstrdup("example.test");
	k->selector = xstrdup(sel);
	k->type = t;
	k->pkey = dkim_key_generate(t);
	if (!k->pkey)
		fatal("no key");
}

int main(void)
{
	struct dkim_privkey keys[2];
	key_of(&keys[0], DKIM_KEY_RSA, "rsa");
	key_of(&keys[1], DKIM_KEY_ED25519, "ed");
	const size_t sizes[] = {4 * 1024, 64 * 1024, 1024 * 1024};
	const struct {
		const char *name;
		size_t first, n;
	} sets[] = {{"rsa-2048", 0, 1}, {"ed25519", 1, 1}, {"both", 0, 2}};
	printf("%-10s %10s %12s %12s\n", "keys", "message", "us/message", "messages/s");
	for (size_t si = 0; si < 3; si++) {
		size_t len;
		char *msg = make_message(sizes[si], &len);
		for (size_t ki = 0; ki < 3; ki++) {
			unsigned n = 0;
			double start = now(), t = start;
			while (n < BENCH_MAX && t - start < BENCH_SECONDS) {
				sign_once(&keys[sets[ki].first], sets[ki].n, msg, len);
				n++;
				t = now();
			}
			double us = (t - start) * 1e6 / n;
			printf("%-10s %9zuK %12.1f %12.0f\n", sets[ki].name, len / 1024, us, 1e6 / us);
		}
		free(msg);
	}
	dkim_privkey_clear(&keys[0]);
	dkim_privkey_clear(&keys[1]);
	return 0;
}
