//! Connection-state handling shared by the recipes: waiting for the session to be usable, noticing
//! that it is suspended, and a bounded retry policy for idempotent operations.
//!
//! Only operations that are safe to repeat may be retried: reads, conditional writes whose
//! outcome can be re-checked (a versioned `set_data`, a create that fails with `NodeExists` if it
//! already happened, a protected create), and deletes of one's own nodes. A plain `create` of a
//! sequential node or an unconditional counter increment is **not** idempotent; the recipes never
//! retry those blindly.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use crate::{Client, Error, Result, SessionState};

/// Whether `e` means "the outcome is unknown, the session may be fine": worth retrying once the
/// connection is back (`ConnectionLoss`, `OperationTimeout`, `RequestTimeout`).
pub fn is_retryable(e: &Error) -> bool {
    matches!(
        e,
        Error::ConnectionLoss | Error::OperationTimeout | Error::RequestTimeout
    )
}

/// A bounded exponential backoff: at most `max_attempts` tries, sleeping `base_delay · 2ⁿ`
/// (capped at `max_delay`, with jitter) and waiting for the session to reconnect between them.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub max_attempts: u32,
    /// Sleep before the second try.
    pub base_delay: Duration,
    /// Upper bound of one sleep.
    pub max_delay: Duration,
    /// How long one retry waits for the session to be `Connected` again.
    pub reconnect_wait: Duration,
}

impl Default for RetryPolicy {
    /// 10 tries, 20 ms doubling up to 1 s, each waiting up to 15 s for a reconnect: enough to ride
    /// out a leader election and a client failover, and bounded.
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 10,
            base_delay: Duration::from_millis(20),
            max_delay: Duration::from_secs(1),
            reconnect_wait: Duration::from_secs(15),
        }
    }
}

impl RetryPolicy {
    /// Runs `op` until it succeeds, fails with a non-retryable error, or the attempts are used
    /// up (then the last error is returned). `op` must be idempotent.
    pub async fn run<T, F, Fut>(&self, client: &Client, mut op: F) -> Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T>>,
    {
        let mut attempt = 0;
        loop {
            match op().await {
                Err(e) if is_retryable(&e) => {
                    attempt += 1;
                    self.backoff(client, attempt, e).await?;
                }
                other => return other,
            }
        }
    }

    /// After the `attempt`-th failure with `err`: returns `err` if no attempts are left or the
    /// session ended, else sleeps and waits for the session to be connected again.
    pub async fn backoff(&self, client: &Client, attempt: u32, err: Error) -> Result<()> {
        if attempt >= self.max_attempts {
            return Err(err);
        }
        let exp = self
            .base_delay
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max_delay);
        let jitter = rand::random::<f64>() * 0.5 + 0.75;
        tokio::time::sleep(exp.mul_f64(jitter)).await;
        match wait_connected(client, self.reconnect_wait).await {
            Ok(()) => Ok(()),
            Err(Error::WaitTimeout(_)) => Err(err),
            Err(e) => Err(e),
        }
    }
}

/// Waits until the session is `Connected`: `Ok` at once if it is; `SessionExpired` / `Closed` /
/// `AuthFailed` if it ended; `WaitTimeout` after `timeout`.
pub async fn wait_connected(client: &Client, timeout: Duration) -> Result<()> {
    let mut states = client.state_changes();
    let deadline = Instant::now() + timeout;
    loop {
        match client.state() {
            SessionState::Connected => return Ok(()),
            s if s.is_terminal() => return Err(terminal_error(s)),
            _ => {}
        }
        match tokio::time::timeout_at(deadline, states.next()).await {
            Err(_) => return Err(Error::WaitTimeout("the session to reconnect".into())),
            Ok(None) => return Err(terminal_error(client.state())),
            Ok(Some(_)) => {}
        }
    }
}

/// Resolves as soon as the session is no longer `Connected` (suspended or ended), returning that
/// state. Recipes race their critical sections against it.
pub async fn suspended(client: &Client) -> SessionState {
    let mut states = client.state_changes();
    loop {
        match client.state() {
            SessionState::Connected => {}
            s => return s,
        }
        match states.next().await {
            None => return client.state(),
            Some(SessionState::Connected) => {}
            Some(s) => return s,
        }
    }
}

/// The error a recipe reports when the session has ended in state `s`.
pub fn terminal_error(s: SessionState) -> Error {
    match s {
        SessionState::Expired => Error::SessionExpired,
        SessionState::AuthFailed => Error::AuthFailed,
        _ => Error::Closed,
    }
}
