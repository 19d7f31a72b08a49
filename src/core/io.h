/* Request flags shared by every layer of the data path (exports, filters, backing store).
 * They mean what the Linux block layer means by REQ_FUA, REQ_NOUNMAP and friends. */
#ifndef BDF_CORE_IO_H
#define BDF_CORE_IO_H

#define BDF_FUA       (1u << 0) /* persist before completing */
#define BDF_MAY_TRIM  (1u << 1) /* zero: the range may be deallocated */
#define BDF_FAST_ZERO (1u << 2) /* zero: fail with -ENOTSUP unless faster than writing */
#define BDF_REQ_ONE   (1u << 3) /* extents: one extent is enough */

#define BDF_SECTOR_SIZE 512u

#endif
