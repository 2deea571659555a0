//! The wall clock, and whether it agrees with the other clocks jwkd can see.
//!
//! `clock_skew` promises that replicas whose clocks differ by up to that much
//! work together. Two witnesses tell a daemon whether its own clock keeps that
//! promise ([`ClockEvidence`]):
//!
//! - the stored document: the newest time a writer stamped into it
//!   ([`crate::timeline::document_time`]). A clock behind it by more than
//!   `clock_skew` has stepped back or is slow;
//! - the store's own clock, where the backend has one ([`StoreOffset`]): the
//!   `Date` of a Secrets Manager answer, the modification time the file system
//!   gives a file jwkd has just written. This one also catches a clock that
//!   runs ahead.
//!
//! [`check`] turns the evidence into a verdict. Beyond the tolerance the daemon
//! writes nothing and says why ([`Skew`]); within it, decisions are made at
//! [`crate::timeline::decision_time`] and keys are pruned only once they have
//! expired by every clock ([`Times::expired_by`]).

use std::fmt;

use chrono::{DateTime, Duration, Utc};

/// A source of the current UTC time (rustls' `TimeProvider`).
pub trait Clock: Send + Sync + std::fmt::Debug + 'static {
    /// The current time.
    fn now(&self) -> DateTime<Utc>;

    /// Whether this clock moves by itself, so that a timer of the runtime
    /// stands for its passing time. True for the wall clock. A [`ManualClock`]
    /// moves only when told to: whoever moves it wakes whoever waits for it
    /// (the rotator sleeps on no timer then, see `rotator::Event::Wake`).
    fn runs_by_itself(&self) -> bool {
        true
    }
}

/// The system's real-time clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// A clock that moves only when told to: the clock for tests and simulations.
///
/// It stands still between calls to [`ManualClock::set`] and
/// [`ManualClock::advance`], so what a daemon on it decides and serves is a
/// function of the times a test chose, never of how fast the machine is. It
/// has no timers ([`Clock::runs_by_itself`] is false): after moving it, tell
/// whatever waits on time, as [`crate::daemon::Daemon::wake`] tells the rotator.
#[derive(Debug)]
pub struct ManualClock {
    now: std::sync::Mutex<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock standing at `start`.
    pub fn new(start: DateTime<Utc>) -> ManualClock {
        ManualClock {
            now: std::sync::Mutex::new(start),
        }
    }

    /// Sets the time to `at`, forwards or back (a clock step).
    pub fn set(&self, at: DateTime<Utc>) {
        *self.lock() = at;
    }

    /// Moves the time forward by `by`; returns the new time.
    pub fn advance(&self, by: std::time::Duration) -> DateTime<Utc> {
        let mut now = self.lock();
        *now = Duration::from_std(by)
            .ok()
            .and_then(|by| now.checked_add_signed(by))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        *now
    }

    /// The time it stands at.
    pub fn now(&self) -> DateTime<Utc> {
        *self.lock()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DateTime<Utc>> {
        // A time is always whole: a panic elsewhere while holding the lock
        // cannot leave it half written, so a poisoned lock is still good.
        self.now
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Clock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        ManualClock::now(self)
    }

    fn runs_by_itself(&self) -> bool {
        false
    }
}

/// How this host's clock compares with the store's, from one exchange: our
/// clock minus the store's lies in `min..=max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreOffset {
    /// The smallest the offset can be.
    pub min: Duration,
    /// The largest the offset can be.
    pub max: Duration,
}

impl StoreOffset {
    /// The offset shown by one exchange: we sent at `sent` and had the answer at
    /// `received` (both by our clock), and the store stamped it with `stamped`,
    /// a reading of its clock truncated to `resolution` (one second for an HTTP
    /// `Date`). The store read its clock somewhere between `sent` and `received`.
    pub fn measure(
        sent: DateTime<Utc>,
        received: DateTime<Utc>,
        stamped: DateTime<Utc>,
        resolution: Duration,
    ) -> StoreOffset {
        let (sent, received) = (sent.min(received), sent.max(received));
        StoreOffset {
            min: sent - (stamped + resolution),
            max: received - stamped,
        }
    }

    /// The middle of the range: the best single guess.
    pub fn estimate(&self) -> Duration {
        self.min + (self.max - self.min) / 2
    }
}

/// One reading of the store's clock, taken without reading ours: what the store
/// stamped on an answer, how long the exchange took and when it ended, both on
/// the monotonic clock. [`StoreStamp::offset`] compares it with our [`Clock`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoreStamp {
    /// The store's time on its answer.
    pub stamped: DateTime<Utc>,
    /// How coarse that time is (one second for an HTTP `Date`).
    pub resolution: Duration,
    /// From sending the request to having the answer.
    pub round_trip: std::time::Duration,
    /// When the answer came.
    pub received: std::time::Instant,
}

