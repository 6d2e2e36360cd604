"""confluent-kafka's AdminClient describes a Weir group (one `weir consume --group native`
member on TOPIC's three partitions): stable, one member, its assignment decoded from the
consumer protocol. Usage: confluent_describe.py BOOTSTRAP TOPIC. Exit 0 when all is well."""
import sys

from confluent_kafka import ConsumerGroupState
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
print("ok")
