/* sasl_gssapi: SASL GSSAPI (RFC 4752) on the server side, over MIT
 * Kerberos' GSS-API (RFC 2743; the krb5 mechanism, RFC 4121).  The
 * acceptor takes any key of the keytab and then checks that the client's
 * ticket was for service/hostname, so that no name is canonicalised
 * through DNS. */
#include "auth/sasl_gssapi.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gssapi/gssapi.h>
#include <gssapi/gssapi_ext.h>
#include <gssapi/gssapi_krb5.h>
#include <krb5.h>
#include <openssl/crypto.h>

#include "auth/sasl.h"
#include "auth/userdb.h"
#include "lib/util.h"

enum {
	SASL_GSSAPI_LAYER_NONE = 1,     /* RFC 4752 §3.3: bit of "no security layer" */
	SASL_GSSAPI_LAYER_LEN = 4,      /* bit-mask and 3 octets of maximum size */
	SASL_GSSAPI_AUTHZID_MAX = 255,  /* octets of an authorization identity */
	SASL_GSSAPI_PRINCIPAL_MAX = 512, /* octets of a principal name we accept */
};

enum sasl_gssapi_state {
	SASL_GSSAPI_ACCEPTING,  /* context tokens (gss_accept_sec_context) */
	SASL_GSSAPI_WAIT_EMPTY, /* our last context token sent: the client's
				 * answer is empty (RFC 4752 §3.1) */
	SASL_GSSAPI_WAIT_LAYER, /* our security-layer offer sent */
	SASL_GSSAPI_OVER,
};

struct sasl_gssapi {
	char *keytab;
	char *replay_cache;
	char *acceptor;               /* "smtp/mail.example.org" */
	enum sasl_gssapi_state state;
	gss_cred_id_t cred;
	gss_ctx_id_t ctx;
	char *response;               /* the client's, base64 */
	enum sasl_gssapi_status status;
	char *challenge;              /* base64 */
	char *principal;
	char *authzid;
	char *reason;
};

/* MIT's file replay cache locks with fcntl(2), which does not keep two
 * threads of one process apart: one context establishment at a time. */
static pthread_mutex_t sasl_gssapi_replay_lock = PTHREAD_MUTEX_INITIALIZER;

/* ---- life -------------------------------------------------------------- */

struct sasl_gssapi *sasl_gssapi_new(const struct sasl_gssapi_setup *setup)
{
	struct sasl_gssapi *g = xcalloc(1, sizeof *g);
	g->keytab = xstrdup(setup->keytab);
	g->replay_cache = xasprintf("file2:%s", setup->replay_cache);
	g->acceptor = xasprintf("%s/%s", setup->service, setup->hostname);
	g->state = SASL_GSSAPI_ACCEPTING;
	g->cred = GSS_C_NO_CREDENTIAL;
	g->ctx = GSS_C_NO_CONTEXT;
	g->status = SASL_GSSAPI_CONTINUE;
	return g;
}

static void sasl_gssapi_wipe_str(char *s)
{
	if (!s)
		return;
	OPENSSL_cleanse(s, strlen(s));
	free(s);
}

void sasl_gssapi_free(void *arg)
{
	struct sasl_gssapi *g = arg;
	if (!g)
		return;
	OM_uint32 minor;
	if (g->ctx != GSS_C_NO_CONTEXT)
		(void)gss_delete_sec_context(&minor, &g->ctx, GSS_C_NO_BUFFER); /* frees only */
	if (g->cred != GSS_C_NO_CREDENTIAL)
		(void)gss_release_cred(&minor, &g->cred);
	free(g->keytab);
	free(g->replay_cache);
	free(g->acceptor);
	sasl_gssapi_wipe_str(g->response);
	free(g->challenge);
	free(g->principal);
	free(g->authzid);
	free(g->reason);
	free(g);
}

void sasl_gssapi_set_response(struct sasl_gssapi *g, const char *response)
{
	sasl_gssapi_wipe_str(g->response);
	g->response = xstrdup(response);
}

enum sasl_gssapi_status sasl_gssapi_status(const struct sasl_gssapi *g)
{
	return g->status;
}

const char *sasl_gssapi_challenge(const struct sasl_gssapi *g)
{
	return g->challenge ? g->challenge : "";
}

