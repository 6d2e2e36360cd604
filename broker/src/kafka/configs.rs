//! DescribeConfigs: a topic's effective config, each key with where it comes from (set on the
//! topic, or the default), as Kafka's admin tools show it. A broker resource answers with no
//! keys (its settings are not described through Kafka's API yet).

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
const DEFAULT_CONFIG: i8 = 5;

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
            BROKER => {}
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
