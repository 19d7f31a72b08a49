#!/usr/bin/python3
"""Transmission: bad requests get the error the NBD spec asks for and the
connection goes on (or closes where the framing is lost); structured and extended
replies carry what they should; replies to pipelined requests come out of order
but complete."""

import os
import random
import struct

from nbdraw import *  # noqa: F401,F403 - the test vocabulary

SIZE = 16 << 20


def image(tmp, name="disk.img", sparse=False, size=SIZE):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        if sparse:
            f.truncate(size)
            f.seek(1 << 20)
            f.write(os.urandom(1 << 20))
        else:
            f.write(os.urandom(size))
    return path


def daemon(tmp, sparse=False, size=SIZE):
    return Daemon(tmp, ["disk=" + image(tmp, sparse=sparse, size=size), "ro=" + image(tmp, "ro.img") + ",ro"])


def backing(tmp, name="disk.img"):
    with open(os.path.join(tmp, name), "rb") as f:
        return f.read()


def t_bad_request_magic(tmp):
    d = daemon(tmp)
    c = d.client()
    c.connect()
    c.request(CMD_READ, 0, 512, magic=0xDEADBEEF)
    check(c.is_closed(), "bad request magic must close")
    d.alive()


def t_unknown_command_and_flags(tmp):
    d = daemon(tmp)
    for structured in (False, True):
        c = d.client()
        c.connect(structured=structured)
        err, chunks = c.cmd(99, 0, 512)
        check(err == EINVAL, "unknown command: %d" % err)
        if structured:
            check(chunks[0]["type"] == REPLY_TYPE_ERROR and chunks[0]["msg"], "error chunk with a message")
        err, _ = c.cmd(CMD_READ, 0, 512, flags=1 << 10)
        check(err == EINVAL, "unknown flag on READ: %d" % err)
        err, _ = c.cmd(CMD_READ, 0, 512, flags=CMD_FLAG_NO_HOLE)
        check(err == EINVAL, "NO_HOLE on READ: %d" % err)
        err, _ = c.cmd(CMD_TRIM, 0, 512, flags=CMD_FLAG_REQ_ONE)
        check(err == EINVAL, "REQ_ONE on TRIM: %d" % err)
        err, _ = c.cmd(CMD_READ, 0, 512, flags=CMD_FLAG_FUA)
        check(err == 0, "FUA is valid on every command: %d" % err)
        if not structured:
            err, _ = c.cmd(CMD_READ, 0, 512, flags=CMD_FLAG_DF)
            check(err == EINVAL, "DF without structured replies: %d" % err)
        err, data = c.read(4096, 4096)
        check(err == 0 and data == backing(tmp)[4096:8192], "connection goes on after errors")
        c.disconnect()


def t_out_of_range(tmp):
    d = daemon(tmp)
    c = d.client()
    c.connect()
    check(c.cmd(CMD_READ, SIZE - 512, 1024)[0] == EINVAL, "READ past the end")
    check(c.cmd(CMD_READ, 2**64 - 512, 1024)[0] == EINVAL, "READ whose end overflows")
    check(c.cmd(CMD_READ, SIZE, 1)[0] == EINVAL, "READ at the end")
    check(c.cmd(CMD_BLOCK_STATUS, SIZE, 512)[0] == EINVAL, "BLOCK_STATUS at the end")
    check(c.write(SIZE - 512, bytes(1024)) == ENOSPC, "WRITE past the end")
    check(c.write(2**64 - 512, bytes(1024)) == ENOSPC, "WRITE whose end overflows")
    check(c.cmd(CMD_TRIM, SIZE - 512, 1024)[0] in (EINVAL, ENOSPC), "TRIM past the end")
    check(c.cmd(CMD_WRITE_ZEROES, SIZE - 512, 1024)[0] == ENOSPC, "WRITE_ZEROES past the end")
    # the WRITE payloads were consumed: the stream is still in sync
    check(c.write(0, b"x" * 512) == 0, "write after errors")
    err, data = c.read(0, 512)
    check(err == 0 and data == b"x" * 512, "read back")


