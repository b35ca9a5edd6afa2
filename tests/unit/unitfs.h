/* unitfs: small file-system helpers shared by the unit tests that work in
 * a temporary folder (Maildirs, the spool).  Header-only: every test
 * program is one .c file linked with the library objects.  Include after
 * <cmocka.h>. */
#ifndef POSTHORN_UNITFS_H
#define POSTHORN_UNITFS_H

#include <dirent.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "lib/util.h"

static inline int unitfs_rm_entry(const char *path, const struct stat *st, int flag,
				  struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	return remove(path);
}

/* Remove dir and everything below it; 0 or -1. */
static inline int rm_tree(const char *dir)
{
	return nftw(dir, unitfs_rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* The whole file (NUL-terminated, *len bytes), or NULL when it cannot be
 * opened. */
static inline char *read_file(const char *path, size_t *len)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return NULL;
	struct stat st;
	assert_int_equal(fstat(fd, &st), 0);
	char *buf = xmalloc((size_t)st.st_size + 1);
	assert_int_equal(read(fd, buf, (size_t)st.st_size), st.st_size);
	buf[st.st_size] = '\0';
	close(fd);
	*len = (size_t)st.st_size;
	return buf;
}

static inline void write_file(const char *path, const char *data, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write_all(fd, data, len), 0);
	assert_int_equal(close(fd), 0);
}

/* Names in a folder, "." and ".." excluded; *n set. */
static inline char **list_dir(const char *dir, size_t *n)
{
	char **names = NULL;
	*n = 0;
	DIR *d = opendir(dir);
	if (!d)
		return NULL;
	struct dirent *de;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") != 0 && strcmp(de->d_name, "..") != 0) {
			char **slot = xappend(&names, n, sizeof *slot);
			*slot = xstrdup(de->d_name);
		}
	closedir(d);
	return names;
}

static inline void free_names(char **names, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(names[i]);
	free(names);
}

static inline size_t count_entries(const char *dir)
{
	size_t n;
	char **names = list_dir(dir, &n);
	free_names(names, n);
	return n;
}

/* The one message in <maildir>/new; NULL when there is not exactly one. */
static inline char *only_message(const char *maildir, size_t *len)
{
	char *newdir = xasprintf("%s/new", maildir);
	size_t n;
	char **names = list_dir(newdir, &n);
	char *text = NULL;
	if (n == 1) {
		char *p = xasprintf("%s/%s", newdir, names[0]);
		text = read_file(p, len);
		free(p);
	}
	free_names(names, n);
	free(newdir);
	return text;
}

/* Everything run(arg) writes to standard error, as a string the caller
 * frees (the log lines a module makes, for instance). */
static inline char *stderr_of(void (*run)(void *), void *arg)
{
	char logpath[] = "/tmp/posthorn-unit-stderr-XXXXXX";
	int fd = mkstemp(logpath);
	assert_true(fd >= 0);
	int saved = dup(STDERR_FILENO);
	assert_true(saved >= 0);
	assert_true(dup2(fd, STDERR_FILENO) >= 0);
	run(arg);
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

#endif
