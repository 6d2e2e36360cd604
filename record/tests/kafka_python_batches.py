# Regenerates kafka_python_batches.json: RecordBatch v2 bytes from a real Kafka client's
# encoder (kafka-python's DefaultRecordBatchBuilder), which golden.rs compares with ours.
#   pip install kafka-python==3.0.12
#   python3 kafka_python_batches.py > kafka_python_batches.json
from kafka.record.default_records import DefaultRecordBatchBuilder
import json
cases = [
  dict(name="one_record", producer=(-1,-1,-1), records=[dict(ts=1700000000000, key="k", value="v", headers=[])]),
  dict(name="null_key_and_headers", producer=(-1,-1,-1), records=[
      dict(ts=1700000000000, key=None, value="hello", headers=[["trace","abc"],["empty",""]]),
      dict(ts=1700000000123, key="key-2", value=None, headers=[]),
      dict(ts=1699999999000, key="", value="earlier timestamp", headers=[["n", None]])]),
  dict(name="idempotent_producer", producer=(4242, 3, 17), records=[
      dict(ts=1700000005000+i, key="k%d"%i, value="value-%d"%i, headers=[]) for i in range(5)]),
]
out = []
for case in cases:
    pid, epoch, seq = case["producer"]
    b = DefaultRecordBatchBuilder(magic=2, compression_type=0, is_transactional=0, producer_id=pid, producer_epoch=epoch, base_sequence=seq, batch_size=1<<20)
    for i, r in enumerate(case["records"]):
        enc = lambda s: None if s is None else s.encode()
        b.append(i, timestamp=r["ts"], key=enc(r["key"]), value=enc(r["value"]), headers=[(k, enc(v)) for k, v in r["headers"]])
    case["hex"] = bytes(b.build()).hex()
    out.append(case)
print(json.dumps(out, indent=1))
