"""An idempotent confluent-kafka producer (acks=all) writing COUNT records to partition 0 of
TOPIC while the test kills the partition's leader: it prints "half" once half are
acknowledged (the test's cue), then, at the end, one line "acked V1,V2,..." with every value
acknowledged. Usage: confluent_failover.py BOOTSTRAP TOPIC COUNT. Exit 1 when a record failed
for good (the reason on stderr)."""
import sys
import time

from confluent_kafka import Producer

bootstrap, topic, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
acked, failed = [], []


def delivered(err, msg):
    if err is None:
        acked.append(msg.value().decode())
    else:
        failed.append(f"{msg.value().decode()}: {err}")


producer = Producer({
    "bootstrap.servers": bootstrap,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "message.timeout.ms": 90000,
    "retry.backoff.ms": 100,
    "topic.metadata.refresh.interval.ms": 1000,
})
said_half = False
for i in range(count):
    while True:
        try:
            producer.produce(topic, value=str(i).encode(), partition=0, on_delivery=delivered)
            break
        except BufferError:
            producer.poll(0.05)
    producer.poll(0)
    # Spread the records over a few seconds, so the kill lands mid-stream.
    time.sleep(0.002)
    if not said_half and len(acked) >= count // 2:
        print("half", flush=True)
        said_half = True
if producer.flush(100) != 0:
    failed.append("records still unacknowledged after 100 s")
if not said_half:
    print("half", flush=True)
print("acked " + ",".join(acked), flush=True)
if failed:
    print("\n".join(failed[:5]), file=sys.stderr)
    sys.exit(1)
