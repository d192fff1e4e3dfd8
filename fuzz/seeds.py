#!/usr/bin/env python3
"""Writes the hand-made seed files of the fuzz corpus (fuzz/corpus/<target>/seed-*).

MQTT vectors follow the OASIS MQTT 3.1.1 examples (sections and figures cited) and the codec
unit tests; envelope seeds are the cases of the envelope module docs. event_encode, tracker and server
take `arbitrary`-shaped bytes, so their hand seeds are deterministic pseudo-random bytes; the
fuzzer's own minimized finds (files named by their SHA-1) are committed next to them.

Re-running rewrites the same files: python3 fuzz/seeds.py
"""
import os
import random

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")


def write(target, name, data):
    directory = os.path.join(ROOT, target)
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "seed-" + name), "wb") as f:
        f.write(data)


def field(data):
    return len(data).to_bytes(2, "big") + data


def remaining_length(n):
    out = bytearray()
    while True:
        byte = n % 128
        n //= 128
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def frame(first, body):
    return bytes([first]) + remaining_length(len(body)) + body


def connect(level, flags, keep_alive, *payload):
    body = field(b"MQTT") + bytes([level, flags]) + keep_alive.to_bytes(2, "big")
    for part in payload:
        body += field(part)
    return frame(0x10, body)


