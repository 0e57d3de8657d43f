#!/usr/bin/env python3
"""A lean loopback client for scripts/bench-registry.sh, so that the client is not what is measured.

  http-drain.py get HOST PORT PATH   one HTTP/1.1 GET; the body is read with recv_into() into
                                     one reused buffer and dropped, as `cat > /dev/null` drops
                                     what it reads; checks the 200 and the Content-Length
  http-drain.py ceiling FILE         the same reading loop against a bare TCP sender that pushes
                                     FILE with sendfile(2) over loopback: what any server on
                                     this machine could reach with this client

With SPLICE=1 the body is moved with splice(2) from the socket through a pipe into /dev/null
instead: the kernel hands the received pages on without copying them into the client, so the
time is what the server and loopback take, not the client's copy of every byte (which costs
curl more CPU than the server spends sending).

Prints the seconds the transfer took and the bytes it carried. BUF sets the buffer size.
"""
import fcntl
import os
import socket
import sys
import threading
import time

BUF = int(os.environ.get("BUF", str(4 << 20)))
SPLICE = os.environ.get("SPLICE") == "1"
F_SETPIPE_SZ = 1031


def drain(sock, first=b""):
    """Reads `sock` to its end and drops the bytes; returns how many there were."""
    if SPLICE:
        return len(first) + splice_drain(sock)
    buf = memoryview(bytearray(BUF))
    total = len(first)
    while True:
        n = sock.recv_into(buf)
        if n == 0:
            return total
        total += n


def splice_drain(sock):
    """Moves `sock`'s bytes through a pipe into /dev/null without copying them to user space."""
    pipe_r, pipe_w = os.pipe()
    try:
        # A larger pipe moves more per call; the default (64 KiB) still works if refused.
        fcntl.fcntl(pipe_w, F_SETPIPE_SZ, 1 << 20)
    except OSError:
        pass
    null = os.open(os.devnull, os.O_WRONLY)
    total = 0
    try:
        while True:
            n = os.splice(sock.fileno(), pipe_w, 1 << 20)
            if n == 0:
                return total
            total += n
            while n:
                n -= os.splice(pipe_r, null, n)
    finally:
        for fd in (pipe_r, pipe_w, null):
            os.close(fd)


def read_head(sock):
    """Reads the response head and no byte more, so that the body stays in the socket (for
    splice); returns (head, bytes after the head already read)."""
    if not SPLICE:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(65536)
            if not chunk:
                return head, None
            head += chunk
        head, rest = head.split(b"\r\n\r\n", 1)
        return head, rest
    while True:
        peek = sock.recv(65536, socket.MSG_PEEK)
        if not peek:
            return peek, None
        end = peek.find(b"\r\n\r\n")
        if end >= 0:
            head = sock.recv(end + 4)
            while len(head) < end + 4:
                head += sock.recv(end + 4 - len(head))
            return head[:end], b""
        if len(peek) >= 65536:
            return peek, None
        time.sleep(0.0005)  # the head is not all here yet; peek returns at once until it is


def get(host, port, path):
    t = time.perf_counter()
    sock = socket.create_connection((host, port))
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
    head, rest = read_head(sock)
    if rest is None:
        sys.exit(f"http-drain: the server closed before its headers ended: {head[:200]!r}")
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
