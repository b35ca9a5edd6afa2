/* acme_msg: RFC 8555 response objects from untrusted JSON, checked and
 * copied into bounded structures; jansson does the JSON (RFC 8259). */
#include "net/acme_msg.h"

#include <string.h>

#include <jansson.h>

#include "lib/util.h"

static const char *const acme_status_names[] = {
	[ACME_ST_UNKNOWN] = "unknown", [ACME_ST_PENDING] = "pending",
	[ACME_ST_READY] = "ready", [ACME_ST_PROCESSING] = "processing",
	[ACME_ST_VALID] = "valid", [ACME_ST_INVALID] = "invalid",
	[ACME_ST_EXPIRED] = "expired", [ACME_ST_DEACTIVATED] = "deactivated",
	[ACME_ST_REVOKED] = "revoked",
};

const char *acme_status_name(enum acme_status st)
{
	return (size_t)st < ARRAY_LEN(acme_status_names) ? acme_status_names[st] : "unknown";
}

static enum acme_status acme_status_of(const json_t *o)
{
	const char *s = json_string_value(json_object_get(o, "status"));
	for (size_t i = 1; s && i < ARRAY_LEN(acme_status_names); i++)
		if (strcmp(s, acme_status_names[i]) == 0)
			return (enum acme_status)i;
	return ACME_ST_UNKNOWN;
}

/* An object, depth-limited by jansson; NULL with the reason in err. */
static json_t *acme_load(const char *body, size_t len, char *err, size_t errsz)
{
	if (len > ACME_BODY_MAX) {
		errfmt(err, errsz, "response of %zu bytes (at most %d)", len, ACME_BODY_MAX);
		return NULL;
	}
	json_error_t je;
	json_t *root = json_loadb(body, len, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		errfmt(err, errsz, "bad JSON at line %d column %d", je.line, je.column);
		return NULL;
	}
	if (!json_is_object(root)) {
		errfmt(err, errsz, "JSON response is not an object");
		json_decref(root);
		return NULL;
	}
	return root;
}

static bool acme_printable(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s <= 0x20 || (unsigned char)*s >= 0x7f)
			return false;
	return true;
}

/* member key of o: an https URL that fits out.  Missing and optional: "". */
static int acme_url(const json_t *o, const char *key, bool required, char out[ACME_URL_MAX],
		    char *err, size_t errsz)
{
	out[0] = '\0';
	const json_t *v = json_object_get(o, key);
	if (!v && !required)
		return 0;
	const char *s = json_string_value(v);
	if (!s || strncmp(s, "https://", 8) != 0 || strlen(s) >= ACME_URL_MAX ||
	    !acme_printable(s)) {
		errfmt(err, errsz, "\"%s\" is %s", key, v ? "not an https URL" : "missing");
		return -1;
	}
	memcpy(out, s, strlen(s) + 1);
	return 0;
}

int acme_parse_directory(const char *body, size_t len, struct acme_directory *out, char *err,
			 size_t errsz)
{
	json_t *root = acme_load(body, len, err, errsz);
	if (!root)
		return -1;
	int r = acme_url(root, "newNonce", true, out->new_nonce, err, errsz) < 0 ||
			acme_url(root, "newAccount", true, out->new_account, err, errsz) < 0 ||
			acme_url(root, "newOrder", true, out->new_order, err, errsz) < 0
		    ? -1
		    : 0;
	json_decref(root);
	return r;
}

void acme_order_free(struct acme_order *o)
{
	free(o->authz);
	o->authz = NULL;
	o->nauthz = 0;
}

static int acme_order_authz(const json_t *root, struct acme_order *out, char *err, size_t errsz)
{
	const json_t *list = json_object_get(root, "authorizations");
	size_t n = json_array_size(list);
	if (!json_is_array(list) || n == 0 || n > ACME_AUTHZ_MAX) {
		errfmt(err, errsz, "\"authorizations\" is not a list of 1 to %d URLs", ACME_AUTHZ_MAX);
		return -1;
	}
	out->authz = xcalloc(n, sizeof *out->authz);
	out->nauthz = n;
	for (size_t i = 0; i < n; i++) {
		const char *s = json_string_value(json_array_get(list, i));
		if (!s || strncmp(s, "https://", 8) != 0 || strlen(s) >= ACME_URL_MAX ||
		    !acme_printable(s)) {
			errfmt(err, errsz, "authorization %zu is not an https URL", i + 1);
			return -1;
		}
		memcpy(out->authz[i], s, strlen(s) + 1);
	}
	return 0;
}

