#!/usr/bin/python3
"""A snapshot whose difference storage fails (the fault points
diff_storage.write and diff_storage.read, docs/faults.md).

What each case proves: when a copy-before-write cannot be stored, whether
the writer thread stores it or the copier does (its queue full), the origin
write that caused it is acknowledged and on the store, and the origin goes
on serving reads and writes; every read of the image is either exactly the
origin at the take or EIO, never other data; the snapshot says
error_code=-5 in snapshot_info, and snapshot_watcher prints exactly one
corrupted event (err_code -5, the device's name). When the storage cannot be
read back, the reader of the image gets EIO, not the storage's bytes, and the
snapshot is corrupted the same way (as blksnap does when a chunk cannot be
loaded). Copies that the storage is slow to take are read from their queue
meanwhile, and the image stays exact. The daemon lives through it all and
serves a well-behaved client; the origin's store holds every acknowledged
write at the end."""

import json
import os
import subprocess
import time

from nbdraw import CMD_FLAG_FUA, CMD_FLUSH, EIO, Daemon, check, expect, file_bytes, main, well_behaved

SIZE = 16 << 20
CHUNK = 256 << 10  # the default chunk of a 16 MiB device


def bdf(d, *args):
    out = subprocess.run([os.environ["BDFILTER"], "--control", d.control, "--json"] + list(args),
                         capture_output=True, text=True)
    check(out.returncode == 0, "bdfilter %s: %s" % (" ".join(args), out.stderr.strip()))
    return json.loads(out.stdout) if out.stdout.strip() else {}


def setup(tmp, extra=()):
    path = os.path.join(tmp, "disk.img")
    with open(path, "wb") as f:
        f.write(os.urandom(SIZE))
    with open(os.path.join(tmp, "diff.img"), "wb") as f:
        f.truncate(64 << 20)
    d = Daemon(tmp, ["disk=%s,filter=tracker" % path], list(extra))
    for _ in range(200):  # the control socket comes after the NBD one
        if os.path.exists(d.control):
            break
        time.sleep(0.05)
    return d, path


def take(d, tmp):
    """A snapshot of disk, taken; its id, and a snapshot_watcher on it."""
    sid = bdf(d, "snapshot_create", "-d", "disk")["id"]
    bdf(d, "snapshot_appendstorage", "-i", sid, "-f", os.path.join(tmp, "diff.img"))
    bdf(d, "snapshot_take", "-i", sid)
    watcher = subprocess.Popen([os.environ["BDFILTER"], "--control", d.control, "--json", "snapshot_watcher",
                                "-i", sid], stdout=subprocess.PIPE, text=True)
    return sid, watcher


def connect(d, name):
    c = d.client()
    c.connect(name)
    return c


def write(c, model, off, data):
    expect(c.write(off, data, CMD_FLAG_FUA), 0, "origin WRITE of %d bytes at %d" % (len(data), off))
    model[off:off + len(data)] = data


def corrupted_within(d, seconds=10):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        info = bdf(d, "snapshot_info", "-d", "disk")
        if info["error_code"]:
            return info["error_code"]
        time.sleep(0.05)
    return 0


def image_exact_or_eio(d, at_take):
    """Every chunk of the image read: the origin at the take, or EIO. The
    number of EIO answers."""
    c = connect(d, "disk-image")
    eio = 0
    for off in range(0, SIZE, CHUNK):
        err, data = c.read(off, CHUNK)
        check(err in (0, EIO), "image READ at %d answered %d" % (off, err))
        if err:
            eio += 1
        else:
            check(data == at_take[off:off + CHUNK], "image READ at %d: neither EIO nor the data at take" % off)
    c.disconnect()
    c.close()
    return eio


def events(d, sid, watcher):
    """Destroy the snapshot once its watcher has had time to print every
    event; the corrupted ones it printed."""
    time.sleep(1.5)
    bdf(d, "snapshot_destroy", "-i", sid)
    out, _ = watcher.communicate(timeout=20)
    expect(watcher.returncode, 0, "snapshot_watcher's exit after destroy")
    evs = [json.loads(line) for line in out.splitlines() if line.strip()]
    return [e for e in evs if e.get("event") == "corrupted"]


def point(d, name):
    """Fault point NAME as fault_point_list shows it."""
    for p in bdf(d, "fault_point_list")["points"]:
        if p["point"] == name:
            return p
    raise AssertionError("no fault point %s in fault_point_list" % name)


def finish(d, path, model):
    bdf(d, "fault_point_clear")
    d.alive()
    well_behaved(d.sock, "disk", path)
    d.stop()
    check(file_bytes(path) == bytes(model), "the origin's store differs from its acknowledged writes")


def check_corrupted(d, sid, watcher, at_take, model, c):
    """The invariants once a storage error has corrupted the image."""
    expect(corrupted_within(d), -5, "snapshot_info error_code after the storage failed")
    image_exact_or_eio(d, at_take)
    # the origin still serves: reads of what was written, and new writes
    for off in (0, 1 << 20, 7 << 20):
        err, data = c.read(off, 65536)
        expect(err, 0, "origin READ at %d" % off)
        check(data == model[off:off + 65536], "origin READ at %d: data differs" % off)
    write(c, model, 9 << 20, os.urandom(65536))
    expect(c.cmd(CMD_FLUSH)[0], 0, "origin FLUSH")
    evs = events(d, sid, watcher)
    expect(len(evs), 1, "corrupted events delivered to snapshot_watcher (%r)" % evs)
    expect(evs[0]["err_code"], -5, "the corrupted event's err_code")
    expect(evs[0]["device"], "disk", "the corrupted event's device")


