#!/usr/bin/python3
"""The faulty filter (docs/faults.md) between NBD clients and the store.

What each case proves, through a raw client (nbdraw.py) that sees every
reply: a write, write-zeroes, trim or flush that a rule fails is answered
with that error (EIO, or ENOSPC), never acknowledged, and the number of
errors the clients saw is the number of faults the daemon says it injected;
a failed write never reaches the store, and a short one leaves exactly its
first half there; every acknowledged write (with FUA, or before an
acknowledged flush) is on the store byte for byte once the daemon has
stopped, also with four connections writing at once under a seeded rate;
ranges, counts and kinds pick exactly the requests they say; a delayed
request completes with the right data or the right error, no sooner than
its delay; rules come and go with fault_set and fault_clear, the filter with
attach and detach; bad rules are refused with EINVAL. The daemon lives
through all of it and serves a well-behaved client at the end."""

import json
import os
import random
import subprocess
import threading
import time

from nbdraw import (CMD_FLAG_FUA, CMD_FLUSH, CMD_TRIM, CMD_WRITE_ZEROES, EIO, ENOSPC, Daemon, check, expect,
                    file_bytes, main, well_behaved)

SIZE = 8 << 20


def bdf(d, *args, ok=True):
    out = subprocess.run([os.environ["BDFILTER"], "--control", d.control, "--json"] + list(args),
                         capture_output=True, text=True)
    if ok:
        check(out.returncode == 0, "bdfilter %s: %s" % (" ".join(args), out.stderr.strip()))
        return json.loads(out.stdout) if out.stdout.strip() else {}
    return out


def refused(d, errno_name, *args):
    out = bdf(d, *args, ok=False)
    check(out.returncode != 0 and (": %s: " % errno_name) in out.stderr,
          "bdfilter %s: expected %s, got %d %s" % (" ".join(args), errno_name, out.returncode, out.stderr.strip()))


def injected(d):
    return bdf(d, "fault_status", "-d", "disk")["injected"]


def setup(tmp, filters=",filter=faulty"):
    path = os.path.join(tmp, "disk.img")
    with open(path, "wb") as f:
        f.write(os.urandom(SIZE))
    model = bytearray(file_bytes(path))
    d = Daemon(tmp, ["disk=%s%s" % (path, filters)])
    return d, path, model


def finish(d, path, model):
    """The daemon alive, a well-behaved client served; then stopped, and the
    store holding exactly MODEL."""
    bdf(d, "fault_clear", "-d", "disk")
    d.alive()
    well_behaved(d.sock, "disk", path)
    d.stop()
    got = file_bytes(path)
    if got != bytes(model):
        first = next(i for i in range(len(got)) if got[i] != model[i])
        raise AssertionError("the store differs from the acknowledged writes from byte %d" % first)


def connect(d):
    c = d.client()
    c.connect("disk")
    return c


def write(c, model, off, data, flags=0, want=0):
    err = c.write(off, data, flags)
    expect(err, want, "WRITE of %d bytes at %d" % (len(data), off))
    if err == 0:
        model[off:off + len(data)] = data
    return err


def flush(c, want=0):
    err = c.cmd(CMD_FLUSH)[0]
    expect(err, want, "FLUSH")


