//! The time axis: instants at microsecond resolution, ISO periods as users type them
//! (`2019`, `2019-06`, `2019-06-01`, `2019-06-01T10:30`), and CF time units
//! (`hours since 2019-07-01 12:00:00`) as xarray, netCDF and ODC write them.
//!
//! Times are carried whole: a reference's time of day is never dropped and no value is
//! floored to a day, so a step at 2019-07-02T00:00 stays on 2019-07-02 whatever units the
//! store used.

use std::fmt;

/// An instant: microseconds since 1970-01-01T00:00:00 UTC, proleptic Gregorian calendar.
///
/// Microseconds span ±292,000 years, so any date a store can hold fits, and they are the
/// resolution of Python's `datetime` (ODC's and STAC's timestamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(i64);

const US_PER_SEC: i64 = 1_000_000;
const US_PER_MIN: i64 = 60 * US_PER_SEC;
const US_PER_HOUR: i64 = 60 * US_PER_MIN;
const US_PER_DAY: i64 = 24 * US_PER_HOUR;

impl Time {
    /// 1970-01-01T00:00:00.
    pub const EPOCH: Time = Time(0);

    /// From microseconds since the epoch.
    pub const fn from_micros(us: i64) -> Time {
        Time(us)
    }
    /// Midnight of `days` days since 1970-01-01 (saturating far outside any calendar).
    pub const fn from_days(days: i64) -> Time {
        Time(days.saturating_mul(US_PER_DAY))
    }
    /// Microseconds since the epoch.
    pub const fn micros(self) -> i64 {
        self.0
    }
    /// Whole days since 1970-01-01 (floored: the day this instant falls on).
    pub fn days(self) -> i64 {
        self.0.div_euclid(US_PER_DAY)
    }
    /// Days since 1970-01-01, with the time of day as a fraction.
    pub fn days_f64(self) -> f64 {
        self.0 as f64 / US_PER_DAY as f64
    }
    /// Whether this is 00:00:00 of its day.
    pub fn is_midnight(self) -> bool {
        self.0.rem_euclid(US_PER_DAY) == 0
    }
    /// `YYYY-MM-DD` at midnight, else `YYYY-MM-DDThh:mm:ss[.ffffff]` (UTC).
    pub fn to_iso(self) -> String {
        self.to_string()
    }
    /// The date `YYYY-MM-DD` of the day this instant falls on.
    pub fn date_iso(self) -> String {
        let (y, m, d) = civil_from_days(self.days());
        format!("{y:04}-{m:02}-{d:02}")
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.date_iso())?;
        if self.is_midnight() {
            return Ok(());
        }
        let us = self.0.rem_euclid(US_PER_DAY);
        let (h, mi, s) = (
            us / US_PER_HOUR,
            us % US_PER_HOUR / US_PER_MIN,
            us % US_PER_MIN / US_PER_SEC,
        );
        write!(f, "T{h:02}:{mi:02}:{s:02}")?;
        let frac = us % US_PER_SEC;
        if frac != 0 {
            let digits = format!("{frac:06}");
            write!(f, ".{}", digits.trim_end_matches('0'))?;
        }
        Ok(())
    }
}

/// A time that does not parse, with why.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("cannot parse time '{text}': {why}")]
pub struct TimeError {
    /// The text as given.
    pub text: String,
    /// What is wrong with it.
    pub why: String,
}

const EXPECTED: &str =
    "expected YYYY, YYYY-MM, YYYY-MM-DD or YYYY-MM-DDThh:mm[:ss] (ISO 8601, UTC or with an offset)";

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

/// The finest field a text gave: what its period spans.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Precision {
    Year,
    Month,
    Day,
    Hour,
    Minute,
    Second,
    /// Fractional seconds with this many digits.
    Fraction(u32),
}

/// A parsed ISO (or CF reference) datetime.
struct Parts {
    y: i64,
    mo: u32,
    d: u32,
    us_of_day: i64,
    /// Minutes east of UTC.
    offset_min: i64,
    precision: Precision,
}

/// Split leading ASCII digits off `s`.
fn digits(s: &str) -> (&str, &str) {
    let n = s.bytes().take_while(u8::is_ascii_digit).count();
    s.split_at(n)
}

