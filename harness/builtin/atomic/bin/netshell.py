#!/usr/bin/env python3
"""Loopback-only shells and requests; everything stays on 127.0.0.1 of the current network
namespace, and every listener is one this script starts itself.

usage: netshell.py reverse RUN_ID   a child connects to our listener and runs a shell with
                                    stdin/stdout/stderr dup2()ed onto the socket
       netshell.py bind RUN_ID      a child listens, the script connects, and the child runs
                                    a shell on the accepted socket (a bind shell)
       netshell.py http RUN_ID      a plain HTTP GET to our own listener (benign control)
In a fresh private network namespace lo is down: it is brought up there only (the host's lo
is always up and is never touched).
"""

import os
import socket
import subprocess
import sys
import threading

SHELL_CMD = 'echo "shell of $SHADOWTEST_RUN_ID"; id -u'


def lo_up():
    """lo of a fresh private network namespace is down (sysfs may still show the host's, so
    ask the kernel through ip): bring it up there; an up lo (the host's) is left alone."""
    flags = subprocess.run(["ip", "-o", "link", "show", "lo"], capture_output=True, text=True,
                           check=True).stdout.partition("<")[2].partition(">")[0].split(",")
    if "UP" not in flags:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)


def shell_on(sock):
    """fork a child whose stdio is the socket, running a short shell command"""
    child = os.fork()
    if child == 0:
        try:
            for fd in (0, 1, 2):
                os.dup2(sock.fileno(), fd)
            os.execv("/bin/sh", ["sh", "-c", SHELL_CMD])  # noqa: S606 (a fixed command)
        finally:
            os._exit(127)
    return child


def read_all(conn):
    chunks = []
    while data := conn.recv(4096):
        chunks.append(data)
    return b"".join(chunks).decode(errors="replace").strip()


def reverse():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        out = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        child = shell_on(out)
        out.close()
        with conn:
            text = read_all(conn)
        os.waitpid(child, 0)
    print(f"reverse shell output: {text!r}")
    return text


def bind():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = socket.create_connection(listener.getsockname())
        conn, _ = listener.accept()
        child = shell_on(conn)
        conn.close()
        with client:
            text = read_all(client)
        os.waitpid(child, 0)
    print(f"bind shell output: {text!r}")
    return text


def http(run_id):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.request import urlopen

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):  # http.server's method name
            body = f"hello {run_id}".encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with urlopen(f"http://127.0.0.1:{server.server_port}/", timeout=5) as resp:
            text = resp.read().decode()
    finally:
        server.shutdown()
        server.server_close()
    print(f"http answered: {text}")
    return text


def main():
    mode, run_id = sys.argv[1], sys.argv[2]
    lo_up()
    if mode == "reverse":
        ok = run_id in reverse()
    elif mode == "bind":
        ok = run_id in bind()
    elif mode == "http":
        ok = run_id in http(run_id)
    else:
        print(f"unknown mode {mode!r}: expected reverse, bind or http", file=sys.stderr)
        return 2
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
