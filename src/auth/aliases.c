/* aliases: the optional aliases file, "alias@domain: target1, target2" per
 * line, and its recursive expansion into final recipient addresses.
 * Addresses are compared case-insensitively and kept in lower case. */
#include "auth/aliases.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/types.h>

#include "lib/log.h"
#include "auth/userdb.h"
#include "lib/util.h"

enum {
	ALIASES_MAX_DEPTH = 10,         /* alias expansions along one chain */
	ALIASES_LINE_MAX = 65536,       /* bytes in one line, line end excluded */
	ALIASES_MESSAGE_MAX = 8192,     /* one parse error, FILE:LINE:COL aside */
};

struct aliases_entry {
	char *alias;            /* lower case */
	char **targets;         /* lower case, NULL-terminated */
	size_t ntargets;
	unsigned line, col;     /* where the alias is defined */
};

struct aliases {
	struct aliases_entry *entries; /* sorted by alias */
	size_t n, cap;
};

/* Where parsing stands, for "FILE:LINE:COL: message". */
struct aliases_parse {
	const char *path;
	unsigned line;
	const char *start;      /* the line's first byte */
	FILE *errout;
	int errors;
};

static void aliases_error(struct aliases_parse *p, const char *at, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void aliases_error(struct aliases_parse *p, const char *at, const char *fmt, ...)
{
	char msg[ALIASES_MESSAGE_MAX];
	va_list ap;
	va_start(ap, fmt);
	verrfmt(msg, sizeof msg, fmt, ap); /* a cut message ends in "..." */
	va_end(ap);
	report(p->errout, "%s:%u:%u: %s\n", p->path, p->line, (unsigned)(at - p->start) + 1, msg);
	p->errors++;
}

/* ---- the table -------------------------------------------------------- */

static void aliases_entry_clear(struct aliases_entry *e)
{
	for (size_t i = 0; i < e->ntargets; i++)
		free(e->targets[i]);
	free(e->targets);
	free(e->alias);
	memset(e, 0, sizeof *e);
}

void aliases_free(struct aliases *al)
{
	if (!al)
		return;
	for (size_t i = 0; i < al->n; i++)
		aliases_entry_clear(&al->entries[i]);
	free(al->entries);
	free(al);
}

static struct aliases_entry *aliases_grow(struct aliases *al)
{
	return xgrow(&al->entries, &al->n, &al->cap, sizeof *al->entries);
}

static int aliases_entry_cmp(const void *a, const void *b)
{
	const struct aliases_entry *x = a, *y = b;
	return strcasecmp(x->alias, y->alias);
}

static int aliases_key_cmp(const void *key, const void *elem)
{
	const struct aliases_entry *e = elem;
	return strcasecmp(key, e->alias);
}

static const struct aliases_entry *aliases_find(const struct aliases *al, const char *address)
{
	if (!al || al->n == 0)
		return NULL;
	return bsearch(address, al->entries, al->n, sizeof *al->entries, aliases_key_cmp);
}

const char *const *aliases_lookup(const struct aliases *al, const char *address, size_t *n)
{
	const struct aliases_entry *e = aliases_find(al, address);
	if (n)
		*n = e ? e->ntargets : 0;
	return e ? (const char *const *)e->targets : NULL;
}

/* ---- parsing ---------------------------------------------------------- */

static bool aliases_is_space(char c)
{
	return c == ' ' || c == '\t';
}

static const char *aliases_skip_space(const char *s)
{
	while (aliases_is_space(*s))
		s++;
	return s;
}

/* A copy of the address [s, end) in lower case, or NULL after reporting
 * why it is malformed. */
static char *aliases_address(struct aliases_parse *p, const char *s, const char *end,
			     const char *what)
{
	char *a = str_lower(xstrndup(s, (size_t)(end - s)));
	const char *why = userdb_check_address(a);
	if (!why)
		return a;
	aliases_error(p, s, "invalid %s address \"%s\": %s", what, a, why);
	free(a);
	return NULL;
}

/* Parse the comma-separated targets after the ':' into e. */
static int aliases_parse_targets(struct aliases_parse *p, const char *s,
				 struct aliases_entry *e)
{
	s = aliases_skip_space(s);
	if (*s == '\0') {
		aliases_error(p, s, "alias %s has no targets", e->alias);
		return -1;
	}
	for (;;) {
		const char *t = aliases_skip_space(s);
		const char *end = t + strcspn(t, ",");
		const char *next = end;
		while (end > t && aliases_is_space(end[-1]))
			end--;
		if (end == t) {
			aliases_error(p, t, "empty target");
			return -1;
		}
		char *a = aliases_address(p, t, end, "target");
		if (!a)
			return -1;
		*(char **)xappend(&e->targets, &e->ntargets, sizeof *e->targets) = a;
		if (*next == '\0')
			break;
		s = next + 1;
	}
	/* NULL-terminate for aliases_lookup() callers that prefer it. */
	e->targets = xrealloc(e->targets, (e->ntargets + 1) * sizeof *e->targets);
	e->targets[e->ntargets] = NULL;
	return 0;
}

/* "alias@domain: target1, target2"; blank lines and lines whose first
 * non-blank character is '#' are skipped ('#' elsewhere is an ordinary
 * address character, RFC 5322 atext). */
static void aliases_parse_line(struct aliases_parse *p, struct aliases *al, const char *line)
{
	const char *s = aliases_skip_space(line);
	if (*s == '\0' || *s == '#')
		return;
	const char *key = s;
	while (*s && *s != ':' && !aliases_is_space(*s))
		s++;
	const char *key_end = s;
	s = aliases_skip_space(s);
	if (*s != ':') {
		aliases_error(p, s, *s ? "expected ':' after the alias address"
				       : "missing ':' after the alias address");
		return;
	}
	if (key_end == key) {
		aliases_error(p, key, "missing alias address before ':'");
		return;
	}
	char *alias = aliases_address(p, key, key_end, "alias");
	if (!alias)
		return;
	struct aliases_entry *e = aliases_grow(al);
	e->alias = alias;
	e->line = p->line;
	e->col = (unsigned)(key - line) + 1;
	if (aliases_parse_targets(p, s + 1, e) < 0) {
		aliases_entry_clear(e);
		al->n--;
	}
}

/* After sorting, equal aliases are neighbours; report the later ones. */
static void aliases_check_duplicates(struct aliases_parse *p, const struct aliases *al)
{
	for (size_t i = 1; i < al->n; i++) {
		const struct aliases_entry *a = &al->entries[i - 1], *b = &al->entries[i];
		if (strcmp(a->alias, b->alias) != 0)
			continue;
		const struct aliases_entry *first = a->line < b->line ? a : b;
		const struct aliases_entry *dup = a->line < b->line ? b : a;
		report(p->errout, "%s:%u:%u: duplicate alias %s (first defined on line %u)\n",
		       p->path, dup->line, dup->col, dup->alias, first->line);
		p->errors++;
	}
}

static void aliases_parse_file(struct aliases_parse *p, FILE *fp, struct aliases *al)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;
	while ((n = getline(&line, &cap, fp)) >= 0) {
		size_t len = (size_t)n;
		p->line++;
		p->start = line;
		if (len > 0 && line[len - 1] == '\n')
			line[--len] = '\0';
		if (len > 0 && line[len - 1] == '\r')
			line[--len] = '\0';
		if (memchr(line, '\0', len))
			aliases_error(p, line + strlen(line), "NUL byte in line");
		else if (len > ALIASES_LINE_MAX)
			aliases_error(p, line, "line longer than %d bytes", ALIASES_LINE_MAX);
		else
			aliases_parse_line(p, al, line);
	}
	if (ferror(fp)) {
		report(p->errout, "%s: read error: %s\n", p->path, strerror(errno));
		p->errors++;
	}
	free(line);
}

