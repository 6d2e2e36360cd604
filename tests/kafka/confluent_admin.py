"""confluent-kafka's AdminClient against Weir's Kafka listener: create a topic with a config,
refuse a hostile name and a duplicate, add partitions, alter configs (whole and by key,
validate-only too), delete records, find the largest timestamp, delete. Usage: confluent_admin.py
BOOTSTRAP TOPIC. Leaves TOPIC with 5 partitions and retention.ms=3600000 for the caller to
check through gRPC, and deletes TOPIC-gone. Exit 0 when all is well; the reason on stderr
otherwise. Every wait has a deadline."""
import sys

from confluent_kafka import (Consumer, KafkaError, KafkaException, Producer,
                             TopicPartition)
from confluent_kafka.admin import (AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource,
                                   ConfigSource, NewPartitions, NewTopic, OffsetSpec)

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
# The broker's own settings, under Kafka's names, read-only.
broker = ConfigResource(ConfigResource.Type.BROKER, str(cluster.nodes[0].id))
settings = admin.describe_configs([broker])[broker].result(timeout=30)
if settings.get("socket.request.max.bytes") is None \
        or settings["socket.request.max.bytes"].value != "104857600" \
        or not settings["socket.request.max.bytes"].is_read_only \
        or settings.get("log.retention.ms") is None:
    failures.append(f"the broker's settings: {sorted(settings)}")



def config_of(name):
    r = ConfigResource(ConfigResource.Type.TOPIC, name)
    return admin.describe_configs([r])[r].result(timeout=30)


def incremental(name, entries, validate_only=False):
    r = ConfigResource(ConfigResource.Type.TOPIC, name, incremental_configs=entries)
    futures = admin.incremental_alter_configs([r], validate_only=validate_only)
    try:
        futures[r].result(timeout=30)
        return None
    except KafkaException as e:
        return e.args[0].code()


# By key: set one, check it, set it back to its default; the other override stays.
SET, DELETE = AlterConfigOpType.SET, AlterConfigOpType.DELETE
if (code := incremental(topic, [ConfigEntry("segment.ms", "7200000",
                                            incremental_operation=SET)])) is not None:
    failures.append(f"incremental set: {code}")
if config_of(topic)["segment.ms"].value != "7200000":
    failures.append(f"segment.ms after a set: {config_of(topic)['segment.ms']}")
if (code := incremental(topic, [ConfigEntry("segment.ms", None,
                                            incremental_operation=DELETE)])) is not None:
    failures.append(f"incremental delete: {code}")
after = config_of(topic)
if after["segment.ms"].source != ConfigSource.DEFAULT_CONFIG.value \
        or after["retention.ms"].value != "3600000":
    failures.append(f"after a delete: {after['segment.ms']} {after['retention.ms']}")
for entries, validate_only in [
        ([ConfigEntry("no.such.key", "1", incremental_operation=SET)], False),
        ([ConfigEntry("retention.ms", "soon", incremental_operation=SET)], False),
        ([ConfigEntry("retention.ms", "soon", incremental_operation=SET)], True)]:
    if (code := incremental(topic, entries, validate_only)) != KafkaError.INVALID_CONFIG:
        failures.append(f"{entries} (validate only: {validate_only}): {code}")
if incremental(topic, [ConfigEntry("retention.ms", "1", incremental_operation=SET)],
               validate_only=True) is not None:
    failures.append("a valid validate-only change was refused")
if config_of(topic)["retention.ms"].value != "3600000":
    failures.append("a validate-only change changed the topic")

# A broker's settings come from its config file: not altered through Kafka's API.
broker_change = ConfigResource(ConfigResource.Type.BROKER, str(cluster.nodes[0].id),
                               incremental_configs=[ConfigEntry("log.retention.ms", "1",
                                                                incremental_operation=SET)])
try:
    admin.incremental_alter_configs([broker_change])[broker_change].result(timeout=30)
    failures.append("a broker's settings were altered")
except KafkaException as e:
    if e.args[0].code() != KafkaError.INVALID_REQUEST:
        failures.append(f"altering a broker's settings: {e.args[0]}")

# Whole: AlterConfigs leaves exactly the configs given.
legacy = topic + "-legacy"
outcome(admin.create_topics([NewTopic(legacy, num_partitions=1,
                                      config={"retention.ms": "1000"})]), legacy)
r = ConfigResource(ConfigResource.Type.TOPIC, legacy, set_config={"segment.ms": "60000"})
admin.alter_configs([r])[r].result(timeout=30)
legacy_config = config_of(legacy)
if legacy_config["segment.ms"].value != "60000" \
        or legacy_config["retention.ms"].source != ConfigSource.DEFAULT_CONFIG.value:
    failures.append(f"after AlterConfigs: {legacy_config['segment.ms']} {legacy_config['retention.ms']}")

# Delete records, and the largest timestamp.
producer = Producer({"bootstrap.servers": bootstrap})
for i, at in enumerate([1000, 9000, 3000, 9000, 2000, 4000, 5000, 6000, 7000, 8000]):
    producer.produce(topic, value=f"r{i}".encode(), partition=0, timestamp=at)
if producer.flush(30) != 0:
    failures.append("records unacknowledged after 30 s")
p0 = TopicPartition(topic, 0)
newest = admin.list_offsets({p0: OffsetSpec.max_timestamp()})[p0].result(timeout=30)
if (newest.offset, newest.timestamp) != (1, 9000):
    failures.append(f"the largest timestamp at {newest.offset} ({newest.timestamp})")
deleted = admin.delete_records([TopicPartition(topic, 0, 4)])
low = list(deleted.values())[0].result(timeout=30).low_watermark
if low != 4:
    failures.append(f"delete records below 4: low watermark {low}")
earliest = admin.list_offsets({p0: OffsetSpec.earliest()})[p0].result(timeout=30)
if earliest.offset != 4:
    failures.append(f"earliest after deleting records: {earliest.offset}")
try:
    list(admin.delete_records([TopicPartition(topic, 0, 99)]).values())[0].result(timeout=30)
    failures.append("deleting past the high watermark was accepted")
except KafkaException as e:
    if e.args[0].code() != KafkaError.OFFSET_OUT_OF_RANGE:
        failures.append(f"deleting past the high watermark: {e.args[0]}")
# The coordinator's own records are not a client's to delete.
try:
    list(admin.delete_records([TopicPartition("__consumer_offsets", 0, 0)]).values())[0] \
        .result(timeout=30)
    failures.append("records of __consumer_offsets were deleted")
except KafkaException as e:
    if e.args[0].code() != KafkaError.TOPIC_EXCEPTION:
        failures.append(f"deleting records of __consumer_offsets: {e.args[0]}")
reader = Consumer({"bootstrap.servers": bootstrap, "group.id": "admin-reader",
                   "auto.offset.reset": "earliest", "enable.auto.commit": False})
reader.assign([TopicPartition(topic, 0, 0)])
first = None
for _ in range(60):
    m = reader.poll(0.5)
    if m is not None and not m.error():
        first = m.offset()
        break
reader.close()
if first != 4:
    failures.append(f"a consumer from offset 0 starts at {first}, not at the new start 4")

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
