/* test_runtime: loading a configuration generation — here, that the
 * errors of one that does not load are logged one per line, escaped, so
 * that the '"' configuration messages put around values cannot end the
 * message="..." value early. */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "lib/log.h"
#include "lib/util.h"
#include "runtime/runtime.h"

/* Everything written to stderr while loading path. */
static char *load_logged(const char *path, struct runtime **rt)
{
	char logpath[] = "/tmp/posthorn-runtime-log-XXXXXX";
	int fd = mkstemp(logpath);
	assert_true(fd >= 0);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	*rt = runtime_load(path, NULL, NULL);
	assert_true(dup2(saved, STDERR_FILENO) >= 0);
	close(saved);
	off_t n = lseek(fd, 0, SEEK_END);
	assert_true(n >= 0);
	char *text = xmalloc((size_t)n + 1);
	assert_int_equal(pread(fd, text, (size_t)n, 0), (ssize_t)n);
	text[n] = '\0';
	close(fd);
	unlink(logpath);
	return text;
}

static void test_config_errors_escaped(void **state)
{
	char path[] = "/tmp/posthorn-runtime-conf-XXXXXX";
	int fd = mkstemp(path);
	assert_true(fd >= 0);
	static const char text[] = "frobnicate yes\n";
	assert_int_equal(write(fd, text, sizeof text - 1), (ssize_t)(sizeof text - 1));
	close(fd);
	struct runtime *rt;
	char *logged = load_logged(path, &rt);
	unlink(path);
	assert_null(rt);
	const char *line = strstr(logged, "event=config-error message=\"");
	assert_non_null(line);
	const char *end = strchr(line, '\n');
	assert_non_null(end);
	/* the value's own quotes only; the message's came out as \x22 */
	size_t quotes = 0;
	for (const char *p = line; p < end; p++)
		quotes += *p == '"';
	assert_int_equal(quotes, 2);
	assert_int_equal(end[-1], '"');
	assert_non_null(strstr(line, "unknown directive \\x22frobnicate\\x22"));
	free(logged);
}

int main(void)
{
	log_init(false, LOG_INFO);
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config_errors_escaped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
