"""A confluent-kafka (librdkafka 2.16) consumer in a tight loop: reads RECORDS records of
partition 0 of TOPIC from the beginning, in batches, and prints one JSON line with the
records per second from the first fetch to the last record.
Usage: kafka_consume.py BOOTSTRAP TOPIC RECORDS"""
import json
import sys
import time

from confluent_kafka import Consumer, TopicPartition

bootstrap, topic, records = sys.argv[1], sys.argv[2], int(sys.argv[3])
consumer = Consumer({
    "bootstrap.servers": bootstrap,
    "group.id": "bench",
    "enable.auto.commit": False,
    "fetch.max.bytes": 52428800,
    "max.partition.fetch.bytes": 8388608,
    "queued.max.messages.kbytes": 262144,
    "fetch.wait.max.ms": 100,
})
consumer.assign([TopicPartition(topic, 0, 0)])
got = 0
started = time.monotonic()
deadline = started + 120
while got < records and time.monotonic() < deadline:
    for m in consumer.consume(num_messages=100_000, timeout=1):
        if m.error() is None:
            got += 1
elapsed = time.monotonic() - started
consumer.close()
if got < records:
    sys.exit(f"read {got} of {records} records in 120 s")
print(json.dumps({"records": got, "seconds": round(elapsed, 3),
                  "records_per_sec": round(got / elapsed)}))
