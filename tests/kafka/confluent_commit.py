"""confluent-kafka consumers that assign their partitions and commit under a group id:
the first reads ten records and commits, the second (same group) starts where it left off.
Usage: confluent_commit.py BOOTSTRAP TOPIC. Leaves group "assigners" with offset 10 on
partition 0 for the caller to check through gRPC. Exit 0 when all is well."""
import sys
import time

from confluent_kafka import Consumer, ConsumerGroupState, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

bootstrap, topic = sys.argv[1], sys.argv[2]
failures = []

producer = Producer({"bootstrap.servers": bootstrap})
for i in range(20):
    producer.produce(topic, value=f"r{i}".encode(), partition=0)
if producer.flush(30) != 0:
    failures.append("records unacknowledged after 30 s")


def consumer(group="assigners"):
    return Consumer({"bootstrap.servers": bootstrap, "group.id": group,
                     "enable.auto.commit": False, "auto.offset.reset": "earliest"})


def poll_one(c):
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        m = c.poll(1)
        if m is not None:
            if m.error():
                raise RuntimeError(str(m.error()))
            return m
    raise RuntimeError("nothing within 30 s")


first = consumer()
first.assign([TopicPartition(topic, 0)])
last = None
for _ in range(10):
    last = poll_one(first)
first.commit(message=last, asynchronous=False)
first.close()

second = consumer()
committed = second.committed([TopicPartition(topic, 0)], timeout=30)
if committed[0].offset != 10:
    failures.append(f"committed offset {committed[0].offset}, not 10")
second.assign([TopicPartition(topic, 0)])
m = poll_one(second)
if m.offset() != 10 or m.value() != b"r10":
    failures.append(f"the second consumer starts at {m.offset()} ({m.value()})")
second.close()

# Kafka's admin tools see the groups: listed, described, and one deleted.
doomed = consumer("doomed")
doomed.commit(offsets=[TopicPartition(topic, 0, 3)], asynchronous=False)
doomed.close()
admin = AdminClient({"bootstrap.servers": bootstrap})
listed = {g.group_id for g in admin.list_consumer_groups().result(timeout=30).valid}
if not {"assigners", "doomed"} <= listed:
    failures.append(f"listed groups: {listed}")
described = admin.describe_consumer_groups(["assigners"])["assigners"].result(timeout=30)
if described.state != ConsumerGroupState.EMPTY or described.members:
    failures.append(f"assigners described as {described.state} with {described.members}")
admin.delete_consumer_groups(["doomed"])["doomed"].result(timeout=30)
listed = {g.group_id for g in admin.list_consumer_groups().result(timeout=30).valid}
if "doomed" in listed:
    failures.append(f"doomed is still listed: {listed}")

if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print("ok")