mqtt = {
    # 3.1: figure 3.6's variable header (flags 0xCE) with every payload field.
    "connect-fig-3-6": connect(4, 0xCE, 10, b"c", b"w", b"bye", b"u", b"p"),
    "connect-minimal-empty-id": connect(4, 0x02, 60, b""),
    "connect-will-qos2-retain-user": connect(4, 0xB6, 0, b"id", b"a/b", b"", b"user"),
    "connect-password-binary": connect(4, 0xC2, 30, b"c", b"u", b"\x00\xff"),
    # 3.1.2.2: another level still decodes (the server answers CONNACK 0x01).
    "connect-level-3": connect(3, 0x02, 60, b"c"),
    "connect-level-5-no-payload": frame(0x10, field(b"MQTT") + bytes([5, 0, 0, 0])),
    "connect-mqisdp": frame(0x10, field(b"MQIsdp") + bytes([3, 2, 0, 60]) + field(b"c")),
    "connect-reserved-flag": connect(4, 0x03, 0, b"c"),
    # 3.2: every return code, session present.
    **{f"connack-{code}": bytes([0x20, 0x02, 0x00, code]) for code in range(6)},
    "connack-session-present": bytes([0x20, 0x02, 0x01, 0x00]),
    "connack-reserved-code": bytes([0x20, 0x02, 0x00, 0x06]),
    # 3.3.2.3, figure 3.11: topic a/b, packet id 10.
    "publish-fig-3-11": bytes([0x32, 0x07, 0x00, 0x03]) + b"a/b" + bytes([0x00, 0x0A]),
    "publish-qos0-retain": frame(0x31, field(b"t") + b"hello"),
    "publish-qos2-dup": frame(0x3D, field(b"a/b") + bytes([0x12, 0x34]) + b"\xff\x00"),
    "publish-envelope": frame(
        0x32, field(b"t/1") + bytes([0, 7]) + b'{"product_id":"p1","message_id":42}'
    ),
    "publish-two-byte-length": frame(0x30, field(b"big") + bytes(range(200))),
    "publish-utf8-topic": frame(0x30, field("\u00e9/\U0001f600".encode())),
    "publish-wildcard-topic": frame(0x30, field(b"a/+")),
    "publish-qos3": bytes([0x36, 0x00]),
    # 3.4-3.7, 3.11: packet id only.
    "puback": bytes([0x40, 0x02, 0x00, 0x0A]),
    "pubrec": bytes([0x50, 0x02, 0xFF, 0xFF]),
    "pubrel": bytes([0x62, 0x02, 0x00, 0x01]),
    "pubcomp": bytes([0x70, 0x02, 0x00, 0x0A]),
    "unsuback": bytes([0xB0, 0x02, 0x00, 0x0A]),
    "puback-zero-id": bytes([0x40, 0x02, 0x00, 0x00]),
    "pubrel-bad-flags": bytes([0x60, 0x02, 0x00, 0x01]),
    # 3.8.3, figure 3.22: a/b at QoS 1, c/d at QoS 2.
    "subscribe-fig-3-22": frame(
        0x82, bytes([0x00, 0x0A]) + field(b"a/b") + b"\x01" + field(b"c/d") + b"\x02"
    ),
    "subscribe-wildcards": frame(0x82, bytes([0, 1]) + field(b"#") + b"\x00" + field(b"+/x/#") + b"\x01"),
    "subscribe-empty": frame(0x82, bytes([0, 1])),
    # 3.9.3, figure 3.26: QoS 0, QoS 2, failure.
    "suback-fig-3-26": bytes([0x90, 0x05, 0x00, 0x0A, 0x00, 0x02, 0x80]),
    "suback-bad-code": bytes([0x90, 0x03, 0x00, 0x0A, 0x03]),
    # 3.10.3, figure 3.30: a/b and c/d.
    "unsubscribe-fig-3-30": frame(0xA2, bytes([0x00, 0x0A]) + field(b"a/b") + field(b"c/d")),
    # 3.12-3.14.
    "pingreq": bytes([0xC0, 0x00]),
    "pingresp": bytes([0xD0, 0x00]),
    "disconnect": bytes([0xE0, 0x00]),
    # 2.2.3: non-minimal and over-long remaining lengths, reserved types.
    "pingreq-non-minimal-length": bytes([0xC0, 0x80, 0x00]),
    "puback-non-minimal-length": bytes([0x40, 0x82, 0x80, 0x00, 0x00, 0x07]),
    "remaining-length-five-bytes": bytes([0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
    "type-0": bytes([0x00, 0x00]),
    "type-15": bytes([0xF0, 0x00]),
    "truncated-publish": bytes([0x30, 0x03, 0x00, 0x02, ord("a")]),
}
# A connection's worth of packets in one stream.
mqtt["stream"] = (
    mqtt["connect-fig-3-6"]
    + mqtt["subscribe-fig-3-22"]
    + mqtt["publish-envelope"]
    + mqtt["puback"]
    + mqtt["pingreq"]
    + mqtt["unsubscribe-fig-3-30"]
    + mqtt["disconnect"]
)
for name, data in mqtt.items():
    write("mqtt_decode", name, data)

deep_ok = '{"product_id":"p","message_id":1,"x":' + "[" * 31 + "]" * 31 + "}"
deep_bad = '{"product_id":"p","message_id":1,"x":' + "[" * 32 + "]" * 32 + "}"
envelope = {
    "hit-doc-example": '{"product_id":"p1","message_id":"m42","payload":"data"}',
    "hit-integers": '{"message_id":-9223372036854775808,"product_id":9223372036854775807}',
    "hit-negative-zero": ' {"product_id" : 0 , "message_id":-0 } ',
    "hit-whitespace": '\t\r\n{"product_id":"a","message_id":12}\n',
    "hit-escapes": r'{"product\u005fid":"a\"\\\/\b\f\n\r\t","\u006d\u0065ssage_id":"\u00e9\u20ac\ud83d\ude00"}',
    "hit-nested-junk": '{"a":{"product_id":1,"message_id":[1,2,{"x":null}]},"product_id":"p",'
    '"b":[[],{},[[true,false,null]],-1.25e+10,"s\\"}]"],"message_id":5,"c":{"":{"":{}}},"a":1}',
    "hit-id-64-bytes": '{"product_id":"' + "x" * 64 + '","message_id":1}',
    "hit-deep-31": deep_ok,
    "miss-deep-32": deep_bad,
    "miss-id-65-bytes": '{"product_id":"' + "x" * 65 + '","message_id":1}',
    "miss-huge-number": '{"product_id":9223372036854775808,"message_id":1}',
    "miss-huge-negative": '{"product_id":-123456789012345678901234567890,"message_id":1}',
    "miss-float": '{"product_id":1.0,"message_id":1e3}',
    "miss-negative-zero-float": '{"product_id":-0.0,"message_id":1}',
    "miss-empty-string": '{"product_id":"","message_id":1}',
    "miss-null-bool": '{"product_id":null,"message_id":true}',
    "miss-object-id": '{"product_id":{"a":1},"message_id":[1]}',
    "miss-duplicate": '{"product_id":"p","message_id":1,"message\\u005fid":2}',
    "miss-lone-surrogate": '{"product_id":"\\ud83d","message_id":1}',
    "miss-lone-surrogate-skipped": '{"product_id":"p","message_id":1,"x":"\\ude00"}',
    "miss-raw-control": '{"product_id":"a\tb","message_id":1}',
    "miss-trailing-comma": '{"product_id":"p","message_id":1,}',
    "miss-trailing-data": '{"product_id":"p","message_id":1} x',
    "miss-bom": '\ufeff{"product_id":"p","message_id":1}',
    "miss-array-root": '[{"product_id":"p","message_id":1}]',
    "miss-only-product": '{"product_id":"p"}',
    "miss-empty-object": "{}",
    "miss-key-lookalike": '{"product_id\\u0000":"p","message_id":1}',
    "miss-bad-literal": '{"product_id":"p","message_id":1,"x":tru}',
    "miss-truncated": '{"product_id":"p\\u00e9","message_id":-42,"n":[{"a":1.5e3}',
}
for name, text in envelope.items():
    write("envelope", name, text.encode())
write("envelope", "miss-invalid-utf8", b'{"product_id":"p\xff","message_id":1}')
write("envelope", "miss-unbalanced-deep", b"[" * 4096)

rng = random.Random(20240601)
for i, size in enumerate([4, 16, 32, 64, 128, 256, 512, 1024]):
    write("event_encode", f"random-{i}", bytes(rng.randrange(256) for _ in range(size)))
for i, size in enumerate([8, 32, 64, 128, 256, 512, 1024, 2048]):
    write("tracker", f"random-{i}", bytes(rng.randrange(256) for _ in range(size)))

# The protocol engine's seeds: their own generator, so that the seeds above stay as they were.
rng = random.Random(20261206)
for i, size in enumerate([8, 32, 64, 128, 256, 512, 1024, 2048]):
    write("server", f"random-{i}", bytes(rng.randrange(256) for _ in range(size)))

# The relay mode's seeds (the engine in front of an upstream broker): their own generator too.
rng = random.Random(20261207)
for i, size in enumerate([8, 32, 64, 128, 256, 512, 1024, 2048]):
    write("relay", f"random-{i}", bytes(rng.randrange(256) for _ in range(size)))
