#!/usr/bin/env python3
"""Soak: a steady mixed load on activity-broker for a configurable time (issue 19).

Usage:
  scripts/soak.py --broker target/release/activity-broker \
      --kafka-count target/debug/kafka-count --minutes 60 --out soak-out \
      [--svg docs/img/soak.svg] [--connects-per-s 20] [--publishes-per-s 200]

Starts tansu (in-memory storage, `tansu` on PATH or in ~/.cargo/bin) and the broker with both
event sinks (MQTT and Kafka) and every event kind on, on free loopback ports. Then, until the
time is up:

- a presence consumer (`SYSTEM/presence/#`, QoS 1, acknowledging each event) counts the
  `connected` and `disconnected` events;
- churn workers connect short-lived clients at `--connects-per-s`; each subscribes to a filter,
  publishes a few QoS 1 messages, unsubscribes, and leaves, half with DISCONNECT and half by
  closing the socket without one;
- long-lived publishers publish at `--publishes-per-s` in all (half QoS 1, half QoS 0) to
  `soak/t/N`, and long-lived subscribers to `soak/#` read everything.

Every `--sample-s` seconds it writes one CSV row (`samples.csv` in `--out`): the broker's VmRSS
and open files (from /proc), the load's own counts, the presence events seen, and counters from
the broker's metrics endpoint. At the end it closes every client and checks:

- memory: a least-squares line through the RSS samples of the second half; its slope must stay
  below `--max-growth-mib-per-h` (default 16). With `--graveyard` (for builds before the pooled
  router names of 35387fc, where rumqttd's router kept an entry per client id that ever
  disconnected, about 600 B an id in steps, see graveyard_bytes) it may also grow by the slope
  of that table over the same samples; the summary then prints both terms and the net slope
  (`--recheck DIR` redoes this check on an earlier run's samples);
- events: the presence consumer saw one `connected` and one `disconnected` event per load
  connection, Kafka holds the same plus the consumer's own two (counted by `kafka-count`,
  a real rdkafka consumer), and the broker dropped no event (`activity_events_dropped_total`).

It prints a summary, writes `summary.txt` and an SVG plot (RSS, open files and connections over
time) and exits 1 when a check failed. Standard library only; Linux (/proc). Every load client
connects to 127.0.0.1; every loop stops at the deadline.
"""

import argparse
import json
import os
import random
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request

# ---------------------------------------------------------------------------------------------
# MQTT 3.1.1 on raw sockets


