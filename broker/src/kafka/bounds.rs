//! A request body is walked before it is decoded: every array count, string and bytes length
//! is checked against the bytes that remain in the frame. The `kafka-protocol` decoder sizes
//! each array by the count on the wire (`Vec::with_capacity`), so an 8-byte frame claiming
//! two billion topics would make it allocate hundreds of gigabytes and abort the process.
//! After this walk, every count it will meet is at most the frame's remaining length (each
//! element takes at least one byte, Kafka's own rule), so what it allocates is bounded by a
//! small multiple of the frame.
//!
//! The schemas below are the request layouts of the versions this broker serves, field by
//! field, from Kafka's protocol definitions: a field is present in a range of versions, and
//! from an API's first flexible version on, strings, bytes and arrays are compact and every
//! structure ends with tagged fields.

use kafka_protocol::messages::ApiKey;

/// Why a body was refused, for the log; the connection closes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error("the request ends early: {need} more bytes needed at byte {at}")]
    Short { at: usize, need: usize },
    #[error("an array at byte {at} claims {count} elements with only {left} bytes left")]
    Count { at: usize, count: i64, left: usize },
    #[error("a length at byte {at} is {length}, which no string or bytes field can have")]
    Length { at: usize, length: i64 },
    #[error("a variable-length integer at byte {at} runs past five bytes")]
    Varint { at: usize },
    #[error("more than {MAX_ELEMENTS} array elements in one request")]
    TooManyElements,
    #[error("no schema for this API and version")]
    Unknown,
}

/// Array elements one request may hold in all. An element takes as little as one or two
/// bytes on the wire but tens in memory once decoded; this keeps a request's decoded size
/// near its frame's (no client sends a million topics or partitions in one request).
pub const MAX_ELEMENTS: usize = 1_000_000;