impl StoreStamp {
    /// A reading of `stamped` from an exchange that started at `sent`.
    pub fn after(sent: std::time::Instant, stamped: DateTime<Utc>, resolution: Duration) -> Self {
        let received = std::time::Instant::now();
        StoreStamp {
            stamped,
            resolution,
            round_trip: received.saturating_duration_since(sent),
            received,
        }
    }

    /// Our clock against the store's, `now` being our clock's time now.
    pub fn offset(&self, now: DateTime<Utc>) -> StoreOffset {
        let since =
            |elapsed: std::time::Duration| Duration::from_std(elapsed).unwrap_or(Duration::MAX);
        let received = now - since(self.received.elapsed());
        let sent = received - since(self.round_trip);
        StoreOffset::measure(sent, received, self.stamped, self.resolution)
    }
}

/// What the daemon knows about the clocks of the others at one moment.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockEvidence {
    /// The newest time a writer stamped into the stored document.
    pub document_time: Option<DateTime<Utc>>,
    /// Our clock against the store's, from the last read.
    pub store_offset: Option<StoreOffset>,
}

/// The instants a write decided at `now` works with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Times {
    /// This host's clock.
    pub now: DateTime<Utc>,
    /// The earliest reading of every clock the daemon can check: a key is
    /// pruned only once it has expired by this one, so a clock that runs
    /// fast (within the tolerance) never removes a key early.
    pub expired_by: DateTime<Utc>,
}

impl ClockEvidence {
    /// The instants for a write at `now`.
    pub fn times(&self, now: DateTime<Utc>) -> Times {
        let store_lag = self
            .store_offset
            .map_or(Duration::zero(), |offset| offset.max.max(Duration::zero()));
        Times {
            now,
            expired_by: now - store_lag,
        }
    }

    /// The best guess of the true time when our clock cannot be trusted: the
    /// store's clock if we have a reading, else never before the document.
    pub fn reference_time(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        match (self.store_offset, self.document_time) {
            (Some(offset), document) => {
                let store_now = now - offset.estimate();
                document.map_or(store_now, |document| store_now.max(document))
            }
            (None, Some(document)) => now.max(document),
            (None, None) => now,
        }
    }
}

/// What our clock disagrees with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Witness {
    /// The newest time written into the stored keyset.
    Document(DateTime<Utc>),
    /// The store's own clock; the store's location.
    Store(String),
}

/// This host's clock differs from another clock jwkd can see by more than
/// `clock_skew`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Skew {
    /// Our clock minus the other: positive when ours is ahead. For a measured
    /// range, its middle ([`StoreOffset::estimate`]).
    pub offset: Duration,
    /// The other clock.
    pub witness: Witness,
    /// `clock_skew`.
    pub tolerance: Duration,
}

impl std::error::Error for Skew {}

impl Skew {
    /// The offset in seconds, for the metric.
    pub fn offset_seconds(&self) -> f64 {
        self.offset.num_milliseconds() as f64 / 1000.0
    }
}

impl fmt::Display for Skew {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let direction = if self.offset < Duration::zero() {
            "behind"
        } else {
            "ahead of"
        };
        let amount = human(self.offset.abs());
        write!(f, "this host's clock is {amount} {direction} ")?;
        match &self.witness {
            Witness::Document(at) => write!(
                f,
                "the newest time written into the stored keyset ({}: the clock stepped back or is slow)",
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            )?,
            Witness::Store(location) => write!(f, "the clock of the store {location}")?,
        }
        write!(
            f,
            ", more than clock_skew ({}): jwkd makes no change to the keyset until the clocks agree \
             (check the host's time synchronisation)",
            human(self.tolerance)
        )
    }
}

/// A duration for people: milliseconds below a second, else whole seconds
/// (rounded: a measured 86 399.7 s is a day).
fn human(duration: Duration) -> String {
    let millis = duration.num_milliseconds().unsigned_abs();
    if millis < 1000 {
        format!("{millis}ms")
    } else {
        crate::duration::format_duration(std::time::Duration::from_secs((millis + 500) / 1000))
    }
}

/// How the daemon's clock stood when it published a keyset: what the HTTP
/// handlers evaluate key states with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ClockView {
    /// What was known.
    pub evidence: ClockEvidence,
    /// Set while our clock is beyond the tolerance.
    pub skew: Option<Skew>,
}

impl ClockView {
    /// The instant to evaluate key states at when our clock says `now`: never
    /// before the document's newest write; while our clock is beyond the
    /// tolerance, the best guess of the true time ([`ClockEvidence::reference_time`]).
    pub fn time_at(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        if self.skew.is_some() {
            self.evidence.reference_time(now)
        } else {
            self.evidence
                .document_time
                .map_or(now, |document| now.max(document))
        }
    }
}

