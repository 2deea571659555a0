//! The rotation schedule: a cron expression in UTC and the instants it fires.
//!
//! Accepts ordinary 5-field crontab lines (`m h dom mon dow`, Sunday = 0 or 7),
//! 6- or 7-field expressions with seconds (and years) in the `cron` crate's
//! syntax (Sunday = 1), and `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`.
//! Nothing outside this module knows the `cron` crate.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Duration, Utc};

/// How far ahead [`Schedule::shortest_gap`] looks, and at most how many fires.
///
/// Four years covers leap days. A schedule that fires 10 000 times before then
/// fires at least every few hours, and its shortest gap shows within its first
/// days, where the daily pattern (and day and month boundaries) repeat; looking
/// further only made validation of second-level schedules slow.
const GAP_HORIZON_DAYS: i64 = 4 * 366;
const GAP_MAX_FIRES: usize = 10_000;

/// A parsed rotation schedule.
#[derive(Clone)]
pub struct Schedule {
    source: String,
    cron: cron::Schedule,
}

impl fmt::Debug for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Schedule({:?})", self.source)
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

impl PartialEq for Schedule {
    fn eq(&self, other: &Self) -> bool {
        self.source == other.source
    }
}

impl FromStr for Schedule {
    type Err = String;

    fn from_str(source: &str) -> Result<Self, Self::Err> {
        let trimmed = source.trim();
        let expression = if trimmed.starts_with('@') {
            match trimmed {
                "@hourly" | "@daily" | "@weekly" | "@monthly" | "@yearly" | "@annually" => {
                    trimmed.to_owned()
                }
                "@midnight" => "@daily".to_owned(),
                _ => {
                    return Err(format!(
                        "unknown macro {trimmed:?} (expected @hourly, @daily, @weekly, @monthly or @yearly)"
                    ));
                }
            }
        } else {
            let fields: Vec<&str> = trimmed.split_whitespace().collect();
            match fields.len() {
                5 => from_crontab(&fields)?,
                6 | 7 => fields.join(" "),
                n => {
                    return Err(format!(
                        "expected 5 fields (m h dom mon dow), or 6/7 with seconds and years, got {n}"
                    ));
                }
            }
        };
        let cron = cron::Schedule::from_str(&expression)
            .map_err(|err| format!("invalid cron expression {trimmed:?}: {err}"))?;
        let schedule = Schedule {
            source: trimmed.to_owned(),
            cron,
        };
        Ok(schedule)
    }
}

impl Schedule {
    /// The first fire at or after `at`, or `None` if the schedule never fires again.
    pub fn first_at_or_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        // `after` is strict, so start just before `at`; fires are whole seconds.
        let just_before = at - Duration::nanoseconds(1);
        self.cron.after(&just_before).next()
    }

    /// The first fire strictly after `at`.
    pub fn first_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron.after(&at).next()
    }

    /// The next `n` fires after `at`.
    pub fn upcoming(&self, at: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        self.cron.after(&at).take(n).collect()
    }

    /// The shortest gap between two consecutive fires after `from`, looking
    /// ahead `GAP_HORIZON_DAYS` or `GAP_MAX_FIRES` fires. `None` if the
    /// schedule fires fewer than twice in that window.
    pub fn shortest_gap(&self, from: DateTime<Utc>) -> Option<Duration> {
        let horizon = from + Duration::days(GAP_HORIZON_DAYS);
        let mut fires = self
            .cron
            .after(&from)
            .take_while(|fire| *fire <= horizon)
            .take(GAP_MAX_FIRES);
        let mut previous = fires.next()?;
        let mut shortest: Option<Duration> = None;
        for fire in fires {
            let gap = fire - previous;
            shortest = Some(shortest.map_or(gap, |s| s.min(gap)));
            previous = fire;
        }
        shortest
    }
}

