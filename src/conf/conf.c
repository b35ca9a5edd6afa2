/* conf: the configuration language of posthorn.conf(5) — a lexer that knows the
 * FILE:LINE:COL of every token, a parser driven by one table per block, one
 * validation step that reports every error, and the policy `check` prints. */
#include "conf/conf.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <inttypes.h>
#include <limits.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "lib/strbuf.h"
#include "lib/util.h"

/* Every limit of the configuration language, in one place. */
#define CONF_INCLUDE_DEPTH_MAX 8        /* nested include levels */
#define CONF_FILE_SIZE_MAX (4u << 20)   /* bytes in one configuration file */
#define CONF_QUOTE_MAX 80               /* bytes of a word shown in a message */
#define CONF_MESSAGE_MAX 8192           /* one error message (paths too), FILE:LINE:COL aside */
#define CONF_TABLE_MAX 24               /* directives in one block's table */
#define CONF_NAME_MAX 64                /* server and user names */
#define CONF_MIN_BITS_MAX 256           /* strongest cipher there is */
#define CONF_ARGS_ANY UINT_MAX          /* no upper bound on arguments */
#define CONF_IPV6_PREFIX_MIN 32         /* shorter would lock out whole providers */
#define CONF_ERROR_DELAY_MAX 60         /* seconds: each delay holds a connection */
#define CONF_PROXY_TIMEOUT_MAX 60       /* seconds a connection may wait for its PROXY header */
#define CONF_REALM_MAX 255              /* bytes of a Kerberos realm name */
#define CONF_QUOTA_MESSAGES_MAX 1000000000u /* a user's message limit */

/* ---- types ---------------------------------------------------------------- */

/* The name or one argument of a directive, as written. */
struct arg {
	char *s;
	struct conf_pos pos;
};

/* One directive as read. */
struct line {
	struct arg name;
	struct arg *args;
	size_t nargs;
	bool bad;               /* already rejected: malformed token, wrong count ... */
	const char *dir;        /* folder of its file, for relative paths */
};

struct parser;
typedef void directive_fn(struct parser *p, const struct line *d);

struct context;

/* One row of a block's table: the policy for one directive. */
struct directive {
	const char *name;
	unsigned min_args, max_args;
	directive_fn *fn;               /* for a block: before its contents, even on a bad line */
	const struct context *block;    /* the table inside its { }; NULL: takes no block */
	directive_fn *end;              /* for a block: after its "}" */
	bool once;                      /* twice in one block is an error */
};

struct context {
	const char *in;                 /* "in server block", for messages */
	const char *belongs;            /* "in a server block", for hints */
	const struct directive *directives;
	size_t n;
};

/* Where each directive of one block was first given (line 0: not yet). */
struct seen {
	struct conf_pos at[CONF_TABLE_MAX];
};

/* What the parser knows about a server beyond struct conf_server. */
struct server_state {
	struct conf_pos require_pos;    /* "require yes", for "no certificate" */
	bool timeout_set;
	bool had_errors;                /* a rejected line may be what looks missing */
	size_t certs_checked;
};

struct file_id {
	dev_t dev;
	ino_t ino;
};

struct parser {
	struct conf *conf;
	FILE *errout;
	int errors;
	struct seen global_seen;        /* top level: shared by every included file */
	struct file_id reading[CONF_INCLUDE_DEPTH_MAX + 1]; /* files open, outermost first */
	size_t nreading;
	size_t depth;                   /* include nesting */
	struct conf_server *server;     /* the server block being read */
	struct conf_tls *tls;           /* the tls or metrics-tls block being read */
	struct server_state *state;
	struct server_state *states;    /* parallel to conf->servers */
	size_t nstates;
	struct conf_server scratch;     /* takes a server block whose first line is bad */
	struct server_state scratch_state;
	int errors_at_server;
	struct conf_pos smarthost_auth_pos;
	struct conf_pos metrics_password_pos;
	struct conf_pos metrics_tls_pos;
	struct conf_pos end_pos;        /* end of the main file */
};

/* ---- messages --------------------------------------------------------------- */

struct quoted {
	char s[CONF_QUOTE_MAX * 4 + 4];
};

/* A word as printable ASCII for a message: other bytes as \xNN, words
 * longer than CONF_QUOTE_MAX cut, with "...".  q.s holds the longest. */
static struct quoted quote(const char *s)
{
	struct quoted q;
	struct strbuf sb;
	strbuf_init(&sb, q.s, sizeof q.s);
	size_t i;
	for (i = 0; i < CONF_QUOTE_MAX && s[i] != '\0'; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c >= 0x20 && c < 0x7f)
			(void)strbuf_addc(&sb, (char)c);
		else
			(void)strbuf_addf(&sb, "\\x%02x", c);
	}
	if (s[i] != '\0')
		(void)strbuf_adds(&sb, "...");
	if (!strbuf_ok(&sb))
		fatal("quote: struct quoted is too small");
	return q;
}

/* The temporary lives until the end of the full expression (C11 6.2.4p8). */
#define Q(text) (quote(text).s)

/* One diagnostic line to errout.  When it cannot be written there is
 * nobody left to tell; the error it reports fails the load all the same. */
static void conf_diag(FILE *errout, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void conf_diag(FILE *errout, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	(void)vfprintf(errout, fmt, ap);
	va_end(ap);
}

static void conf_error(struct parser *p, const struct conf_pos *at, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static void conf_error(struct parser *p, const struct conf_pos *at, const char *fmt, ...)
{
	char msg[CONF_MESSAGE_MAX];
	va_list ap;
	va_start(ap, fmt);
	verrfmt(msg, sizeof msg, fmt, ap); /* a cut message ends in "..." */
	va_end(ap);
	conf_diag(p->errout, "%s:%u:%u: %s\n", at->file, at->line, at->col, msg);
	p->errors++;
}

/* ---- lexer ----------------------------------------------------------------- */

enum token_kind { TOKEN_WORD, TOKEN_NEWLINE, TOKEN_OPEN, TOKEN_CLOSE, TOKEN_END };

struct token {
	enum token_kind kind;
	char *word;             /* TOKEN_WORD: owned */
	bool bad;               /* malformed, already reported */
	struct conf_pos pos;
};

struct lexer {
	struct parser *p;
	const char *text;
	size_t off;
	struct conf_pos pos;    /* of text[off] */
	const char *dir;
	struct token ahead;
	bool has_ahead;
};

/* A word of the lexer, grown on the heap (a configuration word has no
 * bound but the file's size). */
struct wordbuf {
	char *s;
	size_t len, cap;
};

static void wordbuf_putc(struct wordbuf *b, char c)
{
	if (b->len + 1 >= b->cap) {
		b->cap = b->cap ? b->cap * 2 : 32;
		b->s = xrealloc(b->s, b->cap);
	}
	b->s[b->len++] = c;
	b->s[b->len] = '\0';
}

static void wordbuf_puts(struct wordbuf *b, const char *s)
{
	while (*s)
		wordbuf_putc(b, *s++);
}

static char *wordbuf_take(struct wordbuf *b)
{
	return b->s ? b->s : xstrdup("");
}

static int lx_peek(const struct lexer *lx)
{
	return (unsigned char)lx->text[lx->off];
}

static void lx_advance(struct lexer *lx)
{
	if (lx->text[lx->off] == '\0')
		return;
	if (lx->text[lx->off] == '\n') {
		lx->pos.line++;
		lx->pos.col = 1;
	} else {
		lx->pos.col++;
	}
	lx->off++;
}

static bool lx_is_blank(int c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\f' || c == '\v';
}

static bool lx_ends_word(int c)
{
	return c == '\0' || c == '\n' || c == '#' || c == '{' || c == '}' || lx_is_blank(c);
}

static void lx_skip_blanks_and_comment(struct lexer *lx)
{
	while (lx_is_blank(lx_peek(lx)))
		lx_advance(lx);
	if (lx_peek(lx) != '#')
		return;
	while (lx_peek(lx) != '\0' && lx_peek(lx) != '\n')
		lx_advance(lx);
}

/* After a backslash inside quotes: only \" and \\ exist. */
static void lx_escape(struct lexer *lx, struct wordbuf *b, bool *bad)
{
	struct conf_pos at = lx->pos;
	lx_advance(lx);
	int c = lx_peek(lx);
	if (c == '"' || c == '\\') {
		wordbuf_putc(b, (char)c);
		lx_advance(lx);
		return;
	}
	if (c == '\0' || c == '\n')
		return; /* the string is unterminated: the caller says so */
	char seq[3] = {'\\', (char)c, '\0'};
	conf_error(lx->p, &at, "bad escape \"%s\" in string (only \\\" and \\\\ are allowed)",
		   Q(seq));
	*bad = true;
	lx_advance(lx);
}

static void lx_quoted(struct lexer *lx, struct wordbuf *b, bool *bad)
{
	struct conf_pos start = lx->pos;
	lx_advance(lx);
	for (;;) {
		int c = lx_peek(lx);
		if (c == '"') {
			lx_advance(lx);
			return;
		}
		if (c == '\0' || c == '\n') {
			conf_error(lx->p, &start,
				   "unterminated string (end it with \" on the same line)");
			*bad = true;
			return;
		}
		if (c == '\\') {
			lx_escape(lx, b, bad);
			continue;
		}
		wordbuf_putc(b, (char)c);
		lx_advance(lx);
	}
}

static void lx_bare(struct lexer *lx, struct wordbuf *b)
{
	while (!lx_ends_word(lx_peek(lx)) && lx_peek(lx) != '"') {
		wordbuf_putc(b, (char)lx_peek(lx));
		lx_advance(lx);
	}
}

/* A bare word or one quoted string; a quote inside a word is an error. */
static struct token lx_word(struct lexer *lx)
{
	struct token t = {.kind = TOKEN_WORD, .pos = lx->pos};
	struct wordbuf b = {0};
	unsigned parts = 0;
	bool quoted = false;
	while (!lx_ends_word(lx_peek(lx))) {
		parts++;
		if (lx_peek(lx) == '"') {
			quoted = true;
			lx_quoted(lx, &b, &t.bad);
		} else {
			lx_bare(lx, &b);
		}
	}
	if (quoted && parts > 1 && !t.bad) {
		conf_error(lx->p, &t.pos, "quotes must enclose a whole argument");
		t.bad = true;
	}
	t.word = wordbuf_take(&b);
	return t;
}

static struct token lx_next(struct lexer *lx)
{
	if (lx->has_ahead) {
		lx->has_ahead = false;
		return lx->ahead;
	}
	lx_skip_blanks_and_comment(lx);
	struct token t = {.pos = lx->pos};
	switch (lx_peek(lx)) {
	case '\0':
		t.kind = TOKEN_END;
		return t;
	case '\n':
		t.kind = TOKEN_NEWLINE;
		break;
	case '{':
		t.kind = TOKEN_OPEN;
		break;
	case '}':
		t.kind = TOKEN_CLOSE;
		break;
	default:
		return lx_word(lx);
	}
	lx_advance(lx);
	return t;
}

static void lx_unget(struct lexer *lx, struct token t)
{
	lx->ahead = t;
	lx->has_ahead = true;
}

/* ---- values ---------------------------------------------------------------- */

/* Decimal digits only: false on empty, a sign, or overflow. */
static bool parse_decimal(const char *s, const char **end, uint64_t *out)
{
	uint64_t n = 0;
	if (*s < '0' || *s > '9')
		return false;
	for (; *s >= '0' && *s <= '9'; s++) {
		unsigned digit = (unsigned)(*s - '0');
		if (n > (UINT64_MAX - digit) / 10)
			return false;
		n = n * 10 + digit;
	}
	*end = s;
	*out = n;
	return true;
}

static bool parse_whole_number(const char *s, uint64_t *out)
{
	const char *end;
	return parse_decimal(s, &end, out) && *end == '\0';
}

static uint64_t size_unit(char c)
{
	switch (c) {
	case '\0': return 1;
	case 'K': case 'k': return UINT64_C(1) << 10;
	case 'M': case 'm': return UINT64_C(1) << 20;
	case 'G': case 'g': return UINT64_C(1) << 30;
	default: return 0;
	}
}

int conf_parse_size(const char *s, uint64_t *out)
{
	const char *end;
	uint64_t n;
	if (!parse_decimal(s, &end, &n))
		return -1;
	uint64_t unit = size_unit(end[0]);
	if (unit == 0 || (end[0] != '\0' && end[1] != '\0') || n > UINT64_MAX / unit)
		return -1;
	*out = n * unit;
	return 0;
}

static unsigned duration_unit(char c)
{
	switch (c) {
	case '\0': case 's': return 1;
	case 'm': return 60;
	case 'h': return 3600;
	case 'd': return 86400;
	default: return 0;
	}
}

int conf_parse_duration(const char *s, unsigned *out)
{
	const char *end;
	uint64_t n;
	if (!parse_decimal(s, &end, &n))
		return -1;
	unsigned unit = duration_unit(end[0]);
	if (unit == 0 || (end[0] != '\0' && end[1] != '\0') || n > UINT_MAX / unit)
		return -1;
	*out = (unsigned)n * unit;
	return 0;
}

static bool is_ldh(int c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
	       c == '-';
}

static bool label_is_valid(const char *l, size_t n)
{
	if (n == 0 || n > 63 || l[0] == '-' || l[n - 1] == '-')
		return false;
	for (size_t i = 0; i < n; i++)
		if (!is_ldh((unsigned char)l[i]))
			return false;
	return true;
}

/* RFC 1035 §2.3.1 names, with RFC 1123 §2.1's leading digits. */
static bool domain_is_valid(const char *s)
{
	if (strlen(s) > 253)
		return false;
	for (;;) {
		const char *dot = strchr(s, '.');
		size_t n = dot ? (size_t)(dot - s) : strlen(s);
		if (!label_is_valid(s, n))
			return false;
		if (!dot)
			return true;
		s = dot + 1;
	}
}

static bool name_is_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > CONF_NAME_MAX)
		return false;
	for (; *s; s++)
		if (!is_ldh((unsigned char)*s) && *s != '.' && *s != '_')
			return false;
	return true;
}

/* path made absolute against dir, the folder of the file it appears in. */
static char *path_join(const char *dir, const char *path)
{
	if (path[0] == '/')
		return xstrdup(path);
	while (path[0] == '.' && path[1] == '/')
		path += 2;
	size_t n = strlen(dir);
	if (n > 0 && dir[n - 1] == '/')
		return xasprintf("%s%s", dir, path);
	return xasprintf("%s/%s", dir, path);
}

static char *current_folder(void)
{
	char *cwd = getcwd(NULL, 0);
	if (!cwd)
		return xstrdup(".");
	char *copy = xstrdup(cwd);
	free(cwd);
	return copy;
}

static char *absolute_folder(const char *dir)
{
	if (strcmp(dir, ".") == 0)
		return current_folder();
	char *cwd = current_folder();
	char *abs = path_join(cwd, dir);
	free(cwd);
	return abs;
}

/* ---- values with messages ----------------------------------------------------- */

static bool arg_bool(struct parser *p, const struct line *d, const struct arg *a, bool *out)
{
	if (strcmp(a->s, "yes") == 0 || strcmp(a->s, "no") == 0) {
		*out = a->s[0] == 'y';
		return true;
	}
	conf_error(p, &a->pos, "bad value \"%s\" for \"%s\" (use yes or no)", Q(a->s), d->name.s);
	return false;
}

static bool arg_number(struct parser *p, const struct line *d, const struct arg *a,
		       unsigned min, unsigned max, unsigned *out)
{
	uint64_t n;
	if (parse_whole_number(a->s, &n) && n >= min && n <= max) {
		*out = (unsigned)n;
		return true;
	}
	conf_error(p, &a->pos, "bad number \"%s\" for \"%s\" (use a whole number from %u to %u)",
		   Q(a->s), d->name.s, min, max);
	return false;
}

static bool arg_size(struct parser *p, const struct line *d, const struct arg *a, uint64_t *out)
{
	uint64_t n;
	if (conf_parse_size(a->s, &n) < 0) {
		conf_error(p, &a->pos, "bad size \"%s\" (use a number with K, M or G)", Q(a->s));
		return false;
	}
	if (n == 0) {
		conf_error(p, &a->pos, "bad size \"%s\" for \"%s\" (must be more than 0)", Q(a->s),
			   d->name.s);
		return false;
	}
	*out = n;
	return true;
}

static bool arg_duration(struct parser *p, const struct line *d, const struct arg *a,
			 unsigned *out)
{
	unsigned n;
	if (conf_parse_duration(a->s, &n) < 0) {
		conf_error(p, &a->pos, "bad duration \"%s\" (use a number with s, m, h or d)",
			   Q(a->s));
		return false;
	}
	if (n == 0) {
		conf_error(p, &a->pos, "bad duration \"%s\" for \"%s\" (must be more than 0)",
			   Q(a->s), d->name.s);
		return false;
	}
	*out = n;
	return true;
}

static bool arg_path(struct parser *p, const struct line *d, const struct arg *a, char **out)
{
	if (a->s[0] == '\0') {
		conf_error(p, &a->pos, "empty path for \"%s\"", d->name.s);
		return false;
	}
	free(*out);
	*out = path_join(d->dir, a->s);
	return true;
}

/* Lower case without one trailing dot; NULL (reported as a bad `what`
 * name) when not a domain name. */
static char *arg_dns_name(struct parser *p, const struct arg *a, const char *what)
{
	char *name = str_lower(xstrdup(a->s));
	size_t n = strlen(name);
	if (n > 1 && name[n - 1] == '.')
		name[n - 1] = '\0';
	if (domain_is_valid(name))
		return name;
	conf_error(p, &a->pos, "bad %s name \"%s\"", what, Q(a->s));
	free(name);
	return NULL;
}

static char *arg_domain(struct parser *p, const struct arg *a)
{
	return arg_dns_name(p, a, "domain");
}

/* One of names[] (NULL-terminated); its index, or -1 (reported). */
static int arg_keyword(struct parser *p, const struct line *d, const struct arg *a,
		       const char *const *names, const char *usage)
{
	for (int i = 0; names[i]; i++)
		if (strcmp(a->s, names[i]) == 0)
			return i;
	conf_error(p, &a->pos, "bad value \"%s\" for \"%s\" (use %s)", Q(a->s), d->name.s, usage);
	return -1;
}

/* ---- addresses ---------------------------------------------------------------- */

/* A numeric IPv4 or IPv6 address into 16 bytes: its family, or 0. */
static int addr_parse(const char *s, uint8_t out[16])
{
	memset(out, 0, 16);
	if (inet_pton(AF_INET, s, out) == 1)
		return AF_INET;
	if (inet_pton(AF_INET6, s, out) == 1)
		return AF_INET6;
	return 0;
}

static unsigned addr_bits(int family)
{
	return family == AF_INET ? 32 : 128;
}

static void sockaddr_fill(struct conf_sockaddr *sa, int family, const uint8_t addr[16],
			  unsigned port)
{
	memset(&sa->ss, 0, sizeof sa->ss);
	if (family == AF_INET) {
		struct sockaddr_in *in = (struct sockaddr_in *)&sa->ss;
		in->sin_family = AF_INET;
		in->sin_port = htons((uint16_t)port);
		memcpy(&in->sin_addr, addr, 4);
		sa->len = sizeof *in;
	} else {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)&sa->ss;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)port);
		memcpy(&in6->sin6_addr, addr, 16);
		sa->len = sizeof *in6;
	}
}

static const uint8_t *sockaddr_bytes(const struct conf_sockaddr *sa, size_t *n)
{
	if (sa->ss.ss_family == AF_INET) {
		*n = 4;
		return (const uint8_t *)&((const struct sockaddr_in *)&sa->ss)->sin_addr;
	}
	*n = 16;
	return (const uint8_t *)&((const struct sockaddr_in6 *)&sa->ss)->sin6_addr;
}