def t_write_errors(tmp):
    """Counted and ranged write failures, ENOSPC, short writes, flush, zero, trim."""
    d, path, model = setup(tmp)
    c = connect(d)
    write(c, model, 0, os.urandom(4096), CMD_FLAG_FUA)

    # the next three writes fail, whatever they touch; the fourth goes through
    bdf(d, "fault_set", "-d", "disk", "-o", "write", "-e", "EIO", "-c", "3")
    for i in range(3):
        write(c, model, 65536 * (i + 1), os.urandom(65536), CMD_FLAG_FUA, want=EIO)
    write(c, model, 65536, os.urandom(65536), CMD_FLAG_FUA)
    expect(injected(d), 3, "faults injected after --count 3")
    rule = bdf(d, "fault_status", "-d", "disk")["rules"][0]
    check(rule["spent"] and rule["fired"] == 3 and rule["matched"] == 3, "the spent rule: %r" % rule)

    # ENOSPC, only where the range is: the write that overlaps its last byte fails
    bdf(d, "fault_clear", "-d", "disk")
    check(bdf(d, "fault_status", "-d", "disk")["rules"] == [], "fault_clear left rules")
    bdf(d, "fault_set", "-d", "disk", "-o", "write", "-e", "ENOSPC", "-r", "1M:64K")
    write(c, model, (1 << 20) - 4096, os.urandom(4096), CMD_FLAG_FUA)           # just before
    write(c, model, (1 << 20) + (64 << 10), os.urandom(4096), CMD_FLAG_FUA)     # just after
    write(c, model, (1 << 20) + (64 << 10) - 512, os.urandom(4096), CMD_FLAG_FUA, want=ENOSPC)
    write(c, model, (1 << 20) - 512, os.urandom(1024), want=ENOSPC)
    flush(c)
    expect(injected(d), 5, "faults injected after the range")

    # a short write: its first half (whole sectors) reaches the store, the client hears EIO
    bdf(d, "fault_clear", "-d", "disk")
    bdf(d, "fault_set", "-d", "disk", "-o", "write", "-e", "EIO", "--short", "-c", "2")
    data = os.urandom(65536)
    write(c, model, 2 << 20, data, CMD_FLAG_FUA, want=EIO)
    model[(2 << 20):(2 << 20) + 32768] = data[:32768]
    data = os.urandom(1000)                      # half is 500 bytes: no whole sector, nothing written
    write(c, model, 3 << 20, data, CMD_FLAG_FUA, want=EIO)
    flush(c)

    # a flush fails once, and the next one goes through
    bdf(d, "fault_set", "-d", "disk", "-o", "flush", "-e", "EIO", "-c", "1")
    write(c, model, 4 << 20, os.urandom(8192))
    flush(c, want=EIO)
    flush(c)

    # write-zeroes and trim fail without touching the store
    bdf(d, "fault_set", "-d", "disk", "-o", "zero", "-e", "EIO", "-c", "1")
    bdf(d, "fault_set", "-d", "disk", "-o", "trim", "-e", "ENOSPC", "-c", "1")
    expect(c.cmd(CMD_WRITE_ZEROES, 5 << 20, 65536, CMD_FLAG_FUA)[0], EIO, "WRITE_ZEROES under a zero rule")
    expect(c.cmd(CMD_TRIM, 5 << 20, 65536)[0], ENOSPC, "TRIM under a trim rule")
    expect(c.cmd(CMD_WRITE_ZEROES, 6 << 20, 65536, CMD_FLAG_FUA)[0], 0, "WRITE_ZEROES after the rule")
    model[(6 << 20):(6 << 20) + 65536] = bytes(65536)
    flush(c)
    expect(injected(d), 2 + 5 + 1 + 2, "faults injected in all")
    c.disconnect()
    c.close()
    finish(d, path, model)


def t_rate_threads(tmp):
    """Four connections write their own quarter at random under one seeded
    rate: every error a client saw is a fault the daemon injected, and every
    write acknowledged is on the store, no failed one."""
    d, path, model = setup(tmp)
    bdf(d, "fault_set", "-d", "disk", "-o", "write", "-e", "EIO", "-p", "0.3", "-S", "7")
    bdf(d, "fault_set", "-d", "disk", "-o", "flush", "-e", "EIO", "-p", "0.2", "-S", "8")
    errors, lock, failures = [0], threading.Lock(), []
    quarter = SIZE // 4

    def writer(n):
        try:
            rnd = random.Random(n)
            c = connect(d)
            mine = 0
            for _ in range(150):
                off = n * quarter + rnd.randrange(0, quarter - 65536, 512)
                data = os.urandom(rnd.choice((512, 4096, 65536)))
                err = c.write(off, data, CMD_FLAG_FUA if rnd.random() < 0.5 else 0)
                check(err in (0, EIO), "a WRITE answered %d" % err)
                mine += err == EIO
                if err == 0:
                    with lock:
                        model[off:off + len(data)] = data
                if rnd.random() < 0.2:
                    err = c.cmd(CMD_FLUSH)[0]
                    check(err in (0, EIO), "a FLUSH answered %d" % err)
                    mine += err == EIO
            while c.cmd(CMD_FLUSH)[0] == EIO:  # the last writes made durable
                mine += 1
            c.disconnect()
            c.close()
            with lock:
                errors[0] += mine
        except Exception as e:  # noqa: BLE001 - reported by the main thread
            failures.append(e)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if failures:
        raise failures[0]
    got = injected(d)
    expect(got, errors[0], "faults injected against errors the clients saw")
    check(got > 20, "a rate of 0.3 over 600 writes injected only %d faults" % got)
    finish(d, path, model)


