"""confluent-kafka (librdkafka 2.16) against Weir's Kafka listener: produce idempotently with
acks=all (lz4, keys, headers) and with acks=0, consume by assignment, and check every record came back
once, in order. Usage: confluent_roundtrip.py BOOTSTRAP TOPIC. Exit 0 when all is well; the
reason on stderr otherwise. Every wait has a deadline."""
import sys
import time

from confluent_kafka import Consumer, Producer, TopicPartition

bootstrap, topic = sys.argv[1], sys.argv[2]
failures = []

acked = []
producer = Producer({"bootstrap.servers": bootstrap, "compression.type": "lz4", "acks": "all",
                     "enable.idempotence": True})
for i in range(100):
    producer.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode(),
                     headers=[("n", str(i).encode())],
                     on_delivery=lambda err, msg: acked.append((err, msg.offset())))
if producer.flush(30) != 0:
    failures.append("acks=all: records still unacknowledged after 30 s")
errors = [e for e, _ in acked if e is not None]
if errors or len(acked) != 100:
    failures.append(f"acks=all: {len(acked)} acknowledged, errors {errors[:3]}")
elif sorted(o for _, o in acked) != list(range(100)):
    failures.append(f"acks=all offsets: {sorted(o for _, o in acked)[:5]}...")

# acks=0: the broker sends no response; the records still land.
fire = Producer({"bootstrap.servers": bootstrap, "acks": 0})
for i in range(100, 110):
    fire.produce(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
fire.flush(30)

consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "assign-only",
                     "enable.auto.commit": False, "fetch.wait.max.ms": 200})
consumer.assign([TopicPartition(topic, 0, 0)])
seen = []
deadline = time.monotonic() + 30
while len(seen) < 110 and time.monotonic() < deadline:
    message = consumer.poll(1)
    if message is None:
        continue
    if message.error():
        failures.append(f"consume: {message.error()}")
        break
    seen.append((message.offset(), message.key(), message.value(), message.headers()))
consumer.close()
if [o for o, *_ in seen] != list(range(110)):
    failures.append(f"consumed offsets {[o for o, *_ in seen][:5]}... ({len(seen)} records)")
for offset, key, value, headers in seen[:100]:
    if key != f"k{offset}".encode() or value != f"v{offset}".encode() \
            or headers != [("n", str(offset).encode())]:
        failures.append(f"record {offset}: {key} {value} {headers}")
        break

if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print(f"ok: {len(seen)} records")