int aliases_load(const char *path, struct aliases **out, FILE *errout)
{
	*out = NULL;
	FILE *fp = fopen(path, "re");
	if (!fp) {
		report(errout, "%s: cannot open: %s\n", path, strerror(errno));
		return 1;
	}
	struct aliases *al = xcalloc(1, sizeof *al);
	struct aliases_parse p = {.path = path, .errout = errout};
	aliases_parse_file(&p, fp, al);
	(void)fclose(fp); /* read only: what was read is all there is */
	if (al->n > 1) {
		qsort(al->entries, al->n, sizeof *al->entries, aliases_entry_cmp);
		aliases_check_duplicates(&p, al);
	}
	if (p.errors > 0) {
		aliases_free(al);
		return p.errors;
	}
	*out = al;
	return 0;
}

/* ---- expansion -------------------------------------------------------- */

/* The final addresses found so far, possibly with repeats. */
struct aliases_list {
	char **v;
	size_t n;
};

static void aliases_list_add(struct aliases_list *l, const char *address)
{
	*(char **)xappend(&l->v, &l->n, sizeof *l->v) = xstrdup(address);
}

struct aliases_sorted {
	const char *s;
	size_t i;
};

static int aliases_sorted_cmp(const void *a, const void *b)
{
	const struct aliases_sorted *x = a, *y = b;
	int c = strcmp(x->s, y->s);
	if (c != 0)
		return c;
	return x->i < y->i ? -1 : x->i > y->i;
}

