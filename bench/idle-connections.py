#!/usr/bin/env python3
"""Open many idle keep-alive connections to an HTTP/1.1 server and hold them.

    idle-connections.py HOST PORT COUNT [--path /healthz] [--hold SECONDS] [--batch N]

Each connection sends one `GET PATH HTTP/1.1` with `Connection: keep-alive`, reads
its answer, and then stays open, saying nothing. Connections are opened in batches
(non-blocking sockets, one selector), so that the server's accept backlog never
overflows. When all are open and answered, one line goes to stdout:

    idle open=<connections still open> answered=<responses with status 200> failed=<n>

and the connections are held until SIGTERM/SIGINT or --hold seconds, whichever is
first; a connection the server closes meanwhile is counted, and the final line

    idle closed_by_server=<n>

is printed on exit. Used by scripts/bench to measure the daemon's memory with
many idle clients; the caller must raise `ulimit -n` above COUNT.
"""

import argparse
import selectors
import signal
import socket
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("count", type=int)
    parser.add_argument("--path", default="/healthz")
    parser.add_argument("--hold", type=float, default=600.0)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--timeout", type=float, default=60.0, help="to open and answer all")
    args = parser.parse_args()

    request = (
        f"GET {args.path} HTTP/1.1\r\nHost: {args.host}:{args.port}\r\n"
        "Connection: keep-alive\r\n\r\n"
    ).encode()
    selector = selectors.DefaultSelector()
    # Per socket: bytes received so far (until the end of the response headers and
    # the body its Content-Length names), and whether it is answered.
    received: dict[socket.socket, bytes] = {}
    answered = 0
    failed = 0
    opened = 0
    deadline = time.monotonic() + args.timeout

    def complete(data: bytes) -> bool:
        head, sep, body = data.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = 0
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value.strip())
        return len(body) >= length

    def fail(sock: socket.socket) -> None:
        nonlocal failed
        failed += 1
        selector.unregister(sock)
        received.pop(sock, None)
        sock.close()

    pending = 0  # connections sent but not yet answered
    while (opened < args.count or pending) and time.monotonic() < deadline:
        # Open the next batch once the previous one is mostly answered.
        if opened < args.count and pending < args.batch:
            for _ in range(min(args.batch, args.count - opened)):
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                sock.setblocking(False)
                sock.connect_ex((args.host, args.port))
                received[sock] = b""
                selector.register(sock, selectors.EVENT_WRITE)
                opened += 1
                pending += 1
        for key, events in selector.select(timeout=0.5):
            sock = key.fileobj
            if events & selectors.EVENT_WRITE:
                error = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if error:
                    pending -= 1
                    fail(sock)
                    continue
                sock.sendall(request)
                selector.modify(sock, selectors.EVENT_READ)
            elif events & selectors.EVENT_READ:
                try:
                    chunk = sock.recv(65536)
                except OSError:
                    chunk = b""
                if not chunk:
                    pending -= 1
                    fail(sock)
                    continue
                received[sock] += chunk
                if complete(received[sock]):
                    pending -= 1
                    if received[sock].startswith(b"HTTP/1.1 200"):
                        answered += 1
                    else:
                        failed += 1
                    received[sock] = b""
                    # From now on any readable event means the server closed it.
                    selector.modify(sock, selectors.EVENT_READ, data="idle")

    still_open = len(received)
    print(f"idle open={still_open} answered={answered} failed={failed + pending}", flush=True)

    stop = False

    def on_signal(signum, frame):
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    closed_by_server = 0
    end = time.monotonic() + args.hold
    while not stop and time.monotonic() < end:
        for key, _ in selector.select(timeout=0.2):
            sock = key.fileobj
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            if not chunk:
                closed_by_server += 1
                selector.unregister(sock)
                received.pop(sock, None)
                sock.close()
    print(f"idle closed_by_server={closed_by_server}", flush=True)
    for sock in list(received):
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
