#!/usr/bin/env python3
"""The memory of idle connections: how much a broker's RSS grows per idle MQTT connection.

Usage: scripts/idle-rss.py BINARY tcp|ws N

Starts BINARY (`activity-broker`) with --listen and --ws-listen on free loopback ports, opens
one connection of the kind (so that one-time allocations are not counted), reads the broker's
VmRSS, opens N more idle MQTT 3.1.1 connections (CONNECT, CONNACK, then nothing; over ws: the
WebSocket upgrade with subprotocol mqtt, then the CONNECT in a binary frame), waits 2 s, reads
VmRSS again and prints the growth per connection. Standard library only; Linux (/proc). Each
run is a fresh broker process. Needs N + 64 open files (`ulimit -n`).
"""

import base64
import os
import socket
import subprocess
import sys
import time


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def connect_packet(client_id):
    body = b"\x00\x04MQTT\x04\x02\x00\x3c" + len(client_id).to_bytes(2, "big") + client_id
    return bytes([0x10, len(body)]) + body


def ws_frame(payload):
    """A masked binary frame (clients must mask, RFC 6455 section 5.3); payload below 126 bytes."""
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes([0x82, 0x80 | len(payload)]) + mask + masked


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        chunk = s.recv(n - len(out))
        if not chunk:
            raise EOFError("the broker closed the connection")
        out += chunk
    return out


def open_idle(kind, port, client_id):
    s = socket.create_connection(("127.0.0.1", port))
    if kind == "ws":
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall(
            (
                "GET /mqtt HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: Upgrade\r\n"
                "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Protocol: mqtt\r\n\r\n"
            ).encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += recv_exact(s, 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        s.sendall(ws_frame(connect_packet(client_id)))
        assert recv_exact(s, 6) == b"\x82\x04\x20\x02\x00\x00", "CONNACK in a binary frame"
    else:
        s.sendall(connect_packet(client_id))
        assert recv_exact(s, 4) == b"\x20\x02\x00\x00", "CONNACK"
    return s


def main():
    binary, kind, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
    assert kind in ("tcp", "ws"), "kind is tcp or ws"
    tcp_port, ws_port = free_port(), free_port()
    broker = subprocess.Popen(
        [binary, "--listen", f"127.0.0.1:{tcp_port}", "--ws-listen", f"127.0.0.1:{ws_port}"],
        env={**os.environ, "RUST_LOG": "warn"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port = ws_port if kind == "ws" else tcp_port
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        sockets = [open_idle(kind, port, b"warm-up")]
        time.sleep(0.5)
        before = rss_kb(broker.pid)
        for i in range(n):
            sockets.append(open_idle(kind, port, f"{kind}-idle-{i}".encode()))
        time.sleep(2)
        after = rss_kb(broker.pid)
        per = (after - before) * 1024 / n
        print(f"{kind}: {n} idle connections, RSS {before} -> {after} KiB, {per:.0f} bytes each")
        for s in sockets:
            s.close()
    finally:
        broker.kill()
        broker.wait()


if __name__ == "__main__":
    main()