/// Turns a 5-field crontab line into the `cron` crate's 6-field form: seconds
/// are 0, and day-of-week numbers move from crontab's 0-7 (Sunday = 0 or 7) to
/// the crate's 1-7 (Sunday = 1).
fn from_crontab(fields: &[&str]) -> Result<String, String> {
    let [minute, hour, day_of_month, month, day_of_week] = fields else {
        return Err("expected 5 fields".into());
    };
    let restricted = |field: &str| field != "*" && field != "?";
    if restricted(day_of_month) && restricted(day_of_week) {
        // Vixie cron fires when *either* matches; the cron crate needs both. Rather
        // than silently rotating on different days than the operator expects, refuse.
        return Err(format!(
            "day-of-month ({day_of_month}) and day-of-week ({day_of_week}) are both restricted; \
             crontab would fire on either, which jwkd does not support: restrict only one"
        ));
    }
    let day_of_week = crontab_day_of_week(day_of_week)?;
    Ok(format!(
        "0 {minute} {hour} {day_of_month} {month} {day_of_week}"
    ))
}

fn crontab_day_of_week(field: &str) -> Result<String, String> {
    if field == "*" || field == "?" || field.starts_with("*/") {
        // Steps from Sunday are the same days in both numberings.
        return Ok(field.to_owned());
    }
    let mut days: Vec<u32> = Vec::new();
    let mut names: Vec<&str> = Vec::new();
    for item in field.split(',') {
        let (range, step) = match item.split_once('/') {
            Some((range, step)) => {
                let step: u32 = step
                    .parse()
                    .ok()
                    .filter(|s| *s > 0)
                    .ok_or_else(|| format!("invalid step in day-of-week {item:?}"))?;
                (range, step)
            }
            None => (item, 1),
        };
        let number = |text: &str| -> Result<Option<u32>, String> {
            if text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty() {
                let n: u32 = text
                    .parse()
                    .map_err(|_| format!("invalid day-of-week {text:?}"))?;
                if n > 7 {
                    return Err(format!("day-of-week {n} out of range 0-7"));
                }
                Ok(Some(n))
            } else {
                Ok(None)
            }
        };
        let (first, last) = match range.split_once('-') {
            Some((a, b)) => (number(a)?, number(b)?),
            None => (number(range)?, number(range)?),
        };
        match (first, last) {
            (Some(first), Some(last)) if first <= last => {
                days.extend((first..=last).step_by(step as usize));
            }
            (Some(first), Some(last)) => {
                return Err(format!("day-of-week range {first}-{last} runs backwards"));
            }
            // Names (mon-fri, sun) mean the same in both syntaxes.
            _ => names.push(item),
        }
    }
    let mut converted: Vec<String> = {
        let mut crate_days: Vec<u32> = days.iter().map(|day| day % 7 + 1).collect();
        crate_days.sort_unstable();
        crate_days.dedup();
        crate_days.iter().map(u32::to_string).collect()
    };
    converted.extend(names.into_iter().map(str::to_owned));
    Ok(converted.join(","))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn fires(expression: &str, from: &str, n: usize) -> String {
        let schedule: Schedule = expression.parse().unwrap();
        schedule
            .upcoming(at(from), n)
            .iter()
            .map(|fire| fire.format("%a %Y-%m-%d %H:%M:%S").to_string())
            .collect::<Vec<_>>()
            .join("\n")
    }

    #[test]
    fn five_field_crontab() {
        expect_test::expect![[r#"
            Sat 2026-11-28 03:00:00
            Sun 2026-11-29 03:00:00
            Mon 2026-11-30 03:00:00"#]]
        .assert_eq(&fires("0 3 * * *", "2026-11-28T00:00:00Z", 3));
    }

    #[test]
    fn crontab_sunday_is_zero_and_seven() {
        let sunday = "Sun 2026-11-29 00:00:00\nSun 2026-12-06 00:00:00";
        assert_eq!(fires("0 0 * * 0", "2026-11-28T00:00:00Z", 2), sunday);
        assert_eq!(fires("0 0 * * 7", "2026-11-28T00:00:00Z", 2), sunday);
        assert_eq!(fires("0 0 * * sun", "2026-11-28T00:00:00Z", 2), sunday);
        expect_test::expect![[r#"
            Mon 2026-11-30 00:00:00
            Tue 2026-12-01 00:00:00
            Wed 2026-12-02 00:00:00
            Thu 2026-12-03 00:00:00
            Fri 2026-12-04 00:00:00
            Mon 2026-12-07 00:00:00"#]]
        .assert_eq(&fires("0 0 * * 1-5", "2026-11-28T00:00:00Z", 6));
        expect_test::expect![[r#"
            Sat 2026-11-28 12:00:00
            Sun 2026-11-29 12:00:00
            Sat 2026-12-05 12:00:00"#]]
        .assert_eq(&fires("0 12 * * 6-7", "2026-11-28T00:00:00Z", 3));
    }

    #[test]
    fn six_and_seven_fields_with_seconds() {
        expect_test::expect![[r#"
            Sat 2026-11-28 00:00:02
            Sat 2026-11-28 00:00:04
            Sat 2026-11-28 00:00:06"#]]
        .assert_eq(&fires("*/2 * * * * *", "2026-11-28T00:00:00Z", 3));
        expect_test::expect![[r#"
            Sun 2027-01-03 03:30:00"#]]
        .assert_eq(&fires("0 30 3 * * Sun 2027", "2026-11-28T00:00:00Z", 1));
    }

    #[test]
    fn macros() {
        assert_eq!(
            fires("@hourly", "2026-11-28T10:20:00Z", 1),
            "Sat 2026-11-28 11:00:00"
        );
        assert_eq!(
            fires("@daily", "2026-11-28T10:20:00Z", 1),
            "Sun 2026-11-29 00:00:00"
        );
        assert_eq!(
            fires("@weekly", "2026-11-28T10:20:00Z", 1),
            "Sun 2026-11-29 00:00:00"
        );
    }

    #[test]
    fn bad_input_says_what_is_wrong() {
        let cases = [
            ("", "expected 5 fields"),
            ("* * *", "got 3"),
            ("61 * * * *", "invalid cron expression"),
            ("@fortnightly", "unknown macro"),
            ("0 0 1 * 1", "both restricted"),
            ("0 0 * * 9", "out of range"),
            ("0 0 * * 5-1", "runs backwards"),
            ("0 0 0 31 2 * 2027", "invalid cron expression"),
        ];
        for (expression, expected) in cases {
            match expression.parse::<Schedule>() {
                Err(err) => assert!(err.contains(expected), "{expression:?}: {err}"),
                // A syntactically valid schedule that never fires is caught by the gap check.
                Ok(schedule) => assert!(
                    expected == "invalid cron expression"
                        && schedule.first_after(Utc::now()).is_none(),
                    "{expression:?} parsed"
                ),
            }
        }
    }

    #[test]
    fn shortest_gap() {
        let from = Utc.with_ymd_and_hms(2026, 11, 28, 0, 0, 0).unwrap();
        let gap = |expression: &str| expression.parse::<Schedule>().unwrap().shortest_gap(from);
        assert_eq!(gap("*/2 * * * * *"), Some(Duration::seconds(2)));
        assert_eq!(gap("0 3 * * *"), Some(Duration::days(1)));
        assert_eq!(gap("0 0,1 * * *"), Some(Duration::hours(1)));
        assert_eq!(gap("0 0 1,2 * *"), Some(Duration::days(1)));
        assert_eq!(gap("0 0 0 1 1 * 2027"), None);
    }

    #[test]
    fn first_at_or_after_includes_the_instant() {
        let schedule: Schedule = "0 3 * * *".parse().unwrap();
        let fire = at("2026-11-28T03:00:00Z");
        assert_eq!(schedule.first_at_or_after(fire), Some(fire));
        assert_eq!(schedule.first_after(fire), Some(at("2026-11-29T03:00:00Z")));
    }
}
