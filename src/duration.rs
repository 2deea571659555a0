//! Durations as the config file writes them: `30s`, `5m`, `1h30m`, `7d`, `250ms`.
//!
//! The config reads them with [`parse_duration`]; everything that shows a
//! duration to an operator (`check-config`, the clock check, logs) writes it
//! back with [`format_duration`], so what is printed can be pasted into the file.

use std::time::Duration;

/// Parses `30s`, `5m`, `1h`, `7d`, `250ms` and sums like `1h30m`.
///
/// # Errors
/// A message saying what is wrong with the text.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let complain = || format!("{text:?} is not a duration (use e.g. 30s, 5m, 1h, 7d or 1h30m)");
    let mut rest = text.trim();
    if rest.is_empty() {
        return Err(complain());
    }
    let mut total = Duration::ZERO;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(complain());
        }
        let amount: u64 = rest[..digits].parse().map_err(|_| complain())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ms" => Duration::from_millis(1),
            "s" => Duration::from_secs(1),
            "m" => Duration::from_secs(60),
            "h" => Duration::from_secs(3600),
            "d" => Duration::from_secs(86_400),
            _ => return Err(complain()),
        };
        rest = &rest[unit_len..];
        let amount = u32::try_from(amount).map_err(|_| complain())?;
        total = total.checked_add(unit * amount).ok_or_else(complain)?;
    }
    Ok(total)
}

/// Writes a duration the way the config does: `1h30m`, `45s`, `0s`.
pub fn format_duration(duration: Duration) -> String {
    let mut seconds = duration.as_secs();
    let millis = duration.subsec_millis();
    if seconds == 0 && millis > 0 {
        return format!("{millis}ms");
    }
    let mut out = String::new();
    for (unit, size) in [("d", 86_400), ("h", 3600), ("m", 60), ("s", 1)] {
        if seconds >= size {
            out.push_str(&format!("{}{unit}", seconds / size));
            seconds %= size;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "5", "s", "1 h", "-1s", "1y", "99999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format_duration(Duration::from_secs(5400)), "1h30m");
        assert_eq!(format_duration(Duration::ZERO), "0s");
    }
}
