"""QoS 2 across broker crashes, with paho-mqtt (an MQTT client independent of ringmq).

Usage: qos2_kill9.py PORT COUNT

A persistent publisher (clean session off) publishes COUNT QoS 2 messages (payload: their
number) to `exact/t` on 127.0.0.1:PORT while the test kills the broker with SIGKILL and
starts it again on the same port and data directory, several times. A persistent
subscriber to `exact/#` prints `got N` for every message paho hands it (paho delivers a
QoS 2 message on PUBREL and keeps the ids awaiting it across reconnects, as the
protocol asks of a receiver). Both reconnect on their own. The script ends once every
message is complete (PUBCOMP) and received, or after a time limit; the test then checks
that each number came exactly once.

paho-mqtt (2.2.0 and earlier) breaks QoS 2 on the sending side when a reconnect attempt
fails: `reconnect` resets the outgoing messages before every attempt, and a second reset
turns a message waiting to send its PUBREL again back into a PUBLISH (DUP 0, same packet
id), which MQTT-4.3.3 forbids once the PUBREL was sent; any receiver then takes it for a
new message. `Client` below keeps such a message on PUBREL, so that the test checks the
broker and not that slip.
"""

import os
import sys
import threading
import time

import paho.mqtt.client as mqtt

port = int(sys.argv[1])
count = int(sys.argv[2])
lock = threading.Lock()
received = set()
completed = set()
subscribed = threading.Event()


class Client(mqtt.Client):
    def _messages_reconnect_reset_out(self):
        with self._out_message_mutex:
            pubrel = [
                m
                for m in self._out_messages.values()
                if m.qos == 2 and m.state == mqtt.mqtt_ms_resend_pubrel
            ]
            super()._messages_reconnect_reset_out()
            for m in pubrel:
                m.state = mqtt.mqtt_ms_resend_pubrel


def client(name):
    c = Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, clean_session=False)
    c.reconnect_delay_set(min_delay=0.05, max_delay=0.2)
    c.max_inflight_messages_set(20)
    c.max_queued_messages_set(0)
    return c


def on_sub_connect(c, userdata, flags, reason, props):
    c.subscribe("exact/#", qos=2)


def on_subscribe(c, userdata, mid, reasons, props):
    subscribed.set()


def on_message(c, userdata, m):
    n = int(m.payload)
    with lock:
        received.add(n)
    print(f"got {n}", flush=True)


def on_publish(c, userdata, mid, reason, props):
    with lock:
        completed.add(mid)


sub = client("qos2-sub")
sub.on_connect = on_sub_connect
sub.on_subscribe = on_subscribe
sub.on_message = on_message
sub.connect("127.0.0.1", port, keepalive=30)
sub.loop_start()
if not subscribed.wait(30):
    print("no SUBACK", file=sys.stderr, flush=True)
    os._exit(2)

pub = client("qos2-pub")
pub.on_publish = on_publish
pub.connect("127.0.0.1", port, keepalive=30)
pub.loop_start()

# Published at a steady pace while the broker is killed and started again; paho keeps
# what it could not send yet and sends it (or its PUBREL) after reconnecting.
for n in range(count):
    pub.publish("exact/t", str(n).encode(), qos=2)
    time.sleep(0.008)

deadline = time.time() + 80
while time.time() < deadline:
    with lock:
        if len(completed) >= count and len(received) >= count:
            break
    time.sleep(0.1)
with lock:
    print(f"completed {len(completed)} received {len(received)}", file=sys.stderr, flush=True)
os._exit(0)