const char *sasl_gssapi_principal(const struct sasl_gssapi *g)
{
	return g->principal;
}

const char *sasl_gssapi_authzid(const struct sasl_gssapi *g)
{
	return g->authzid ? g->authzid : "";
}

const char *sasl_gssapi_reason(const struct sasl_gssapi *g)
{
	return g->reason ? g->reason : "";
}

/* ---- results ------------------------------------------------------------ */

/* The words of one kind of status code (GSS_C_GSS_CODE, GSS_C_MECH_CODE),
 * every message of it, "; " between them. */
static char *sasl_gssapi_status_text(OM_uint32 code, int type)
{
	char *text = xstrdup("");
	OM_uint32 minor, more = 0;
	do {
		gss_buffer_desc msg = GSS_C_EMPTY_BUFFER;
		if (GSS_ERROR(gss_display_status(&minor, code, type, GSS_C_NO_OID, &more, &msg)))
			break;
		char *next = xasprintf("%s%s%.*s", text, *text ? "; " : "", (int)msg.length,
				       (const char *)msg.value);
		(void)gss_release_buffer(&minor, &msg); /* frees only */
		free(text);
		text = next;
	} while (more != 0);
	return text;
}

static void sasl_gssapi_end(struct sasl_gssapi *g, enum sasl_gssapi_status status, char *reason)
{
	free(g->reason);
	g->reason = reason;
	g->status = status;
	g->state = SASL_GSSAPI_OVER;
}

/* A GSS-API call failed: what it says, for the log. */
static void sasl_gssapi_fail(struct sasl_gssapi *g, enum sasl_gssapi_status status,
			     const char *call, OM_uint32 major, OM_uint32 minor)
{
	char *gss = sasl_gssapi_status_text(major, GSS_C_GSS_CODE);
	char *mech = sasl_gssapi_status_text(minor, GSS_C_MECH_CODE);
	sasl_gssapi_end(g, status, xasprintf("%s: %s%s%s", call, gss, *mech ? ": " : "", mech));
	free(gss);
	free(mech);
}

/* Send token as the next challenge. */
static void sasl_gssapi_send(struct sasl_gssapi *g, const gss_buffer_desc *token,
			     enum sasl_gssapi_state next)
{
	if (token->length > SASL_TOKEN_MAX) {
		sasl_gssapi_end(g, SASL_GSSAPI_SERVER_ERROR,
				xasprintf("a token of %zu octets is too long to send",
					  (size_t)token->length));
		return;
	}
	free(g->challenge);
	g->challenge = sasl_token_encode(token->value, token->length);
	g->status = SASL_GSSAPI_CONTINUE;
	g->state = next;
}

/* ---- context establishment (RFC 4752 §3.1, first part) -------------------- */

/* Any key of the keytab (GSS_C_NO_NAME), the replay cache in the spool. */
static bool sasl_gssapi_acquire(struct sasl_gssapi *g)
{
	gss_key_value_element_desc store[] = {
		{.key = "keytab", .value = g->keytab},
		{.key = "rcache", .value = g->replay_cache},
	};
	gss_key_value_set_desc set = {.count = ARRAY_LEN(store), .elements = store};
	OM_uint32 minor;
	OM_uint32 major = gss_acquire_cred_from(&minor, GSS_C_NO_NAME, GSS_C_INDEFINITE,
						GSS_C_NO_OID_SET, GSS_C_ACCEPT, &set, &g->cred,
						NULL, NULL);
	if (GSS_ERROR(major)) {
		sasl_gssapi_fail(g, SASL_GSSAPI_SERVER_ERROR, "keytab", major, minor);
		return false;
	}
	return true;
}

/* A name as text, the caller's to free; NULL if it cannot be shown. */
static char *sasl_gssapi_name_text(gss_name_t name)
{
	OM_uint32 minor;
	gss_buffer_desc buf = GSS_C_EMPTY_BUFFER;
	if (GSS_ERROR(gss_display_name(&minor, name, &buf, NULL)))
		return NULL;
	char *text = NULL;
	if (buf.length <= SASL_GSSAPI_PRINCIPAL_MAX && !memchr(buf.value, '\0', buf.length))
		text = xstrndup(buf.value, buf.length);
	(void)gss_release_buffer(&minor, &buf); /* frees only */
	return text;
}

