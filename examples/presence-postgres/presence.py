#!/usr/bin/env python3
"""Keep mqtt-activity's presence and acknowledgements in PostgreSQL.

Reads the `connected`, `disconnected` and `msgack` events from Kafka (default) or from the
broker's MQTT system topics (`--mqtt`), and keeps two tables (schema.sql): `presence`, one row
per client id, and `acks`, one row per (product_id, message_id, ack_client_id).

Delivery is at least once: a batch of events is written in one database transaction, and only
after that commits are the Kafka offsets committed (or the MQTT QoS 1 messages acknowledged).
A crash in between delivers the batch again. That is harmless because every write is guarded
in SQL: an event changes a row only if it is newer than the event that last wrote it, by
(session_seq, disconnected after connected, ts). Replays and out-of-order events (Kafka keeps
connected and disconnected on different topics; a takeover across two taps can arrive in any
order) leave the same rows as the events in their true order.

    pip install -r requirements.txt
    psql "$DATABASE_URL" -f schema.sql
    python3 presence.py --database "$DATABASE_URL" --kafka 127.0.0.1:9092
    python3 presence.py --database "$DATABASE_URL" --mqtt 127.0.0.1:1883

See docs/postgres.md in the repository.
"""

import argparse
import json
import logging
import queue
import signal
import sys
import time
from datetime import datetime, timedelta, timezone

import psycopg

log = logging.getLogger("presence")

EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)

# The kinds this consumer keeps, and where each lives below the events prefix: the MQTT topic
# is PREFIX/PATH, the default Kafka topic PREFIX.PATH with "/" replaced by ".".
KINDS = {
    "connected": "presence/connected",
    "disconnected": "presence/disconnected",
    "msgack": "msgack",
}

# A session's row, written only when this event is newer than the row's: a later session_seq;
# in the same session a disconnected over its connected (NOT online: false < true); and between
# two events of the same session and kind, the later ts. The username and peer of the session
# are kept when the disconnected (which does not carry them) replaces its connected.
UPSERT_PRESENCE = """
INSERT INTO presence AS p (client_id, online, session_seq, connected_at, disconnected_at,
                           reason, username, peer, node, last_event, last_event_at)
VALUES (%(client_id)s, %(online)s, %(session_seq)s, %(connected_at)s, %(disconnected_at)s,
        %(reason)s, %(username)s, %(peer)s, %(node)s, %(kind)s, %(ts)s)
ON CONFLICT (client_id) DO UPDATE SET
    online = excluded.online,
    session_seq = excluded.session_seq,
    connected_at = excluded.connected_at,
    disconnected_at = excluded.disconnected_at,
    reason = excluded.reason,
    username = CASE WHEN excluded.session_seq = p.session_seq
                    THEN coalesce(excluded.username, p.username) ELSE excluded.username END,
    peer = CASE WHEN excluded.session_seq = p.session_seq
                THEN coalesce(excluded.peer, p.peer) ELSE excluded.peer END,
    node = excluded.node,
    last_event = excluded.last_event,
    last_event_at = excluded.last_event_at
WHERE (excluded.session_seq, NOT excluded.online, excluded.last_event_at)
    > (p.session_seq, NOT p.online, p.last_event_at)
"""

# A connected that lost to its own session's disconnected (which came first) still brings the
# session's username and peer.
FILL_SESSION = """
UPDATE presence
SET username = coalesce(username, %(username)s::text), peer = coalesce(peer, %(peer)s::text)
WHERE client_id = %(client_id)s AND session_seq = %(session_seq)s
  AND ((username IS NULL AND %(username)s::text IS NOT NULL)
       OR (peer IS NULL AND %(peer)s::text IS NOT NULL))
"""

# The first acknowledgement of a message by a client: a later (or repeated) one changes nothing.
UPSERT_ACK = """
INSERT INTO acks AS a (product_id, message_id, ack_client_id, ts, pub_client_id, topic, qos,
                       reason_code)
VALUES (%(product_id)s, %(message_id)s, %(ack_client_id)s, %(ts)s, %(pub_client_id)s,
        %(topic)s, %(qos)s, %(reason_code)s)
ON CONFLICT (product_id, message_id, ack_client_id) DO UPDATE SET
    ts = excluded.ts,
    pub_client_id = excluded.pub_client_id,
    topic = excluded.topic,
    qos = excluded.qos,
    reason_code = excluded.reason_code
WHERE excluded.ts < a.ts
"""


