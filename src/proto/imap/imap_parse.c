/* imap_parse: the IMAP command parser (see imap_parse.h).  RFC 3501 §9
 * formal syntax and §7.5 (literals and the continuation request), RFC 7888
 * (LITERAL+, LITERAL-), RFC 5182 ("$"), RFC 3516 (BINARY sections). */
#include "proto/imap/imap_parse.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <event2/buffer.h>

#include "lib/linebuf.h"
#include "lib/util.h"

enum {
	/* What can announce a literal at the end of a skipped line part:
	 * "{" + 20 digits (2^64) + "+}" + CR. */
	IMAP_TAIL_MAX = 24,
	/* The line part's storage grows to fit the line part (in steps of
	 * IMAP_LINE_STEP) up to IMAP_LINE_MAX; one larger than IMAP_LINE_KEEP
	 * is given back once the line part is parsed, so an idle session
	 * holds at most IMAP_LINE_KEEP octets for it, never IMAP_LINE_MAX. */
	IMAP_LINE_STEP = 1024,
	IMAP_LINE_KEEP = 4096,
};

enum parse_state {
	PS_LINE,                /* reading a line part */
	PS_LITERAL,             /* reading the octets of an accepted literal */
	PS_SKIP_LITERAL,        /* bad command: dropping {n+} octets */
	PS_SKIP_LINE,           /* bad command: dropping the rest of a line part */
};

enum tok_state {
	TOK_AFTER_ELEM,         /* after an element or the name: SP, ")" or end */
	TOK_AFTER_SP,           /* an element must follow */
	TOK_AFTER_OPEN,         /* after "(": an element or ")" */
};

enum line_result {
	LR_DONE,                /* the command is complete */
	LR_LITERAL,             /* a literal was announced and accepted */
	LR_ERROR,               /* p->err.reason says why */
};

struct imap_parser {
	enum parse_state state;
	struct linebuf lb;
	char *line;             /* the line part being parsed (line_cap octets) */
	size_t line_cap;

	bool authenticated;
	bool utf8;              /* RFC 6855 §3: UTF-8 in quoted strings */
	uint64_t append_max;
	bool have_sink;
	struct imap_literal_sink sink;

	/* the command being built */
	struct imap_command *cmd;
	bool is_fetch;          /* BODY[...] is a section */
	bool is_append;         /* a top-level literal after the mailbox is the message */
	enum tok_state tok;
	size_t depth;
	struct imap_args *stack[IMAP_DEPTH_MAX + 1]; /* [0]: cmd->args */
	size_t nodes;
	size_t mem;

	/* the literal being read */
	struct imap_arg *lit;
	uint64_t lit_have;

	/* skipping what is left of a bad command */
	uint64_t skip_left;
	char tail[IMAP_TAIL_MAX];
	size_t tail_len;

	struct imap_parse_error err;
};

/* ---- character classes, RFC 3501 §9 -------------------------------------- */

/* ATOM-CHAR: any CHAR except atom-specials. */
static bool is_atom_char(unsigned char c)
{
	if (c <= 0x20 || c >= 0x7f)
		return false;
	switch (c) {
	case '(': case ')': case '{': case '%': case '*': case '"': case '\\': case ']':
		return false;
	default:
		return true;
	}
}

/* ASTRING-CHAR: ATOM-CHAR / resp-specials */
static bool is_astring_char(unsigned char c)
{
	return is_atom_char(c) || c == ']';
}

/* list-char: ATOM-CHAR / list-wildcards / resp-specials; also the "*" of
 * sequence sets.  What the tokenizer takes into an atom. */
static bool is_list_char(unsigned char c)
{
	return is_astring_char(c) || c == '%' || c == '*';
}

/* tag: 1*<any ASTRING-CHAR except "+"> */
static bool is_tag_char(unsigned char c)
{
	return is_astring_char(c) && c != '+';
}

static bool is_digit(unsigned char c)
{
	return c >= '0' && c <= '9';
}

static bool all_chars(const char *s, size_t n, bool (*ok)(unsigned char))
{
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!ok((unsigned char)s[i]))
			return false;
	return true;
}

/* 1*DIGIT within max; false on anything else or overflow. */
static bool parse_uint(const char *s, size_t n, uint64_t max, uint64_t *v)
{
	uint64_t r = 0;
	if (n == 0)
		return false;
	for (size_t i = 0; i < n; i++) {
		if (!is_digit((unsigned char)s[i]))
			return false;
		unsigned d = (unsigned)(s[i] - '0');
		if (r > (max - d) / 10)
			return false;
		r = r * 10 + d;
	}
	*v = r;
	return true;
}

/* Is s[0..n) exactly "{" number ["+"] "}"?  (RFC 3501 literal, RFC 7888
 * literal+.)  The size may be anything up to 2^64-1 here. */
static bool literal_announcement(const char *s, size_t n, uint64_t *size, bool *plus)
{
	if (n < 3 || s[0] != '{' || s[n - 1] != '}')
		return false;
	size_t end = n - 1;
	*plus = s[end - 1] == '+';
	if (*plus)
		end--;
	return parse_uint(s + 1, end - 1, UINT64_MAX, size);
}

/* Does a line part (without CRLF; a CR may remain) end in "{n+}"? */
static bool ends_in_plus_literal(const char *s, size_t n, uint64_t *size)
{
	if (n > 0 && s[n - 1] == '\r')
		n--;
	size_t from = n > IMAP_TAIL_MAX ? n - IMAP_TAIL_MAX : 0;
	for (size_t i = n; i > from; i--) {
		if (s[i - 1] == '{') {
			bool plus;
			return literal_announcement(s + i - 1, n - (i - 1), size, &plus) && plus;
		}
	}
	return false;
}

/* ---- limits and errors ----------------------------------------------------- */

static size_t lim_literal(const struct imap_parser *p)
{
	return p->authenticated ? IMAP_LITERAL_MAX : IMAP_PREAUTH_LITERAL_MAX;
}

static size_t lim_line(const struct imap_parser *p)
{
	return p->authenticated ? IMAP_LINE_MAX : IMAP_PREAUTH_LINE_MAX;
}

