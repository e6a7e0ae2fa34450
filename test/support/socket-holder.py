#!/usr/bin/env python3
"""Holds listening sockets the way systemd does for a .socket unit (Accept=no), for the tests.

    socket-holder.py NAME=tcp:HOST:PORT|NAME=unix:PATH ...

Binds and listens on each socket (never accepts: the kernel queues connections while no daemon
runs), puts them on fds 3, 4, ... in the order given, and prints one JSON line
{"holder": "ready", "addresses": {NAME: "host:port" | "unix:/path"}}. Then reads JSON commands on
stdin, one per line:
  {"cmd": "start", "argv": [...], "env": {...}}  spawns argv with the sockets as fds 3.., LISTEN_FDS,
      LISTEN_FDNAMES and LISTEN_PID = the child's own pid (set in the child before exec, as systemd
      does); its stdout and stderr are the holder's. Prints {"holder": "started", "pid": N}.
  {"cmd": "term"}  SIGTERM to the child; {"holder": "exited", "pid": N, "code": C} follows when it ends.
End of stdin: the child gets SIGTERM, the holder exits when it has.
"""
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import threading

FIRST_FD = 3
out_lock = threading.Lock()


def say(message):
    with out_lock:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()


def bind(spec):
    kind, _, where = spec.partition(":")
    if kind == "tcp":
        host, _, port = where.rpartition(":")
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host.strip("[]"), int(port)))
        address = "%s:%d" % (host, s.getsockname()[1])
    elif kind == "unix":
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.bind(where)
        address = "unix:" + where
    else:
        raise SystemExit("unknown socket kind: " + spec)
    s.listen(1024)
    return s, address


def main():
    names, sockets, addresses = [], [], {}
    for arg in sys.argv[1:]:
        name, _, spec = arg.partition("=")
        s, address = bind(spec)
        names.append(name)
        sockets.append(s)
        addresses[name] = address
    # Move every socket above the target range first, then onto 3, 4, ...: no dup2 clobbers another.
    high = [fcntl.fcntl(s.fileno(), fcntl.F_DUPFD, 64) for s in sockets]
    for s in sockets:
        s.close()
    fds = []
    for i, fd in enumerate(high):
        os.dup2(fd, FIRST_FD + i)
        os.close(fd)
        fds.append(FIRST_FD + i)
    say({"holder": "ready", "addresses": addresses})

    child = None

    def wait_for(proc):
        code = proc.wait()
        say({"holder": "exited", "pid": proc.pid, "code": code})

    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "start":
            env = dict(os.environ, **command.get("env", {}))
            env["LISTEN_FDS"] = str(len(fds))
            env["LISTEN_FDNAMES"] = ":".join(names)
            # The child learns its own pid before exec, as under systemd: sh's $$ survives exec.
            argv = ["/bin/sh", "-c", 'LISTEN_PID=$$; export LISTEN_PID; exec "$@"', "sh"] + command["argv"]
            child = subprocess.Popen(argv, env=env, pass_fds=fds, cwd=command.get("cwd"))
            threading.Thread(target=wait_for, args=(child,), daemon=True).start()
            say({"holder": "started", "pid": child.pid})
        elif command["cmd"] == "term":
            if child is not None and child.poll() is None:
                child.send_signal(signal.SIGTERM)
    if child is not None and child.poll() is None:
        child.send_signal(signal.SIGTERM)
        child.wait()


if __name__ == "__main__":
    main()
