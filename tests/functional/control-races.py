#!/usr/bin/python3
"""Control commands that race: each pair below runs on two connections at
once, many times, and the daemon must answer every command with success or
a clean error, stay up, and end consistent. Before the busy checks moved
under the device's drain lock, a detach slipped between snapshot_add's check
for a tracker and the take, which then used a tracker that was gone."""

import json
import os
import socket
import threading

from nbdraw import Daemon, check, main

ROUNDS = 400


class Control:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(30)
        self.s.connect(path)
        self.buf = b""

    def __call__(self, command, **args):
        self.s.sendall(json.dumps({"command": command, "args": args}).encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("control connection closed (the daemon died?)")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)


def run_pair(d, a, b):
    """Run A(ctl, i) and B(ctl, i) for i in range(ROUNDS) on two threads."""
    errors = []

    def loop(fn):
        try:
            ctl = Control(d.control)
            for i in range(ROUNDS):
                fn(ctl, i)
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=loop, args=(fn,)) for fn in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    check(not errors, "%r" % errors)
    check(d.proc.poll() is None, "bdfilterd died (status %r)" % d.proc.poll())


def answered(resp, *allowed):
    check(resp["ok"] or resp["errno"] in allowed, "unexpected answer %r" % resp)
    return resp["ok"]


def t_detach_against_snapshot_take(tmp):
    img = os.path.join(tmp, "d.img")
    diff = os.path.join(tmp, "diff.img")
    with open(img, "wb") as f:
        f.write(os.urandom(4 << 20))
    with open(diff, "wb") as f:
        f.truncate(64 << 20)
    d = Daemon(tmp, ["d=" + img])

    def detacher(ctl, i):
        answered(ctl("attach", device="d"), "EALREADY")
        answered(ctl("detach", device="d"), "EBUSY", "ENOENT")

    def snapshotter(ctl, i):
        r = ctl("snapshot_create", device=["d"])
        if not answered(r, "ENOENT"):
            return
        sid = r["result"]["id"]
        answered(ctl("snapshot_appendstorage", id=sid, file=diff))
        # held since create: the tracker cannot go before the take
        answered(ctl("snapshot_take", id=sid))
        answered(ctl("snapshot_destroy", id=sid))

    run_pair(d, detacher, snapshotter)
    ctl = Control(d.control)
    check(ctl("snapshot_collect")["result"]["id"] == [], "snapshots left")
    answered(ctl("attach", device="d"), "EALREADY")
    check(ctl("cbtinfo", device="d")["ok"], "the tracker works after the races")
    d.stop()


def t_remove_against_snapshot_add(tmp):
    img = os.path.join(tmp, "d.img")
    diff = os.path.join(tmp, "diff.img")
    with open(img, "wb") as f:
        f.write(os.urandom(4 << 20))
    with open(diff, "wb") as f:
        f.truncate(64 << 20)
    keep = os.path.join(tmp, "keep.img")
    with open(keep, "wb") as f:
        f.truncate(1 << 20)
    d = Daemon(tmp, ["keep=" + keep])

    def remover(ctl, i):
        if answered(ctl("device_add", device="d", file=img), "EEXIST"):
            answered(ctl("attach", device="d"), "EALREADY", "ENODEV")
        answered(ctl("device_remove", device="d"), "EBUSY", "ENODEV")

    def snapshotter(ctl, i):
        r = ctl("snapshot_create")
        check(r["ok"], "snapshot_create: %r" % r)
        sid = r["result"]["id"]
        if answered(ctl("snapshot_add", id=sid, device="d"), "ENODEV", "ENOENT"):
            answered(ctl("snapshot_appendstorage", id=sid, file=diff))
            answered(ctl("snapshot_take", id=sid))
        answered(ctl("snapshot_destroy", id=sid))

    run_pair(d, remover, snapshotter)
    ctl = Control(d.control)
    check(ctl("snapshot_collect")["result"]["id"] == [], "snapshots left")
    d.stop()


if __name__ == "__main__":
    main([(name[2:], fn) for name, fn in list(globals().items()) if name.startswith("t_")])
