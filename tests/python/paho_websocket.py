"""Python paho-mqtt 2.x clients over WebSocket (transport="websockets") against one server.

Usage: python3 paho_websocket.py HOST PORT PATH PREFIX [CA_FILE]

With CA_FILE the clients speak WebSocket over TLS and trust that certificate. Prints one JSON
object on stdout with what the clients saw; the Rust test (tests/tests/websocket.rs) checks it
and the server's events. Every wait is bounded (WAIT seconds); a timeout is an error with a
message on stderr and exit code 1.

The scenario:
1. `PREFIX-sub` (MQTT 3.1.1) subscribes to `PREFIX/#` with QoS 1.
2. `PREFIX-pub` (MQTT 5) publishes QoS 1 `small` on `PREFIX/a`, then QoS 1 a 6,000-byte
   payload on `PREFIX/big` (larger than the server's 4 KiB WebSocket read buffer), then
   disconnects.
3. Once both arrived, the subscriber disconnects.
"""

import json
import sys
import threading

import paho.mqtt.client as mqtt

WAIT = 20.0
# ASCII, so that the `message` event (payload as text) stays below the 10 KiB packets the
# Rust test's monitor (rumqttc) accepts; still larger than the 4 KiB WebSocket read buffer.
BIG = 6_000


class Timeout(Exception):
    pass


def wait(event, what):
    if not event.wait(WAIT):
        raise Timeout(f"no {what} within {WAIT} s")


def client(client_id, protocol, path, ca_file):
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=protocol,
        transport="websockets",
    )
    c.ws_set_options(path=path)
    if ca_file:
        c.tls_set(ca_certs=ca_file)
    c.connected = threading.Event()
    c.connack = None

    def on_connect(cl, _userdata, _flags, reason_code, _properties):
        cl.connack = reason_code.value
        cl.connected.set()

    c.on_connect = on_connect
    return c


def connect(c, host, port):
    c.connect(host, port, keepalive=30)
    c.loop_start()
    wait(c.connected, f"CONNACK for {c._client_id.decode()}")
    return c.connack


def main():
    host, port, path, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    ca_file = sys.argv[5] if len(sys.argv) > 5 else None
    result = {}

    received = []
    got = threading.Condition()
    sub = client(f"{prefix}-sub", mqtt.MQTTv311, path, ca_file)
    subscribed = threading.Event()

    def on_subscribe(_cl, _userdata, _mid, reason_codes, _properties):
        result["suback"] = [rc.value for rc in reason_codes]
        subscribed.set()

    def on_message(_cl, _userdata, msg):
        with got:
            received.append({"topic": msg.topic, "len": len(msg.payload), "qos": msg.qos})
            got.notify_all()

    sub.on_subscribe = on_subscribe
    sub.on_message = on_message
    result["sub_connack"] = connect(sub, host, port)
    sub.subscribe(f"{prefix}/#", qos=1)
    wait(subscribed, "SUBACK")

    pub = client(f"{prefix}-pub", mqtt.MQTTv5, path, ca_file)
    result["pub_connack"] = connect(pub, host, port)
    acked = []
    done = threading.Condition()

    def on_publish(_cl, _userdata, mid, reason_code, _properties):
        with done:
            acked.append(reason_code.value)
            done.notify_all()

    pub.on_publish = on_publish
    pub.publish(f"{prefix}/a", b"small", qos=1)
    pub.publish(f"{prefix}/big", bytes(0x41 + i % 26 for i in range(BIG)), qos=1)
    with done:
        if not done.wait_for(lambda: len(acked) == 2, WAIT):
            raise Timeout("no PUBACK for both publishes")
    result["pubacks"] = acked
    pub.disconnect()
    pub.loop_stop()

    with got:
        if not got.wait_for(lambda: len(received) == 2, WAIT):
            raise Timeout(f"only {len(received)} of 2 messages arrived")
    result["received"] = received
    sub.disconnect()
    sub.loop_stop()
    print(json.dumps(result))


if __name__ == "__main__":
    try:
        main()
    except Exception as e:  # noqa: BLE001 - any failure is reported to the Rust test
        print(f"paho_websocket.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