class BadEvent(Exception):
    """An event this consumer cannot use (logged and skipped, never retried)."""


def timestamp(value, field):
    """A `ts`-style field (milliseconds since the Unix epoch) as an exact datetime."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadEvent(f"{field} is not a millisecond timestamp: {value!r}")
    return EPOCH + timedelta(milliseconds=value)


def text(event, field, required=True):
    """A string field; an integer id (envelopes allow them) as its decimal text."""
    value = event.get(field)
    if value is None and not required:
        return None
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadEvent(f"{field} is missing or not a string: {value!r}")


def session_seq(event):
    """The event's session_seq: the same on a connected and its disconnected, growing per
    client id."""
    seq = event.get("session_seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq < 2**64:
        raise BadEvent(f"session_seq is missing or not a u64: {seq!r}")
    return seq


def presence_row(kind, event):
    """The parameters of UPSERT_PRESENCE (and FILL_SESSION) for a connected or disconnected."""
    ts = timestamp(event.get("ts"), "ts")
    online = kind == "connected"
    return {
        "client_id": text(event, "client_id"),
        "online": online,
        "session_seq": session_seq(event),
        "connected_at": ts if online else timestamp(event.get("connected_at"), "connected_at"),
        "disconnected_at": None if online else ts,
        "reason": None if online else text(event, "reason", required=False),
        "username": text(event, "username", required=False),
        "peer": text(event, "peer", required=False),
        "node": text(event, "node", required=False),
        "kind": kind,
        "ts": ts,
    }


def ack_row(event):
    """The parameters of UPSERT_ACK for a msgack."""
    qos = event.get("qos")
    reason_code = event.get("reason_code")
    return {
        "product_id": text(event, "product_id"),
        "message_id": text(event, "message_id"),
        "ack_client_id": text(event, "ack_client_id"),
        "ts": timestamp(event.get("ts"), "ts"),
        "pub_client_id": text(event, "pub_client_id", required=False),
        "topic": text(event, "topic", required=False),
        "qos": qos if isinstance(qos, int) else None,
        "reason_code": reason_code if isinstance(reason_code, int) else None,
    }


class Stats:
    """What the consumer did, for its log."""

    def __init__(self):
        self.events = 0
        self.changed = 0
        self.skipped = 0

    def __str__(self):
        unchanged = self.events - self.changed - self.skipped
        return (f"{self.events} events: {self.changed} changed a row, {unchanged} were stale "
                f"or repeated, {self.skipped} skipped")


class Store:
    """The PostgreSQL side: applies a batch of events in one transaction."""

    def __init__(self, url, stats):
        self.url = url
        self.stats = stats
        self.conn = None

    def connect(self):
        if self.conn is None or self.conn.closed:
            self.conn = psycopg.connect(self.url, autocommit=False, connect_timeout=10)
        return self.conn

    def apply(self, events, stopping):
        """Writes `events` (kind, parsed JSON) in one transaction; retries until it commits.

        Returns False when asked to stop before it committed (then nothing may be acknowledged).
        """
        writes, skipped = [], 0
        for kind, event in events:
            try:
                if kind == "msgack":
                    writes.append((UPSERT_ACK, ack_row(event)))
                else:
                    row = presence_row(kind, event)
                    writes.append((UPSERT_PRESENCE, row))
                    if row["online"]:
                        writes.append((FILL_SESSION, row))
            except BadEvent as err:
                log.warning("skipped a %s event (%s): %s", kind, err, json.dumps(event)[:500])
                skipped += 1
        delay = 0.5
        while True:
            try:
                conn = self.connect()
                try:
                    changed = self.write_batch(conn, writes)
                except psycopg.DataError as err:
                    # A value PostgreSQL refuses (a NUL in a string): find it, skip it, keep
                    # the rest, rather than fail on the same batch forever.
                    log.warning("the database refused the batch (%s); writing it one by one", err)
                    changed, refused = self.write_each(conn, writes)
                    skipped += refused
                self.stats.events += len(events)
                self.stats.changed += changed
                self.stats.skipped += skipped
                return True
            except psycopg.OperationalError as err:
                # The database went away: the batch was not committed, try it again.
                log.warning("database unavailable (%s); retrying in %.1f s", err, delay)
                if self.conn is not None:
                    self.conn.close()
                if stopping():
                    return False
                time.sleep(delay)
                delay = min(delay * 2, 10.0)

    @staticmethod
    def write_batch(conn, writes):
        """All `writes` in one transaction, pipelined; returns how many changed a row."""
        changed = 0
        with conn.transaction(), conn.cursor() as cur:
            # The guards make each write independent of the others' order, so the batch goes
            # grouped by statement (executemany pipelines each group).
            for statement in (UPSERT_PRESENCE, FILL_SESSION, UPSERT_ACK):
                rows = [row for s, row in writes if s is statement]
                if rows:
                    cur.executemany(statement, rows)
                    if statement is not FILL_SESSION:
                        changed += max(cur.rowcount, 0)
        return changed

    @staticmethod
    def write_each(conn, writes):
        """`writes` one by one in one transaction, skipping those the database refuses;
        returns how many changed a row and how many were refused."""
        changed = refused = 0
        with conn.transaction(), conn.cursor() as cur:
            for statement, row in writes:
                try:
                    with conn.transaction():  # a savepoint: a refusal undoes only this write
                        cur.execute(statement, row)
                except psycopg.DataError as err:
                    if statement is not FILL_SESSION:  # its upsert was refused (and logged)
                        log.warning("skipped an event the database refused (%s): %r", err, row)
                        refused += 1
                    continue
                if statement is not FILL_SESSION:
                    changed += max(cur.rowcount, 0)
        return changed, refused


def parse(payload):
    """The event JSON of a record or message, or None (logged) when it is not a JSON object."""
    try:
        event = json.loads(payload)
    except (TypeError, ValueError) as err:
        log.warning("skipped a record that is not JSON (%s): %r", err, payload[:200])
        return None
    if not isinstance(event, dict):
        log.warning("skipped a record that is not a JSON object: %r", payload[:200])
        return None
    return event


def kind_of(topic, separator, prefix):
    """The kind that `topic` carries by default naming, or None."""
    for kind, path in KINDS.items():
        if topic == prefix + separator + path.replace("/", separator):
            return kind
    return None


def run_kafka(args, store, stopping):
    """Consumes from Kafka in a consumer group; commits offsets after each database commit."""
    from confluent_kafka import Consumer, KafkaError

    topics = args.topics or [f"{args.prefix}.{path.replace('/', '.')}" for path in KINDS.values()]
    config = {
        "bootstrap.servers": args.kafka,
        "group.id": args.group,
        "enable.auto.commit": False,
        "auto.offset.reset": "earliest",
        # Notice topics the broker creates after this consumer started.
        "topic.metadata.refresh.interval.ms": 10000,
    }
    for prop in args.kafka_property:
        key, _, value = prop.partition("=")
        config[key] = value
    consumer = Consumer(config)
    consumer.subscribe(topics)
    log.info("reading %s from Kafka at %s as group %s", ", ".join(topics), args.kafka, args.group)
    try:
        while not stopping():
            records = consumer.consume(num_messages=args.batch, timeout=0.5)
            events = []
            for record in records:
                err = record.error()
                if err is not None:
                    # A topic the broker has not created yet is not an error worth more.
                    level = logging.DEBUG if err.code() in (
                        KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._PARTITION_EOF) else logging.WARNING
                    log.log(level, "Kafka: %s", err)
                    continue
                event = parse(record.value())
                if event is None:
                    store.stats.skipped += 1
                    continue
                headers = dict(record.headers() or [])
                kind = (headers.get("kind") or b"").decode("utf-8", "replace") or kind_of(
                    record.topic(), ".", args.prefix)
                if kind in KINDS:
                    events.append((kind, event))
            if not records:
                continue
            if events and not store.apply(events, stopping):
                break
            # Only now: what the transaction wrote is safe, so Kafka may forget the records.
            try:
                consumer.commit(asynchronous=False)
            except Exception as err:  # noqa: BLE001 - a rebalance took the partitions away
                log.warning("offset commit failed (%s): the records will be read again", err)
            log.debug("committed a batch of %d records; %s", len(records), store.stats)
    finally:
        consumer.close()


def run_mqtt(args, store, stopping):
    """Subscribes with QoS 1 in a persistent session; acknowledges after each database commit."""
    import paho.mqtt.client as mqtt

    host, _, port = args.mqtt.rpartition(":")
    topics = [f"{args.prefix}/{path}" for path in KINDS.values()]
    # Bounded: when the database is slow, paho's network thread waits here.
    inbox = queue.Queue(maxsize=10 * args.batch)

    def on_connect(client, _userdata, _flags, reason_code, _properties):
        if reason_code.is_failure:
            log.warning("MQTT connect refused: %s", reason_code)
            return
        client.subscribe([(topic, 1) for topic in topics])
        log.info("subscribed to %s on %s", ", ".join(topics), args.mqtt)

    def on_message(_client, _userdata, message):
        inbox.put(message)

    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=args.mqtt_client_id,
        clean_session=False,
        protocol=mqtt.MQTTv311,
        manual_ack=True,
    )
    if args.mqtt_username:
        client.username_pw_set(args.mqtt_username, args.mqtt_password)
    client.on_connect = on_connect
    client.on_message = on_message
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    client.connect_async(host or "127.0.0.1", int(port), keepalive=30)
    client.loop_start()
    try:
        while not stopping():
            try:
                messages = [inbox.get(timeout=0.5)]
            except queue.Empty:
                continue
            while len(messages) < args.batch:
                try:
                    messages.append(inbox.get_nowait())
                except queue.Empty:
                    break
            events = []
            for message in messages:
                event = parse(message.payload)
                if event is None:
                    store.stats.skipped += 1
                    continue
                kind = kind_of(message.topic, "/", args.prefix)
                if kind is not None:
                    events.append((kind, event))
            if events and not store.apply(events, stopping):
                break
            # Only now: a message not acknowledged is sent again after a reconnect.
            for message in messages:
                if message.qos > 0:
                    client.ack(message.mid, message.qos)
            log.debug("acknowledged a batch of %d messages; %s", len(messages), store.stats)
    finally:
        # DISCONNECT while the network loop still runs to send it.
        client.disconnect()
        client.loop_stop()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database", required=True,
                        help="PostgreSQL connection string, e.g. postgresql://user@host/db")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--kafka", metavar="HOST:PORT[,...]", help="read the events from Kafka")
    source.add_argument("--mqtt", metavar="HOST:PORT",
                        help="read the events from the broker's system topics instead")
    parser.add_argument("--prefix", default="SYSTEM", help="events.prefix of the broker")
    parser.add_argument("--group", default="presence-postgres", help="Kafka consumer group")
    parser.add_argument("--topics", type=lambda s: s.split(","),
                        help="Kafka topics (default: PREFIX.presence.connected, "
                             "PREFIX.presence.disconnected, PREFIX.msgack)")
    parser.add_argument("-X", dest="kafka_property", action="append", default=[],
                        metavar="KEY=VALUE", help="a librdkafka property (repeatable)")
    parser.add_argument("--mqtt-client-id", default="presence-postgres")
    parser.add_argument("--mqtt-username")
    parser.add_argument("--mqtt-password")
    parser.add_argument("--batch", type=int, default=500, help="events per transaction (max)")
    parser.add_argument("-v", "--verbose", action="store_true", help="log every batch")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    stop = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.append(True))

    stats = Stats()
    store = Store(args.database, stats)
    run = run_kafka if args.kafka else run_mqtt
    run(args, store, lambda: bool(stop))
    log.info("stopped after %s", stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
