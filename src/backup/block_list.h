/* The blocks a backup reads: sorted runs of whole repository blocks, built
 * from the byte extents a server reports (allocated data, or dirty areas),
 * each rounded out to the block size, so that a block the extent only cuts
 * is read whole and never missed. Pure logic, unit-tested. */
#ifndef BDF_BACKUP_BLOCK_LIST_H
#define BDF_BACKUP_BLOCK_LIST_H

#include <stddef.h>
#include <stdint.h>

struct block_run {
	uint64_t first; /* block number */
	uint64_t count;
};

struct block_list {
	struct block_run *v;
	size_t n, cap;
	uint64_t blocks; /* sum of the runs' counts */
};

/* Add the blocks that [offset, offset+length) touches, clipped to an image of
 * SIZE bytes. Extents must come in ascending order of offset (as NBD
 * BLOCK_STATUS replies do); a run that touches or overlaps the last one is
 * merged into it. -EINVAL for an extent before the last one or a zero block
 * size; -ENOMEM. */
int block_list_add(struct block_list *l, uint64_t offset, uint64_t length, uint32_t block_size,
		   uint64_t size);
void block_list_free(struct block_list *l);

/* The number of blocks of BLOCK_SIZE in an image of SIZE bytes (the last one
 * may be partial). */
uint64_t block_count(uint64_t size, uint32_t block_size);
/* The length of block B: BLOCK_SIZE, or what is left at the end. */
uint32_t block_length(uint64_t b, uint64_t size, uint32_t block_size);

#endif
