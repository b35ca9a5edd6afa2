/* imap_quota: RFC 9208 QUOTA with the STORAGE and MESSAGE resources over
 * one quota root, "", which is all of the user's mail (§3.2: every
 * mailbox has the same root). */
#include "proto/imap/imap_quota.h"

#include <inttypes.h>
#include <string.h>

#include "proto/imap/imap_context.h"
#include "proto/imap/imap_utf8.h"
#include "runtime/runtime.h"
#include "store/mailbox.h"
#include "store/quota.h"

static void imap_quota_limit(const struct imap_session *s, struct quota_limit *out)
{
	runtime_quota(s->b.rt, s->user, out);
}

/* "* QUOTA "" (STORAGE used limit MESSAGE used limit)" (RFC 9208 §5.1),
 * each resource that has a limit; false (a NO sent) when the usage cannot
 * be read. */
static bool imap_quota_put(struct imap_session *s, struct imap_out *out,
			   const struct quota_limit *l)
{
	struct quota_usage u;
	char err[256];
	if (quota_usage_get(s->maildir, l, &u, err, sizeof err) < 0) {
		imap_mailbox_log(s, "quota", err);
		imap_no(s, "[SERVERBUG] The quota usage cannot be read");
		return false;
	}
	imap_out_printf(out, "* QUOTA \"\" (");
	if (l->bytes)
		/* §5.1: STORAGE in units of 1024 octets */
		imap_out_printf(out, "STORAGE %" PRIu64 " %" PRIu64, u.bytes / 1024,
				l->bytes / 1024);
	if (l->messages)
		imap_out_printf(out, "%sMESSAGE %" PRIu64 " %" PRIu64, l->bytes ? " " : "",
				u.messages, l->messages);
	imap_out_printf(out, ")\r\n");
	return true;
}

static bool imap_quota_any(const struct quota_limit *l)
{
	return l->bytes || l->messages;
}

/* RFC 9208 §4.2: GETQUOTA root. */
void imap_cmd_getquota(struct imap_session *s, const struct imap_command *c)
{
	size_t len;
	const char *root = imap_arg_astring(imap_args_at(&c->args, 0), &len);
	if (c->args.n != 1 || !root || len != strlen(root)) {
		imap_bad(s, "Syntax: GETQUOTA quota-root");
		return;
	}
	struct quota_limit l;
	imap_quota_limit(s, &l);
	if (root[0] != '\0' || !imap_quota_any(&l)) {
		imap_no(s, "[NONEXISTENT] No such quota root");
		return;
	}
	struct imap_out out;
	imap_out_init(&out);
	if (imap_quota_put(s, &out, &l)) {
		imap_send(s, &out);
		imap_ok(s, "GETQUOTA completed");
	}
	imap_out_free(&out);
}

/* RFC 9208 §4.3: GETQUOTAROOT mailbox: its root "" and that root's
 * QUOTA; without any limit, no root at all. */
void imap_cmd_getquotaroot(struct imap_session *s, const struct imap_command *c)
{
	size_t len;
	const char *name = imap_arg_astring(imap_args_at(&c->args, 0), &len);
	if (c->args.n != 1 || !name || len != strlen(name)) {
		imap_bad(s, "Syntax: GETQUOTAROOT mailbox");
		return;
	}
	name = imap_utf8_name_in(s, name, 0);
	if (!name) {
		imap_bad(s, "Invalid UTF-8 in the mailbox name");
		return;
	}
	struct mailbox_status st;
	char err[256];
	if (!imap_store_error(s, mailbox_status(s->maildir, name, &st, err, sizeof err), err))
		return;
	struct quota_limit l;
	imap_quota_limit(s, &l);
	struct imap_out out;
	imap_out_init(&out);
	imap_out_printf(&out, "* QUOTAROOT ");
	imap_utf8_put_mailbox(s, &out, name);
	imap_out_printf(&out, imap_quota_any(&l) ? " \"\"\r\n" : "\r\n");
	if (!imap_quota_any(&l) || imap_quota_put(s, &out, &l)) {
		imap_send(s, &out);
		imap_ok(s, "GETQUOTAROOT completed");
	}
	imap_out_free(&out);
}

/* RFC 9208 §4.1: SETQUOTA is for administrators; the limits are set in
 * the configuration and with `posthorn user quota`. */
void imap_cmd_setquota(struct imap_session *s, const struct imap_command *c)
{
	(void)c;
	imap_no(s, "[NOPERM] Quotas are set by the administrator");
}

bool imap_quota_room(struct imap_session *s, uint64_t bytes, uint64_t messages)
{
	struct quota_limit l;
	imap_quota_limit(s, &l);
	char err[256];
	int r = quota_check(s->maildir, &l, bytes, messages, err, sizeof err);
	if (r == 1)
		return true;
	if (r < 0) {
		imap_mailbox_log(s, "quota", err);
		imap_no(s, "[SERVERBUG] The quota usage cannot be read");
	} else {
		/* RFC 9208 §4.4 and §7.1 */
		imap_no(s, "[OVERQUOTA] Quota exceeded");
	}
	return false;
}

void imap_quota_added(struct imap_session *s, uint64_t bytes, uint64_t messages)
{
	char err[256];
	if (quota_add(s->maildir, (int64_t)bytes, (int64_t)messages, err, sizeof err) < 0)
		imap_mailbox_log(s, "quota", err);
}

void imap_quota_recount(struct imap_session *s)
{
	char err[256];
	if (quota_invalidate(s->maildir, err, sizeof err) < 0)
		imap_mailbox_log(s, "quota", err);
}
