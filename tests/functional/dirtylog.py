#!/usr/bin/python3
"""The dm userspace-log server, driven as the kernel drives it: a mirror's
life on a core and on a disk log (ctr, get_region_size, resume, marks, clears
and flushes with and without the integrated flush, resync work to the end,
suspend, dtr), a kill -9 and restart between a mark and its flush's reply,
every bad input the decoder refuses, the netlink connector, and the control
commands that show the logs."""

import json
import os
import random
import signal
import socket
import subprocess
import time

from nbdraw import Daemon, check, expect, main
import ulograw as U

EINVAL, EEXIST, EAGAIN, ENOENT = 22, 17, 11, 2
DEV_SECTORS = 2048
REGION = 64  # sectors: 32 regions
REGIONS = DEV_SECTORS // REGION


def start(tmp, extra=()):
    os.makedirs(os.path.join(tmp, "state"), exist_ok=True)
    for sock in ("nbd.sock", "ulog.sock", "control.sock"):  # left by a kill -9
        if os.path.exists(os.path.join(tmp, sock)):
            os.unlink(os.path.join(tmp, sock))
    d = Daemon(tmp, ["disk=%s" % img(tmp)],
               ["--dm-ulog-listen", os.path.join(tmp, "ulog.sock"), "--state-dir", os.path.join(tmp, "state")] +
               list(extra))
    # bdfilterd makes the dirty logs' socket before the NBD one, and the
    # control socket after it
    for _ in range(400):
        if os.path.exists(d.control):
            break
        time.sleep(0.05)
    check(os.path.exists(os.path.join(tmp, "ulog.sock")) and os.path.exists(d.control),
          "the dirty logs' or the control socket did not appear")
    return d


def img(tmp):
    p = os.path.join(tmp, "disk.img")
    if not os.path.exists(p):
        with open(p, "wb") as f:
            f.truncate(1 << 20)
    return p


def client(tmp):
    return U.SeqpacketClient(os.path.join(tmp, "ulog.sock"))


def ok(r, what):
    check(r.rq is not None, "%s: an ack alone (%d), not a reply" % (what, r.ack))
    check(r.error == 0, "%s: error %d" % (what, r.error))
    return r


def fails(r, err, what):
    check(r.error == -err, "%s: error %d, expected %d (%r)" % (what, r.error, -err, r))


def bdf(d, *args):
    out = subprocess.run([os.environ["BDFILTER"], "--control", d.control, "--json"] + list(args),
                         capture_output=True, text=True)
    return out.returncode, (json.loads(out.stdout) if out.stdout.strip() else None), out.stderr