static unsigned sockaddr_port(const struct conf_sockaddr *sa)
{
	if (sa->ss.ss_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)&sa->ss)->sin_port);
	return ntohs(((const struct sockaddr_in6 *)&sa->ss)->sin6_port);
}

static bool bytes_are_zero(const uint8_t *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return false;
	return true;
}

static bool sockaddr_is_loopback(const struct conf_sockaddr *sa)
{
	size_t n;
	const uint8_t *b = sockaddr_bytes(sa, &n);
	if (n == 4)
		return b[0] == 127;
	const struct in6_addr *a6 = (const struct in6_addr *)b;
	return IN6_IS_ADDR_LOOPBACK(a6) || (IN6_IS_ADDR_V4MAPPED(a6) && b[12] == 127);
}

/* Same family and port, and the same address or one of them the wildcard. */
static bool sockaddrs_overlap(const struct conf_sockaddr *a, const struct conf_sockaddr *b)
{
	if (a->ss.ss_family != b->ss.ss_family || sockaddr_port(a) != sockaddr_port(b))
		return false;
	size_t n;
	const uint8_t *x = sockaddr_bytes(a, &n), *y = sockaddr_bytes(b, &n);
	return memcmp(x, y, n) == 0 || bytes_are_zero(x, n) || bytes_are_zero(y, n);
}

/* "1.2.3.4:25", "[::1]:25", "[::1]", "::1", "host:25" split in two. */
struct hostport {
	char *host;             /* owned, without brackets */
	const char *port;       /* NULL: none written */
	bool bracketed;
	bool bare_ipv6;         /* several colons and no brackets */
};

static bool hostport_split(const char *s, struct hostport *hp)
{
	memset(hp, 0, sizeof *hp);
	if (s[0] == '[') {
		const char *close = strchr(s, ']');
		if (!close || (close[1] != '\0' && close[1] != ':'))
			return false;
		hp->host = xstrndup(s + 1, (size_t)(close - s - 1));
		hp->port = close[1] == ':' ? close + 2 : NULL;
		hp->bracketed = true;
		return true;
	}
	const char *colon = strchr(s, ':');
	if (colon && strchr(colon + 1, ':')) {
		hp->host = xstrdup(s);
		hp->bare_ipv6 = true;
		return true;
	}
	hp->host = colon ? xstrndup(s, (size_t)(colon - s)) : xstrdup(s);
	hp->port = colon ? colon + 1 : NULL;
	return true;
}

static bool port_parse(const char *s, unsigned *out)
{
	uint64_t n;
	if (!parse_whole_number(s, &n) || n < 1 || n > 65535)
		return false;
	*out = (unsigned)n;
	return true;
}

/* What an IP[:PORT] argument is for; default_port 0: the port is required. */
struct addr_kind {
	const char *what;
	const char *usage;
	unsigned default_port;
};

static const struct addr_kind listen_kind = {
	"listen address", "IP:PORT, e.g. 0.0.0.0:25 or [::]:587", 0};
static const struct addr_kind metrics_kind = {
	"metrics address", "IP:PORT, e.g. 127.0.0.1:9154 or [::1]:9154", 0};
static const struct addr_kind dns_kind = {
	"DNS server", "IP or IP:PORT, e.g. 127.0.0.1, 127.0.0.1:53 or [::1]:53", 53};

/* Family of the address (0 when reported); fills addr and port. */
static int hostport_check(struct parser *p, const struct arg *a, const struct addr_kind *k,
			  const struct hostport *hp, uint8_t addr[16], unsigned *port)
{
	if (hp->bare_ipv6 && k->default_port == 0) {
		conf_error(p, &a->pos, "bad %s \"%s\": write an IPv6 address in brackets, e.g. [::1]:25",
			   k->what, Q(a->s));
		return 0;
	}
	int family = addr_parse(hp->host, addr);
	if (!family || (hp->bracketed && family != AF_INET6)) {
		conf_error(p, &a->pos, "bad %s \"%s\" (use %s)", k->what, Q(a->s), k->usage);
		return 0;
	}
	if (hp->port && !port_parse(hp->port, port)) {
		conf_error(p, &a->pos, "bad port \"%s\" in \"%s\" (use 1 to 65535)", Q(hp->port),
			   Q(a->s));
		return 0;
	}
	if (!hp->port && k->default_port == 0) {
		conf_error(p, &a->pos, "missing port in %s \"%s\" (use %s)", k->what, Q(a->s), k->usage);
		return 0;
	}
	return family;
}

static bool arg_sockaddr(struct parser *p, const struct arg *a, const struct addr_kind *k,
			 struct conf_sockaddr *sa)
{
	struct hostport hp;
	uint8_t addr[16];
	unsigned port = k->default_port;
	if (!hostport_split(a->s, &hp)) {
		conf_error(p, &a->pos, "bad %s \"%s\" (use %s)", k->what, Q(a->s), k->usage);
		return false;
	}
	int family = hostport_check(p, a, k, &hp, addr, &port);
	free(hp.host);
	if (!family)
		return false;
	sockaddr_fill(sa, family, addr, port);
	sa->text = xstrdup(a->s);
	sa->pos = a->pos;
	return true;
}

/* ---- rules ------------------------------------------------------------------- */

static void mask_from_prefix(uint8_t mask[16], unsigned prefix)
{
	memset(mask, 0, 16);
	for (unsigned i = 0; i < prefix / 8; i++)
		mask[i] = 0xff;
	if (prefix % 8)
		mask[prefix / 8] = (uint8_t)(0xff << (8 - prefix % 8));
}

/* Leading one bits of an IPv4 mask, or -1 when its ones are not contiguous. */
static int mask_prefix(const uint8_t mask[4])
{
	uint32_t m = (uint32_t)mask[0] << 24 | (uint32_t)mask[1] << 16 |
		     (uint32_t)mask[2] << 8 | mask[3];
	uint32_t host = ~m;
	if ((host & (host + 1)) != 0)
		return -1;
	return __builtin_popcount(m);
}

static void rule_set_network(struct conf_rule *r, int family, const uint8_t addr[16],
			     unsigned prefix)
{
	r->kind = RULE_NETWORK;
	r->family = family;
	r->prefix = prefix;
	mask_from_prefix(r->mask, prefix);
	for (size_t i = 0; i < 16; i++)
		r->addr[i] = addr[i] & r->mask[i];
}

static void report_bad_rule_address(struct parser *p, const struct arg *a)
{
	conf_error(p, &a->pos,
		   "bad address \"%s\" (use an IP address, ADDRESS/PREFIX, ADDRESS MASK, domain NAME "
		   "or host NAME)",
		   Q(a->s));
}

static bool rule_single(struct parser *p, const struct arg *a, struct conf_rule *r)
{
	uint8_t addr[16];
	int family = addr_parse(a->s, addr);
	if (!family) {
		report_bad_rule_address(p, a);
		return false;
	}
	rule_set_network(r, family, addr, addr_bits(family));
	return true;
}

static bool rule_cidr(struct parser *p, const struct arg *a, struct conf_rule *r)
{
	const char *slash = strchr(a->s, '/');
	char *host = xstrndup(a->s, (size_t)(slash - a->s));
	uint8_t addr[16];
	int family = addr_parse(host, addr);
	free(host);
	if (!family) {
		report_bad_rule_address(p, a);
		return false;
	}
	uint64_t prefix;
	if (!parse_whole_number(slash + 1, &prefix) || prefix > addr_bits(family)) {
		conf_error(p, &a->pos, "bad prefix length \"%s\" in \"%s\" (use 0 to %u)",
			   Q(slash + 1), Q(a->s), addr_bits(family));
		return false;
	}
	rule_set_network(r, family, addr, (unsigned)prefix);
	return true;
}

static bool rule_address_mask(struct parser *p, const struct line *d, struct conf_rule *r)
{
	const struct arg *a = &d->args[0], *m = &d->args[1];
	uint8_t addr[16], mask[16];
	int family = addr_parse(a->s, addr);
	if (family == AF_INET6) {
		conf_error(p, &a->pos, "a subnet mask is for IPv4 only: write %s/PREFIX", Q(a->s));
		return false;
	}
	if (!family) {
		report_bad_rule_address(p, a);
		return false;
	}
	if (addr_parse(m->s, mask) != AF_INET) {
		conf_error(p, &m->pos, "bad subnet mask \"%s\" (use a dotted mask like 255.255.255.0)",
			   Q(m->s));
		return false;
	}
	int prefix = mask_prefix(mask);
	if (prefix < 0) {
		conf_error(p, &m->pos,
			   "bad subnet mask \"%s\": its one bits must be contiguous, like 255.255.255.0",
			   Q(m->s));
		return false;
	}
	rule_set_network(r, AF_INET, addr, (unsigned)prefix);
	return true;
}

static bool rule_domain(struct parser *p, const struct line *d, struct conf_rule *r)
{
	if (d->nargs != 2) {
		conf_error(p, &d->args[0].pos, "\"domain\" needs a name: %s domain NAME", d->name.s);
		return false;
	}
	r->domain = arg_domain(p, &d->args[1]);
	r->kind = RULE_DOMAIN;
	return r->domain != NULL;
}

/* The index of name in the server's host names, added when new. */
static size_t server_host_index(struct conf_server *s, const char *name)
{
	for (size_t i = 0; i < s->nhosts; i++)
		if (strcmp(s->hosts[i], name) == 0)
			return i;
	*(char **)xappend(&s->hosts, &s->nhosts, sizeof(char *)) = xstrdup(name);
	return s->nhosts - 1;
}

/* host NAME: the addresses NAME stands for in DNS (A and AAAA), looked up
 * by the daemon; an address is a rule of its own. */
static bool rule_host(struct parser *p, const struct line *d, struct conf_rule *r)
{
	if (d->nargs != 2) {
		conf_error(p, &d->args[0].pos, "\"host\" needs a name: %s host NAME", d->name.s);
		return false;
	}
	const struct arg *a = &d->args[1];
	uint8_t addr[16];
	if (addr_parse(a->s, addr)) {
		conf_error(p, &a->pos, "\"%s\" is an address, not a host name: write %s %s",
			   Q(a->s), d->name.s, Q(a->s));
		return false;
	}
	r->domain = arg_dns_name(p, a, "host");
	r->kind = RULE_HOST;
	if (!r->domain)
		return false;
	r->host = server_host_index(p->server, r->domain);
	return true;
}

/* A block list's answer that counts: an address in 127.0.0.0/8 (RFC 5782
 * §2.3: the answers a list gives are in the loopback network). */
static bool rule_dnsbl_answer(struct parser *p, const struct arg *a, uint8_t out[4])
{
	uint8_t addr[16];
	if (addr_parse(a->s, addr) != AF_INET || addr[0] != 127) {
		conf_error(p, &a->pos,
			   "bad block list answer \"%s\" (use an address in 127.0.0.0/8, e.g. "
			   "127.0.0.2)", Q(a->s));
		return false;
	}
	memcpy(out, addr, 4);
	return true;
}

/* dnsbl ZONE [ANSWER...]: the client is listed when its reversed address
 * under ZONE has an A record (one of the ANSWERs when given). */
static bool rule_dnsbl(struct parser *p, const struct line *d, struct conf_rule *r)
{
	if (d->nargs < 2) {
		conf_error(p, &d->args[0].pos,
			   "\"dnsbl\" needs a zone: %s dnsbl ZONE [ANSWER...]", d->name.s);
		return false;
	}
	r->kind = RULE_DNSBL;
	r->domain = arg_dns_name(p, &d->args[1], "block list zone");
	bool ok = r->domain != NULL;
	for (size_t i = 2; i < d->nargs; i++) {
		uint8_t answer[4];
		if (!rule_dnsbl_answer(p, &d->args[i], answer)) {
			ok = false;
			continue;
		}
		memcpy(xappend(&r->answers, &r->nanswers, sizeof answer), answer, sizeof answer);
	}
	if (!ok) {
		free(r->domain);
		free(r->answers);
		memset(r, 0, sizeof *r);
	}
	return ok;
}

static char *args_joined(const struct line *d)
{
	struct wordbuf b = {0};
	for (size_t i = 0; i < d->nargs; i++) {
		if (i)
			wordbuf_putc(&b, ' ');
		wordbuf_puts(&b, d->args[i].s);
	}
	return wordbuf_take(&b);
}

/* allow/deny RULE: ADDRESS, ADDRESS/PREFIX, ADDRESS MASK, domain NAME,
 * host NAME or dnsbl ZONE [ANSWER...]. */
static bool rule_parse(struct parser *p, const struct line *d, enum conf_action action,
		       struct conf_rule *r)
{
	const struct arg *first = &d->args[0];
	bool ok;
	memset(r, 0, sizeof *r);
	if (strcmp(first->s, "dnsbl") == 0)
		ok = rule_dnsbl(p, d, r);
	else if (d->nargs > 2) {
		/* only a dnsbl rule takes more */
		conf_error(p, &d->name.pos, "\"%s\" needs 1 or 2 arguments", d->name.s);
		ok = false;
	} else if (strcmp(first->s, "domain") == 0)
		ok = rule_domain(p, d, r);
	else if (strcmp(first->s, "host") == 0)
		ok = rule_host(p, d, r);
	else if (d->nargs == 2)
		ok = rule_address_mask(p, d, r);
	else if (strchr(first->s, '/'))
		ok = rule_cidr(p, first, r);
	else
		ok = rule_single(p, first, r);
	if (!ok)
		return false;
	r->action = action;
	r->text = args_joined(d);
	r->pos = d->name.pos;
	return true;
}

static void rule_append(struct conf_rule **rules, size_t *n, const struct conf_rule *r)
{
	struct conf_rule *slot = xappend(rules, n, sizeof *slot);
	*slot = *r;
}

/* ---- defaults ---------------------------------------------------------------- */

static char *system_hostname(void)
{
	char name[256];
	if (gethostname(name, sizeof name - 1) < 0)
		return xstrdup("localhost");
	name[sizeof name - 1] = '\0';
	return str_lower(xstrdup(name[0] ? name : "localhost"));
}

static void conf_defaults(struct conf *c)
{
	static const unsigned retry[] = {5 * 60, 15 * 60, 60 * 60, 4 * 60 * 60};
	c->hostname = system_hostname();
	c->spool = xstrdup("/var/spool/posthorn");
	c->mailboxes = xstrdup("/var/mail/posthorn");
	c->users = xstrdup("/etc/posthorn/users");
	c->host_refresh_min = 30;
	c->host_refresh_max = 86400;
	c->outbound.smarthost_port = 25;
	c->outbound.port = 25;
	c->outbound.tls = OUTBOUND_TLS_OPPORTUNISTIC;
	c->outbound.tls_policy_dane = true;
	c->outbound.tls_policy_sts = true;
	c->outbound.lifetime = 5 * 86400;
	c->outbound.retry = xmalloc(sizeof retry);
	memcpy(c->outbound.retry, retry, sizeof retry);
	c->outbound.nretry = ARRAY_LEN(retry);
	c->metrics_tls.min_bits = 128;
	c->metrics_tls.min_version = TLS_VERSION_1_2;
}

static unsigned default_timeout(enum conf_protocol protocol)
{
	switch (protocol) {
	case PROTO_POP3: return 10 * 60;
	case PROTO_IMAP: return 30 * 60;
	default: return 5 * 60;
	}
}

static void server_defaults(struct conf_server *s, const char *name, struct conf_pos pos)
{
	memset(s, 0, sizeof *s);
	s->name = xstrdup(name);
	s->pos = pos;
	s->protocol = PROTO_SMTP;
	s->tls.min_bits = 128;
	s->tls.min_version = TLS_VERSION_1_2;
	s->connection.default_action = ACTION_ALLOW;
	s->connection.reverse_lookup = true;
	s->auth.mechanisms = MECH_PLAIN | MECH_LOGIN | MECH_SCRAM_SHA_256;
	s->auth.plaintext_requires_tls = true;
	s->auth.sender_must_match = true;
	s->auth.lockout_failures = 5;
	s->auth.lockout_window = 15 * 60;
	s->auth.lockout_duration = 30 * 60;
	s->auth.lockout_ipv6_prefix = 64;
	s->auth.received_auth = true;
	s->relay.authenticated = true;
	s->limits.message_size = UINT64_C(25) << 20;
	s->limits.recipients = 100;
	s->limits.connections = 1000;
	s->limits.connections_per_ip = 20;
	s->limits.timeout = default_timeout(PROTO_SMTP);
	s->limits.error_delay = 1;
	s->limits.error_delay_after = 3;
	s->limits.unknown_recipients = 50;
	s->limits.unknown_recipients_window = 60 * 60;
	s->limits.unknown_recipients_duration = 60 * 60;
	s->limits.proxy_timeout = 5;
}

/* ---- freeing ------------------------------------------------------------------ */

static void dns_free(struct conf_dns *dns)
{
	for (size_t i = 0; i < dns->nservers; i++)
		free(dns->servers[i].text);
	free(dns->servers);
}

static void rules_free(struct conf_rule *rules, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(rules[i].domain);
		free(rules[i].answers);
		free(rules[i].text);
	}
	free(rules);
}

static void tls_free(struct conf_tls *t)
{
	for (size_t i = 0; i < t->ncerts; i++) {
		free(t->certs[i].certificate);
		free(t->certs[i].key);
	}
	free(t->certs);
}

static void server_free(struct conf_server *s)
{
	free(s->name);
	for (size_t i = 0; i < s->nlistens; i++)
		free(s->listens[i].addr.text);
	free(s->listens);
	free(s->hostname);
	dns_free(&s->dns);
	tls_free(&s->tls);
	rules_free(s->connection.rules, s->connection.nrules);
	rules_free(s->relay.rules, s->relay.nrules);
	rules_free(s->proxy_from, s->nproxy_from);
	for (size_t i = 0; i < s->nhosts; i++)
		free(s->hosts[i]);
	free(s->hosts);
	for (size_t i = 0; i < s->nmilters; i++) {
		free(s->milters[i].name);
		free(s->milters[i].socket);
		free(s->milters[i].inet.text);
		free(s->milters[i].unix_path);
	}
	free(s->milters);
	free(s->junk_header);
	free(s->junk_value);
	free(s->auth.keytab);
	for (size_t i = 0; i < s->auth.nrealms; i++) {
		free(s->auth.realms[i].realm);
		free(s->auth.realms[i].domain);
	}
	free(s->auth.realms);
	free(s->auth.replay_cache);
}

static void ldap_free(struct conf_ldap *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->nuris; i++)
		free(l->uris[i]);
	free(l->uris);
	free(l->ca);
	free(l->bind_dn);
	free(l->bind_password_file);
	free(l->base);
	free(l->filter);
	for (size_t i = 0; i < l->naddresses; i++)
		free(l->addresses[i]);
	free(l->addresses);
	free(l->principal);
	free(l);
}

static void acme_free(struct conf_acme *a)
{
	free(a->directory);
	free(a->contact);
	free(a->http.text);
	for (size_t i = 0; i < a->nnames; i++)
		free(a->names[i]);
	free(a->names);
	free(a->ca);
}

void conf_free(struct conf *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->nservers; i++)
		server_free(&c->servers[i]);
	free(c->servers);
	for (size_t i = 0; i < c->ndomains; i++)
		free(c->domains[i]);
	free(c->domains);
	for (size_t i = 0; i < c->nfiles; i++)
		free(c->files[i]);
	free(c->files);
	free(c->path);
	free(c->hostname);
	free(c->spool);
	free(c->mailboxes);
	free(c->users);
	ldap_free(c->ldap);
	free(c->aliases);
	dns_free(&c->dns);
	for (size_t i = 0; i < c->nmetrics; i++)
		free(c->metrics[i].addr.text);
	free(c->metrics);
	free(c->metrics_password);
	tls_free(&c->metrics_tls);
	free(c->run_as);
	free(c->outbound.smarthost);
	free(c->outbound.smarthost_host);
	free(c->outbound.smarthost_user);
	free(c->outbound.smarthost_secret);
	free(c->outbound.ca_file);
	free(c->outbound.retry);
	acme_free(&c->acme);
	for (size_t i = 0; i < c->ndkim_keys; i++) {
		free(c->dkim_keys[i].domain);
		free(c->dkim_keys[i].selector);
		free(c->dkim_keys[i].file);
	}
	free(c->dkim_keys);
	free(c);
}

