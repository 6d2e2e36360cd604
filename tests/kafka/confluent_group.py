"""confluent-kafka consumers in groups of Kafka's classic protocol (JoinGroup, SyncGroup).

Usage: confluent_group.py MODE BOOTSTRAP TOPIC [STRATEGY]; TOPIC has six partitions.
- members: three consumers of one group ("members-STRATEGY", STRATEGY "range" (eager) or
  "cooperative-sticky") join one by one and one leaves, while they read 3,000 records and
  commit each one: every record is read, and none twice unless its commit was refused.
- resume: after the caller restarted the broker, the group "members-range" starts where its
  commits left it: 500 on every partition, then only what is new.
- static: two static members (group.instance.id); one restarts and takes its place back with
  no rebalance of the other. Then prints "ready" and holds both until stdin closes, for the
  caller to describe the group.
- kip848: two consumers with group.protocol=consumer (KIP-848, ConsumerGroupHeartbeat), the
  second joining while the first reads, share group "kip848": every record once, both read.
Exit 0 when all is well."""
import sys
import threading
import time
from collections import Counter

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

mode, bootstrap, topic = sys.argv[1], sys.argv[2], sys.argv[3]
strategy = sys.argv[4] if len(sys.argv) > 4 else "range"
PARTITIONS = 6
RECORDS = 3000
failures = []


def wait_for(what, condition, seconds=60):
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise RuntimeError(f"not within {seconds} s: {what}")
        time.sleep(0.05)


def produce(count, start=0):
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for i in range(start, start + count):
        producer.produce(topic, value=f"r{i}".encode(), partition=i % PARTITIONS)
    if producer.flush(30) != 0:
        raise RuntimeError("records unacknowledged after 30 s")


def config(group, **extra):
    c = {"bootstrap.servers": bootstrap, "group.id": group,
         "enable.auto.commit": False, "auto.offset.reset": "earliest"}
    # The broker decides timeouts and assignment under KIP-848's protocol.
    if extra.get("group.protocol") != "consumer":
        c.update({"heartbeat.interval.ms": 500, "session.timeout.ms": 6000,
                  "partition.assignment.strategy": strategy})
    c.update(extra)
    return c


class Member(threading.Thread):
    """A consumer that reads, records and commits each record until told to stop."""

    def __init__(self, name, group, seen, refused, **extra):
        super().__init__(daemon=True)
        self.name, self.seen, self.refused = name, seen, refused
        self.consumer = Consumer(config(group, **extra))
        self.assigned = set()
        self.rebalances = 0
        self.stop = threading.Event()
        self.error = None

    def on_assign(self, consumer, partitions):
        self.rebalances += 1
        self.assigned |= {p.partition for p in partitions}

    def on_revoke(self, consumer, partitions):
        self.rebalances += 1
        self.assigned -= {p.partition for p in partitions}

    def run(self):
        try:
            self.consumer.subscribe([topic], on_assign=self.on_assign, on_revoke=self.on_revoke)
            while not self.stop.is_set():
                m = self.consumer.poll(0.2)
                if m is None:
                    continue
                if m.error():
                    raise RuntimeError(str(m.error()))
                self.seen.append((m.partition(), m.offset(), self.name))
                time.sleep(0.002)
                try:
                    self.consumer.commit(message=m, asynchronous=False)
                except KafkaException as e:
                    # Refused (the group is rebalancing): the record may come again.
                    self.refused.append((m.partition(), m.offset(), str(e)))
        except Exception as e:  # noqa: BLE001 - reported to the main thread
            self.error = e
        finally:
            self.consumer.close()

    def finish(self):
        self.stop.set()
        self.join(30)
        if self.error:
            failures.append(f"{self.name}: {self.error}")