def test_core_life(tmp):
    d = start(tmp)
    c = client(tmp)
    u = "LVM-core-life"
    r = ok(c.call(U.CTR, u, data=b"%d clustered-core %d\0" % (DEV_SECTORS, REGION)), "CTR")
    expect(r.data, b"", "a core log names no device")
    expect(ok(c.call(U.GET_REGION_SIZE, u), "GET_REGION_SIZE").u64(), REGION, "region size")
    # Before RESUME, I/O-time requests are refused (cmirrord).
    fails(c.call(U.IS_CLEAN, u, data=U.u64s(0)), EINVAL, "IS_CLEAN before RESUME")
    expect(ok(c.call(U.GET_SYNC_COUNT, u), "GET_SYNC_COUNT").u64(), 0, "sync count before resume")
    ok(c.call(U.RESUME, u), "RESUME")
    # dm-log's core log: every region clean, none in sync (no nosync).
    expect(ok(c.call(U.IS_CLEAN, u, data=U.u64s(0)), "IS_CLEAN").s64(), 1, "a new core log is clean")
    expect(ok(c.call(U.IN_SYNC, u, data=U.u64s(0)), "IN_SYNC").s64(), 0, "a new log is not in sync")
    # Resync work to the end, as dm-raid1's recovery does.
    seen = []
    while True:
        r = ok(c.call(U.GET_RESYNC_WORK, u), "GET_RESYNC_WORK")
        if r.s64(0) == 0:
            break
        seen.append(r.u64(1))
        rec = ok(c.call(U.IS_REMOTE_RECOVERING, u, data=U.u64s(r.u64(1))), "IS_REMOTE_RECOVERING")
        check(rec.s64(0) == 1, "a region being resynced is recovering")
        ok(c.call(U.SET_REGION_SYNC, u, data=U.u64s(r.u64(1)) + b"\1" + b"\0" * 7), "SET_REGION_SYNC")
        ok(c.call(U.CLEAR_REGION, u, data=U.u64s(r.u64(1))), "CLEAR_REGION")
    expect(sorted(seen), list(range(REGIONS)), "every region handed out once")
    expect(ok(c.call(U.GET_SYNC_COUNT, u), "GET_SYNC_COUNT").u64(), REGIONS, "all in sync")
    expect(ok(c.call(U.IS_CLEAN, u, data=U.u64s(3)), "IS_CLEAN").s64(), 1, "resynced and cleared")
    # A write: mark, flush, (write), clear, flush.
    ok(c.call(U.MARK_REGION, u, data=U.u64s(3, 4)), "MARK_REGION")
    ok(c.call(U.FLUSH, u), "FLUSH")
    expect(ok(c.call(U.IS_CLEAN, u, data=U.u64s(3)), "IS_CLEAN").s64(), 0, "marked")
    ok(c.call(U.CLEAR_REGION, u, data=U.u64s(3, 4)), "CLEAR_REGION")
    ok(c.call(U.FLUSH, u), "FLUSH")
    expect(ok(c.call(U.IS_CLEAN, u, data=U.u64s(4)), "IS_CLEAN").s64(), 1, "cleared")
    # A leg failed a write: the region is out of sync, and a clear leaves it dirty.
    ok(c.call(U.MARK_REGION, u, data=U.u64s(9)), "MARK_REGION")
    ok(c.call(U.SET_REGION_SYNC, u, data=U.u64s(9) + b"\0" * 8), "SET_REGION_SYNC 0")
    ok(c.call(U.CLEAR_REGION, u, data=U.u64s(9)), "CLEAR_REGION")
    expect(ok(c.call(U.IS_CLEAN, u, data=U.u64s(9)), "IS_CLEAN").s64(), 0, "out of sync stays dirty")
    expect(ok(c.call(U.GET_SYNC_COUNT, u), "GET_SYNC_COUNT").u64(), REGIONS - 1, "one out of sync")
    r = ok(c.call(U.IS_REMOTE_RECOVERING, u, data=U.u64s(9)), "IS_REMOTE_RECOVERING")
    expect(r.s64(0), 1, "out of sync: recovering")
    r = ok(c.call(U.GET_RESYNC_WORK, u), "GET_RESYNC_WORK")
    expect((r.s64(0), r.u64(1)), (1, 9), "the region asked about comes first")
    expect(ok(c.call(U.STATUS_INFO, u), "STATUS_INFO").data, b"1 clustered-core", "STATUS_INFO")
    expect(ok(c.call(U.STATUS_TABLE, u), "STATUS_TABLE").data, b"clustered-core 64  ", "STATUS_TABLE (cmirrord's, two spaces)")
    rc, out, err = bdf(d, "dirtylog_list")
    check(rc == 0 and out["logs"][0]["uuid"] == u and out["logs"][0]["regions"] == REGIONS, "dirtylog_list: %r %s" % (out, err))
    rc, out, err = bdf(d, "dirtylog_status", "-u", u)
    check(rc == 0 and out["status_info"] == "1 clustered-core" and out["in_sync"] == REGIONS - 1,
          "dirtylog_status: %r %s" % (out, err))
    rc, out, err = bdf(d, "dirtylog_status", "-u", "nope")
    check(rc != 0 and "no dirty log" in err, "dirtylog_status of an unknown uuid: %d %s" % (rc, err))
    ok(c.call(U.PRESUSPEND, u), "PRESUSPEND")
    r = ok(c.call(U.IS_REMOTE_RECOVERING, u, data=U.u64s(9)), "IS_REMOTE_RECOVERING")
    expect(r.s64(0), 0, "no recovery while suspending")
    ok(c.call(U.POSTSUSPEND, u), "POSTSUSPEND")
    ok(c.call(U.RESUME, u), "RESUME after suspend")
    ok(c.call(U.DTR, u), "DTR")
    fails(c.call(U.GET_REGION_SIZE, u), EINVAL, "a request after DTR")
    c.close()
    d.alive()
    d.stop()