char *conf_acme_path(const struct conf *conf, const char *file)
{
	return file ? xasprintf("%s/acme/%s", conf->spool, file) : xasprintf("%s/acme", conf->spool);
}

/* ---- files ------------------------------------------------------------------- */

static const char *conf_add_file(struct conf *c, const char *name)
{
	char **slot = xappend(&c->files, &c->nfiles, sizeof *slot);
	*slot = xstrdup(name);
	return *slot;
}

/* The whole file as a string; NULL with *why set when it cannot be used. */
static char *read_text_file(const char *path, struct file_id *id, const char **why)
{
	FILE *f = fopen(path, "re");
	struct stat st;
	if (!f || fstat(fileno(f), &st) < 0) {
		*why = strerror(errno);
		if (f)
			(void)fclose(f); /* read only: nothing to lose */
		return NULL;
	}
	id->dev = st.st_dev;
	id->ino = st.st_ino;
	size_t len = 0, cap = 4096;
	char *buf = xmalloc(cap);
	size_t got;
	*why = NULL;
	while (!*why && (got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
		len += got;
		if (len > CONF_FILE_SIZE_MAX)
			*why = "file too large";
		else if (len + 1 == cap)
			buf = xrealloc(buf, cap *= 2);
	}
	if (!*why && ferror(f))
		*why = strerror(errno);
	(void)fclose(f); /* read only: what was read is all there is */
	buf[len] = '\0';
	if (!*why && strlen(buf) != len)
		*why = "contains a NUL byte (not a text file?)";
	if (*why) {
		free(buf);
		return NULL;
	}
	return buf;
}

/* ---- handlers: top level ------------------------------------------------------ */

static void parse_text(struct parser *p, const char *file, const char *text, const char *dir);

static void global_hostname(struct parser *p, const struct line *d)
{
	char *name = arg_domain(p, &d->args[0]);
	if (!name)
		return;
	free(p->conf->hostname);
	p->conf->hostname = name;
}

static void global_domains(struct parser *p, const struct line *d)
{
	struct conf *c = p->conf;
	for (size_t i = 0; i < d->nargs; i++) {
		char *name = arg_domain(p, &d->args[i]);
		if (name && conf_is_local_domain(c, name)) {
			free(name);
			continue;
		}
		if (name)
			*(char **)xappend(&c->domains, &c->ndomains, sizeof(char *)) = name;
	}
}

static void global_spool(struct parser *p, const struct line *d)
{
	arg_path(p, d, &d->args[0], &p->conf->spool);
}

static void global_mailboxes(struct parser *p, const struct line *d)
{
	arg_path(p, d, &d->args[0], &p->conf->mailboxes);
}

/* quota SIZE [MESSAGES] | quota none: global, because a user's Maildir is
 * one for every server (SMTP fills it, POP3 and IMAP read it). */
static void global_quota(struct parser *p, const struct line *d)
{
	p->conf->quota_bytes = 0;
	p->conf->quota_messages = 0;
	if (strcmp(d->args[0].s, "none") == 0) {
		if (d->nargs > 1)
			conf_error(p, &d->args[1].pos, "\"quota none\" takes no message count");
		return;
	}
	if (!arg_size(p, d, &d->args[0], &p->conf->quota_bytes) || d->nargs < 2)
		return;
	unsigned n;
	if (arg_number(p, d, &d->args[1], 1, CONF_QUOTA_MESSAGES_MAX, &n))
		p->conf->quota_messages = n;
}

static void global_users(struct parser *p, const struct line *d)
{
	arg_path(p, d, &d->args[0], &p->conf->users);
}

static void global_aliases(struct parser *p, const struct line *d)
{
	arg_path(p, d, &d->args[0], &p->conf->aliases);
}

static void dns_add(struct parser *p, const struct line *d, struct conf_dns *dns)
{
	for (size_t i = 0; i < d->nargs; i++) {
		struct conf_sockaddr sa = {0};
		if (arg_sockaddr(p, &d->args[i], &dns_kind, &sa))
			*(struct conf_sockaddr *)xappend(&dns->servers, &dns->nservers, sizeof sa) = sa;
	}
}

static void global_dns(struct parser *p, const struct line *d)
{
	dns_add(p, d, &p->conf->dns);
}

/* host-refresh MIN MAX: the bounds of the TTL after which the names of
 * host rules are looked up again. */
static void global_host_refresh(struct parser *p, const struct line *d)
{
	unsigned lo, hi;
	bool ok = arg_duration(p, d, &d->args[0], &lo);
	ok = arg_duration(p, d, &d->args[1], &hi) && ok;
	if (!ok)
		return;
	if (hi < lo) {
		conf_error(p, &d->args[1].pos,
			   "bad duration \"%s\" for \"host-refresh\" (the maximum is less than the "
			   "minimum %s)", Q(d->args[1].s), Q(d->args[0].s));
		return;
	}
	p->conf->host_refresh_min = lo;
	p->conf->host_refresh_max = hi;
}

/* metrics IP:PORT [tls]: the HTTP listener of GET /metrics and the status
 * page, HTTPS with tls; repeatable, one address per line. */
static void global_metrics(struct parser *p, const struct line *d)
{
	struct conf_metrics m = {0};
	if (d->nargs > 1) {
		if (strcmp(d->args[1].s, "tls") != 0) {
			conf_error(p, &d->args[1].pos, "bad option \"%s\" for \"metrics\" (use tls)",
				   Q(d->args[1].s));
			return;
		}
		m.tls = true;
	}
	if (arg_sockaddr(p, &d->args[0], &metrics_kind, &m.addr))
		*(struct conf_metrics *)xappend(&p->conf->metrics, &p->conf->nmetrics, sizeof m) = m;
}

/* metrics-tls { certificate FILE key FILE ... }: what a server's tls block
 * takes, but for the `metrics ... tls` addresses. */
static void global_metrics_tls(struct parser *p, const struct line *d)
{
	p->tls = &p->conf->metrics_tls;
	p->metrics_tls_pos = d->name.pos;
}

/* metrics-password FILE: HTTP Basic on the metrics listener; the secret
 * is refused when others may read it, as smarthost-auth's. */
static void global_metrics_password(struct parser *p, const struct line *d)
{
	char *path = NULL;
	if (!arg_path(p, d, &d->args[0], &path))
		return;
	struct stat st;
	if (stat(path, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO))) {
		conf_error(p, &d->args[0].pos,
			   "secret file %s may be read by group or others (mode %04o); chmod 600 it",
			   path, (unsigned)(st.st_mode & 07777));
		free(path);
		return;
	}
	free(p->conf->metrics_password);
	p->conf->metrics_password = path;
	p->metrics_password_pos = d->name.pos;
}

static void global_run_as(struct parser *p, const struct line *d)
{
	const struct arg *a = &d->args[0];
	if (!name_is_valid(a->s) || a->s[0] == '-') {
		conf_error(p, &a->pos, "bad user name \"%s\" for \"run-as\"", Q(a->s));
		return;
	}
	free(p->conf->run_as);
	p->conf->run_as = xstrdup(a->s);
}

static bool file_is_being_read(const struct parser *p, const struct file_id *id)
{
	for (size_t i = 0; i < p->nreading; i++)
		if (p->reading[i].dev == id->dev && p->reading[i].ino == id->ino)
			return true;
	return false;
}

static void include_text(struct parser *p, const char *path, const char *text,
			 const struct file_id *id)
{
	char *dir = path_dirname(path);
	p->reading[p->nreading++] = *id;
	p->depth++;
	parse_text(p, conf_add_file(p->conf, path), text, dir);
	p->depth--;
	p->nreading--;
	free(dir);
}

static void include_file(struct parser *p, const struct arg *a, const char *path)
{
	struct file_id id;
	const char *why;
	char *text = read_text_file(path, &id, &why);
	if (!text)
		conf_error(p, &a->pos, "cannot include \"%s\": %s", Q(path), why);
	else if (file_is_being_read(p, &id))
		conf_error(p, &a->pos, "include loop: \"%s\" is already being read", Q(path));
	else if (p->depth >= CONF_INCLUDE_DEPTH_MAX)
		conf_error(p, &a->pos, "cannot include \"%s\": includes nested more than %d deep",
			   Q(path), CONF_INCLUDE_DEPTH_MAX);
	else
		include_text(p, path, text, &id);
	free(text);
}

static bool has_wildcard(const char *s)
{
	return strpbrk(s, "*?[") != NULL;
}

/* dir with glob(3)'s special characters escaped. */
static char *glob_escape(const char *dir)
{
	struct wordbuf b = {0};
	for (; *dir; dir++) {
		if (strchr("*?[\\", *dir))
			wordbuf_putc(&b, '\\');
		wordbuf_putc(&b, *dir);
	}
	return wordbuf_take(&b);
}

/* include PATH: a pattern matching nothing is fine, a missing plain file is not. */
static void global_include(struct parser *p, const struct line *d)
{
	const struct arg *a = &d->args[0];
	if (a->s[0] == '\0') {
		conf_error(p, &a->pos, "empty path for \"include\"");
		return;
	}
	if (!has_wildcard(a->s)) {
		char *path = path_join(d->dir, a->s);
		include_file(p, a, path);
		free(path);
		return;
	}
	char *dir = glob_escape(d->dir);
	char *pattern = path_join(dir, a->s);
	glob_t g = {0};
	int r = glob(pattern, 0, NULL, &g);
	if (r == 0)
		for (size_t i = 0; i < g.gl_pathc; i++)
			include_file(p, a, g.gl_pathv[i]);
	else if (r != GLOB_NOMATCH)
		conf_error(p, &a->pos, "cannot include \"%s\": %s", Q(a->s),
			   r == GLOB_NOSPACE ? "out of memory" : "read error");
	globfree(&g);
	free(pattern);
	free(dir);
}

static void global_server(struct parser *p, const struct line *d)
{
	bool ok = !d->bad;
	if (ok && !name_is_valid(d->args[0].s)) {
		conf_error(p, &d->args[0].pos,
			   "bad server name \"%s\" (use letters, digits, \".\", \"_\" and \"-\")",
			   Q(d->args[0].s));
		ok = false;
	}
	if (ok) {
		p->server = xappend(&p->conf->servers, &p->conf->nservers, sizeof *p->server);
		p->state = xappend(&p->states, &p->nstates, sizeof *p->state);
	} else {
		p->server = &p->scratch;
		p->state = &p->scratch_state;
		memset(p->state, 0, sizeof *p->state);
	}
	server_defaults(p->server, ok ? d->args[0].s : "", d->name.pos);
	p->errors_at_server = p->errors;
}

static void server_end(struct parser *p, const struct line *d)
{
	(void)d;
	struct conf_server *s = p->server;
	if (!p->state->timeout_set)
		s->limits.timeout = default_timeout(s->protocol);
	p->state->had_errors = p->errors > p->errors_at_server;
	if (s == &p->scratch)
		server_free(s);
	p->server = NULL;
	p->state = NULL;
}

/* ---- handlers: verify ---------------------------------------------------------- */

static void verify_begin(struct parser *p, const struct line *d)
{
	p->server->verify.set = true;
	p->server->verify.pos = d->name.pos;
}

static void verify_spf(struct parser *p, const struct line *d)
{
	arg_bool(p, d, &d->args[0], &p->server->verify.spf);
}

static void verify_dkim(struct parser *p, const struct line *d)
{
	arg_bool(p, d, &d->args[0], &p->server->verify.dkim);
}

static void verify_arc(struct parser *p, const struct line *d)
{
	arg_bool(p, d, &d->args[0], &p->server->verify.arc);
}

/* dmarc no|report|enforce */
static void verify_dmarc(struct parser *p, const struct line *d)
{
	const char *v = d->args[0].s;
	struct conf_verify *vf = &p->server->verify;
	if (strcmp(v, "no") == 0)
		vf->dmarc = CONF_DMARC_NO;
	else if (strcmp(v, "report") == 0)
		vf->dmarc = CONF_DMARC_REPORT;
	else if (strcmp(v, "enforce") == 0)
		vf->dmarc = CONF_DMARC_ENFORCE;
	else
		conf_error(p, &d->args[0].pos,
			   "bad value \"%s\" for \"dmarc\" (use no, report or enforce)", Q(v));
}

/* ---- handlers: outbound ------------------------------------------------------- */

static void report_bad_smarthost(struct parser *p, const struct arg *a)
{
	conf_error(p, &a->pos, "bad smarthost \"%s\" (use HOST or HOST:PORT, e.g. relay.example:587)",
		   Q(a->s));
}

/* HOST: a domain name or an IP address; IPv6 in brackets when a port follows. */
static bool smarthost_check(struct parser *p, const struct arg *a, const struct hostport *hp,
			    unsigned *port)
{
	uint8_t addr[16];
	int family = addr_parse(hp->host, addr);
	if (hp->bracketed ? family != AF_INET6 : (family == 0 && !domain_is_valid(hp->host))) {
		report_bad_smarthost(p, a);
		return false;
	}
	if (hp->port && !port_parse(hp->port, port)) {
		conf_error(p, &a->pos, "bad port \"%s\" in \"%s\" (use 1 to 65535)", Q(hp->port),
			   Q(a->s));
		return false;
	}
	return true;
}

static void out_smarthost(struct parser *p, const struct line *d)
{
	struct conf_outbound *o = &p->conf->outbound;
	const struct arg *a = &d->args[0];
	struct hostport hp;
	unsigned port = 25;
	if (!hostport_split(a->s, &hp)) {
		report_bad_smarthost(p, a);
		return;
	}
	if (!smarthost_check(p, a, &hp, &port)) {
		free(hp.host);
		return;
	}
	free(o->smarthost);
	free(o->smarthost_host);
	o->smarthost = xstrdup(a->s);
	o->smarthost_host = str_lower(hp.host);
	o->smarthost_port = (unsigned short)port;
}

static void out_smarthost_auth(struct parser *p, const struct line *d)
{
	struct conf_outbound *o = &p->conf->outbound;
	if (d->args[0].s[0] == '\0') {
		conf_error(p, &d->args[0].pos, "empty user name for \"smarthost-auth\"");
		return;
	}
	if (!arg_path(p, d, &d->args[1], &o->smarthost_secret))
		return;
	/* a secret others may read is refused, here at start-up and reload
	 * rather than at the first delivery */
	struct stat st;
	if (stat(o->smarthost_secret, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO))) {
		conf_error(p, &d->args[1].pos,
			   "secret file %s may be read by group or others (mode %04o); chmod 600 it",
			   o->smarthost_secret, (unsigned)(st.st_mode & 07777));
		return;
	}
	free(o->smarthost_user);
	o->smarthost_user = xstrdup(d->args[0].s);
	p->smarthost_auth_pos = d->name.pos;
}

static void out_port(struct parser *p, const struct line *d)
{
	unsigned port;
	if (arg_number(p, d, &d->args[0], 1, 65535, &port))
		p->conf->outbound.port = (unsigned short)port;
}

static void out_tls(struct parser *p, const struct line *d)
{
	static const char *const names[] = {
		[OUTBOUND_TLS_OPPORTUNISTIC] = "opportunistic",
		[OUTBOUND_TLS_REQUIRED] = "required",
		[OUTBOUND_TLS_NO] = "no",
		NULL,
	};
	int i = arg_keyword(p, d, &d->args[0], names, "opportunistic, required or no");
	if (i >= 0)
		p->conf->outbound.tls = (enum conf_outbound_tls)i;
}

/* tls-policy dane | mta-sts | dane mta-sts | none */
static void out_tls_policy(struct parser *p, const struct line *d)
{
	static const char *const names[] = {"none", "dane", "mta-sts", NULL};
	bool dane = false, sts = false;
	for (size_t k = 0; k < d->nargs; k++) {
		int i = arg_keyword(p, d, &d->args[k], names, "dane, mta-sts, both, or none");
		if (i < 0)
			return;
		if ((i == 0 && d->nargs > 1) || (i == 1 && dane) || (i == 2 && sts)) {
			conf_error(p, &d->args[k].pos, "\"%s\" does not go with the other words of "
				   "\"tls-policy\" (use dane, mta-sts, both, or none)", d->args[k].s);
			return;
		}
		dane = dane || i == 1;
		sts = sts || i == 2;
	}
	p->conf->outbound.tls_policy_dane = dane;
	p->conf->outbound.tls_policy_sts = sts;
}

/* tls-reports yes | no */
static void out_tls_reports(struct parser *p, const struct line *d)
{
	if (arg_bool(p, d, &d->args[0], &p->conf->outbound.tls_reports))
		p->conf->outbound.tls_reports_set = true;
}

static void out_ca_file(struct parser *p, const struct line *d)
{
	(void)arg_path(p, d, &d->args[0], &p->conf->outbound.ca_file);
}

static void out_lifetime(struct parser *p, const struct line *d)
{
	arg_duration(p, d, &d->args[0], &p->conf->outbound.lifetime);
}

static void out_retry(struct parser *p, const struct line *d)
{
	struct conf_outbound *o = &p->conf->outbound;
	unsigned *steps = xcalloc(d->nargs, sizeof *steps);
	bool ok = true;
	for (size_t i = 0; i < d->nargs; i++)
		ok = arg_duration(p, d, &d->args[i], &steps[i]) && ok;
	if (!ok) {
		free(steps);
		return;
	}
	free(o->retry);
	o->retry = steps;
	o->nretry = d->nargs;
}

/* ---- handlers: server ---------------------------------------------------------- */

static void srv_protocol(struct parser *p, const struct line *d)
{
	for (int i = PROTO_SMTP; i <= PROTO_IMAP; i++) {
		if (strcmp(d->args[0].s, conf_protocol_name((enum conf_protocol)i)) == 0) {
			p->server->protocol = (enum conf_protocol)i;
			return;
		}
	}
	conf_error(p, &d->args[0].pos, "unknown protocol \"%s\" (use smtp, pop3 or imap)",
		   Q(d->args[0].s));
}

/* listen IP:PORT [tls] [proxy]: each option once, in any order. */
static bool listen_option(struct parser *p, const struct arg *a, struct conf_listen *l)
{
	bool *flag = strcmp(a->s, "tls") == 0 ? &l->tls : strcmp(a->s, "proxy") == 0 ? &l->proxy : NULL;
	if (!flag) {
		conf_error(p, &a->pos, "bad option \"%s\" for \"listen\" (use tls, proxy or both)",
			   Q(a->s));
		return false;
	}
	if (*flag) {
		conf_error(p, &a->pos, "option \"%s\" given twice for \"listen\"", Q(a->s));
		return false;
	}
	*flag = true;
	return true;
}

static void srv_listen(struct parser *p, const struct line *d)
{
	struct conf_server *s = p->server;
	struct conf_listen want = {0};
	bool ok = true;
	for (size_t i = 1; i < d->nargs; i++)
		ok = listen_option(p, &d->args[i], &want) && ok;
	if (!ok || !arg_sockaddr(p, &d->args[0], &listen_kind, &want.addr))
		return;
	struct conf_listen *l = xappend(&s->listens, &s->nlistens, sizeof *l);
	*l = want;
}

/* proxy-from ADDRESS|ADDRESS/PREFIX ...: the load balancers whose PROXY
 * header a `proxy` listener believes; repeatable. */