def t_read_only(tmp):
    d = daemon(tmp)
    c = d.client()
    c.connect("ro")
    check(c.eflags & FLAG_READ_ONLY, "READ_ONLY flag")
    check(not c.eflags & (FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES), "ro export offers TRIM/WRITE_ZEROES")
    check(c.write(0, b"y" * 4096) == EPERM, "WRITE to ro")
    check(c.cmd(CMD_TRIM, 0, 4096)[0] == EPERM, "TRIM to ro")
    check(c.cmd(CMD_WRITE_ZEROES, 0, 4096)[0] == EPERM, "WRITE_ZEROES to ro")
    check(c.cmd(CMD_FLUSH)[0] == 0, "FLUSH on ro")
    err, data = c.read(0, 4096)
    check(err == 0 and data == backing(tmp, "ro.img")[:4096], "ro export unchanged and readable")


def t_oversized(tmp):
    d = daemon(tmp, size=40 << 20)
    c = d.client(timeout=30)
    c.connect()
    check(c.cmd(CMD_READ, 0, 33 << 20)[0] == EINVAL, "READ of 33 MiB")
    check(c.write(0, os.urandom(33 << 20)) == EINVAL, "WRITE of 33 MiB")
    check(backing(tmp)[:4096] != b"\0" * 4096, "oversized WRITE changed nothing")
    err, data = c.read(0, 32 << 20)
    check(err == 0 and data == backing(tmp)[:32 << 20], "a 32 MiB READ works")
    check(c.write(0, b"z" * (32 << 20)) == 0, "a 32 MiB WRITE works")
    check(c.read(0, 4096) == (0, b"z" * 4096), "stream in sync after an oversized WRITE")
    d.alive()


def t_zero_length(tmp):
    d = daemon(tmp)
    c = d.client()
    c.connect(meta=["base:allocation"])
    for cmd in (CMD_READ, CMD_TRIM, CMD_WRITE_ZEROES, CMD_BLOCK_STATUS, CMD_CACHE):
        check(c.cmd(cmd, 4096, 0)[0] == EINVAL, "zero-length command %d" % cmd)
    check(c.write(4096, b"") == EINVAL, "zero-length WRITE")
    check(c.read(0, 512)[0] == 0, "no disconnect")


def t_block_status_without_context(tmp):
    d = daemon(tmp)
    c = d.client()
    c.connect()
    check(c.cmd(CMD_BLOCK_STATUS, 0, 4096)[0] == EINVAL, "BLOCK_STATUS without a context")
    # contexts chosen for another export do not carry over to GO
    c = d.client()
    c.greeting()
    c.structured_reply()
    c.set_meta("ro", ["base:allocation"])
    c.go("disk")
    check(c.cmd(CMD_BLOCK_STATUS, 0, 4096)[0] == EINVAL, "contexts of another export")


def t_flush_with_range(tmp):
    d = daemon(tmp)
    c = d.client()
    c.connect()
    check(c.cmd(CMD_FLUSH, 0, 512)[0] == EINVAL, "FLUSH with a length")
    check(c.cmd(CMD_FLUSH, 512, 0)[0] == EINVAL, "FLUSH with an offset")
    check(c.cmd(CMD_FLUSH)[0] == 0, "FLUSH")


def t_disc_then_garbage(tmp):
    d = daemon(tmp)
    c = d.client()
    c.connect()
    c.request(CMD_WRITE, 8192, 512, payload=b"d" * 512)
    c.disconnect()
    c.send(os.urandom(4096))
    first = c.read_chunk()
    check(first["error"] == 0, "the WRITE before DISC is answered")
    check(c.is_closed(), "server closes after DISC")
    check(backing(tmp)[8192:8704] == b"d" * 512, "write before DISC reached the file")
    d.alive()