def test_disk_log(tmp):
    d = start(tmp)
    c = client(tmp)
    log = os.path.join(tmp, "mirror.log")
    open(log, "wb").close()
    u = "LVM-disk"
    ctr = b"%d clustered-disk %s %d nosync\0" % (DEV_SECTORS, log.encode(), REGION)
    r = ok(c.call(U.CTR, u, data=ctr), "CTR")
    expect(r.data, log.encode() + b"\0", "CTR names the log device")
    ok(c.call(U.CTR, u, data=ctr), "the same CTR again (the kernel's retry)")
    fails(c.call(U.CTR, u, data=ctr.replace(b"nosync", b"sync")), EEXIST, "CTR of the uuid with another table")
    ok(c.call(U.RESUME, u), "RESUME")
    magic, version, nr, bits = U.disk_bits(log, REGIONS)
    expect((magic, version, nr), (U.MIRROR_MAGIC, 2, REGIONS), "header after resume")
    expect(bits, [1] * REGIONS, "nosync: every region clean on disk")
    # Version 3's integrated flush: the marks ride on the flush and are on
    # disk when it answers.
    ok(c.call(U.FLUSH, u, data=U.u64s(5, 9)), "FLUSH with marks")
    bits = U.disk_bits(log, REGIONS)[3]
    expect([i for i in range(REGIONS) if not bits[i]], [5, 9], "marked regions dirty on disk")
    # Mark then flush (version 2's way).
    ok(c.call(U.MARK_REGION, u, data=U.u64s(7)), "MARK_REGION")
    ok(c.call(U.FLUSH, u), "FLUSH")
    bits = U.disk_bits(log, REGIONS)[3]
    expect([i for i in range(REGIONS) if not bits[i]], [5, 7, 9], "after mark + flush")
    # Clears are lazy, but a flush writes them.
    ok(c.call(U.CLEAR_REGION, u, data=U.u64s(5, 7)), "CLEAR_REGION")
    ok(c.call(U.FLUSH, u), "FLUSH")
    bits = U.disk_bits(log, REGIONS)[3]
    expect([i for i in range(REGIONS) if not bits[i]], [9], "after clears + flush")
    info = ok(c.call(U.STATUS_INFO, u), "STATUS_INFO").data
    expect(info, b"3 clustered-disk %s A" % log.encode(), "STATUS_INFO")
    expect(ok(c.call(U.STATUS_TABLE, u), "STATUS_TABLE").data,
           b"clustered-disk %s 64 nosync  " % log.encode(), "STATUS_TABLE (cmirrord's)")
    # A daemon stopped cleanly under a live mirror: the kernel's CTR + RESUME
    # after the restart finds the log as it was, though the table says nosync.
    c.close()
    d.stop()
    d = start(tmp)
    c = client(tmp)
    ok(c.call(U.CTR, u, data=ctr), "CTR after restart")
    ok(c.call(U.RESUME, u), "RESUME after restart")
    expect(ok(c.call(U.IS_CLEAN, u, data=U.u64s(9)), "IS_CLEAN").s64(), 0, "region 9 still dirty after restart")
    expect(ok(c.call(U.IS_CLEAN, u, data=U.u64s(5)), "IS_CLEAN").s64(), 1, "region 5 clean after restart")
    ok(c.call(U.POSTSUSPEND, u), "POSTSUSPEND")
    ok(c.call(U.DTR, u), "DTR")
    # A log constructed anew (after its DTR) follows its table: nosync.
    ok(c.call(U.CTR, u, data=ctr), "CTR of a new log")
    ok(c.call(U.RESUME, u), "RESUME")
    expect(ok(c.call(U.IS_CLEAN, u, data=U.u64s(9)), "IS_CLEAN").s64(), 1, "a new nosync log is clean")
    ok(c.call(U.DTR, u), "DTR")
    c.close()
    d.stop()


