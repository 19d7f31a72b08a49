#!/usr/bin/python3
"""The CBT state directory when its writes fail (the fault points
state.write, state.fsync, state.rename and dirty_log.write, dirty_log.sync;
docs/faults.md, docs/cbt-state.md).

The invariant: whatever save fails, NAME.cbt never loads as CLEAN without the
changes made since, so the next start never reports a map that misses a
write. After the restart either the generation is new or the map corrupted
(the next backup is a full one), or every block written since the last take
is changed in the next take's map, and the snapshot numbers never go back
behind a take that was made.

Each case: a save that fails at a clean stop (each of the three steps; the
daemon still exits 0, leaves no NAME.cbt.tmp and no CLEAN file); a
checkpoint that fails at a snapshot take (each step; the take stands), then
kill -9, and then a clean stop that succeeds; a write-intent log whose write
or flush fails (the origin write still succeeds, the log is given up), then
kill -9. The daemon lives through each fault and serves a well-behaved
client."""

import json
import os
import subprocess
import time

from nbdraw import CMD_FLAG_FUA, Daemon, check, expect, main

SIZE = 64 << 20
BLOCK = 64 << 10  # the CBT block of a 64 MiB device
MiB = 1 << 20


def bdf(d, *args):
    out = subprocess.run([os.environ["BDFILTER"], "--control", d.control, "--json"] + list(args),
                         capture_output=True, text=True)
    check(out.returncode == 0, "bdfilter %s: %s" % (" ".join(args), out.stderr.strip()))
    return json.loads(out.stdout) if out.stdout.strip() else {}


def start(tmp):
    for sock in ("nbd.sock", "control.sock"):  # left by a kill -9
        if os.path.exists(os.path.join(tmp, sock)):
            os.unlink(os.path.join(tmp, sock))
    d = Daemon(tmp, ["disk=%s,filter=tracker" % os.path.join(tmp, "disk.img")],
               ["--state-dir", os.path.join(tmp, "state")])
    for _ in range(200):
        if os.path.exists(d.control):
            break
        time.sleep(0.05)
    return d


def kill9(d):
    Daemon.running.remove(d)
    d.proc.kill()
    d.proc.wait()


def setup(tmp):
    with open(os.path.join(tmp, "disk.img"), "wb") as f:
        f.truncate(SIZE)
    with open(os.path.join(tmp, "diff.img"), "wb") as f:
        f.truncate(64 << 20)
    return start(tmp)


def cbt_file(tmp):
    return os.path.join(tmp, "state", "disk.cbt")


def flags(tmp):
    with open(cbt_file(tmp), "rb") as f:
        return f.read(16)[12]


def take(d, tmp):
    """A snapshot taken and destroyed: the CBT moves on a number."""
    sid = bdf(d, "snapshot_create", "-d", "disk")["id"]
    bdf(d, "snapshot_appendstorage", "-i", sid, "-f", os.path.join(tmp, "diff.img"))
    bdf(d, "snapshot_take", "-i", sid)
    bdf(d, "snapshot_destroy", "-i", sid)


def write(d, offsets):
    c = d.client()
    c.connect("disk")
    for off in offsets:
        expect(c.write(off, os.urandom(4096), CMD_FLAG_FUA), 0, "WRITE at %d" % off)
    c.disconnect()
    c.close()


def logged(tmp, text):
    with open(os.path.join(tmp, "bdfilterd.log")) as f:
        check(text in f.read(), "the daemon's log does not say %r" % text)


