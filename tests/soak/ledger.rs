//! What the soak saw, kept as it goes and checked at the end: every token
//! and verdict, every key served and stored, every fault injected.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use chrono::{DateTime, Utc};

/// At most this many examples of each kind of failure are kept for the report.
const EXAMPLES: usize = 20;

/// How a verifier judged a token that jwkd issued.
pub enum Verdict {
    Accepted,
    /// It could not judge (no key set could be fetched): a 503, not a 401.
    Unavailable(String),
    Rejected(String),
}

#[derive(Default)]
pub struct Ledger {
    pub issued: BTreeMap<&'static str, u64>,
    /// Token requests that failed (daemon down, KMS unreachable): availability, not safety.
    pub issue_failures: BTreeMap<&'static str, u64>,
    pub verified: BTreeMap<&'static str, u64>,
    pub unavailable: BTreeMap<&'static str, u64>,
    pub rejected_revoked: u64,
    pub valid_rejected: u64,
    pub invalid_sent: BTreeMap<&'static str, u64>,
    pub invalid_accepted: u64,
    /// Examples of what must not happen, and notes on what may.
    pub problems: Vec<String>,
    pub examples: Vec<String>,
    /// Python verdicts skipped because its queue was full (bounded).
    pub peer_skipped: u64,
    /// Kids revoked on purpose, by issuer.
    pub revoked: BTreeSet<String>,
    /// For each kid that signed an issued token: its issuer and the latest `exp`.
    pub signed: BTreeMap<String, (usize, i64)>,
    /// Kids each issuer's JWKS served, by issuer, with the family.
    pub served: BTreeMap<usize, BTreeMap<String, String>>,
    /// Kids each issuer's stored keyset held, with the family.
    pub stored: BTreeMap<usize, BTreeMap<String, String>>,
    /// When each issuer's keyset was first read, and the last read.
    pub first_stored_at: BTreeMap<usize, i64>,
    pub last_stored_at: BTreeMap<usize, i64>,
    pub lost: BTreeSet<String>,
    pub largest_jwks: usize,
    pub longest_propagation: Duration,
    pub faults: BTreeMap<String, u64>,
    /// The injector's kinds of fault that were injected at least once.
    pub kinds: BTreeSet<String>,
    /// Manual rotations per issuer, and revocations per issuer and family.
    pub rotates: BTreeMap<usize, u64>,
    pub revokes: BTreeMap<(usize, String), u64>,
    pub unexpected_exits: Vec<String>,
    /// KMS keys of the KMS issuer at the end: made, stored, retired, and
    /// enabled but not stored (a kill mid-pass; the hourly sweep's).
    pub kms: Option<(usize, usize, usize, usize)>,
    pub peak_rss_kib: BTreeMap<String, u64>,
    /// The daemons' warnings that a key was stored short of its lead.
    pub short_leads: usize,
    /// For the story of a rejection: each fault's span (unix ms), where and
    /// when each kid was first seen (unix ms), each kid's stored times.
    pub fault_log: Vec<(i64, i64, String)>,
    pub first_seen: BTreeMap<String, BTreeMap<String, i64>>,
    pub key_times: BTreeMap<String, (String, String)>,
    pub rejections: Vec<(i64, String, &'static str)>,
}

/// Now, in unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Ledger {
    pub fn example(&mut self, text: String) {
        if self.examples.len() < EXAMPLES {
            self.examples.push(text);
        }
    }

    pub fn problem(&mut self, text: String) {
        if self.problems.len() < EXAMPLES {
            self.problems.push(text);
        }
    }

    /// Counts a fault of `kind`, one of the injector's `variant`s.
    pub fn fault(&mut self, variant: impl std::fmt::Debug, kind: &str) {
        *self.faults.entry(kind.to_owned()).or_default() += 1;
        self.kinds.insert(format!("{variant:?}"));
    }

    /// Records the verdict on a token jwkd issued for `issuer`, signed by `kid`
    /// and valid until `exp`.
    pub fn judge_valid(
        &mut self,
        verifier: &'static str,
        issuer: usize,
        kid: &str,
        exp: i64,
        verdict: Verdict,
    ) {
        if !self.revoked.contains(kid) {
            let entry = self.signed.entry(kid.to_owned()).or_insert((issuer, exp));
            entry.1 = entry.1.max(exp);
        }
        match verdict {
            Verdict::Accepted => *self.verified.entry(verifier).or_default() += 1,
            Verdict::Unavailable(why) => {
                *self.unavailable.entry(verifier).or_default() += 1;
                self.example(format!(
                    "{verifier} could not judge a token of {kid}: {why}"
                ));
            }
            Verdict::Rejected(_) if self.revoked.contains(kid) => self.rejected_revoked += 1,
            Verdict::Rejected(why) => {
                self.valid_rejected += 1;
                self.rejections.push((now_ms(), kid.to_owned(), verifier));
                self.problem(format!(
                    "VALID TOKEN REJECTED by {verifier} (kid {kid}, issuer {issuer}): {why}"
                ));
            }
        }
    }

