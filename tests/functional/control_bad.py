#!/usr/bin/python3
"""Bad control input: every malformed request gets a clear error response, the
connection stays usable where the framing allows, and the daemon goes on."""

import json
import os
import socket

from nbdraw import Daemon, check, main


class Ctl:
    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(20)
        self.s.connect(path)
        self.buf = b""

    def send_raw(self, data):
        self.s.sendall(data)

    def line(self):
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise EOFError("control connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def raw(self, data):
        self.send_raw(data if data.endswith(b"\n") else data + b"\n")
        return self.line()

    def call(self, command, **args):
        return self.raw(json.dumps({"command": command, "args": args}).encode())


def image(tmp):
    path = os.path.join(tmp, "disk.img")
    with open(path, "wb") as f:
        f.write(os.urandom(8 << 20))
    return path


def error_is(resp, name):
    check(resp["ok"] is False, "expected an error, got %r" % resp)
    check(resp["errno"] == name, "expected %s, got %r" % (name, resp))
    check(resp["message"], "an error has a message")


def t_malformed(tmp):
    d = Daemon(tmp, ["disk=" + image(tmp)])
    c = Ctl(d.control)
    for bad in (b"{", b"not json", b'{"command": "version"} trailing', b"[1,2,3]", b'"str"', b"42",
                b'{"command": 42}', b'{"args": {}}', b'{"command": "version", "extra": 1}',
                b"[" * 10000 + b"]" * 10000, b'{"command": "version", "args": [1]}', b"\xff\xfe{}"):
        error_is(c.raw(bad), "EINVAL")
    check(c.call("version")["ok"], "the connection goes on after bad requests")


def t_unknown_command_and_args(tmp):
    d = Daemon(tmp, ["disk=" + image(tmp)])
    c = Ctl(d.control)
    error_is(c.call("nosuch"), "EINVAL")
    error_is(c.call("cbtinfo"), "EINVAL")                      # missing device
    error_is(c.call("cbtinfo", device=1), "EINVAL")            # wrong type
    error_is(c.call("cbtinfo", device="disk", bogus=1), "EINVAL")
    error_is(c.call("device_add", device="x", file="/tmp", ro="yes"), "EINVAL")
    error_is(c.call("readcbtmap", device="disk", offset=-1), "EINVAL")
    error_is(c.call("readcbtmap", device="disk", file="/etc/passwd"), "EINVAL")  # CLI-only argument
    error_is(c.call("markdirtyblock", device="disk", ranges=[]), "EINVAL")
    error_is(c.call("markdirtyblock", device="disk", ranges=[[1]]), "EINVAL")
    error_is(c.call("markdirtyblock", device="disk", ranges=[[1, -2]]), "EINVAL")
    error_is(c.call("markdirtyblock", device="disk", ranges="0:8"), "EINVAL")
    error_is(c.call("cbtinfo", device="nope"), "ENODEV")
    error_is(c.call("cbtinfo", device="disk"), "ENOENT")
    check(c.call("attach", device="disk")["ok"], "attach")
    error_is(c.call("attach", device="disk"), "EALREADY")
    r = c.call("cbtinfo", device="disk")
    check(r["ok"] and r["result"]["block_count"] == 128, "cbtinfo %r" % r)


def t_oversized(tmp):
    d = Daemon(tmp, ["disk=" + image(tmp)])
    c = Ctl(d.control)
    big = b'{"command": "version", "args": {"x": "' + b"a" * (5 << 20) + b'"}}\n'
    error_is(c.raw(big), "EMSGSIZE")
    check(c.call("version")["ok"], "the connection goes on after an oversized line")


def t_disconnects(tmp):
    d = Daemon(tmp, ["disk=" + image(tmp)])
    for data in (b'{"command": "ver', b"", b'{"command": "version"}'):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(d.control)
        if data:
            s.sendall(data)
        s.close()
    # many clients at once, some idle
    idle = []
    for _ in range(50):
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(d.control)
        idle.append(s)
    c = Ctl(d.control)
    check(c.call("status")["ok"], "status with 50 idle control clients")
    for s in idle:
        s.close()
    d.alive()


if __name__ == "__main__":
    main([(name[2:], fn) for name, fn in list(globals().items()) if name.startswith("t_")])