def test_kill_between_mark_and_reply(tmp):
    """kill -9 while integrated flushes are in flight: after the restart (CTR
    + RESUME, then the kernel sends its request again), every region whose
    flush was answered is dirty, on disk and in the log."""
    log = os.path.join(tmp, "mirror.log")
    open(log, "wb").close()
    u = "LVM-kill"
    ctr = b"%d clustered-disk %s %d nosync\0" % (DEV_SECTORS * 64, log.encode(), REGION)
    regions = DEV_SECTORS * 64 // REGION
    rnd = random.Random(9)
    acked = set()
    for rnd_i in range(6):
        d = start(tmp)
        c = client(tmp)
        ok(c.call(U.CTR, u, data=ctr), "CTR round %d" % rnd_i)
        ok(c.call(U.RESUME, u), "RESUME round %d" % rnd_i)
        for r in acked:
            got = ok(c.call(U.IS_CLEAN, u, data=U.u64s(r)), "IS_CLEAN").s64()
            check(got == 0, "round %d: region %d's flush was answered, yet it is clean after kill -9" % (rnd_i, r))
        bits = U.disk_bits(log, regions)[3]
        check(all(bits[r] == 0 for r in acked), "round %d: an answered mark is not on disk" % rnd_i)
        n = rnd.randrange(5, 40)
        for _ in range(n):
            r = rnd.randrange(regions)
            ok(c.call(U.FLUSH, u, data=U.u64s(r)), "FLUSH")
            acked.add(r)
        # One more, in flight when the daemon dies.
        c.seq += 1
        c.send_raw(U.packet(U.request(U.FLUSH, u, 1, U.u64s(rnd.randrange(regions)), seq=c.seq), seq=c.seq))
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        Daemon.running.remove(d)
        c.close()
    check(len(acked) > 20, "the test marked %d regions" % len(acked))


def test_core_restart(tmp):
    """A core log's bits die with the daemon: after a restart its CTR + RESUME
    resync everything, even with nosync in the table."""
    d = start(tmp)
    c = client(tmp)
    u = "LVM-core-restart"
    ctr = b"%d core %d nosync\0" % (DEV_SECTORS, REGION)
    ok(c.call(U.CTR, u, data=ctr), "CTR")
    ok(c.call(U.RESUME, u), "RESUME")
    expect(ok(c.call(U.GET_SYNC_COUNT, u), "GET_SYNC_COUNT").u64(), REGIONS, "nosync: all in sync")
    expect(ok(c.call(U.STATUS_TABLE, u), "STATUS_TABLE").data, b"core 2 64 nosync ", "core STATUS_TABLE")
    expect(ok(c.call(U.STATUS_INFO, u), "STATUS_INFO").data, b"1 core", "core STATUS_INFO")
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    Daemon.running.remove(d)
    c.close()
    d = start(tmp)
    c = client(tmp)
    ok(c.call(U.CTR, u, data=ctr), "CTR after restart")
    ok(c.call(U.RESUME, u), "RESUME after restart")
    expect(ok(c.call(U.GET_SYNC_COUNT, u), "GET_SYNC_COUNT").u64(), 0, "a core log restarted resyncs all")
    ok(c.call(U.DTR, u), "DTR")
    c.close()
    d.stop()