def t_cow_write_fails(tmp):
    """The writer thread's store of a copy fails."""
    d, path = setup(tmp)
    model = bytearray(file_bytes(path))
    at_take = bytes(model)
    sid, watcher = take(d, tmp)
    bdf(d, "fault_point_set", "-P", "diff_storage.write", "-e", "EIO", "-c", "1")
    c = connect(d, "disk")
    write(c, model, 1 << 20, os.urandom(65536))   # its copy fails to be stored
    write(c, model, 5 << 20, os.urandom(4096))    # another chunk, after
    check_corrupted(d, sid, watcher, at_take, model, c)
    expect(point(d, "diff_storage.write")["injected"], 1, "faults injected at diff_storage.write")
    c.disconnect()
    c.close()
    finish(d, path, model)


def t_cow_write_fails_inline(tmp):
    """The copier stores its copy itself (the queue of one is full while the
    writer thread waits on a slow storage) and that store fails."""
    d, path = setup(tmp, ["--param", "chunk_maximum_in_queue=1"])
    model = bytearray(file_bytes(path))
    at_take = bytes(model)
    sid, watcher = take(d, tmp)
    # first the writer's store waits 2 s (it took chunk A off the queue),
    # then the next store fails: the copier's own, for chunk C
    bdf(d, "fault_point_set", "-P", "diff_storage.write", "-e", "none", "-w", "2000", "-c", "1")
    bdf(d, "fault_point_set", "-P", "diff_storage.write", "-e", "EIO", "-c", "1")
    c = connect(d, "disk")
    write(c, model, 0, os.urandom(4096))                 # chunk A: queued, the writer waits
    deadline = time.monotonic() + 10
    while point(d, "diff_storage.write")["rules"][0]["fired"] == 0:  # the writer is in its delay
        check(time.monotonic() < deadline, "the writer thread never stored chunk A")
        time.sleep(0.02)
    write(c, model, CHUNK, os.urandom(4096))             # chunk B: queued (one in the queue)
    t0 = time.monotonic()
    write(c, model, 2 * CHUNK, os.urandom(4096))         # chunk C: the queue is full, stored here: fails
    check(time.monotonic() - t0 < 1.5, "the write of chunk C waited for the slow writer thread")
    check_corrupted(d, sid, watcher, at_take, model, c)
    c.disconnect()
    c.close()
    finish(d, path, model)


def t_image_read_fails(tmp):
    """A copy in the storage cannot be read back when the image is read."""
    d, path = setup(tmp)
    model = bytearray(file_bytes(path))
    at_take = bytes(model)
    sid, watcher = take(d, tmp)
    c = connect(d, "disk")
    write(c, model, 1 << 20, os.urandom(65536))
    ci = connect(d, "disk-image")
    expect(ci.cmd(CMD_FLUSH)[0], 0, "image FLUSH (the copies stored)")
    err, data = ci.read(1 << 20, 65536)
    expect(err, 0, "image READ of a stored copy")
    check(data == at_take[(1 << 20):(1 << 20) + 65536], "image READ of a stored copy: data differs")
    bdf(d, "fault_point_set", "-P", "diff_storage.read", "-e", "EIO", "-c", "1")
    err, data = ci.read((1 << 20) - 4096, 65536)
    expect(err, EIO, "image READ when the storage cannot be read")
    ci.disconnect()
    ci.close()
    expect(point(d, "diff_storage.read")["injected"], 1, "faults injected at diff_storage.read")
    check_corrupted(d, sid, watcher, at_take, model, c)
    c.disconnect()
    c.close()
    finish(d, path, model)


def t_slow_storage(tmp):
    """Copies the storage is slow to take (delayed, no error): the image
    reads them from their queue meanwhile, and stays exact; nothing is
    corrupted."""
    d, path = setup(tmp)
    model = bytearray(file_bytes(path))
    at_take = bytes(model)
    sid, watcher = take(d, tmp)
    bdf(d, "fault_point_set", "-P", "diff_storage.write", "-e", "none", "-w", "300", "-c", "3")
    c = connect(d, "disk")
    for k in range(3):
        write(c, model, k * 3 * CHUNK + 8192, os.urandom(8192))
    expect(image_exact_or_eio(d, at_take), 0, "image READs answered EIO while the storage was slow")
    ci = connect(d, "disk-image")
    expect(ci.cmd(CMD_FLUSH)[0], 0, "image FLUSH after slow copies")
    ci.disconnect()
    ci.close()
    expect(image_exact_or_eio(d, at_take), 0, "image READs answered EIO after slow copies")
    expect(bdf(d, "snapshot_info", "-d", "disk")["error_code"], 0, "error_code after slow copies")
    expect(len(events(d, sid, watcher)), 0, "corrupted events after slow copies")
    c.disconnect()
    c.close()
    finish(d, path, model)


main([
    ("cow_write_fails", t_cow_write_fails),
    ("cow_write_fails_inline", t_cow_write_fails_inline),
    ("image_read_fails", t_image_read_fails),
    ("slow_storage", t_slow_storage),
])