static size_t lim_mem(const struct imap_parser *p)
{
	return p->authenticated ? IMAP_MEM_MAX : IMAP_PREAUTH_MEM_MAX;
}

static size_t lim_args(const struct imap_parser *p)
{
	return p->authenticated ? IMAP_ARGS_MAX : IMAP_PREAUTH_ARGS_MAX;
}

/* Set the reason of the error being raised; always false.  Only the
 * parser's own text and numbers go in, never a client's bytes. */
static bool fail(struct imap_parser *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static bool fail(struct imap_parser *p, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	verrfmt(p->err.reason, sizeof p->err.reason, fmt, ap);
	va_end(ap);
	return false;
}

/* The reason for an octet that may not appear where it does. */
static bool fail_octet(struct imap_parser *p, unsigned char c, const char *where)
{
	if (c == '\0')
		return fail(p, "NUL octet in command");
	if (c >= 0x80)
		return fail(p, "8-bit octet %s (only literals may carry 8-bit data)", where);
	if (c < 0x20 || c == 0x7f)
		return fail(p, "Control character %s", where);
	if (c == ' ')
		return fail(p, "Unexpected space %s", where);
	return fail(p, "Unexpected '%c' %s", c, where);
}

static bool charge(struct imap_parser *p, uint64_t n)
{
	if (p->mem > lim_mem(p) || n > lim_mem(p) - p->mem)
		return fail(p, "[TOOBIG] Command too large (at most %zu octets of arguments)",
			    lim_mem(p));
	p->mem += (size_t)n;
	return true;
}

/* A new zeroed argument at the end of the innermost open list. */
static struct imap_arg *add_arg(struct imap_parser *p, enum imap_arg_type type)
{
	if (p->nodes >= lim_args(p)) {
		fail(p, "Too many arguments (at most %zu)", lim_args(p));
		return NULL;
	}
	if (!charge(p, sizeof(struct imap_arg)))
		return NULL;
	p->nodes++;
	struct imap_args *top = p->stack[p->depth];
	struct imap_arg *a = xgrow(&top->v, &top->n, &top->cap, sizeof(*a));
	a->type = type;
	return a;
}

/* ---- freeing ------------------------------------------------------------------ */

static void section_free(struct imap_section *s)
{
	if (!s)
		return;
	for (size_t i = 0; i < s->spec.nfields; i++)
		free(s->spec.fields[i]);
	free(s->spec.fields);
	free(s);
}

/* Recursion is bounded by IMAP_DEPTH_MAX. */
static void args_free(struct imap_args *args)
{
	for (size_t i = 0; i < args->n; i++) {
		struct imap_arg *a = &args->v[i];
		free(a->str);
		if (a->type == IMAP_ARG_LIST)
			args_free(&a->list);
		section_free(a->section);
	}
	free(args->v);
	memset(args, 0, sizeof(*args));
}

void imap_command_free(struct imap_command *c)
{
	if (!c)
		return;
	args_free(&c->args);
	free(c);
}

static void drop_command(struct imap_parser *p)
{
	imap_command_free(p->cmd);
	p->cmd = NULL;
	p->lit = NULL;
	p->lit_have = 0;
	p->depth = 0;
	p->tok = TOK_AFTER_ELEM;
	p->nodes = 0;
	p->mem = 0;
	p->is_fetch = p->is_append = false;
}

/* ---- parser object ------------------------------------------------------------- */

struct imap_parser *imap_parser_new(void)
{
	struct imap_parser *p = xcalloc(1, sizeof(*p));
	p->state = PS_LINE;
	p->append_max = IMAP_LITERAL_MAX;
	return p;
}

void imap_parser_free(struct imap_parser *p)
{
	if (!p)
		return;
	drop_command(p);
	free(p->line);
	free(p);
}

size_t imap_parser_line_capacity(const struct imap_parser *p)
{
	return p->line_cap;
}

void imap_parser_reset(struct imap_parser *p)
{
	drop_command(p);
	linebuf_reset(&p->lb);
	p->state = PS_LINE;
	p->skip_left = 0;
	p->tail_len = 0;
	memset(&p->err, 0, sizeof(p->err));
}

void imap_parser_set_authenticated(struct imap_parser *p, bool authenticated)
{
	p->authenticated = authenticated;
}

void imap_parser_set_utf8(struct imap_parser *p, bool on)
{
	p->utf8 = on;
}

void imap_parser_set_append(struct imap_parser *p, uint64_t max_size,
			    const struct imap_literal_sink *sink)
{
	p->append_max = max_size;
	p->have_sink = sink && sink->write;
	if (p->have_sink)
		p->sink = *sink;
	else
		memset(&p->sink, 0, sizeof(p->sink));
}

const struct imap_parse_error *imap_parser_error(const struct imap_parser *p)
{
	return &p->err;
}

const struct imap_command *imap_parser_pending(const struct imap_parser *p)
{
	return p->state == PS_LITERAL ? p->cmd : NULL;
}

bool imap_parser_in_command(const struct imap_parser *p)
{
	return p->cmd != NULL || p->state != PS_LINE;
}

void imap_parser_reject_literal(struct imap_parser *p)
{
	/* only right after CONTINUE: a {n+} literal's octets are coming */
	if (p->state != PS_LITERAL || !p->lit->literal_sync || p->lit_have > 0)
		return;
	drop_command(p);
	p->state = PS_LINE;
}

/* ---- tag and command name ------------------------------------------------------ */

/* Take one command-name word at s[*i]: ATOM-CHARs, upper-cased into out. */
static bool name_word(struct imap_parser *p, const char *s, size_t n, size_t *i, char *out,
		      size_t outsz)
{
	size_t j = *i;
	while (j < n && is_atom_char((unsigned char)s[j]))
		j++;
	size_t len = j - *i;
	if (len == 0) {
		if (j == n)
			return fail(p, "Missing command name");
		return fail_octet(p, (unsigned char)s[j], "in command name");
	}
	if (j < n && s[j] != ' ')
		return fail_octet(p, (unsigned char)s[j], "in command name");
	if (len > IMAP_NAME_MAX || len >= outsz)
		return fail(p, "Command name too long");
	for (size_t k = 0; k < len; k++) {
		char c = s[*i + k];
		out[k] = (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
	}
	out[len] = '\0';
	*i = j;
	return true;
}

/* tag SP command-name ["UID" SP command-name]; leaves *i after the name. */
static bool parse_start(struct imap_parser *p, const char *s, size_t n, size_t *i)
{
	p->cmd = xcalloc(1, sizeof(*p->cmd));
	p->stack[0] = &p->cmd->args;
	p->depth = 0;
	p->tok = TOK_AFTER_ELEM;

	if (n == 0)
		return fail(p, "Empty command line");
	size_t t = 0;
	while (t < n && is_tag_char((unsigned char)s[t]))
		t++;
	if (t == 0 || (t < n && s[t] != ' '))
		return fail(p, "Invalid tag");
	if (t > IMAP_TAG_MAX)
		return fail(p, "Tag too long (at most %d characters)", IMAP_TAG_MAX);
	memcpy(p->cmd->tag, s, t);
	p->cmd->tag[t] = '\0';
	if (t == n)
		return fail(p, "Missing command name");

	size_t j = t + 1;
	char *name = p->cmd->name;
	if (!name_word(p, s, n, &j, name, sizeof(p->cmd->name)))
		return false;
	if (strcmp(name, "UID") == 0) {
		if (j == n)
			return fail(p, "Missing command after UID");
		j++;
		size_t used = strlen(name);
		name[used++] = ' ';
		if (!name_word(p, s, n, &j, name + used, sizeof(p->cmd->name) - used))
			return false;
	}
	p->is_fetch = strcmp(name, "FETCH") == 0 || strcmp(name, "UID FETCH") == 0;
	p->is_append = strcmp(name, "APPEND") == 0;
	*i = j;
	return true;
}

/* ---- elements -------------------------------------------------------------------- */

static bool open_list(struct imap_parser *p)
{
	if (p->depth >= IMAP_DEPTH_MAX)
		return fail(p, "Lists nested too deeply (at most %d levels)", IMAP_DEPTH_MAX);
	struct imap_arg *a = add_arg(p, IMAP_ARG_LIST);
	if (!a)
		return false;
	p->stack[++p->depth] = &a->list;
	p->tok = TOK_AFTER_OPEN;
	return true;
}

static bool close_list(struct imap_parser *p)
{
	if (p->depth == 0)
		return fail(p, "Unbalanced ')'");
	if (p->tok == TOK_AFTER_SP)
		return fail(p, "Unexpected space before ')'");
	p->depth--;
	p->tok = TOK_AFTER_ELEM;
	return true;
}

/* quoted = DQUOTE *QUOTED-CHAR DQUOTE, s[*i] is the opening quote.
 * QUOTED-CHAR is 7-bit TEXT-CHAR (no CR, LF, NUL) or "\" quoted-special.
 * On success *len is the unescaped length and *i is past the closing quote;
 * unescape into out when it is not NULL. */
static bool scan_quoted(struct imap_parser *p, const char *s, size_t n, size_t *i, char *out,
			size_t *len)
{
	size_t j = *i + 1, k = 0;
	for (;;) {
		if (j >= n)
			return fail(p, "Unterminated quoted string");
		unsigned char c = (unsigned char)s[j];
		if (c == '"')
			break;
		if (c == '\\') {
			if (j + 1 >= n || (s[j + 1] != '"' && s[j + 1] != '\\'))
				return fail(p, "Invalid escape in quoted string");
			c = (unsigned char)s[j + 1];
			j++;
		} else if (c == '\0' || (c >= 0x80 && !p->utf8) || c == '\r' || c == '\n') {
			return fail_octet(p, c, "in quoted string");
		}
		if (out)
			out[k] = (char)c;
		k++;
		j++;
	}
	*len = k;
	*i = j + 1;
	return true;
}

static bool parse_quoted(struct imap_parser *p, const char *s, size_t n, size_t *i)
{
	size_t j = *i, len = 0;
	if (!scan_quoted(p, s, n, &j, NULL, &len) || !charge(p, len + 1))
		return false;
	struct imap_arg *a = add_arg(p, IMAP_ARG_QUOTED);
	if (!a)
		return false;
	a->str = xmalloc(len + 1);
	a->len = len;
	scan_quoted(p, s, n, i, a->str, &len);
	a->str[len] = '\0';
	p->tok = TOK_AFTER_ELEM;
	return true;
}

/* ---- FETCH sections, RFC 3501 §9 "section", "partial"; RFC 3516 ------------------ */

struct cursor {
	const char *s;
	size_t n, i;
};

static bool cur_eat(struct cursor *c, char ch)
{
	if (c->i < c->n && c->s[c->i] == ch) {
		c->i++;
		return true;
	}
	return false;
}

/* number (leading zeros allowed) or nz-number (none, not 0), 32 bits. */
static bool cur_number(struct cursor *c, bool nz, uint32_t *v)
{
	size_t j = c->i;
	while (j < c->n && is_digit((unsigned char)c->s[j]))
		j++;
	uint64_t r;
	if (!parse_uint(c->s + c->i, j - c->i, UINT32_MAX, &r))
		return false;
	if (nz && (c->s[c->i] == '0'))
		return false;
	c->i = j;
	*v = (uint32_t)r;
	return true;
}

/* Is the cursor at keyword kw (case-insensitive), followed by ']' or SP? */
static bool cur_keyword(struct cursor *c, const char *kw)
{
	size_t k = strlen(kw);
	if (c->n - c->i < k || strncasecmp(c->s + c->i, kw, k) != 0)
		return false;
	if (c->i + k < c->n && c->s[c->i + k] != ']' && c->s[c->i + k] != ' ')
		return false;
	c->i += k;
	return true;
}

/* header-list = "(" header-fld-name *(SP header-fld-name) ")", each an
 * astring (no literal: the section came in one line part). */
static bool section_fields(struct imap_parser *p, struct cursor *c,
			   struct message_section_spec *spec)
{
	size_t cap = 0;
	if (!cur_eat(c, ' ') || !cur_eat(c, '('))
		return fail(p, "Expected a header list in section");
	do {
		size_t start = c->i, len;
		char *name;
		if (c->i < c->n && c->s[c->i] == '"') {
			if (!scan_quoted(p, c->s, c->n, &c->i, NULL, &len))
				return false;
			if (!charge(p, len + 1 + sizeof(char *)))
				return false;
			name = xmalloc(len + 1);
			size_t j = start;
			scan_quoted(p, c->s, c->n, &j, name, &len);
			name[len] = '\0';
		} else {
			while (c->i < c->n && is_atom_char((unsigned char)c->s[c->i]))
				c->i++;
			len = c->i - start;
			if (len == 0)
				return fail(p, "Invalid header field name in section");
			if (!charge(p, len + 1 + sizeof(char *)))
				return false;
			name = xstrndup(c->s + start, len);
		}
		if (p->nodes >= lim_args(p)) {
			free(name);
			return fail(p, "Too many arguments (at most %zu)", lim_args(p));
		}
		p->nodes++;
		char **slot = xgrow(&spec->fields, &spec->nfields, &cap, sizeof(*spec->fields));
		*slot = name;
	} while (cur_eat(c, ' '));
	if (!cur_eat(c, ')'))
		return fail(p, "Expected ')' after header list in section");
	return true;
}

/* section-spec inside the brackets, up to (not including) "]". */
static bool section_spec(struct imap_parser *p, struct cursor *c, struct imap_section *sec)
{
	struct message_section_spec *spec = &sec->spec;
	bool need_text = false;
	while (c->i < c->n && is_digit((unsigned char)c->s[c->i])) {
		if (spec->nparts >= IMAP_SECTION_PARTS_MAX)
			return fail(p, "Too many part numbers in section (at most %d)",
				    IMAP_SECTION_PARTS_MAX);
		if (!cur_number(c, true, &spec->parts[spec->nparts++]))
			return fail(p, "Invalid part number in section");
		need_text = cur_eat(c, '.');
		if (!need_text)
			break;
	}
	if (c->i < c->n && c->s[c->i] == ']') {
		if (need_text)
			return fail(p, "Invalid section");
		spec->text = MESSAGE_SECTION_WHOLE;
		return true;
	}
	if (sec->att != IMAP_SECTION_BODY)
		return fail(p, "Only part numbers are allowed in a BINARY section");
	if (cur_keyword(c, "HEADER.FIELDS.NOT")) {
		spec->text = MESSAGE_SECTION_HEADER_FIELDS_NOT;
		return section_fields(p, c, spec);
	}
	if (cur_keyword(c, "HEADER.FIELDS")) {
		spec->text = MESSAGE_SECTION_HEADER_FIELDS;
		return section_fields(p, c, spec);
	}
	if (cur_keyword(c, "HEADER"))
		spec->text = MESSAGE_SECTION_HEADER;
	else if (cur_keyword(c, "TEXT"))
		spec->text = MESSAGE_SECTION_TEXT;
	else if (spec->nparts > 0 && cur_keyword(c, "MIME"))
		spec->text = MESSAGE_SECTION_MIME;
	else
		return fail(p, "Invalid section");
	return true;
}

static const struct {
	const char *name;
	enum imap_section_att att;
	bool peek;
} section_atts[] = {
	{ "BODY", IMAP_SECTION_BODY, false },
	{ "BODY.PEEK", IMAP_SECTION_BODY, true },
	{ "BINARY", IMAP_SECTION_BINARY, false },
	{ "BINARY.PEEK", IMAP_SECTION_BINARY, true },
	{ "BINARY.SIZE", IMAP_SECTION_BINARY_SIZE, false },
};

/* The whole token "BODY.PEEK[1.HEADER.FIELDS (From)]<0.100>". */
static struct imap_section *parse_section(struct imap_parser *p, const char *s, size_t n)
{
	const char *b = memchr(s, '[', n);
	size_t plen = (size_t)(b - s);
	struct imap_section *sec = xcalloc(1, sizeof(*sec));
	size_t k;
	for (k = 0; k < ARRAY_LEN(section_atts); k++) {
		if (strlen(section_atts[k].name) == plen &&
		    strncasecmp(s, section_atts[k].name, plen) == 0)
			break;
	}
	if (k == ARRAY_LEN(section_atts)) {
		fail(p, "Unknown fetch attribute with a section");
		goto bad;
	}
	sec->att = section_atts[k].att;
	sec->peek = section_atts[k].peek;

	struct cursor c = { s, n, plen + 1 };
	if (!section_spec(p, &c, sec))
		goto bad;
	if (!cur_eat(&c, ']')) {
		fail(p, "Invalid section");
		goto bad;
	}
	if (cur_eat(&c, '<')) {
		/* partial = "<" number "." nz-number ">" */
		if (sec->att == IMAP_SECTION_BINARY_SIZE || !cur_number(&c, false, &sec->origin) ||
		    !cur_eat(&c, '.') || !cur_number(&c, true, &sec->count) || !cur_eat(&c, '>')) {
			fail(p, "Invalid partial range in section");
			goto bad;
		}
		sec->partial = true;
	}
	if (c.i != n) {
		fail(p, "Invalid section");
		goto bad;
	}
	return sec;
bad:
	section_free(sec);
	return NULL;
}

/* In FETCH, s[*j] is "[": move *j to the matching "]".  Inside, spaces,
 * parentheses and quoted strings may appear (HEADER.FIELDS (...)). */
static bool skip_brackets(struct imap_parser *p, const char *s, size_t n, size_t *j)
{
	bool quoted = false;
	for (size_t k = *j + 1; k < n; k++) {
		unsigned char c = (unsigned char)s[k];
		if (quoted) {
			if (c == '\\')
				k++;
			else if (c == '"')
				quoted = false;
			continue;
		}
		if (c == ']') {
			*j = k;
			return true;
		}
		if (c == '"')
			quoted = true;
		else if (c == '{')
			return fail(p, "Literals inside a section are not supported");
		else if (c == '[')
			return fail(p, "Unexpected '[' in section");
		else if (c < 0x20 || c >= 0x7f)
			return fail_octet(p, c, "in section");
	}
	return fail(p, "Missing ']' in section");
}

/* An atom (or "\" atom, a flag), or in FETCH a section token.  The
 * tokenizer takes list-chars (ATOM-CHAR, "]", "%", "*"); the accessors
 * decide which of atom, astring, list-mailbox or flag it is. */
static bool parse_atom(struct imap_parser *p, const char *s, size_t n, size_t *i)
{
	size_t j = *i;
	bool bracket = false;
	if (s[j] == '\\')
		j++;
	size_t first = j;
	for (; j < n; j++) {
		unsigned char c = (unsigned char)s[j];
		if (c == '[' && p->is_fetch) {
			if (bracket || j == first)
				return fail(p, "Unexpected '[' in fetch attribute");
			if (!skip_brackets(p, s, n, &j))
				return false;
			bracket = true;
			continue;
		}
		if (!is_list_char(c))
			break;
	}
	if (j == first) {
		if (j == n)
			return fail(p, "Missing flag name after '\\'");
		return fail_octet(p, (unsigned char)s[j], first == *i ? "where an argument was expected" : "in flag");
	}
	if (j < n && s[j] != ' ' && s[j] != ')')
		return fail_octet(p, (unsigned char)s[j], "in atom");

	size_t len = j - *i;
	struct imap_section *sec = NULL;
	if (bracket && (!charge(p, sizeof(*sec)) || !(sec = parse_section(p, s + *i, len))))
		return false;
	enum imap_arg_type type = IMAP_ARG_ATOM;
	if (sec)
		type = IMAP_ARG_SECTION;
	else if (len == 3 && strncasecmp(s + *i, "NIL", 3) == 0)
		type = IMAP_ARG_NIL;
	struct imap_arg *a = NULL;
	if (!charge(p, len + 1) || !(a = add_arg(p, type))) {
		section_free(sec);
		return false;
	}
	a->str = xstrndup(s + *i, len);
	a->len = len;
	a->section = sec;
	p->tok = TOK_AFTER_ELEM;
	*i = j;
	return true;
}

/* RFC 6855 §4: APPEND's append-data "UTF8" SP "(" literal8 ")": the
 * literal is the first element of a list that follows the atom UTF8 at
 * the top level. */
static bool in_utf8_data(const struct imap_parser *p)
{
	const struct imap_args *top = &p->cmd->args;
	return p->is_append && p->depth == 1 && p->stack[1]->n == 0 && top->n >= 3 &&
	       imap_arg_is(&top->v[top->n - 2], "UTF8");
}

/* Whether the literal being announced is APPEND's message: at the top
 * level after the mailbox (RFC 3501 §6.3.11), or the literal8 of UTF8
 * data (RFC 6855 §4), allowed only after ENABLE UTF8=ACCEPT.  false
 * after failing. */
static bool append_message_literal(struct imap_parser *p, bool literal8, bool *message)
{
	*message = false;
	if (!p->authenticated || !p->is_append)
		return true;
	if (p->depth == 0) {
		*message = p->cmd->args.n >= 1;
		return true;
	}
	if (!in_utf8_data(p))
		return true;
	if (!p->utf8)
		return fail(p, "APPEND's UTF8 data needs ENABLE UTF8=ACCEPT first");
	if (!literal8)
		return fail(p, "APPEND's UTF8 data is a literal8 ~{n}");
	*message = true;
	return true;
}

/* "{n}" or "{n+}" at s[i], which must end the line part; literal8 when
 * it came after "~" (RFC 3516 §4.2: may hold NUL, APPEND's message only). */
static enum line_result parse_literal_start(struct imap_parser *p, const char *s, size_t n,
					    size_t i, bool literal8)
{
	uint64_t size;
	bool plus;
	if (!literal_announcement(s + i, n - i, &size, &plus)) {
		fail(p, "Invalid literal (must be {n} or {n+} at the end of the line)");
		return LR_ERROR;
	}
	bool message;
	if (!append_message_literal(p, literal8, &message))
		return LR_ERROR;
	bool sunk = message && p->have_sink;
	if (literal8 && !sunk) {
		fail(p, "A literal8 ~{n} is only allowed for APPEND's message");
		return LR_ERROR;
	}
	uint64_t limit = lim_literal(p);
	if (sunk)
		limit = p->append_max;
	else if (message && p->append_max < limit)
		limit = p->append_max;
	/* RFC 7888 LITERAL+: a {n+} has the limits of a {n}; one over them
	 * is refused and its octets skipped (PS_SKIP_LITERAL), never held */
	if (size > limit) {
		fail(p, "[TOOBIG] Literal too big (at most %llu octets)", (unsigned long long)limit);
		return LR_ERROR;
	}
	if (!sunk && !charge(p, size + 1))
		return LR_ERROR;
	struct imap_arg *a = add_arg(p, IMAP_ARG_LITERAL);
	if (!a)
		return LR_ERROR;
	a->literal_size = size;
	a->literal_sync = !plus;
	a->literal8 = literal8;
	a->sunk = sunk;
	if (!sunk) {
		a->str = xmalloc((size_t)size + 1);
		a->len = (size_t)size;
		a->str[0] = '\0';
	}
	/* RFC 3502 MULTIAPPEND: the sink learns where each message begins */
	if (sunk && p->sink.start && p->sink.start(p->sink.arg, p->cmd) != 0)
		a->sink_failed = true;
	p->lit = a;
	p->lit_have = 0;
	p->tok = TOK_AFTER_ELEM;
	return LR_LITERAL;
}

/* ---- a line part ---------------------------------------------------------------- */

static enum line_result parse_line(struct imap_parser *p, const char *s, size_t n)
{
	size_t i = 0;
	if (!p->cmd && !parse_start(p, s, n, &i))
		return LR_ERROR;
	while (i < n) {
		unsigned char c = (unsigned char)s[i];
		if (p->tok == TOK_AFTER_ELEM) {
			if (c == ' ') {
				p->tok = TOK_AFTER_SP;
				i++;
			} else if (c == ')') {
				if (!close_list(p))
					return LR_ERROR;
				i++;
			} else {
				fail_octet(p, c, "where a space was expected");
				return LR_ERROR;
			}
			continue;
		}
		bool ok;
		switch (c) {
		case '(':
			ok = open_list(p);
			i++;
			break;
		case ')':
			ok = close_list(p);
			i++;
			break;
		case '"':
			ok = parse_quoted(p, s, n, &i);
			break;
		case '{':
			return parse_literal_start(p, s, n, i, false);
		case '~':
			if (i + 1 < n && s[i + 1] == '{')
				return parse_literal_start(p, s, n, i + 1, true);
			ok = parse_atom(p, s, n, &i);
			break;
		default:
			ok = parse_atom(p, s, n, &i);
			break;
		}
		if (!ok)
			return LR_ERROR;
	}
	if (p->tok == TOK_AFTER_SP) {
		fail(p, "Unexpected space at the end of the line");
		return LR_ERROR;
	}
	if (p->depth > 0) {
		fail(p, "Missing ')'");
		return LR_ERROR;
	}
	return LR_DONE;
}

/* ---- reading ---------------------------------------------------------------------- */

/* Raise the error: remember the tag, forget the command, go on with next
 * (which skips what is left of the command, or reads the next one). */
static enum imap_parse_status bad(struct imap_parser *p, enum parse_state next)
{
	if (p->cmd && p->cmd->tag[0]) {
		memcpy(p->err.tag, p->cmd->tag, sizeof(p->err.tag));
		p->err.has_tag = true;
	}
	drop_command(p);
	p->state = next;
	p->tail_len = 0;
	return IMAP_PARSE_ERROR;
}

/* The tag at the start of an over-long first line part, if it is one. */
static void peek_tag(struct imap_parser *p, struct evbuffer *in)
{
	char head[IMAP_TAG_MAX + 1];
	ev_ssize_t got = evbuffer_copyout(in, head, sizeof(head));
	size_t t = 0;
	while (got > 0 && t < (size_t)got && is_tag_char((unsigned char)head[t]))
		t++;
	if (t == 0 || t > IMAP_TAG_MAX || t >= (size_t)got || head[t] != ' ')
		return;
	memcpy(p->err.tag, head, t);
	p->err.tag[t] = '\0';
	p->err.has_tag = true;
}

static bool lf_within(struct evbuffer *in, size_t within)
{
	struct evbuffer_ptr end;
	if (evbuffer_ptr_set(in, &end, within, EVBUFFER_PTR_SET) < 0)
		return false;
	struct evbuffer_ptr lf = evbuffer_search_range(in, "\n", 1, NULL, &end);
	return lf.pos >= 0;
}

/* Keep the last IMAP_TAIL_MAX octets of the line part being skipped,
 * given that its next upto octets are at the head of in. */
static void remember_tail(struct imap_parser *p, struct evbuffer *in, size_t upto)
{
	size_t k = upto < IMAP_TAIL_MAX ? upto : IMAP_TAIL_MAX;
	size_t keep = IMAP_TAIL_MAX - k;
	if (keep > p->tail_len)
		keep = p->tail_len;
	memmove(p->tail, p->tail + p->tail_len - keep, keep);
	struct evbuffer_ptr from;
	if (k > 0 && (evbuffer_ptr_set(in, &from, upto - k, EVBUFFER_PTR_SET) < 0 ||
		      evbuffer_copyout_from(in, &from, p->tail + keep, k) != (ev_ssize_t)k))
		fatal("imap_parse: evbuffer_copyout_from failed");
	p->tail_len = keep + k;
}

/* Drop the rest of a line part of a bad command; true at its end. */
static bool skip_line(struct imap_parser *p, struct evbuffer *in)
{
	size_t avail = evbuffer_get_length(in);
	struct evbuffer_ptr lf = evbuffer_search(in, "\n", 1, NULL);
	size_t upto = lf.pos < 0 ? avail : (size_t)lf.pos;
	remember_tail(p, in, upto);
	if (lf.pos < 0) {
		evbuffer_drain(in, avail);
		return false;
	}
	evbuffer_drain(in, upto + 1);
	uint64_t size;
	if (ends_in_plus_literal(p->tail, p->tail_len, &size)) {
		p->skip_left = size;
		p->state = PS_SKIP_LITERAL;
	} else {
		p->state = PS_LINE;
	}
	p->tail_len = 0;
	return true;
}

/* Octets of the literal being read; true when it is complete. */
static bool read_literal(struct imap_parser *p, struct evbuffer *in)
{
	struct imap_arg *a = p->lit;
	uint64_t left = a->literal_size - p->lit_have;
	size_t avail;
	while (left > 0 && (avail = evbuffer_get_length(in)) > 0) {
		size_t k = avail < left ? avail : (size_t)left;
		if (a->sunk) {
			/* hand the first contiguous chunk over without copying */
			struct evbuffer_iovec v;
			if (evbuffer_peek(in, (ev_ssize_t)k, NULL, &v, 1) < 1 || v.iov_len == 0)
				fatal("imap_parse: evbuffer_peek failed");
			if (v.iov_len < k)
				k = v.iov_len;
			if (memchr(v.iov_base, '\0', k))
				a->literal_nul = true;
			if (!a->sink_failed && p->sink.write(p->sink.arg, v.iov_base, k) != 0)
				a->sink_failed = true;
			evbuffer_drain(in, k);
		} else if (evbuffer_remove(in, a->str + p->lit_have, k) != (int)k) {
			fatal("imap_parse: evbuffer_remove failed");
		}
		p->lit_have += k;
		left -= k;
	}
	return left == 0;
}

/* The literal is complete: an in-memory one may not carry NUL (RFC 3501
 * §4.3), so that every str is a C string the session may use as such. */
static bool finish_literal(struct imap_parser *p)
{
	struct imap_arg *a = p->lit;
	p->lit = NULL;
	if (a->sunk)
		return true;
	a->str[a->len] = '\0';
	if (memchr(a->str, '\0', a->len))
		return fail(p, "NUL octet in literal");
	return true;
}

/* Storage for a line part of need octets (its NUL included, at most
 * IMAP_LINE_MAX + 1).  What it held before is not kept. */
static void line_reserve(struct imap_parser *p, size_t need)
{
	if (need > IMAP_LINE_MAX + 1)
		fatal("imap_parse: a line part of %zu octets over the limit", need);
	if (need <= p->line_cap)
		return;
	size_t cap = (need + IMAP_LINE_STEP - 1) / IMAP_LINE_STEP * IMAP_LINE_STEP;
	free(p->line);
	p->line = xmalloc(cap);
	p->line_cap = cap;
}

/* A line part is parsed: large storage goes back (IMAP_LINE_KEEP). */
static void line_release(struct imap_parser *p)
{
	if (p->line_cap <= IMAP_LINE_KEEP)
		return;
	free(p->line);
	p->line = NULL;
	p->line_cap = 0;
}

static enum imap_parse_status read_line_part(struct imap_parser *p, struct evbuffer *in,
					     struct imap_command **out, bool *again)
{
	*again = false;
	/* An over-long line part is caught here rather than by linebuf, so
	 * that its end can still be seen: "{n+}" there announces n octets
	 * that belong to the bad command and must be skipped too. */
	size_t limit = lim_line(p);
	if (evbuffer_get_length(in) >= limit && !lf_within(in, limit)) {
		/* what linebuf learnt about the buffer is about to be drained */
		linebuf_reset(&p->lb);
		if (!p->cmd)
			peek_tag(p, in);
		fail(p, "Command line too long (at most %zu octets between literals)", limit);
		return bad(p, PS_SKIP_LINE);
	}
	size_t n;
	enum linebuf_status st = linebuf_peek(&p->lb, in, limit, &n);
	if (st == LINEBUF_NEED_MORE)
		return IMAP_PARSE_NEED_MORE;
	if (st == LINEBUF_TOO_LONG) {
		/* not reached: checked above */
		fail(p, "Command line too long (at most %zu octets between literals)", limit);
		return bad(p, PS_LINE);
	}
	struct linebuf_line l;
	line_reserve(p, n + 1);
	linebuf_take(&p->lb, in, n, p->line, p->line_cap, &l);
	uint64_t size;
	enum line_result lr = parse_line(p, l.data, l.len);
	bool plus_tail = lr == LR_ERROR && ends_in_plus_literal(l.data, l.len, &size);
	/* before login a line may hold a password (LOGIN, AUTHENTICATE's
	 * initial response): no copy stays behind in the parser */
	if (!p->authenticated)
		explicit_bzero(p->line, l.len);
	line_release(p);
	switch (lr) {
	case LR_DONE:
		*out = p->cmd;
		p->cmd = NULL;
		drop_command(p);
		return IMAP_PARSE_COMMAND;
	case LR_LITERAL:
		p->state = PS_LITERAL;
		if (p->lit->literal_sync)
			return IMAP_PARSE_CONTINUE;
		*again = true;
		return IMAP_PARSE_NEED_MORE;
	case LR_ERROR:
	default:
		if (plus_tail) {
			p->skip_left = size;
			return bad(p, PS_SKIP_LITERAL);
		}
		return bad(p, PS_LINE);
	}
}

enum imap_parse_status imap_parse_feed(struct imap_parser *p, struct evbuffer *in,
				       struct imap_command **out)
{
	*out = NULL;
	memset(&p->err, 0, sizeof(p->err));
	for (;;) {
		switch (p->state) {
		case PS_SKIP_LITERAL: {
			size_t avail = evbuffer_get_length(in);
			size_t k = avail < p->skip_left ? avail : (size_t)p->skip_left;
			evbuffer_drain(in, k);
			p->skip_left -= k;
			if (p->skip_left > 0)
				return IMAP_PARSE_NEED_MORE;
			p->state = PS_SKIP_LINE;
			p->tail_len = 0;
			break;
		}
		case PS_SKIP_LINE:
			if (!skip_line(p, in))
				return IMAP_PARSE_NEED_MORE;
			break;
		case PS_LITERAL:
			if (!read_literal(p, in))
				return IMAP_PARSE_NEED_MORE;
			p->state = PS_LINE;
			if (!finish_literal(p))
				return bad(p, PS_SKIP_LINE);
			break;
		case PS_LINE: {
			bool again;
			enum imap_parse_status st = read_line_part(p, in, out, &again);
			if (!again)
				return st;
			break;
		}
		}
	}
}

/* ---- accessors ----------------------------------------------------------------------- */

const struct imap_arg *imap_args_at(const struct imap_args *args, size_t i)
{
	return args && i < args->n ? &args->v[i] : NULL;
}

const struct imap_args *imap_arg_list(const struct imap_arg *a)
{
	return a && a->type == IMAP_ARG_LIST ? &a->list : NULL;
}

static bool is_atomish(const struct imap_arg *a)
{
	return a && (a->type == IMAP_ARG_ATOM || a->type == IMAP_ARG_NIL);
}

const char *imap_arg_atom(const struct imap_arg *a)
{
	return is_atomish(a) && all_chars(a->str, a->len, is_atom_char) ? a->str : NULL;
}

bool imap_arg_is(const struct imap_arg *a, const char *kw)
{
	const char *s = imap_arg_atom(a);
	return s && strcasecmp(s, kw) == 0;
}

const char *imap_arg_string(const struct imap_arg *a, size_t *len)
{
	if (!a || !a->str || (a->type != IMAP_ARG_QUOTED && a->type != IMAP_ARG_LITERAL))
		return NULL;
	if (len)
		*len = a->len;
	return a->str;
}

const char *imap_arg_astring(const struct imap_arg *a, size_t *len)
{
	if (is_atomish(a) && all_chars(a->str, a->len, is_astring_char)) {
		if (len)
			*len = a->len;
		return a->str;
	}
	return imap_arg_string(a, len);
}

const char *imap_arg_list_mailbox(const struct imap_arg *a, size_t *len)
{
	if (is_atomish(a) && all_chars(a->str, a->len, is_list_char)) {
		if (len)
			*len = a->len;
		return a->str;
	}
	return imap_arg_string(a, len);
}

const char *imap_arg_flag(const struct imap_arg *a)
{
	if (a && a->type == IMAP_ARG_ATOM && a->str[0] == '\\')
		return all_chars(a->str + 1, a->len - 1, is_atom_char) ? a->str : NULL;
	return imap_arg_atom(a);
}

bool imap_arg_is_nil(const struct imap_arg *a)
{
	return a && a->type == IMAP_ARG_NIL;
}

bool imap_arg_u64(const struct imap_arg *a, uint64_t *v)
{
	return a && a->type == IMAP_ARG_ATOM && parse_uint(a->str, a->len, UINT64_MAX, v);
}

bool imap_arg_u32(const struct imap_arg *a, uint32_t *v)
{
	uint64_t r;
	if (!a || a->type != IMAP_ARG_ATOM || !parse_uint(a->str, a->len, UINT32_MAX, &r))
		return false;
	*v = (uint32_t)r;
	return true;
}

const struct imap_section *imap_arg_section(const struct imap_arg *a)
{
	return a && a->type == IMAP_ARG_SECTION ? a->section : NULL;
}

/* ---- sequence sets, RFC 3501 §9 sequence-set; RFC 5182 ---------------------------- */

/* seq-number = nz-number / "*" */
static bool seq_number(const char **sp, uint32_t *v)
{
	const char *s = *sp;
	if (*s == '*') {
		*v = IMAP_SEQ_STAR;
		*sp = s + 1;
		return true;
	}
	size_t n = 0;
	while (is_digit((unsigned char)s[n]))
		n++;
	uint64_t r;
	if (n == 0 || s[0] == '0' || !parse_uint(s, n, UINT32_MAX, &r))
		return false;
	*v = (uint32_t)r;
	*sp = s + n;
	return true;
}

/* Add a:b, merging it into the last range when they touch (neither with
 * "*"), so that "1,2,3,...,100000" stays one range. */
static bool seqset_add(struct imap_seqset *set, uint32_t a, uint32_t b)
{
	struct imap_seq_range r;
	if (a == IMAP_SEQ_STAR) {
		r.lo = b;
		r.hi = IMAP_SEQ_STAR;
	} else if (b == IMAP_SEQ_STAR) {
		r.lo = a;
		r.hi = IMAP_SEQ_STAR;
	} else {
		r.lo = a < b ? a : b;
		r.hi = a < b ? b : a;
	}
	if (set->n > 0 && r.lo != IMAP_SEQ_STAR && r.hi != IMAP_SEQ_STAR) {
		struct imap_seq_range *last = &set->ranges[set->n - 1];
		if (last->lo != IMAP_SEQ_STAR && last->hi != IMAP_SEQ_STAR &&
		    (uint64_t)r.lo <= (uint64_t)last->hi + 1 && (uint64_t)r.hi + 1 >= last->lo) {
			if (r.lo < last->lo)
				last->lo = r.lo;
			if (r.hi > last->hi)
				last->hi = r.hi;
			return true;
		}
	}
	if (set->n >= IMAP_SEQSET_RANGES_MAX)
		return false;
	*(struct imap_seq_range *)xgrow(&set->ranges, &set->n, &set->cap, sizeof(r)) = r;
	return true;
}

void imap_seqset_clear(struct imap_seqset *set)
{
	free(set->ranges);
	memset(set, 0, sizeof(*set));
}

bool imap_parse_seqset(const char *atom, struct imap_seqset *set, char *err, size_t errsz)
{
	memset(set, 0, sizeof(*set));
	if (!atom || !*atom) {
		errfmt(err, errsz, "Empty sequence set");
		return false;
	}
	if (strcmp(atom, "$") == 0) {
		set->saved = true;
		return true;
	}
	const char *s = atom;
	for (;;) {
		uint32_t a, b;
		if (!seq_number(&s, &a))
			goto bad;
		b = a;
		if (*s == ':' && (s++, !seq_number(&s, &b)))
			goto bad;
		if (!seqset_add(set, a, b)) {
			imap_seqset_clear(set);
			errfmt(err, errsz, "Sequence set has too many ranges (at most %d)",
			       IMAP_SEQSET_RANGES_MAX);
			return false;
		}
		if (*s == '\0')
			return true;
		if (*s++ != ',')
			goto bad;
	}
bad:
	imap_seqset_clear(set);
	errfmt(err, errsz, "Invalid sequence set");
	return false;
}

static int range_cmp(const void *x, const void *y)
{
	const struct imap_seq_range *a = x, *b = y;
	return a->lo < b->lo ? -1 : a->lo > b->lo;
}

void imap_seqset_resolve(struct imap_seqset *set, uint32_t max)
{
	size_t n = 0;
	for (size_t i = 0; i < set->n; i++) {
		uint32_t lo = set->ranges[i].lo == IMAP_SEQ_STAR ? max : set->ranges[i].lo;
		uint32_t hi = set->ranges[i].hi == IMAP_SEQ_STAR ? max : set->ranges[i].hi;
		if (lo > hi) {
			uint32_t t = lo;
			lo = hi;
			hi = t;
		}
		if (hi == 0)
			continue; /* "*" in an empty mailbox */
		if (lo == 0)
			lo = 1;
		set->ranges[n].lo = lo;
		set->ranges[n].hi = hi;
		n++;
	}
	set->n = n;
	if (n == 0)
		return;
	qsort(set->ranges, n, sizeof(*set->ranges), range_cmp);
	size_t out = 0;
	for (size_t i = 1; i < n; i++) {
		struct imap_seq_range *last = &set->ranges[out];
		if ((uint64_t)set->ranges[i].lo <= (uint64_t)last->hi + 1) {
			if (set->ranges[i].hi > last->hi)
				last->hi = set->ranges[i].hi;
		} else {
			set->ranges[++out] = set->ranges[i];
		}
	}
	set->n = out + 1;
}

bool imap_seqset_contains(const struct imap_seqset *set, uint32_t n)
{
	size_t lo = 0, hi = set->n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		const struct imap_seq_range *r = &set->ranges[mid];
		if (n < r->lo)
			hi = mid;
		else if (n > r->hi)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}