def no_missing_changes(d, tmp, gen, changes, written):
    """After a restart: a new generation or a corrupted map (a full backup
    next), or the same generation, its numbers not behind CHANGES, and every
    block of WRITTEN (since take CHANGES) changed in the next take's map.
    Which one it was."""
    info = bdf(d, "cbtinfo", "-d", "disk")
    if info["generation_id"] != gen or info["corrupted"]:
        return "full"
    check(info["changes_number"] >= changes,
          "changes_number went back from %d to %d in generation %s" % (changes, info["changes_number"], gen))
    take(d, tmp)
    path = os.path.join(tmp, "map")
    bdf(d, "readcbtmap", "-d", "disk", "-f", path)
    with open(path, "rb") as f:
        m = f.read()
    missing = [off for off in written if m[off // BLOCK] <= changes]
    check(not missing, "the map after the restart misses writes at %s: a clean map without them" % missing)
    return "incremental"


def alive(d):
    bdf(d, "fault_point_clear")
    d.alive()
    write(d, [60 * MiB])


def t_stop_save_fails(tmp):
    """The CLEAN save at a clean stop fails, at each of its steps."""
    d = setup(tmp)
    for point in ("state.write", "state.fsync", "state.rename"):
        take(d, tmp)
        info = bdf(d, "cbtinfo", "-d", "disk")
        gen, changes = info["generation_id"], info["changes_number"]
        written = [MiB, 10 * MiB + 4096, 32 * MiB]
        write(d, written)
        bdf(d, "fault_point_set", "-P", point, "-e", "EIO", "-c", "1")
        d.alive()
        d.stop()  # exit 0 all the same
        logged(tmp, "CBT not saved cleanly")
        check(not flags(tmp) & 1, "%s failed at stop, and disk.cbt says CLEAN" % point)
        check(not os.path.exists(cbt_file(tmp) + ".tmp"), "%s failed at stop: disk.cbt.tmp left" % point)
        d = start(tmp)
        # the checkpoint and the write-intent log: the same generation, complete
        expect(no_missing_changes(d, tmp, gen, changes, written), "incremental",
               "the map after %s failed at stop" % point)
        alive(d)


def t_take_save_fails(tmp):
    """The checkpoint at a take fails, at each of its steps; then kill -9
    (the checkpoint before the take must not come back), or a clean stop
    (which saves the map whole)."""
    d = setup(tmp)
    for point in ("state.write", "state.fsync", "state.rename"):
        write(d, [2 * MiB])
        bdf(d, "fault_point_set", "-P", point, "-e", "EIO", "-c", "1")
        take(d, tmp)  # the take stands
        logged(tmp, "the checkpoint could not be saved")
        info = bdf(d, "cbtinfo", "-d", "disk")
        gen, changes = info["generation_id"], info["changes_number"]
        check("wil_regions" not in info, "%s failed at the take and the write-intent log is still used" % point)
        written = [3 * MiB, 40 * MiB]
        write(d, written)
        d.alive()
        kill9(d)
        d = start(tmp)
        got = no_missing_changes(d, tmp, gen, changes, written)
        expect(got, "full", "the map after %s failed at a take, then kill -9" % point)

        # the same fault, then a clean stop that succeeds: the map is whole
        bdf(d, "fault_point_set", "-P", point, "-e", "EIO", "-c", "1")
        take(d, tmp)
        info = bdf(d, "cbtinfo", "-d", "disk")
        gen, changes = info["generation_id"], info["changes_number"]
        written = [5 * MiB, 50 * MiB]
        write(d, written)
        alive(d)
        d.stop()
        check(flags(tmp) & 1, "a clean stop after %s failed at a take did not save CLEAN" % point)
        d = start(tmp)
        expect(no_missing_changes(d, tmp, gen, changes, written), "incremental",
               "the map after %s failed at a take, then a clean stop" % point)
        alive(d)


def t_wil_fails(tmp):
    """The write-intent log's write or flush fails: the write goes on, the
    log is given up, and after kill -9 the map is a new one."""
    d = setup(tmp)
    for point in ("dirty_log.write", "dirty_log.sync"):
        take(d, tmp)
        info = bdf(d, "cbtinfo", "-d", "disk")
        gen, changes = info["generation_id"], info["changes_number"]
        check("wil_regions" in info, "no write-intent log before the fault")
        bdf(d, "fault_point_set", "-P", point, "-e", "EIO", "-c", "1")
        written = [20 * MiB]  # a region clean since the take: its mark is written and flushed
        write(d, written)
        info = bdf(d, "cbtinfo", "-d", "disk")
        check("wil_regions" not in info, "%s failed and the write-intent log is still used" % point)
        check(not os.path.exists(os.path.join(tmp, "state", "disk.wil")), "%s failed: disk.wil left" % point)
        d.alive()
        kill9(d)
        d = start(tmp)
        expect(no_missing_changes(d, tmp, gen, changes, written), "full",
               "the map after %s failed, then kill -9" % point)
        alive(d)


main([
    ("stop_save_fails", t_stop_save_fails),
    ("take_save_fails", t_take_save_fails),
    ("wil_fails", t_wil_fails),
])
