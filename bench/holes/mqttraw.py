"""MQTT packets written by hand (3.1.1 and 5.0 §2-3), for the scripts beside this one."""
import socket
import struct


def varint(n):
    """A Variable Byte Integer."""
    out = bytearray()
    while True:
        b, n = n % 128, n // 128
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def packet(first, body):
    return bytes([first]) + varint(len(body)) + body


def string(x):
    x = x.encode()
    return struct.pack(">H", len(x)) + x


def connect(host, port, client_id, level):
    """A connection with a clean session, its CONNACK read (level 4: 3.1.1, 5: 5.0)."""
    props = b"\x00" if level == 5 else b""
    body = string("MQTT") + bytes([level, 2]) + struct.pack(">H", 60) + props + string(client_id)
    c = socket.create_connection((host, port))
    c.sendall(packet(0x10, body))
    read_packet(c)
    return c


def read_packet(c):
    """The next packet's first byte and body; EOFError at the end of the stream."""
    first = c.recv(1)
    if not first:
        raise EOFError
    mult, n = 1, 0
    while True:
        b = c.recv(1)[0]
        n += (b & 0x7F) * mult
        mult *= 128
        if b < 128:
            break
    body = b""
    while len(body) < n:
        chunk = c.recv(n - len(body))
        if not chunk:
            raise EOFError
        body += chunk
    return first[0], body
