/* test_addr: socket addresses as text — IPv4, IPv6, IPv4-mapped IPv6
 * shown as IPv4, "unknown" for another family, and a buffer too small for
 * every address refused (fatal) rather than an address cut. */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "net/addr.h"

static void text_of(const char *family_text, int family, const char *want)
{
	struct sockaddr_storage ss;
	memset(&ss, 0, sizeof ss);
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&ss;
		in->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, family_text, &in->sin_addr), 1);
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&ss;
		in6->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, family_text, &in6->sin6_addr), 1);
	}
	char out[ADDR_TEXT_SIZE];
	addr_text((const struct sockaddr *)&ss, out, sizeof out);
	assert_string_equal(out, want);
}

static void test_families(void **state)
{
	text_of("192.0.2.7", AF_INET, "192.0.2.7");
	text_of("2001:db8::1", AF_INET6, "2001:db8::1");
	text_of("::ffff:192.0.2.7", AF_INET6, "192.0.2.7");
	text_of("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", AF_INET6,
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
	struct sockaddr_un un = {.sun_family = AF_UNIX};
	char out[ADDR_TEXT_SIZE];
	addr_text((const struct sockaddr *)&un, out, sizeof out);
	assert_string_equal(out, "unknown");
}

/* A buffer that cannot hold every address is the caller's bug: exit(1),
 * never an address cut. */
static void test_small_buffer_is_fatal(void **state)
{
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct sockaddr_in in = {.sin_family = AF_INET};
		char out[ADDR_TEXT_SIZE - 1];
		close(STDERR_FILENO);
		addr_text((const struct sockaddr *)&in, out, sizeof out);
		_exit(0);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_families),
		cmocka_unit_test(test_small_buffer_is_fatal),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