    /// Records the verdict on a token that must be refused.
    pub fn judge_invalid(&mut self, verifier: &'static str, kind: &'static str, accepted: bool) {
        *self.invalid_sent.entry(kind).or_default() += 1;
        if accepted {
            self.invalid_accepted += 1;
            self.problem(format!("INVALID TOKEN ACCEPTED by {verifier}: {kind}"));
        }
    }

    /// Kids that signed a token still valid at `now` (unix seconds, with a
    /// second of margin) of `issuer`, and not revoked on purpose.
    pub fn in_use(&self, issuer: usize, now: i64) -> Vec<String> {
        self.signed
            .iter()
            .filter(|(kid, (of, exp))| {
                *of == issuer && *exp > now + 1 && !self.revoked.contains(*kid)
            })
            .map(|(kid, _)| kid.clone())
            .collect()
    }

    /// Notes a key in use missing from what `whom` serves or stores.
    pub fn check_in_use(
        &mut self,
        issuer: usize,
        now: i64,
        present: &BTreeSet<String>,
        whom: &str,
    ) {
        for kid in self.in_use(issuer, now) {
            if !present.contains(&kid) && self.lost.insert(kid.clone()) {
                self.problem(format!(
                    "KEY LOST: {kid} of issuer {issuer} signed a token valid until {} but {whom} \
                     does not have it at {now}",
                    self.signed[&kid].1
                ));
            }
        }
    }

