//! The time axis: days since 1970-01-01 (proleptic Gregorian), as CF's `units` say.

/// An unparseable date.
#[derive(Debug, thiserror::Error)]
#[error("cannot parse time '{0}': expected YYYY, YYYY-MM-DD or YYYY-MM-DDThh:mm:ss")]
pub struct TimeError(pub String);

/// Days since 1970-01-01 of a civil date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

/// Parse `YYYY` (→ January 1st), `YYYY-MM-DD`, or an ISO datetime (time of day ignored) into
/// days since 1970-01-01.
pub fn parse_time(s: &str) -> Result<i64, TimeError> {
    let err = || TimeError(s.to_string());
    let t = s.trim();
    let date = t.split(['T', ' ']).next().unwrap_or("");
    let parts: Vec<&str> = date.split('-').collect();
    let num = |p: &str, len: usize| -> Result<i64, TimeError> {
        if p.len() != len || !p.bytes().all(|c| c.is_ascii_digit()) {
            return Err(err());
        }
        p.parse::<i64>().map_err(|_| err())
    };
    match parts.as_slice() {
        [y] => Ok(days_from_civil(num(y, 4)?, 1, 1)),
        [y, m, d] => {
            let (y, m, d) = (num(y, 4)?, num(m, 2)? as u32, num(d, 2)? as u32);
            if !(1..=12).contains(&m) || d < 1 || d > days_in_month(y, m) {
                return Err(err());
            }
            Ok(days_from_civil(y, m, d))
        }
        _ => Err(err()),
    }
}

/// ISO date `YYYY-MM-DD` of a day count since 1970-01-01.
pub fn days_to_iso(days: i64) -> String {
    let (y, m, d) = civil_from_days(days);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn round_trips_known_dates() {
        assert_eq!(parse_time("1970-01-01").unwrap(), 0);
        assert_eq!(parse_time("2019").unwrap(), 17897); // numpy: datetime64('2019-01-01') = 17897 days
        assert_eq!(parse_time("2020-03-01").unwrap(), 18322);
        assert_eq!(days_to_iso(18322), "2020-03-01");
        assert!(parse_time("2019-02-30").is_err());
        assert!(parse_time("20x9").is_err());
        assert!(parse_time("").is_err());
    }
}