/* Drop repeats, keeping each address's first occurrence in place. */
static void aliases_list_dedup(struct aliases_list *l)
{
	if (l->n < 2)
		return;
	struct aliases_sorted *s = xcalloc(l->n, sizeof *s);
	bool *dup = xcalloc(l->n, sizeof *dup);
	for (size_t i = 0; i < l->n; i++)
		s[i] = (struct aliases_sorted){.s = l->v[i], .i = i};
	qsort(s, l->n, sizeof *s, aliases_sorted_cmp);
	for (size_t i = 1; i < l->n; i++)
		dup[s[i].i] = strcmp(s[i - 1].s, s[i].s) == 0;
	size_t k = 0;
	for (size_t i = 0; i < l->n; i++) {
		if (dup[i])
			free(l->v[i]);
		else
			l->v[k++] = l->v[i];
	}
	l->n = k;
	free(dup);
	free(s);
}

static void aliases_warn_depth(const char *root, const char *alias)
{
	char r[LOG_VALUE_MAX], a[LOG_VALUE_MAX];
	log_warn("event=alias-depth address=\"%s\" alias=\"%s\" limit=%d "
		 "msg=\"alias nested too deeply, not expanded\"",
		 log_quote(r, sizeof r, root, strlen(root)),
		 log_quote(a, sizeof a, alias, strlen(alias)), ALIASES_MAX_DEPTH);
}

/* Breadth first, each alias expanded at most once, at its shortest
 * distance from the root.  The result is every address that is not an
 * alias and is reachable through at most ALIASES_MAX_DEPTH expansions.
 * Hence a loop is broken where it closes: an alias met again adds nothing,
 * so a pure loop (a -> b -> a) yields nothing at all, and "a: a, b" yields
 * only b.  An alias still unexpanded at the depth limit is dropped (and
 * logged) rather than delivered as if it were a mailbox. */
static void aliases_walk(const struct aliases *al, const struct aliases_entry *root,
			 const char *root_address, struct aliases_list *l)
{
	struct queued {
		const struct aliases_entry *e;
		unsigned depth;
	} *queue = xcalloc(al->n, sizeof *queue);
	bool *seen = xcalloc(al->n, sizeof *seen);
	size_t head = 0, tail = 0;
	queue[tail++] = (struct queued){root, 0};
	seen[root - al->entries] = true;
	while (head < tail) {
		struct queued q = queue[head++];
		for (size_t i = 0; i < q.e->ntargets; i++) {
			const char *t = q.e->targets[i];
			const struct aliases_entry *e = aliases_find(al, t);
			if (!e)
				aliases_list_add(l, t);
			else if (seen[e - al->entries])
				continue;
			else if (q.depth + 1 >= ALIASES_MAX_DEPTH)
				aliases_warn_depth(root_address, t);
			else {
				seen[e - al->entries] = true;
				queue[tail++] = (struct queued){e, q.depth + 1};
			}
		}
	}
	free(seen);
	free(queue);
}

size_t aliases_expand(const struct aliases *al, const char *address, char ***out)
{
	struct aliases_list l = {NULL, 0};
	char *root = str_lower(xstrdup(address));
	const struct aliases_entry *e = aliases_find(al, root);
	if (e)
		aliases_walk(al, e, root, &l);
	else
		aliases_list_add(&l, root);
	free(root);
	aliases_list_dedup(&l);
	*out = l.v;
	return l.n;
}

void aliases_free_list(char **list, size_t n)
{
	if (!list)
		return;
	for (size_t i = 0; i < n; i++)
		free(list[i]);
	free(list);
}