/// Whether `now` agrees with the evidence within `tolerance`.
///
/// # Errors
/// [`Skew`] naming the clock ours disagrees with, and by how much.
pub fn check(
    now: DateTime<Utc>,
    evidence: &ClockEvidence,
    tolerance: Duration,
    store_location: &str,
) -> Result<(), Skew> {
    if let Some(offset) = evidence.store_offset {
        // Beyond the tolerance only if the whole measured range is.
        if offset.min > tolerance || offset.max < -tolerance {
            return Err(Skew {
                offset: offset.estimate(),
                witness: Witness::Store(store_location.to_owned()),
                tolerance,
            });
        }
    }
    if let Some(document) = evidence.document_time
        && now + tolerance < document
    {
        return Err(Skew {
            offset: now - document,
            witness: Witness::Document(document),
            tolerance,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    fn t(seconds: i64) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 29, 12, 0, 0).unwrap() + Duration::seconds(seconds)
    }

    #[test]
    fn a_measured_offset_brackets_the_truth() {
        // We are 10 s ahead; the answer took 200 ms; the store's Date is whole seconds.
        let sent = t(10);
        let received = sent + Duration::milliseconds(200);
        let store_read_at = t(0) + Duration::milliseconds(100);
        let stamped = t(0); // store_read_at truncated to the second
        let offset = StoreOffset::measure(sent, received, stamped, Duration::seconds(1));
        let truth = received - Duration::milliseconds(100) - store_read_at;
        assert!(offset.min <= truth && truth <= offset.max, "{offset:?}");
        assert_eq!(offset.min, Duration::seconds(9));
        assert_eq!(offset.max, Duration::milliseconds(10_200));
    }

    #[test]
    fn within_the_tolerance_is_quiet_beyond_it_names_the_witness() {
        let tolerance = Duration::seconds(60);
        let behind_document = ClockEvidence {
            document_time: Some(t(0)),
            store_offset: None,
        };
        check(t(-59), &behind_document, tolerance, "file").unwrap();
        let skew = check(t(-86_400), &behind_document, tolerance, "file").unwrap_err();
        assert_eq!(skew.offset, Duration::seconds(-86_400));
        let text = skew.to_string();
        assert!(text.starts_with("this host's clock is 1d behind the newest time written into the stored keyset (2026-11-29T12:00:00.000Z"), "{text}");
        assert!(text.contains("more than clock_skew (1m)"), "{text}");

        // A document from long ago says nothing about a clock that is ahead.
        check(t(86_400 * 3), &behind_document, tolerance, "file").unwrap();
        let ahead_of_store = ClockEvidence {
            document_time: Some(t(0)),
            store_offset: Some(StoreOffset {
                min: Duration::seconds(259_199),
                max: Duration::seconds(259_201),
            }),
        };
        let skew = check(
            t(259_200),
            &ahead_of_store,
            tolerance,
            "aws-secrets-manager:s",
        )
        .unwrap_err();
        assert_eq!(skew.witness, Witness::Store("aws-secrets-manager:s".into()));
        assert!(
            skew.to_string().starts_with(
                "this host's clock is 3d ahead of the clock of the store aws-secrets-manager:s"
            ),
            "{skew}"
        );
        let measured = Skew {
            offset: Duration::milliseconds(-86_399_700),
            witness: Witness::Store("file".into()),
            tolerance,
        };
        assert!(
            measured
                .to_string()
                .starts_with("this host's clock is 1d behind the clock of the store file"),
            "{measured}"
        );
        // An uncertain measurement that may be within the tolerance is not a skew.
        let unsure = ClockEvidence {
            document_time: None,
            store_offset: Some(StoreOffset {
                min: Duration::seconds(59),
                max: Duration::seconds(61),
            }),
        };
        check(t(0), &unsure, tolerance, "s").unwrap();
    }

    #[test]
    fn pruning_waits_for_the_slowest_clock() {
        let evidence = ClockEvidence {
            document_time: None,
            store_offset: Some(StoreOffset {
                min: Duration::seconds(20),
                max: Duration::seconds(30),
            }),
        };
        assert_eq!(evidence.times(t(100)).expired_by, t(70));
        let behind = ClockEvidence {
            document_time: None,
            store_offset: Some(StoreOffset {
                min: Duration::seconds(-30),
                max: Duration::seconds(-20),
            }),
        };
        assert_eq!(behind.times(t(100)).expired_by, t(100));
        assert_eq!(behind.reference_time(t(100)), t(125));
    }
}
