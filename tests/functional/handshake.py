#!/usr/bin/python3
"""Handshake: every bad or odd option gets the answer the NBD spec asks for, and
the daemon goes on serving other clients."""

import os
import socket
import struct
import time

from nbdraw import *  # noqa: F401,F403 - the test vocabulary


def image(tmp, name="disk.img", size=16 << 20):
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(os.urandom(size))
    return path


def daemon(tmp, extra=()):
    return Daemon(tmp, ["disk=" + image(tmp), "ro=" + image(tmp, "ro.img") + ",ro"], extra)


def t_unknown_client_flags(tmp):
    d = daemon(tmp)
    c = d.client()
    c.greeting(cflags=FLAG_C_FIXED_NEWSTYLE | (1 << 7))
    check(c.is_closed(), "server kept a client with unknown flags")
    d.alive()


def t_not_fixed_newstyle(tmp):
    d = daemon(tmp)
    c = d.client()
    c.greeting(cflags=0)
    check(c.is_closed(), "server kept a non-fixed-newstyle client")
    d.alive()


def t_bad_option_magic(tmp):
    d = daemon(tmp)
    c = d.client()
    c.greeting()
    c.send_option(OPT_LIST, magic=0x1122334455667788)
    check(c.is_closed(), "server kept a client with bad option magic")
    d.alive()


def t_option_over_limit(tmp):
    d = daemon(tmp)
    before = rss_kib(d.proc.pid)
    c = d.client(timeout=60)
    c.greeting()
    size = 100 << 20
    c.send_option(OPT_LIST_META_CONTEXT, length=size)
    piece = bytes(1 << 20)
    for _ in range(size >> 20):
        c.send(piece)
    opt, rtype, _ = c.read_reply()
    check(rtype == REP_ERR_TOO_BIG, "100 MiB option: reply %#x" % rtype)
    grew = rss_kib(d.proc.pid) - before
    check(grew < 20 * 1024, "daemon RSS grew by %d KiB for a 100 MiB option" % grew)
    # parsing goes on
    check(c.option_final(OPT_LIST) == REP_ACK, "LIST after an oversized option")
    d.alive()


def t_unknown_option(tmp):
    d = daemon(tmp)
    c = d.client()
    c.greeting()
    check(c.option_final(42, b"some data") == REP_ERR_UNSUP, "option 42")
    check(c.option_final(OPT_LIST) == REP_ACK, "LIST after an unknown option")
    c.go("disk")
    d.alive()


def t_list(tmp):
    d = daemon(tmp)
    c = d.client()
    c.greeting()
    replies = c.option(OPT_LIST)
    check(replies[-1][0] == REP_ACK, "LIST")
    names = []
    for rtype, data in replies[:-1]:
        check(rtype == REP_SERVER, "LIST reply type %d" % rtype)
        n, = struct.unpack(">I", data[:4])
        names.append(data[4:4 + n].decode())
    check(names == ["disk", "ro"], "LIST names %r" % names)
    check(c.option_final(OPT_LIST, b"x") == REP_ERR_INVALID, "LIST with data")


def t_info_go_malformed(tmp):
    d = daemon(tmp)
    c = d.client()
    c.greeting()
    # name length beyond the option
    bad = struct.pack(">I", 1000) + b"disk" + struct.pack(">H", 0)
    check(c.option_final(OPT_INFO, bad) == REP_ERR_INVALID, "INFO with a long name length")
    check(c.option_final(OPT_GO, bad) == REP_ERR_INVALID, "GO with a long name length")
    # info count that does not match
    bad = struct.pack(">I", 4) + b"disk" + struct.pack(">H", 5) + struct.pack(">H", 3)
    check(c.option_final(OPT_GO, bad) == REP_ERR_INVALID, "GO with a wrong info count")
    check(c.option_final(OPT_GO, b"\0\0") == REP_ERR_INVALID, "GO too short")
    # NUL inside the name
    check(c.option_final(OPT_GO, c.info_data("di\0k")) == REP_ERR_INVALID, "NUL in name")
    # unknown export
    check(c.option_final(OPT_INFO, c.info_data("nope")) == REP_ERR_UNKNOWN, "INFO unknown export")
    check(c.option_final(OPT_GO, c.info_data("nope")) == REP_ERR_UNKNOWN, "GO unknown export")
    # INFO then GO still work on this connection
    replies = c.option(OPT_INFO, c.info_data("", (INFO_NAME, INFO_DESCRIPTION, INFO_BLOCK_SIZE)))
    check(replies[-1][0] == REP_ACK, "INFO default export")
    infos = {struct.unpack(">H", data[:2])[0]: data[2:] for _, data in replies[:-1]}
    check(infos[INFO_NAME] == b"disk", "default export is the first device: %r" % infos[INFO_NAME])
    size, flags = struct.unpack(">QH", infos[INFO_EXPORT])
    check(size == 16 << 20, "size %d" % size)
    check(struct.unpack(">III", infos[INFO_BLOCK_SIZE]) == (1, 4096, 32 << 20), "block sizes")
    check(infos[INFO_DESCRIPTION].endswith(b"disk.img"), "description")
    c.go("disk")
    err, _ = c.read(0, 4096)
    check(err == 0, "read after GO")


def t_export_name_unknown(tmp):
    d = daemon(tmp)
    c = d.client()
    c.greeting()
    c.send_option(OPT_EXPORT_NAME, b"nope")
    check(c.is_closed(), "EXPORT_NAME of an unknown export must close")
    d.alive()


