/* NBD wire protocol constants and layouts (NetworkBlockDevice/nbd doc/proto.md,
 * including the extended-headers extension). All integers are big-endian. */
#ifndef BDF_NBD_PROTO_H
#define BDF_NBD_PROTO_H

#include <stdint.h>

#define NBD_MAGIC            UINT64_C(0x4e42444d41474943) /* "NBDMAGIC" */
#define NBD_IHAVEOPT         UINT64_C(0x49484156454F5054) /* "IHAVEOPT" */
#define NBD_REP_MAGIC        UINT64_C(0x3e889045565a9)

/* handshake flags (server) and client flags */
#define NBD_FLAG_FIXED_NEWSTYLE   (1u << 0)
#define NBD_FLAG_NO_ZEROES        (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBD_FLAG_C_NO_ZEROES      (1u << 1)

/* transmission flags */
#define NBD_FLAG_HAS_FLAGS            (1u << 0)
#define NBD_FLAG_READ_ONLY            (1u << 1)
#define NBD_FLAG_SEND_FLUSH           (1u << 2)
#define NBD_FLAG_SEND_FUA             (1u << 3)
#define NBD_FLAG_ROTATIONAL           (1u << 4)
#define NBD_FLAG_SEND_TRIM            (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES    (1u << 6)
#define NBD_FLAG_SEND_DF              (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN       (1u << 8)
#define NBD_FLAG_SEND_RESIZE          (1u << 9)
#define NBD_FLAG_SEND_CACHE           (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO       (1u << 11)
#define NBD_FLAG_BLOCK_STATUS_PAYLOAD (1u << 12)

/* options */
#define NBD_OPT_EXPORT_NAME       1
#define NBD_OPT_ABORT             2
#define NBD_OPT_LIST              3
#define NBD_OPT_STARTTLS          5
#define NBD_OPT_INFO              6
#define NBD_OPT_GO                7
#define NBD_OPT_STRUCTURED_REPLY  8
#define NBD_OPT_LIST_META_CONTEXT 9
#define NBD_OPT_SET_META_CONTEXT  10
#define NBD_OPT_EXTENDED_HEADERS  11

/* option replies */
#define NBD_REP_ACK          1u
#define NBD_REP_SERVER       2u
#define NBD_REP_INFO         3u
#define NBD_REP_META_CONTEXT 4u
#define NBD_REP_ERR(v)       ((1u << 31) | (v))
#define NBD_REP_ERR_UNSUP           NBD_REP_ERR(1)
#define NBD_REP_ERR_POLICY          NBD_REP_ERR(2)
#define NBD_REP_ERR_INVALID         NBD_REP_ERR(3)
#define NBD_REP_ERR_PLATFORM        NBD_REP_ERR(4)
#define NBD_REP_ERR_TLS_REQD        NBD_REP_ERR(5)
#define NBD_REP_ERR_UNKNOWN         NBD_REP_ERR(6)
#define NBD_REP_ERR_SHUTDOWN        NBD_REP_ERR(7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD NBD_REP_ERR(8)
#define NBD_REP_ERR_TOO_BIG         NBD_REP_ERR(9)
#define NBD_REP_ERR_EXT_HEADER_REQD NBD_REP_ERR(10)

/* NBD_REP_INFO types */
#define NBD_INFO_EXPORT      0
#define NBD_INFO_NAME        1
#define NBD_INFO_DESCRIPTION 2
#define NBD_INFO_BLOCK_SIZE  3

/* requests */
#define NBD_REQUEST_MAGIC          0x25609513u
#define NBD_EXTENDED_REQUEST_MAGIC 0x21e41c71u
#define NBD_REQUEST_SIZE           28
#define NBD_EXTENDED_REQUEST_SIZE  32

#define NBD_CMD_READ         0
#define NBD_CMD_WRITE        1
#define NBD_CMD_DISC         2
#define NBD_CMD_FLUSH        3
#define NBD_CMD_TRIM         4
#define NBD_CMD_CACHE        5
#define NBD_CMD_WRITE_ZEROES 6
#define NBD_CMD_BLOCK_STATUS 7

#define NBD_CMD_FLAG_FUA         (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE     (1u << 1)
#define NBD_CMD_FLAG_DF          (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE     (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO   (1u << 4)
#define NBD_CMD_FLAG_PAYLOAD_LEN (1u << 5)

/* replies */
#define NBD_SIMPLE_REPLY_MAGIC     0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC 0x668e33efu
#define NBD_EXTENDED_REPLY_MAGIC   0x6e8a278cu
#define NBD_SIMPLE_REPLY_SIZE      16
#define NBD_STRUCTURED_REPLY_SIZE  20
#define NBD_EXTENDED_REPLY_SIZE    32

#define NBD_REPLY_FLAG_DONE (1u << 0)

#define NBD_REPLY_TYPE_NONE             0
#define NBD_REPLY_TYPE_OFFSET_DATA      1
#define NBD_REPLY_TYPE_OFFSET_HOLE      2
#define NBD_REPLY_TYPE_BLOCK_STATUS     5
#define NBD_REPLY_TYPE_BLOCK_STATUS_EXT 6
#define NBD_REPLY_TYPE_ERROR            ((1u << 15) | 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET     ((1u << 15) | 2)

/* base:allocation */
#define NBD_STATE_HOLE (1u << 0)
#define NBD_STATE_ZERO (1u << 1)

/* errors on the wire */
#define NBD_SUCCESS   0
#define NBD_EPERM     1
#define NBD_EIO       5
#define NBD_ENOMEM    12
#define NBD_EINVAL    22
#define NBD_ENOSPC    28
#define NBD_EOVERFLOW 75
#define NBD_ENOTSUP   95
#define NBD_ESHUTDOWN 108

/* limits of this server */
#define NBD_MAX_STRING       4096u              /* the spec's string limit */
#define NBD_MAX_PAYLOAD      (32u * 1024 * 1024) /* largest READ/WRITE, advertised */
/* Largest READ/WRITE from a client that did not negotiate block sizes (it may
 * not know ours): served in NBD_MAX_PAYLOAD pieces, as much as nbd-server and
 * nbdkit serve such clients. */
#define NBD_MAX_REQUEST      (64u * 1024 * 1024)
#define NBD_MAX_OPTION_DATA  (64u * 1024)       /* larger options are discarded */
#define NBD_MAX_OPTIONS      1024u              /* options per handshake */
#define NBD_PREFERRED_BLOCK  4096u
#define NBD_MAX_EXTENTS      (64u * 1024)       /* descriptors per status chunk */

#endif
