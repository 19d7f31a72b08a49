/* store_tool: the object store's operations from the command line, for the
 * tests of its backends (tests/functional/store-s3.sh). It opens the S3
 * backend directly (store_s3_open), since that is what it tests.
 *
 *   store_tool URL put KEY FILE          the file's bytes as object KEY
 *   store_tool URL get KEY               the object on stdout
 *   store_tool URL get-range KEY OFF LEN
 *   store_tool URL del KEY
 *   store_tool URL list PREFIX           "KEY SIZE" lines, sorted
 *   store_tool URL lock MODE             read|append|prune: "locked" on stdout
 *                                        once held, released when stdin closes
 *   store_tool URL put-many PREFIX N THREADS   PREFIX/00000.. from THREADS threads
 *   store_tool URL get-many PREFIX N THREADS   the same read back by ranges, checked
 *
 * Exit status: 0 done, 2 the object is absent, 1 any other error (the store
 * printed why). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backup/store.h"

static int status_of(int ret)
{
	return ret == 0 ? 0 : ret == -ENOENT ? 2 : 1;
}

static int write_out(const void *buf, size_t len)
{
	if (fwrite(buf, 1, len, stdout) != len || fflush(stdout)) {
		perror("store_tool: stdout");
		return 1;
	}
	return 0;
}

static void *read_file(const char *path, size_t *len)
{
	FILE *f = fopen(path, "rb");
	size_t cap = 1 << 16, n = 0, r;
	char *buf = malloc(cap);

	if (!f || !buf) {
		perror(path);
		free(buf);
		if (f)
			fclose(f);
		return NULL;
	}
	while ((r = fread(buf + n, 1, cap - n, f)) > 0) {
		n += r;
		if (n == cap) {
			char *b = realloc(buf, cap *= 2);

			if (!b) {
				free(buf);
				fclose(f);
				return NULL;
			}
			buf = b;
		}
	}
	fclose(f);
	*len = n;
	return buf;
}

struct entry {
	char *key;
	uint64_t size;
};
struct listing {
	struct entry *e;
	size_t n;
};

static int collect(void *opaque, const char *key, uint64_t size)
{
	struct listing *l = opaque;
	struct entry *e = realloc(l->e, (l->n + 1) * sizeof(*e));

	if (!e)
		return -ENOMEM;
	l->e = e;
	e[l->n].key = strdup(key);
	e[l->n].size = size;
	if (!e[l->n].key)
		return -ENOMEM;
	l->n++;
	return 0;
}

static int cmp_entry(const void *a, const void *b)
{
	return strcmp(((const struct entry *)a)->key, ((const struct entry *)b)->key);
}

struct many {
	struct store *s;
	const char *prefix;
	int n, threads, index;
	bool get;
	int ret;
	pthread_mutex_t mu;
};

static void *many_worker(void *opaque)
{
	struct many *m = opaque;

	for (;;) {
		char key[512], want[600], got[600];
		int i, ret;

		pthread_mutex_lock(&m->mu);
		i = m->ret ? m->n : m->index++;
		pthread_mutex_unlock(&m->mu);
		if (i >= m->n)
			break;
		snprintf(key, sizeof(key), "%s/%05d", m->prefix, i);
		int wl = snprintf(want, sizeof(want), "object %05d of %s\n", i, m->prefix);

		if (!m->get) {
			ret = store_put(m->s, key, want, (size_t)wl);
		} else {
			/* A range to the object's end, from past its start. */
			ret = store_get_range(m->s, key, 7, (size_t)wl - 7, got + 7);
			if (!ret && memcmp(got + 7, want + 7, (size_t)wl - 7)) {
				fprintf(stderr, "store_tool: %s: wrong content\n", key);
				ret = -EIO;
			}
		}
		if (ret) {
			pthread_mutex_lock(&m->mu);
			if (!m->ret)
				m->ret = ret;
			pthread_mutex_unlock(&m->mu);
		}
	}
	return NULL;
}

