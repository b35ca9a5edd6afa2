/* aliases: the optional aliases file, "alias@domain: target1, target2" per
 * line ('#' comments, blank lines ignored).  Targets are addresses, local
 * or remote; an alias may name other aliases. */
#ifndef POSTHORN_ALIASES_H
#define POSTHORN_ALIASES_H

#include <stddef.h>
#include <stdio.h>

struct aliases;

/* A missing file is an error here (the directive names it); errors print
 * as "FILE:LINE:COL: message" on errout (through report(): its owner
 * checks the writes); returns 0 or the error count. */
int aliases_load(const char *path, struct aliases **out, FILE *errout);
void aliases_free(struct aliases *al);

/* Direct targets of address (case-insensitive), or NULL. */
const char *const *aliases_lookup(const struct aliases *al, const char *address, size_t *n);

/* Expand address recursively (depth <= 10, loops broken) into final
 * addresses that are not aliases themselves, de-duplicated, lower case,
 * in breadth-first order.  An address that is no alias expands to itself.
 * Loops add nothing (a pure loop, or aliases nested deeper than 10, can
 * expand to nothing: the count is then 0 and *out NULL).  The caller
 * frees *out with aliases_free_list().  Returns the count. */
size_t aliases_expand(const struct aliases *al, const char *address, char ***out);
void aliases_free_list(char **list, size_t n);

#endif