def t_extended_headers(tmp):
    d = daemon(tmp, sparse=True)
    c = d.client()
    c.connect(extended=True, meta=["base:allocation"])
    # WRITE without PAYLOAD_LEN: an effect length, no payload; refused
    check(c.cmd(CMD_WRITE, 0, 512)[0] == EINVAL, "WRITE without PAYLOAD_LEN")
    # READ with a payload: consumed, refused, connection goes on
    err, chunks = c.cmd(CMD_READ, 0, 100, flags=CMD_FLAG_PAYLOAD_LEN, payload=b"p" * 100)
    check(err == EINVAL, "READ with PAYLOAD_LEN")
    check(c.write(1 << 20, b"e" * 1000) == 0, "extended WRITE")
    err, chunks = c.cmd(CMD_READ, (1 << 20) - 4096, 8192)
    check(err == 0, "extended READ")
    for ch in chunks:
        check(ch["magic"] == EXT_REPLY_MAGIC, "reply magic %#x" % ch["magic"])
        check(ch["offset"] == (1 << 20) - 4096, "reply offset must be the request's: %r" % ch["offset"])
    types = [ch["type"] for ch in chunks]
    check(REPLY_TYPE_OFFSET_HOLE in types and REPLY_TYPE_OFFSET_DATA in types, "hole and data: %r" % types)
    err, chunks = c.cmd(CMD_FLUSH)
    check(err == 0 and chunks[0]["type"] == REPLY_TYPE_NONE and chunks[0]["done"], "NONE reply to FLUSH")
    err, chunks = c.cmd(CMD_BLOCK_STATUS, 0, SIZE)
    check(err == 0 and chunks[0]["type"] == REPLY_TYPE_BLOCK_STATUS_EXT, "BLOCK_STATUS_EXT")
    data = chunks[0]["data"]
    cid, n = struct.unpack(">II", data[:8])
    ext = [struct.unpack(">QQ", data[8 + 16 * i:24 + 16 * i]) for i in range(n)]
    check(len(data) == 8 + 16 * n, "descriptor count")
    check(sum(e[0] for e in ext) == SIZE, "extents cover the export")
    check(ext[0] == (1 << 20, 3), "first extent is a 1 MiB hole: %r" % (ext[0],))
    check(ext[1] == (1 << 20, 0), "then 1 MiB of data: %r" % (ext[1],))
    # a 64-bit effect length beyond the export
    check(c.cmd(CMD_BLOCK_STATUS, 0, 2**40)[0] == EINVAL, "BLOCK_STATUS past the end")
    # an oversized payload with PAYLOAD_LEN is read and dropped
    check(c.write(0, bytes((32 << 20) + 1)) == EINVAL, "oversized extended WRITE")
    check(c.read(0, 512)[0] == 0, "stream in sync")