/* Was the ticket for service/hostname of this server (any realm)?  The
 * keytab may hold the keys of other services and hosts too. */
static bool sasl_gssapi_right_acceptor(struct sasl_gssapi *g)
{
	OM_uint32 minor;
	gss_name_t target = GSS_C_NO_NAME;
	if (GSS_ERROR(gss_inquire_context(&minor, g->ctx, NULL, &target, NULL, NULL, NULL, NULL,
					  NULL))) {
		sasl_gssapi_end(g, SASL_GSSAPI_REFUSED, xstrdup("no acceptor name"));
		return false;
	}
	char *text = sasl_gssapi_name_text(target);
	(void)gss_release_name(&minor, &target); /* frees only */
	const char *at = text ? strrchr(text, '@') : NULL;
	size_t n = at ? (size_t)(at - text) : 0;
	bool right = at && n == strlen(g->acceptor) && strncasecmp(text, g->acceptor, n) == 0;
	if (!right)
		sasl_gssapi_end(g, SASL_GSSAPI_REFUSED,
				xasprintf("a ticket for %s, not for %s", text ? text : "?",
					  g->acceptor));
	free(text);
	return right;
}

/* The security-layer offer (RFC 4752 §3.1): only "no security layer",
 * so the maximum message size is 0; wrapped without confidentiality. */
static void sasl_gssapi_offer_layer(struct sasl_gssapi *g)
{
	uint8_t offer[SASL_GSSAPI_LAYER_LEN] = {SASL_GSSAPI_LAYER_NONE, 0, 0, 0};
	gss_buffer_desc in = {.length = sizeof offer, .value = offer};
	gss_buffer_desc out = GSS_C_EMPTY_BUFFER;
	OM_uint32 minor;
	OM_uint32 major = gss_wrap(&minor, g->ctx, 0, GSS_C_QOP_DEFAULT, &in, NULL, &out);
	if (GSS_ERROR(major))
		sasl_gssapi_fail(g, SASL_GSSAPI_REFUSED, "wrap", major, minor);
	else
		sasl_gssapi_send(g, &out, SASL_GSSAPI_WAIT_LAYER);
	(void)gss_release_buffer(&minor, &out); /* frees only */
}

/* The context is established: whose ticket, for whom, then our last
 * token (if any) or the layer offer. */
static void sasl_gssapi_established(struct sasl_gssapi *g, gss_name_t client,
				    const gss_buffer_desc *token)
{
	g->principal = sasl_gssapi_name_text(client);
	if (!g->principal) {
		sasl_gssapi_end(g, SASL_GSSAPI_REFUSED, xstrdup("a client name that cannot be shown"));
		return;
	}
	if (!sasl_gssapi_right_acceptor(g))
		return;
	if (token->length > 0)
		sasl_gssapi_send(g, token, SASL_GSSAPI_WAIT_EMPTY);
	else
		sasl_gssapi_offer_layer(g);
}

static void sasl_gssapi_accept(struct sasl_gssapi *g, const uint8_t *msg, size_t len)
{
	if (g->cred == GSS_C_NO_CREDENTIAL && !sasl_gssapi_acquire(g))
		return;
	gss_buffer_desc in = {.length = len, .value = (void *)msg};
	gss_buffer_desc out = GSS_C_EMPTY_BUFFER;
	gss_name_t client = GSS_C_NO_NAME;
	OM_uint32 minor = 0, major;
	if (pthread_mutex_lock(&sasl_gssapi_replay_lock) != 0)
		fatal("sasl_gssapi: replay cache lock");
	major = gss_accept_sec_context(&minor, &g->ctx, g->cred, &in, GSS_C_NO_CHANNEL_BINDINGS,
				       &client, NULL, &out, NULL, NULL, NULL);
	if (pthread_mutex_unlock(&sasl_gssapi_replay_lock) != 0)
		fatal("sasl_gssapi: replay cache unlock");
	if (GSS_ERROR(major))
		sasl_gssapi_fail(g, SASL_GSSAPI_REFUSED, "accept", major, minor);
	else if (major & GSS_S_CONTINUE_NEEDED)
		sasl_gssapi_send(g, &out, SASL_GSSAPI_ACCEPTING);
	else
		sasl_gssapi_established(g, client, &out);
	(void)gss_release_buffer(&minor, &out); /* frees only */
	if (client != GSS_C_NO_NAME)
		(void)gss_release_name(&minor, &client);
}

