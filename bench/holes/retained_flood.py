"""N retained messages (100-byte payloads, QoS 0), then a new MQTT 3.1.1 subscriber to
`#` at QoS 0 reading as fast as it can: how many it receives before 5 s of silence.

    python3 retained_flood.py HOST PORT N
"""
import socket, struct, sys, time
host, port, N = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
def varint(n):
    out = bytearray()
    while True:
        b = n % 128; n //= 128
        out.append(b | (0x80 if n else 0))
        if not n: return bytes(out)
def pkt(first, body): return bytes([first]) + varint(len(body)) + body
def s(x): x = x.encode(); return struct.pack(">H", len(x)) + x
def connect(cid):
    body = s("MQTT") + bytes([4, 2]) + struct.pack(">H", 60) + s(cid)
    c = socket.create_connection((host, port)); c.sendall(pkt(0x10, body)); c.recv(4); return c
p = connect("retainer")
buf = bytearray()
for i in range(N):
    buf += pkt(0x31, s(f"r/{i}") + b"x" * 100)
    if len(buf) > 1 << 20: p.sendall(buf); buf.clear()
p.sendall(buf); p.sendall(b"\xc0\x00")
while p.recv(2) != b"\xd0\x00": pass
sub = connect("all"); sub.sendall(pkt(0x82, struct.pack(">H", 1) + s("#") + b"\x00"))
sub.settimeout(5.0); data = bytearray(); count = 0; t0 = time.time()
try:
    while True:
        chunk = sub.recv(1 << 16)
        if not chunk: break
        data += chunk
        while len(data) >= 2:
            mult, n, i = 1, 0, 1
            while True:
                if i >= len(data): break
                b = data[i]; n += (b & 0x7f) * mult; mult *= 128; i += 1
                if b < 128: break
            if len(data) < i + n: break
            if data[0] >> 4 == 3: count += 1
            del data[:i + n]
except socket.timeout: pass
print(f"{N} retained: the new subscriber received {count} ({time.time() - t0 - 5:.1f} s)")