/// A field's type.
#[derive(Debug, Clone, Copy)]
enum T {
    I8,
    I16,
    I32,
    I64,
    Uuid,
    Bool,
    /// A (nullable) string.
    Str,
    /// (Nullable) bytes, records among them.
    Bytes,
    /// An array of structures.
    Structs(&'static [Field]),
    /// An array of plain values.
    Values(&'static T),
}

/// A field present from version `since` to version `until`, inclusive.
#[derive(Debug, Clone, Copy)]
struct Field {
    t: T,
    since: i16,
    until: i16,
}

const fn f(t: T) -> Field {
    Field {
        t,
        since: 0,
        until: i16::MAX,
    }
}

const fn from(since: i16, t: T) -> Field {
    Field {
        t,
        since,
        until: i16::MAX,
    }
}

const fn between(since: i16, until: i16, t: T) -> Field {
    Field { t, since, until }
}

/// A request's top-level fields and its first flexible version.
struct Schema {
    fields: &'static [Field],
    flexible: i16,
}

const JOIN_GROUP_PROTOCOL: &[Field] = &[f(T::Str), f(T::Bytes)];
const JOIN_GROUP: Schema = Schema {
    fields: &[
        f(T::Str),
        f(T::I32),
        from(1, T::I32),
        f(T::Str),
        from(5, T::Str),
        f(T::Str),
        f(T::Structs(JOIN_GROUP_PROTOCOL)),
        from(8, T::Str),
    ],
    flexible: 6,
};

const SYNC_GROUP_ASSIGNMENT: &[Field] = &[f(T::Str), f(T::Bytes)];
const SYNC_GROUP: Schema = Schema {
    fields: &[
        f(T::Str),
        f(T::I32),
        f(T::Str),
        from(3, T::Str),
        from(5, T::Str),
        from(5, T::Str),
        f(T::Structs(SYNC_GROUP_ASSIGNMENT)),
    ],
    flexible: 4,
};

const HEARTBEAT: Schema = Schema {
    fields: &[f(T::Str), f(T::I32), f(T::Str), from(3, T::Str)],
    flexible: 4,
};

const LEAVE_GROUP_MEMBER: &[Field] = &[f(T::Str), f(T::Str), from(5, T::Str)];
const LEAVE_GROUP: Schema = Schema {
    fields: &[
        f(T::Str),
        between(0, 2, T::Str),
        from(3, T::Structs(LEAVE_GROUP_MEMBER)),
    ],
    flexible: 4,
};

const ALTER_CONFIG: &[Field] = &[f(T::Str), f(T::Str)];
const ALTER_CONFIGS_RESOURCE: &[Field] = &[f(T::I8), f(T::Str), f(T::Structs(ALTER_CONFIG))];
const ALTER_CONFIGS: Schema = Schema {
    fields: &[f(T::Structs(ALTER_CONFIGS_RESOURCE)), f(T::Bool)],
    flexible: 2,
};

const INCREMENTAL_CONFIG: &[Field] = &[f(T::Str), f(T::I8), f(T::Str)];
const INCREMENTAL_RESOURCE: &[Field] = &[f(T::I8), f(T::Str), f(T::Structs(INCREMENTAL_CONFIG))];
const INCREMENTAL_ALTER_CONFIGS: Schema = Schema {
    fields: &[f(T::Structs(INCREMENTAL_RESOURCE)), f(T::Bool)],
    flexible: 1,
};

const DELETE_RECORDS_PARTITION: &[Field] = &[f(T::I32), f(T::I64)];
const DELETE_RECORDS_TOPIC: &[Field] = &[f(T::Str), f(T::Structs(DELETE_RECORDS_PARTITION))];
const DELETE_RECORDS: Schema = Schema {
    fields: &[f(T::Structs(DELETE_RECORDS_TOPIC)), f(T::I32)],
    flexible: 2,
};

const CONSUMER_GROUP_HEARTBEAT_OWNED: &[Field] = &[f(T::Uuid), f(T::Values(&T::I32))];
const CONSUMER_GROUP_HEARTBEAT: Schema = Schema {
    fields: &[
        f(T::Str),
        f(T::Str),
        f(T::I32),
        f(T::Str),
        f(T::Str),
        f(T::I32),
        f(T::Values(&T::Str)),
        from(1, T::Str),
        f(T::Str),
        f(T::Structs(CONSUMER_GROUP_HEARTBEAT_OWNED)),
    ],
    flexible: 0,
};

const API_VERSIONS: Schema = Schema {
    fields: &[from(3, T::Str), from(3, T::Str)],
    flexible: 3,
};

const METADATA_TOPIC: &[Field] = &[from(10, T::Uuid), f(T::Str)];
const METADATA: Schema = Schema {
    fields: &[
        f(T::Structs(METADATA_TOPIC)),
        from(4, T::Bool),
        between(8, 10, T::Bool),
        from(8, T::Bool),
    ],
    flexible: 9,
};

const PRODUCE_PARTITION: &[Field] = &[f(T::I32), f(T::Bytes)];
const PRODUCE_TOPIC: &[Field] = &[
    between(0, 12, T::Str),
    from(13, T::Uuid),
    f(T::Structs(PRODUCE_PARTITION)),
];
const PRODUCE: Schema = Schema {
    fields: &[
        from(3, T::Str),
        f(T::I16),
        f(T::I32),
        f(T::Structs(PRODUCE_TOPIC)),
    ],
    flexible: 9,
};

const FETCH_PARTITION: &[Field] = &[
    f(T::I32),
    from(9, T::I32),
    f(T::I64),
    from(12, T::I32),
    from(5, T::I64),
    f(T::I32),
];
const FETCH_TOPIC: &[Field] = &[
    between(0, 12, T::Str),
    from(13, T::Uuid),
    f(T::Structs(FETCH_PARTITION)),
];
const FETCH_FORGOTTEN: &[Field] = &[
    between(7, 12, T::Str),
    from(13, T::Uuid),
    from(7, T::Values(&T::I32)),
];
const FETCH: Schema = Schema {
    fields: &[
        between(0, 14, T::I32),
        f(T::I32),
        f(T::I32),
        from(3, T::I32),
        from(4, T::I8),
        from(7, T::I32),
        from(7, T::I32),
        f(T::Structs(FETCH_TOPIC)),
        from(7, T::Structs(FETCH_FORGOTTEN)),
        from(11, T::Str),
    ],
    flexible: 12,
};

const LIST_OFFSETS_PARTITION: &[Field] = &[f(T::I32), from(4, T::I32), f(T::I64)];
const LIST_OFFSETS_TOPIC: &[Field] = &[f(T::Str), f(T::Structs(LIST_OFFSETS_PARTITION))];
const LIST_OFFSETS: Schema = Schema {
    fields: &[
        f(T::I32),
        from(2, T::I8),
        f(T::Structs(LIST_OFFSETS_TOPIC)),
        from(10, T::I32),
    ],
    flexible: 6,
};

const INIT_PRODUCER_ID: Schema = Schema {
    fields: &[f(T::Str), f(T::I32), from(3, T::I64), from(3, T::I16)],
    flexible: 2,
};

const CREATE_TOPICS_ASSIGNMENT: &[Field] = &[f(T::I32), f(T::Values(&T::I32))];
const CREATE_TOPICS_CONFIG: &[Field] = &[f(T::Str), f(T::Str)];
const CREATE_TOPICS_TOPIC: &[Field] = &[
    f(T::Str),
    f(T::I32),
    f(T::I16),
    f(T::Structs(CREATE_TOPICS_ASSIGNMENT)),
    f(T::Structs(CREATE_TOPICS_CONFIG)),
];
const CREATE_TOPICS: Schema = Schema {
    fields: &[
        f(T::Structs(CREATE_TOPICS_TOPIC)),
        f(T::I32),
        from(1, T::Bool),
    ],
    flexible: 5,
};

const DELETE_TOPICS: Schema = Schema {
    fields: &[between(0, 5, T::Values(&T::Str)), f(T::I32)],
    flexible: 4,
};

const CREATE_PARTITIONS_ASSIGNMENT: &[Field] = &[f(T::Values(&T::I32))];
const CREATE_PARTITIONS_TOPIC: &[Field] = &[
    f(T::Str),
    f(T::I32),
    f(T::Structs(CREATE_PARTITIONS_ASSIGNMENT)),
];
const CREATE_PARTITIONS: Schema = Schema {
    fields: &[
        f(T::Structs(CREATE_PARTITIONS_TOPIC)),
        f(T::I32),
        f(T::Bool),
    ],
    flexible: 2,
};

const FIND_COORDINATOR: Schema = Schema {
    fields: &[
        between(0, 3, T::Str),
        from(1, T::I8),
        from(4, T::Values(&T::Str)),
    ],
    flexible: 3,
};

const OFFSET_COMMIT_PARTITION: &[Field] = &[
    f(T::I32),
    f(T::I64),
    from(6, T::I32),
    between(1, 1, T::I64),
    f(T::Str),
];
const OFFSET_COMMIT_TOPIC: &[Field] = &[f(T::Str), f(T::Structs(OFFSET_COMMIT_PARTITION))];
const OFFSET_COMMIT: Schema = Schema {
    fields: &[
        f(T::Str),
        from(1, T::I32),
        from(1, T::Str),
        from(7, T::Str),
        between(2, 4, T::I64),
        f(T::Structs(OFFSET_COMMIT_TOPIC)),
    ],
    flexible: 8,
};

const OFFSET_FETCH_TOPIC: &[Field] = &[f(T::Str), f(T::Values(&T::I32))];
const OFFSET_FETCH: Schema = Schema {
    fields: &[
        between(0, 7, T::Str),
        between(0, 7, T::Structs(OFFSET_FETCH_TOPIC)),
        from(7, T::Bool),
    ],
    flexible: 6,
};

const LIST_GROUPS: Schema = Schema {
    fields: &[from(4, T::Values(&T::Str)), from(5, T::Values(&T::Str))],
    flexible: 3,
};

const DESCRIBE_GROUPS: Schema = Schema {
    fields: &[f(T::Values(&T::Str)), from(3, T::Bool)],
    flexible: 5,
};

const DELETE_GROUPS: Schema = Schema {
    fields: &[f(T::Values(&T::Str))],
    flexible: 2,
};

const LEADER_EPOCH_PARTITION: &[Field] = &[f(T::I32), from(2, T::I32), f(T::I32)];
const LEADER_EPOCH_TOPIC: &[Field] = &[f(T::Str), f(T::Structs(LEADER_EPOCH_PARTITION))];
const OFFSET_FOR_LEADER_EPOCH: Schema = Schema {
    fields: &[from(3, T::I32), f(T::Structs(LEADER_EPOCH_TOPIC))],
    flexible: 4,
};

const DESCRIBE_CONFIGS_RESOURCE: &[Field] = &[f(T::I8), f(T::Str), f(T::Values(&T::Str))];
const DESCRIBE_CONFIGS: Schema = Schema {
    fields: &[
        f(T::Structs(DESCRIBE_CONFIGS_RESOURCE)),
        from(1, T::Bool),
        from(3, T::Bool),
    ],
    flexible: 4,
};

const DESCRIBE_CLUSTER: Schema = Schema {
    fields: &[f(T::Bool), from(1, T::I8), from(2, T::Bool)],
    flexible: 0,
};

fn schema(key: ApiKey) -> Option<&'static Schema> {
    Some(match key {
        ApiKey::ApiVersions => &API_VERSIONS,
        ApiKey::Metadata => &METADATA,
        ApiKey::Produce => &PRODUCE,
        ApiKey::Fetch => &FETCH,
        ApiKey::ListOffsets => &LIST_OFFSETS,
        ApiKey::InitProducerId => &INIT_PRODUCER_ID,
        ApiKey::CreateTopics => &CREATE_TOPICS,
        ApiKey::DeleteTopics => &DELETE_TOPICS,
        ApiKey::CreatePartitions => &CREATE_PARTITIONS,
        ApiKey::FindCoordinator => &FIND_COORDINATOR,
        ApiKey::OffsetCommit => &OFFSET_COMMIT,
        ApiKey::OffsetFetch => &OFFSET_FETCH,
        ApiKey::ListGroups => &LIST_GROUPS,
        ApiKey::OffsetForLeaderEpoch => &OFFSET_FOR_LEADER_EPOCH,
        ApiKey::DescribeConfigs => &DESCRIBE_CONFIGS,
        ApiKey::DescribeCluster => &DESCRIBE_CLUSTER,
        ApiKey::DescribeGroups => &DESCRIBE_GROUPS,
        ApiKey::DeleteGroups => &DELETE_GROUPS,
        ApiKey::AlterConfigs => &ALTER_CONFIGS,
        ApiKey::IncrementalAlterConfigs => &INCREMENTAL_ALTER_CONFIGS,
        ApiKey::DeleteRecords => &DELETE_RECORDS,
        ApiKey::ConsumerGroupHeartbeat => &CONSUMER_GROUP_HEARTBEAT,
        ApiKey::JoinGroup => &JOIN_GROUP,
        ApiKey::SyncGroup => &SYNC_GROUP,
        ApiKey::Heartbeat => &HEARTBEAT,
        ApiKey::LeaveGroup => &LEAVE_GROUP,
        _ => return None,
    })
}

/// Checks the body of a request (the bytes after its header) of `key` at `version`.
///
/// # Errors
/// What is wrong, at which byte.
pub fn check(key: ApiKey, version: i16, body: &[u8]) -> Result<(), Malformed> {
    let schema = schema(key).ok_or(Malformed::Unknown)?;
    let mut walk = Walk {
        body,
        at: 0,
        version,
        flexible: version >= schema.flexible,
        elements: 0,
    };
    // Bytes after the last field are ignored, as Kafka's brokers ignore them (librdkafka
    // 2.16 sends three after a Metadata v12 request for every topic).
    walk.fields(schema.fields)
}

struct Walk<'a> {
    body: &'a [u8],
    at: usize,
    version: i16,
    flexible: bool,
    /// Array elements and tagged fields so far.
    elements: usize,
}