def members():
    group = f"members-{strategy}"
    produce(RECORDS)
    seen, refused = [], []
    admin = AdminClient({"bootstrap.servers": bootstrap})

    def described():
        return admin.describe_consumer_groups([group])[group].result(timeout=30)

    def distinct():
        return len({(p, o) for p, o, _ in list(seen)})

    a = Member("a", group, seen, refused)
    a.start()
    wait_for("a reads 300 records", lambda: distinct() >= 300)
    b = Member("b", group, seen, refused)
    b.start()
    wait_for("b reads", lambda: any(n == "b" for _, _, n in list(seen)))
    c = Member("c", group, seen, refused)
    c.start()
    # Three members share the six partitions, as Kafka's admin tools see it.
    def three_share():
        d = described()
        parts = [tp.partition for m in d.members for tp in m.assignment.topic_partitions]
        return (len(d.members) == 3 and str(d.state) == "ConsumerGroupState.STABLE"
                and sorted(parts) == list(range(PARTITIONS)))
    wait_for("three members share the partitions", three_share)
    wait_for("c reads", lambda: any(n == "c" for _, _, n in list(seen)))
    b.finish()
    wait_for("every record is read", lambda: distinct() >= RECORDS, 120)
    a.finish()
    c.finish()
    counts = Counter((p, o) for p, o, _ in seen)
    expected = {(i % PARTITIONS, i // PARTITIONS) for i in range(RECORDS)}
    missing = expected - set(counts)
    if missing:
        failures.append(f"{len(missing)} records never read, e.g. {sorted(missing)[:5]}")
    may_repeat = {(p, o) for p, o, _ in refused}
    twice = {k for k, n in counts.items() if n > 1 and k not in may_repeat}
    if twice:
        failures.append(f"{len(twice)} records read twice though committed, e.g. {sorted(twice)[:5]}")
    by_member = Counter(n for _, _, n in seen)
    print(f"{strategy}: read {len(seen)} ({by_member}), commits refused {len(refused)}")
    check = Consumer(config(group))
    committed = check.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    offsets = sorted(tp.offset for tp in committed)
    if offsets != [RECORDS // PARTITIONS] * PARTITIONS:
        failures.append(f"committed offsets {offsets}")
    check.close()


def resume():
    group = "members-range"
    check = Consumer(config(group))
    committed = check.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=30)
    check.close()
    offsets = sorted(tp.offset for tp in committed)
    if offsets != [RECORDS // PARTITIONS] * PARTITIONS:
        failures.append(f"after the restart, committed offsets {offsets}")
    produce(PARTITIONS, start=RECORDS)
    seen, refused = [], []
    a = Member("a", group, seen, refused)
    a.start()
    wait_for("the new records are read", lambda: len(seen) >= PARTITIONS)
    time.sleep(1)  # anything older would have come first; a second more shows nothing else
    a.finish()
    if sorted((p, o) for p, o, _ in seen) != [(p, RECORDS // PARTITIONS) for p in range(PARTITIONS)]:
        failures.append(f"after the restart the group read {sorted(seen)[:10]}")


def static():
    group = "statics"
    produce(60)
    seen, refused = [], []
    one = Member("one", group, seen, refused, **{"group.instance.id": "one"})
    two = Member("two", group, seen, refused, **{"group.instance.id": "two"})
    one.start()
    two.start()
    wait_for("both members hold three partitions",
             lambda: len(one.assigned) == 3 and len(two.assigned) == 3)
    wait_for("every record is read", lambda: len({(p, o) for p, o, _ in seen}) >= 60)
    held, rebalances = set(one.assigned), two.rebalances
    # A static member leaves no LeaveGroup behind: its place waits for it.
    one.finish()
    again = Member("one-again", group, seen, refused, **{"group.instance.id": "one"})
    again.start()
    wait_for("the restarted member holds its partitions again", lambda: again.assigned == held)
    time.sleep(2)  # a rebalance of the other member would show within its heartbeats
    if two.rebalances != rebalances:
        failures.append(f"the other member rebalanced: {rebalances} -> {two.rebalances} callbacks")
    if again.assigned | two.assigned != set(range(PARTITIONS)):
        failures.append(f"assignments {again.assigned} and {two.assigned}")
    print("ready", flush=True)
    sys.stdin.read()
    again.finish()
    two.finish()


def kip848():
    group = "kip848"
    produce(RECORDS)
    seen, refused = [], []
    kind = {"group.protocol": "consumer"}
    a = Member("a", group, seen, refused, **kind)
    a.start()
    wait_for("a reads 300 records", lambda: len({(p, o) for p, o, _ in list(seen)}) >= 300)
    b = Member("b", group, seen, refused, **kind)
    b.start()
    wait_for("every record is read", lambda: len({(p, o) for p, o, _ in list(seen)}) >= RECORDS, 120)
    a.finish()
    b.finish()
    counts = Counter((p, o) for p, o, _ in seen)
    expected = {(i % PARTITIONS, i // PARTITIONS) for i in range(RECORDS)}
    if expected - set(counts):
        failures.append(f"{len(expected - set(counts))} records never read")
    may_repeat = {(p, o) for p, o, _ in refused}
    twice = {k for k, n in counts.items() if n > 1 and k not in may_repeat}
    if twice:
        failures.append(f"{len(twice)} records read twice though committed, e.g. {sorted(twice)[:5]}")
    by_member = Counter(n for _, _, n in seen)
    if by_member["b"] == 0:
        failures.append(f"the second member read nothing: {by_member}")
    print(f"kip848: read {len(seen)} ({by_member}), commits refused {len(refused)}")


{"members": members, "resume": resume, "static": static, "kip848": kip848}[mode]()
if failures:
    print("\n".join(failures), file=sys.stderr)
    sys.exit(1)
print("ok")
