"""10 MQTT 5 clients each join 10,000 shared-subscription groups on one topic
(`$share/g{i}/load/t`), PER filters per SUBSCRIBE: the time until every SUBACK is in, the
deliveries of one message published to the topic (each group once: 10,000), and the time
to unsubscribe them all.

    python3 shared_groups.py HOST PORT [PER]   (PER: default 500)
"""
import socket, struct, sys, time
host, port = sys.argv[1], int(sys.argv[2])
CLIENTS, GROUPS = 10, 10_000
PER = int(sys.argv[3]) if len(sys.argv) > 3 else 500
def varint(n):
    out = bytearray()
    while True:
        b = n % 128; n //= 128
        out.append(b | (0x80 if n else 0))
        if not n: return bytes(out)
def pkt(first, body): return bytes([first]) + varint(len(body)) + body
def s(x): x = x.encode(); return struct.pack(">H", len(x)) + x
def connect(cid):
    body = s("MQTT") + bytes([5, 2]) + struct.pack(">H", 60) + b"\x00" + s(cid)
    c = socket.create_connection((host, port)); c.sendall(pkt(0x10, body)); read(c); return c
def read(c):
    h = c.recv(1)
    if not h: raise EOFError
    mult, n = 1, 0
    while True:
        b = c.recv(1)[0]; n += (b & 0x7f) * mult; mult *= 128
        if b < 128: break
    body = b""
    while len(body) < n: body += c.recv(n - len(body))
    return h[0], body
clients = [connect(f"m{i}") for i in range(CLIENTS)]
filters = [f"$share/g{g}/load/t" for g in range(GROUPS)]
t0 = time.time()
for c in clients:
    for i in range(0, GROUPS, PER):
        body = struct.pack(">H", (i // PER) % 65535 + 1) + b"\x00" + b"".join(s(f) + b"\x00" for f in filters[i:i+PER])
        c.sendall(pkt(0x82, body))
for c in clients:
    for _ in range(GROUPS // PER): read(c)
t_sub = time.time() - t0
p = connect("pub"); p.sendall(pkt(0x30, s("load/t") + b"\x00" + b"x")); 
got = 0
for c in clients:
    c.settimeout(2.0)
    try:
        while True: read(c); got += 1
    except (socket.timeout, EOFError): pass
t0 = time.time()
for c in clients:
    for i in range(0, GROUPS, PER):
        body = struct.pack(">H", (i // PER) % 65535 + 1) + b"\x00" + b"".join(s(f) for f in filters[i:i+PER])
        c.sendall(pkt(0xA2, body))
for c in clients:
    c.settimeout(120)
    for _ in range(GROUPS // PER): read(c)
t_unsub = time.time() - t0
print(f"subscribe {CLIENTS}x{GROUPS}: {t_sub:.2f} s; delivered {got}; unsubscribe: {t_unsub:.2f} s")