static void srv_proxy_from(struct parser *p, const struct line *d)
{
	struct conf_server *s = p->server;
	for (size_t i = 0; i < d->nargs; i++) {
		const struct arg *a = &d->args[i];
		const char *slash = strchr(a->s, '/');
		char *host = slash ? xstrndup(a->s, (size_t)(slash - a->s)) : xstrdup(a->s);
		uint8_t addr[16];
		int family = addr_parse(host, addr);
		free(host);
		if (!family) {
			conf_error(p, &a->pos, "bad address \"%s\" for \"proxy-from\" (use an IP "
				   "address or ADDRESS/PREFIX, e.g. 10.0.0.0/24)", Q(a->s));
			continue;
		}
		struct conf_rule r = {0};
		if (slash ? !rule_cidr(p, a, &r) : !rule_single(p, a, &r))
			continue;
		r.action = ACTION_ALLOW;
		r.text = xstrdup(a->s);
		r.pos = a->pos;
		rule_append(&s->proxy_from, &s->nproxy_from, &r);
	}
}

static void srv_hostname(struct parser *p, const struct line *d)
{
	char *name = arg_domain(p, &d->args[0]);
	if (!name)
		return;
	free(p->server->hostname);
	p->server->hostname = name;
}

static void srv_dns(struct parser *p, const struct line *d)
{
	dns_add(p, d, &p->server->dns);
}

/* ---- handlers: milter and junk-header --------------------------------------- */

static const struct addr_kind milter_kind = {
	"milter socket", "inet:IP:PORT or unix:/PATH, e.g. inet:127.0.0.1:11332", 0};

/* milter NAME { ... }: appended to the server's list; its lines fill the last one. */
static void milter_begin(struct parser *p, const struct line *d)
{
	struct conf_server *s = p->server;
	struct conf_milter *m = xappend(&s->milters, &s->nmilters, sizeof *m);
	m->name = xstrdup(d->nargs > 0 ? d->args[0].s : "");
	m->timeout = 30;
	m->connect_timeout = 5;
	m->on_failure = MILTER_ON_FAILURE_TEMPFAIL;
	m->stages = MILTER_STAGE_ALL;
	m->pos = d->name.pos;
	if (d->nargs > 0 && !name_is_valid(d->args[0].s))
		conf_error(p, &d->args[0].pos,
			   "bad milter name \"%s\" (use letters, digits, \".\", \"_\" and \"-\")",
			   Q(d->args[0].s));
	for (size_t i = 0; i + 1 < s->nmilters; i++)
		if (strcmp(s->milters[i].name, m->name) == 0)
			conf_error(p, &d->name.pos, "duplicate milter \"%s\" in server \"%s\"",
				   Q(m->name), s->name);
}

static struct conf_milter *milter_current(struct parser *p)
{
	return &p->server->milters[p->server->nmilters - 1];
}

static void milter_end(struct parser *p, const struct line *d)
{
	const struct conf_milter *m = milter_current(p);
	if (!m->socket)
		conf_error(p, &m->pos, "milter \"%s\" without \"socket\" (e.g. socket "
			   "inet:127.0.0.1:11332)", Q(m->name));
}

static void milter_socket(struct parser *p, const struct line *d)
{
	struct conf_milter *m = milter_current(p);
	const struct arg *a = &d->args[0];
	if (strncmp(a->s, "unix:", 5) == 0) {
		struct arg path = {a->s + 5, a->pos};
		if (!arg_path(p, d, &path, &m->unix_path))
			return;
		if (strlen(m->unix_path) >= sizeof(((struct sockaddr_un *)0)->sun_path)) {
			conf_error(p, &a->pos, "milter socket path \"%s\" is too long", Q(a->s));
			return;
		}
	} else if (strncmp(a->s, "inet:", 5) == 0) {
		struct arg addr = {a->s + 5, a->pos};
		if (!arg_sockaddr(p, &addr, &milter_kind, &m->inet))
			return;
	} else {
		conf_error(p, &a->pos, "bad milter socket \"%s\" (use %s)", Q(a->s), milter_kind.usage);
		return;
	}
	m->socket = xstrdup(a->s);
}

static void milter_timeout(struct parser *p, const struct line *d)
{
	arg_duration(p, d, &d->args[0], &milter_current(p)->timeout);
}

static void milter_connect_timeout(struct parser *p, const struct line *d)
{
	arg_duration(p, d, &d->args[0], &milter_current(p)->connect_timeout);
}

static void milter_on_failure(struct parser *p, const struct line *d)
{
	static const char *const names[] = {"tempfail", "accept", "reject", NULL};
	int k = arg_keyword(p, d, &d->args[0], names, "tempfail, accept or reject");
	if (k >= 0)
		milter_current(p)->on_failure = (enum conf_milter_failure)k;
}

static void milter_stages(struct parser *p, const struct line *d)
{
	static const char *const names[] = {"connect", "helo", "mail", "rcpt", "data", NULL};
	unsigned stages = 0;
	for (size_t i = 0; i < d->nargs; i++) {
		int k = arg_keyword(p, d, &d->args[i], names, "connect, helo, mail, rcpt or data");
		if (k < 0)
			return;
		stages |= 1u << k;
	}
	milter_current(p)->stages = stages;
}

/* junk-header NAME VALUE: the spam verdict field a milter adds. */
static void srv_junk_header(struct parser *p, const struct line *d)
{
	const char *name = d->args[0].s;
	bool ok = *name != '\0';
	for (const char *c = name; *c; c++) /* RFC 5322 §2.2 field name */
		ok = ok && *c > 32 && *c < 127 && *c != ':';
	if (!ok) {
		conf_error(p, &d->args[0].pos, "bad header field name \"%s\" for \"junk-header\"",
			   Q(name));
		return;
	}
	free(p->server->junk_header);
	free(p->server->junk_value);
	p->server->junk_header = xstrdup(name);
	p->server->junk_value = xstrdup(d->args[1].s);
}

/* ---- handlers: acme ------------------------------------------------------------ */

/* "acme { ... }": RFC 8555 §7.1.1 wants the directory over HTTPS. */
static void acme_directory(struct parser *p, const struct line *d)
{
	const char *u = d->args[0].s;
	if (strncmp(u, "https://", 8) != 0 || u[8] == '\0' || strpbrk(u, " \t\"\\")) {
		conf_error(p, &d->args[0].pos,
			   "bad ACME directory \"%s\" (use the CA's https:// URL, e.g. "
			   "https://acme.example/directory)", Q(u));
		return;
	}
	free(p->conf->acme.directory);
	p->conf->acme.directory = xstrdup(u);
}

static void acme_contact(struct parser *p, const struct line *d)
{
	const char *u = d->args[0].s;
	if (strncmp(u, "mailto:", 7) != 0 || !strchr(u + 7, '@') || strpbrk(u, " \t\"\\,")) {
		conf_error(p, &d->args[0].pos,
			   "bad ACME contact \"%s\" (use mailto:ADDRESS, e.g. "
			   "mailto:postmaster@example.org)", Q(u));
		return;
	}
	free(p->conf->acme.contact);
	p->conf->acme.contact = xstrdup(u);
}

static void acme_challenge(struct parser *p, const struct line *d)
{
	struct conf_acme *a = &p->conf->acme;
	if (strcmp(d->args[0].s, "tls-alpn-01") == 0) {
		if (d->nargs != 1) {
			conf_error(p, &d->args[1].pos,
				   "\"challenge tls-alpn-01\" takes no address: it is answered on "
				   "every \"listen ADDRESS:PORT tls\"");
			return;
		}
		a->challenge = ACME_CHALLENGE_TLSALPN01;
		a->challenge_set = true;
		return;
	}
	if (strcmp(d->args[0].s, "http-01") != 0) {
		conf_error(p, &d->args[0].pos,
			   "unknown ACME challenge \"%s\" (use http-01 ADDRESS:PORT or tls-alpn-01)",
			   Q(d->args[0].s));
		return;
	}
	if (d->nargs != 2) {
		conf_error(p, &d->name.pos,
			   "\"challenge http-01\" needs the address to answer on, e.g. 0.0.0.0:80");
		return;
	}
	struct conf_sockaddr sa = {0};
	if (!arg_sockaddr(p, &d->args[1], &listen_kind, &sa))
		return;
	free(a->http.text);
	a->http = sa;
	a->challenge = ACME_CHALLENGE_HTTP01;
	a->challenge_set = true;
}

enum { CONF_ACME_NAMES_MAX = 100 }; /* Let's Encrypt's limit per certificate */

static void acme_names(struct parser *p, const struct line *d)
{
	struct conf_acme *a = &p->conf->acme;
	for (size_t i = 0; i < d->nargs; i++) {
		char *name = arg_dns_name(p, &d->args[i], "host");
		if (!name)
			continue;
		bool dup = false;
		for (size_t k = 0; k < a->nnames && !dup; k++)
			dup = strcmp(a->names[k], name) == 0;
		if (dup || a->nnames >= CONF_ACME_NAMES_MAX) {
			conf_error(p, &d->args[i].pos,
				   dup ? "name \"%s\" given twice" : "more than 100 names (\"%s\")",
				   Q(d->args[i].s));
			free(name);
			continue;
		}
		*(char **)xappend(&a->names, &a->nnames, sizeof *a->names) = name;
	}
}

static void acme_ca(struct parser *p, const struct line *d)
{
	arg_path(p, d, &d->args[0], &p->conf->acme.ca);
}

static void acme_begin(struct parser *p, const struct line *d)
{
	p->conf->acme.set = true;
	p->conf->acme.pos = d->name.pos;
}

static void acme_end(struct parser *p, const struct line *d)
{
	(void)d;
	const struct conf_acme *a = &p->conf->acme;
	if (!a->directory)
		conf_error(p, &a->pos, "acme block without \"directory\" (the CA's URL)");
	if (a->nnames == 0)
		conf_error(p, &a->pos, "acme block without \"names\" (the certificate's host names)");
	if (!a->challenge_set)
		conf_error(p, &a->pos,
			   "acme block without \"challenge\" (e.g. challenge http-01 0.0.0.0:80)");
}

/* ---- handlers: users ldap ------------------------------------------------------ */

/* "users ldap { ... }" (the block form of "users"): each handler fills the
 * one conf_ldap, made by the first of them; ldap_end checks the whole. */
enum {
	CONF_LDAP_URIS_MAX = 8,         /* servers tried in order */
	CONF_LDAP_ATTRS_MAX = 8,        /* address attributes */
	CONF_LDAP_TEXT_MAX = 1024,      /* a DN, a base or a filter */
	CONF_LDAP_ATTR_MAX = 64,        /* an attribute's name */
};

static struct conf_ldap *ldap_of(struct parser *p)
{
	if (!p->conf->ldap) {
		p->conf->ldap = xcalloc(1, sizeof *p->conf->ldap);
		p->conf->ldap->starttls = true;
		p->conf->ldap->cache = 5 * 60;
	}
	return p->conf->ldap;
}

/* ldaps://HOST[:PORT], ldap://HOST[:PORT] or ldapi://[PATH], nothing that
 * would need quoting. */
static bool ldap_uri_ok(const char *u)
{
	static const char *const schemes[] = {"ldaps://", "ldap://", "ldapi://"};
	for (const char *c = u; *c; c++)
		if ((unsigned char)*c <= 0x20 || (unsigned char)*c >= 0x7f || strchr("\"\\,", *c))
			return false;
	for (size_t i = 0; i < ARRAY_LEN(schemes); i++) {
		size_t n = strlen(schemes[i]);
		if (strncmp(u, schemes[i], n) == 0)
			return i == 2 || (u[n] != '\0' && u[n] != '/');
	}
	return false;
}

static void ldap_uri(struct parser *p, const struct line *d)
{
	struct conf_ldap *l = ldap_of(p);
	for (size_t i = 0; i < d->nargs; i++) {
		const struct arg *a = &d->args[i];
		if (!ldap_uri_ok(a->s)) {
			conf_error(p, &a->pos, "bad LDAP URI \"%s\" (use ldaps://HOST, ldap://HOST "
					       "or ldapi://)", Q(a->s));
		} else if (l->nuris >= CONF_LDAP_URIS_MAX) {
			conf_error(p, &a->pos, "more than %d LDAP URIs (\"%s\")", CONF_LDAP_URIS_MAX,
				   Q(a->s));
		} else {
			*(char **)xappend(&l->uris, &l->nuris, sizeof *l->uris) = xstrdup(a->s);
		}
	}
}

static void ldap_starttls(struct parser *p, const struct line *d)
{
	(void)arg_bool(p, d, &d->args[0], &ldap_of(p)->starttls);
}

static void ldap_ca(struct parser *p, const struct line *d)
{
	(void)arg_path(p, d, &d->args[0], &ldap_of(p)->ca);
}

/* A DN, a base or a filter: not empty, bounded, no control characters. */
static bool ldap_text(struct parser *p, const struct line *d, const struct arg *a, char **out)
{
	size_t n = strlen(a->s);
	bool ok = n > 0 && n <= CONF_LDAP_TEXT_MAX;
	for (size_t i = 0; ok && i < n; i++)
		ok = (unsigned char)a->s[i] >= 0x20 && a->s[i] != 0x7f;
	if (!ok) {
		conf_error(p, &a->pos, "bad value \"%s\" for \"%s\" (1 to %d characters, no control "
				       "characters)", Q(a->s), d->name.s, CONF_LDAP_TEXT_MAX);
		return false;
	}
	free(*out);
	*out = xstrdup(a->s);
	return true;
}

static void ldap_bind_dn(struct parser *p, const struct line *d)
{
	(void)ldap_text(p, d, &d->args[0], &ldap_of(p)->bind_dn);
}

static void ldap_bind_password_file(struct parser *p, const struct line *d)
{
	struct conf_ldap *l = ldap_of(p);
	if (!arg_path(p, d, &d->args[0], &l->bind_password_file))
		return;
	struct stat st;
	if (stat(l->bind_password_file, &st) == 0 && (st.st_mode & (S_IRWXG | S_IRWXO)))
		conf_error(p, &d->args[0].pos,
			   "secret file %s may be read by group or others (mode %04o); chmod 600 it",
			   l->bind_password_file, (unsigned)(st.st_mode & 07777));
}

static void ldap_base(struct parser *p, const struct line *d)
{
	(void)ldap_text(p, d, &d->args[0], &ldap_of(p)->base);
}

/* The template: balanced parentheses around the whole, and %a, %u, %d or
 * %% only; %a or %u somewhere, or every address would find one entry. */
static const char *ldap_filter_problem(const char *f)
{
	size_t n = strlen(f);
	if (n < 2 || f[0] != '(' || f[n - 1] != ')')
		return "a filter is written in parentheses, e.g. (mail=%a)";
	int depth = 0;
	bool user = false;
	for (size_t i = 0; i < n; i++) {
		if (f[i] == '(')
			depth++;
		else if (f[i] == ')' && --depth < 0)
			return "unbalanced parentheses";
		else if (f[i] == '%') {
			char c = f[++i];
			if (c != 'a' && c != 'u' && c != 'd' && c != '%')
				return "unknown %-sequence (use %a, %u, %d or %%)";
			user |= c == 'a' || c == 'u';
		}
		if (depth == 0 && i + 1 < n)
			return "more than one filter (join them with (&...) or (|...))";
	}
	if (depth != 0)
		return "unbalanced parentheses";
	return user ? NULL : "the filter uses neither %a nor %u: every address would find one entry";
}

static void ldap_filter(struct parser *p, const struct line *d)
{
	struct conf_ldap *l = ldap_of(p);
	if (!ldap_text(p, d, &d->args[0], &l->filter))
		return;
	const char *why = ldap_filter_problem(l->filter);
	if (why)
		conf_error(p, &d->args[0].pos, "bad filter \"%s\": %s", Q(l->filter), why);
}

/* RFC 4512 §1.4 descr: a letter, then letters, digits and '-'. */
static bool ldap_attr_ok(const char *a)
{
	size_t n = strlen(a);
	if (n == 0 || n > CONF_LDAP_ATTR_MAX || !isalpha((unsigned char)a[0]))
		return false;
	for (size_t i = 1; i < n; i++)
		if (!isalnum((unsigned char)a[i]) && a[i] != '-')
			return false;
	return true;
}

static bool ldap_arg_attr(struct parser *p, const struct arg *a)
{
	if (ldap_attr_ok(a->s))
		return true;
	conf_error(p, &a->pos, "bad attribute name \"%s\" (letters, digits and '-', starting "
			       "with a letter)", Q(a->s));
	return false;
}

static void ldap_addresses(struct parser *p, const struct line *d)
{
	struct conf_ldap *l = ldap_of(p);
	if (d->nargs > CONF_LDAP_ATTRS_MAX) {
		conf_error(p, &d->args[CONF_LDAP_ATTRS_MAX].pos, "more than %d address attributes",
			   CONF_LDAP_ATTRS_MAX);
		return;
	}
	for (size_t i = 0; i < d->nargs; i++)
		if (ldap_arg_attr(p, &d->args[i]))
			*(char **)xappend(&l->addresses, &l->naddresses, sizeof *l->addresses) =
				xstrdup(d->args[i].s);
}

static void ldap_principal(struct parser *p, const struct line *d)
{
	struct conf_ldap *l = ldap_of(p);
	if (ldap_arg_attr(p, &d->args[0])) {
		free(l->principal);
		l->principal = xstrdup(d->args[0].s);
	}
}

static void ldap_cache(struct parser *p, const struct line *d)
{
	(void)arg_duration(p, d, &d->args[0], &ldap_of(p)->cache);
}

/* After "users ldap { ... }": what a directory login cannot do without. */
static void ldap_end(struct parser *p, const struct line *d)
{
	struct conf_ldap *l = ldap_of(p);
	l->pos = d->name.pos;
	if (strcmp(d->args[0].s, "ldap") != 0) {
		conf_error(p, &d->args[0].pos, "\"users %s { ... }\": only \"users ldap\" takes a "
					       "block (or write users FILE)", Q(d->args[0].s));
		return;
	}
	if (l->nuris == 0)
		conf_error(p, &l->pos, "users ldap block without \"uri\" (e.g. uri ldaps://dc1.example.org)");
	if (!l->base)
		conf_error(p, &l->pos, "users ldap block without \"base\" (where the users are)");
	if (!l->filter)
		conf_error(p, &l->pos, "users ldap block without \"filter\" (e.g. filter (mail=%%a))");
	if (!l->bind_dn != !l->bind_password_file)
		conf_error(p, &l->pos, "\"bind-dn\" and \"bind-password-file\" go together");
	for (size_t i = 0; i < l->nuris && !l->starttls; i++)
		if (strncmp(l->uris[i], "ldap://", 7) == 0)
			conf_error(p, &l->pos, "%s with \"starttls no\" would send passwords in clear: "
					       "use ldaps://, starttls yes or ldapi://", l->uris[i]);
	if (l->naddresses == 0)
		*(char **)xappend(&l->addresses, &l->naddresses, sizeof *l->addresses) =
			xstrdup("mail");
}

/* ---- handlers: tls ------------------------------------------------------------- */

/* A server's tls block: its handlers below fill p->tls, as metrics-tls's. */
static void tls_begin(struct parser *p, const struct line *d)
{
	(void)d;
	p->tls = &p->server->tls;
}

static void tls_certificate(struct parser *p, const struct line *d)
{
	struct conf_tls *t = p->tls;
	char *path = NULL;
	bool acme = strcmp(d->args[0].s, "acme") == 0; /* a file so named: ./acme */
	if (!acme && !arg_path(p, d, &d->args[0], &path))
		return;
	struct conf_cert *c = xappend(&t->certs, &t->ncerts, sizeof *c);
	c->certificate = path; /* acme: set by validation, once the spool is known */
	c->acme = acme;
	c->pos = d->name.pos;
}

/* A key pairs with the certificate right before it. */
static void tls_key(struct parser *p, const struct line *d)
{
	struct conf_tls *t = p->tls;
	struct conf_cert *last = t->ncerts ? &t->certs[t->ncerts - 1] : NULL;
	if (last && last->acme) {
		conf_error(p, &d->name.pos, "\"key\" after \"certificate acme\" (ACME keeps its own key)");
		return;
	}
	if (!last || last->key) {
		conf_error(p, &d->name.pos,
			   "\"key\" without a \"certificate\" before it (write certificate FILE, then key FILE)");
		return;
	}
	arg_path(p, d, &d->args[0], &last->key);
}