/// Parse a datetime. `strict` is ISO 8601 as users type it (4-digit year, 2-digit fields);
/// otherwise the looser form CF units allow (`1970-1-1 0:0:0`, `UTC` suffix).
fn parse_parts(text: &str, strict: bool) -> Result<Parts, String> {
    let s = text.trim();
    let field = |s: &str, name: &str, lens: &[usize]| -> Result<u32, String> {
        if s.is_empty() {
            return Err(format!("missing {name}; {EXPECTED}"));
        }
        if !lens.contains(&s.len()) || !s.bytes().all(|c| c.is_ascii_digit()) {
            return Err(format!("'{s}' is not a valid {name}; {EXPECTED}"));
        }
        s.parse::<u32>()
            .map_err(|_| format!("'{s}' is not a valid {name}"))
    };
    let two: &[usize] = if strict { &[2] } else { &[1, 2] };
    // Date: YYYY[-MM[-DD]]
    let (ys, rest) = digits(s);
    let y = field(ys, "year", if strict { &[4] } else { &[1, 2, 3, 4] })? as i64;
    let mut precision = Precision::Year;
    let (mut mo, mut d) = (1, 1);
    let mut rest = rest;
    if let Some(r) = rest.strip_prefix('-') {
        let (ms, r) = digits(r);
        mo = field(ms, "month", two)?;
        if !(1..=12).contains(&mo) {
            return Err(format!("month {mo} is out of range 1..12"));
        }
        precision = Precision::Month;
        rest = r;
        if let Some(r) = rest.strip_prefix('-') {
            let (ds, r) = digits(r);
            d = field(ds, "day", two)?;
            let dim = days_in_month(y, mo);
            if d < 1 || d > dim {
                return Err(format!(
                    "day {d} is out of range 1..{dim} for {y:04}-{mo:02}"
                ));
            }
            precision = Precision::Day;
            rest = r;
        }
    }
    // Time of day: [T| ]hh[:mm[:ss[.f]]]
    let mut us_of_day = 0i64;
    let time_part = if precision == Precision::Day {
        rest.strip_prefix('T')
            .or_else(|| rest.strip_prefix(' ').map(str::trim_start))
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
    } else {
        None
    };
    if let Some(r) = time_part {
        let (hs, r) = digits(r);
        let h = field(hs, "hour", two)?;
        if h > 23 {
            return Err(format!("hour {h} is out of range 0..23"));
        }
        us_of_day += h as i64 * US_PER_HOUR;
        precision = Precision::Hour;
        rest = r;
        if let Some(r) = rest.strip_prefix(':') {
            let (ms, r) = digits(r);
            let m = field(ms, "minute", two)?;
            if m > 59 {
                return Err(format!("minute {m} is out of range 0..59"));
            }
            us_of_day += m as i64 * US_PER_MIN;
            precision = Precision::Minute;
            rest = r;
            if let Some(r) = rest.strip_prefix(':') {
                let (ss, r) = digits(r);
                let sec = field(ss, "second", two)?;
                if sec > 59 {
                    return Err(format!("second {sec} is out of range 0..59"));
                }
                us_of_day += sec as i64 * US_PER_SEC;
                precision = Precision::Second;
                rest = r;
                if let Some(r) = rest.strip_prefix('.') {
                    let (fs, r) = digits(r);
                    if fs.is_empty() || fs.len() > 9 {
                        return Err(format!("invalid fraction of a second; {EXPECTED}"));
                    }
                    let six = format!("{:0<6}", &fs[..fs.len().min(6)]);
                    us_of_day += six.parse::<i64>().map_err(|e| e.to_string())?;
                    precision = Precision::Fraction(fs.len().min(6) as u32);
                    rest = r;
                }
            }
        }
    }
    // Zone: Z | ±hh[:mm] | ±hhmm (and UTC in CF units).
    let mut offset_min = 0i64;
    let zone = if strict { rest } else { rest.trim_start() };
    if precision >= Precision::Hour && !zone.is_empty() {
        if zone == "Z" || (!strict && (zone == "UTC" || zone == "GMT")) {
            rest = "";
        } else if let Some(sign) = zone
            .strip_prefix('+')
            .map(|z| (1, z))
            .or_else(|| zone.strip_prefix('-').map(|z| (-1, z)))
        {
            let (sgn, z) = sign;
            let (hh, z) = digits(z);
            let (mm, z) = match z.strip_prefix(':') {
                Some(z) => digits(z),
                None if hh.len() == 4 => (&hh[2..], z),
                None => ("", z),
            };
            let hh = if hh.len() == 4 { &hh[..2] } else { hh };
            let oh = field(hh, "offset hour", two)? as i64;
            let om = if mm.is_empty() {
                0
            } else {
                field(mm, "offset minute", &[2])? as i64
            };
            if oh > 23 || om > 59 || !z.is_empty() {
                return Err(format!("invalid UTC offset '{zone}'"));
            }
            offset_min = sgn * (oh * 60 + om);
            rest = "";
        }
    }
    if !rest.is_empty() {
        return Err(format!("unexpected '{rest}'; {EXPECTED}"));
    }
    Ok(Parts {
        y,
        mo,
        d,
        us_of_day,
        offset_min,
        precision,
    })
}

