//! DeleteRecords: each partition's records below an offset go, on its leader (the client sends
//! each partition to its leader), through the same broker core call as every door.

use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::{DeleteRecordsRequest, DeleteRecordsResponse};

use super::errors::{self, NONE};
use crate::node::Node;

pub fn delete_records(node: &Node, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
    let mut response = DeleteRecordsResponse::default();
    for topic in request.topics {
        let name = topic.name.0.to_string();
        let partitions = topic
            .partitions
            .iter()
            .map(|p| {
                let (low_watermark, error_code) =
                    match node.delete_records(&name, p.partition_index, p.offset) {
                        Ok(start) => (start, NONE),
                        Err(f) => (-1, errors::code(&f)),
                    };
                DeleteRecordsPartitionResult::default()
                    .with_partition_index(p.partition_index)
                    .with_low_watermark(low_watermark)
                    .with_error_code(error_code)
            })
            .collect();
        response.topics.push(
            DeleteRecordsTopicResult::default()
                .with_name(topic.name)
                .with_partitions(partitions),
        );
    }
    response
}
