//! The APIs and versions this broker serves, and the ApiVersions answer that tells clients.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiKey, ApiVersionsResponse, ResponseKind};

use super::errors::UNSUPPORTED_VERSION;

/// Each API served, with the versions advertised. Produce is advertised from v0 (librdkafka
/// before 2.11.1 turns compression off when v0 is missing) but served from v3: older versions
/// carry the old message format, which no client of this century sends.
const SERVED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 0, 11),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 7),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 9),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::ConsumerGroupHeartbeat, 0, 1),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::ApiVersions, 0, 4),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::DeleteGroups, 0, 2),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::DescribeCluster, 0, 1),
];

/// The versions of `key` this broker decodes, if it serves it.
pub fn served(key: ApiKey) -> Option<(i16, i16)> {
    SERVED
        .iter()
        .find(|(k, _, _)| *k == key)
        .map(|(_, min, max)| match key {
            ApiKey::Produce => (3, *max),
            _ => (*min, *max),
        })
}

fn listing() -> Vec<ApiVersion> {
    SERVED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

pub fn api_versions() -> ResponseKind {
    ResponseKind::ApiVersions(
        ApiVersionsResponse::default()
            .with_api_keys(listing())
            .with_finalized_features_epoch(-1),
    )
}

/// The answer to an ApiVersions request at a version this broker does not serve.
pub fn unsupported_version() -> ResponseKind {
    ResponseKind::ApiVersions(
        ApiVersionsResponse::default()
            .with_error_code(UNSUPPORTED_VERSION)
            .with_api_keys(listing()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every version advertised and served is one the codec has, and has a bounds schema.
    #[test]
    fn served_versions_are_within_the_codecs_and_walkable() {
        for (key, min, max) in SERVED {
            let codec = key.valid_versions();
            let (from, to) = served(*key).expect("served");
            assert!(
                codec.min <= from && to <= codec.max,
                "{key:?} {from}..={to}"
            );
            assert!(*min <= from && to == *max);
            assert!(
                !matches!(
                    super::super::bounds::check(*key, to, &[]),
                    Err(super::super::bounds::Malformed::Unknown)
                ),
                "{key:?} has no bounds schema"
            );
        }
    }
}