def test_bad_input(tmp):
    d = start(tmp)
    c = client(tmp)
    good = "LVM-good"
    ok(c.call(U.CTR, good, data=b"%d clustered-core %d\0" % (DEV_SECTORS, REGION)), "CTR")
    ok(c.call(U.RESUME, good), "RESUME")
    ok(c.call(U.MARK_REGION, good, data=U.u64s(1)), "MARK_REGION")

    def raw(pkt):
        c.send_raw(pkt)
        return c.recv()

    # Framing.
    c.send_raw(b"\1" * 10)  # shorter than a cn_msg: dropped, logged
    c.send_raw(U.packet(U.request(U.IS_CLEAN, good, data=U.u64s(1)), idx=9))  # not ours: dropped
    r = raw(U.packet(U.request(U.IS_CLEAN, good, data=U.u64s(1)), length=400))
    check(r.rq is None and r.ack == EINVAL, "cn_msg len beyond the packet: %r" % r)
    r = raw(U.packet(b"\0" * 50, seq=77))
    check(r.rq is None and r.ack == EINVAL and r.seq == 77, "a request shorter than its header: %r" % r)
    fails(raw(U.packet(U.request(U.MARK_REGION, good, data=U.u64s(1), data_size=64))), EINVAL,
          "data_size beyond the packet")
    fails(raw(U.packet(U.request(U.MARK_REGION, good, data=U.u64s(*range(60))))), EINVAL,
          "a message over the 512-byte cap")
    big = U.packet(U.request(U.MARK_REGION, good, data=U.u64s(*range(1000))))
    fails(raw(big), EINVAL, "a packet of %d bytes" % len(big))
    r = raw(U.packet(U.request(0, good), seq=5))
    check(r.rq is None and r.ack == EAGAIN and r.seq == 5, "request type 0: EAGAIN ack: %r" % r)
    fails(raw(U.packet(U.request(99, good))), EINVAL, "unknown request type")
    fails(raw(U.packet(U.request(U.IS_CLEAN, good, data=U.u64s(1), raw_uuid=b"X" * 129))), EINVAL,
          "a uuid without its NUL")
    fails(raw(U.packet(U.request(U.IS_CLEAN, good, data=U.u64s(1), version=0))), EINVAL, "version 0")
    # Requests.
    fails(c.call(U.IS_CLEAN, good, luid=2, data=U.u64s(1)), EINVAL, "an unknown luid")
    fails(c.call(U.IS_CLEAN, "nope", data=U.u64s(1)), EINVAL, "an unknown uuid")
    fails(c.call(U.IS_CLEAN, good), EINVAL, "IS_CLEAN without a region")
    fails(c.call(U.IS_CLEAN, good, data=U.u64s(REGIONS)), EINVAL, "a region out of range")
    fails(c.call(U.MARK_REGION, good, data=b"\0" * 7), EINVAL, "MARK_REGION of 7 bytes")
    fails(c.call(U.MARK_REGION, good, data=U.u64s(1 << 40)), EINVAL, "MARK_REGION out of range")
    fails(c.call(U.SET_REGION_SYNC, good, data=U.u64s(1)), EINVAL, "SET_REGION_SYNC of 8 bytes")
    fails(c.call(U.DTR, "nope"), EINVAL, "DTR of an unknown log")
    for i, ctr in enumerate([b"", b"\0", b"2048\0", b"abc clustered-core 64\0", b"0 clustered-core 64\0",
                             b"2048 bogus 64\0", b"2048 clustered-core 63\0", b"2048 clustered-core 0\0",
                             b"2048 clustered-core 4096\0", b"2048 clustered-core 64 sync nosync\0",
                             b"2048 clustered-core 64 junk\0", b"2048 clustered-core 99999999999\0",
                             b"2048 clustered-disk /nonexistent/dir/log 64\0",
                             b"2048 clustered-disk relative.log 64\0", b"2048 clustered-disk 64\0",
                             b"2048 clustered-core 64", b"2048 clustered-core\n64\0",
                             b"1 2 3 4 5 6 7 8 9\0"]):
        fails(c.call(U.CTR, "LVM-bad-%d" % i, data=ctr), EINVAL if i != 12 else ENOENT, "CTR %r" % ctr)
    fails(c.call(U.CTR, "bad uuid", data=b"2048 core 64\0"), EINVAL, "CTR of a uuid with a space")
    rc, out, _ = bdf(d, "dirtylog_list")
    expect([l["uuid"] for l in out["logs"]], [good], "only the good log exists")
    # The good log is as it was.
    expect(ok(c.call(U.IS_CLEAN, good, data=U.u64s(1)), "IS_CLEAN").s64(), 0, "the good log kept its mark")
    ok(c.call(U.DTR, good), "DTR")
    c.close()
    # A client that goes away mid-request, and a second client meanwhile.
    c2 = client(tmp)
    c2.send_raw(U.packet(U.request(U.GET_SYNC_COUNT, good)))
    c2.close()
    c = client(tmp)
    fails(c.call(U.GET_SYNC_COUNT, good), EINVAL, "after DTR")
    c.close()
    d.alive()
    d.stop()


