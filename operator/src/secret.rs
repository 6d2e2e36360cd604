//! Each `Cluster`'s shared secret, kept in a Kubernetes Secret the Cluster owns: made once
//! with a random value, never changed by the operator, mounted into the brokers' pods, and
//! required by the controller endpoint of every call naming that cluster.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, PostParams};
use kube::{Client, Resource, ResourceExt};
use weir_proto::ClusterSecret;

use crate::crd::Cluster;
use crate::objects::{SECRET_KEY, broker_labels, secret_name};

/// Why a cluster's secret cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("read or create Secret {name}")]
    Kube {
        name: String,
        #[source]
        source: kube::Error,
    },
    #[error("Secret {name} has no valid {SECRET_KEY}")]
    Invalid {
        name: String,
        #[source]
        source: weir_proto::secret::SecretError,
    },
}

/// The cluster's secret: read from its Secret, which is made (owned by the Cluster, so it
/// goes with it) when missing.
///
/// # Errors
/// The API server's, or `Invalid` for a Secret whose value is not a usable secret.
pub async fn ensure(client: &Client, cluster: &Cluster) -> Result<ClusterSecret, SecretError> {
    let namespace = cluster.namespace().unwrap_or_default();
    let name = secret_name(&cluster.name_any());
    let api: Api<Secret> = Api::namespaced(client.clone(), &namespace);
    let kube_error = |source| SecretError::Kube {
        name: name.clone(),
        source,
    };
    let existing = match api.get_opt(&name).await.map_err(kube_error)? {
        Some(secret) => secret,
        None => {
            let made = ClusterSecret::generate();
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(namespace.clone()),
                    labels: Some(broker_labels(&cluster.name_any())),
                    owner_references: Some(vec![OwnerReference {
                        api_version: Cluster::api_version(&()).into_owned(),
                        kind: Cluster::kind(&()).into_owned(),
                        name: cluster.name_any(),
                        uid: cluster.metadata.uid.clone().unwrap_or_default(),
                        controller: Some(true),
                        block_owner_deletion: Some(true),
                    }]),
                    ..ObjectMeta::default()
                },
                string_data: Some(BTreeMap::from([(
                    SECRET_KEY.to_string(),
                    made.expose().to_string(),
                )])),
                type_: Some("Opaque".into()),
                ..Secret::default()
            };
            match api.create(&PostParams::default(), &secret).await {
                Ok(_) => {
                    tracing::info!(secret = %name, "made the cluster secret");
                    return Ok(made);
                }
                // Another replica made it first: use theirs.
                Err(kube::Error::Api(e)) if e.code == 409 => {
                    api.get(&name).await.map_err(kube_error)?
                }
                Err(e) => return Err(kube_error(e)),
            }
        }
    };
    let value = existing
        .data
        .as_ref()
        .and_then(|d| d.get(SECRET_KEY))
        .map(|v| String::from_utf8_lossy(&v.0).into_owned())
        .unwrap_or_default();
    ClusterSecret::new(&value).map_err(|source| SecretError::Invalid { name, source })
}
