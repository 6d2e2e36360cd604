//! Produce: a client's record batches pass through untouched to the partition's leader
//! replica here, with the same validation, fencing and acks as a gRPC produce (the broker
//! core's `append`).

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use weir_proto::v1;

use super::errors::{self, INVALID_REQUIRED_ACKS, TRANSACTIONAL_ID_AUTHORIZATION_FAILED};
use crate::node::Node;
use crate::topic::is_internal;

pub async fn produce(node: &Node, request: ProduceRequest) -> ProduceResponse {
    let acks = match request.acks {
        0 => Some(v1::Acks::None),
        1 => Some(v1::Acks::Leader),
        -1 => Some(v1::Acks::All),
        _ => None,
    };
    let mut response = ProduceResponse::default();
    for topic_data in request.topic_data {
        let name = topic_data.name.0.to_string();
        let topic = node.topic(&name);
        let mut answers = Vec::with_capacity(topic_data.partition_data.len());
        for data in topic_data.partition_data {
            let mut answer = PartitionProduceResponse::default().with_index(data.index);
            let result = match (&topic, acks) {
                _ if request.transactional_id.is_some() => {
                    Err(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
                }
                (_, None) => Err(INVALID_REQUIRED_ACKS),
                (Err(failure), _) => Err(errors::code(failure)),
                // Clients never write Weir's own topics.
                (Ok(_), _) if is_internal(&name) => Err(errors::INVALID_TOPIC_EXCEPTION),
                (Ok(topic), Some(acks)) => {
                    let records = data.records.unwrap_or_default();
                    node.append(topic, data.index, records, acks, None)
                        .await
                        .map_err(|f| {
                            answer.error_message = Some(
                                kafka_protocol::protocol::StrBytes::from_string(f.message.clone()),
                            );
                            errors::code(&f)
                        })
                }
            };
            match result {
                Ok((first, _)) => {
                    answer.base_offset = first;
                    if let Ok(topic) = &topic
                        && let Some(replica) = topic.replicas.get(&data.index)
                    {
                        answer.log_start_offset = replica.state().log_start_offset;
                    }
                }
                Err(code) => {
                    answer.error_code = code;
                    answer.base_offset = -1;
                }
            }
            answers.push(answer);
        }
        response.responses.push(
            TopicProduceResponse::default()
                .with_name(topic_data.name)
                .with_partition_responses(answers),
        );
    }
    response
}
