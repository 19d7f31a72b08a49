/* The chunks a repository holds, by id: an open-addressing hash table,
 * thread-safe (one mutex: lookups are a few per 64 KiB block read). Pure
 * logic, unit-tested. */
#ifndef BDF_BACKUP_CHUNK_TABLE_H
#define BDF_BACKUP_CHUNK_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backup/repo2.h"

struct chunk_table *chunk_table_new(void);
void chunk_table_free(struct chunk_table *t);
size_t chunk_table_count(struct chunk_table *t);

/* Insert or replace ID's location. -ENOMEM. */
int chunk_table_put(struct chunk_table *t, const uint8_t id[CHUNK_ID_LEN], const struct chunk_loc *loc);
/* 0 and *LOC, or -ENOENT. */
int chunk_table_get(struct chunk_table *t, const uint8_t id[CHUNK_ID_LEN], struct chunk_loc *loc);
/* Insert ID as pending (loc.pack = CHUNK_PENDING) unless present: true if
 * it was inserted. On -ENOMEM it says false after printing nothing: the
 * caller stores the chunk anyway (a duplicate costs space, not data). */
bool chunk_table_claim(struct chunk_table *t, const uint8_t id[CHUNK_ID_LEN]);
/* Call FN for every entry (under the lock: FN must not call back in). */
void chunk_table_each(struct chunk_table *t, void (*fn)(void *opaque, const uint8_t id[CHUNK_ID_LEN],
							   const struct chunk_loc *loc),
		      void *opaque);

#endif
