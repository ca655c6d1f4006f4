//! Dates and timestamps as bank exports write them: ISO, `YYMMDD` / `YYYYMMDD` (as text or as
//! integers that lost their leading zero), or any chrono pattern; two-digit years by a stated
//! century rule.

use chrono::{Datelike, NaiveDate, NaiveDateTime, NaiveTime};

/// A date/timestamp column's format, checked once when the column is set up.
#[derive(Debug, Clone, PartialEq)]
pub enum DateFormat {
    Iso,
    Yymmdd,
    Yyyymmdd,
    /// A chrono pattern (`%d.%m.%Y`); `two_digit_year` when it has `%y`.
    Pattern {
        pattern: String,
        two_digit_year: bool,
    },
}

impl DateFormat {
    pub fn parse(format: Option<&str>) -> Result<Self, String> {
        Ok(match format.map(str::trim) {
            None | Some("iso") => DateFormat::Iso,
            Some("yymmdd") => DateFormat::Yymmdd,
            Some("yyyymmdd") => DateFormat::Yyyymmdd,
            Some(p) if p.contains('%') => DateFormat::Pattern {
                pattern: p.to_string(),
                two_digit_year: p.contains("%y"),
            },
            Some(other) => {
                return Err(format!(
                    "unknown date format '{other}': use iso, yymmdd, yyyymmdd or a chrono pattern such as %d.%m.%Y"
                ));
            }
        })
    }

    fn has_two_digit_year(&self) -> bool {
        matches!(
            self,
            DateFormat::Yymmdd
                | DateFormat::Pattern {
                    two_digit_year: true,
                    ..
                }
        )
    }
}

/// A two-digit year in its century: the declared one, else POSIX's rule (69-99 are 1969-1999,
/// 00-68 are 2000-2068).
fn full_year(yy: i32, century: Option<i32>) -> i32 {
    match century {
        Some(c) => c + yy,
        None if yy >= 69 => 1900 + yy,
        None => 2000 + yy,
    }
}

/// `930705`, or `10203` for 2001-02-03 written as an integer: the digits, zero-padded.
fn digits(text: &str, width: usize) -> Option<String> {
    let t = text.trim();
    (!t.is_empty() && t.len() <= width && t.bytes().all(|b| b.is_ascii_digit()))
        .then(|| format!("{t:0>width$}"))
}

fn ymd(y: i32, m: &str, d: &str) -> Option<NaiveDate> {
    NaiveDate::from_ymd_opt(y, m.parse().ok()?, d.parse().ok()?)
}

/// A date-time read from text in `format`; a date alone is at midnight.
pub fn parse_datetime(
    text: &str,
    format: &DateFormat,
    century: Option<i32>,
) -> Option<NaiveDateTime> {
    let t = text.trim();
    let parsed = match format {
        DateFormat::Yymmdd => {
            let d = digits(t, 6)?;
            ymd(full_year(d[..2].parse().ok()?, century), &d[2..4], &d[4..6])
                .map(|d| d.and_time(NaiveTime::MIN))
        }
        DateFormat::Yyyymmdd => {
            let d = digits(t, 8)?;
            ymd(d[..4].parse().ok()?, &d[4..6], &d[6..8]).map(|d| d.and_time(NaiveTime::MIN))
        }
        DateFormat::Iso => {
            let patterns = [
                "%Y-%m-%d %H:%M:%S%.f",
                "%Y-%m-%dT%H:%M:%S%.f",
                "%Y-%m-%d %H:%M",
            ];
            patterns
                .iter()
                .find_map(|p| NaiveDateTime::parse_from_str(t, p).ok())
                .or_else(|| {
                    NaiveDate::parse_from_str(t, "%Y-%m-%d")
                        .ok()
                        .map(|d| d.and_time(NaiveTime::MIN))
                })
        }
        DateFormat::Pattern { pattern, .. } => {
            NaiveDateTime::parse_from_str(t, pattern).ok().or_else(|| {
                NaiveDate::parse_from_str(t, pattern)
                    .ok()
                    .map(|d| d.and_time(NaiveTime::MIN))
            })
        }
    }?;
    // chrono reads `%y` with its own pivot; a declared century wins over it.
    match (format, century) {
        (DateFormat::Pattern { .. }, Some(c)) if format.has_two_digit_year() => {
            parsed.with_year(c + parsed.year().rem_euclid(100))
        }
        (DateFormat::Pattern { .. }, None) if format.has_two_digit_year() => {
            parsed.with_year(full_year(parsed.year().rem_euclid(100), None))
        }
        _ => Some(parsed),
    }
}

/// An Excel serial date (days since 1899-12-30, the fraction the time of day).
pub fn from_excel_serial(serial: f64) -> Option<NaiveDateTime> {
    let epoch = NaiveDate::from_ymd_opt(1899, 12, 30)?.and_time(NaiveTime::MIN);
    let millis = (serial * 86_400_000.0).round() as i64;
    epoch.checked_add_signed(chrono::Duration::milliseconds(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn date(text: &str, format: Option<&str>, century: Option<i32>) -> Option<NaiveDate> {
        parse_datetime(text, &DateFormat::parse(format).unwrap(), century).map(|d| d.date())
    }

    fn d(y: i32, m: u32, day: u32) -> Option<NaiveDate> {
        NaiveDate::from_ymd_opt(y, m, day)
    }

    #[test]
    fn two_digit_years_follow_the_stated_rule() {
        assert_eq!(date("930705", Some("yymmdd"), None), d(1993, 7, 5));
        assert_eq!(date("680101", Some("yymmdd"), None), d(2068, 1, 1));
        assert_eq!(date("690101", Some("yymmdd"), None), d(1969, 1, 1));
        assert_eq!(date("100203", Some("yymmdd"), Some(1900)), d(1910, 2, 3));
        // An integer that lost its leading zero.
        assert_eq!(date("10203", Some("yymmdd"), None), d(2001, 2, 3));
        assert_eq!(date("960229", Some("yymmdd"), None), d(1996, 2, 29));
        assert_eq!(date("970229", Some("yymmdd"), None), None);
        assert_eq!(date("931307", Some("yymmdd"), None), None);
        assert_eq!(date("9307051", Some("yymmdd"), None), None);
        // chrono's own `%y` pivot (70) gives way to the same rule, and to a declared century.
        assert_eq!(
            date("691107 00:00:00", Some("%y%m%d %H:%M:%S"), None),
            d(1969, 11, 7)
        );
        assert_eq!(date("051107", Some("%y%m%d"), Some(1900)), d(1905, 11, 7));
    }

    #[test]
    fn four_digit_iso_and_patterns() {
        assert_eq!(date("20240229", Some("yyyymmdd"), None), d(2024, 2, 29));
        assert_eq!(date("2024-02-29", None, None), d(2024, 2, 29));
        assert_eq!(date("2024-02-29T10:00:00", None, None), d(2024, 2, 29));
        assert_eq!(date("29.02.2024", Some("%d.%m.%Y"), None), d(2024, 2, 29));
        assert_eq!(date("2024-02-30", None, None), None);
        assert!(DateFormat::parse(Some("dd/mm/yyyy")).is_err());
        assert_eq!(
            from_excel_serial(45351.5).map(|d| d.to_string()).as_deref(),
            Some("2024-02-29 12:00:00")
        );
    }
}
