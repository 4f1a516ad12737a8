"""10 MQTT 5 clients each join 10,000 shared-subscription groups on one topic
(`$share/g{i}/load/t`), PER filters per SUBSCRIBE: the time until every SUBACK is in, the
deliveries of one message published to the topic (each group once: 10,000), and the time
to unsubscribe them all.

    python3 shared_groups.py HOST PORT [PER]   (PER: default 500)
"""
import socket
import struct
import sys
import time

from mqttraw import connect, packet, read_packet, string

host, port = sys.argv[1], int(sys.argv[2])
PER = int(sys.argv[3]) if len(sys.argv) > 3 else 500
CLIENTS, GROUPS = 10, 10_000
filters = [f"$share/g{g}/load/t" for g in range(GROUPS)]


def all_groups(clients, kind, options):
    """Sends every (un)subscription PER at a time, then waits for every answer."""
    start = time.time()
    for c in clients:
        for i in range(0, GROUPS, PER):
            pkid = struct.pack(">H", (i // PER) % 65535 + 1)
            body = pkid + b"\x00" + b"".join(string(f) + options for f in filters[i : i + PER])
            c.sendall(packet(kind, body))
    for c in clients:
        for _ in range(0, GROUPS, PER):
            read_packet(c)
    return time.time() - start


clients = [connect(host, port, f"member-{i}", 5) for i in range(CLIENTS)]
t_sub = all_groups(clients, 0x82, b"\x00")
p = connect(host, port, "publisher", 5)
p.sendall(packet(0x30, string("load/t") + b"\x00" + b"x"))
delivered = 0
for c in clients:
    c.settimeout(2.0)
    try:
        while True:
            read_packet(c)
            delivered += 1
    except (socket.timeout, EOFError):
        pass
    c.settimeout(120)
t_unsub = all_groups(clients, 0xA2, b"")
print(f"subscribe {CLIENTS}x{GROUPS}: {t_sub:.2f} s; delivered {delivered}; unsubscribe: {t_unsub:.2f} s")