/* Every certificate of t from index first on has its key. */
static void tls_check_keys(struct parser *p, const struct conf_tls *t, size_t first)
{
	for (size_t i = first; i < t->ncerts; i++)
		if (!t->certs[i].key && !t->certs[i].acme)
			conf_error(p, &t->certs[i].pos, "certificate \"%s\" has no \"key\" after it",
				   Q(t->certs[i].certificate));
}

static void tls_end(struct parser *p, const struct line *d)
{
	(void)d;
	struct conf_tls *t = &p->server->tls;
	tls_check_keys(p, t, p->state->certs_checked);
	p->state->certs_checked = t->ncerts;
	p->tls = NULL;
}

static void metrics_tls_end(struct parser *p, const struct line *d)
{
	const struct conf_tls *t = &p->conf->metrics_tls;
	if (t->ncerts == 0)
		conf_error(p, &d->name.pos, "metrics-tls block without \"certificate\" (write "
			   "certificate FILE, then key FILE)");
	tls_check_keys(p, t, 0);
	p->tls = NULL;
}

static void tls_require(struct parser *p, const struct line *d)
{
	if (arg_bool(p, d, &d->args[0], &p->server->tls.require) && p->server->tls.require)
		p->state->require_pos = d->name.pos;
}

static void tls_min_bits(struct parser *p, const struct line *d)
{
	arg_number(p, d, &d->args[0], 0, CONF_MIN_BITS_MAX, &p->tls->min_bits);
}

static void tls_min_version(struct parser *p, const struct line *d)
{
	static const char *const names[] = {"1.2", "1.3", NULL};
	int i = arg_keyword(p, d, &d->args[0], names, "1.2 or 1.3");
	if (i >= 0)
		p->tls->min_version = i == 0 ? TLS_VERSION_1_2 : TLS_VERSION_1_3;
}

static void tls_strict_sni(struct parser *p, const struct line *d)
{
	arg_bool(p, d, &d->args[0], &p->tls->strict_sni);
}

/* ---- handlers: connection ---------------------------------------------------------- */

static void conn_default(struct parser *p, const struct line *d)
{
	static const char *const names[] = {[ACTION_ALLOW] = "allow", [ACTION_DENY] = "deny", NULL};
	int i = arg_keyword(p, d, &d->args[0], names, "allow or deny");
	if (i >= 0)
		p->server->connection.default_action = (enum conf_action)i;
}

static void conn_reverse_lookup(struct parser *p, const struct line *d)
{
	arg_bool(p, d, &d->args[0], &p->server->connection.reverse_lookup);
}

static void conn_rule(struct parser *p, const struct line *d, enum conf_action action)
{
	struct conf_connection *cn = &p->server->connection;
	struct conf_rule r;
	if (rule_parse(p, d, action, &r))
		rule_append(&cn->rules, &cn->nrules, &r);
}

static void conn_allow(struct parser *p, const struct line *d)
{
	conn_rule(p, d, ACTION_ALLOW);
}

static void conn_deny(struct parser *p, const struct line *d)
{
	conn_rule(p, d, ACTION_DENY);
}

/* ---- handlers: auth ---------------------------------------------------------------- */

static const struct {
	const char *name;
	unsigned bit;
} mechanism_names[] = {
	{"PLAIN", MECH_PLAIN},
	{"LOGIN", MECH_LOGIN},
	{"SCRAM-SHA-256", MECH_SCRAM_SHA_256},
	{"GSSAPI", MECH_GSSAPI},
};

static unsigned mechanism_bit(const char *name)
{
	for (size_t i = 0; i < ARRAY_LEN(mechanism_names); i++)
		if (str_ieq(name, mechanism_names[i].name))
			return mechanism_names[i].bit;
	return 0;
}

static void auth_mechanisms(struct parser *p, const struct line *d)
{
	unsigned bits = 0;
	bool ok = true;
	for (size_t i = 0; i < d->nargs; i++) {
		unsigned bit = mechanism_bit(d->args[i].s);
		if (!bit) {
			conf_error(p, &d->args[i].pos,
				   "unknown mechanism \"%s\" (use gssapi, plain, login or "
				   "scram-sha-256)",
				   Q(d->args[i].s));
			ok = false;
		}
		bits |= bit;
	}
	if (ok)
		p->server->auth.mechanisms = bits;
}

static void auth_anonymous(struct parser *p, const struct line *d)
{
	arg_bool(p, d, &d->args[0], &p->server->auth.anonymous);
}

static void auth_plaintext_requires_tls(struct parser *p, const struct line *d)
{
	arg_bool(p, d, &d->args[0], &p->server->auth.plaintext_requires_tls);
}

static void auth_sender_must_match(struct parser *p, const struct line *d)
{
	arg_bool(p, d, &d->args[0], &p->server->auth.sender_must_match);
}

static void auth_received_auth(struct parser *p, const struct line *d)
{
	arg_bool(p, d, &d->args[0], &p->server->auth.received_auth);
}

/* keytab PATH: the acceptor keys of SASL GSSAPI (RFC 4752). */
static void auth_keytab(struct parser *p, const struct line *d)
{
	if (arg_path(p, d, &d->args[0], &p->server->auth.keytab))
		p->server->auth.keytab_pos = d->name.pos;
}

/* A Kerberos realm as written: letters, digits, '.', '-' and '_' (no '@'
 * or '/', which separate a principal's parts; RFC 4120 §6.1). */
static bool realm_is_valid(const char *s)
{
	size_t n = strlen(s);
	if (n == 0 || n > CONF_REALM_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)s[i]) && !strchr(".-_", s[i]))
			return false;
	return true;
}

/* realm REALM DOMAIN: principals NAME@REALM are the users NAME@DOMAIN. */
static void auth_realm(struct parser *p, const struct line *d)
{
	struct conf_auth *a = &p->server->auth;
	if (!realm_is_valid(d->args[0].s)) {
		conf_error(p, &d->args[0].pos, "bad Kerberos realm \"%s\"", Q(d->args[0].s));
		return;
	}
	for (size_t i = 0; i < a->nrealms; i++)
		if (strcmp(a->realms[i].realm, d->args[0].s) == 0) {
			conf_error(p, &d->args[0].pos, "realm \"%s\" given twice (first at %s:%u:%u)",
				   Q(d->args[0].s), a->realms[i].pos.file, a->realms[i].pos.line,
				   a->realms[i].pos.col);
			return;
		}
	char *domain = arg_dns_name(p, &d->args[1], "domain");
	if (!domain)
		return;
	struct conf_realm *r = xappend(&a->realms, &a->nrealms, sizeof *r);
	r->realm = xstrdup(d->args[0].s);
	r->domain = domain;
	r->pos = d->args[0].pos;
}

/* lockout FAILURES WINDOW DURATION; 0 failures turns it off. */
static void auth_lockout(struct parser *p, const struct line *d)
{
	struct conf_auth *a = &p->server->auth;
	unsigned failures, window, duration;
	bool ok = arg_number(p, d, &d->args[0], 0, UINT_MAX, &failures);
	ok = arg_duration(p, d, &d->args[1], &window) && ok;
	ok = arg_duration(p, d, &d->args[2], &duration) && ok;
	if (!ok)
		return;
	a->lockout_failures = failures;
	a->lockout_window = window;
	a->lockout_duration = duration;
}

/* lockout-ipv6-prefix BITS: IPv6 clients are counted per network. */
static void auth_lockout_ipv6_prefix(struct parser *p, const struct line *d)
{
	arg_number(p, d, &d->args[0], CONF_IPV6_PREFIX_MIN, 128,
		   &p->server->auth.lockout_ipv6_prefix);
}

/* ---- handlers: relay ------------------------------------------------------------------ */

static void relay_authenticated(struct parser *p, const struct line *d)
{
	arg_bool(p, d, &d->args[0], &p->server->relay.authenticated);
}

static void relay_allow(struct parser *p, const struct line *d)
{
	struct conf_relay *r = &p->server->relay;
	struct conf_rule rule;
	if (strcmp(d->args[0].s, "dnsbl") == 0) {
		conf_error(p, &d->args[0].pos, "a dnsbl rule belongs in the connection block");
		return;
	}
	if (rule_parse(p, d, ACTION_ALLOW, &rule))
		rule_append(&r->rules, &r->nrules, &rule);
}

static void relay_deny(struct parser *p, const struct line *d)
{
	conf_error(p, &d->name.pos,
		   "\"deny\" is not allowed in a relay block: relay rules only grant relaying "
		   "(refuse clients in the connection block)");
}

/* ---- handlers: limits ------------------------------------------------------------------ */

static void lim_message_size(struct parser *p, const struct line *d)
{
	arg_size(p, d, &d->args[0], &p->server->limits.message_size);
}

static void lim_recipients(struct parser *p, const struct line *d)
{
	arg_number(p, d, &d->args[0], 1, UINT_MAX, &p->server->limits.recipients);
}

static void lim_connections(struct parser *p, const struct line *d)
{
	arg_number(p, d, &d->args[0], 1, UINT_MAX, &p->server->limits.connections);
}

static void lim_connections_per_ip(struct parser *p, const struct line *d)
{
	arg_number(p, d, &d->args[0], 1, UINT_MAX, &p->server->limits.connections_per_ip);
}

static void lim_proxy_timeout(struct parser *p, const struct line *d)
{
	unsigned n;
	if (!arg_duration(p, d, &d->args[0], &n))
		return;
	if (n > CONF_PROXY_TIMEOUT_MAX) {
		conf_error(p, &d->args[0].pos, "bad duration \"%s\" for \"proxy-timeout\" (at most %ds)",
			   Q(d->args[0].s), CONF_PROXY_TIMEOUT_MAX);
		return;
	}
	p->server->limits.proxy_timeout = n;
}

static void lim_timeout(struct parser *p, const struct line *d)
{
	if (arg_duration(p, d, &d->args[0], &p->server->limits.timeout))
		p->state->timeout_set = true;
}

/* error-delay DURATION after ERRORS; a DURATION of 0 turns it off. */
static void lim_error_delay(struct parser *p, const struct line *d)
{
	struct conf_limits *l = &p->server->limits;
	unsigned delay, after;
	bool ok = true;
	if (conf_parse_duration(d->args[0].s, &delay) < 0 || delay > CONF_ERROR_DELAY_MAX) {
		conf_error(p, &d->args[0].pos,
			   "bad duration \"%s\" for \"error-delay\" (use 0 to turn it off, or a "
			   "number with s or m up to %us)", Q(d->args[0].s), CONF_ERROR_DELAY_MAX);
		ok = false;
	}
	if (strcmp(d->args[1].s, "after") != 0) {
		conf_error(p, &d->args[1].pos,
			   "expected \"after\" in \"error-delay DURATION after ERRORS\", not \"%s\"",
			   Q(d->args[1].s));
		ok = false;
	}
	ok = arg_number(p, d, &d->args[2], 0, UINT_MAX, &after) && ok;
	if (!ok)
		return;
	l->error_delay = delay;
	l->error_delay_after = after;
}

/* unknown-recipients COUNT WINDOW DURATION; 0 turns it off. */
static void lim_unknown_recipients(struct parser *p, const struct line *d)
{
	struct conf_limits *l = &p->server->limits;
	unsigned count, window, duration;
	bool ok = arg_number(p, d, &d->args[0], 0, UINT_MAX, &count);
	ok = arg_duration(p, d, &d->args[1], &window) && ok;
	ok = arg_duration(p, d, &d->args[2], &duration) && ok;
	if (!ok)
		return;
	l->unknown_recipients = count;
	l->unknown_recipients_window = window;
	l->unknown_recipients_duration = duration;
}

/* ---- handlers: dkim ------------------------------------------------------------ */

/* "key DOMAIN SELECTOR FILE": the file is read when the generation is
 * made (runtime), so that a reload reads it again. */
static void dkim_key(struct parser *p, const struct line *d)
{
	struct conf *c = p->conf;
	char *domain = arg_domain(p, &d->args[0]);
	char *selector = arg_dns_name(p, &d->args[1], "selector");
	char *file = NULL;
	if (!domain || !selector || !arg_path(p, d, &d->args[2], &file)) {
		free(domain);
		free(selector);
		free(file);
		return;
	}
	for (size_t i = 0; i < c->ndkim_keys; i++) {
		if (strcmp(c->dkim_keys[i].domain, domain) == 0 &&
		    strcmp(c->dkim_keys[i].selector, selector) == 0) {
			conf_error(p, &d->args[1].pos, "selector \"%s\" of %s given twice",
				   Q(d->args[1].s), domain);
			free(domain);
			free(selector);
			free(file);
			return;
		}
	}
	if (c->ndkim_keys == CONF_DKIM_KEYS_MAX) {
		conf_error(p, &d->name.pos, "more than %d dkim keys", CONF_DKIM_KEYS_MAX);
		free(domain);
		free(selector);
		free(file);
		return;
	}
	struct conf_dkim_key *k = xappend(&c->dkim_keys, &c->ndkim_keys, sizeof *k);
	*k = (struct conf_dkim_key){domain, selector, file, d->name.pos};
}

/* ---- the tables ------------------------------------------------------------------------ */

#define CONTEXT(in, belongs, table) {in, belongs, table, ARRAY_LEN(table)}

/*                   name           min max            handler        block  end   once */
static const struct directive tls_directives[] = {
	{"certificate", 1, 1, tls_certificate, NULL, NULL, false},
	{"key", 1, 1, tls_key, NULL, NULL, false},
	{"require", 1, 1, tls_require, NULL, NULL, true},
	{"min-bits", 1, 1, tls_min_bits, NULL, NULL, true},
	{"min-version", 1, 1, tls_min_version, NULL, NULL, true},
	{"strict-sni", 1, 1, tls_strict_sni, NULL, NULL, true},
};
static const struct context tls_context =
	CONTEXT("in tls block", "in a tls block", tls_directives);

/* A server's tls block but "require": a `metrics ... tls` address is HTTPS only. */
static const struct directive metrics_tls_directives[] = {
	{"certificate", 1, 1, tls_certificate, NULL, NULL, false},
	{"key", 1, 1, tls_key, NULL, NULL, false},
	{"min-bits", 1, 1, tls_min_bits, NULL, NULL, true},
	{"min-version", 1, 1, tls_min_version, NULL, NULL, true},
	{"strict-sni", 1, 1, tls_strict_sni, NULL, NULL, true},
};
static const struct context metrics_tls_context =
	CONTEXT("in metrics-tls block", "in a metrics-tls block", metrics_tls_directives);

static const struct directive acme_directives[] = {
	{"directory", 1, 1, acme_directory, NULL, NULL, true},
	{"contact", 1, 1, acme_contact, NULL, NULL, true},
	{"challenge", 1, 2, acme_challenge, NULL, NULL, true},
	{"names", 1, CONF_ARGS_ANY, acme_names, NULL, NULL, false},
	{"ca", 1, 1, acme_ca, NULL, NULL, true},
};
static const struct context acme_context =
	CONTEXT("in acme block", "in the acme block", acme_directives);

static const struct directive ldap_directives[] = {
	{"uri", 1, CONF_ARGS_ANY, ldap_uri, NULL, NULL, true},
	{"starttls", 1, 1, ldap_starttls, NULL, NULL, true},
	{"ca", 1, 1, ldap_ca, NULL, NULL, true},
	{"bind-dn", 1, 1, ldap_bind_dn, NULL, NULL, true},
	{"bind-password-file", 1, 1, ldap_bind_password_file, NULL, NULL, true},
	{"base", 1, 1, ldap_base, NULL, NULL, true},
	{"filter", 1, 1, ldap_filter, NULL, NULL, true},
	{"addresses", 1, CONF_ARGS_ANY, ldap_addresses, NULL, NULL, true},
	{"principal", 1, 1, ldap_principal, NULL, NULL, true},
	{"cache", 1, 1, ldap_cache, NULL, NULL, true},
};
static const struct context ldap_context =
	CONTEXT("in users ldap block", "in a users ldap block", ldap_directives);
static const struct directive dkim_directives[] = {
	{"key", 3, 3, dkim_key, NULL, NULL, false},
};
static const struct context dkim_context =
	CONTEXT("in dkim block", "in the dkim block", dkim_directives);

static const struct directive connection_directives[] = {
	{"default", 1, 1, conn_default, NULL, NULL, true},
	{"reverse-lookup", 1, 1, conn_reverse_lookup, NULL, NULL, true},
	{"allow", 1, CONF_ARGS_ANY, conn_allow, NULL, NULL, false},
	{"deny", 1, CONF_ARGS_ANY, conn_deny, NULL, NULL, false},
};
static const struct context connection_context =
	CONTEXT("in connection block", "in a connection block", connection_directives);

static const struct directive auth_directives[] = {
	{"mechanisms", 1, CONF_ARGS_ANY, auth_mechanisms, NULL, NULL, true},
	{"anonymous", 1, 1, auth_anonymous, NULL, NULL, true},
	{"plaintext-requires-tls", 1, 1, auth_plaintext_requires_tls, NULL, NULL, true},
	{"sender-must-match", 1, 1, auth_sender_must_match, NULL, NULL, true},
	{"lockout", 3, 3, auth_lockout, NULL, NULL, true},
	{"lockout-ipv6-prefix", 1, 1, auth_lockout_ipv6_prefix, NULL, NULL, true},
	{"received-auth", 1, 1, auth_received_auth, NULL, NULL, true},
	{"keytab", 1, 1, auth_keytab, NULL, NULL, true},
	{"realm", 2, 2, auth_realm, NULL, NULL, false},
};
static const struct context auth_context =
	CONTEXT("in auth block", "in an auth block", auth_directives);

static const struct directive relay_directives[] = {
	{"authenticated", 1, 1, relay_authenticated, NULL, NULL, true},
	{"allow", 1, 2, relay_allow, NULL, NULL, false},
	{"deny", 0, CONF_ARGS_ANY, relay_deny, NULL, NULL, false},
};
static const struct context relay_context =
	CONTEXT("in relay block", "in a relay block", relay_directives);

static const struct directive limits_directives[] = {
	{"message-size", 1, 1, lim_message_size, NULL, NULL, true},
	{"recipients", 1, 1, lim_recipients, NULL, NULL, true},
	{"connections", 1, 1, lim_connections, NULL, NULL, true},
	{"connections-per-ip", 1, 1, lim_connections_per_ip, NULL, NULL, true},
	{"timeout", 1, 1, lim_timeout, NULL, NULL, true},
	{"error-delay", 3, 3, lim_error_delay, NULL, NULL, true},
	{"unknown-recipients", 3, 3, lim_unknown_recipients, NULL, NULL, true},
	{"proxy-timeout", 1, 1, lim_proxy_timeout, NULL, NULL, true},
};
static const struct context limits_context =
	CONTEXT("in limits block", "in a limits block", limits_directives);

static const struct directive milter_directives[] = {
	{"socket", 1, 1, milter_socket, NULL, NULL, true},
	{"timeout", 1, 1, milter_timeout, NULL, NULL, true},
	{"connect-timeout", 1, 1, milter_connect_timeout, NULL, NULL, true},
	{"on-failure", 1, 1, milter_on_failure, NULL, NULL, true},
	{"stages", 1, CONF_ARGS_ANY, milter_stages, NULL, NULL, true},
};
static const struct context milter_context =
	CONTEXT("in milter block", "in a milter block", milter_directives);
static const struct directive verify_directives[] = {
	{"spf", 1, 1, verify_spf, NULL, NULL, true},
	{"dkim", 1, 1, verify_dkim, NULL, NULL, true},
	{"dmarc", 1, 1, verify_dmarc, NULL, NULL, true},
	{"arc", 1, 1, verify_arc, NULL, NULL, true},
};
static const struct context verify_context =
	CONTEXT("in verify block", "in a verify block", verify_directives);

