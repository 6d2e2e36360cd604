//! What the broker reports when a request fails: a reason a client can act on and a message
//! for a person. Every front door (gRPC today, the Kafka listener next) turns a [`Failure`]
//! into its own wire form.

use weir_proto::Reason;
use weir_storage::LogError;
use weir_storage::batch::InvalidBatch;

pub use weir_proto::error_chain;

/// A failure to report to a client: a reason and a message for a person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub reason: Reason,
    pub message: String,
}

impl Failure {
    pub fn new(reason: Reason, message: impl Into<String>) -> Self {
        Failure {
            reason,
            message: message.into(),
        }
    }

    pub fn status(&self) -> tonic::Status {
        self.reason.status(self.message.clone())
    }
}

impl From<LogError> for Failure {
    fn from(error: LogError) -> Self {
        let message = error_chain(&error);
        let reason = match &error {
            LogError::InvalidBatch {
                source: InvalidBatch::TooLarge { .. },
                ..
            } => Reason::RecordTooLarge,
            LogError::InvalidBatch { .. } | LogError::NonContiguousAppend { .. } => {
                Reason::InvalidRecord
            }
            LogError::OffsetOutOfRange { .. } => Reason::OffsetOutOfRange,
            LogError::Corrupt { .. } => Reason::CorruptRecord,
            _ => Reason::StorageError,
        };
        if reason == Reason::StorageError || reason == Reason::CorruptRecord {
            tracing::error!(error = %message, "storage failure");
        }
        Failure { reason, message }
    }
}

/// A controller's refusal as this broker reports it.
pub fn from_controller(status: &tonic::Status) -> Failure {
    match Reason::of(status) {
        Some(reason) => Failure::new(reason, status.message()),
        None if matches!(
            status.code(),
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded
        ) =>
        {
            Failure::new(
                Reason::NotController,
                format!(
                    "the controller cannot be reached: {}",
                    weir_proto::status_text(status)
                ),
            )
        }
        None => Failure::new(
            Reason::NotController,
            format!("the controller failed the request: {}", status.message()),
        ),
    }
}
