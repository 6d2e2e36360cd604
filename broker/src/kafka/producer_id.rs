//! InitProducerId: a producer id (and epoch 0) for an idempotent producer, from the broker
//! core's blocks of ids the controller hands out, never given twice. A producer asking again
//! with its old id and epoch (KIP-360, v3 on) gets a new id: its sequences start over, as
//! they would after an epoch bump. Transactional producers are refused.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use super::errors::{self, TRANSACTIONAL_ID_AUTHORIZATION_FAILED};
use crate::node::Node;

pub async fn init_producer_id(
    node: &Node,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let mut response = InitProducerIdResponse::default();
    if request.transactional_id.is_some() {
        response.error_code = TRANSACTIONAL_ID_AUTHORIZATION_FAILED;
        return response;
    }
    match node.init_producer_id().await {
        Ok((id, epoch)) => {
            response.producer_id = ProducerId(id);
            response.producer_epoch = epoch;
        }
        // The controller away is COORDINATOR_NOT_AVAILABLE: Kafka's clients retry it.
        Err(f) => response.error_code = errors::coordinator_code(&f),
    }
    response
}