def t_export_name(tmp):
    d = daemon(tmp)
    for cflags, extra in ((FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES, 0), (FLAG_C_FIXED_NEWSTYLE, 124)):
        c = d.client()
        c.greeting(cflags)
        c.send_option(OPT_EXPORT_NAME, b"ro")
        size, flags = struct.unpack(">QH", c.recv(10))
        check(size == 16 << 20 and flags & FLAG_READ_ONLY, "EXPORT_NAME reply")
        if extra:
            check(c.recv(extra) == bytes(extra), "124 zero bytes without NO_ZEROES")
        err, data = c.read(0, 512)
        check(err == 0 and len(data) == 512, "simple read")
        c.disconnect()


def t_structured_and_extended_repeats(tmp):
    d = daemon(tmp)
    c = d.client()
    c.greeting()
    check(c.option_final(OPT_STRUCTURED_REPLY, b"x") == REP_ERR_INVALID, "STRUCTURED_REPLY with data")
    check(c.option_final(OPT_STRUCTURED_REPLY) == REP_ACK, "STRUCTURED_REPLY")
    check(c.option_final(OPT_STRUCTURED_REPLY) == REP_ERR_INVALID, "STRUCTURED_REPLY twice")
    check(c.option_final(OPT_EXTENDED_HEADERS, b"x") == REP_ERR_INVALID, "EXTENDED_HEADERS with data")
    check(c.option_final(OPT_EXTENDED_HEADERS) == REP_ACK, "EXTENDED_HEADERS")
    check(c.option_final(OPT_EXTENDED_HEADERS) == REP_ERR_INVALID, "EXTENDED_HEADERS twice")
    check(c.option_final(OPT_STRUCTURED_REPLY) == REP_ERR_EXT_HEADER_REQD, "STRUCTURED_REPLY after EXTENDED")
    # EXPORT_NAME is forbidden after extended headers: close
    c.send_option(OPT_EXPORT_NAME, b"disk")
    check(c.is_closed(), "EXPORT_NAME after EXTENDED_HEADERS")
    d.alive()


def t_meta_contexts(tmp):
    d = daemon(tmp)
    c = d.client()
    c.greeting()
    q = c.meta_data("disk", ["base:allocation"])
    check(c.option_final(OPT_SET_META_CONTEXT, q) == REP_ERR_INVALID, "SET_META before structured replies")
    check(c.option_final(OPT_LIST_META_CONTEXT, q) == REP_ERR_INVALID, "LIST_META before structured replies")
    c.structured_reply()
    for queries in ([], ["base:"], ["base:allocation"]):
        replies = c.option(OPT_LIST_META_CONTEXT, c.meta_data("disk", queries))
        check(replies[-1][0] == REP_ACK, "LIST_META %r" % queries)
        names = [data[4:].decode() for _, data in replies[:-1]]
        check(names == ["base:allocation"], "LIST_META %r: %r" % (queries, names))
    replies = c.option(OPT_LIST_META_CONTEXT, c.meta_data("disk", ["x-unknown:thing", "base:nope"]))
    check(replies == [(REP_ACK, b"")], "unknown contexts are ignored: %r" % replies)
    check(c.option_final(OPT_SET_META_CONTEXT, c.meta_data("nope", ["base:allocation"])) == REP_ERR_UNKNOWN,
          "SET_META on an unknown export")
    # a query length beyond the option
    bad = c.meta_data("disk", []) [:-4] + struct.pack(">I", 1) + struct.pack(">I", 99) + b"base:"
    check(c.option_final(OPT_SET_META_CONTEXT, bad) == REP_ERR_INVALID, "query length beyond the option")
    check(c.option_final(OPT_SET_META_CONTEXT, b"\0\0\0") == REP_ERR_INVALID, "SET_META too short")
    ctx = c.set_meta("disk", ["base:allocation", "base:allocation", "base:"])
    check(list(ctx) == ["base:allocation"] and ctx["base:allocation"] != 0, "SET_META: %r" % ctx)
    c.go("disk")
    err, chunks = c.cmd(CMD_BLOCK_STATUS, 0, 1 << 20)
    check(err == 0 and chunks[0]["type"] == REPLY_TYPE_BLOCK_STATUS, "BLOCK_STATUS after SET_META")


def t_starttls_policy(tmp):
    d = daemon(tmp)
    c = d.client()
    c.greeting()
    check(c.option_final(OPT_STARTTLS) == REP_ERR_POLICY, "STARTTLS")
    check(c.option_final(OPT_STARTTLS, b"x") == REP_ERR_INVALID, "STARTTLS with data")
    c.go("disk")


def t_abort(tmp):
    d = daemon(tmp)
    c = d.client()
    c.greeting()
    check(c.option_final(OPT_ABORT) == REP_ACK, "ABORT is acknowledged")
    check(c.is_closed(), "server closes after ABORT")
    d.alive()


def t_option_flood(tmp):
    d = daemon(tmp)
    c = d.client()
    c.greeting()
    n = 0
    try:
        for n in range(2000):
            c.send_option(42)
            c.read_reply()
    except (Closed, ConnectionResetError, BrokenPipeError):
        pass
    check(1000 <= n < 1100, "flood closed after %d options" % n)
    d.alive()


def t_stalled_handshake(tmp):
    d = daemon(tmp, ["--handshake-timeout", "2"])
    stalled = []
    for _ in range(100):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(d.sock)
        stalled.append(s)
    d.alive()  # 100 stalled clients do not block a new one
    s = stalled[0]
    t0 = time.time()
    s.settimeout(6)
    s.recv(18)  # greeting
    data = s.recv(1)
    check(data == b"", "stalled client got data")
    took = time.time() - t0
    check(1.0 < took < 5.0, "stalled client closed after %.1fs" % took)
    for s in stalled:
        s.close()
    d.alive()


if __name__ == "__main__":
    main([(name[2:], fn) for name, fn in list(globals().items()) if name.startswith("t_")])
