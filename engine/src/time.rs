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
/// Every delta on the stream carries a few of these: the fields are written directly
/// rather than through a parsed format description (several times faster).
pub fn to_rfc3339(ms: UnixMillis) -> String {
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

pub fn parse_rfc3339(s: &str) -> Option<UnixMillis> {
    let t = OffsetDateTime::parse(s, &Rfc3339).ok()?;
    Some((t.unix_timestamp_nanos() / 1_000_000) as i64)
}

/// Serde helper: a `UnixMillis` field rendered as RFC 3339 text.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::to_rfc3339(*ms))
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
            Some(ms) => s.serialize_some(&super::to_rfc3339(*ms)),
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
}
