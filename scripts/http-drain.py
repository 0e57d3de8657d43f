#!/usr/bin/env python3
"""A lean loopback client for scripts/bench-registry.sh, so that the client is not what is measured.

  http-drain.py get HOST PORT PATH   one HTTP/1.1 GET; the body is read with recv_into() into
                                     one reused buffer and dropped, as `cat > /dev/null` drops
                                     what it reads; checks the 200 and the Content-Length
  http-drain.py ceiling FILE         the same reading loop against a bare TCP sender that pushes
                                     FILE with sendfile(2) over loopback: what any server on
                                     this machine could reach with this client

Prints the seconds the transfer took and the bytes it carried. BUF sets the buffer size.
"""
import os
import socket
import sys
import threading
import time

BUF = int(os.environ.get("BUF", str(4 << 20)))


def drain(sock, first=b""):
    """Reads `sock` to its end into one reused buffer; returns the bytes read."""
    buf = memoryview(bytearray(BUF))
    total = len(first)
    while True:
        n = sock.recv_into(buf)
        if n == 0:
            return total
        total += n


def get(host, port, path):
    t = time.perf_counter()
    sock = socket.create_connection((host, port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(65536)
        if not chunk:
            sys.exit(f"http-drain: the server closed before its headers ended: {head[:200]!r}")
        head += chunk
    head, rest = head.split(b"\r\n\r\n", 1)
    lines = head.decode("latin-1").split("\r\n")
    if lines[0].split(" ")[1:2] != ["200"]:
        sys.exit(f"http-drain: {path}: {lines[0]}")
    fields = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:] if ":" in l)}
    body = drain(sock, rest)
    took = time.perf_counter() - t
    want = int(fields.get("content-length", body))
    if body != want:
        sys.exit(f"http-drain: {path}: {body} bytes of {want}")
    print(f"{took:.4f} {body}")


def ceiling(path):
    size = os.path.getsize(path)
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)

    def send():
        conn, _ = listener.accept()
        with open(path, "rb") as f:
            conn.sendfile(f)
        conn.close()

    sender = threading.Thread(target=send)
    sender.start()
    t = time.perf_counter()
    sock = socket.create_connection(listener.getsockname())
    body = drain(sock)
    took = time.perf_counter() - t
    sender.join()
    if body != size:
        sys.exit(f"http-drain: ceiling: {body} bytes of {size}")
    print(f"{took:.4f} {body}")


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "get":
        get(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    elif len(sys.argv) == 3 and sys.argv[1] == "ceiling":
        ceiling(sys.argv[2])
    else:
        sys.exit(__doc__)