static const struct directive server_directives[] = {
	{"protocol", 1, 1, srv_protocol, NULL, NULL, true},
	{"listen", 1, 3, srv_listen, NULL, NULL, false},
	{"proxy-from", 1, CONF_ARGS_ANY, srv_proxy_from, NULL, NULL, false},
	{"hostname", 1, 1, srv_hostname, NULL, NULL, true},
	{"dns", 1, CONF_ARGS_ANY, srv_dns, NULL, NULL, true},
	{"tls", 0, 0, tls_begin, &tls_context, tls_end, true},
	{"connection", 0, 0, NULL, &connection_context, NULL, true},
	{"auth", 0, 0, NULL, &auth_context, NULL, true},
	{"relay", 0, 0, NULL, &relay_context, NULL, true},
	{"limits", 0, 0, NULL, &limits_context, NULL, true},
	{"milter", 1, 1, milter_begin, &milter_context, milter_end, false},
	{"junk-header", 2, 2, srv_junk_header, NULL, NULL, true},
	{"verify", 0, 0, verify_begin, &verify_context, NULL, true},
};
static const struct context server_context =
	CONTEXT("in server block", "in a server block", server_directives);

static const struct directive outbound_directives[] = {
	{"smarthost", 1, 1, out_smarthost, NULL, NULL, true},
	{"smarthost-auth", 2, 2, out_smarthost_auth, NULL, NULL, true},
	{"port", 1, 1, out_port, NULL, NULL, true},
	{"tls", 1, 1, out_tls, NULL, NULL, true},
	{"tls-policy", 1, 2, out_tls_policy, NULL, NULL, true},
	{"ca-file", 1, 1, out_ca_file, NULL, NULL, true},
	{"tls-reports", 1, 1, out_tls_reports, NULL, NULL, true},
	{"lifetime", 1, 1, out_lifetime, NULL, NULL, true},
	{"retry", 1, CONF_ARGS_ANY, out_retry, NULL, NULL, true},
};
static const struct context outbound_context =
	CONTEXT("in outbound block", "in an outbound block", outbound_directives);

static const struct directive global_directives[] = {
	{"hostname", 1, 1, global_hostname, NULL, NULL, true},
	{"domains", 1, CONF_ARGS_ANY, global_domains, NULL, NULL, false},
	{"spool", 1, 1, global_spool, NULL, NULL, true},
	{"mailboxes", 1, 1, global_mailboxes, NULL, NULL, true},
	{"quota", 1, 2, global_quota, NULL, NULL, true},
	{"users", 1, 1, global_users, &ldap_context, ldap_end, true},
	{"aliases", 1, 1, global_aliases, NULL, NULL, true},
	{"dns", 1, CONF_ARGS_ANY, global_dns, NULL, NULL, true},
	{"host-refresh", 2, 2, global_host_refresh, NULL, NULL, true},
	{"run-as", 1, 1, global_run_as, NULL, NULL, true},
	{"metrics", 1, 2, global_metrics, NULL, NULL, false},
	{"metrics-password", 1, 1, global_metrics_password, NULL, NULL, true},
	{"metrics-tls", 0, 0, global_metrics_tls, &metrics_tls_context, metrics_tls_end, true},
	{"include", 1, 1, global_include, NULL, NULL, false},
	{"outbound", 0, 0, NULL, &outbound_context, NULL, true},
	{"acme", 0, 0, acme_begin, &acme_context, acme_end, true},
	{"dkim", 0, 0, NULL, &dkim_context, NULL, true},
	{"server", 1, 1, global_server, &server_context, server_end, false},
};
static const struct context global_context =
	CONTEXT("at top level", "at top level", global_directives);

_Static_assert(ARRAY_LEN(global_directives) <= CONF_TABLE_MAX, "raise CONF_TABLE_MAX");
_Static_assert(ARRAY_LEN(server_directives) <= CONF_TABLE_MAX, "raise CONF_TABLE_MAX");
_Static_assert(ARRAY_LEN(outbound_directives) <= CONF_TABLE_MAX, "raise CONF_TABLE_MAX");
_Static_assert(ARRAY_LEN(tls_directives) <= CONF_TABLE_MAX, "raise CONF_TABLE_MAX");
_Static_assert(ARRAY_LEN(auth_directives) <= CONF_TABLE_MAX, "raise CONF_TABLE_MAX");
_Static_assert(ARRAY_LEN(limits_directives) <= CONF_TABLE_MAX, "raise CONF_TABLE_MAX");
_Static_assert(ARRAY_LEN(ldap_directives) <= CONF_TABLE_MAX, "raise CONF_TABLE_MAX");

static const struct context *const all_contexts[] = {
	&global_context, &server_context, &tls_context, &connection_context,
	&auth_context, &relay_context, &limits_context, &outbound_context, &acme_context,
	&metrics_tls_context, &milter_context, &ldap_context, &dkim_context, &verify_context,
};

/* "users FILE" or "users ldap { ... }": the one directive whose block is
 * optional; fn reads the plain form, end the block. */
static bool directive_block_optional(const struct directive *dir)
{
	return dir->block == &ldap_context;
}

/* ---- the parser ------------------------------------------------------------------------ */

static const struct directive *directive_find(const struct context *ctx, const char *name)
{
	for (size_t i = 0; i < ctx->n; i++)
		if (strcmp(ctx->directives[i].name, name) == 0)
			return &ctx->directives[i];
	return NULL;
}

static void report_unknown(struct parser *p, const struct context *ctx, const struct line *d)
{
	for (size_t i = 0; i < ARRAY_LEN(all_contexts); i++) {
		if (all_contexts[i] != ctx && directive_find(all_contexts[i], d->name.s)) {
			conf_error(p, &d->name.pos, "unknown directive \"%s\" %s (it belongs %s)",
				   Q(d->name.s), ctx->in, all_contexts[i]->belongs);
			return;
		}
	}
	conf_error(p, &d->name.pos, "unknown directive \"%s\" %s", Q(d->name.s), ctx->in);
}

static void report_arg_count(struct parser *p, const struct directive *dir,
			     const struct line *d)
{
	const char *n = dir->name;
	unsigned lo = dir->min_args, hi = dir->max_args;
	if (hi == 0)
		conf_error(p, &d->name.pos, "\"%s\" takes no arguments", n);
	else if (hi == CONF_ARGS_ANY)
		conf_error(p, &d->name.pos, "\"%s\" needs at least %u argument%s", n, lo,
			   lo == 1 ? "" : "s");
	else if (lo == hi)
		conf_error(p, &d->name.pos, "\"%s\" needs %u argument%s", n, lo, lo == 1 ? "" : "s");
	else if (hi == lo + 1)
		conf_error(p, &d->name.pos, "\"%s\" needs %u or %u arguments", n, lo, hi);
	else
		conf_error(p, &d->name.pos, "\"%s\" needs %u to %u arguments", n, lo, hi);
}

static void report_unclosed(struct parser *p, const struct arg *opener)
{
	conf_error(p, &opener->pos, "\"%s\" block is never closed (missing \"}\")", Q(opener->s));
}

/* Reads the arguments up to the end of the line, a "{" (returns true) or a
 * "}" (left for the block that it closes). */
static bool read_arguments(struct lexer *lx, struct line *d)
{
	for (;;) {
		struct token t = lx_next(lx);
		if (t.kind == TOKEN_WORD) {
			struct arg *a = xappend(&d->args, &d->nargs, sizeof *a);
			a->s = t.word;
			a->pos = t.pos;
			d->bad |= t.bad;
			continue;
		}
		if (t.kind == TOKEN_OPEN)
			return true;
		if (t.kind == TOKEN_CLOSE || t.kind == TOKEN_END)
			lx_unget(lx, t);
		return false;
	}
}

static void line_free(struct line *d)
{
	free(d->name.s);
	for (size_t i = 0; i < d->nargs; i++)
		free(d->args[i].s);
	free(d->args);
}

/* Everything up to the matching "}", unparsed (the lexer still reports). */
static void skip_block(struct parser *p, struct lexer *lx, const struct arg *opener)
{
	unsigned depth = 1;
	while (depth > 0) {
		struct token t = lx_next(lx);
		free(t.word);
		if (t.kind == TOKEN_OPEN) {
			depth++;
		} else if (t.kind == TOKEN_CLOSE) {
			depth--;
		} else if (t.kind == TOKEN_END) {
			report_unclosed(p, opener);
			return;
		}
	}
}

/* The table's policy: argument count, block or not, once per block. */
static void check_line(struct parser *p, const struct context *ctx, const struct directive *dir,
		       struct seen *seen, struct line *d, bool opens_block)
{
	if (d->nargs < dir->min_args || d->nargs > dir->max_args) {
		report_arg_count(p, dir, d);
		d->bad = true;
	}
	if (dir->block && !opens_block && !directive_block_optional(dir)) {
		conf_error(p, &d->name.pos, "\"%s\" needs a block: %s { ... }", dir->name, dir->name);
		d->bad = true;
	} else if (!dir->block && opens_block) {
		conf_error(p, &d->name.pos, "\"%s\" does not take a block", dir->name);
		d->bad = true;
	}
	if (!dir->once)
		return;
	struct conf_pos *first = &seen->at[dir - ctx->directives];
	if (first->line) {
		conf_error(p, &d->name.pos, "duplicate directive \"%s\" (first given at %s:%u:%u)",
			   dir->name, first->file, first->line, first->col);
		d->bad = true;
	} else {
		*first = d->name.pos;
	}
}

static void parse_block(struct parser *p, struct lexer *lx, const struct context *ctx,
			struct seen *seen, const struct arg *opener);

static void run_block(struct parser *p, struct lexer *lx, const struct directive *dir,
		      const struct line *d)
{
	struct seen seen = {0};
	if (dir->fn && !directive_block_optional(dir))
		dir->fn(p, d);
	parse_block(p, lx, dir->block, &seen, &d->name);
	if (dir->end)
		dir->end(p, d);
}

static void parse_directive(struct parser *p, struct lexer *lx, const struct context *ctx,
			    struct seen *seen, struct token name)
{
	struct line d = {.name = {name.word, name.pos}, .bad = name.bad, .dir = lx->dir};
	bool opens_block = read_arguments(lx, &d);
	const struct directive *dir = name.bad ? NULL : directive_find(ctx, name.word);
	if (!dir) {
		if (!name.bad)
			report_unknown(p, ctx, &d);
		if (opens_block)
			skip_block(p, lx, &d.name);
	} else {
		check_line(p, ctx, dir, seen, &d, opens_block);
		if (dir->block && opens_block)
			run_block(p, lx, dir, &d);
		else if (opens_block)
			skip_block(p, lx, &d.name);
		else if (!d.bad && dir->fn)
			dir->fn(p, &d);
	}
	line_free(&d);
}

/* Directives up to the "}" that closes opener, or to the end of the file
 * when opener is NULL.  Errors are reported and reading goes on. */
static void parse_block(struct parser *p, struct lexer *lx, const struct context *ctx,
			struct seen *seen, const struct arg *opener)
{
	for (;;) {
		struct token t = lx_next(lx);
		switch (t.kind) {
		case TOKEN_NEWLINE:
			break;
		case TOKEN_END:
			if (opener)
				report_unclosed(p, opener);
			return;
		case TOKEN_CLOSE:
			if (opener)
				return;
			conf_error(p, &t.pos, "stray \"}\" with no block to close");
			break;
		case TOKEN_OPEN: {
			struct arg brace = {"{", t.pos};
			conf_error(p, &t.pos, "\"{\" without a directive name before it");
			skip_block(p, lx, &brace);
			break;
		}
		case TOKEN_WORD:
			parse_directive(p, lx, ctx, seen, t);
			break;
		}
	}
}

static void parse_text(struct parser *p, const char *file, const char *text, const char *dir)
{
	struct lexer lx = {.p = p, .text = text, .pos = {file, 1, 1}, .dir = dir};
	parse_block(p, &lx, &global_context, &p->global_seen, NULL);
	if (p->depth == 0)
		p->end_pos = lx.pos;
}

/* ---- validation ------------------------------------------------------------------------- */

/* A `proxy` listener believes only the peers of proxy-from: without them
 * it would take any client's word for its address, so there is no
 * default; proxy-from without a `proxy` listener is a mistake too. */
static void check_proxy(struct parser *p, const struct conf_server *s)
{
	bool any = false;
	for (size_t i = 0; i < s->nlistens; i++) {
		const struct conf_listen *l = &s->listens[i];
		any = any || l->proxy;
		if (l->proxy && s->nproxy_from == 0)
			conf_error(p, &l->addr.pos,
				   "\"listen %s proxy\" needs \"proxy-from\" in server \"%s\": the "
				   "addresses of the load balancers allowed to send a PROXY header",
				   Q(l->addr.text), s->name);
	}
	if (!any && s->nproxy_from > 0)
		conf_error(p, &s->proxy_from[0].pos,
			   "\"proxy-from\" but no \"listen ... proxy\" in server \"%s\"", s->name);
}

/* GSSAPI needs the acceptor's keys and at least one realm whose
 * principals are users; keys or realms without the mechanism are unused. */
static void check_gssapi(struct parser *p, const struct conf_server *s)
{
	const struct conf_auth *a = &s->auth;
	bool gssapi = a->mechanisms & MECH_GSSAPI;
	if (gssapi && !a->keytab)
		conf_error(p, &s->pos, "server \"%s\": mechanism gssapi needs \"keytab PATH\" in "
			   "its auth block", s->name);
	if (gssapi && a->nrealms == 0)
		conf_error(p, &s->pos, "server \"%s\": mechanism gssapi needs \"realm REALM DOMAIN\" "
			   "in its auth block (whose principals are users)", s->name);
	if (!gssapi && a->keytab)
		conf_error(p, &a->keytab_pos, "\"keytab\" without mechanism gssapi in "
			   "\"mechanisms\"");
	if (!gssapi && a->nrealms > 0)
		conf_error(p, &a->realms[0].pos, "\"realm\" without mechanism gssapi in "
			   "\"mechanisms\"");
}

/* verify checks mail from the Internet: an SMTP server's with anonymous
 * clients; DMARC stands on SPF or DKIM. */
static void check_verify(struct parser *p, const struct conf_server *s)
{
	const struct conf_verify *v = &s->verify;
	if (!v->set)
		return;
	if (s->protocol != PROTO_SMTP || !s->auth.anonymous)
		conf_error(p, &v->pos, "\"verify\" is for an smtp server with \"anonymous yes\" "
			   "(mail from the Internet); server \"%s\" has none", s->name);
	else if (v->dmarc != CONF_DMARC_NO && !v->spf && !v->dkim)
		conf_error(p, &v->pos, "\"dmarc %s\" needs \"spf yes\" or \"dkim yes\" in the "
			   "verify block of server \"%s\"",
			   v->dmarc == CONF_DMARC_REPORT ? "report" : "enforce", s->name);
}

static void check_server(struct parser *p, const struct conf_server *s,
			 const struct server_state *st)
{
	if (st->had_errors)
		return; /* what looks missing may be on a rejected line */
	if (s->nlistens == 0)
		conf_error(p, &s->pos, "server \"%s\" has no \"listen\" address", s->name);
	check_proxy(p, s);
	if (s->protocol != PROTO_SMTP && s->nmilters > 0)
		conf_error(p, &s->milters[0].pos, "\"milter\" in server \"%s\", which is not an "
			   "SMTP server", s->name);
	check_gssapi(p, s);
	check_verify(p, s);
	if (s->tls.ncerts > 0)
		return;
	if (s->tls.require)
		conf_error(p, &st->require_pos,
			   "no certificate: \"require yes\" needs a certificate and key in the tls "
			   "block of server \"%s\"", s->name);
	for (size_t i = 0; i < s->nlistens; i++)
		if (s->listens[i].tls)
			conf_error(p, &s->listens[i].addr.pos,
				   "no certificate: \"listen %s tls\" needs a certificate and key in "
				   "the tls block of server \"%s\"", Q(s->listens[i].addr.text), s->name);
}

static void check_duplicate_name(struct parser *p, size_t i)
{
	const struct conf_server *s = &p->conf->servers[i];
	for (size_t j = 0; j < i; j++) {
		const struct conf_server *first = &p->conf->servers[j];
		if (strcmp(first->name, s->name) == 0) {
			conf_error(p, &s->pos, "duplicate server name \"%s\" (first at %s:%u:%u)",
				   s->name, first->pos.file, first->pos.line, first->pos.col);
			return;
		}
	}
}

static void report_overlap(struct parser *p, const struct conf_sockaddr *a,
			   const struct conf_sockaddr *b, const struct conf_server *owner)
{
	size_t n;
	const uint8_t *x = sockaddr_bytes(a, &n), *y = sockaddr_bytes(b, &n);
	if (memcmp(x, y, n) == 0)
		conf_error(p, &a->pos, "listen address \"%s\" is already used by server \"%s\" (%s:%u:%u)",
			   Q(a->text), owner->name, b->pos.file, b->pos.line, b->pos.col);
	else
		conf_error(p, &a->pos, "listen address \"%s\" overlaps \"%s\" of server \"%s\" (%s:%u:%u)",
			   Q(a->text), Q(b->text), owner->name, b->pos.file, b->pos.line, b->pos.col);
}

/* Listener k of server i against every listener before it, in any server. */
static void check_listen_overlap(struct parser *p, size_t i, size_t k)
{
	const struct conf_server *servers = p->conf->servers;
	const struct conf_sockaddr *a = &servers[i].listens[k].addr;
	for (size_t j = 0; j <= i; j++) {
		size_t n = j == i ? k : servers[j].nlistens;
		for (size_t m = 0; m < n; m++) {
			const struct conf_sockaddr *b = &servers[j].listens[m].addr;
			if (sockaddrs_overlap(a, b)) {
				report_overlap(p, a, b, &servers[j]);
				return;
			}
		}
	}
}

/* Metrics address k against the metrics addresses before it and every
 * server's listeners. */
static void check_metrics_overlap(struct parser *p, size_t k)
{
	const struct conf *c = p->conf;
	const struct conf_sockaddr *a = &c->metrics[k].addr;
	for (size_t m = 0; m < k; m++) {
		const struct conf_sockaddr *b = &c->metrics[m].addr;
		if (sockaddrs_overlap(a, b)) {
			conf_error(p, &a->pos, "metrics address \"%s\" overlaps metrics address \"%s\" "
				   "(%s:%u:%u)", Q(a->text), Q(b->text), b->pos.file, b->pos.line,
				   b->pos.col);
			return;
		}
	}
	for (size_t j = 0; j < c->nservers; j++) {
		for (size_t m = 0; m < c->servers[j].nlistens; m++) {
			const struct conf_sockaddr *b = &c->servers[j].listens[m].addr;
			if (sockaddrs_overlap(a, b)) {
				conf_error(p, &a->pos, "metrics address \"%s\" overlaps \"%s\" of server "
					   "\"%s\" (%s:%u:%u)", Q(a->text), Q(b->text), c->servers[j].name,
					   b->pos.file, b->pos.line, b->pos.col);
				return;
			}
		}
	}
}

/* HTTP Basic sends the password in clear text (RFC 7617 §4): it may only
 * go over loopback or inside TLS. */
static void check_metrics_password(struct parser *p)
{
	const struct conf *c = p->conf;
	if (!c->metrics_password)
		return;
	if (c->nmetrics == 0)
		conf_error(p, &p->metrics_password_pos, "\"metrics-password\" without \"metrics\"");
	for (size_t k = 0; k < c->nmetrics; k++)
		if (!c->metrics[k].tls && !sockaddr_is_loopback(&c->metrics[k].addr))
			conf_error(p, &c->metrics[k].addr.pos,
				   "metrics address \"%s\" is neither loopback nor \"tls\": with "
				   "\"metrics-password\" the password (HTTP Basic) would cross the "
				   "network in clear text (write \"metrics %s tls\" and a metrics-tls "
				   "block)", Q(c->metrics[k].addr.text), Q(c->metrics[k].addr.text));
}

