/* Where a version 2 repository keeps its bytes: an object store of named
 * objects ("repo.json", "packs/3f/3f8a...", "backups/000012.json") that are
 * written whole, read whole or by range, listed by prefix and deleted. Two
 * backends: a local directory (store_dir.c: one file per object) and S3
 * (store_s3.c). The repository format (repo2.c) knows nothing of either.
 *
 * Keys are relative, made of [A-Za-z0-9._-] and '/', never empty, never
 * starting with '/' or '.', never holding "..". */
#ifndef BDF_BACKUP_STORE_H
#define BDF_BACKUP_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct store;

enum store_lock_mode {
	/* Reading (list, restore, verify, serve, mount): many at once, and
	 * beside one APPEND; not while a PRUNE holds the repository. */
	STORE_LOCK_READ,
	/* Adding a backup: one at a time, readers welcome. */
	STORE_LOCK_APPEND,
	/* Removing objects (prune, gc): alone. */
	STORE_LOCK_PRUNE,
};

/* The key and its size, for store_list. Return nonzero to stop (returned). */
typedef int (*store_list_fn)(void *opaque, const char *key, uint64_t size);

struct store_ops {
	/* The whole object into a new buffer (malloc'd). -ENOENT if absent. */
	int (*get)(struct store *s, const char *key, void **buf, size_t *len);
	/* LEN bytes at OFFSET into BUF; -ENOENT if absent, -EIO (message
	 * printed) if the object is shorter. */
	int (*get_range)(struct store *s, const char *key, uint64_t offset, size_t len, void *buf);
	/* Store the object, replacing one of that key: all or nothing, and on
	 * stable storage (or acknowledged by the server) before it returns. */
	int (*put)(struct store *s, const char *key, const void *buf, size_t len);
	/* The same, all or nothing, but durable only after the next sync:
	 * for many objects written at once (a backup's packs). NULL: put. */
	int (*put_nosync)(struct store *s, const char *key, const void *buf, size_t len);
	/* Every put_nosync before it is on stable storage. NULL: nothing to do. */
	int (*sync)(struct store *s);
	/* Remove the object; 0 also if it was absent. */
	int (*del)(struct store *s, const char *key);
	/* Every object whose key starts with PREFIX ("" for all), in no
	 * particular order. */
	int (*list)(struct store *s, const char *prefix, store_list_fn fn, void *opaque);
	/* Take the repository's lock, without waiting: -EBUSY (message printed,
	 * naming who holds it if the backend knows) if it is held in a mode
	 * that excludes MODE. Released by unlock or close (and by the process
	 * dying, or for S3 by the lock going stale). */
	int (*lock)(struct store *s, enum store_lock_mode mode);
	void (*unlock)(struct store *s);
	void (*close)(struct store *s);
};

struct store {
	const struct store_ops *ops;
	char *url; /* as the user wrote it, for messages */
};

/* Open the store URL names: "s3://BUCKET/PREFIX" (store_s3.c), else a
 * directory path (store_dir.c). With CREATE a missing directory is made
 * (a bucket is never made). Errors printed, negative errno returned. */
int store_open(const char *url, bool create, struct store **out);

/* Is URL an S3 one? */
bool store_is_s3(const char *url);

/* The backends; store_open picks one. */
int store_dir_open(const char *path, bool create, struct store **out);
int store_s3_open(const char *url, bool create, struct store **out);

/* Is KEY a key as described above? */
bool store_key_valid(const char *key);

static inline int store_get(struct store *s, const char *key, void **buf, size_t *len)
{
	return s->ops->get(s, key, buf, len);
}
static inline int store_get_range(struct store *s, const char *key, uint64_t offset, size_t len, void *buf)
{
	return s->ops->get_range(s, key, offset, len, buf);
}
static inline int store_put(struct store *s, const char *key, const void *buf, size_t len)
{
	return s->ops->put(s, key, buf, len);
}
static inline int store_put_nosync(struct store *s, const char *key, const void *buf, size_t len)
{
	return s->ops->put_nosync ? s->ops->put_nosync(s, key, buf, len) : s->ops->put(s, key, buf, len);
}
static inline int store_sync(struct store *s)
{
	return s->ops->sync ? s->ops->sync(s) : 0;
}
static inline int store_del(struct store *s, const char *key)
{
	return s->ops->del(s, key);
}
static inline int store_list(struct store *s, const char *prefix, store_list_fn fn, void *opaque)
{
	return s->ops->list(s, prefix, fn, opaque);
}
static inline int store_lock(struct store *s, enum store_lock_mode mode)
{
	return s->ops->lock(s, mode);
}
static inline void store_unlock(struct store *s)
{
	s->ops->unlock(s);
}
static inline void store_close(struct store *s)
{
	if (s)
		s->ops->close(s);
}

#endif