def t_structured_holes_and_df(tmp):
    d = daemon(tmp, sparse=True)
    c = d.client()
    c.connect(meta=["base:allocation"])
    err, chunks = c.cmd(CMD_READ, 0, 2 << 20)
    check(err == 0, "read")
    types = [ch["type"] for ch in chunks]
    check(types == [REPLY_TYPE_OFFSET_HOLE, REPLY_TYPE_OFFSET_DATA], "hole then data: %r" % types)
    check(chunks[-1]["done"] and not chunks[0]["done"], "DONE on the last chunk only")
    off, hl = struct.unpack(">QI", chunks[0]["data"])
    check((off, hl) == (0, 1 << 20), "hole chunk %r" % ((off, hl),))
    check(c.eflags & FLAG_SEND_DF, "SEND_DF offered with structured replies")
    err, chunks = c.cmd(CMD_READ, 0, 2 << 20, flags=CMD_FLAG_DF)
    check(err == 0 and len(chunks) == 1 and chunks[0]["type"] == REPLY_TYPE_OFFSET_DATA, "DF: one data chunk")
    check(chunks[0]["data"][8:] == backing(tmp)[:2 << 20], "DF data")
    # REQ_ONE: one extent, within the request
    err, chunks = c.cmd(CMD_BLOCK_STATUS, 0, 4096, flags=CMD_FLAG_REQ_ONE)
    data = chunks[0]["data"]
    check(err == 0 and len(data) == 12, "REQ_ONE: one descriptor")
    check(struct.unpack(">II", data[4:12]) == (4096, 3), "REQ_ONE descriptor %r" % (data[4:12],))
    err, chunks = c.cmd(CMD_BLOCK_STATUS, 0, SIZE)
    data = chunks[0]["data"]
    ext = [struct.unpack(">II", data[4 + 8 * i:12 + 8 * i]) for i in range((len(data) - 4) // 8)]
    check(ext[:3] == [(1 << 20, 3), (1 << 20, 0), (SIZE - (2 << 20), 3)], "map %r" % ext)


def t_write_zeroes_and_trim(tmp):
    d = daemon(tmp)
    c = d.client()
    c.connect()
    check(c.eflags & FLAG_SEND_FAST_ZERO, "FAST_ZERO offered")
    check(c.cmd(CMD_WRITE_ZEROES, 4096, 8192, flags=CMD_FLAG_NO_HOLE)[0] == 0, "zero NO_HOLE")
    check(c.cmd(CMD_WRITE_ZEROES, 65536, 65536, flags=CMD_FLAG_FUA)[0] == 0, "zero FUA")
    err = c.cmd(CMD_WRITE_ZEROES, 1 << 20, 1 << 20, flags=CMD_FLAG_FAST_ZERO)[0]
    check(err in (0, ENOTSUP), "fast zero: %d" % err)
    check(c.read(4096, 8192) == (0, bytes(8192)), "zeroed (NO_HOLE)")
    check(c.read(65536, 65536) == (0, bytes(65536)), "zeroed (may trim)")
    if err == 0:
        check(c.read(1 << 20, 1 << 20) == (0, bytes(1 << 20)), "fast-zeroed")
    check(c.cmd(CMD_TRIM, 2 << 20, 1 << 20)[0] == 0, "TRIM")
    check(c.cmd(CMD_CACHE, 0, 4 << 20)[0] == 0, "CACHE")


def t_pipelined_out_of_order(tmp):
    d = daemon(tmp)
    c = d.client(timeout=30)
    c.connect()
    expect = bytearray(backing(tmp))
    rnd = random.Random(7)
    pending = {}
    # writes to their own region first, then reads of everything, all in flight
    for i in range(32):
        data = bytes([i + 1]) * (rnd.randrange(1, 64) * 512)
        off = (8 << 20) + i * 65536
        cookie = c.request(CMD_WRITE, off, len(data), payload=data)
        pending[cookie] = ("w", off, data)
        expect[off:off + len(data)] = data
    got = {}
    while len(got) < len(pending):
        ch = c.read_chunk()
        check(ch["cookie"] in pending and ch["cookie"] not in got, "unexpected cookie %d" % ch["cookie"])
        check(ch["error"] == 0, "write error")
        got[ch["cookie"]] = ch
    reads = {}
    for i in range(64):
        off = rnd.randrange(0, SIZE // 512 - 64) * 512
        length = rnd.randrange(1, 64) * 512
        reads[c.request(CMD_READ, off, length)] = (off, length)
    seen = set()
    while len(seen) < len(reads):
        ch = c.read_chunk()
        check(ch["cookie"] in reads and ch["cookie"] not in seen, "READ cookie %d twice or unknown" % ch["cookie"])
        off, length = reads[ch["cookie"]]
        check(ch["type"] == REPLY_TYPE_OFFSET_DATA, "read chunk type %r" % ch["type"])
        roff, = struct.unpack(">Q", ch["data"][:8])
        check(roff == off and ch["data"][8:] == bytes(expect[off:off + length]), "READ data at %d" % off)
        if ch["done"]:
            seen.add(ch["cookie"])
    check(len(seen) == 64, "every READ answered once")


def t_multi_conn_flush(tmp):
    d = daemon(tmp)
    a, b = d.client(), d.client()
    a.connect()
    b.connect()
    check(a.eflags & FLAG_CAN_MULTI_CONN, "CAN_MULTI_CONN")
    data = os.urandom(1 << 20)
    check(a.write(3 << 20, data) == 0, "write on A")
    check(b.cmd(CMD_FLUSH)[0] == 0, "flush on B")
    check(b.read(3 << 20, 1 << 20) == (0, data), "B reads what A wrote")
    check(backing(tmp)[3 << 20:4 << 20] == data, "the file has it")


if __name__ == "__main__":
    main([(name[2:], fn) for name, fn in list(globals().items()) if name.startswith("t_")])
