"""Python paho-mqtt 2.x clients speaking MQTT 5, 3.1.1 and 3.1 against one server.

Usage: python3 paho_clients.py HOST PORT PREFIX

Runs one scenario and prints one JSON object on stdout with what the clients saw; the Rust
test (tests/tests/v5_clients.rs) checks it, and the server's events, field by field. Every wait
is bounded (WAIT seconds); a timeout is an error with a message on stderr and exit code 1.

The scenario:
1. `PREFIX-sub` (MQTT 5) subscribes to `PREFIX/#` with QoS 1 and No Local off.
2. `PREFIX-v5` (MQTT 5, user property `site=lab` and a session expiry of 0 on its CONNECT,
   a will on `PREFIX/will`) publishes QoS 1 on `PREFIX/req` with a response topic,
   correlation data, a content type, a payload format indicator, a message expiry interval and
   the user properties `product_id` / `message_id`, then QoS 2 on `PREFIX/two`; then it ends
   with DISCONNECT reason 0x04 (disconnect with will message).
3. `PREFIX-v311` (MQTT 3.1.1) and `PREFIX-v31` (MQTT 3.1) each publish QoS 1 on `PREFIX/old`.
"""

import json
import sys
import threading

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

WAIT = 20.0


class Timeout(Exception):
    pass


def wait(event, what):
    if not event.wait(WAIT):
        raise Timeout(f"no {what} within {WAIT} s")


def client(client_id, protocol):
    c = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
    )
    c.connected = threading.Event()
    c.connack = None

    def on_connect(cl, _userdata, flags, reason_code, properties):
        cl.connack = {
            "reason_code": reason_code.value,
            "session_present": bool(flags.session_present),
            "properties": props_json(properties),
        }
        cl.connected.set()

    c.on_connect = on_connect
    return c


def props_json(properties):
    """The properties paho decoded, as JSON (bytes as lists of integers)."""
    if properties is None:
        return {}
    out = {}
    for name in properties.names:
        compact = name.replace(" ", "")
        if hasattr(properties, compact):
            value = getattr(properties, compact)
            if isinstance(value, bytes):
                value = list(value)
            elif isinstance(value, list):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[compact] = value
    return out


def connect(c, host, port, properties=None, clean_start=True):
    kwargs = {"keepalive": 30}
    if c._protocol == mqtt.MQTTv5:
        kwargs["clean_start"] = clean_start
        kwargs["properties"] = properties
    c.connect(host, port, **kwargs)
    c.loop_start()
    wait(c.connected, f"CONNACK for {c._client_id.decode()}")
    return c.connack


def publish_and_wait(c, topic, payload, qos, properties=None):
    done = threading.Event()
    seen = {}

    def on_publish(_cl, _userdata, mid, reason_code, _properties):
        seen[mid] = reason_code.value if hasattr(reason_code, "value") else int(reason_code)
        done.set()

    c.on_publish = on_publish
    info = c.publish(topic, payload, qos=qos, properties=properties)
    wait(done, f"acknowledgement of the publish on {topic}")
    return seen.get(info.mid)


def main():
    host, port, prefix = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    result = {}

    # 1. The subscriber.
    received = []
    got = threading.Condition()
    sub = client(f"{prefix}-sub", mqtt.MQTTv5)
    subscribed = threading.Event()

    def on_subscribe(_cl, _userdata, _mid, reason_codes, _properties):
        result["suback"] = [rc.value for rc in reason_codes]
        subscribed.set()

    def on_message(_cl, _userdata, msg):
        with got:
            received.append(
                {
                    "topic": msg.topic,
                    "payload": msg.payload.decode("utf-8", "replace"),
                    "qos": msg.qos,
                    "properties": props_json(msg.properties),
                }
            )
            got.notify_all()

    sub.on_subscribe = on_subscribe
    sub.on_message = on_message
    result["sub_connack"] = connect(sub, host, port)
    sub.subscribe(f"{prefix}/#", options=mqtt.SubscribeOptions(qos=1, noLocal=False))
    wait(subscribed, "SUBACK")

    def wait_received(count):
        with got:
            if not got.wait_for(lambda: len(received) >= count, WAIT):
                raise Timeout(f"{count} messages at the subscriber, got {received}")

    # 2. The MQTT 5 publisher.
    v5 = client(f"{prefix}-v5", mqtt.MQTTv5)
    will = Properties(PacketTypes.WILLMESSAGE)
    will.UserProperty = [("kind", "will")]
    v5.will_set(f"{prefix}/will", "gone", qos=1, properties=will)
    cprops = Properties(PacketTypes.CONNECT)
    cprops.SessionExpiryInterval = 0
    cprops.UserProperty = [("site", "lab")]
    result["v5_connack"] = connect(v5, host, port, cprops)
    pprops = Properties(PacketTypes.PUBLISH)
    pprops.ResponseTopic = f"{prefix}/resp"
    pprops.CorrelationData = b"\x01\x02\x03"
    pprops.ContentType = "text/plain"
    pprops.PayloadFormatIndicator = 1
    pprops.MessageExpiryInterval = 3600
    pprops.UserProperty = [("product_id", "p-1"), ("message_id", "m-1")]
    result["puback"] = publish_and_wait(v5, f"{prefix}/req", "request", 1, pprops)
    result["pubcomp"] = publish_and_wait(v5, f"{prefix}/two", "exactly once", 2)
    wait_received(2)
    v5.disconnect(reasoncode=ReasonCode(PacketTypes.DISCONNECT, "Disconnect with will message"))
    v5.loop_stop()
    wait_received(3)

    # 3. MQTT 3.1.1 and 3.1 publishers.
    for name, protocol in (("v311", mqtt.MQTTv311), ("v31", mqtt.MQTTv31)):
        c = client(f"{prefix}-{name}", protocol)
        result[f"{name}_connack"] = connect(c, host, port)
        result[f"{name}_puback"] = publish_and_wait(c, f"{prefix}/old", name, 1)
        c.disconnect()
        c.loop_stop()
    wait_received(5)

    sub.disconnect()
    sub.loop_stop()
    result["received"] = received
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    try:
        main()
    except Timeout as e:
        print(f"paho_clients.py: {e}", file=sys.stderr)
        sys.exit(1)