impl Parts {
    fn start(&self) -> Time {
        Time(
            days_from_civil(self.y, self.mo, self.d) * US_PER_DAY + self.us_of_day
                - self.offset_min * US_PER_MIN,
        )
    }
    /// The end (exclusive) of the period the text names.
    fn end(&self) -> Time {
        let start = self.start();
        let next_month = |y: i64, m: u32| if m == 12 { (y + 1, 1) } else { (y, m + 1) };
        match self.precision {
            Precision::Year => Time::from_days(days_from_civil(self.y + 1, 1, 1)),
            Precision::Month => {
                let (y, m) = next_month(self.y, self.mo);
                Time::from_days(days_from_civil(y, m, 1))
            }
            Precision::Day => Time(start.0 + US_PER_DAY),
            Precision::Hour => Time(start.0 + US_PER_HOUR),
            Precision::Minute => Time(start.0 + US_PER_MIN),
            Precision::Second => Time(start.0 + US_PER_SEC),
            Precision::Fraction(n) => Time(start.0 + 10i64.pow(6 - n)),
        }
    }
}

/// The period an ISO text names, half-open `[start, end)`: `2019` is the whole year,
/// `2019-06` the month, `2019-06-01` the day, `2019-06-01T10:30` the minute (as pandas and
/// xarray's `.sel` read partial dates). Strict: `2019-01-01T25:00:00` or `2019-1-1` is an error.
pub fn parse_period(s: &str) -> Result<(Time, Time), TimeError> {
    let p = parse_parts(s, true).map_err(|why| TimeError {
        text: s.to_string(),
        why,
    })?;
    Ok((p.start(), p.end()))
}

/// The start of the period an ISO text names (`2019` → 2019-01-01T00:00).
pub fn parse_time(s: &str) -> Result<Time, TimeError> {
    parse_period(s).map(|(a, _)| a)
}

/// A `--time` selection, half-open `[start, end)`: `START/END` covers START's period to the
/// end of END's (`2019/2020` is both whole years, `2019-06/2019-08` June to August), and a
/// single period (`2019`, `2019-06`) means that period.
pub fn parse_time_range(spec: &str) -> Result<(Time, Time), TimeError> {
    let bad = |why: String| TimeError {
        text: spec.to_string(),
        why,
    };
    match spec.split_once('/') {
        None => parse_period(spec),
        Some((a, b)) => {
            if a.trim().is_empty() || b.trim().is_empty() {
                return Err(bad("expected START/END or one period such as 2019".into()));
            }
            let (start, _) = parse_period(a)?;
            let (_, end) = parse_period(b)?;
            Ok((start, end))
        }
    }
}

/// The unit of a CF time coordinate, as a rational number of microseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unit {
    /// Microseconds per unit (numerator).
    us: i64,
    /// Divisor (1000 for nanoseconds).
    div: i64,
}

/// CF time units: `<unit> since <reference>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CfUnits {
    unit: Unit,
    /// The reference instant, time of day and offset included.
    pub epoch: Time,
}

fn unit_of(name: &str) -> Option<Unit> {
    let us = |us| Some(Unit { us, div: 1 });
    match name.to_ascii_lowercase().as_str() {
        "weeks" | "week" => us(7 * US_PER_DAY),
        "days" | "day" | "d" => us(US_PER_DAY),
        "hours" | "hour" | "hrs" | "hr" | "h" => us(US_PER_HOUR),
        "minutes" | "minute" | "mins" | "min" => us(US_PER_MIN),
        "seconds" | "second" | "secs" | "sec" | "s" => us(US_PER_SEC),
        "milliseconds" | "millisecond" | "msecs" | "msec" | "ms" => us(1000),
        "microseconds" | "microsecond" | "usecs" | "usec" | "us" => us(1),
        "nanoseconds" | "nanosecond" | "nsecs" | "nsec" | "ns" => Some(Unit { us: 1, div: 1000 }),
        _ => None,
    }
}

