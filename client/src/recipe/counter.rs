//! A shared counter with versioned compare-and-set ([`SharedCounter`], like Curator's
//! `SharedCount`): the value is a decimal `i64` in one znode; every change is a `set_data`
//! conditioned on the version that was read, so concurrent updates never overwrite each other.
//!
//! [`SharedCounter::add`] loops read → CAS until it wins. It is **not** retried across a
//! `ConnectionLoss` of the write (whether the increment applied is unknown): that error is
//! returned to the caller, who knows whether a double count is acceptable.

use super::{ensure_path, retry};
use crate::{Client, CreateMode, Error, Result};

/// A counter stored in one znode.
#[derive(Debug, Clone)]
pub struct SharedCounter {
    /// The session used.
    client: Client,
    /// The counter node.
    path: String,
}

/// A value with the version it was read at (for [`SharedCounter::compare_and_set`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Versioned {
    /// The counter value.
    pub value: i64,
    /// The znode version it was read at.
    pub version: i32,
}

impl SharedCounter {
    /// Opens (creating with `initial` if absent) the counter at `path`.
    pub async fn open(client: &Client, path: &str, initial: i64) -> Result<SharedCounter> {
        if let Some((parent, _)) = path.rsplit_once('/') {
            if !parent.is_empty() {
                ensure_path(client, parent).await?;
            }
        }
        let data = initial.to_string();
        retry::RetryPolicy::default()
            .run(client, || async {
                match client
                    .create(path, data.as_bytes(), CreateMode::Persistent)
                    .await
                {
                    Ok(_) | Err(Error::NodeExists) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await?;
        Ok(SharedCounter {
            client: client.clone(),
            path: path.to_string(),
        })
    }

    /// The current value and its version.
    pub async fn get(&self) -> Result<Versioned> {
        let (data, stat) = retry::RetryPolicy::default()
            .run(&self.client, || self.client.get_data(&self.path))
            .await?;
        let value = std::str::from_utf8(&data)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| Error::Recipe(format!("counter {} is not a number", self.path)))?;
        Ok(Versioned {
            value,
            version: stat.version,
        })
    }

    /// Sets `value` if the counter is still at `expected.version`; false if someone changed it.
    pub async fn compare_and_set(&self, expected: Versioned, value: i64) -> Result<bool> {
        let data = value.to_string();
        match self
            .client
            .set_data(&self.path, data.as_bytes(), Some(expected.version))
            .await
        {
            Ok(_) => Ok(true),
            Err(Error::BadVersion) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Adds `delta` atomically; returns the new value.
    pub async fn add(&self, delta: i64) -> Result<i64> {
        loop {
            let cur = self.get().await?;
            let next = cur
                .value
                .checked_add(delta)
                .ok_or_else(|| Error::Recipe(format!("counter {} overflows", self.path)))?;
            if self.compare_and_set(cur, next).await? {
                return Ok(next);
            }
        }
    }
}
