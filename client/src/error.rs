//! What a client call can fail with.

use weir_proto::Reason;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The broker refused the call, or it failed on the way.
    #[error("{message}")]
    Broker {
        reason: Option<Reason>,
        code: tonic::Code,
        message: String,
    },
    /// The call failed on the way (connection refused, reset, closed by a stopping broker):
    /// trying again may pass.
    #[error("{message}")]
    Transport { code: tonic::Code, message: String },
    #[error("the broker sent an invalid record batch")]
    InvalidBatch(#[from] weir_record::InvalidBatch),
    #[error("{0}")]
    InvalidArgument(String),
    #[error("the producer is closed")]
    Closed,
}

impl From<tonic::Status> for ClientError {
    fn from(status: tonic::Status) -> Self {
        let reason = Reason::of(&status);
        // A transport failure's cause (connection refused, reset) is in the status's source:
        // kept, so a person reads why, once.
        let message = weir_proto::status_text(&status);
        // A status the server sent has no source; one with a source is the transport's.
        if reason.is_none() && std::error::Error::source(&status).is_some() {
            return ClientError::Transport {
                code: status.code(),
                message,
            };
        }
        ClientError::Broker {
            reason,
            code: status.code(),
            message,
        }
    }
}

impl ClientError {
    /// A transport failure (connection refused, a name that does not resolve) naming the
    /// broker address it was reaching, as the metadata advertised it.
    pub fn reaching(self, address: &str) -> ClientError {
        match self {
            ClientError::Transport { code, message } => ClientError::Transport {
                code,
                message: format!("broker at {address} (as advertised): {message}"),
            },
            other => other,
        }
    }

    /// The same error, its message naming the partition it is about (`orders-2: ...`), for
    /// calls that span several partitions.
    pub fn in_partition(self, topic: &str, partition: i32) -> ClientError {
        match self {
            ClientError::Broker {
                reason,
                code,
                message,
            } => ClientError::Broker {
                reason,
                code,
                message: format!("{topic}-{partition}: {message}"),
            },
            ClientError::Transport { code, message } => ClientError::Transport {
                code,
                message: format!("{topic}-{partition}: {message}"),
            },
            other => other,
        }
    }

    /// The broker's reason, when it gave one.
    pub fn reason(&self) -> Option<Reason> {
        match self {
            ClientError::Broker { reason, .. } => *reason,
            _ => None,
        }
    }

    /// Whether trying again may succeed: the broker was unreachable or busy, not a refusal.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Broker {
                reason: Some(reason),
                ..
            } => {
                matches!(
                    reason,
                    Reason::NotEnoughReplicas
                        | Reason::NotEnoughReplicasAfterAppend
                        | Reason::ShuttingDown
                        | Reason::NotLeader
                        | Reason::LeaderNotAvailable
                        | Reason::UnknownLeaderEpoch
                        | Reason::FencedLeaderEpoch
                        | Reason::NotCoordinator
                        | Reason::BrokerStarting
                )
            }
            ClientError::Transport { .. } => true,
            ClientError::Broker {
                reason: None, code, ..
            } => {
                matches!(
                    code,
                    tonic::Code::Unavailable
                        | tonic::Code::DeadlineExceeded
                        | tonic::Code::Unknown
                        | tonic::Code::Cancelled
                )
            }
            _ => false,
        }
    }
}
