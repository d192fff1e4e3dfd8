#!/usr/bin/env python3
"""Memory per client id that came and went (docs/scale.md, "Client ids that come and go").

Usage: scripts/client-id-churn.py PORT COUNT PREFIX BROKER_PID [--parallel N]

Connects COUNT MQTT 3.1.1 clients to 127.0.0.1:PORT, each with its own client id
(PREFIX-0 .. PREFIX-(COUNT-1)), N at a time: CONNECT (clean session), CONNACK, DISCONNECT.
Prints the broker's VmRSS before and after and the growth per id. Standard library only.
"""

import argparse
import socket
import threading
import time


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS"):
                return int(line.split()[1])
    raise SystemExit("no VmRSS")


def connect_packet(client_id):
    cid = client_id.encode()
    variable = b"\x00\x04MQTT\x04\x02\x00\x3c"
    payload = len(cid).to_bytes(2, "big") + cid
    return bytes([0x10, len(variable) + len(payload)]) + variable + payload


def come_and_go(port, client_id):
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(connect_packet(client_id))
        got = b""
        while len(got) < 4:
            chunk = s.recv(4 - len(got))
            if not chunk:
                raise SystemExit(f"{client_id}: closed before its CONNACK")
            got += chunk
        if got != b"\x20\x02\x00\x00":
            raise SystemExit(f"{client_id}: refused: {got.hex()}")
        s.sendall(b"\xe0\x00")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("port", type=int)
    ap.add_argument("count", type=int)
    ap.add_argument("prefix")
    ap.add_argument("pid", type=int)
    ap.add_argument("--parallel", type=int, default=4)
    args = ap.parse_args()

    def lane(first):
        for i in range(first, args.count, args.parallel):
            come_and_go(args.port, f"{args.prefix}-{i}")

    before = rss_kib(args.pid)
    started = time.time()
    lanes = [threading.Thread(target=lane, args=(k,)) for k in range(args.parallel)]
    for t in lanes:
        t.start()
    for t in lanes:
        t.join()
    after = rss_kib(args.pid)
    print(
        f"{args.prefix}: {args.count} client ids in {time.time() - started:.1f} s, "
        f"RSS {before} -> {after} KiB, {(after - before) * 1024 / args.count:.0f} B per id"
    )


if __name__ == "__main__":
    main()
