//! Leader election over a `coordination.k8s.io/v1` Lease, as client-go's: the holder renews
//! the Lease; a candidate takes it over once it has seen no renewal for the lease duration
//! (measured on its own clock from when it saw the Lease change, so clocks need not agree);
//! every write carries the resourceVersion it read, so two candidates cannot both win. The
//! Lease's transition count is the controller epoch.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::api::{Api, PostParams};

/// What a round of election found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This candidate holds the Lease; `epoch` is its transition count.
    Leading { epoch: i32 },
    /// Another holds it (or none could be established this round).
    Following { holder: Option<String> },
}

/// One candidate for a Lease.
#[derive(Debug)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
    /// The Lease's resourceVersion as last seen, and when it was first seen so.
    observed: Mutex<Option<(String, Instant)>>,
}

fn now() -> MicroTime {
    MicroTime(k8s_openapi::jiff::Timestamp::now())
}

impl Elector {
    pub fn new(api: Api<Lease>, name: &str, identity: &str, duration: Duration) -> Elector {
        Elector {
            api,
            name: name.to_string(),
            identity: identity.to_string(),
            duration,
            observed: Mutex::new(None),
        }
    }

    /// Gives the Lease up, if held, so that a candidate takes over at once rather than after
    /// the lease duration (at a clean shutdown).
    ///
    /// # Errors
    /// The API server's.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.name).await? else {
            return Ok(());
        };
        let spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(());
        }
        lease.spec = Some(LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            ..spec
        });
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) | Err(kube::Error::Api(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Acquires, renews or observes the Lease once. Call it every small fraction of the
    /// duration (the operator: a sixth; client-go's default retry period is a seventh).
    ///
    /// # Errors
    /// The API server's, other than a lost compare-and-set (that is `Following`).
    pub async fn round(&self) -> Result<Role, kube::Error> {
        let seconds = i32::try_from(self.duration.as_secs().max(1)).unwrap_or(i32::MAX);
        let current = match self.api.get_opt(&self.name).await? {
            Some(lease) => lease,
            None => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.name.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(LeaseSpec {
                        holder_identity: Some(self.identity.clone()),
                        lease_duration_seconds: Some(seconds),
                        acquire_time: Some(now()),
                        renew_time: Some(now()),
                        lease_transitions: Some(0),
                        ..LeaseSpec::default()
                    }),
                };
                return match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(Role::Leading { epoch: 0 }),
                    Err(kube::Error::Api(e)) if e.code == 409 => {
                        Ok(Role::Following { holder: None })
                    }
                    Err(e) => Err(e),
                };
            }
        };
        let version = current
            .metadata
            .resource_version
            .clone()
            .unwrap_or_default();
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let mine = holder.as_deref() == Some(self.identity.as_str());
        let expired = {
            let mut observed = self.observed.lock().unwrap_or_else(|p| p.into_inner());
            match &*observed {
                Some((seen, since)) if *seen == version => since.elapsed() > self.duration,
                _ => {
                    *observed = Some((version.clone(), Instant::now()));
                    false
                }
            }
        };
        if !mine && !expired && holder.is_some() {
            return Ok(Role::Following { holder });
        }
        let epoch = if mine { transitions } else { transitions + 1 };
        let mut next = current;
        next.spec = Some(LeaseSpec {
            holder_identity: Some(self.identity.clone()),
            lease_duration_seconds: Some(seconds),
            acquire_time: if mine { spec.acquire_time } else { Some(now()) },
            renew_time: Some(now()),
            lease_transitions: Some(epoch),
            ..spec
        });
        // The resourceVersion read stays in the object: a write after anyone else's fails.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &next)
            .await
        {
            Ok(written) => {
                let version = written.metadata.resource_version.unwrap_or_default();
                *self.observed.lock().unwrap_or_else(|p| p.into_inner()) =
                    Some((version, Instant::now()));
                Ok(Role::Leading { epoch })
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(Role::Following { holder }),
            Err(e) => Err(e),
        }
    }
}
