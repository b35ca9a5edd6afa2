/* smtp_quota: RFC 9208 quotas at RCPT and at the end of DATA, answered
 * with RFC 3463's 4.2.2 (mailbox full), a temporary failure. */
#include "proto/smtp/smtp_quota.h"

#include <stdlib.h>
#include <string.h>

#include "conf/conf.h"
#include "lib/log.h"
#include "queue/spool.h"
#include "runtime/runtime.h"
#include "store/maildir.h"
#include "store/quota.h"

bool smtp_quota_full(const struct runtime *rt, const char *sid, const char *address,
		     uint64_t size)
{
	struct quota_limit l;
	runtime_quota(rt, address, &l);
	if (l.bytes == 0 && l.messages == 0)
		return false;
	char *root = maildir_path(rt->conf->mailboxes, address);
	if (!root)
		return false;
	char err[256];
	int r = quota_check(root, &l, size, 1, err, sizeof err);
	free(root);
	char shown[LOG_VALUE_MAX];
	log_escape(shown, sizeof shown, address, strlen(address));
	if (r < 0)
		log_warn("event=quota-error session=%s address=%s error=\"%s\"", sid, shown, err);
	else if (r == 0)
		log_info("event=quota-full session=%s address=%s size=%llu", sid, shown,
			 (unsigned long long)size);
	return r == 0;
}

bool smtp_quota_all_full(const struct runtime *rt, const char *sid,
			 const struct spool_rcpt *rcpts, size_t n, uint64_t size)
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!rcpts[i].local || strcmp(rcpts[i].address, rcpts[i].orig) != 0 ||
		    !smtp_quota_full(rt, sid, rcpts[i].address, size))
			return false;
	return true;
}
