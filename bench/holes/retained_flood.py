"""N retained messages (100-byte payloads, QoS 0), then a new MQTT 3.1.1 subscriber to
`#` at QoS 0 reading as fast as it can: how many it receives before 5 s of silence.

    python3 retained_flood.py HOST PORT N
"""
import socket
import struct
import sys
import time

from mqttraw import connect, packet, read_packet, string

host, port, N = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
p = connect(host, port, "retainer", 4)
buf = bytearray()
for i in range(N):
    buf += packet(0x31, string(f"r/{i}") + b"x" * 100)
    if len(buf) > 1 << 20:
        p.sendall(buf)
        buf.clear()
p.sendall(buf)
p.sendall(b"\xc0\x00")  # PINGREQ: its PINGRESP comes after every PUBLISH is taken up
while read_packet(p)[0] != 0xD0:
    pass
sub = connect(host, port, "all", 4)
sub.sendall(packet(0x82, struct.pack(">H", 1) + string("#") + b"\x00"))
sub.settimeout(5.0)
count, start = 0, time.time()
try:
    while True:
        first, _ = read_packet(sub)
        if first >> 4 == 3:
            count += 1
except (socket.timeout, EOFError):
    pass
print(f"{N} retained: the new subscriber received {count} ({time.time() - start - 5:.1f} s)")