/* ---- security layer (RFC 4752 §3.1, second part) -------------------------- */

static void sasl_gssapi_after_last_token(struct sasl_gssapi *g, size_t len)
{
	if (len != 0) {
		sasl_gssapi_end(g, SASL_GSSAPI_REFUSED, xstrdup("a token after the context was made"));
		return;
	}
	sasl_gssapi_offer_layer(g);
}

/* The client's choice: exactly "no security layer", then the
 * authorization identity (no NUL, bounded). */
static void sasl_gssapi_choice(struct sasl_gssapi *g, const uint8_t *msg, size_t len)
{
	gss_buffer_desc in = {.length = len, .value = (void *)msg};
	gss_buffer_desc out = GSS_C_EMPTY_BUFFER;
	OM_uint32 minor;
	OM_uint32 major = gss_unwrap(&minor, g->ctx, &in, &out, NULL, NULL);
	if (GSS_ERROR(major)) {
		sasl_gssapi_fail(g, SASL_GSSAPI_REFUSED, "unwrap", major, minor);
		return;
	}
	const uint8_t *p = out.value;
	size_t zlen = out.length >= SASL_GSSAPI_LAYER_LEN ? out.length - SASL_GSSAPI_LAYER_LEN : 0;
	if (out.length < SASL_GSSAPI_LAYER_LEN || p[0] != SASL_GSSAPI_LAYER_NONE)
		sasl_gssapi_end(g, SASL_GSSAPI_REFUSED, xstrdup("a security layer we did not offer"));
	else if (zlen > SASL_GSSAPI_AUTHZID_MAX || memchr(p + SASL_GSSAPI_LAYER_LEN, '\0', zlen))
		sasl_gssapi_end(g, SASL_GSSAPI_REFUSED, xstrdup("a malformed authorization identity"));
	else {
		g->authzid = xstrndup((const char *)p + SASL_GSSAPI_LAYER_LEN, zlen);
		sasl_gssapi_end(g, SASL_GSSAPI_DONE, NULL);
	}
	(void)gss_release_buffer(&minor, &out); /* frees only */
}

/* ---- a step ------------------------------------------------------------------ */

static void sasl_gssapi_dispatch(struct sasl_gssapi *g, const uint8_t *msg, size_t len)
{
	switch (g->state) {
	case SASL_GSSAPI_ACCEPTING:
		sasl_gssapi_accept(g, msg, len);
		break;
	case SASL_GSSAPI_WAIT_EMPTY:
		sasl_gssapi_after_last_token(g, len);
		break;
	case SASL_GSSAPI_WAIT_LAYER:
		sasl_gssapi_choice(g, msg, len);
		break;
	case SASL_GSSAPI_OVER:
		sasl_gssapi_end(g, SASL_GSSAPI_REFUSED, xstrdup("the exchange is over"));
		break;
	}
}

void sasl_gssapi_step(void *arg)
{
	struct sasl_gssapi *g = arg;
	const char *in = g->response ? g->response : "";
	free(g->challenge);
	g->challenge = NULL;
	if (strcmp(in, "*") == 0) { /* RFC 4422 §3.5 */
		sasl_gssapi_end(g, SASL_GSSAPI_CANCELLED, NULL);
		return;
	}
	uint8_t *msg;
	size_t len;
	enum sasl_status st = sasl_token_decode(in, &msg, &len);
	if (st == SASL_BAD_BASE64) {
		sasl_gssapi_end(g, SASL_GSSAPI_BAD_BASE64, xstrdup("not base64"));
		return;
	}
	if (st != SASL_OK) {
		sasl_gssapi_end(g, SASL_GSSAPI_REFUSED, xstrdup("a token too long"));
		return;
	}
	sasl_gssapi_dispatch(g, msg, len);
	OPENSSL_cleanse(msg, len);
	free(msg);
}

struct offload_job *sasl_gssapi_submit(struct sasl_gssapi *g, offload_done_fn done, void *owner)
{
	return offload_submit(sasl_gssapi_step, done, sasl_gssapi_free, g, owner);
}

/* ---- who the principal is ------------------------------------------------------ */

