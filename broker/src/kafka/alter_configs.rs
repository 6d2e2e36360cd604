//! AlterConfigs and IncrementalAlterConfigs on topics, through the same controller call (and
//! checks) as `weir topic alter`. AlterConfigs replaces a topic's whole set of overrides;
//! IncrementalAlterConfigs sets, deletes, appends to or subtracts from single keys. A
//! validate-only request is checked by the same rules and changes nothing.

use std::collections::BTreeMap;

use kafka_protocol::messages::{
    AlterConfigsRequest, AlterConfigsResponse, IncrementalAlterConfigsRequest,
    IncrementalAlterConfigsResponse, alter_configs_response, incremental_alter_configs_response,
};
use kafka_protocol::protocol::StrBytes;
use weir_controller::topic_config::validate_overrides;

use super::errors::{self, INVALID_CONFIG, INVALID_REQUEST, NONE};
use crate::node::Node;

/// Kafka's resource types.
const TOPIC: i8 = 2;
const BROKER: i8 = 4;

/// IncrementalAlterConfigs operations.
const SET: i8 = 0;
const DELETE: i8 = 1;
const APPEND: i8 = 2;
const SUBTRACT: i8 = 3;

/// A refusal: Kafka's code and a message.
type Refused = (i16, String);

/// The overrides a topic has after `ops` (key, operation, value) are applied to its
/// `overrides`; `effective` is its whole config, which APPEND and SUBTRACT start from when the
/// key is not overridden.
///
/// # Errors
/// A key named twice, an unknown operation, or SET, APPEND or SUBTRACT without a value.
pub fn incremental(
    overrides: &BTreeMap<String, String>,
    effective: &BTreeMap<String, String>,
    ops: &[(String, i8, Option<String>)],
) -> Result<BTreeMap<String, String>, Refused> {
    let mut desired = overrides.clone();
    let mut seen = std::collections::BTreeSet::new();
    for (key, op, value) in ops {
        if !seen.insert(key) {
            return Err((INVALID_REQUEST, format!("config {key:?} is named twice")));
        }
        let needs_value = || {
            value
                .clone()
                .ok_or_else(|| (INVALID_REQUEST, format!("config {key:?}: no value given")))
        };
        match *op {
            SET => {
                desired.insert(key.clone(), needs_value()?);
            }
            DELETE => {
                desired.remove(key);
            }
            APPEND | SUBTRACT => {
                let items = needs_value()?;
                let current = desired
                    .get(key)
                    .or_else(|| effective.get(key))
                    .cloned()
                    .unwrap_or_default();
                let mut list: Vec<String> = current
                    .split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect();
                for item in items.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                    if *op == APPEND {
                        if !list.iter().any(|i| i == item) {
                            list.push(item.to_string());
                        }
                    } else {
                        list.retain(|i| i != item);
                    }
                }
                desired.insert(key.clone(), list.join(","));
            }
            other => {
                return Err((
                    INVALID_REQUEST,
                    format!(
                        "config {key:?}: operation {other} is not one of SET (0), DELETE (1), APPEND (2), SUBTRACT (3)"
                    ),
                ));
            }
        }
    }
    Ok(desired)
}

/// Gives topic `name` the overrides `desired` (computed from its current ones by `desired`),
/// or only checks them.
async fn alter(
    node: &Node,
    resource_type: i8,
    name: &str,
    validate_only: bool,
    desired: impl FnOnce(&crate::topic::Topic) -> Result<BTreeMap<String, String>, Refused>,
) -> Result<(), Refused> {
    match resource_type {
        TOPIC => {}
        BROKER => {
            return Err((
                INVALID_REQUEST,
                "broker settings come from each broker's config file; they are not changed through Kafka's API".into(),
            ));
        }
        other => {
            return Err((
                INVALID_REQUEST,
                format!("resource type {other} is not altered here (topics: 2)"),
            ));
        }
    }
    let topic = node
        .topic(name)
        .map_err(|f| (errors::code(&f), f.message))?;
    let desired = desired(&topic)?;
    validate_overrides(&desired).map_err(|e| (INVALID_CONFIG, e.to_string()))?;
    if validate_only {
        return Ok(());
    }
    let set: BTreeMap<String, String> = desired
        .iter()
        .filter(|(k, v)| topic.overrides.get(*k) != Some(v))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let delete: Vec<String> = topic
        .overrides
        .keys()
        .filter(|k| !desired.contains_key(*k))
        .cloned()
        .collect();
    if set.is_empty() && delete.is_empty() {
        return Ok(());
    }
    node.alter_topic_config(name, set, delete)
        .await
        .map(|_| ())
        .map_err(|f| (errors::code(&f), f.message))
}

