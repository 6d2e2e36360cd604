//! How a client rides out what Kubernetes does to brokers (restarts, leader moves, rolls):
//! one policy for every call that may pass when tried again. Exponential backoff with jitter
//! between tries (as Kafka's `retry.backoff.ms` and `retry.backoff.max.ms`), up to a deadline
//! the caller sets (Kafka's `delivery.timeout.ms` for records, `default.api.timeout.ms` for
//! the rest). Only an error that trying again cannot fix, or the deadline, reaches the caller.

use std::time::{Duration, Instant};

use backon::BackoffBuilder;

use crate::ClientError;

/// When and for how long retriable failures are tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The first pause (then doubled each try, with jitter).
    pub min_backoff: Duration,
    /// The longest pause.
    pub max_backoff: Duration,
    /// How long after the first try the last may start.
    pub deadline: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
            deadline: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The same pauses with another deadline.
    pub fn with_deadline(self, deadline: Duration) -> RetryPolicy {
        RetryPolicy { deadline, ..self }
    }

    /// Tries of one operation, from now.
    pub fn start(&self) -> Retry {
        self.start_at(Instant::now())
    }

    /// Tries of one operation that began at `started` (a batch's deadline runs from when it
    /// was made, not from its first send).
    pub fn start_at(&self, started: Instant) -> Retry {
        let pauses = backon::ExponentialBuilder::default()
            .with_min_delay(self.min_backoff)
            .with_max_delay(self.max_backoff)
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build();
        Retry {
            deadline: started + self.deadline,
            pauses,
            announced: None,
        }
    }
}

/// The tries of one operation.
#[derive(Debug)]
pub struct Retry {
    deadline: Instant,
    pauses: backon::ExponentialBackoff,
    /// The last error told to the log, so a long outage is one line, not one per try.
    announced: Option<String>,
}

impl Retry {
    /// After a failed try: the pause before the next, or `None` when `error` is final or the
    /// deadline would pass.
    pub fn next_pause(&mut self, error: &ClientError) -> Option<Duration> {
        if !error.is_retryable() {
            return None;
        }
        let pause = self.pauses.next().unwrap_or(Duration::from_secs(1));
        let now = Instant::now();
        if now + pause >= self.deadline {
            return None;
        }
        Some(pause)
    }

    /// How long is left before the deadline.
    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// After a failed try of `what`: pauses and returns true when another try is due,
    /// returns false when `error` is final or the deadline has come. Says (once per kind of
    /// error) what it is waiting for.
    pub async fn pause(&mut self, what: &str, error: &ClientError) -> bool {
        let Some(pause) = self.next_pause(error) else {
            return false;
        };
        let text = error.to_string();
        if self.announced.as_deref() != Some(text.as_str()) && first_to_say(&what_and(what, &text))
        {
            tracing::warn!(
                target: "weir_client::retry",
                "{what}: {text}; trying again for up to {}s",
                self.left().as_secs().max(1)
            );
            self.announced = Some(text);
        }
        tokio::time::sleep(pause).await;
        true
    }
}

/// A consumer's rounds of fetches while some fail in ways that may pass (a leader restarting
/// or moving): it waits as long as it takes (the caller decides when to stop polling),
/// backing off between empty rounds and saying what it waits for.
#[derive(Debug, Default)]
pub(crate) struct Rounds {
    waiting: Option<Retry>,
}

impl Rounds {
    /// After a round: `passing` is one of its retriable failures, `empty` whether nothing
    /// came. Pauses before the next round only when it brought nothing.
    pub(crate) async fn after(
        &mut self,
        policy: RetryPolicy,
        what: &str,
        passing: Option<ClientError>,
        empty: bool,
    ) {
        match passing {
            Some(error) if empty => {
                let forever = policy.with_deadline(Duration::from_secs(u64::from(u32::MAX)));
                self.waiting
                    .get_or_insert_with(|| forever.start())
                    .pause(what, &error)
                    .await;
            }
            Some(_) => {}
            None => self.waiting = None,
        }
    }
}

fn what_and(what: &str, text: &str) -> String {
    format!("{what}: {text}")
}

/// Whether this process has not said `line` in the last few seconds: concurrent calls waiting
/// for the same thing (every partition's sender during one outage) say it once.
fn first_to_say(line: &str) -> bool {
    static SAID: std::sync::Mutex<Vec<(String, Instant)>> = std::sync::Mutex::new(Vec::new());
    let now = Instant::now();
    let mut said = SAID.lock().unwrap_or_else(|p| p.into_inner());
    said.retain(|(_, at)| now.duration_since(*at) < Duration::from_secs(5));
    if said.iter().any(|(l, _)| l == line) {
        return false;
    }
    said.push((line.to_string(), now));
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unavailable() -> ClientError {
        ClientError::Broker {
            reason: None,
            code: tonic::Code::Unavailable,
            message: "tcp connect error: Connection refused".into(),
        }
    }

    #[test]
    fn pauses_grow_with_jitter_up_to_the_cap_and_stop_at_the_deadline() {
        let policy = RetryPolicy {
            min_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(80),
            deadline: Duration::from_secs(3600),
        };
        let mut retry = policy.start();
        let pauses: Vec<Duration> = (0..8)
            .map(|_| retry.next_pause(&unavailable()).expect("retriable"))
            .collect();
        assert!(pauses[0] >= Duration::from_millis(10), "{pauses:?}");
        assert!(
            pauses.iter().all(|p| *p <= Duration::from_millis(160)),
            "capped (plus jitter): {pauses:?}"
        );
        assert!(pauses[7] >= Duration::from_millis(80), "{pauses:?}");

        let refused = ClientError::Broker {
            reason: Some(weir_proto::Reason::InvalidTopic),
            code: tonic::Code::InvalidArgument,
            message: "bad name".into(),
        };
        assert_eq!(
            retry.next_pause(&refused),
            None,
            "final errors are not retried"
        );
        let mut late = policy
            .with_deadline(Duration::from_millis(5))
            .start_at(Instant::now());
        assert_eq!(late.next_pause(&unavailable()), None, "past the deadline");
    }
}
