# A raw MQTT 5 subscriber (client id "picky", topic devices/7/cmd, options 0x2D) that refuses
# its first delivery (PUBACK 0x87) and leaves with DISCONNECT 0x83: what no client tool sends.
# Usage: python3 scripts/mqtt5-refusing-subscriber.py PORT (for the example in docs/events.md).
import socket, sys, struct
port = int(sys.argv[1])
s = socket.create_connection(("127.0.0.1", port))
def pkt(first, body):
    return bytes([first, len(body)]) + body
def mstr(x):
    b = x.encode(); return struct.pack(">H", len(b)) + b
def read():
    first = s.recv(1)[0]; n = 0; shift = 0
    while True:
        b = s.recv(1)[0]; n |= (b & 0x7F) << shift; shift += 7
        if b < 0x80: break
    body = b""
    while len(body) < n: body += s.recv(n - len(body))
    return first, body
s.sendall(pkt(0x10, mstr("MQTT") + bytes([5, 0x02, 0, 60, 0]) + mstr("picky")))
assert read()[0] == 0x20
s.sendall(pkt(0x82, bytes([0, 1, 0]) + mstr("devices/7/cmd") + bytes([0b0010_1101])))
assert read()[0] == 0x90
print("subscribed", flush=True)
while True:
    first, body = read()
    if first & 0xF0 == 0x30: break
tl = struct.unpack(">H", body[:2])[0]
pkid = body[2 + tl:4 + tl]
s.sendall(bytes([0x40, 3]) + pkid + bytes([0x87]))
s.sendall(bytes([0xE0, 1, 0x83]))
s.close()