/* A `metrics ... tls` address needs the metrics-tls block's certificate. */
static void check_metrics_tls(struct parser *p)
{
	const struct conf *c = p->conf;
	if (c->metrics_tls.ncerts > 0 || p->metrics_tls_pos.line)
		return; /* an empty block is reported where it is */
	for (size_t k = 0; k < c->nmetrics; k++)
		if (c->metrics[k].tls)
			conf_error(p, &c->metrics[k].addr.pos,
				   "no certificate: \"metrics %s tls\" needs a metrics-tls block with "
				   "a certificate and key", Q(c->metrics[k].addr.text));
}

static void check_domains(struct parser *p)
{
	const struct conf *c = p->conf;
	if (c->ndomains > 0)
		return;
	for (size_t i = 0; i < c->nservers; i++) {
		if (c->servers[i].protocol == PROTO_SMTP) {
			conf_error(p, &c->servers[i].pos,
				   "no \"domains\": smtp server \"%s\" needs the local domains "
				   "(e.g. domains example.org)", c->servers[i].name);
			return;
		}
	}
}

/* posthorn signs for its own domains only (the From of mail it sends). */
static void check_dkim_domains(struct parser *p)
{
	const struct conf *c = p->conf;
	for (size_t i = 0; i < c->ndkim_keys; i++)
		if (!conf_is_local_domain(c, c->dkim_keys[i].domain))
			conf_error(p, &c->dkim_keys[i].pos,
				   "dkim key for %s, which is not a local domain (domains)",
				   c->dkim_keys[i].domain);
}

/* "certificate acme" takes the acme block's files in the spool. */
static void acme_certificate_paths(struct parser *p, struct conf_tls *t)
{
	const struct conf *c = p->conf;
	for (size_t k = 0; k < t->ncerts; k++) {
		struct conf_cert *cc = &t->certs[k];
		if (!cc->acme)
			continue;
		if (!c->acme.set)
			conf_error(p, &cc->pos, "\"certificate acme\" without an acme block at top level");
		free(cc->certificate);
		free(cc->key);
		cc->certificate = conf_acme_path(c, ACME_CERT_FILE);
		cc->key = conf_acme_path(c, ACME_CERT_FILE);
	}
}

static void check_acme_certificates(struct parser *p)
{
	struct conf *c = p->conf;
	bool tls_listener = false;
	for (size_t i = 0; i < c->nservers; i++)
		for (size_t k = 0; k < c->servers[i].nlistens; k++)
			tls_listener |= c->servers[i].listens[k].tls;
	if (c->acme.set && c->acme.challenge_set &&
	    c->acme.challenge == ACME_CHALLENGE_TLSALPN01 && !tls_listener)
		conf_error(p, &c->acme.pos,
			   "\"challenge tls-alpn-01\" needs a \"listen ADDRESS:PORT tls\" (the CA "
			   "connects to port 443 of the names)");
	for (size_t i = 0; i < c->nservers; i++)
		acme_certificate_paths(p, &c->servers[i].tls);
	acme_certificate_paths(p, &c->metrics_tls);
}

/* A directory holds no SCRAM verifiers (RFC 5802 §3): its users log in
 * by a password that an LDAP bind checks, so SCRAM-SHA-256 is not offered. */
static void check_ldap_mechanisms(struct parser *p)
{
	if (!p->conf->ldap)
		return;
	for (size_t i = 0; i < p->conf->nservers; i++) {
		struct conf_server *s = &p->conf->servers[i];
		unsigned had = s->auth.mechanisms;
		s->auth.mechanisms &= ~(unsigned)MECH_SCRAM_SHA_256;
		if (had && !s->auth.mechanisms)
			conf_error(p, &s->pos, "server %s offers only SCRAM-SHA-256, which users from "
					       "a directory cannot use: add plain or login", s->name);
	}
}

static void validate(struct parser *p)
{
	const struct conf *c = p->conf;
	bool clean = p->errors == 0;
	if (clean && c->nservers == 0)
		conf_error(p, &p->end_pos, "no server block: posthorn would listen nowhere");
	for (size_t i = 0; i < c->nservers; i++) {
		check_server(p, &c->servers[i], &p->states[i]);
		check_duplicate_name(p, i);
		for (size_t k = 0; k < c->servers[i].nlistens; k++)
			check_listen_overlap(p, i, k);
	}
	for (size_t k = 0; k < c->nmetrics; k++)
		check_metrics_overlap(p, k);
	check_metrics_password(p);
	check_metrics_tls(p);
	if (clean)
		check_domains(p);
	if (c->outbound.smarthost_user && !c->outbound.smarthost)
		conf_error(p, &p->smarthost_auth_pos, "\"smarthost-auth\" without \"smarthost\"");
	check_acme_certificates(p);
	check_ldap_mechanisms(p);
	check_dkim_domains(p);
	if (!c->outbound.tls_reports_set) /* RFC 8460 §5.3: reports by mail should be signed */
		p->conf->outbound.tls_reports = c->ndkim_keys > 0;
}

static void apply_hostname_defaults(struct conf *c)
{
	for (size_t i = 0; i < c->nservers; i++)
		if (!c->servers[i].hostname)
			c->servers[i].hostname = xstrdup(c->hostname);
}

/* GSSAPI's replay cache lives in the spool, which the daemon owns and may
 * write after dropping privileges (RFC 4120 §3.2.3 asks the acceptor to
 * remember authenticators). */
static void apply_replay_cache(struct conf *c)
{
	for (size_t i = 0; i < c->nservers; i++)
		if (c->servers[i].auth.mechanisms & MECH_GSSAPI)
			c->servers[i].auth.replay_cache = path_join(c->spool, "gssapi-replay");
}

/* ---- entry points ------------------------------------------------------------------------ */

static int conf_parse(const char *name, const char *text, const char *dir,
		      const struct file_id *id, struct conf **out, FILE *errout)
{
	struct parser p = {.conf = xcalloc(1, sizeof *p.conf), .errout = errout ? errout : stderr};
	p.conf->path = xstrdup(name);
	conf_defaults(p.conf);
	if (id)
		p.reading[p.nreading++] = *id;
	parse_text(&p, conf_add_file(p.conf, name), text, dir);
	apply_hostname_defaults(p.conf);
	apply_replay_cache(p.conf);
	validate(&p);
	free(p.states);
	if (p.errors == 0) {
		*out = p.conf;
		return 0;
	}
	conf_free(p.conf);
	*out = NULL;
	return p.errors;
}

int conf_parse_string(const char *name, const char *text, const char *basedir,
		      struct conf **out, FILE *errout)
{
	char *dir = absolute_folder(basedir ? basedir : ".");
	int n = conf_parse(name, text, dir, NULL, out, errout);
	free(dir);
	return n;
}

int conf_load(const char *path, struct conf **out, FILE *errout)
{
	struct file_id id;
	const char *why;
	char *text = read_text_file(path, &id, &why);
	if (!text) {
		conf_diag(errout ? errout : stderr, "%s:1:1: cannot read configuration: %s\n", path, why);
		*out = NULL;
		return 1;
	}
	char *folder = path_dirname(path);
	char *dir = absolute_folder(folder);
	int n = conf_parse(path, text, dir, &id, out, errout);
	free(dir);
	free(folder);
	free(text);
	return n;
}

bool conf_is_local_domain(const struct conf *c, const char *domain)
{
	size_t n = strlen(domain);
	if (n > 1 && domain[n - 1] == '.')
		n--;
	for (size_t i = 0; i < c->ndomains; i++)
		if (strlen(c->domains[i]) == n && strncasecmp(c->domains[i], domain, n) == 0)
			return true;
	return false;
}

const char *conf_protocol_name(enum conf_protocol p)
{
	switch (p) {
	case PROTO_SMTP: return "smtp";
	case PROTO_POP3: return "pop3";
	case PROTO_IMAP: return "imap";
	}
	return "unknown";
}

const char *conf_gssapi_service(enum conf_protocol p)
{
	switch (p) {
	case PROTO_SMTP: return "smtp";
	case PROTO_POP3: return "pop";
	case PROTO_IMAP: return "imap";
	}
	return "unknown";
}

/* ---- policy in plain words ------------------------------------------------------------------ */

/* The policy text being written: the first failed write is kept, and
 * conf_print_policy() reports it. */
struct policy_out {
	FILE *f;
	bool failed;
};

