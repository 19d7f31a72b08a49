/* The NBD side of a backup: connections to the server (libnbd), what the
 * export says of itself (size; bdfilterd's generation and changes_number in
 * its description), and its extents: allocated data (base:allocation) or
 * changed blocks (a qemu:dirty-bitmap: context). */
#ifndef BDF_BACKUP_SOURCE_H
#define BDF_BACKUP_SOURCE_H

#include <stdint.h>

#include <libnbd.h>

#include "backup/block_list.h"

struct source_info {
	uint64_t size;
	char *description;    /* NULL if the server sent none */
	char *generation;     /* bdfilterd's generation=, or NULL */
	int64_t changes_number; /* bdfilterd's changes_number=, or -1 */
};

/* A connection to URI asking for CONTEXT (may be NULL) besides
 * base:allocation; errors printed, NULL returned. With CONTEXT, a server that
 * does not offer it is an error. */
struct nbd_handle *source_connect(const char *uri, const char *context);
int source_info(struct nbd_handle *h, struct source_info *info);
void source_info_free(struct source_info *info);

/* Add to L the blocks of BLOCK_SIZE holding what CONTEXT marks: with
 * base:allocation, the data (extents without NBD_STATE_ZERO); with a dirty
 * bitmap, the dirty extents. Errors printed. */
int source_blocks(struct nbd_handle *h, const char *uri, const char *context, uint64_t size,
		  uint32_t block_size, struct block_list *l);

/* "NAME" -> "qemu:dirty-bitmap:NAME"; a full context name is kept. */
char *source_bitmap_context(const char *name);

#endif