def t_reads_and_delays(tmp):
    """Read errors in a range; delays, with and without an error, on reads
    and writes: a delayed request completes correctly, and not before its
    delay."""
    d, path, model = setup(tmp)
    c = connect(d)
    bdf(d, "fault_set", "-d", "disk", "-o", "read", "-e", "EIO", "-r", "4096:4096")
    err, _ = c.read(0, 4097)
    expect(err, EIO, "READ overlapping the range by one byte")
    err, data = c.read(0, 4096)
    expect(err, 0, "READ next to the range")
    check(data == bytes(model[0:4096]), "READ next to the range: data differs")
    bdf(d, "fault_clear", "-d", "disk")

    bdf(d, "fault_set", "-d", "disk", "-o", "read", "-e", "none", "-w", "1000", "-c", "1")
    t0 = time.monotonic()
    err, data = c.read(1 << 20, 65536)
    took = time.monotonic() - t0
    expect(err, 0, "a delayed READ")
    check(data == bytes(model[(1 << 20):(1 << 20) + 65536]), "a delayed READ: data differs")
    check(took >= 0.99, "a READ delayed 1000 ms took %.3f s" % took)
    t0 = time.monotonic()
    c.read(1 << 20, 512)
    check(time.monotonic() - t0 < 0.9, "the delay outlived its --count 1")

    bdf(d, "fault_set", "-d", "disk", "-o", "write", "-e", "none", "-w", "200", "-c", "1")
    t0 = time.monotonic()
    write(c, model, 2 << 20, os.urandom(65536), CMD_FLAG_FUA)
    check(time.monotonic() - t0 >= 0.19, "a WRITE delayed 200 ms took less")
    bdf(d, "fault_set", "-d", "disk", "-o", "any", "-e", "EIO", "-w", "200", "-c", "1")
    t0 = time.monotonic()
    write(c, model, 3 << 20, os.urandom(4096), CMD_FLAG_FUA, want=EIO)
    check(time.monotonic() - t0 >= 0.19, "a failing WRITE delayed 200 ms took less")
    expect(injected(d), 2, "delays alone inject nothing")
    flush(c)
    c.disconnect()
    c.close()
    finish(d, path, model)


def t_commands(tmp):
    """Attached live and detached; the commands' refusals."""
    d, path, model = setup(tmp, filters="")
    refused(d, "ENOENT", "fault_set", "-d", "disk", "-o", "write", "-e", "EIO")
    refused(d, "ENOENT", "fault_status", "-d", "disk")
    refused(d, "ENODEV", "fault_set", "-d", "nope", "-o", "write", "-e", "EIO")
    bdf(d, "attach", "-d", "disk", "-n", "faulty")
    check("faulty" in bdf(d, "device_list")["devices"][0]["filters"], "faulty not in device_list")
    for bad in (["-o", "append", "-e", "EIO"], ["-o", "write", "-e", "EPERM"], ["-o", "write", "-e", "none"],
                ["-o", "write", "-e", "EIO", "-p", "1.5"], ["-o", "write", "-e", "EIO", "-r", "10:0"],
                ["-o", "write", "-e", "EIO", "-c", "0"], ["-o", "read", "-e", "EIO", "--short"],
                ["-o", "write", "-e", "none", "-w", "10", "--short"], ["-o", "write", "-e", "EIO", "-w", "3600000"]):
        refused(d, "EINVAL", "fault_set", "-d", "disk", *bad)
    check(bdf(d, "fault_status", "-d", "disk")["rules"] == [], "a refused rule was added")
    for _ in range(16):
        bdf(d, "fault_set", "-d", "disk", "-o", "read", "-e", "EIO", "-p", "0")
    refused(d, "ENOSPC", "fault_set", "-d", "disk", "-o", "read", "-e", "EIO")
    bdf(d, "fault_clear", "-d", "disk")
    bdf(d, "fault_set", "-d", "disk", "-o", "write", "-e", "EIO")
    c = connect(d)
    write(c, model, 0, os.urandom(4096), CMD_FLAG_FUA, want=EIO)
    c.disconnect()
    c.close()
    # detached with its rules: requests pass again
    bdf(d, "detach", "-d", "disk", "-n", "faulty")
    c = connect(d)
    write(c, model, 0, os.urandom(4096), CMD_FLAG_FUA)
    c.disconnect()
    c.close()
    refused(d, "ENOENT", "fault_clear", "-d", "disk")
    bdf(d, "attach", "-d", "disk", "-n", "faulty")
    finish(d, path, model)


main([
    ("write_errors", t_write_errors),
    ("rate_threads", t_rate_threads),
    ("reads_and_delays", t_reads_and_delays),
    ("commands", t_commands),
])
