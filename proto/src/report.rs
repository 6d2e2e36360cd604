//! How errors are told to people: the whole chain of causes, once each. Every log line and
//! every message built from an error goes through here, so that a failed fsync says why
//! (`sync segment /path: No space left on device (os error 28)`), not only what.

use std::fmt;

/// An error with all its causes, `error: cause: cause`, for `tracing` fields
/// (`error = %Chain(&e)`) and messages. A cause whose text its parent already ends with is
/// not repeated (some errors print their source themselves).
#[derive(Clone, Copy)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut last = self.0.to_string();
        f.write_str(&last)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            let text = cause.to_string();
            if !text.is_empty() && !last.ends_with(&text) {
                write!(f, ": {text}")?;
            }
            last = text;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// [`Chain`] as a `String`.
pub fn error_chain(error: &dyn std::error::Error) -> String {
    Chain(error).to_string()
}

/// A gRPC status for people: its message, and the cause of a transport failure (connection
/// refused, reset) once ("tcp connect error" over "transport error: tcp connect error:
/// Connection refused" is the latter alone).
pub fn status_text(status: &tonic::Status) -> String {
    let message = if status.message().is_empty() {
        format!("{:?}", status.code())
    } else {
        status.message().to_string()
    };
    match std::error::Error::source(status) {
        Some(source) => {
            let cause = error_chain(source);
            if cause.contains(message.as_str()) {
                cause
            } else {
                format!("{message}: {cause}")
            }
        }
        None => message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("sync segment /data/orders-0/00000000000000000000.log")]
    struct Sync(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("tcp connect error")]
    struct Connect(#[source] Inner);

    #[derive(Debug, thiserror::Error)]
    #[error("tcp connect error")]
    struct Inner(#[source] std::io::Error);

    #[test]
    fn the_cause_is_kept_and_repeats_are_not() {
        let error = Sync(std::io::Error::from_raw_os_error(28));
        assert_eq!(
            error_chain(&error),
            "sync segment /data/orders-0/00000000000000000000.log: No space left on device (os error 28)"
        );
        let error = Connect(Inner(std::io::Error::from(
            std::io::ErrorKind::ConnectionRefused,
        )));
        assert_eq!(error_chain(&error), "tcp connect error: connection refused");
    }
}