static void out_vprintf(struct policy_out *out, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
static void out_vprintf(struct policy_out *out, const char *fmt, va_list ap)
{
	if (!out->failed && vfprintf(out->f, fmt, ap) < 0)
		out->failed = true;
}

static void out_printf(struct policy_out *out, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void out_printf(struct policy_out *out, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	out_vprintf(out, fmt, ap);
	va_end(ap);
}

static void out_puts(struct policy_out *out, const char *s)
{
	if (!out->failed && fputs(s, out->f) == EOF)
		out->failed = true;
}

static void out_putc(struct policy_out *out, char c)
{
	if (!out->failed && fputc(c, out->f) == EOF)
		out->failed = true;
}

static void print_separator(struct policy_out *out, size_t i)
{
	if (i)
		out_puts(out, ", ");
}

static void print_size(struct policy_out *out, uint64_t n)
{
	static const struct {
		uint64_t unit;
		const char *name;
	} units[] = {{UINT64_C(1) << 30, "GiB"}, {UINT64_C(1) << 20, "MiB"}, {UINT64_C(1) << 10, "KiB"}};
	for (size_t i = 0; i < ARRAY_LEN(units); i++) {
		if (n != 0 && n % units[i].unit == 0) {
			out_printf(out, "%" PRIu64 " %s", n / units[i].unit, units[i].name);
			return;
		}
	}
	out_printf(out, "%" PRIu64 " bytes", n);
}

static void print_duration(struct policy_out *out, unsigned s)
{
	static const struct {
		unsigned unit;
		const char *name;
	} units[] = {{86400, "day"}, {3600, "hour"}, {60, "minute"}, {1, "second"}};
	for (size_t i = 0; i < ARRAY_LEN(units); i++) {
		if (s != 0 && s % units[i].unit == 0) {
			unsigned n = s / units[i].unit;
			out_printf(out, "%u %s%s", n, units[i].name, n == 1 ? "" : "s");
			return;
		}
	}
	out_printf(out, "%u seconds", s);
}

static void print_rule_target(struct policy_out *out, const struct conf_rule *r)
{
	char buf[INET6_ADDRSTRLEN];
	if (r->kind == RULE_DOMAIN) {
		out_printf(out, "clients whose verified reverse name is in %s", r->domain);
		return;
	}
	if (r->kind == RULE_HOST) {
		out_printf(out, "the addresses of %s", r->domain);
		return;
	}
	if (r->kind == RULE_DNSBL) {
		out_printf(out, "clients listed in %s", r->domain);
		for (size_t i = 0; i < r->nanswers; i++)
			out_printf(out, "%s%u.%u.%u.%u", i ? " or " : " answering ", r->answers[i][0],
				   r->answers[i][1], r->answers[i][2], r->answers[i][3]);
		return;
	}
	if (!inet_ntop(r->family, r->addr, buf, sizeof buf)) {
		out_puts(out, r->text);
		return;
	}
	out_puts(out, buf);
	if (r->prefix < addr_bits(r->family))
		out_printf(out, "/%u", r->prefix);
}

static void print_rule_list(struct policy_out *out, const struct conf_rule *rules, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		print_separator(out, i);
		print_rule_target(out, &rules[i]);
	}
}

bool conf_dns_on_loopback(const struct conf_dns *dns)
{
	if (!dns || dns->nservers == 0)
		return false;
	for (size_t i = 0; i < dns->nservers; i++) {
		const struct sockaddr *sa = (const struct sockaddr *)&dns->servers[i].ss;
		if (sa->sa_family == AF_INET) {
			const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
			if ((ntohl(in->sin_addr.s_addr) >> 24) != 127)
				return false;
		} else if (sa->sa_family != AF_INET6 ||
			   !IN6_IS_ADDR_LOOPBACK(&((const struct sockaddr_in6 *)sa)->sin6_addr)) {
			return false;
		}
	}
	return true;
}

/* What DANE will do, given where DNS answers come from (RFC 7672 §2.1). */
static void print_tls_policy(struct policy_out *out, const struct conf *c)
{
	const struct conf_outbound *o = &c->outbound;
	if (o->smarthost) {
		out_puts(out, "; DANE and MTA-STS not used with a smarthost");
		return;
	}
	if (o->tls_policy_sts)
		out_printf(out, "; MTA-STS: domains' published policies are fetched over HTTPS "
			   "(certificates checked against %s) and enforced",
			   o->ca_file ? o->ca_file : "the system's CAs");
	if (!o->tls_policy_dane) {
		out_puts(out, "; no DANE");
		return;
	}
	if (conf_dns_on_loopback(&c->dns)) {
		out_puts(out, "; DANE: TLS authenticated by TLSA records where the validating "
			      "resolver on loopback says they are secure");
		return;
	}
	out_puts(out, "; DANE is on but NOT in effect: the DNS servers are not all on loopback, "
		      "so no answer is trusted as DNSSEC-validated (run a validating resolver such "
		      "as unbound on 127.0.0.1 and name it in \"dns\")");
}

static void print_outbound(struct policy_out *out, const struct conf *c)
{
	const struct conf_outbound *o = &c->outbound;
	static const char *const tls[] = {
		[OUTBOUND_TLS_OPPORTUNISTIC] = "STARTTLS when the other side offers it",
		[OUTBOUND_TLS_REQUIRED] = "TLS required",
		[OUTBOUND_TLS_NO] = "no TLS",
	};
	out_puts(out, "outbound: ");
	if (o->smarthost)
		out_printf(out, "all through %s port %u", o->smarthost_host, o->smarthost_port);
	else
		out_printf(out, "straight to each domain's mail exchangers on port %u", o->port);
	if (o->smarthost_user)
		out_printf(out, ", logging in as %s (password in %s)", o->smarthost_user,
			   o->smarthost_secret);
	out_printf(out, "; %s", tls[o->tls]);
	print_tls_policy(out, c);
	out_puts(out, "; undelivered mail is returned after ");
	print_duration(out, o->lifetime);
	out_puts(out, "; retries after ");
	for (size_t i = 0; i < o->nretry; i++) {
		print_separator(out, i);
		print_duration(out, o->retry[i]);
	}
	out_puts(out, " (the last step repeats)\n");
}

/* Only when a server has host rules: when their names are looked up. */
static void print_host_refresh(struct policy_out *out, const struct conf *c)
{
	bool any = false;
	for (size_t i = 0; i < c->nservers; i++)
		any = any || c->servers[i].nhosts > 0;
	if (!any)
		return;
	out_puts(out, "host rules: names looked up at start and at each reload, again when "
		      "their answer's TTL runs out (at least ");
	print_duration(out, c->host_refresh_min);
	out_puts(out, ", at most ");
	print_duration(out, c->host_refresh_max);
	out_puts(out, "); a name matches nothing until it resolves\n");
}

static void print_acme(struct policy_out *out, const struct conf_acme *a)
{
	if (!a->set)
		return;
	out_puts(out, "acme: a certificate for ");
	for (size_t i = 0; i < a->nnames; i++) {
		print_separator(out, i);
		out_puts(out, a->names[i]);
	}
	out_printf(out, " from %s, ", a->directory);
	if (a->challenge == ACME_CHALLENGE_TLSALPN01)
		out_puts(out, "proved by tls-alpn-01 on the implicit-TLS listeners");
	else
		out_printf(out, "proved by http-01 on %s", a->http.text);
	out_puts(out, "; renewed at two thirds of its lifetime\n");
}

/* Where the users come from, and what that means for their logins. */
static void print_users(struct policy_out *out, const struct conf *c)
{
	const struct conf_ldap *l = c->ldap;
	if (!l) {
		out_printf(out, "users: %s\n", c->users);
		return;
	}
	out_puts(out, "users: from the directory at ");
	for (size_t i = 0; i < l->nuris; i++) {
		print_separator(out, i);
		out_puts(out, l->uris[i]);
	}
	out_printf(out, " (tried in order%s), under %s, found by %s", l->starttls ? "; StartTLS on ldap://" : "",
		   l->base, l->filter);
	out_printf(out, "; searched %s%s\n", l->bind_dn ? "as " : "anonymously",
		   l->bind_dn ? l->bind_dn : "");
	out_puts(out, "users: every address in ");
	for (size_t i = 0; i < l->naddresses; i++) {
		print_separator(out, i);
		out_puts(out, l->addresses[i]);
	}
	out_printf(out, " delivers into the mailbox of the first mail; answers cached for %us\n",
		   l->cache);
	out_puts(out, "users: passwords are checked by an LDAP bind as the user over TLS; "
		      "SCRAM-SHA-256 is not offered to directory users (the directory holds no "
		      "SCRAM verifiers)\n");
	if (l->principal)
		out_printf(out, "users: a Kerberos principal is matched against %s\n", l->principal);
}

/* "dkim: mail from example.test sent out signed with sel2026, ed2026" */
static void print_dkim(struct policy_out *out, const struct conf *c)
{
	if (c->ndkim_keys == 0) {
		out_puts(out, "dkim: mail sent out is not signed (no dkim block)\n");
		return;
	}
	for (size_t i = 0; i < c->ndkim_keys; i++) {
		const struct conf_dkim_key *k = &c->dkim_keys[i];
		bool first = i == 0 || strcmp(k->domain, c->dkim_keys[i - 1].domain) != 0;
		bool last = i + 1 == c->ndkim_keys || strcmp(k->domain, c->dkim_keys[i + 1].domain) != 0;
		if (first)
			out_printf(out, "dkim: mail from %s sent out by its users is signed with selector%s ",
				   k->domain, last ? "" : "s");
		else
			out_puts(out, ", ");
		out_puts(out, k->selector);
		if (last)
			out_puts(out, "\n");
	}
}

static void print_global(struct policy_out *out, const struct conf *c)
{
	out_puts(out, "local domains: ");
	for (size_t i = 0; i < c->ndomains; i++) {
		print_separator(out, i);
		out_puts(out, c->domains[i]);
	}
	out_printf(out, "%s\nhostname: %s\n", c->ndomains ? "" : "none", c->hostname);
	out_printf(out, "spool: %s\nmailboxes: %s\n", c->spool, c->mailboxes);
	print_users(out, c);
	out_printf(out, "aliases: %s\n", c->aliases ? c->aliases : "none");
	out_puts(out, "dns: ");
	for (size_t i = 0; i < c->dns.nservers; i++) {
		print_separator(out, i);
		out_puts(out, c->dns.servers[i].text);
	}
	out_printf(out, "%s\n", c->dns.nservers ? "" : "the servers in /etc/resolv.conf");
	print_host_refresh(out, c);
	if (c->run_as)
		out_printf(out, "run-as: %s (after binding its addresses)\n", c->run_as);
	else
		out_puts(out, "run-as: not set (keeps the user it was started as)\n");
	out_puts(out, "metrics and status page: ");
	for (size_t i = 0; i < c->nmetrics; i++) {
		print_separator(out, i);
		out_printf(out, "%s://%s/", c->metrics[i].tls ? "https" : "http",
			   c->metrics[i].addr.text);
	}
	if (!c->nmetrics)
		out_puts(out, "none\n");
	else if (c->metrics_password)
		out_printf(out, " (HTTP Basic, the password in %s)\n", c->metrics_password);
	else
		out_puts(out, " (no password: anybody who can reach these addresses may read them)\n");
	print_outbound(out, c);
	print_acme(out, &c->acme);
	print_dkim(out, c);
}

static const char *starttls_name(enum conf_protocol p)
{
	return p == PROTO_POP3 ? "STLS" : "STARTTLS";
}

/* Whose PROXY header is believed: the client's address comes from it. */
static void print_proxy_from(struct policy_out *out, const struct conf_server *s)
{
	if (s->nproxy_from == 0)
		return;
	out_puts(out, "  takes the client's address from the PROXY header of ");
	for (size_t i = 0; i < s->nproxy_from; i++) {
		print_separator(out, i);
		out_puts(out, s->proxy_from[i].text);
	}
	out_puts(out, "; refuses other peers and connections without one\n");
}

static void print_listens(struct policy_out *out, const struct conf_server *s)
{
	out_puts(out, "  listens on ");
	for (size_t i = 0; i < s->nlistens; i++) {
		const struct conf_listen *l = &s->listens[i];
		print_separator(out, i);
		if (l->tls)
			out_printf(out, "%s (implicit TLS)", l->addr.text);
		else if (s->tls.ncerts)
			out_printf(out, "%s (plain, %s offered)", l->addr.text, starttls_name(s->protocol));
		else
			out_printf(out, "%s (plain, no %s: no certificate)", l->addr.text,
				   starttls_name(s->protocol));
		if (l->proxy)
			out_puts(out, " behind a proxy (PROXY header first)");
	}
	out_putc(out, '\n');
	print_proxy_from(out, s);
}

static bool rules_all_act(const struct conf_rule *rules, size_t n, enum conf_action action)
{
	for (size_t i = 0; i < n; i++)
		if (rules[i].action != action)
			return false;
	return true;
}

/* Rules at the end that repeat the default change nothing: leave them out. */
static size_t rules_that_matter(const struct conf_connection *cn)
{
	size_t n = cn->nrules;
	while (n > 0 && cn->rules[n - 1].action == cn->default_action)
		n--;
	return n;
}

bool conf_smtp_offers_login(const struct conf_server *s)
{
	if (s->protocol != PROTO_SMTP || s->auth.mechanisms == 0)
		return false;
	/* every mechanism is password-based: TLS, or the clear if allowed */
	return s->tls.ncerts > 0 || (!s->tls.require && !s->auth.plaintext_requires_tls);
}

/* Where a client on a block list hears its refusal. */
static void print_dnsbl_stage(struct policy_out *out, const struct conf_server *s)
{
	const struct conf_connection *cn = &s->connection;
	bool any = false;
	for (size_t i = 0; i < cn->nrules; i++)
		any = any || cn->rules[i].kind == RULE_DNSBL;
	if (!any)
		return;
	out_puts(out, "  block lists: looked up once per client and zone, kept for the answer's "
		      "TTL; a failed lookup lists nobody; ");
	if (conf_smtp_offers_login(s))
		out_puts(out, "a client denied by one is refused at MAIL unless it logged in "
			      "(this server offers AUTH)\n");
	else
		out_puts(out, "a client denied by one is refused at the greeting\n");
}

static void print_connection(struct policy_out *out, const struct conf_connection *cn)
{
	bool allow = cn->default_action == ACTION_ALLOW;
	size_t n = rules_that_matter(cn);
	out_puts(out, "  who may connect: ");
	if (n == 0) {
		out_puts(out, allow ? "everybody" : "nobody");
	} else if (rules_all_act(cn->rules, n, allow ? ACTION_DENY : ACTION_ALLOW)) {
		out_puts(out, allow ? "everybody except " : "only ");
		print_rule_list(out, cn->rules, n);
	} else {
		out_puts(out, "the first matching rule decides: ");
		for (size_t i = 0; i < n; i++) {
			print_separator(out, i);
			out_puts(out, cn->rules[i].action == ACTION_ALLOW ? "allow " : "deny ");
			print_rule_target(out, &cn->rules[i]);
		}
		out_puts(out, allow ? "; everybody else may connect" : "; nobody else may connect");
	}
	out_putc(out, '\n');
	bool domains = false;
	for (size_t i = 0; i < cn->nrules; i++)
		domains = domains || cn->rules[i].kind == RULE_DOMAIN;
	if (domains)
		out_puts(out, "  client names: looked up for every connection (domain rules need them)\n");
	else if (cn->reverse_lookup)
		out_puts(out, "  client names: looked up for the Received: header\n");
	else
		out_puts(out, "  client names: not looked up (reverse-lookup no)\n");
}

static void print_encryption(struct policy_out *out, const struct conf_tls *t)
{
	out_puts(out, "  encryption: ");
	if (t->ncerts == 0) {
		out_puts(out, "none (no certificate)\n");
		return;
	}
	out_puts(out, t->ncerts == 1 ? "certificate " : "certificates ");
	for (size_t i = 0; i < t->ncerts; i++) {
		print_separator(out, i);
		if (t->certs[i].acme)
			out_printf(out, "from ACME (%s)", t->certs[i].certificate);
		else
			out_puts(out, t->certs[i].certificate);
	}
	out_printf(out, "; secure channel %s", t->require ? "required" : "not required");
	out_printf(out, "; minimum %u-bit ciphers, TLS %s or newer", t->min_bits,
		   t->min_version == TLS_VERSION_1_3 ? "1.3" : "1.2");
	if (t->strict_sni)
		out_puts(out, "; clients asking for a name no certificate covers are refused");
	out_putc(out, '\n');
}

/* How the lockouts tell clients apart. */
static void print_one_client(struct policy_out *out, const struct conf_auth *a)
{
	out_puts(out, "one address");
	if (a->lockout_ipv6_prefix < 128)
		out_printf(out, " (IPv6: one /%u)", a->lockout_ipv6_prefix);
}

static void print_lockout(struct policy_out *out, const struct conf_auth *a)
{
	if (a->lockout_failures == 0) {
		out_puts(out, "; no lockout after failed logins");
		return;
	}
	out_printf(out, "; %u failed logins from ", a->lockout_failures);
	print_one_client(out, a);
	out_puts(out, " within ");
	print_duration(out, a->lockout_window);
	out_puts(out, " lock it out for ");
	print_duration(out, a->lockout_duration);
}

static void print_mechanisms(struct policy_out *out, unsigned mechanisms)
{
	for (size_t i = 0, n = 0; i < ARRAY_LEN(mechanism_names); i++) {
		if (mechanisms & mechanism_names[i].bit) {
			print_separator(out, n++);
			out_puts(out, mechanism_names[i].name);
		}
	}
}

/* What plaintext-requires-tls keeps inside TLS: every mechanism that
 * sends the password or material derived from it, and the protocols' own
 * password commands (POP3 USER/PASS, IMAP LOGIN) where PLAIN or LOGIN is
 * offered.  Follows the list of mechanisms. */
static void print_password_rule(struct policy_out *out, const struct conf_server *s)
{
	const struct conf_auth *a = &s->auth;
	unsigned m = a->mechanisms & MECH_PASSWORD_BASED;
	if (!m)
		return;
	if (m != a->mechanisms) { /* name those it is about */
		out_puts(out, "; ");
		print_mechanisms(out, m);
	}
	if ((m & (MECH_PLAIN | MECH_LOGIN)) && s->protocol != PROTO_SMTP)
		out_puts(out, s->protocol == PROTO_POP3 ? " and USER/PASS" : " and the LOGIN command");
	if (a->plaintext_requires_tls)
		out_puts(out, ", only after TLS (each sends the password or what it can be guessed "
			      "from)");
	else
		out_puts(out, ", also without TLS");
}

/* Who may log in with Kerberos, and with which service key. */
static void print_gssapi(struct policy_out *out, const struct conf_server *s)
{
	const struct conf_auth *a = &s->auth;
	if (!(a->mechanisms & MECH_GSSAPI))
		return;
	out_puts(out, "; integrated Kerberos logins for principals of ");
	for (size_t i = 0; i < a->nrealms; i++) {
		print_separator(out, i);
		out_printf(out, "%s (users of %s)", a->realms[i].realm, a->realms[i].domain);
	}
	out_printf(out, ", also without TLS (no password crosses), with the key of %s/%s from %s",
		   conf_gssapi_service(s->protocol), s->hostname, a->keytab);
}

static void print_auth(struct policy_out *out, const struct conf_server *s)
{
	const struct conf_auth *a = &s->auth;
	bool smtp = s->protocol == PROTO_SMTP;
	out_puts(out, "  authentication: ");
	print_mechanisms(out, a->mechanisms);
	print_password_rule(out, s);
	print_gssapi(out, s);
	if (smtp) {
		out_puts(out, a->anonymous ? "; anonymous clients may send mail to local domains"
					   : "; anonymous clients may not send mail");
		out_puts(out, a->sender_must_match ? "; senders must match their login"
						   : "; authenticated users may use any sender");
		if (!a->received_auth)
			out_puts(out, "; Received: headers do not name the authenticated user");
	}
	print_lockout(out, a);
	out_putc(out, '\n');
}

static void print_relay(struct policy_out *out, const struct conf_relay *r)
{
	out_puts(out, "  relaying: ");
	if (r->authenticated && r->nrules == 0)
		out_puts(out, "authenticated clients only");
	else if (r->authenticated)
		out_puts(out, "authenticated clients; also ");
	else if (r->nrules)
		out_puts(out, "only ");
	else
		out_puts(out, "nobody (mail is accepted for the local domains only)");
	print_rule_list(out, r->rules, r->nrules);
	if (!r->authenticated && r->nrules)
		out_puts(out, " (authenticating does not allow relaying)");
	out_putc(out, '\n');
}

static void print_limits(struct policy_out *out, const struct conf_server *s)
{
	const struct conf_limits *l = &s->limits;
	out_puts(out, "  limits: ");
	if (s->protocol == PROTO_SMTP) {
		out_puts(out, "messages up to ");
		print_size(out, l->message_size);
		out_printf(out, ", %u recipients, ", l->recipients);
	}
	if (s->protocol == PROTO_IMAP) {
		out_puts(out, "APPEND up to ");
		print_size(out, l->message_size);
		out_puts(out, ", ");
	}
	out_printf(out, "%u connections (%u per address), ", l->connections, l->connections_per_ip);
	if (s->protocol == PROTO_IMAP) {
		/* imap_session's autologout: RFC 3501 §5.4 wants >= 30 minutes */
		print_duration(out, l->timeout > IMAP_AUTOLOGOUT_MIN ? l->timeout : IMAP_AUTOLOGOUT_MIN);
		out_puts(out, " idle once logged in, ");
		print_duration(out, l->timeout < IMAP_LOGIN_IDLE_MAX ? l->timeout : IMAP_LOGIN_IDLE_MAX);
		out_puts(out, " before\n");
		return;
	}
	print_duration(out, l->timeout);
	out_puts(out, " idle\n");
}

/* SMTP's brakes on address harvesting. */
static void print_probing(struct policy_out *out, const struct conf_server *s)
{
	const struct conf_limits *l = &s->limits;
	out_puts(out, "  recipient probing: ");
	if (l->error_delay == 0) {
		out_puts(out, "refused recipients are answered at once");
	} else {
		out_puts(out, "refused recipients are answered after ");
		print_duration(out, l->error_delay);
		out_printf(out, " once a session has made %u error%s", l->error_delay_after,
			   l->error_delay_after == 1 ? "" : "s");
	}
	if (l->unknown_recipients == 0) {
		out_puts(out, "; no lockout after unknown recipients\n");
		return;
	}
	out_printf(out, "; %u unknown recipients from ", l->unknown_recipients);
	print_one_client(out, &s->auth);
	out_puts(out, " within ");
	print_duration(out, l->unknown_recipients_window);
	out_puts(out, " refuse it for ");
	print_duration(out, l->unknown_recipients_duration);
	out_putc(out, '\n');
}

/* The milters in order, then where spam goes. */
static void print_filters(struct policy_out *out, const struct conf_server *s)
{
	static const char *const failures[] = {"tempfail", "accept", "reject"};
	if (s->nmilters == 0 && !s->junk_header)
		return;
	out_puts(out, "  filters: ");
	for (size_t i = 0; i < s->nmilters; i++) {
		const struct conf_milter *m = &s->milters[i];
		out_printf(out, "%smilter %s at %s (", i ? ", then " : "", m->name, m->socket);
		print_duration(out, m->timeout);
		out_printf(out, " per step; when it fails: %s)", failures[m->on_failure]);
	}
	if (s->nmilters == 0)
		out_puts(out, "no milter");
	if (s->junk_header)
		out_printf(out, "; messages with \"%s: %s\" go to Junk", s->junk_header,
			   s->junk_value);
	out_putc(out, '\n');
}

static void print_verify(struct policy_out *out, const struct conf_verify *v)
{
	static const char *const dmarc[] = {"no", "report (header and log only)", "enforce"};
	if (!v->set)
		return;
	out_printf(out, "  verify: spf %s, dkim %s, dmarc %s, arc %s\n", v->spf ? "yes" : "no",
		   v->dkim ? "yes" : "no", dmarc[v->dmarc],
		   v->arc ? "yes (not built in yet)" : "no");
}

static void print_server(struct policy_out *out, const struct conf_server *s)
{
	out_printf(out, "\nserver %s (%s), hostname %s\n", s->name, conf_protocol_name(s->protocol),
		   s->hostname);
	print_listens(out, s);
	print_connection(out, &s->connection);
	print_dnsbl_stage(out, s);
	print_encryption(out, &s->tls);
	print_auth(out, s);
	if (s->protocol == PROTO_SMTP)
		print_relay(out, &s->relay);
	print_limits(out, s);
	if (s->protocol == PROTO_SMTP)
		print_probing(out, s);
	print_filters(out, s);
	print_verify(out, &s->verify);
}

static int warn(struct policy_out *out, const struct conf_server *s, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int warn(struct policy_out *out, const struct conf_server *s, const char *fmt, ...)
{
	va_list ap;
	out_puts(out, "warning: ");
	if (s)
		out_printf(out, "server %s: ", s->name);
	va_start(ap, fmt);
	out_vprintf(out, fmt, ap);
	va_end(ap);
	out_putc(out, '\n');
	return 1;
}

/* Can any client authenticate with the offered mechanisms? */
static bool auth_is_usable(const struct conf_server *s)
{
	const struct conf_auth *a = &s->auth;
	if (a->mechanisms & ~(unsigned)MECH_PASSWORD_BASED)
		return true;
	return a->mechanisms && (s->tls.ncerts > 0 || !a->plaintext_requires_tls);
}

/* The name of the first mechanism of mechanisms (in the order of
 * mechanism_names); NULL for none. */
static const char *first_mechanism(unsigned mechanisms)
{
	for (size_t i = 0; i < ARRAY_LEN(mechanism_names); i++)
		if (mechanisms & mechanism_names[i].bit)
			return mechanism_names[i].name;
	return NULL;
}

/* An MX that leaves `mechanisms` as it is takes its mail without AUTH:
 * that nobody can log in there is no news. */
static bool auth_is_incidental(const struct conf_server *s)
{
	return s->protocol == PROTO_SMTP && s->auth.anonymous &&
	       s->auth.mechanisms == (MECH_PLAIN | MECH_LOGIN | MECH_SCRAM_SHA_256);
}

static int warn_auth(struct policy_out *out, const struct conf_server *s)
{
	const struct conf_auth *a = &s->auth;
	const char *mech = first_mechanism(a->mechanisms & MECH_PASSWORD_BASED);
	int n = 0;
	if (mech && a->plaintext_requires_tls && s->tls.ncerts == 0 && !auth_is_incidental(s))
		n += warn(out, s, "AUTH %s offered but no TLS certificate: clients can never authenticate",
			  mech);
	if (!auth_is_usable(s) && s->protocol != PROTO_SMTP)
		n += warn(out, s, "no client can authenticate: nobody can log in");
	else if (!auth_is_usable(s) && !a->anonymous)
		n += warn(out, s, "anonymous clients may not send mail and no client can "
				  "authenticate: nobody can send mail");
	return n;
}

static int warn_cleartext(struct policy_out *out, const struct conf_server *s)
{
	if (!(s->auth.mechanisms & MECH_PASSWORD_BASED) || s->auth.plaintext_requires_tls ||
	    s->tls.require)
		return 0;
	for (size_t i = 0; i < s->nlistens; i++) {
		const struct conf_listen *l = &s->listens[i];
		if (!l->tls && !sockaddr_is_loopback(&l->addr))
			return warn(out, s, "plaintext-requires-tls is no and it listens on %s: "
					    "passwords (or, with SCRAM, what they can be guessed "
					    "from) may cross the network in clear text", l->addr.text);
	}
	return 0;
}

/* RFC 3207 §4: a publicly-referenced SMTP server must not require
 * STARTTLS to deliver mail locally; the mail of every sender without TLS
 * would be refused for good. */
static int warn_public_mx_requires_tls(struct policy_out *out, const struct conf_server *s)
{
	if (s->protocol != PROTO_SMTP || !s->tls.require || !s->auth.anonymous)
		return 0;
	return warn(out, s, "tls require yes with anonymous yes: mail from servers that cannot "
			    "use STARTTLS is refused, but a public mail exchanger must accept it "
			    "without TLS (RFC 3207 section 4); require TLS on submission servers only");
}

static int warn_connection(struct policy_out *out, const struct conf_server *s)
{
	const struct conf_connection *cn = &s->connection;
	if (cn->default_action != ACTION_DENY)
		return 0;
	for (size_t i = 0; i < cn->nrules; i++)
		if (cn->rules[i].action == ACTION_ALLOW)
			return 0;
	return warn(out, s, "connection default is deny and there is no allow rule: "
			    "nobody may connect");
}

/* A secret file readable by group or others is worth a warning. */
static int warn_secret_file(struct policy_out *out, const struct conf_server *s, const char *path)
{
	struct stat st;
	if (!path || stat(path, &st) < 0 || !(st.st_mode & (S_IRWXG | S_IRWXO)))
		return 0;
	return warn(out, s, "secret file %s may be read by group or others: chmod 600 it", path);
}

static int warn_server(struct policy_out *out, const struct conf_server *s)
{
	int n = warn_auth(out, s) + warn_cleartext(out, s) + warn_connection(out, s) +
		warn_public_mx_requires_tls(out, s);
	for (size_t i = 0; i < s->tls.ncerts; i++)
		n += warn_secret_file(out, s, s->tls.certs[i].key);
	n += warn_secret_file(out, s, s->auth.keytab);
	return n;
}

/* A metrics-tls block that no `metrics ... tls` address uses. */
static int warn_unused_metrics_tls(struct policy_out *out, const struct conf *c)
{
	if (c->metrics_tls.ncerts == 0)
		return 0;
	for (size_t k = 0; k < c->nmetrics; k++)
		if (c->metrics[k].tls)
			return 0;
	return warn(out, NULL, "metrics-tls is set but no metrics address has tls: "
			       "its certificate is never used");
}

int conf_print_policy(const struct conf *c, FILE *f)
{
	struct policy_out o = {.f = f}, *out = &o;
	int n = 0;
	print_global(out, c);
	for (size_t i = 0; i < c->nservers; i++)
		print_server(out, &c->servers[i]);
	out_putc(out, '\n');
	if (geteuid() == 0 && !c->run_as)
		n += warn(out, NULL, "runs with full privileges: set run-as");
	for (size_t i = 0; i < c->nservers; i++)
		n += warn_server(out, &c->servers[i]);
	n += warn_secret_file(out, NULL, c->outbound.smarthost_secret);
	n += warn_secret_file(out, NULL, c->ldap ? c->ldap->bind_password_file : NULL);
	n += warn_secret_file(out, NULL, c->metrics_password);
	for (size_t i = 0; i < c->metrics_tls.ncerts; i++)
		n += warn_secret_file(out, NULL, c->metrics_tls.certs[i].key);
	n += warn_unused_metrics_tls(out, c);
	if (!o.failed && fflush(f) == EOF)
		o.failed = true;
	return o.failed ? -1 : n;
}