static int do_many(struct store *s, bool get, const char *prefix, int n, int threads)
{
	struct many m = {.s = s, .prefix = prefix, .n = n, .threads = threads, .get = get};
	pthread_t t[64];

	if (threads < 1 || threads > 64 || n < 0)
		return -EINVAL;
	pthread_mutex_init(&m.mu, NULL);
	for (int i = 0; i < threads; i++)
		pthread_create(&t[i], NULL, many_worker, &m);
	for (int i = 0; i < threads; i++)
		pthread_join(t[i], NULL);
	pthread_mutex_destroy(&m.mu);
	return m.ret;
}

static int usage(void)
{
	fprintf(stderr, "usage: store_tool URL put KEY FILE | get KEY | get-range KEY OFF LEN | del KEY |\n"
			"                  list PREFIX | lock read|append|prune |\n"
			"                  put-many PREFIX N THREADS | get-many PREFIX N THREADS\n");
	return 1;
}

int main(int argc, char **argv)
{
	struct store *s;
	const char *cmd;
	int ret, rc = 0;

	if (argc < 3)
		return usage();
	cmd = argv[2];
	ret = store_s3_open(argv[1], false, &s);
	if (ret)
		return 1;

	if (!strcmp(cmd, "put") && argc == 5) {
		size_t len;
		void *buf = read_file(argv[4], &len);

		ret = buf ? store_put(s, argv[3], buf, len) : -EIO;
		free(buf);
		rc = status_of(ret);
	} else if (!strcmp(cmd, "get") && argc == 4) {
		void *buf;
		size_t len;

		ret = store_get(s, argv[3], &buf, &len);
		if (!ret) {
			rc = write_out(buf, len);
			free(buf);
		} else {
			rc = status_of(ret);
		}
	} else if (!strcmp(cmd, "get-range") && argc == 6) {
		uint64_t off = strtoull(argv[4], NULL, 10);
		size_t len = strtoull(argv[5], NULL, 10);
		void *buf = malloc(len ? len : 1);

		ret = buf ? store_get_range(s, argv[3], off, len, buf) : -ENOMEM;
		rc = ret ? status_of(ret) : write_out(buf, len);
		free(buf);
	} else if (!strcmp(cmd, "del") && argc == 4) {
		rc = status_of(store_del(s, argv[3]));
	} else if (!strcmp(cmd, "list") && argc == 4) {
		struct listing l = {0};

		ret = store_list(s, argv[3], collect, &l);
		if (!ret) {
			if (l.n)
				qsort(l.e, l.n, sizeof(*l.e), cmp_entry);
			for (size_t i = 0; i < l.n; i++)
				printf("%s %" PRIu64 "\n", l.e[i].key, l.e[i].size);
		}
		for (size_t i = 0; i < l.n; i++)
			free(l.e[i].key);
		free(l.e);
		rc = status_of(ret);
	} else if (!strcmp(cmd, "lock") && argc == 4) {
		enum store_lock_mode m;
		char buf[256];

		if (!strcmp(argv[3], "read"))
			m = STORE_LOCK_READ;
		else if (!strcmp(argv[3], "append"))
			m = STORE_LOCK_APPEND;
		else if (!strcmp(argv[3], "prune"))
			m = STORE_LOCK_PRUNE;
		else
			return store_close(s), usage();
		ret = store_lock(s, m);
		if (!ret) {
			printf("locked\n");
			fflush(stdout);
			while (read(0, buf, sizeof(buf)) > 0)
				;
			store_unlock(s);
		}
		rc = status_of(ret);
	} else if ((!strcmp(cmd, "put-many") || !strcmp(cmd, "get-many")) && argc == 6) {
		ret = do_many(s, cmd[0] == 'g', argv[3], atoi(argv[4]), atoi(argv[5]));
		rc = status_of(ret);
	} else {
		rc = usage();
	}
	store_close(s);
	return rc;
}