def test_block_device(tmp):
    """A disk log on a block device named MAJOR:MINOR, as the kernel names it
    (root only: losetup)."""
    if os.geteuid() != 0:
        print("skip: not root")
        return
    loops = []

    def loop(path, size):
        with open(path, "wb") as f:
            f.truncate(size)
        dev = subprocess.run(["losetup", "-f", "--show", path], capture_output=True, text=True).stdout.strip()
        check(dev.startswith("/dev/loop"), "losetup %s: %r" % (path, dev))
        loops.append(dev)
        st = os.stat(dev)
        return dev, "%d:%d" % (os.major(st.st_rdev), os.minor(st.st_rdev))

    d = start(tmp)
    c = client(tmp)
    try:
        dev, mm = loop(os.path.join(tmp, "log.img"), 8 << 20)
        u = "LVM-blockdev"
        r = ok(c.call(U.CTR, u, data=b"%d clustered-disk %s %d nosync\0" % (DEV_SECTORS, mm.encode(), REGION)),
               "CTR on %s (%s)" % (mm, dev))
        expect(r.data, mm.encode() + b"\0", "CTR names the device as the table did")
        ok(c.call(U.RESUME, u), "RESUME")
        ok(c.call(U.FLUSH, u, data=U.u64s(5, 9)), "FLUSH with marks")
        magic, version, nr, bits = U.disk_bits(dev, REGIONS)
        expect((magic, version, nr), (U.MIRROR_MAGIC, 2, REGIONS), "header on the block device")
        expect([i for i in range(REGIONS) if not bits[i]], [5, 9], "marks on the block device")
        expect(ok(c.call(U.STATUS_INFO, u), "STATUS_INFO").data, b"3 clustered-disk %s A" % mm.encode(),
               "STATUS_INFO names MAJOR:MINOR")
        expect(ok(c.call(U.STATUS_TABLE, u), "STATUS_TABLE").data,
               b"clustered-disk %s 64 nosync  " % mm.encode(), "STATUS_TABLE")
        ok(c.call(U.DTR, u), "DTR")
        _, tiny = loop(os.path.join(tmp, "tiny.img"), 2048)
        fails(c.call(U.CTR, "LVM-tiny", data=b"%d clustered-disk %s %d\0" % (DEV_SECTORS, tiny.encode(), REGION)),
              28, "a log device smaller than the log (ENOSPC)")
        fails(c.call(U.CTR, "LVM-none", data=b"%d clustered-disk 250:250 %d\0" % (DEV_SECTORS, REGION)),
              ENOENT, "a MAJOR:MINOR with no device")
    finally:
        c.close()
        for dev in loops:
            subprocess.run(["losetup", "-d", dev])
    d.alive()
    d.stop()


def test_netlink(tmp):
    """The connector transport, reached as the kernel reaches it (root only:
    sending to a netlink group needs CAP_NET_ADMIN)."""
    if os.geteuid() != 0:
        print("skip: not root")
        return
    d = start(tmp, ["--dm-ulog"])
    c = U.NetlinkClient()
    u = "LVM-netlink"
    ok(c.call(U.CTR, u, data=b"%d clustered-core %d\0" % (DEV_SECTORS, REGION)), "CTR over netlink")
    expect(ok(c.call(U.GET_REGION_SIZE, u), "GET_REGION_SIZE").u64(), REGION, "region size over netlink")
    ok(c.call(U.DTR, u), "DTR over netlink")
    c.close()
    d.stop()


if __name__ == "__main__":
    main([
        ("core_life", test_core_life),
        ("disk_log", test_disk_log),
        ("kill_between_mark_and_reply", test_kill_between_mark_and_reply),
        ("core_restart", test_core_restart),
        ("bad_input", test_bad_input),
        ("block_device", test_block_device),
        ("netlink", test_netlink),
    ])
