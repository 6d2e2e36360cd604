//! DescribeConfigs: a topic's effective config, each key with where it comes from (set on the
//! topic, or the default), as Kafka's admin tools show it; a broker's settings under Kafka's
//! names (read-only: they come from its config file).

use kafka_protocol::messages::describe_configs_response::{
    DescribeConfigsResourceResult, DescribeConfigsResult,
};
use kafka_protocol::messages::{DescribeConfigsRequest, DescribeConfigsResponse};
use kafka_protocol::protocol::StrBytes;

use super::errors::{self, INVALID_REQUEST};
use crate::node::Node;

/// Kafka's resource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;
/// Kafka's config sources.
const DYNAMIC_TOPIC_CONFIG: i8 = 1;
const STATIC_BROKER_CONFIG: i8 = 4;
const DEFAULT_CONFIG: i8 = 5;

/// A broker's settings under Kafka's names, and its topic defaults under Kafka's broker-level
/// synonyms where they have one (`log.` before the topic key).
fn broker_settings(node: &Node) -> Vec<(String, String)> {
    let c = &node.config;
    let ms = |d: std::time::Duration| d.as_millis().to_string();
    let mut settings = vec![
        ("broker.id".to_string(), c.broker_id.to_string()),
        (
            "socket.request.max.bytes".to_string(),
            c.socket_request_max_bytes.to_string(),
        ),
        (
            "queued.max.request.bytes".to_string(),
            c.queued_max_request_bytes.to_string(),
        ),
        (
            "group.min.session.timeout.ms".to_string(),
            ms(c.group_min_session_timeout),
        ),
        (
            "group.max.session.timeout.ms".to_string(),
            ms(c.group_max_session_timeout),
        ),
        (
            "group.initial.rebalance.delay.ms".to_string(),
            ms(c.group_initial_rebalance_delay),
        ),
        (
            "log.retention.check.interval.ms".to_string(),
            ms(c.retention_check_interval),
        ),
        (
            "replica.fetch.wait.max.ms".to_string(),
            ms(c.replica_fetch_wait),
        ),
    ];
    settings.extend(
        node.topic_defaults()
            .to_properties()
            .into_iter()
            .map(|(key, value)| (format!("log.{key}"), value)),
    );
    settings
}

pub fn describe_configs(node: &Node, request: DescribeConfigsRequest) -> DescribeConfigsResponse {
    let mut response = DescribeConfigsResponse::default();
    for resource in request.resources {
        let mut result = DescribeConfigsResult::default()
            .with_resource_type(resource.resource_type)
            .with_resource_name(resource.resource_name.clone());
        let wanted = |key: &str| {
            resource
                .configuration_keys
                .as_ref()
                .is_none_or(|keys| keys.iter().any(|k| k.as_str() == key))
        };
        match resource.resource_type {
            TOPIC => match node.topic(resource.resource_name.as_str()) {
                Ok(topic) => {
                    result.configs = topic
                        .config
                        .to_properties()
                        .into_iter()
                        .filter(|(key, _)| wanted(key))
                        .map(|(key, value)| {
                            let source = if topic.overrides.contains_key(&key) {
                                DYNAMIC_TOPIC_CONFIG
                            } else {
                                DEFAULT_CONFIG
                            };
                            DescribeConfigsResourceResult::default()
                                .with_name(StrBytes::from_string(key))
                                .with_value(Some(StrBytes::from_string(value)))
                                .with_config_source(source)
                        })
                        .collect();
                }
                Err(f) => {
                    result.error_code = errors::code(&f);
                    result.error_message = Some(StrBytes::from_string(f.message));
                }
            },
            BROKER
                if resource.resource_name.is_empty()
                    || resource.resource_name.as_str() == node.config.broker_id.to_string() =>
            {
                result.configs = broker_settings(node)
                    .into_iter()
                    .filter(|(key, _)| wanted(key))
                    .map(|(key, value)| {
                        DescribeConfigsResourceResult::default()
                            .with_name(StrBytes::from_string(key))
                            .with_value(Some(StrBytes::from_string(value)))
                            .with_read_only(true)
                            .with_config_source(STATIC_BROKER_CONFIG)
                    })
                    .collect();
            }
            BROKER => {
                result.error_code = INVALID_REQUEST;
                result.error_message = Some(StrBytes::from_string(format!(
                    "this is broker {}; ask broker {} for its own settings",
                    node.config.broker_id, resource.resource_name
                )));
            }
            other => {
                result.error_code = INVALID_REQUEST;
                result.error_message = Some(StrBytes::from_string(format!(
                    "resource type {other} is not described here (topics: 2, brokers: 4)"
                )));
            }
        }
        response.results.push(result);
    }
    response
}