impl CfUnits {
    /// Parse `days since 1970-01-01`, `hours since 2019-07-01 12:00:00`,
    /// `seconds since 1970-01-01T00:00:00Z`, …
    pub fn parse(units: &str) -> Result<CfUnits, TimeError> {
        let bad = |why: String| TimeError {
            text: units.to_string(),
            why,
        };
        let (unit, since) = units
            .trim()
            .split_once(" since ")
            .ok_or_else(|| bad("expected CF units '<unit> since <date>'".into()))?;
        let unit = unit_of(unit.trim()).ok_or_else(|| {
            bad(format!(
                "unknown unit '{}' (days, hours, minutes, seconds, milliseconds, microseconds, nanoseconds)",
                unit.trim()
            ))
        })?;
        let epoch = parse_parts(since, false)
            .map_err(|why| bad(format!("reference date: {why}")))?
            .start();
        Ok(CfUnits { unit, epoch })
    }

    /// The instant of an integer coordinate value; `None` beyond ±292,000 years.
    pub fn decode_i64(&self, v: i64) -> Option<Time> {
        let d = if self.unit.div == 1 {
            v.checked_mul(self.unit.us)?
        } else {
            v.div_euclid(self.unit.div)
        };
        self.epoch.0.checked_add(d).map(Time)
    }

    /// The instant of a float coordinate value (rounded to the microsecond); `None` for NaN,
    /// infinities and values beyond ±292,000 years.
    pub fn decode_f64(&self, v: f64) -> Option<Time> {
        let us = (v * self.unit.us as f64 / self.unit.div as f64).round();
        if !us.is_finite() || us.abs() >= 9.0e18 {
            return None;
        }
        self.epoch.0.checked_add(us as i64).map(Time)
    }
}

/// CF units and integer values for writing `times`: `days since 1970-01-01` when every
/// step is a midnight (what chunkcube always wrote), else the coarsest of hours, minutes,
/// seconds, milliseconds and microseconds that holds every step exactly.
pub fn encode_times(times: &[Time]) -> (String, Vec<i64>) {
    let units = [
        ("days", US_PER_DAY),
        ("hours", US_PER_HOUR),
        ("minutes", US_PER_MIN),
        ("seconds", US_PER_SEC),
        ("milliseconds", 1000),
        ("microseconds", 1),
    ];
    let (name, per) = units
        .into_iter()
        .find(|(_, per)| times.iter().all(|t| t.0 % per == 0))
        .unwrap_or(("microseconds", 1));
    (
        format!("{name} since 1970-01-01"),
        times.iter().map(|t| t.0 / per).collect(),
    )
}