fn outcome(result: Result<(), Refused>) -> (i16, Option<StrBytes>) {
    match result {
        Ok(()) => (NONE, None),
        Err((code, message)) => (code, Some(StrBytes::from_string(message))),
    }
}

/// AlterConfigs: each topic's overrides become exactly the configs given.
pub async fn alter_configs(node: &Node, request: AlterConfigsRequest) -> AlterConfigsResponse {
    let mut response = AlterConfigsResponse::default();
    for resource in request.resources {
        let given: Vec<(String, Option<String>)> = resource
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.value.as_ref().map(ToString::to_string),
                )
            })
            .collect();
        let result = alter(
            node,
            resource.resource_type,
            resource.resource_name.as_str(),
            request.validate_only,
            |_| {
                let mut desired = BTreeMap::new();
                for (key, value) in given {
                    // A null value leaves the key to its default.
                    if let Some(value) = value
                        && desired.insert(key.clone(), value).is_some()
                    {
                        return Err((INVALID_REQUEST, format!("config {key:?} is named twice")));
                    }
                }
                Ok(desired)
            },
        )
        .await;
        let (code, message) = outcome(result);
        response.responses.push(
            alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name),
        );
    }
    response
}

/// IncrementalAlterConfigs: each key's operation on a topic's current overrides.
pub async fn incremental_alter_configs(
    node: &Node,
    request: IncrementalAlterConfigsRequest,
) -> IncrementalAlterConfigsResponse {
    let mut response = IncrementalAlterConfigsResponse::default();
    for resource in request.resources {
        let ops: Vec<(String, i8, Option<String>)> = resource
            .configs
            .iter()
            .map(|c| {
                (
                    c.name.to_string(),
                    c.config_operation,
                    c.value.as_ref().map(ToString::to_string),
                )
            })
            .collect();
        let result = alter(
            node,
            resource.resource_type,
            resource.resource_name.as_str(),
            request.validate_only,
            |topic| incremental(&topic.overrides, &topic.config.to_properties(), &ops),
        )
        .await;
        let (code, message) = outcome(result);
        response.responses.push(
            incremental_alter_configs_response::AlterConfigsResourceResponse::default()
                .with_error_code(code)
                .with_error_message(message)
                .with_resource_type(resource.resource_type)
                .with_resource_name(resource.resource_name),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn op(key: &str, op: i8, value: Option<&str>) -> (String, i8, Option<String>) {
        (key.into(), op, value.map(Into::into))
    }

    #[test]
    fn operations_change_only_their_keys() {
        let overrides = map(&[("retention.ms", "1000"), ("segment.ms", "5000")]);
        let effective = map(&[("cleanup.policy", "delete"), ("retention.ms", "1000")]);
        let desired = incremental(
            &overrides,
            &effective,
            &[
                op("retention.ms", SET, Some("2000")),
                op("segment.ms", DELETE, None),
                op("cleanup.policy", APPEND, Some("compact")),
            ],
        )
        .expect("valid");
        assert_eq!(
            desired,
            map(&[
                ("retention.ms", "2000"),
                ("cleanup.policy", "delete,compact")
            ])
        );
        let desired = incremental(
            &desired,
            &effective,
            &[op("cleanup.policy", SUBTRACT, Some("delete"))],
        )
        .expect("valid");
        assert_eq!(desired["cleanup.policy"], "compact");
    }

    #[test]
    fn bad_operations_are_refused() {
        let none = BTreeMap::new();
        for ops in [
            vec![op("retention.ms", SET, None)],
            vec![op("retention.ms", 9, Some("1"))],
            vec![
                op("retention.ms", SET, Some("1")),
                op("retention.ms", DELETE, None),
            ],
        ] {
            assert_eq!(
                incremental(&none, &none, &ops).map_err(|e| e.0),
                Err(INVALID_REQUEST)
            );
        }
    }
}
