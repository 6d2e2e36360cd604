"""confluent-kafka's AdminClient describes a Weir group (one `weir consume --group native`
member on TOPIC's three partitions): stable, one member, its assignment decoded from the
consumer protocol; and a classic Kafka consumer that tries to join that group is refused with
INCONSISTENT_GROUP_PROTOCOL. Usage: confluent_describe.py BOOTSTRAP TOPIC. Exit 0 when all is
well."""
import sys
import time

from confluent_kafka import Consumer, ConsumerGroupState, KafkaError
from confluent_kafka.admin import AdminClient

bootstrap, topic = sys.argv[1], sys.argv[2]
admin = AdminClient({"bootstrap.servers": bootstrap})
group = admin.describe_consumer_groups(["native"])["native"].result(timeout=30)
assigned = sorted((tp.topic, tp.partition) for m in group.members
                  for tp in m.assignment.topic_partitions)
if group.state != ConsumerGroupState.STABLE or len(group.members) != 1 \
        or assigned != [(topic, 0), (topic, 1), (topic, 2)]:
    print(f"native: {group.state}, {len(group.members)} members, {assigned}", file=sys.stderr)
    sys.exit(1)

# One group has members of one protocol at a time.
intruder = Consumer({"bootstrap.servers": bootstrap, "group.id": "native",
                     "session.timeout.ms": 6000})
intruder.subscribe([topic])
refused = None
deadline = time.monotonic() + 30
while refused is None and time.monotonic() < deadline:
    m = intruder.poll(0.5)
    if m is not None and m.error() is not None:
        refused = m.error().code()
intruder.close()
if refused != KafkaError.INCONSISTENT_GROUP_PROTOCOL:
    print(f"a classic consumer joining a Weir group: {refused}", file=sys.stderr)
    sys.exit(1)
print("ok")
