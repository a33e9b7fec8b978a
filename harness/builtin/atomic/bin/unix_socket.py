#!/usr/bin/env python3
"""Talk to a container-runtime-like API socket that this script serves itself.

usage: unix_socket.py SOCKET_PATH
Serves a one-request HTTP answer on SOCKET_PATH (e.g. <run dir>/var/run/docker.sock), then
connects to it as a client would (GET /version) and prints
'runtime socket answered: <body>'. The socket file is removed at the end.
"""

import os
import socket
import sys
import threading


def serve(listener):
    conn, _ = listener.accept()
    with conn:
        conn.recv(4096)
        body = b'{"ApiVersion":"shadowtest"}'
        conn.sendall(b"HTTP/1.0 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)


def main():
    path = sys.argv[1]
    os.makedirs(os.path.dirname(path), exist_ok=True)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    server = threading.Thread(target=serve, args=(listener,), daemon=True)
    server.start()
    try:
        with socket.socket(socket.AF_UNIX) as client:
            client.connect(path)
            client.sendall(b"GET /version HTTP/1.0\r\nHost: docker\r\n\r\n")
            data = b""
            while chunk := client.recv(4096):
                data += chunk
        server.join(5)
    finally:
        listener.close()
        os.unlink(path)
    body = data.partition(b"\r\n\r\n")[2].decode()
    print(f"runtime socket answered: {body}")
    return 0 if "shadowtest" in body else 1


if __name__ == "__main__":
    sys.exit(main())