def remaining_length(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        if n:
            byte |= 0x80
        out.append(byte)
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + remaining_length(len(body)) + body


def mqtt_str(s):
    b = s.encode()
    return struct.pack(">H", len(b)) + b


def connect_packet(client_id, keep_alive=0):
    body = mqtt_str("MQTT") + bytes([4, 0x02]) + struct.pack(">H", keep_alive) + mqtt_str(client_id)
    return packet(0x10, body)


def subscribe_packet(pid, topic, qos):
    return packet(0x82, struct.pack(">H", pid) + mqtt_str(topic) + bytes([qos]))


def unsubscribe_packet(pid, topic):
    return packet(0xA2, struct.pack(">H", pid) + mqtt_str(topic))


def publish_packet(topic, payload, qos, pid=0):
    head = mqtt_str(topic) + (struct.pack(">H", pid) if qos else b"")
    return packet(0x30 | (qos << 1), head + payload)


DISCONNECT = b"\xe0\x00"


class Conn:
    """A raw MQTT connection with a packet reader."""

    def __init__(self, port, client_id, timeout=30.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = b""
        self.sock.sendall(connect_packet(client_id))
        kind, body = self.read()
        if kind != 0x20 or len(body) < 2 or body[1] != 0:
            raise ConnectionError(f"{client_id}: CONNACK refused: {kind:#x} {body!r}")

    def fill(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError("the broker closed the connection")
            self.buf += chunk

    def read(self):
        """The next packet: (first byte, body)."""
        self.fill(2)
        length, mult, i = 0, 1, 1
        while True:
            self.fill(i + 1)
            byte = self.buf[i]
            length += (byte & 0x7F) * mult
            mult *= 128
            i += 1
            if not byte & 0x80:
                break
        self.fill(i + length)
        first, body = self.buf[0], self.buf[i : i + length]
        self.buf = self.buf[i + length :]
        return first, body

    def expect(self, kind):
        """Reads until a packet of `kind` (upper nibble), skipping deliveries."""
        while True:
            first, body = self.read()
            if first >> 4 == kind:
                return body

    def close(self, polite=True):
        try:
            if polite:
                self.sock.sendall(DISCONNECT)
                self.sock.shutdown(socket.SHUT_WR)
                self.sock.settimeout(10)
                while self.sock.recv(65536):
                    pass
        except OSError:
            pass
        self.sock.close()


# ---------------------------------------------------------------------------------------------
# Shared counters


class Counts:
    def __init__(self):
        self.lock = threading.Lock()
        self.c = {
            "connects": 0,
            "closes": 0,
            "connect_errors": 0,
            "published": 0,
            "subscribes": 0,
            "delivered": 0,
            "ev_connected": 0,
            "ev_disconnected": 0,
            "own_connected": 0,
            "new_ids": 0,
        }

    def add(self, key, n=1):
        with self.lock:
            self.c[key] += n

    def snapshot(self):
        with self.lock:
            return dict(self.c)


def presence_consumer(port, counts, stop, ready):
    conn = Conn(port, "soak-presence")
    conn.sock.sendall(subscribe_packet(1, "SYSTEM/presence/#", 1))
    conn.expect(9)
    ready.set()
    conn.sock.settimeout(1.0)
    while not stop.is_set():
        try:
            first, body = conn.read()
        except socket.timeout:
            continue
        if first >> 4 != 3:
            continue
        qos = (first >> 1) & 3
        tlen = struct.unpack(">H", body[:2])[0]
        topic = body[2 : 2 + tlen].decode()
        if qos:
            pid = body[2 + tlen : 4 + tlen]
            conn.sock.sendall(b"\x40\x02" + pid)
        payload = body[2 + tlen + (2 if qos else 0) :]
        try:
            client_id = json.loads(payload).get("client_id")
        except ValueError:
            client_id = None
        if client_id == "soak-presence":
            # Its own `connected` event reaches it when the event was published after its
            # SUBSCRIBE (events are published asynchronously): not a load connection. Counted
            # apart, so the summary shows whether it came.
            if topic.endswith("/connected"):
                counts.add("own_connected")
            continue
        if topic.endswith("/connected"):
            counts.add("ev_connected")
        elif topic.endswith("/disconnected"):
            counts.add("ev_disconnected")
    conn.close()


def subscriber(port, n, counts, stop, held):
    conn = Conn(port, f"soak-sub-{n}")
    counts.add("connects")
    held.append(conn)
    conn.sock.sendall(subscribe_packet(1, "soak/#", 0))
    conn.expect(9)
    counts.add("subscribes")
    conn.sock.settimeout(1.0)
    while not stop.is_set():
        try:
            first, _ = conn.read()
        except socket.timeout:
            continue
        except OSError:
            return
        if first >> 4 == 3:
            counts.add("delivered")


def publisher(port, n, rate, counts, stop, held):
    conn = Conn(port, f"soak-pub-{n}")
    counts.add("connects")
    held.append(conn)
    qos = 1 if n % 2 == 0 else 0
    pid = 0
    seq = 0
    interval = 1.0 / rate
    next_at = time.monotonic()
    while not stop.is_set():
        pid = pid % 65535 + 1
        seq += 1
        conn.sock.sendall(publish_packet(f"soak/t/{n}", b"%d" % seq, qos, pid))
        if qos:
            conn.expect(4)
        counts.add("published")
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        elif delay < -1.0:
            next_at = time.monotonic()


def churn(port, w, rate, filters, ids, counts, stop):
    interval = 1.0 / rate
    next_at = time.monotonic() + random.random() * interval
    n = 0
    while not stop.is_set():
        n += 1
        if not ids or n <= ids:
            # A client id the broker has not seen yet (before the pooled router names, rumqttd
            # kept an entry per client id that ever disconnected: see --graveyard).
            counts.add("new_ids")
        try:
            conn = Conn(port, f"soak-churn-{w}-{n % ids if ids else n}")
        except (OSError, ConnectionError, EOFError) as e:
            counts.add("connect_errors")
            print(f"soak: churn connect failed: {e}", file=sys.stderr)
        else:
            counts.add("connects")
            try:
                topic = f"soak/churn/{(w + n) % filters}"
                conn.sock.sendall(subscribe_packet(1, topic, 1))
                conn.expect(9)
                counts.add("subscribes")
                for i in range(3):
                    conn.sock.sendall(publish_packet(topic, b"churn %d" % i, 1, i + 2))
                    conn.expect(4)
                    counts.add("published")
                conn.sock.sendall(unsubscribe_packet(10, topic))
                conn.expect(11)
            except (OSError, EOFError) as e:
                print(f"soak: churn client failed: {e}", file=sys.stderr)
            conn.close(polite=n % 2 == 0)
            counts.add("closes")
        next_at += interval
        delay = next_at - time.monotonic()
        if delay > 0:
            stop.wait(delay)
        elif delay < -5.0:
            next_at = time.monotonic()


# ---------------------------------------------------------------------------------------------
# The processes and the samples


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_listening(port, what, seconds=20):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {seconds} s")


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


def open_files(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


METRICS = {
    "connections_total": "activity_connections_total",
    "events_dropped": "activity_events_dropped_total",
    "skipped": "activity_deliveries_skipped_total",
    "sunk_mqtt": 'activity_events_sunk_total{sink="mqtt"}',
    "sunk_kafka": 'activity_events_sunk_total{sink="kafka"}',
}


def metrics(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            text = r.read().decode()
    except OSError:
        return {k: "" for k in METRICS}
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        values[name] = value
    out = {}
    for key, name in METRICS.items():
        if name in values:
            out[key] = values[name]
        else:
            # A counter with labels: the sum over them.
            total = sum(float(v) for n, v in values.items() if n.startswith(name + "{"))
            out[key] = int(total) if total == int(total) else total
    return out


# rumqttd 0.20's router keeps an entry per client id that ever disconnected (`Graveyard`, in
# router/graveyard.rs: a HashMap<String, SavedState> that `handle_disconnection` inserts into
# for clean sessions too, and only a new connection of the same id removes from); the front
# cannot remove it (rumqttd has no API or setting for it). A heap profile of the soak
# (heaptrack, docs/scale.md) shows what it holds for n ids: a hashbrown table of 200-byte
# `(String, SavedState)` slots plus a control byte each, which doubles when 7/8 full, and per
# id on the heap the id, a VecDeque<String> of 4 and two event strings ("connection at ...",
# "disconnection at ..."), about 250 B. Averaged over the doublings that is about 600 B an id,
# but it comes in steps (the 57,345th id moves 13 MB of slots into a 26 MB table), so the
# memory check fits the same line through this function of the ids seen as through the RSS.
GRAVEYARD_SLOT_BYTES = 201
GRAVEYARD_ID_BYTES = 250.0


def graveyard_bytes(ids, id_bytes=GRAVEYARD_ID_BYTES):
    """rumqttd's graveyard for `ids` client ids: the table (hashbrown's buckets: a power of
    two, at least 4, holding n - 1 below 8 buckets and 7/8 of them from 8 on) and the heap."""
    if ids <= 0:
        return 0.0
    buckets = 4
    while (buckets - 1 if buckets < 8 else buckets // 8 * 7) < ids:
        buckets *= 2
    return buckets * GRAVEYARD_SLOT_BYTES + ids * id_bytes


def fit_slope(xs, ys):
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    if sxx == 0:
        return 0.0
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sxx


def memory_check(rows, args):
    """The RSS slope over the second half of `rows` against the limit plus rumqttd's graveyard
    (the same fit through `graveyard_bytes` of the new client ids seen): (text, passed)."""
    half = [r for r in rows if r["t_s"] >= rows[-1]["t_s"] / 2]
    ts = [r["t_s"] for r in half]
    growth = fit_slope(ts, [r["rss_kib"] for r in half]) * 3600 / 1024
    if not args.graveyard:
        return (f"RSS slope over the second half {growth:+.2f} MiB/h <= "
                f"{args.max_growth_mib_per_h:.2f}", growth <= args.max_growth_mib_per_h)
    floor = fit_slope(ts, [graveyard_bytes(r["new_ids"], args.graveyard_id_bytes) for r in half]) \
        * 3600 / 2**20
    ids_per_h = fit_slope(ts, [r["new_ids"] for r in half]) * 3600
    limit = args.max_growth_mib_per_h + floor
    return (f"RSS slope over the second half {growth:+.2f} MiB/h <= {limit:.2f} "
            f"({args.max_growth_mib_per_h:g} + rumqttd's graveyard {floor:+.2f}: "
            f"{ids_per_h:,.0f} new client ids/h); net of the graveyard {growth - floor:+.2f} MiB/h",
            growth <= limit)


def svg_plot(rows, path, title):
    """Three stacked panels over time: RSS (MiB), open files, load connections."""
    width, panel_h, left, top = 900, 170, 70, 40
    t = [r["t_s"] / 60 for r in rows]
    panels = [
        ("broker RSS (MiB)", [r["rss_kib"] / 1024 for r in rows], "#1f77b4"),
        ("broker open files", [r["open_files"] for r in rows], "#d62728"),
        ("load connections made", [r["connects"] for r in rows], "#2ca02c"),
    ]
    height = top + len(panels) * (panel_h + 40) + 30
    tmax = max(t) or 1
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="15">{title}</text>',
    ]
    plot_w = width - left - 30
    for i, (label, ys, colour) in enumerate(panels):
        y0 = top + i * (panel_h + 40)
        lo, hi = 0, max(ys) * 1.1 or 1
        out.append(f'<rect x="{left}" y="{y0}" width="{plot_w}" height="{panel_h}" '
                   'fill="none" stroke="#888"/>')
        out.append(f'<text x="{left + 5}" y="{y0 + 15}">{label}</text>')
        for k in range(5):
            v = lo + (hi - lo) * k / 4
            y = y0 + panel_h - panel_h * k / 4
            out.append(f'<text x="{left - 5}" y="{y + 4:.1f}" text-anchor="end">{v:,.0f}</text>')
            out.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" '
                       'stroke="#eee"/>')
        points = " ".join(
            f"{left + plot_w * x / tmax:.1f},{y0 + panel_h - panel_h * (y - lo) / (hi - lo):.1f}"
            for x, y in zip(t, ys)
        )
        out.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        for k in range(7):
            m = tmax * k / 6
            out.append(f'<text x="{left + plot_w * k / 6:.1f}" y="{y0 + panel_h + 15}" '
                       f'text-anchor="middle">{m:.0f}</text>')
    out.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">'
               'minutes</text>')
    out.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


def tansu_binary():
    found = shutil.which("tansu")
    if found:
        return found
    home = os.environ.get("CARGO_HOME") or os.path.join(os.path.expanduser("~"), ".cargo")
    return os.path.join(home, "bin", "tansu")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--broker", required=True, help="the activity-broker binary")
    ap.add_argument("--kafka-count", required=True, help="the kafka-count binary (tests crate)")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--out", default="soak-out", help="directory for samples.csv, logs, summary")
    ap.add_argument("--svg", help="where to write the plot (default OUT/soak.svg)")
    ap.add_argument("--sample-s", type=float, default=5.0)
    ap.add_argument("--connects-per-s", type=float, default=20.0)
    ap.add_argument("--churn-workers", type=int, default=4)
    ap.add_argument("--publishes-per-s", type=float, default=200.0)
    ap.add_argument("--publishers", type=int, default=4)
    ap.add_argument("--subscribers", type=int, default=4)
    ap.add_argument("--churn-ids", type=int, default=0,
                    help="reuse this many client ids per churn worker (0: every client a new id)")
    ap.add_argument("--churn-filters", type=int, default=20,
                    help="distinct filters the churn clients subscribe to (each a router log)")
    ap.add_argument("--segment-size", type=int, help="[router] segment_size (default: the broker's)")
    ap.add_argument("--segment-count", type=int, help="[router] segment_count (default: the broker's)")
    ap.add_argument("--max-growth-mib-per-h", type=float, default=16.0,
                    help="RSS growth allowed over the second half (beyond rumqttd's graveyard with --graveyard)")
    ap.add_argument("--graveyard", action="store_true",
                    help="allow for rumqttd's graveyard growing per new client id: for builds "
                         "before the pooled router names (35387fc), where it did")
    ap.add_argument("--graveyard-id-bytes", type=float, default=GRAVEYARD_ID_BYTES,
                    help="rumqttd's heap per client id in its graveyard besides the table's slot "
                         "(see GRAVEYARD_SLOT_BYTES); the memory check allows for the graveyard")
    ap.add_argument("--recheck", metavar="DIR",
                    help="only redo the memory check on DIR/samples.csv of an earlier run")
    args = ap.parse_args()
    if args.recheck:
        with open(os.path.join(args.recheck, "samples.csv")) as f:
            header = f.readline().strip().split(",")
            rows = [dict(zip(header, line.strip().split(","))) for line in f if line.strip()]
        rows = [{k: float(r[k]) for k in ("t_s", "rss_kib", "new_ids")} for r in rows]
        text, ok = memory_check(rows, args)
        print(("PASS " if ok else "FAIL ") + text)
        return 0 if ok else 1

    os.makedirs(args.out, exist_ok=True)
    svg = args.svg or os.path.join(args.out, "soak.svg")
    port, metrics_port, kafka_port = free_port(), free_port(), free_port()
    config = os.path.join(args.out, "broker.toml")
    router = "[router]\n"
    if args.segment_size:
        router += f"segment_size = {args.segment_size}\n"
    if args.segment_count:
        router += f"segment_count = {args.segment_count}\n"
    with open(config, "w") as f:
        f.write(f'''listen = "127.0.0.1:{port}"
metrics_listen = "127.0.0.1:{metrics_port}"
max_connections = 2000
sinks = ["mqtt", "kafka"]

[kafka]
brokers = ["127.0.0.1:{kafka_port}"]
partitions = 1

{router}
[events.connected]
enabled = true
[events.disconnected]
enabled = true
[events.subscribed]
enabled = true
[events.unsubscribed]
enabled = true
[events.message]
enabled = true
[events.msgack]
enabled = true
''')
    logs = open(os.path.join(args.out, "broker.log"), "w")
    tansu_url = f"tcp://127.0.0.1:{kafka_port}"
    tansu = subprocess.Popen(
        [tansu_binary(), "broker", "--listener-url", tansu_url, "--advertised-listener-url",
         tansu_url, "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env={**os.environ, "RUST_LOG": "warn"})
    broker = None
    try:
        wait_listening(kafka_port, "tansu")
        broker = subprocess.Popen([args.broker, "--config", config], stdout=logs, stderr=logs,
                                  env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")})
        wait_listening(port, "activity-broker")
        return run(args, broker, tansu, port, metrics_port, kafka_port, svg)
    finally:
        for p in (broker, tansu):
            if p and p.poll() is None:
                p.terminate()
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()


def run(args, broker, tansu, port, metrics_port, kafka_port, svg):
    pid = broker.pid
    counts = Counts()
    stop = threading.Event()
    presence_stop = threading.Event()
    ready = threading.Event()
    held = []
    threads = [threading.Thread(target=presence_consumer, args=(port, counts, presence_stop, ready))]
    threads[0].start()
    if not ready.wait(20):
        raise RuntimeError("the presence consumer did not subscribe within 20 s")
    for n in range(args.subscribers):
        threads.append(threading.Thread(target=subscriber, args=(port, n, counts, stop, held)))
    for n in range(args.publishers):
        threads.append(threading.Thread(
            target=publisher, args=(port, n, args.publishes_per_s / args.publishers, counts, stop, held)))
    for w in range(args.churn_workers):
        threads.append(threading.Thread(
            target=churn,
            args=(port, w, args.connects_per_s / args.churn_workers, args.churn_filters,
                  args.churn_ids, counts, stop)))
    for t in threads[1:]:
        t.start()

    columns = ["t_s", "rss_kib", "open_files", "broker_cpu_s", "tansu_rss_kib"] + \
        list(Counts().c) + list(METRICS)
    csv_path = os.path.join(args.out, "samples.csv")
    rows = []
    start = time.monotonic()
    deadline = start + args.minutes * 60
    with open(csv_path, "w") as csv:
        csv.write(",".join(columns) + "\n")
        while True:
            now = time.monotonic()
            if broker.poll() is not None:
                stop.set()
                presence_stop.set()
                raise RuntimeError(f"the broker exited with {broker.returncode}")
            row = {"t_s": round(now - start, 1), "rss_kib": status_kib(pid, "VmRSS"),
                   "open_files": open_files(pid), "broker_cpu_s": round(cpu_seconds(pid), 2),
                   "tansu_rss_kib": status_kib(tansu.pid, "VmRSS")}
            row.update(counts.snapshot())
            row.update(metrics(metrics_port))
            rows.append(row)
            csv.write(",".join(str(row[c]) for c in columns) + "\n")
            csv.flush()
            if now >= deadline:
                break
            time.sleep(min(args.sample_s, max(0.0, deadline - now)))

    # Stop the load, close the long-lived clients, and wait for every presence event.
    stop.set()
    for t in threads[1:]:
        t.join(60)
    for conn in held:
        conn.close()
        counts.add("closes")
    final = counts.snapshot()
    expected = final["connects"]
    wait_until = time.monotonic() + 60
    while time.monotonic() < wait_until:
        c = counts.snapshot()
        if c["ev_connected"] >= expected and c["ev_disconnected"] >= expected:
            break
        time.sleep(0.2)
    presence_stop.set()
    threads[0].join(30)
    seen = counts.snapshot()
    end_metrics = metrics(metrics_port)
    # Kafka: every load connection plus the presence consumer's own, once it has left.
    kafka_expected = expected + 1
    kafka = {}
    for _ in range(5):
        out = subprocess.run([args.kafka_count, f"127.0.0.1:{kafka_port}", "10",
                              "SYSTEM.presence.connected", "SYSTEM.presence.disconnected"],
                             capture_output=True, text=True, timeout=600)
        kafka = {line.split()[0]: int(line.split()[1]) for line in out.stdout.splitlines()}
        if kafka.get("SYSTEM.presence.connected") == kafka_expected and \
                kafka.get("SYSTEM.presence.disconnected") == kafka_expected:
            break

    checks = [
        memory_check(rows, args),
        (f"presence consumer: connected {seen['ev_connected']} == {expected} load connections "
         f"(its own connected event, not counted: {'seen' if seen['own_connected'] else 'not seen'})",
         seen["ev_connected"] == expected),
        (f"presence consumer: disconnected {seen['ev_disconnected']} == {expected}",
         seen["ev_disconnected"] == expected),
        (f"Kafka SYSTEM.presence.connected {kafka.get('SYSTEM.presence.connected')} == {kafka_expected}",
         kafka.get("SYSTEM.presence.connected") == kafka_expected),
        (f"Kafka SYSTEM.presence.disconnected {kafka.get('SYSTEM.presence.disconnected')} == {kafka_expected}",
         kafka.get("SYSTEM.presence.disconnected") == kafka_expected),
        (f"activity_events_dropped_total {end_metrics['events_dropped']} == 0",
         str(end_metrics["events_dropped"]) in ("0", "0.0")),
        (f"connect errors {final['connect_errors']} == 0", final["connect_errors"] == 0),
    ]
    rss = [r["rss_kib"] for r in rows]
    lines = [
        f"soak: {args.minutes:g} min, {len(rows)} samples every {args.sample_s:g} s",
        f"load: {final['connects']} connections, {final['published']} publishes, "
        f"{final['subscribes']} subscriptions, {final['delivered']} deliveries to the subscribers",
        f"broker RSS: first {rss[0] / 1024:.1f} MiB, min {min(rss) / 1024:.1f}, "
        f"max {max(rss) / 1024:.1f}, last {rss[-1] / 1024:.1f} MiB; open files "
        f"{rows[0]['open_files']} .. {max(r['open_files'] for r in rows)}, last {rows[-1]['open_files']}; "
        f"broker CPU {rows[-1]['broker_cpu_s']:.0f} s",
        f"broker metrics at the end: {json.dumps(end_metrics)}",
    ] + [("PASS " if ok else "FAIL ") + text for text, ok in checks]
    summary = "\n".join(lines) + "\n"
    print(summary, end="")
    with open(os.path.join(args.out, "summary.txt"), "w") as f:
        f.write(summary)
    svg_plot(rows, svg, f"activity-broker soak: {args.minutes:g} min, "
             f"{args.connects_per_s:g} connects/s, {args.publishes_per_s:g} publishes/s, Kafka sink on")
    return 0 if all(ok for _, ok in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