char *sasl_gssapi_principal_address(const struct conf_auth *auth, const char *principal)
{
	const char *at = strrchr(principal, '@');
	if (!at || at == principal)
		return NULL;
	size_t nlen = (size_t)(at - principal);
	/* an instance ("host/x") is a service, "\" quotes a separator: no user */
	if (memchr(principal, '/', nlen) || memchr(principal, '\\', nlen) ||
	    memchr(principal, '@', nlen))
		return NULL;
	for (size_t i = 0; i < auth->nrealms; i++)
		if (strcmp(at + 1, auth->realms[i].realm) == 0)
			return str_lower(xasprintf("%.*s@%s", (int)nlen, principal,
						   auth->realms[i].domain));
	return NULL;
}

const char *sasl_gssapi_principal_user(const struct conf_auth *auth, const struct userdb *db,
				       const char *principal)
{
	char *address = sasl_gssapi_principal_address(auth, principal);
	if (!address)
		return NULL;
	const struct user_record *rec = userdb_find(db, address);
	free(address);
	return rec ? rec->address : NULL;
}

/* ---- the keytab, for `posthorn check` ---------------------------------------------- */

/* Is entry's principal service/hostname in some realm? */
static bool sasl_gssapi_entry_is(krb5_context kc, const krb5_keytab_entry *entry,
				 const char *acceptor)
{
	char *name = NULL;
	if (krb5_unparse_name(kc, entry->principal, &name) != 0)
		return false;
	const char *at = strrchr(name, '@');
	size_t n = at ? (size_t)(at - name) : 0;
	bool same = at && n == strlen(acceptor) && strncasecmp(name, acceptor, n) == 0;
	krb5_free_unparsed_name(kc, name);
	return same;
}

/* 1 when the keytab holds a key of acceptor, 0 when not, -1 when it
 * cannot be read (*why: the library's words, the caller frees). */
static int sasl_gssapi_keytab_holds(krb5_context kc, const char *path, const char *acceptor,
				    char **why)
{
	char *name = xasprintf("FILE:%s", path);
	krb5_keytab kt = NULL;
	krb5_kt_cursor cursor;
	krb5_keytab_entry entry;
	int found = 0;
	krb5_error_code err = krb5_kt_resolve(kc, name, &kt);
	free(name);
	if (err == 0)
		err = krb5_kt_start_seq_get(kc, kt, &cursor);
	if (err != 0) {
		const char *msg = krb5_get_error_message(kc, err);
		*why = xstrdup(msg);
		krb5_free_error_message(kc, msg);
		if (kt)
			(void)krb5_kt_close(kc, kt); /* frees only */
		return -1;
	}
	while (!found && krb5_kt_next_entry(kc, kt, &entry, &cursor) == 0) {
		found = sasl_gssapi_entry_is(kc, &entry, acceptor);
		(void)krb5_free_keytab_entry_contents(kc, &entry); /* frees only */
	}
	(void)krb5_kt_end_seq_get(kc, kt, &cursor); /* frees only */
	(void)krb5_kt_close(kc, kt);
	return found;
}

int sasl_gssapi_check_keytab(const struct conf_server *srv, FILE *out)
{
	const struct conf_auth *a = &srv->auth;
	if (!(a->mechanisms & MECH_GSSAPI) || !a->keytab)
		return 0;
	krb5_context kc;
	if (krb5_init_context(&kc) != 0)
		return fprintf(out, "warning: server %s: Kerberos cannot start: GSSAPI logins will "
				    "fail\n", srv->name) < 0 ? -1 : 1;
	char *acceptor = xasprintf("%s/%s", conf_gssapi_service(srv->protocol), srv->hostname);
	char *why = NULL;
	int holds = sasl_gssapi_keytab_holds(kc, a->keytab, acceptor, &why);
	int w = 0;
	if (holds < 0)
		w = fprintf(out, "warning: server %s: keytab %s cannot be read (%s): GSSAPI logins "
				 "will fail\n", srv->name, a->keytab, why);
	else if (holds == 0)
		w = fprintf(out, "warning: server %s: keytab %s has no key of %s: GSSAPI logins "
				 "will fail (kadmin: ktadd -k %s %s)\n", srv->name, a->keytab,
			    acceptor, a->keytab, acceptor);
	free(why);
	free(acceptor);
	krb5_free_context(kc);
	if (w < 0)
		return -1;
	return holds == 1 ? 0 : 1;
}