    /// Keys served that no read of the store ever saw (published before stored).
    pub fn served_not_stored(&self) -> Vec<String> {
        self.served
            .iter()
            .flat_map(|(issuer, kids)| {
                kids.keys()
                    .filter(|kid| {
                        !self
                            .stored
                            .get(issuer)
                            .is_some_and(|stored| stored.contains_key(*kid))
                    })
                    .cloned()
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// Per issuer and family: keys stored, and keys beyond one per rotation
    /// (the two first keys, one per scheduled rotation since, one per manual
    /// rotation of the issuer and per revocation in the family).
    pub fn keys_made(&self, every: i64) -> Vec<(usize, String, u64, u64, u64)> {
        let mut rows = Vec::new();
        for (issuer, kids) in &self.stored {
            let mut families: BTreeMap<&str, u64> = BTreeMap::new();
            for family in kids.values() {
                *families.entry(family).or_default() += 1;
            }
            let from = self.first_stored_at[issuer];
            let to = self.last_stored_at[issuer] + 1;
            let fires = (from.div_euclid(every) + 1..=to.div_euclid(every)).count() as u64;
            for (family, made) in families {
                let allowed = 2
                    + fires
                    + self.rotates.get(issuer).copied().unwrap_or(0)
                    + self
                        .revokes
                        .get(&(*issuer, family.to_owned()))
                        .copied()
                        .unwrap_or(0);
                rows.push((
                    *issuer,
                    family.to_owned(),
                    made,
                    made.saturating_sub(2),
                    made.saturating_sub(allowed),
                ));
            }
        }
        rows
    }

    /// The table the soak prints, and the must-be-zero figures that are not.
    pub fn table(
        &self,
        issuers: &[&str],
        seed: u64,
        ran: Duration,
        every: i64,
        started: DateTime<Utc>,
    ) -> (String, Vec<String>) {
        let mut out = String::new();
        let mut broken = Vec::new();
        let sum = |map: &BTreeMap<&'static str, u64>| map.values().sum::<u64>();
        let mut row = |what: &str, value: String, must_be_zero: bool, zero: bool| {
            let mark = if must_be_zero {
                if zero {
                    "  (must be 0: ok)"
                } else {
                    "  (must be 0: NOT ZERO)"
                }
            } else {
                ""
            };
            let _ = writeln!(out, "| {what:<58} | {value:>22} |{mark}");
            if must_be_zero && !zero {
                broken.push(format!("{what}: {value}"));
            }
        };
        let detail = |map: &BTreeMap<&'static str, u64>| {
            map.iter()
                .map(|(kind, n)| format!("{kind} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        row("tokens issued", sum(&self.issued).to_string(), false, true);
        row(
            "token requests that failed (daemon down, KMS out)",
            sum(&self.issue_failures).to_string(),
            false,
            true,
        );
        row(
            "verifications that accepted a valid token",
            sum(&self.verified).to_string(),
            false,
            true,
        );
        row(
            "valid tokens rejected",
            self.valid_rejected.to_string(),
            true,
            self.valid_rejected == 0,
        );
        row(
            "  rejected, signed by a key revoked on purpose",
            self.rejected_revoked.to_string(),
            false,
            true,
        );
        row(
            "  not judged: no key set could be fetched (a 503)",
            sum(&self.unavailable).to_string(),
            false,
            true,
        );
        row(
            "invalid tokens sent (forged, expired, cross-issuer)",
            sum(&self.invalid_sent).to_string(),
            false,
            true,
        );
        row(
            "invalid tokens accepted",
            self.invalid_accepted.to_string(),
            true,
            self.invalid_accepted == 0,
        );
        let made = self.keys_made(every);
        let rotations: u64 = made.iter().map(|row| row.3).sum();
        let beyond: u64 = made.iter().map(|row| row.4).sum();
        row(
            "rotations (successor keys stored)",
            rotations.to_string(),
            false,
            true,
        );
        let kills = self
            .faults
            .iter()
            .filter(|(kind, _)| kind.starts_with("kill"))
            .map(|(_, n)| n)
            .sum::<u64>();
        row(
            "kills (SIGKILL, then restart)",
            kills.to_string(),
            false,
            true,
        );
        let outages = self
            .faults
            .iter()
            .filter(|(kind, _)| kind.starts_with("emulator") || kind.starts_with("store proxy"))
            .map(|(_, n)| n)
            .sum::<u64>();
        row(
            "emulator outages (SIGSTOP, proxy drop/hole/5xx/stall/delay)",
            outages.to_string(),
            false,
            true,
        );
        row(
            "keys lost",
            self.lost.len().to_string(),
            true,
            self.lost.is_empty(),
        );
        let not_stored = self.served_not_stored();
        row(
            "keys served but never seen stored",
            not_stored.len().to_string(),
            true,
            not_stored.is_empty(),
        );
        row(
            "keys made beyond one per rotation per family",
            beyond.to_string(),
            true,
            beyond == 0,
        );
        if let Some((made, stored, retired, left)) = self.kms {
            row(
                "KMS keys made / stored now / retired / left for the sweep",
                format!("{made} / {stored} / {retired} / {left}"),
                false,
                true,
            );
        }
        row(
            "largest JWKS (bytes)",
            self.largest_jwks.to_string(),
            false,
            true,
        );
        row(
            "longest rotation to every replica serving it",
            format!("{} ms", self.longest_propagation.as_millis()),
            false,
            true,
        );
        row(
            "keys stored short of their lead (warnings logged)",
            self.short_leads.to_string(),
            false,
            true,
        );
        row(
            "daemons that exited unasked",
            self.unexpected_exits.len().to_string(),
            true,
            self.unexpected_exits.is_empty(),
        );
        for (node, kib) in &self.peak_rss_kib {
            row(
                &format!("peak RSS of {node} (VmHWM, any incarnation)"),
                format!("{:.1} MiB", *kib as f64 / 1024.0),
                false,
                true,
            );
        }
        let mut text = format!(
            "soak: seed {seed}, {} s from {}, rotation every {every} s\n\n| {:<58} | {:>22} |\n|{}|{}|\n",
            ran.as_secs(),
            started.format("%Y-%m-%dT%H:%M:%SZ"),
            "what",
            "",
            "-".repeat(60),
            "-".repeat(24),
        );
        text.push_str(&out);
        let _ = writeln!(text, "\nissued by source: {}", detail(&self.issued));
        let _ = writeln!(
            text,
            "failed requests by source: {}",
            detail(&self.issue_failures)
        );
        let _ = writeln!(text, "accepted by verifier: {}", detail(&self.verified));
        let _ = writeln!(
            text,
            "invalid tokens by kind: {}",
            detail(&self.invalid_sent)
        );
        let _ = writeln!(
            text,
            "peer verdicts skipped (its queue was full): {}",
            self.peer_skipped
        );
        let faults = self
            .faults
            .iter()
            .map(|(kind, n)| format!("{kind} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(text, "faults: {faults}");
        for (issuer, family, made, rotations, beyond) in &made {
            let _ = writeln!(
                text,
                "keys of {} {family}: {made} stored ({rotations} rotations, {beyond} beyond)",
                issuers[*issuer]
            );
        }
        for line in not_stored
            .iter()
            .take(EXAMPLES)
            .map(|kid| format!("served, never stored: {kid}"))
            .chain(self.unexpected_exits.iter().cloned())
            .chain(self.problems.iter().cloned())
            .chain(self.examples.iter().cloned())
        {
            let _ = writeln!(text, "{line}");
        }
        for (at, kid, verifier) in self.rejections.iter().take(5) {
            let _ = writeln!(text, "{}", self.story(*at, kid, verifier));
        }
        (text, broken)
    }

    /// What led to `verifier` rejecting a valid token of `kid` at `at`: when
    /// the key was made and activated, where it was seen first, and the
    /// faults of the 15 s before.
    fn story(&self, at: i64, kid: &str, verifier: &str) -> String {
        let mut story = format!("story of the rejection of {kid} by {verifier} at {at} ms:");
        if let Some((created, activates)) = self.key_times.get(kid) {
            let _ = write!(story, " created {created}, activates {activates};");
        }
        for (place, seen) in self.first_seen.get(kid).into_iter().flatten() {
            let _ = write!(
                story,
                " first in {place} at {} ms ({:+} ms);",
                seen,
                seen - at
            );
        }
        for (start, end, kind) in &self.fault_log {
            if *end >= at - 15_000 && *start <= at {
                let _ = write!(
                    story,
                    " fault {kind} from {:+} to {:+} ms;",
                    start - at,
                    end - at
                );
            }
        }
        story
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(ledger: &mut Ledger, issuer: usize, kids: &[&str], from: i64, to: i64) {
        for kid in kids {
            ledger
                .stored
                .entry(issuer)
                .or_default()
                .insert((*kid).to_owned(), "ES256".to_owned());
        }
        ledger.first_stored_at.insert(issuer, from);
        ledger.last_stored_at.insert(issuer, to);
    }

    fn table(ledger: &Ledger) -> Vec<String> {
        ledger
            .table(&["a"], 1, Duration::from_secs(1), 6, Utc::now())
            .1
    }

    /// The checks of the table can fail: each must-be-zero is seen not zero.
    #[test]
    fn each_must_be_zero_of_the_table_can_fail() {
        let mut ledger = Ledger::default();
        // Created at 600 s, read until 612 s: fires at 606 and 612, so at most
        // 2 + 2 keys.
        stored(&mut ledger, 0, &["k1", "k2", "k3", "k4"], 600, 612);
        assert!(table(&ledger).is_empty(), "{:?}", table(&ledger));
        stored(&mut ledger, 0, &["k5"], 600, 612);
        assert_eq!(ledger.keys_made(6)[0].4, 1);
        // A manual rotation allows one more.
        ledger.rotates.insert(0, 1);
        assert!(table(&ledger).is_empty(), "{:?}", table(&ledger));

        ledger
            .served
            .entry(0)
            .or_default()
            .insert("k9".into(), "ES256".into());
        assert_eq!(table(&ledger).len(), 1, "served, never stored");
        ledger.served.clear();

        ledger.judge_valid("v", 0, "k1", 700, Verdict::Accepted);
        ledger.check_in_use(0, 650, &["k1".to_owned()].into(), "x");
        assert!(table(&ledger).is_empty());
        ledger.check_in_use(0, 650, &BTreeSet::new(), "x");
        assert_eq!(table(&ledger), ["keys lost: 1"]);
        // A key revoked on purpose is not lost, nor is a key whose tokens expired.
        ledger.lost.clear();
        ledger.check_in_use(0, 699, &BTreeSet::new(), "x");
        ledger.revoked.insert("k1".into());
        ledger.check_in_use(0, 650, &BTreeSet::new(), "x");
        assert!(table(&ledger).is_empty());

        ledger.judge_valid("v", 0, "k1", 700, Verdict::Rejected("revoked".into()));
        assert!(table(&ledger).is_empty());
        ledger.judge_valid("v", 0, "k2", 700, Verdict::Rejected("unknown kid".into()));
        assert_eq!(table(&ledger), ["valid tokens rejected: 1"]);
        ledger.valid_rejected = 0;

        ledger.judge_invalid("v", "forged", true);
        assert_eq!(table(&ledger), ["invalid tokens accepted: 1"]);
        ledger.invalid_accepted = 0;

        ledger.unexpected_exits.push("gone".into());
        assert_eq!(table(&ledger), ["daemons that exited unasked: 1"]);
    }
}
