//! Wall-clock time as Unix milliseconds, rendered as RFC 3339 on the wire.

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Milliseconds since the Unix epoch, UTC.
pub type UnixMillis = i64;

pub fn now_millis() -> UnixMillis {
    (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as i64
}

/// RFC 3339 with millisecond precision, e.g. `2026-01-01T00:00:00.000Z`.
///
/// Every delta on the stream and every stored record carries a few of these: see
/// [`Rfc3339`] for the allocation-free form serializers use.
pub fn to_rfc3339(ms: UnixMillis) -> String {
    match Rfc3339Text::new(ms) {
        Some(text) => text.as_str().to_owned(),
        None => slow_rfc3339(ms),
    }
}

/// Times outside years 0000–9999, through the `time` crate (or the number itself when
/// even that cannot represent it).
fn slow_rfc3339(ms: UnixMillis) -> String {
    let nanos = i128::from(ms) * 1_000_000;
    match OffsetDateTime::from_unix_timestamp_nanos(nanos) {
        Ok(t) => {
            let (year, month, day) = t.to_calendar_date();
            let (hour, minute, second, milli) = t.to_hms_milli();
            format!(
                "{year:04}-{:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z",
                u8::from(month)
            )
        }
        Err(_) => ms.to_string(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` written digit by digit into 24 bytes on the stack: no
/// formatter, no allocation (the hot path renders several per message). Years 0–9999.
pub struct Rfc3339Text([u8; 24]);

const MS_PER_DAY: i64 = 86_400_000;

impl Rfc3339Text {
    /// `None` outside years 0000–9999.
    pub fn new(ms: UnixMillis) -> Option<Self> {
        let days = ms.div_euclid(MS_PER_DAY);
        let in_day = ms.rem_euclid(MS_PER_DAY);
        let (year, month, day) = civil_from_days(days);
        if !(0..=9999).contains(&year) {
            return None;
        }
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: i64| {
            for i in (at..at + width).rev() {
                out[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, month);
        put(8, 2, day);
        put(11, 2, in_day / 3_600_000);
        put(14, 2, in_day / 60_000 % 60);
        put(17, 2, in_day / 1000 % 60);
        put(20, 3, in_day % 1000);
        Some(Self(out))
    }

    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

/// `YYYY-MM-DDTHH:MM:SS.mmmZ` exactly, with a valid calendar date and time of day.
fn parse_own_form(b: &[u8]) -> Option<UnixMillis> {
    if b.len() != 24
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'.'
        || b[23] != b'Z'
    {
        return None;
    }
    let number = |from: usize, to: usize| -> Option<i64> {
        b[from..to].iter().try_fold(0i64, |n, &c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    };
    let (year, month, day) = (number(0, 4)?, number(5, 7)?, number(8, 10)?);
    let (hour, minute, second, milli) = (
        number(11, 13)?,
        number(14, 16)?,
        number(17, 19)?,
        number(20, 23)?,
    );
    if !(1..=12).contains(&month)
        || day < 1
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }
    let days = days_from_civil(year, month, day);
    Some(days * MS_PER_DAY + ((hour * 60 + minute) * 60 + second) * 1000 + milli)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let shifted_month = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * shifted_month + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// Proleptic Gregorian (year, month, day) of a day count since 1970-01-01 (Howard
/// Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Serializes `ms` as RFC 3339 text without allocating in the common range.
fn serialize_rfc3339<S: serde::Serializer>(ms: UnixMillis, s: S) -> Result<S::Ok, S::Error> {
    match Rfc3339Text::new(ms) {
        Some(text) => s.serialize_str(text.as_str()),
        None => s.serialize_str(&slow_rfc3339(ms)),
    }
}

pub fn parse_rfc3339(s: &str) -> Option<UnixMillis> {
    // What this server writes (stored records carry it) is read without the general
    // parser; anything else (offsets, other precisions) goes through it.
    if let Some(ms) = parse_own_form(s.as_bytes()) {
        return Some(ms);
    }
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// A time that serializes as RFC 3339 text (for `Option` fields).
struct Millis(UnixMillis);

impl serde::Serialize for Millis {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        serialize_rfc3339(self.0, s)
    }
}

/// Serde helper: a `UnixMillis` field rendered as RFC 3339 text.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        super::serialize_rfc3339(*ms, s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_rfc3339(&s).ok_or_else(|| serde::de::Error::custom("not an RFC 3339 time"))
    }
}

/// Serde helper: an optional `UnixMillis` field rendered as RFC 3339 text or `null`.
pub mod rfc3339_option {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_some(&super::Millis(*ms)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| {
                super::parse_rfc3339(&s)
                    .ok_or_else(|| serde::de::Error::custom("not an RFC 3339 time"))
            })
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_milliseconds() {
        let ms = 1_767_225_600_123;
        let text = to_rfc3339(ms);
        assert_eq!(text, "2026-01-01T00:00:00.123Z");
        assert_eq!(parse_rfc3339(&text), Some(ms));
        assert_eq!(to_rfc3339(1_767_225_600_000), "2026-01-01T00:00:00.000Z");
        assert_eq!(to_rfc3339(1_767_225_600_840), "2026-01-01T00:00:00.840Z");
        assert_eq!(to_rfc3339(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
        assert_eq!(to_rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(to_rfc3339(-1), "1969-12-31T23:59:59.999Z");
        // Out of range for a date: the number, never a panic.
        assert_eq!(to_rfc3339(i64::MAX), i64::MAX.to_string());
    }

    /// The digit-by-digit writer and reader agree with the `time` crate everywhere in
    /// years 0000–9999 (a deterministic spread of instants, leap days and edges).
    #[test]
    fn own_form_matches_the_general_formatter_and_parser() {
        let year_0 = -62_167_219_200_000_i64;
        let year_10000 = 253_402_300_800_000_i64;
        let mut instants = vec![
            year_0,
            year_10000 - 1,
            951_782_400_000,    // 2000-02-29
            4_107_542_399_999,  // 2100-02-28T23:59:59.999
            -2_203_891_200_001, // 1900-02-28T23:59:59.999
        ];
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let span = (year_10000 - year_0) as u64;
            instants.push(year_0 + (x % span) as i64);
        }
        for ms in instants {
            let fast = Rfc3339Text::new(ms).expect("in range");
            assert_eq!(fast.as_str(), slow_rfc3339(ms), "{ms}");
            assert_eq!(parse_own_form(fast.as_str().as_bytes()), Some(ms), "{ms}");
            let general = OffsetDateTime::parse(fast.as_str(), &Rfc3339).expect("valid");
            assert_eq!((general.unix_timestamp_nanos() / 1_000_000) as i64, ms);
        }
        assert!(Rfc3339Text::new(year_0 - 1).is_none());
        assert!(Rfc3339Text::new(year_10000).is_none());
        for bad in [
            "2026-02-29T00:00:00.000Z",
            "2026-13-01T00:00:00.000Z",
            "2026-01-01T24:00:00.000Z",
            "2026-01-01T00:60:00.000Z",
            "2026-01-00T00:00:00.000Z",
            "2026-01-01T00:00:00.00xZ",
        ] {
            assert_eq!(parse_own_form(bad.as_bytes()), None, "{bad}");
        }
        // Other RFC 3339 forms still parse, through the general parser.
        assert_eq!(
            parse_rfc3339("2026-01-01T01:00:00+01:00"),
            Some(1_767_225_600_000)
        );
        assert_eq!(
            parse_rfc3339("2026-01-01T00:00:00Z"),
            Some(1_767_225_600_000)
        );
    }
}