impl Walk<'_> {
    fn left(&self) -> usize {
        self.body.len() - self.at
    }

    fn take(&mut self, n: usize) -> Result<&[u8], Malformed> {
        if n > self.left() {
            return Err(Malformed::Short {
                at: self.at,
                need: n - self.left(),
            });
        }
        let taken = &self.body[self.at..self.at + n];
        self.at += n;
        Ok(taken)
    }

    fn int(&mut self, n: usize) -> Result<i64, Malformed> {
        let bytes = self.take(n)?;
        let mut value: i64 = if bytes[0] & 0x80 != 0 { -1 } else { 0 };
        for b in bytes {
            value = (value << 8) | i64::from(*b);
        }
        Ok(value)
    }

    fn uvarint(&mut self) -> Result<u64, Malformed> {
        let start = self.at;
        let mut value = 0u64;
        for shift in (0..35).step_by(7) {
            let byte = self.take(1)?[0];
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(Malformed::Varint { at: start })
    }

    /// A length or count: compact (unsigned varint, 0 for null) when flexible, else of
    /// `width` bytes (-1 for null). `None` for null.
    fn length(&mut self, width: usize) -> Result<Option<(usize, i64)>, Malformed> {
        let at = self.at;
        let length = if self.flexible {
            self.uvarint()? as i64 - 1
        } else {
            self.int(width)?
        };
        match length {
            -1 => Ok(None),
            n if n < -1 => Err(Malformed::Length { at, length: n }),
            n => Ok(Some((at, n))),
        }
    }

    fn fields(&mut self, fields: &[Field]) -> Result<(), Malformed> {
        for field in fields {
            if (field.since..=field.until).contains(&self.version) {
                self.value(field.t)?;
            }
        }
        if self.flexible {
            self.tagged_fields()?;
        }
        Ok(())
    }

    fn tagged_fields(&mut self) -> Result<(), Malformed> {
        let at = self.at;
        let count = self.uvarint()?;
        self.bound(at, count as i64)?;
        for _ in 0..count {
            self.uvarint()?;
            let size = self.uvarint()?;
            self.take(usize::try_from(size).unwrap_or(usize::MAX))?;
        }
        Ok(())
    }

    /// An array of `count` elements needs at least `count` bytes, and the request at most
    /// [`MAX_ELEMENTS`] in all.
    fn bound(&mut self, at: usize, count: i64) -> Result<(), Malformed> {
        if count > self.left() as i64 {
            return Err(Malformed::Count {
                at,
                count,
                left: self.left(),
            });
        }
        self.elements += count.max(0) as usize;
        if self.elements > MAX_ELEMENTS {
            return Err(Malformed::TooManyElements);
        }
        Ok(())
    }

    fn value(&mut self, t: T) -> Result<(), Malformed> {
        match t {
            T::I8 | T::Bool => self.take(1).map(drop),
            T::I16 => self.take(2).map(drop),
            T::I32 => self.take(4).map(drop),
            T::I64 => self.take(8).map(drop),
            T::Uuid => self.take(16).map(drop),
            T::Str => match self.length(2)? {
                Some((_, n)) => self.take(n as usize).map(drop),
                None => Ok(()),
            },
            T::Bytes => match self.length(4)? {
                Some((_, n)) => self.take(n as usize).map(drop),
                None => Ok(()),
            },
            T::Structs(fields) => {
                if let Some((at, count)) = self.length(4)? {
                    self.bound(at, count)?;
                    for _ in 0..count {
                        self.fields(fields)?;
                    }
                }
                Ok(())
            }
            T::Values(t) => {
                if let Some((at, count)) = self.length(4)? {
                    self.bound(at, count)?;
                    for _ in 0..count {
                        self.value(*t)?;
                    }
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use kafka_protocol::messages::{
        ApiVersionsRequest, FetchRequest, ListOffsetsRequest, MetadataRequest, ProduceRequest,
        TopicName, fetch_request, list_offsets_request, metadata_request, produce_request,
    };
    use kafka_protocol::protocol::{Encodable, StrBytes};

    use super::*;

    fn encoded<M: Encodable>(message: &M, version: i16) -> Vec<u8> {
        let mut bytes = BytesMut::new();
        message.encode(&mut bytes, version).expect("encode");
        bytes.to_vec()
    }

    fn name(text: &'static str) -> TopicName {
        TopicName(StrBytes::from_static_str(text))
    }

    /// Every version served of each request, as the crate's client side encodes it, walks
    /// to its last byte; one byte less is short.
    #[test]
    fn requests_clients_send_walk_whole() {
        let mut metadata = MetadataRequest::default();
        metadata.topics = Some(vec![
            metadata_request::MetadataRequestTopic::default().with_name(Some(name("orders"))),
        ]);
        let mut produce = ProduceRequest::default();
        produce.topic_data = vec![
            produce_request::TopicProduceData::default()
                .with_name(name("orders"))
                .with_partition_data(vec![
                    produce_request::PartitionProduceData::default()
                        .with_index(3)
                        .with_records(Some(bytes::Bytes::from_static(b"batch"))),
                ]),
        ];
        let mut fetch = FetchRequest::default();
        fetch.topics = vec![
            fetch_request::FetchTopic::default()
                .with_topic(name("orders"))
                .with_partitions(vec![
                    fetch_request::FetchPartition::default().with_fetch_offset(7),
                ]),
        ];
        let mut list = ListOffsetsRequest::default();
        list.topics = vec![
            list_offsets_request::ListOffsetsTopic::default()
                .with_name(name("orders"))
                .with_partitions(vec![
                    list_offsets_request::ListOffsetsPartition::default().with_timestamp(-1),
                ]),
        ];
        let mut cases: Vec<(ApiKey, i16, Vec<u8>)> = Vec::new();
        for v in 0..=4 {
            cases.push((
                ApiKey::ApiVersions,
                v,
                encoded(&ApiVersionsRequest::default(), v),
            ));
        }
        for v in 0..=12 {
            cases.push((ApiKey::Metadata, v, encoded(&metadata, v)));
        }
        for v in 3..=11 {
            cases.push((ApiKey::Produce, v, encoded(&produce, v)));
        }
        for v in 4..=12 {
            cases.push((ApiKey::Fetch, v, encoded(&fetch, v)));
        }
        for v in 1..=7 {
            cases.push((ApiKey::ListOffsets, v, encoded(&list, v)));
        }
        let init = kafka_protocol::messages::InitProducerIdRequest::default()
            .with_transaction_timeout_ms(60_000);
        for v in 0..=4 {
            cases.push((ApiKey::InitProducerId, v, encoded(&init, v)));
        }
        use kafka_protocol::messages::{
            CreatePartitionsRequest, CreateTopicsRequest, DeleteTopicsRequest,
            create_partitions_request, create_topics_request,
        };
        let create = CreateTopicsRequest::default().with_topics(vec![
            create_topics_request::CreatableTopic::default()
                .with_name(name("orders"))
                .with_num_partitions(3)
                .with_replication_factor(-1)
                .with_assignments(vec![
                    create_topics_request::CreatableReplicaAssignment::default()
                        .with_broker_ids(vec![1.into(), 2.into()]),
                ])
                .with_configs(vec![
                    create_topics_request::CreatableTopicConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_value(Some(StrBytes::from_static_str("1000"))),
                ]),
        ]);
        for v in 2..=7 {
            cases.push((ApiKey::CreateTopics, v, encoded(&create, v)));
        }
        let delete = DeleteTopicsRequest::default().with_topic_names(vec![name("orders")]);
        for v in 1..=5 {
            cases.push((ApiKey::DeleteTopics, v, encoded(&delete, v)));
        }
        let grow = CreatePartitionsRequest::default().with_topics(vec![
            create_partitions_request::CreatePartitionsTopic::default()
                .with_name(name("orders"))
                .with_count(6)
                .with_assignments(Some(vec![
                    create_partitions_request::CreatePartitionsAssignment::default()
                        .with_broker_ids(vec![1.into()]),
                ])),
        ]);
        for v in 0..=3 {
            cases.push((ApiKey::CreatePartitions, v, encoded(&grow, v)));
        }
        use kafka_protocol::messages::{
            FindCoordinatorRequest, OffsetCommitRequest, OffsetFetchRequest, offset_commit_request,
            offset_fetch_request,
        };
        let find = FindCoordinatorRequest::default().with_key(StrBytes::from_static_str("billing"));
        for v in 0..=3 {
            cases.push((ApiKey::FindCoordinator, v, encoded(&find, v)));
        }
        let batched = FindCoordinatorRequest::default().with_coordinator_keys(vec![
            StrBytes::from_static_str("billing"),
            StrBytes::from_static_str("audit"),
        ]);
        cases.push((ApiKey::FindCoordinator, 4, encoded(&batched, 4)));
        let mut commit = OffsetCommitRequest::default()
            .with_group_id(kafka_protocol::messages::GroupId(
                StrBytes::from_static_str("billing"),
            ))
            .with_topics(vec![
                offset_commit_request::OffsetCommitRequestTopic::default()
                    .with_name(name("orders"))
                    .with_partitions(vec![
                        offset_commit_request::OffsetCommitRequestPartition::default()
                            .with_committed_offset(42)
                            .with_committed_metadata(Some(StrBytes::from_static_str("m"))),
                    ]),
            ]);
        for v in 2..=8 {
            if v >= 7 {
                commit.group_instance_id = Some(StrBytes::from_static_str("static-1"));
            }
            cases.push((ApiKey::OffsetCommit, v, encoded(&commit, v)));
        }
        let fetch_offsets = OffsetFetchRequest::default()
            .with_group_id(kafka_protocol::messages::GroupId(
                StrBytes::from_static_str("billing"),
            ))
            .with_topics(Some(vec![
                offset_fetch_request::OffsetFetchRequestTopic::default()
                    .with_name(name("orders"))
                    .with_partition_indexes(vec![0, 1]),
            ]));
        for v in 1..=7 {
            cases.push((ApiKey::OffsetFetch, v, encoded(&fetch_offsets, v)));
        }
        use kafka_protocol::messages::{
            DeleteGroupsRequest, DescribeGroupsRequest, GroupId, ListGroupsRequest,
        };
        let billing = || GroupId(StrBytes::from_static_str("billing"));
        let list = ListGroupsRequest::default()
            .with_states_filter(vec![StrBytes::from_static_str("Stable")]);
        for v in 0..=4 {
            let list = if v >= 4 {
                list.clone()
            } else {
                ListGroupsRequest::default()
            };
            cases.push((ApiKey::ListGroups, v, encoded(&list, v)));
        }
        let describe = DescribeGroupsRequest::default().with_groups(vec![billing()]);
        for v in 0..=5 {
            cases.push((ApiKey::DescribeGroups, v, encoded(&describe, v)));
        }
        let delete_groups = DeleteGroupsRequest::default().with_groups_names(vec![billing()]);
        for v in 0..=2 {
            cases.push((ApiKey::DeleteGroups, v, encoded(&delete_groups, v)));
        }
        use kafka_protocol::messages::{
            OffsetForLeaderEpochRequest, offset_for_leader_epoch_request,
        };
        let epochs = OffsetForLeaderEpochRequest::default().with_topics(vec![
            offset_for_leader_epoch_request::OffsetForLeaderTopic::default()
                .with_topic(name("orders"))
                .with_partitions(vec![
                    offset_for_leader_epoch_request::OffsetForLeaderPartition::default()
                        .with_current_leader_epoch(3)
                        .with_leader_epoch(2),
                ]),
        ]);
        for v in 2..=4 {
            cases.push((ApiKey::OffsetForLeaderEpoch, v, encoded(&epochs, v)));
        }
        use kafka_protocol::messages::{
            DescribeClusterRequest, DescribeConfigsRequest, describe_configs_request,
        };
        let configs = DescribeConfigsRequest::default().with_resources(vec![
            describe_configs_request::DescribeConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("orders"))
                .with_configuration_keys(Some(vec![StrBytes::from_static_str("retention.ms")])),
        ]);
        for v in 1..=4 {
            cases.push((ApiKey::DescribeConfigs, v, encoded(&configs, v)));
        }
        for v in 0..=1 {
            cases.push((
                ApiKey::DescribeCluster,
                v,
                encoded(&DescribeClusterRequest::default(), v),
            ));
        }
        use kafka_protocol::messages::{
            HeartbeatRequest, JoinGroupRequest, LeaveGroupRequest, SyncGroupRequest,
            join_group_request, leave_group_request, sync_group_request,
        };
        let join = |v: i16| {
            JoinGroupRequest::default()
                .with_group_id(billing())
                .with_session_timeout_ms(10_000)
                .with_rebalance_timeout_ms(30_000)
                .with_member_id(StrBytes::from_static_str("m-1"))
                .with_group_instance_id((v >= 5).then(|| StrBytes::from_static_str("i-1")))
                .with_protocol_type(StrBytes::from_static_str("consumer"))
                .with_protocols(vec![
                    join_group_request::JoinGroupRequestProtocol::default()
                        .with_name(StrBytes::from_static_str("range"))
                        .with_metadata(bytes::Bytes::from_static(b"\0\0\0\0\0\0")),
                ])
                .with_reason((v >= 8).then(|| StrBytes::from_static_str("why")))
        };
        for v in 0..=9 {
            cases.push((ApiKey::JoinGroup, v, encoded(&join(v), v)));
        }
        let sync = |v: i16| {
            SyncGroupRequest::default()
                .with_group_id(billing())
                .with_generation_id(3)
                .with_member_id(StrBytes::from_static_str("m-1"))
                .with_group_instance_id((v >= 3).then(|| StrBytes::from_static_str("i-1")))
                .with_protocol_type((v >= 5).then(|| StrBytes::from_static_str("consumer")))
                .with_protocol_name((v >= 5).then(|| StrBytes::from_static_str("range")))
                .with_assignments(vec![
                    sync_group_request::SyncGroupRequestAssignment::default()
                        .with_member_id(StrBytes::from_static_str("m-1"))
                        .with_assignment(bytes::Bytes::from_static(b"\0\0")),
                ])
        };
        for v in 0..=5 {
            cases.push((ApiKey::SyncGroup, v, encoded(&sync(v), v)));
        }
        for v in 0..=4 {
            let beat = HeartbeatRequest::default()
                .with_group_id(billing())
                .with_generation_id(3)
                .with_member_id(StrBytes::from_static_str("m-1"))
                .with_group_instance_id((v >= 3).then(|| StrBytes::from_static_str("i-1")));
            cases.push((ApiKey::Heartbeat, v, encoded(&beat, v)));
        }
        for v in 0..=5 {
            let mut leave = LeaveGroupRequest::default().with_group_id(billing());
            if v <= 2 {
                leave.member_id = StrBytes::from_static_str("m-1");
            } else {
                leave.members = vec![
                    leave_group_request::MemberIdentity::default()
                        .with_member_id(StrBytes::from_static_str("m-1"))
                        .with_group_instance_id(Some(StrBytes::from_static_str("i-1")))
                        .with_reason((v >= 5).then(|| StrBytes::from_static_str("bye"))),
                ];
            }
            cases.push((ApiKey::LeaveGroup, v, encoded(&leave, v)));
        }
        use kafka_protocol::messages::{
            AlterConfigsRequest, DeleteRecordsRequest, IncrementalAlterConfigsRequest,
            alter_configs_request, delete_records_request, incremental_alter_configs_request,
        };
        let alter = AlterConfigsRequest::default().with_resources(vec![
            alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("orders"))
                .with_configs(vec![
                    alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_value(Some(StrBytes::from_static_str("1000"))),
                ]),
        ]);
        for v in 0..=2 {
            cases.push((ApiKey::AlterConfigs, v, encoded(&alter, v)));
        }
        let incremental = IncrementalAlterConfigsRequest::default().with_resources(vec![
            incremental_alter_configs_request::AlterConfigsResource::default()
                .with_resource_type(2)
                .with_resource_name(StrBytes::from_static_str("orders"))
                .with_configs(vec![
                    incremental_alter_configs_request::AlterableConfig::default()
                        .with_name(StrBytes::from_static_str("retention.ms"))
                        .with_config_operation(1)
                        .with_value(None),
                ]),
        ]);
        for v in 0..=1 {
            cases.push((ApiKey::IncrementalAlterConfigs, v, encoded(&incremental, v)));
        }
        let delete_records = DeleteRecordsRequest::default()
            .with_timeout_ms(5000)
            .with_topics(vec![
                delete_records_request::DeleteRecordsTopic::default()
                    .with_name(name("orders"))
                    .with_partitions(vec![
                        delete_records_request::DeleteRecordsPartition::default()
                            .with_partition_index(1)
                            .with_offset(42),
                    ]),
            ]);
        for v in 0..=2 {
            cases.push((ApiKey::DeleteRecords, v, encoded(&delete_records, v)));
        }
        use kafka_protocol::messages::{
            ConsumerGroupHeartbeatRequest, consumer_group_heartbeat_request,
        };
        for v in 0..=1 {
            let beat = ConsumerGroupHeartbeatRequest::default()
                .with_group_id(billing())
                .with_member_id(StrBytes::from_static_str("m-1"))
                .with_member_epoch(3)
                .with_rebalance_timeout_ms(30_000)
                .with_subscribed_topic_names(Some(vec![name("orders")]))
                .with_topic_partitions(Some(vec![
                    consumer_group_heartbeat_request::TopicPartitions::default()
                        .with_topic_id(uuid::Uuid::from_u128(7))
                        .with_partitions(vec![0, 1]),
                ]));
            cases.push((ApiKey::ConsumerGroupHeartbeat, v, encoded(&beat, v)));
        }
        for (key, version, body) in cases {
            assert_eq!(
                check(key, version, &body),
                Ok(()),
                "{key:?} v{version}: {body:?}"
            );
            if !body.is_empty() {
                assert!(
                    check(key, version, &body[..body.len() - 1]).is_err(),
                    "{key:?} v{version} one byte short"
                );
            }
        }
    }

    #[test]
    fn a_huge_count_in_a_tiny_frame_is_refused_before_any_decoder_sees_it() {
        // Metadata v0: a topic array claiming 2^31 - 1 topics, and nothing else.
        let body = [0x7f, 0xff, 0xff, 0xff];
        assert!(matches!(
            check(ApiKey::Metadata, 0, &body),
            Err(Malformed::Count {
                count: 2_147_483_647,
                ..
            })
        ));
        // Metadata v9 (compact): about 54 million topics in four varint bytes.
        let body = [0xff, 0xff, 0xff, 0x19, 0, 0, 0, 0];
        assert!(matches!(
            check(ApiKey::Metadata, 9, &body),
            Err(Malformed::Count { .. })
        ));
        // Tagged fields claiming more than there is.
        let body = [0x01, 0x7f];
        assert!(check(ApiKey::ApiVersions, 3, &body).is_err());
        // A negative length other than null.
        let body = [0xff, 0xfe, 0, 0, 0, 0, 0, 0, 0, 0];
        assert!(matches!(
            check(ApiKey::Produce, 3, &body),
            Err(Malformed::Length { length: -2, .. })
        ));
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_never_pass_a_count_past_the_frame() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20_000 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let len = (seed % 64) as usize;
            let body: Vec<u8> = (0..len)
                .map(|i| (seed.rotate_left(i as u32 * 5) & 0xff) as u8)
                .collect();
            for (key, version) in [
                (ApiKey::Metadata, 0),
                (ApiKey::Metadata, 12),
                (ApiKey::Produce, 3),
                (ApiKey::Produce, 9),
                (ApiKey::Fetch, 4),
                (ApiKey::Fetch, 12),
                (ApiKey::ListOffsets, 7),
            ] {
                let _ = check(key, version, &body);
            }
        }
    }
}