/// ISO date `YYYY-MM-DD` of a day count since 1970-01-01.
pub fn days_to_iso(days: i64) -> String {
    Time::from_days(days).date_iso()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn t(s: &str) -> Time {
        parse_time(s).unwrap()
    }

    #[test]
    fn round_trips_known_dates() {
        assert_eq!(t("1970-01-01"), Time::EPOCH);
        // numpy: datetime64('2019-01-01') = 17897 days
        assert_eq!(t("2019"), Time::from_days(17897));
        assert_eq!(t("2020-03-01").days(), 18322);
        assert_eq!(days_to_iso(18322), "2020-03-01");
        assert_eq!(Time::from_days(18322).to_iso(), "2020-03-01");
        // numpy: datetime64('2019-07-02T08:27:41.024', 'us').astype(int)
        assert_eq!(t("2019-07-02T08:27:41.024").micros(), 1_562_056_061_024_000);
        assert_eq!(
            t("2019-07-02T08:27:41.024").to_iso(),
            "2019-07-02T08:27:41.024"
        );
        assert_eq!(t("2019-07-02T10:30").to_iso(), "2019-07-02T10:30:00");
        assert_eq!(t("2019-07-02T10:30+02:00").to_iso(), "2019-07-02T08:30:00");
        assert_eq!(t("2019-07-02T10:30Z"), t("2019-07-02 10:30"));
        assert_eq!(Time::from_micros(-1).to_iso(), "1969-12-31T23:59:59.999999");
    }

    #[test]
    fn strict_iso_rejects_what_is_not_a_date() {
        for bad in [
            "2019-01-01T25:00:00",
            "2019-01-01T23:60",
            "2019-01-01T23:59:60",
            "2019-02-30",
            "2019-13",
            "2019-1-1",
            "19",
            "20x9",
            "",
            "2019-01-01T",
            "2019-01-01T10:",
            "2019T10:00",
            "2019-01-01 junk",
            "2019-01-01T10:00+25:00",
            "yesterday",
        ] {
            assert!(parse_period(bad).is_err(), "'{bad}' should not parse");
        }
        let e = parse_time("2019-01-01T25:00:00").unwrap_err().to_string();
        assert!(e.contains("hour 25"), "{e}");
    }

    #[test]
    fn periods_cover_their_whole_span() {
        let p = |s: &str| parse_period(s).unwrap();
        assert_eq!(p("2019"), (t("2019-01-01"), t("2020-01-01")));
        assert_eq!(p("2019-12"), (t("2019-12-01"), t("2020-01-01")));
        assert_eq!(p("2020-02"), (t("2020-02-01"), t("2020-03-01")));
        assert_eq!(p("2019-07-02"), (t("2019-07-02"), t("2019-07-03")));
        assert_eq!(
            p("2019-07-02T10"),
            (t("2019-07-02T10:00"), t("2019-07-02T11:00"))
        );
        assert_eq!(
            p("2019-07-02T10:30:05.5"),
            (t("2019-07-02T10:30:05.5"), t("2019-07-02T10:30:05.6"))
        );
        let r = |s: &str| parse_time_range(s).unwrap();
        assert_eq!(r("2019/2020"), (t("2019-01-01"), t("2021-01-01")));
        assert_eq!(r("2019"), (t("2019-01-01"), t("2020-01-01")));
        assert_eq!(r("2019-06/2019-08"), (t("2019-06-01"), t("2019-09-01")));
        assert_eq!(
            r("2019-07-02/2019-07-02"),
            (t("2019-07-02"), t("2019-07-03"))
        );
        for bad in ["2019/", "/2020", "2019/2020/2021", "2019/20"] {
            assert!(parse_time_range(bad).is_err(), "'{bad}'");
        }
    }

    #[test]
    fn cf_units_keep_the_reference_time_of_day() {
        // xarray writes sub-daily steps against the first one.
        let u = CfUnits::parse("hours since 2019-07-01 12:00:00").unwrap();
        assert_eq!(u.decode_i64(12).unwrap(), t("2019-07-02"));
        assert_eq!(u.decode_i64(12).unwrap().to_iso(), "2019-07-02");
        assert_eq!(u.decode_i64(0).unwrap().to_iso(), "2019-07-01T12:00:00");
        assert_eq!(u.decode_f64(1.5).unwrap().to_iso(), "2019-07-01T13:30:00");
        let u = CfUnits::parse("days since 1970-1-1 0:0:0").unwrap();
        assert_eq!(u.decode_i64(17897).unwrap(), t("2019"));
        let u = CfUnits::parse("seconds since 1970-01-01T00:00:00Z").unwrap();
        assert_eq!(u.decode_i64(86400).unwrap(), Time::from_days(1));
        let u = CfUnits::parse("nanoseconds since 1970-01-01").unwrap();
        assert_eq!(u.decode_i64(1_500).unwrap(), Time::from_micros(1));
        let u = CfUnits::parse("milliseconds since 2000-01-01 00:00:00 UTC").unwrap();
        assert_eq!(
            u.decode_i64(1).unwrap(),
            Time::from_micros(t("2000").micros() + 1000)
        );
        assert!(u.decode_i64(i64::MAX).is_none());
        assert!(u.decode_f64(f64::NAN).is_none());
        for bad in [
            "days",
            "fortnights since 2000-01-01",
            "days since yesterday",
            "days since 2019-01-01T25:00",
        ] {
            assert!(CfUnits::parse(bad).is_err(), "'{bad}'");
        }
    }

    #[test]
    fn encoding_picks_the_coarsest_exact_unit() {
        let days = [t("2019"), t("2020")];
        assert_eq!(
            encode_times(&days),
            ("days since 1970-01-01".into(), vec![17897, 18262])
        );
        let sub = [t("2019-07-01T12:00"), t("2019-07-02")];
        let (u, v) = encode_times(&sub);
        assert_eq!(u, "hours since 1970-01-01");
        let cf = CfUnits::parse(&u).unwrap();
        assert_eq!(
            v.iter()
                .map(|x| cf.decode_i64(*x).unwrap())
                .collect::<Vec<_>>(),
            sub
        );
    }

    proptest! {
        /// Any text: a period or an error, never a panic; a period is never empty.
        #[test]
        fn parsing_never_panics(s in "\\PC{0,30}") {
            if let Ok((a, b)) = parse_time_range(&s) {
                prop_assert!(a < b || s.contains('/'));
            }
            let _ = CfUnits::parse(&s);
        }

        /// Printed instants parse back to themselves; encoded steps decode to themselves.
        #[test]
        fn iso_and_cf_round_trip(us in -10_000_000_000_000_000i64..10_000_000_000_000_000i64) {
            let x = Time::from_micros(us);
            let text = x.to_iso();
            prop_assert_eq!(parse_time(&text).unwrap(), x, "{}", text);
            let (u, v) = encode_times(&[x]);
            prop_assert_eq!(CfUnits::parse(&u).unwrap().decode_i64(v[0]), Some(x));
        }
    }
}
