"""A dm userspace-log client for tests: speaks what the kernel's
dm-log-userspace sends (struct cn_msg + struct dm_ulog_request + data) over
bdfilterd's SOCK_SEQPACKET socket, or over the netlink connector as root."""

import os
import socket
import struct

CN = struct.Struct("=IIIIHH")  # idx, val, seq, ack, len, flags
REQ = struct.Struct("=Q129s3sIiIII")  # luid, uuid, pad, version, error, seq, type, data_size
CN_IDX_DM, CN_VAL_DM_USERSPACE_LOG = 7, 1
NETLINK_CONNECTOR = 11
NLMSG_DONE = 3

(CTR, DTR, PRESUSPEND, POSTSUSPEND, RESUME, GET_REGION_SIZE, IS_CLEAN, IN_SYNC, FLUSH, MARK_REGION,
 CLEAR_REGION, GET_RESYNC_WORK, SET_REGION_SYNC, GET_SYNC_COUNT, STATUS_INFO, STATUS_TABLE,
 IS_REMOTE_RECOVERING) = range(1, 18)

MIRROR_MAGIC = 0x4D695272


class Reply:
    def __init__(self, cn, rq=None, data=b""):
        self.seq, self.ack, self.len = cn[2], cn[3], cn[4]
        self.rq = rq
        self.data = data

    @property
    def error(self):
        return self.rq[4] if self.rq else -self.ack

    def u64(self, i=0):
        return struct.unpack_from("=Q", self.data, 8 * i)[0]

    def s64(self, i=0):
        return struct.unpack_from("=q", self.data, 8 * i)[0]

    def __repr__(self):
        return "Reply(seq=%d ack=%d error=%d data=%r)" % (self.seq, self.ack, self.error, self.data)


def request(rtype, uuid, luid=1, data=b"", seq=1, version=3, data_size=None, raw_uuid=None):
    """A dm_ulog_request and its data."""
    u = raw_uuid if raw_uuid is not None else uuid.encode().ljust(129, b"\0")
    return REQ.pack(luid, u, b"\0" * 3, version, 0, seq, rtype,
                    len(data) if data_size is None else data_size) + data


def packet(body, seq=1, idx=CN_IDX_DM, val=CN_VAL_DM_USERSPACE_LOG, length=None):
    return CN.pack(idx, val, seq, 0, len(body) if length is None else length, 0) + body


def parse(pkt):
    cn = CN.unpack_from(pkt)
    body = pkt[CN.size:CN.size + cn[4]]
    if cn[4] == 0:
        return Reply(cn)
    assert len(body) >= REQ.size, "reply shorter than a request header: %r" % pkt
    rq = REQ.unpack_from(body)
    return Reply(cn, rq, body[REQ.size:REQ.size + rq[7]])


def u64s(*regions):
    return b"".join(struct.pack("=Q", r) for r in regions)


class SeqpacketClient:
    def __init__(self, path, timeout=20.0):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.s.settimeout(timeout)
        self.s.connect(path)
        self.seq = 0

    def send_raw(self, pkt):
        self.s.send(pkt)

    def recv(self):
        return parse(self.s.recv(65536))

    def call(self, rtype, uuid, luid=1, data=b"", **kw):
        self.seq += 1
        self.send_raw(packet(request(rtype, uuid, luid, data, seq=self.seq, **kw), seq=self.seq))
        r = self.recv()
        assert r.seq == self.seq, "reply seq %d for request %d" % (r.seq, self.seq)
        if r.rq:
            assert r.rq[5] == self.seq and r.rq[0] == luid, "the reply does not echo the header: %r" % (r.rq,)
        return r

    def close(self):
        self.s.close()


class NetlinkClient:
    """As root: multicast to the connector's DM group, as the kernel would,
    and take the answer sent back to our port."""

    def __init__(self, timeout=20.0):
        self.s = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM, NETLINK_CONNECTOR)
        self.s.settimeout(timeout)
        self.s.bind((0, 0))
        self.seq = 0

    def call(self, rtype, uuid, luid=1, data=b""):
        self.seq += 1
        body = packet(request(rtype, uuid, luid, data, seq=self.seq), seq=self.seq)
        nlh = struct.pack("=IHHII", 16 + len(body), NLMSG_DONE, 0, 0, os.getpid())
        self.s.sendto(nlh + body, (0, 1 << (CN_IDX_DM - 1)))
        while True:
            pkt = self.s.recv(65536)
            r = parse(pkt[16:])
            if r.seq == self.seq:
                return r

    def close(self):
        self.s.close()


def disk_bits(path, regions):
    """(magic, version, nr_regions, [clean bit of each region]) of a disk log."""
    with open(path, "rb") as f:
        buf = f.read()
    magic, version, nr = struct.unpack_from("<IIQ", buf)
    bits = [(buf[1024 + i // 8] >> (i % 8)) & 1 for i in range(regions)]
    return magic, version, nr, bits