int acme_parse_order(const char *body, size_t len, struct acme_order *out, char *err,
		     size_t errsz)
{
	memset(out, 0, sizeof *out);
	json_t *root = acme_load(body, len, err, errsz);
	if (!root)
		return -1;
	out->status = acme_status_of(root);
	int r = 0;
	if (out->status == ACME_ST_UNKNOWN) {
		errfmt(err, errsz, "order without a known \"status\"");
		r = -1;
	}
	if (r == 0)
		r = acme_url(root, "finalize", true, out->finalize, err, errsz);
	if (r == 0)
		r = acme_url(root, "certificate", false, out->certificate, err, errsz);
	if (r == 0)
		r = acme_order_authz(root, out, err, errsz);
	json_decref(root);
	if (r < 0)
		acme_order_free(out);
	return r;
}

static bool acme_token_ok(const char *t)
{
	size_t n = strlen(t);
	if (n == 0 || n > ACME_TOKEN_MAX)
		return false;
	/* base64url (RFC 8555 §8.3): safe in a URL path and a file name */
	return strspn(t, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") == n;
}

/* "TYPE: DETAIL" of a problem object into out, printable ASCII only. */
static void acme_problem_text(const json_t *p, char *out, size_t outsz)
{
	const char *type = json_string_value(json_object_get(p, "type"));
	const char *detail = json_string_value(json_object_get(p, "detail"));
	static const char prefix[] = "urn:ietf:params:acme:error:";
	if (type && strncmp(type, prefix, sizeof prefix - 1) == 0)
		type += sizeof prefix - 1;
	char raw[ACME_PROBLEM_MAX];
	if (!bsnprintf(raw, sizeof raw, "%s: %s", type ? type : "problem", detail ? detail : ""))
		raw[sizeof raw - 1] = '\0'; /* a long detail: its start is the news */
	size_t o = 0;
	for (size_t i = 0; raw[i] && o + 1 < outsz; i++)
		out[o++] = (unsigned char)raw[i] >= 0x20 && (unsigned char)raw[i] < 0x7f &&
				   raw[i] != '"' && raw[i] != '\\'
			       ? raw[i]
			       : '?';
	if (outsz)
		out[o] = '\0';
}

static void acme_authz_challenge(const json_t *root, const char *want, struct acme_authz *out)
{
	const json_t *list = json_object_get(root, "challenges");
	for (size_t i = 0; i < json_array_size(list); i++) {
		const json_t *c = json_array_get(list, i);
		const char *type = json_string_value(json_object_get(c, "type"));
		const char *token = json_string_value(json_object_get(c, "token"));
		char url[ACME_URL_MAX], ignored[64];
		if (!type || strcmp(type, want) != 0 || !token || !acme_token_ok(token) ||
		    acme_url(c, "url", true, url, ignored, sizeof ignored) < 0)
			continue;
		out->has_challenge = true;
		out->challenge_status = acme_status_of(c);
		memcpy(out->challenge_url, url, sizeof url);
		memcpy(out->token, token, strlen(token) + 1);
		const json_t *e = json_object_get(c, "error");
		if (json_is_object(e))
			acme_problem_text(e, out->error, sizeof out->error);
		return;
	}
}

int acme_parse_authz(const char *body, size_t len, const char *type, struct acme_authz *out,
		     char *err, size_t errsz)
{
	memset(out, 0, sizeof *out);
	json_t *root = acme_load(body, len, err, errsz);
	if (!root)
		return -1;
	out->status = acme_status_of(root);
	const char *name = json_string_value(json_object_get(json_object_get(root, "identifier"),
							     "value"));
	int r = 0;
	if (out->status == ACME_ST_UNKNOWN) {
		errfmt(err, errsz, "authorization without a known \"status\"");
		r = -1;
	} else if (!name || strlen(name) >= sizeof out->name || !acme_printable(name)) {
		errfmt(err, errsz, "authorization without a usable identifier");
		r = -1;
	} else {
		memcpy(out->name, name, strlen(name) + 1);
		acme_authz_challenge(root, type, out);
	}
	json_decref(root);
	return r;
}

bool acme_parse_problem(const char *body, size_t len, char *out, size_t outsz)
{
	char ignored[64];
	json_t *root = acme_load(body, len, ignored, sizeof ignored);
	bool ok = root && json_is_string(json_object_get(root, "type"));
	if (ok)
		acme_problem_text(root, out, outsz);
	else if (outsz)
		xsnprintf(out, outsz, "no problem document in the response");
	json_decref(root);
	return ok;
}

bool acme_problem_is_bad_nonce(const char *body, size_t len)
{
	char ignored[64];
	json_t *root = acme_load(body, len, ignored, sizeof ignored);
	const char *type = root ? json_string_value(json_object_get(root, "type")) : NULL;
	bool bad = type && strcmp(type, "urn:ietf:params:acme:error:badNonce") == 0;
	json_decref(root);
	return bad;
}
