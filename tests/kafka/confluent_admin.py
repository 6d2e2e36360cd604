"""confluent-kafka's AdminClient against Weir's Kafka listener: create a topic with a config,
refuse a hostile name and a duplicate, add partitions, delete. Usage: confluent_admin.py
BOOTSTRAP TOPIC. Leaves TOPIC with 5 partitions and retention.ms=3600000 for the caller to
check through gRPC, and deletes TOPIC-gone. Exit 0 when all is well; the reason on stderr
otherwise. Every wait has a deadline."""
import sys

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, ConfigSource, NewPartitions, NewTopic

bootstrap, topic = sys.argv[1], sys.argv[2]
admin = AdminClient({"bootstrap.servers": bootstrap})
failures = []


def outcome(futures, name):
    try:
        futures[name].result(timeout=30)
        return None
    except KafkaException as e:
        return e.args[0].code()


made = admin.create_topics([
    NewTopic(topic, num_partitions=3, replication_factor=1,
             config={"retention.ms": "3600000"}),
    NewTopic(topic + "-gone", num_partitions=1),
], operation_timeout=30)
for name in (topic, topic + "-gone"):
    if (code := outcome(made, name)) is not None:
        failures.append(f"create {name}: {code}")

again = admin.create_topics([NewTopic(topic, num_partitions=1)])
if outcome(again, topic) != KafkaError.TOPIC_ALREADY_EXISTS:
    failures.append(f"a second create of {topic}: {outcome(again, topic)}")
hostile = admin.create_topics([NewTopic("../escape", num_partitions=1)])
if outcome(hostile, "../escape") != KafkaError.TOPIC_EXCEPTION:
    failures.append(f"a hostile name: {outcome(hostile, '../escape')}")
bad_config = admin.create_topics([NewTopic(topic + "-bad", num_partitions=1,
                                           config={"no.such.key": "1"})])
if outcome(bad_config, topic + "-bad") != KafkaError.INVALID_CONFIG:
    failures.append(f"an unknown config key: {outcome(bad_config, topic + '-bad')}")

grown = admin.create_partitions([NewPartitions(topic, 5)])
if (code := outcome(grown, topic)) is not None:
    failures.append(f"grow {topic} to 5: {code}")
shrunk = admin.create_partitions([NewPartitions(topic, 2)])
if outcome(shrunk, topic) != KafkaError.INVALID_PARTITIONS:
    failures.append(f"shrink {topic} to 2: {outcome(shrunk, topic)}")

# The topic's config as admin tools show it: its own override, and the defaults.
resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
configs = admin.describe_configs([resource])[resource].result(timeout=30)
retention = configs.get("retention.ms")
if retention is None or retention.value != "3600000" \
        or retention.source != ConfigSource.DYNAMIC_TOPIC_CONFIG.value:
    failures.append(f"retention.ms described as {retention}")
if configs.get("segment.bytes") is None \
        or configs["segment.bytes"].source != ConfigSource.DEFAULT_CONFIG.value:
    failures.append(f"segment.bytes described as {configs.get('segment.bytes')}")
cluster = admin.describe_cluster().result(timeout=30)
if [f"{n.host}:{n.port}" for n in cluster.nodes] != [bootstrap]:
    failures.append(f"the cluster described as {cluster.nodes}")

gone = admin.delete_topics([topic + "-gone"], operation_timeout=30)
if (code := outcome(gone, topic + "-gone")) is not None:
    failures.append(f"delete {topic}-gone: {code}")

listed = admin.list_topics(timeout=30).topics
if topic not in listed or len(listed[topic].partitions) != 5:
    failures.append(f"metadata after: {sorted(listed)} {listed.get(topic)}")
if topic + "-gone" in listed:
    failures.append(f"{topic}-gone is still listed")

if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print("ok")
