"""Kafka's error codes as confluent-kafka's producer reports them. Usage: confluent_errors.py
BOOTSTRAP TOPIC, where TOPIC has one replica and min.insync.replicas=2: acks=all is refused
with NOT_ENOUGH_REPLICAS (retriable: with retries the client tries until its timeout),
acks=1 is written; a topic that does not exist is UNKNOWN_TOPIC_OR_PART. Exit 0 when all is
well."""
import sys

from confluent_kafka import KafkaError, Producer

bootstrap, topic = sys.argv[1], sys.argv[2]
failures = []


def deliver(config, to):
    reports = []
    producer = Producer({"bootstrap.servers": bootstrap, "message.timeout.ms": 3000, **config})
    producer.produce(to, value=b"v", partition=0,
                     on_delivery=lambda err, msg: reports.append(err))
    producer.flush(30)
    return reports


# Without retries the broker's code reaches the application.
reports = deliver({"acks": "all", "enable.idempotence": False, "retries": 0}, topic)
if len(reports) != 1 or reports[0] is None or reports[0].code() != KafkaError.NOT_ENOUGH_REPLICAS:
    failures.append(f"acks=all below min.insync.replicas: {reports}")
# With retries the client keeps trying until its timeout: the code was retriable to it too.
reports = deliver({"acks": "all", "enable.idempotence": False}, topic)
if len(reports) != 1 or reports[0] is None or reports[0].code() != KafkaError._MSG_TIMED_OUT:
    failures.append(f"acks=all retried: {reports}")
reports = deliver({"acks": "1"}, topic)
if reports != [None]:
    failures.append(f"acks=1: {reports}")
reports = deliver({"acks": "1", "topic.metadata.propagation.max.ms": 500}, topic + "-missing")
if len(reports) != 1 or reports[0] is None or reports[0].code() not in (
        KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC):
    failures.append(f"a topic that does not exist: {reports}")

if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print("ok")
