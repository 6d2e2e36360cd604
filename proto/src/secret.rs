//! The cluster secret: what binds brokers and their controller to one another until TLS
//! and authentication arrive. Every call to a controller and every replica fetch between
//! brokers carries it in [`SECRET_HEADER`]; a call without it, or with another, is refused
//! with `UNAUTHENTICATED` before it reaches the service. Clients never hold it, so a client
//! cannot register a broker, take a broker's address, create or delete topics behind the
//! brokers' checks, or pose as a follower.
//!
//! What it is not: encryption. On an untrusted network the secret, like every byte, can be
//! read off the wire; it guards against clients of the cluster, not against someone who can
//! watch its traffic.

use std::path::Path;
use std::sync::Arc;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;

use crate::Reason;

/// The request header holding the cluster secret.
pub const SECRET_HEADER: &str = "x-weir-cluster-secret";

/// A cluster's shared secret: printable ASCII, at least [`ClusterSecret::MIN_LEN`] long.
#[derive(Clone)]
pub struct ClusterSecret {
    value: Arc<str>,
    header: MetadataValue<Ascii>,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

/// Why a secret cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error("read the cluster secret from {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the cluster secret must be at least {min} printable ASCII characters without spaces (found {len} characters{printable})",
        min = ClusterSecret::MIN_LEN,
        printable = if *.printable { "" } else { ", some not printable" }
    )]
    Invalid { len: usize, printable: bool },
}

impl ClusterSecret {
    /// The shortest secret accepted.
    pub const MIN_LEN: usize = 16;

    /// A new random secret (64 hex digits, 244 random bits).
    pub fn generate() -> ClusterSecret {
        let value = format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        );
        ClusterSecret::new(&value).expect("hex digits are a valid secret")
    }

    /// A secret from its text (surrounding whitespace, such as a file's final newline, is
    /// not part of it).
    ///
    /// # Errors
    /// `Invalid` for one too short, or holding spaces or characters that are not printable
    /// ASCII.
    pub fn new(text: &str) -> Result<ClusterSecret, SecretError> {
        let value = text.trim();
        let printable = value.bytes().all(|b| b.is_ascii_graphic());
        if value.len() < Self::MIN_LEN || !printable {
            return Err(SecretError::Invalid {
                len: value.len(),
                printable,
            });
        }
        let header = MetadataValue::try_from(value).map_err(|_| SecretError::Invalid {
            len: value.len(),
            printable: false,
        })?;
        Ok(ClusterSecret {
            value: Arc::from(value),
            header,
        })
    }

    /// Reads a secret from a file (as a Kubernetes Secret is mounted).
    ///
    /// # Errors
    /// `Read`, or `Invalid`.
    pub fn read(path: &Path) -> Result<ClusterSecret, SecretError> {
        let text = std::fs::read_to_string(path).map_err(|source| SecretError::Read {
            path: path.display().to_string(),
            source,
        })?;
        ClusterSecret::new(&text)
    }

    /// The secret's text, to write where brokers read it.
    pub fn expose(&self) -> &str {
        &self.value
    }

    /// Whether `presented` is this secret, compared in time independent of where they differ.
    pub fn matches(&self, presented: &[u8]) -> bool {
        let expected = self.value.as_bytes();
        let mut difference = expected.len() ^ presented.len();
        for (i, byte) in expected.iter().enumerate() {
            difference |= usize::from(byte ^ presented.get(i).copied().unwrap_or(0));
        }
        difference == 0
    }

    /// Checks a request's [`SECRET_HEADER`].
    ///
    /// # Errors
    /// `UNAUTHENTICATED` with reason `CLUSTER_AUTHORIZATION_FAILED` when it is missing or
    /// wrong.
    pub fn check<T>(&self, request: &tonic::Request<T>) -> Result<(), tonic::Status> {
        match request.metadata().get(SECRET_HEADER) {
            Some(presented) if self.matches(presented.as_bytes()) => Ok(()),
            Some(_) => Err(Reason::ClusterAuthorizationFailed.status(
                "the cluster secret does not match: this call is for the cluster's brokers and controller only",
            )),
            None => Err(Reason::ClusterAuthorizationFailed.status(
                "this call is for the cluster's brokers and controller only, and needs the cluster secret",
            )),
        }
    }

    /// Adds the secret to a request.
    pub fn attach<T>(&self, request: &mut tonic::Request<T>) {
        request
            .metadata_mut()
            .insert(SECRET_HEADER, self.header.clone());
    }

    /// A server-side interceptor that refuses requests without this secret.
    pub fn guard(&self) -> Guard {
        Guard(self.clone())
    }

    /// A client-side interceptor that adds this secret to every request.
    pub fn presenter(&self) -> Presenter {
        Presenter(self.clone())
    }
}

/// Refuses requests without the cluster secret ([`ClusterSecret::guard`]).
#[derive(Debug, Clone)]
pub struct Guard(ClusterSecret);

impl Interceptor for Guard {
    fn call(&mut self, request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        self.0.check(&request)?;
        Ok(request)
    }
}

/// Adds the cluster secret to every request ([`ClusterSecret::presenter`]).
#[derive(Debug, Clone)]
pub struct Presenter(ClusterSecret);

impl Interceptor for Presenter {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        self.0.attach(&mut request);
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_secret_passes() {
        let secret = ClusterSecret::generate();
        assert_eq!(secret.expose().len(), 64);
        let mut request = tonic::Request::new(());
        let status = secret.check(&request).expect_err("no secret");
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
        assert_eq!(
            Reason::of(&status),
            Some(Reason::ClusterAuthorizationFailed)
        );
        ClusterSecret::generate().attach(&mut request);
        assert!(secret.check(&request).is_err(), "another secret");
        secret.attach(&mut request);
        assert!(secret.check(&request).is_ok());
        assert!(!secret.matches(&secret.expose().as_bytes()[..63]));
        assert!(
            secret.matches(secret.expose().to_string().as_bytes()),
            "equal bytes match"
        );
    }

    #[test]
    fn weak_or_unprintable_secrets_are_refused() {
        assert!(ClusterSecret::new("short").is_err());
        assert!(ClusterSecret::new("has spaces in the middle!").is_err());
        assert!(ClusterSecret::new("ünïcode-ünïcode-ünïcode").is_err());
        let from_file = ClusterSecret::new("0123456789abcdef0123\n").expect("trimmed");
        assert_eq!(from_file.expose(), "0123456789abcdef0123");
    }
}
