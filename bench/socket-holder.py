#!/usr/bin/env python3
"""Holds a listening socket as systemd holds a socket unit's, for bench/restart.

    socket-holder.py PORT -- COMMAND [ARGS...]

Listens on 127.0.0.1:PORT (backlog 4096) and runs COMMAND with the socket as descriptor 3,
LISTEN_FDS=1, LISTEN_FDNAMES=main and LISTEN_PID = the command's own pid (systemd's socket
activation protocol). SIGUSR1 restarts the command as `systemctl restart` would: SIGTERM, wait
for it to exit, start it again on the same socket. SIGTERM stops it and exits.
"""
import os, signal, socket, subprocess, sys, threading

port = int(sys.argv[1])
command = sys.argv[sys.argv.index("--") + 1:]
listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
listener.bind(("127.0.0.1", port))
listener.listen(4096)
held = os.dup2(listener.fileno(), 100, inheritable=False)

def start():
    env = dict(os.environ, LISTEN_FDS="1", LISTEN_FDNAMES="main")
    env.pop("LISTEN_PID", None)
    return subprocess.Popen(["/bin/sh", "-c", 'LISTEN_PID=$$ exec "$0" "$@"'] + command, env=env,
                            preexec_fn=lambda: os.dup2(held, 3), pass_fds=(3,))

child = start()
lock = threading.Lock()
restart_requested = threading.Event()
stop_requested = threading.Event()
signal.signal(signal.SIGUSR1, lambda *_: restart_requested.set())
signal.signal(signal.SIGTERM, lambda *_: stop_requested.set())
while not stop_requested.is_set():
    if restart_requested.wait(0.05):
        restart_requested.clear()
        child.terminate()
        child.wait()
        child = start()
child.terminate()
child.wait()
