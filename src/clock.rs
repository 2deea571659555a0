//! The wall clock, behind a trait so time-dependent code can be tested with a fake.

use chrono::{DateTime, Utc};

/// A source of the current UTC time (rustls' `TimeProvider`).
pub trait Clock: Send + Sync + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;
}

/// The system's real-time clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}
