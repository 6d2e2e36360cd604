//! Topic administration from Kafka's admin clients: CreateTopics, DeleteTopics and
//! CreatePartitions change the same topics as the CLI and gRPC, through the broker core and
//! the controller's checks. Replica assignments are the controller's to decide: a request that
//! names them is refused.

use std::collections::BTreeMap;

use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse,
};
use kafka_protocol::protocol::StrBytes;

use super::errors;
use crate::failure::Failure;
use crate::node::Node;
use crate::topic::{TopicConfig, validate_name};

/// A refusal in Kafka's terms: its error code and a message for a person.
type Refused = (i16, String);

fn from_core(f: Failure) -> Refused {
    (errors::code(&f), f.message)
}

/// Checks what can be checked without creating: the name, the counts, every override.
fn dry_run(
    name: &str,
    partitions: i32,
    replication_factor: i16,
    overrides: &BTreeMap<String, String>,
) -> Result<(), Refused> {
    validate_name(name).map_err(|m| (errors::INVALID_TOPIC_EXCEPTION, m))?;
    if !(partitions == -1 || (1..=10_000).contains(&partitions)) {
        return Err((
            errors::INVALID_PARTITIONS,
            format!("a topic has 1 to 10000 partitions (or -1 for the default), not {partitions}"),
        ));
    }
    if !(replication_factor == -1 || replication_factor >= 1) {
        return Err((
            errors::INVALID_REPLICATION_FACTOR,
            format!(
                "a replication factor is 1 or more (or -1 for the default), not {replication_factor}"
            ),
        ));
    }
    weir_controller::topic_config::validate_overrides(overrides)
        .map_err(|e| (errors::INVALID_CONFIG, e.to_string()))
}

pub async fn create_topics(node: &Node, request: CreateTopicsRequest) -> CreateTopicsResponse {
    let mut response = CreateTopicsResponse::default();
    for asked in request.topics {
        let name = asked.name.0.to_string();
        let mut result = CreatableTopicResult::default().with_name(asked.name.clone());
        let mut overrides = BTreeMap::new();
        let mut null_value = None;
        for config in &asked.configs {
            match &config.value {
                Some(value) => {
                    overrides.insert(config.name.to_string(), value.to_string());
                }
                None => null_value = Some(config.name.to_string()),
            }
        }
        let outcome: Result<Option<_>, Refused> = if !asked.assignments.is_empty() {
            Err((
                errors::INVALID_REQUEST,
                "replica assignments are decided by the controller; give a partition count and a replication factor".into(),
            ))
        } else if let Some(key) = null_value {
            Err((errors::INVALID_CONFIG, format!("config {key} has no value")))
        } else if let Err(refused) = dry_run(
            &name,
            asked.num_partitions,
            asked.replication_factor,
            &overrides,
        ) {
            Err(refused)
        } else if request.validate_only {
            Ok(None)
        } else {
            // -1: the broker's default, as the core takes 0.
            node.create_topic(
                &name,
                asked.num_partitions.max(0),
                i32::from(asked.replication_factor).max(0),
                overrides,
            )
            .await
            .map(Some)
            .map_err(from_core)
        };
        match outcome {
            Ok(Some(topic)) => {
                result.topic_id = uuid::Uuid::parse_str(&topic.id).unwrap_or_default();
                result.num_partitions = topic.partition_count() as i32;
                result.replication_factor =
                    topic.layout.first().map_or(0, |p| p.replicas.len() as i16);
                result.configs = Some(configs(&topic.config));
            }
            Ok(None) => {
                result.num_partitions = asked.num_partitions;
                result.replication_factor = asked.replication_factor;
            }
            Err((code, message)) => {
                result.error_code = code;
                result.error_message = Some(StrBytes::from_string(message));
            }
        }
        response.topics.push(result);
    }
    response
}

fn configs(config: &TopicConfig) -> Vec<CreatableTopicConfigs> {
    config
        .to_properties()
        .into_iter()
        .map(|(key, value)| {
            CreatableTopicConfigs::default()
                .with_name(StrBytes::from_string(key))
                .with_value(Some(StrBytes::from_string(value)))
                // DEFAULT_CONFIG (5); a topic's own overrides are not told apart here.
                .with_config_source(5)
        })
        .collect()
}

pub async fn delete_topics(node: &Node, request: DeleteTopicsRequest) -> DeleteTopicsResponse {
    let mut response = DeleteTopicsResponse::default();
    for name in request.topic_names {
        let mut result = DeletableTopicResult::default().with_name(Some(name.clone()));
        if let Err(f) = node.delete_topic(&name.0).await {
            result.error_code = errors::code(&f);
            result.error_message = Some(StrBytes::from_string(f.message));
        }
        response.responses.push(result);
    }
    response
}

pub async fn create_partitions(
    node: &Node,
    request: CreatePartitionsRequest,
) -> CreatePartitionsResponse {
    let mut response = CreatePartitionsResponse::default();
    for asked in request.topics {
        let mut result = CreatePartitionsTopicResult::default().with_name(asked.name.clone());
        let outcome: Result<(), Refused> = if asked
            .assignments
            .as_ref()
            .is_some_and(|a| !a.is_empty())
        {
            Err((
                errors::INVALID_REQUEST,
                "replica assignments are decided by the controller; give only the new count".into(),
            ))
        } else {
            match node.topic(&asked.name.0) {
                Err(f) => Err(from_core(f)),
                Ok(topic) => {
                    let have = topic.partition_count() as i32;
                    if asked.count <= have || asked.count > 10_000 {
                        Err((
                            errors::INVALID_PARTITIONS,
                            format!(
                                "topic {} has {have} partitions; the new count must be more, and at most 10000, not {}",
                                topic.name, asked.count
                            ),
                        ))
                    } else if request.validate_only {
                        Ok(())
                    } else {
                        node.add_partitions(&asked.name.0, asked.count)
                            .await
                            .map(drop)
                            .map_err(from_core)
                    }
                }
            }
        };
        if let Err((code, message)) = outcome {
            result.error_code = code;
            result.error_message = Some(StrBytes::from_string(message));
        }
        response.results.push(result);
    }
    response
}
