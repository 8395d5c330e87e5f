//! Java `SimpleDateFormat` date patterns and Java time zone names, as Cloud Elements uses them in URL
//! templates and `datesConfiguration` (`yyyy-MM-dd'T'HH:mm:ss.SSS` in `PST`).
//!
//! chrono has no Java pattern syntax and no well-kept crate converts one, so this module holds the
//! converter: [`JavaDateFormat::compile`] turns a pattern, once, into a list of elements. Every field
//! chrono formats and parses exactly becomes a [`chrono::format::Item`] (numbers, month and weekday
//! names, AM/PM, numeric offsets); the few Java behaviours chrono has no item for are written here by
//! hand: fractions of any width that parse any number of digits, `X` (offset hours or `Z`), `z` (zone
//! short names), quoting, and the Java zone-id table. Time zone rules come from chrono-tz.
//!
//! # Pattern letters
//! | letters | meaning |
//! | --- | --- |
//! | `yyyy` `yyy` `y` / `yy` | year (4 digits zero-padded / unpadded) / two-digit year (parses into 1970–2069) |
//! | `M` `MM` `MMM` `MMMM` (`L` alike) | month: number, 2-digit, `Jan`, `January` |
//! | `d` `dd`, `D` `DDD` | day of month; day of year |
//! | `H` `HH`, `h` `hh`, `a` | hour 0–23; hour 1–12 with `AM`/`PM` |
//! | `m` `mm`, `s` `ss` | minute, second |
//! | `S…` | fraction of a second, see below |
//! | `E` `EEE` / `EEEE`, `u` | `Mon` / `Monday`; day number of week (1 = Monday) |
//! | `X` `XX` `XXX` | ISO offset `-08`, `-0800`, `-08:00`, `Z` at zero |
//! | `Z` | RFC 822 offset `-0800` |
//! | `z` `zz` `zzz` | zone short name `PST`/`PDT`, `UTC`, `GMT-08:00` |
//! | `'text'`, `''` | quoted literal text; a single quote |
//!
//! Any other ASCII letter is a [`PatternError`]; other characters are literal text. Java letters
//! without a chrono equivalent (`G Y w W F k K`, long zone names `zzzz`, odd widths such as `ddd`)
//! are rejected rather than approximated.
//!
//! # Differences from `SimpleDateFormat` (deliberate)
//! - `S` is a fraction of a second (as in `java.time`), not a millisecond count: `.SSS` parses
//!   Revel's `.149863` as 149.863 ms (Java would add 149 863 ms) and Concur's `.14` as 140 ms. A run
//!   of `S` parses any number of digits (beyond 9 they are ignored) and formats exactly as many digits
//!   as letters, truncating. When a `.` precedes the `S`s, the whole fraction may be absent
//!   (`…:56` parses with `…:ss.SSS`).
//! - Text left over after the pattern is an error (Java silently ignores it); surrounding whitespace
//!   is ignored.
//! - A local time in a DST fold resolves to the earlier instant (Java: the later, standard time).
//!
//! Fields the pattern lacks default as in Java, to 1970-01-01 00:00:00.
//!
//! # Time zones and DST
//! [`Zone::parse`] accepts `UTC`, `GMT`, `Z`, IANA names (`America/Los_Angeles`, `CET`), the JDK's
//! legacy three-letter ids from `java.time.ZoneId.SHORT_IDS` (`PST` → `America/Los_Angeles` with DST,
//! `EST` → fixed `-05:00`, …) and fixed offsets (`-8:00`, `+05:30`, `GMT-08:00`, `UTC+1`).
//!
//! A value without an offset is a local time in the zone (see [`Zone::resolve_local`]):
//! - in a **gap** (spring forward) it is read with the offset in force before the gap, so it moves
//!   forward by the gap's length, as `java.util.Calendar`'s lenient mode does: 02:30 on
//!   2024-03-10 in Los Angeles is 03:30 PDT (10:30 UTC);
//! - in a **fold** (fall back) it is the earlier instant: 01:30 on 2024-11-03 in Los Angeles is
//!   01:30 PDT (08:30 UTC). For a poll cursor the earlier reading is the safe one: it re-reads a
//!   little, it never skips.
//!
//! A value with an offset (`X`, `Z`) or a zone name (`z`) uses that instead of the configured zone.
//! A `z` field reads common abbreviations as the fixed offset they name (`PST` -08:00, `PDT`
//! -07:00, `CEST` +02:00, …), `GMT±hh:mm`, and anything [`Zone::parse`] knows.
//!
//! The JDK table is the classic one (JDK 8 to 22); newer JDKs map `EST`, `MST`, `HST` to
//! `America/Panama`, `America/Phoenix`, `Pacific/Honolulu`, which have had the same fixed offsets
//! since long before 1970.
//!
//! # Sentinels
//! Vendors write "no date" as `0001-01-01T00:00:00` and similar. [`JavaDateFormat::parse_optional`]
//! answers `Ok(None)` for an empty value, for a local date in year 1 or earlier, and — only when
//! enabled with [`JavaDateFormat::with_epoch_sentinel`] — for the Unix epoch (as an instant or as
//! the local time `1970-01-01 00:00:00`). [`JavaDateFormat::parse`] has no sentinels.

use std::fmt::{self, Write as _};
use std::str::FromStr;

use chrono::format::{
    parse_and_remainder, Fixed, Item, Numeric, Pad, ParseErrorKind, Parsed, StrftimeItems,
};
use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, NaiveDateTime, Offset, TimeDelta, TimeZone,
    Timelike, Utc,
};
use chrono_tz::{OffsetName, Tz};

/// Longest value or name quoted in an error message.
const MAX_QUOTED: usize = 80;

/// The JDK's `java.time.ZoneId.SHORT_IDS`: legacy three-letter zone ids and what they mean.
const SHORT_IDS: &[(&str, &str)] = &[
    ("ACT", "Australia/Darwin"),
    ("AET", "Australia/Sydney"),
    ("AGT", "America/Argentina/Buenos_Aires"),
    ("ART", "Africa/Cairo"),
    ("AST", "America/Anchorage"),
    ("BET", "America/Sao_Paulo"),
    ("BST", "Asia/Dhaka"),
    ("CAT", "Africa/Harare"),
    ("CNT", "America/St_Johns"),
    ("CST", "America/Chicago"),
    ("CTT", "Asia/Shanghai"),
    ("EAT", "Africa/Addis_Ababa"),
    ("ECT", "Europe/Paris"),
    ("IET", "America/Indiana/Indianapolis"),
    ("IST", "Asia/Kolkata"),
    ("JST", "Asia/Tokyo"),
    ("MIT", "Pacific/Apia"),
    ("NET", "Asia/Yerevan"),
    ("NST", "Pacific/Auckland"),
    ("PLT", "Asia/Karachi"),
    ("PNT", "America/Phoenix"),
    ("PRT", "America/Puerto_Rico"),
    ("PST", "America/Los_Angeles"),
    ("SST", "Pacific/Guadalcanal"),
    ("VST", "Asia/Ho_Chi_Minh"),
    ("EST", "-05:00"),
    ("MST", "-07:00"),
    ("HST", "-10:00"),
];

/// Zone abbreviations a `z` field may hold in a value, with the offset each one names (in hours
/// and minutes). Names not listed here are looked up with [`Zone::parse`].
const ABBREVIATIONS: &[(&str, i32, i32)] = &[
    ("UTC", 0, 0),
    ("GMT", 0, 0),
    ("UT", 0, 0),
    ("Z", 0, 0),
    ("WET", 0, 0),
    ("WEST", 1, 0),
    ("BST", 1, 0),
    ("CET", 1, 0),
    ("CEST", 2, 0),
    ("MET", 1, 0),
    ("MEST", 2, 0),
    ("EET", 2, 0),
    ("EEST", 3, 0),
    ("MSK", 3, 0),
    ("JST", 9, 0),
    ("KST", 9, 0),
    ("HKT", 8, 0),
    ("AWST", 8, 0),
    ("ACST", 9, 30),
    ("ACDT", 10, 30),
    ("AEST", 10, 0),
    ("AEDT", 11, 0),
    ("NZST", 12, 0),
    ("NZDT", 13, 0),
    ("HST", -10, 0),
    ("AKST", -9, 0),
    ("AKDT", -8, 0),
    ("PST", -8, 0),
    ("PDT", -7, 0),
    ("MST", -7, 0),
    ("MDT", -6, 0),
    ("CST", -6, 0),
    ("CDT", -5, 0),
    ("EST", -5, 0),
    ("EDT", -4, 0),
    ("AST", -4, 0),
    ("ADT", -3, 0),
];

/// A time zone: UTC, a zone with rules (DST) from the IANA database, or a fixed offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Zone {
    /// UTC (also `GMT` and `Z`).
    #[default]
    Utc,
    /// An IANA zone with its DST rules, e.g. `America/Los_Angeles` (Java's `PST`).
    Named(Tz),
    /// A fixed offset from UTC, e.g. `-08:00` (Java's `EST` is `-05:00`).
    Fixed(FixedOffset),
}

impl Zone {
    /// Reads a zone name: `UTC`, `GMT`, `Z`; an IANA name (`America/Los_Angeles`, `CET`); a JDK
    /// legacy three-letter id (`PST`, `CST`, `EST`, … as in `java.time.ZoneId.SHORT_IDS`); or a
    /// fixed offset, optionally after `GMT`/`UTC`/`UT` (`-8:00`, `+05:30`, `+0530`, `GMT-08:00`,
    /// `UTC+1`, at most 18 hours). Unknown names are errors (Java would silently use GMT).
    pub fn parse(name: &str) -> Result<Zone, ZoneError> {
        let trimmed = name.trim();
        if ["UTC", "GMT", "Z", "UT"]
            .iter()
            .any(|utc| trimmed.eq_ignore_ascii_case(utc))
        {
            return Ok(Zone::Utc);
        }
        if let Some(offset) = parse_offset_zone(trimmed)? {
            return Ok(Zone::Fixed(offset));
        }
        if let Some((_, target)) = SHORT_IDS
            .iter()
            .find(|(id, _)| trimmed.eq_ignore_ascii_case(id))
        {
            return Zone::parse(target);
        }
        match Tz::from_str(trimmed) {
            Ok(tz) => Ok(Zone::Named(tz)),
            Err(_) => Err(ZoneError::Unknown { name: clip(name) }),
        }
    }

    /// The offset from UTC in force at `instant`.
    pub fn offset_at(&self, instant: DateTime<Utc>) -> FixedOffset {
        match self {
            Zone::Utc => Utc.fix(),
            Zone::Named(tz) => tz.offset_from_utc_datetime(&instant.naive_utc()).fix(),
            Zone::Fixed(offset) => *offset,
        }
    }

    /// `instant` as local time in this zone.
    pub fn local(&self, instant: DateTime<Utc>) -> DateTime<FixedOffset> {
        instant.with_timezone(&self.offset_at(instant))
    }

    /// The instant a local time in this zone names. A time in a DST gap is read with the offset in
    /// force just before the gap (it moves forward by the gap's length); a time in a fold is the
    /// earlier of its two instants. `None` only when the result is outside chrono's range.
    pub fn resolve_local(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        let offset = match self {
            Zone::Utc => return Some(local.and_utc()),
            Zone::Fixed(offset) => *offset,
            Zone::Named(tz) => match tz.offset_from_local_datetime(&local) {
                LocalResult::Single(offset) | LocalResult::Ambiguous(offset, _) => offset.fix(),
                LocalResult::None => offset_before_gap(tz, local),
            },
        };
        offset
            .from_local_datetime(&local)
            .single()
            .map(|t| t.to_utc())
    }

    /// The short name Java's `z` prints: `PST`/`PDT`, `UTC`, or `GMT-08:00` where the zone has no
    /// alphabetic abbreviation.
    fn short_name(&self, instant: DateTime<Utc>) -> String {
        match self {
            Zone::Utc => "UTC".to_owned(),
            Zone::Named(tz) => {
                let offset = tz.offset_from_utc_datetime(&instant.naive_utc());
                match offset.abbreviation() {
                    Some(name) if name.starts_with(|c: char| c.is_ascii_alphabetic()) => {
                        name.to_owned()
                    }
                    _ => gmt_offset_name(offset.fix()),
                }
            }
            Zone::Fixed(offset) => gmt_offset_name(*offset),
        }
    }
}

impl FromStr for Zone {
    type Err = ZoneError;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Zone::parse(name)
    }
}

impl fmt::Display for Zone {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Zone::Utc => f.write_str("UTC"),
            Zone::Named(tz) => f.write_str(tz.name()),
            Zone::Fixed(offset) => write!(f, "{offset}"),
        }
    }
}

/// The offset in force just before the DST gap that swallowed `local`: step back until a local
/// time exists (gaps are at most a day long, Samoa 2011).
fn offset_before_gap(tz: &Tz, local: NaiveDateTime) -> FixedOffset {
    let mut probe = local;
    for _ in 0..(26 * 4) {
        probe = match probe.checked_sub_signed(TimeDelta::minutes(15)) {
            Some(earlier) => earlier,
            None => break,
        };
        match tz.offset_from_local_datetime(&probe) {
            LocalResult::Single(offset) | LocalResult::Ambiguous(_, offset) => return offset.fix(),
            LocalResult::None => {}
        }
    }
    tz.offset_from_utc_datetime(&local).fix()
}

/// `GMT-08:00` as Java prints a custom zone.
fn gmt_offset_name(offset: FixedOffset) -> String {
    let seconds = offset.local_minus_utc();
    let sign = if seconds < 0 { '-' } else { '+' };
    let minutes = seconds.unsigned_abs() / 60;
    format!("GMT{sign}{:02}:{:02}", minutes / 60, minutes % 60)
}

/// Reads `[GMT|UTC|UT]±H[H][[:]MM]`; `Ok(None)` when `name` is no offset at all.
fn parse_offset_zone(name: &str) -> Result<Option<FixedOffset>, ZoneError> {
    let body = ["GMT", "UTC", "UT"]
        .iter()
        .find_map(|prefix| strip_prefix_ignore_case(name, prefix))
        .unwrap_or(name);
    let (negative, digits) = match body.as_bytes().first() {
        Some(b'+') => (false, &body[1..]),
        Some(b'-') => (true, &body[1..]),
        _ => return Ok(None),
    };
    let unknown = || ZoneError::Unknown { name: clip(name) };
    if !digits.bytes().all(|b| b.is_ascii_digit() || b == b':') {
        return Err(unknown());
    }
    let (hours, minutes) = match digits.split_once(':') {
        Some((hours, minutes)) => (hours, minutes),
        None if digits.len() > 2 => digits.split_at(digits.len().saturating_sub(2)),
        None => (digits, "00"),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if !(1..=2).contains(&hours.len())
        || minutes.len() != 2
        || !all_digits(hours)
        || !all_digits(minutes)
    {
        return Err(unknown());
    }
    let hours: i32 = hours.parse().map_err(|_| unknown())?;
    let minutes: i32 = minutes.parse().map_err(|_| unknown())?;
    let seconds = hours * 3600 + minutes * 60;
    if minutes > 59 || seconds > 18 * 3600 {
        return Err(ZoneError::OffsetOutOfRange { name: clip(name) });
    }
    let seconds = if negative { -seconds } else { seconds };
    FixedOffset::east_opt(seconds)
        .map(Some)
        .ok_or_else(|| ZoneError::OffsetOutOfRange { name: clip(name) })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// A zone name that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ZoneError {
    /// Neither UTC, an IANA name, a Java short id nor an offset.
    #[error("unknown time zone '{name}' (expected UTC, GMT, an IANA name such as America/Los_Angeles, a Java short id such as PST, or an offset such as -08:00)")]
    Unknown {
        /// The name as given (shortened when long).
        name: String,
    },
    /// An offset beyond ±18:00 or with minutes beyond 59.
    #[error("time zone offset '{name}' is out of range (at most 18 hours, minutes below 60)")]
    OffsetOutOfRange {
        /// The name as given (shortened when long).
        name: String,
    },
}

/// A Java date pattern that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    /// The pattern has no date or time field (it is empty or only literal text).
    #[error("date pattern '{pattern}' has no date or time fields")]
    NoFields {
        /// The pattern.
        pattern: String,
    },
    /// A letter that is no Java pattern letter (Java reserves all ASCII letters; quote text as `'T'`).
    #[error("unknown letter '{letter}' at offset {offset} in date pattern '{pattern}' (quote literal text, e.g. 'T')")]
    UnknownLetter {
        /// The letter.
        letter: char,
        /// Its byte offset in the pattern.
        offset: usize,
        /// The pattern.
        pattern: String,
    },
    /// A Java pattern letter this implementation does not support.
    #[error("unsupported letter '{letter}' at offset {offset} in date pattern '{pattern}' (supported: y M L d D H h a m s S E u X Z z)")]
    UnsupportedLetter {
        /// The letter.
        letter: char,
        /// Its byte offset in the pattern.
        offset: usize,
        /// The pattern.
        pattern: String,
    },
    /// A supported letter repeated a number of times that is not supported, e.g. `ddd`.
    #[error("unsupported width '{letters}' at offset {offset} in date pattern '{pattern}'")]
    UnsupportedWidth {
        /// The run of letters.
        letters: String,
        /// Its byte offset in the pattern.
        offset: usize,
        /// The pattern.
        pattern: String,
    },
    /// A `'` that opens quoted text is never closed.
    #[error("unterminated quote at offset {offset} in date pattern '{pattern}'")]
    UnterminatedQuote {
        /// Byte offset of the opening quote.
        offset: usize,
        /// The pattern.
        pattern: String,
    },
}

/// A vendor date that does not match its pattern.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DateParseError {
    /// The text at `offset` is not what the pattern expects there.
    #[error(
        "date '{value}' does not match pattern '{pattern}': expected {expected} at offset {offset}"
    )]
    Mismatch {
        /// The value (shortened when long).
        value: String,
        /// The pattern.
        pattern: String,
        /// What the pattern expects, e.g. `'MM'` or `'-'`.
        expected: String,
        /// Byte offset in the value.
        offset: usize,
    },
    /// A field holds a number out of its range, e.g. month 13.
    #[error("date '{value}' has a value out of range for {field} at offset {offset} (pattern '{pattern}')")]
    OutOfRange {
        /// The value (shortened when long).
        value: String,
        /// The pattern.
        pattern: String,
        /// The field, e.g. `'MM'`.
        field: String,
        /// Byte offset in the value.
        offset: usize,
    },
    /// The fields match but name no date or time, e.g. `2024-02-30`, or a wrong weekday.
    #[error("date '{value}' is not a valid date or time (pattern '{pattern}')")]
    Invalid {
        /// The value (shortened when long).
        value: String,
        /// The pattern.
        pattern: String,
    },
    /// The value goes on after the pattern ends.
    #[error("date '{value}' has unexpected text '{rest}' at offset {offset} after the end of pattern '{pattern}'")]
    TrailingText {
        /// The value (shortened when long).
        value: String,
        /// The pattern.
        pattern: String,
        /// The text left over (shortened when long).
        rest: String,
        /// Byte offset of the leftover text in the value.
        offset: usize,
    },
}

/// One element of a compiled pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    /// Text copied as is.
    Literal(String),
    /// A field chrono formats and parses.
    Chrono {
        format: Item<'static>,
        parse: Item<'static>,
    },
    /// `S…`: a fraction of a second with `digits` digits; `dot` when a `.` precedes it.
    Fraction { digits: usize, dot: bool },
    /// `X`: offset hours, `Z` at zero.
    OffsetHours,
    /// `z`: the zone's short name.
    ZoneName,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Element {
    piece: Piece,
    /// The pattern text it came from, for error messages (`MM`, `'T'`).
    source: String,
}

/// A Java `SimpleDateFormat` pattern compiled once, formatting and parsing dates in a [`Zone`]. See
/// the module documentation for the letters and the deliberate differences from Java.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JavaDateFormat {
    pattern: String,
    elements: Vec<Element>,
    epoch_sentinel: bool,
}

impl JavaDateFormat {
    /// Compiles `pattern`, e.g. `yyyy-MM-dd'T'HH:mm:ss.SSS`.
    pub fn compile(pattern: &str) -> Result<Self, PatternError> {
        let mut elements = Vec::new();
        let mut literal = String::new();
        let mut literal_source = String::new();
        let mut chars = pattern.char_indices().peekable();
        while let Some((offset, c)) = chars.next() {
            if c == '\'' {
                literal_source.push('\'');
                if chars.next_if(|&(_, next)| next == '\'').is_some() {
                    literal_source.push('\'');
                    literal.push('\'');
                    continue;
                }
                loop {
                    match chars.next() {
                        None => {
                            return Err(PatternError::UnterminatedQuote {
                                offset,
                                pattern: pattern.to_owned(),
                            })
                        }
                        Some((_, '\'')) => {
                            literal_source.push('\'');
                            if chars.next_if(|&(_, next)| next == '\'').is_some() {
                                literal_source.push('\'');
                                literal.push('\'');
                            } else {
                                break;
                            }
                        }
                        Some((_, quoted)) => {
                            literal_source.push(quoted);
                            literal.push(quoted);
                        }
                    }
                }
            } else if c.is_ascii_alphabetic() {
                let mut count = 1;
                while chars.next_if(|&(_, next)| next == c).is_some() {
                    count += 1;
                }
                let letters = c.to_string().repeat(count);
                let mut piece = letter_piece(c, count).map_err(|reason| match reason {
                    Reject::Unknown => PatternError::UnknownLetter {
                        letter: c,
                        offset,
                        pattern: pattern.to_owned(),
                    },
                    Reject::Unsupported => PatternError::UnsupportedLetter {
                        letter: c,
                        offset,
                        pattern: pattern.to_owned(),
                    },
                    Reject::Width => PatternError::UnsupportedWidth {
                        letters: letters.clone(),
                        offset,
                        pattern: pattern.to_owned(),
                    },
                })?;
                let mut source = letters;
                if let Piece::Fraction { dot, .. } = &mut piece {
                    if literal.ends_with('.') {
                        literal.pop();
                        literal_source.pop();
                        *dot = true;
                        source.insert(0, '.');
                    }
                }
                flush_literal(&mut elements, &mut literal, &mut literal_source);
                elements.push(Element { piece, source });
            } else {
                literal.push(c);
                literal_source.push(c);
            }
        }
        flush_literal(&mut elements, &mut literal, &mut literal_source);
        if elements
            .iter()
            .all(|element| matches!(element.piece, Piece::Literal(_)))
        {
            return Err(PatternError::NoFields {
                pattern: pattern.to_owned(),
            });
        }
        Ok(JavaDateFormat {
            pattern: pattern.to_owned(),
            elements,
            epoch_sentinel: false,
        })
    }

    /// Makes [`parse_optional`](Self::parse_optional) treat the Unix epoch as "no date" too.
    pub fn with_epoch_sentinel(mut self, enabled: bool) -> Self {
        self.epoch_sentinel = enabled;
        self
    }

    /// The pattern as given.
    pub fn pattern(&self) -> &str {
        &self.pattern
    }

    /// Whether values carry their own offset or zone (`X`, `Z`, `z`), so the configured zone only
    /// matters for formatting.
    pub fn has_zone_field(&self) -> bool {
        self.elements.iter().any(|element| match &element.piece {
            Piece::OffsetHours | Piece::ZoneName => true,
            Piece::Chrono { parse, .. } => is_offset(parse),
            _ => false,
        })
    }

    /// Formats `instant` as local time in `zone`.
    pub fn format(&self, instant: DateTime<Utc>, zone: &Zone) -> String {
        let local = zone.local(instant);
        let mut out = String::with_capacity(self.pattern.len() + 8);
        for element in &self.elements {
            match &element.piece {
                Piece::Literal(text) => out.push_str(text),
                Piece::Chrono { format, .. } => {
                    // Every item compiled here formats a DateTime<FixedOffset>: no error to lose.
                    let _ = write!(out, "{}", local.format_with_items(std::iter::once(format)));
                }
                Piece::Fraction { digits, dot } => {
                    if *dot {
                        out.push('.');
                    }
                    let nanos = format!("{:09}", local.nanosecond() % 1_000_000_000);
                    out.push_str(nanos.get(..*digits).unwrap_or(&nanos));
                    for _ in 9..*digits {
                        out.push('0');
                    }
                }
                Piece::OffsetHours => {
                    let seconds = local.offset().local_minus_utc();
                    if seconds == 0 {
                        out.push('Z');
                    } else {
                        let sign = if seconds < 0 { '-' } else { '+' };
                        let _ = write!(out, "{sign}{:02}", seconds.unsigned_abs() / 3600);
                    }
                }
                Piece::ZoneName => out.push_str(&zone.short_name(instant)),
            }
        }
        out
    }

    /// Parses a vendor date. A value without an offset or zone field is local time in `zone`, with
    /// gaps and folds resolved as [`Zone::resolve_local`] says. Sentinels are ordinary dates here;
    /// see [`parse_optional`](Self::parse_optional).
    pub fn parse(&self, value: &str, zone: &Zone) -> Result<DateTime<Utc>, DateParseError> {
        let fields = self.parse_fields(value)?;
        self.resolve(value, &fields, zone)
    }

    /// Like [`parse`](Self::parse), but `Ok(None)` for "no date": an empty (or all-blank) value, a
    /// local date in year 1 or earlier (`0001-01-01T00:00:00`), and, when
    /// [`with_epoch_sentinel`](Self::with_epoch_sentinel) is on, the Unix epoch as an instant or as
    /// the local time `1970-01-01 00:00:00`.
    pub fn parse_optional(
        &self,
        value: &str,
        zone: &Zone,
    ) -> Result<Option<DateTime<Utc>>, DateParseError> {
        if value.trim().is_empty() {
            return Ok(None);
        }
        let fields = self.parse_fields(value)?;
        if fields.local.year() <= 1 {
            return Ok(None);
        }
        let instant = self.resolve(value, &fields, zone)?;
        if self.epoch_sentinel
            && (instant == DateTime::UNIX_EPOCH || fields.local == DateTime::UNIX_EPOCH.naive_utc())
        {
            return Ok(None);
        }
        Ok(Some(instant))
    }

    fn resolve(
        &self,
        value: &str,
        fields: &Fields,
        zone: &Zone,
    ) -> Result<DateTime<Utc>, DateParseError> {
        let instant = match (fields.offset, fields.zone) {
            (Some(offset), _) => offset
                .from_local_datetime(&fields.local)
                .single()
                .map(|t| t.to_utc()),
            (None, Some(own)) => own.resolve_local(fields.local),
            (None, None) => zone.resolve_local(fields.local),
        };
        instant.ok_or_else(|| DateParseError::Invalid {
            value: clip(value),
            pattern: self.pattern.clone(),
        })
    }

    fn parse_fields(&self, value: &str) -> Result<Fields, DateParseError> {
        let lead = value.len() - value.trim_start().len();
        let trimmed = value.trim();
        let at = |rest: &str| lead + trimmed.len() - rest.len();
        let mut parsed = Parsed::new();
        let mut own_zone = None;
        let mut rest = trimmed;
        for element in &self.elements {
            let mismatch = |rest: &str| DateParseError::Mismatch {
                value: clip(value),
                pattern: self.pattern.clone(),
                expected: format!("'{}'", element.source),
                offset: at(rest),
            };
            let out_of_range = |rest: &str| DateParseError::OutOfRange {
                value: clip(value),
                pattern: self.pattern.clone(),
                field: format!("'{}'", element.source),
                offset: at(rest),
            };
            let chrono_error = |rest: &str, kind: ParseErrorKind| match kind {
                ParseErrorKind::OutOfRange => out_of_range(rest),
                ParseErrorKind::Impossible => DateParseError::Invalid {
                    value: clip(value),
                    pattern: self.pattern.clone(),
                },
                _ => mismatch(rest),
            };
            match &element.piece {
                Piece::Literal(text) => {
                    rest = rest
                        .strip_prefix(text.as_str())
                        .ok_or_else(|| mismatch(rest))?;
                }
                Piece::Chrono { parse, .. } => {
                    rest = parse_and_remainder(&mut parsed, rest, std::iter::once(parse))
                        .map_err(|e| chrono_error(rest, e.kind()))?;
                }
                Piece::OffsetHours => {
                    rest = parse_and_remainder(&mut parsed, rest, std::iter::once(permissive()))
                        .map_err(|e| chrono_error(rest, e.kind()))?;
                }
                Piece::Fraction { dot, .. } => {
                    let digits = if *dot {
                        match rest.strip_prefix('.') {
                            Some(digits) => digits,
                            None => continue, // the whole fraction may be absent
                        }
                    } else {
                        rest
                    };
                    let count = digits.bytes().take_while(u8::is_ascii_digit).count();
                    if count == 0 {
                        return Err(mismatch(rest));
                    }
                    parsed
                        .set_nanosecond(fraction_nanos(&digits[..count]))
                        .map_err(|e| chrono_error(rest, e.kind()))?;
                    rest = &digits[count..];
                }
                Piece::ZoneName => {
                    let (zone, remainder) = parse_zone_name(rest).ok_or_else(|| mismatch(rest))?;
                    own_zone = Some(zone);
                    rest = remainder;
                }
            }
        }
        if !rest.is_empty() {
            return Err(DateParseError::TrailingText {
                value: clip(value),
                pattern: self.pattern.clone(),
                rest: clip(rest),
                offset: at(rest),
            });
        }
        let invalid = |_| DateParseError::Invalid {
            value: clip(value),
            pattern: self.pattern.clone(),
        };
        fill_defaults(&mut parsed).map_err(invalid)?;
        let date = parsed.to_naive_date().map_err(invalid)?;
        let time = parsed.to_naive_time().map_err(invalid)?;
        let offset = match parsed.offset() {
            Some(seconds) => {
                Some(
                    FixedOffset::east_opt(seconds).ok_or_else(|| DateParseError::Invalid {
                        value: clip(value),
                        pattern: self.pattern.clone(),
                    })?,
                )
            }
            None => None,
        };
        Ok(Fields {
            local: date.and_time(time),
            offset,
            zone: own_zone,
        })
    }
}

impl FromStr for JavaDateFormat {
    type Err = PatternError;

    fn from_str(pattern: &str) -> Result<Self, Self::Err> {
        JavaDateFormat::compile(pattern)
    }
}

impl fmt::Display for JavaDateFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.pattern)
    }
}

/// What a value said, before the zone is applied.
struct Fields {
    local: NaiveDateTime,
    offset: Option<FixedOffset>,
    zone: Option<Zone>,
}

enum Reject {
    Unknown,
    Unsupported,
    Width,
}

fn letter_piece(letter: char, count: usize) -> Result<Piece, Reject> {
    use Numeric::*;
    let num = |numeric: Numeric, pad: Pad| -> Result<Piece, Reject> {
        let item = Item::Numeric(numeric, pad);
        Ok(Piece::Chrono {
            format: item.clone(),
            parse: item,
        })
    };
    let fixed = |fixed: Fixed| -> Result<Piece, Reject> {
        let item = Item::Fixed(fixed);
        Ok(Piece::Chrono {
            format: item.clone(),
            parse: item,
        })
    };
    let offset = |fixed: Fixed| -> Result<Piece, Reject> {
        Ok(Piece::Chrono {
            format: Item::Fixed(fixed),
            parse: permissive().clone(),
        })
    };
    let one_or_two = |numeric: Numeric| match count {
        1 => num(numeric, Pad::None),
        2 => num(numeric, Pad::Zero),
        _ => Err(Reject::Width),
    };
    match letter {
        'y' => match count {
            1 | 3 => num(Year, Pad::None),
            2 => num(YearMod100, Pad::Zero),
            4 => num(Year, Pad::Zero),
            _ => Err(Reject::Width),
        },
        'M' | 'L' => match count {
            1 | 2 => one_or_two(Month),
            3 => fixed(Fixed::ShortMonthName),
            _ => fixed(Fixed::LongMonthName),
        },
        'd' => one_or_two(Day),
        'D' => match count {
            1 => num(Ordinal, Pad::None),
            3 => num(Ordinal, Pad::Zero),
            _ => Err(Reject::Width),
        },
        'H' => one_or_two(Hour),
        'h' => one_or_two(Hour12),
        'm' => one_or_two(Minute),
        's' => one_or_two(Second),
        'S' => Ok(Piece::Fraction {
            digits: count,
            dot: false,
        }),
        'a' => fixed(Fixed::UpperAmPm),
        'E' if count <= 3 => fixed(Fixed::ShortWeekdayName),
        'E' => fixed(Fixed::LongWeekdayName),
        'u' if count == 1 => num(WeekdayFromMon, Pad::None),
        'u' => Err(Reject::Width),
        'X' => match count {
            1 => Ok(Piece::OffsetHours),
            2 => offset(Fixed::TimezoneOffsetZ),
            3 => offset(Fixed::TimezoneOffsetColonZ),
            _ => Err(Reject::Width),
        },
        'Z' => offset(Fixed::TimezoneOffset),
        'z' if count <= 3 => Ok(Piece::ZoneName),
        'z' => Err(Reject::Width),
        'G' | 'Y' | 'w' | 'W' | 'F' | 'k' | 'K' => Err(Reject::Unsupported),
        _ => Err(Reject::Unknown),
    }
}

/// chrono's permissive offset parser (`%#z`): `Z`, `+05`, `+0530`, `+05:30`.
fn permissive() -> &'static Item<'static> {
    static PERMISSIVE: std::sync::OnceLock<Item<'static>> = std::sync::OnceLock::new();
    PERMISSIVE.get_or_init(|| {
        StrftimeItems::new("%#z")
            .next()
            .unwrap_or(Item::Fixed(Fixed::TimezoneOffsetColonZ))
    })
}

fn is_offset(item: &Item<'_>) -> bool {
    item == permissive()
}

fn flush_literal(elements: &mut Vec<Element>, literal: &mut String, source: &mut String) {
    if !literal.is_empty() {
        elements.push(Element {
            piece: Piece::Literal(std::mem::take(literal)),
            source: std::mem::take(source),
        });
    }
    source.clear();
}

/// The first nine digits of a fraction as nanoseconds (`14` → 140 000 000).
fn fraction_nanos(digits: &str) -> i64 {
    digits
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(9)
        .fold(0, |nanos, digit| nanos * 10 + i64::from(digit - b'0'))
}

/// Reads a `z` zone: an abbreviation (`PST`, `CEST`), `GMT`/`UTC` with an optional offset, a bare
/// offset, or any name [`Zone::parse`] knows (`America/Los_Angeles`).
fn parse_zone_name(s: &str) -> Option<(Zone, &str)> {
    let name_len = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '_' | '+' | '-' | ':')))
        .unwrap_or(s.len());
    let token = &s[..name_len];
    if token.is_empty() {
        return None;
    }
    let letters = token
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(token.len());
    if letters == token.len() {
        if let Some((_, hours, minutes)) = ABBREVIATIONS.iter().find(|(name, ..)| *name == token) {
            let offset = FixedOffset::east_opt(hours * 3600 + hours.signum() * minutes * 60)?;
            return Some((Zone::Fixed(offset), &s[name_len..]));
        }
    }
    Zone::parse(token).ok().map(|zone| (zone, &s[name_len..]))
}

fn fill_defaults(parsed: &mut Parsed) -> chrono::format::ParseResult<()> {
    if parsed.year().is_none() && parsed.year_div_100().is_none() && parsed.year_mod_100().is_none()
    {
        parsed.set_year(1970)?;
    }
    if parsed.ordinal().is_none() {
        if parsed.month().is_none() {
            parsed.set_month(1)?;
        }
        if parsed.day().is_none() {
            parsed.set_day(1)?;
        }
    }
    match (parsed.hour_div_12(), parsed.hour_mod_12()) {
        (None, None) => parsed.set_hour(0)?,
        (None, Some(_)) => parsed.set_ampm(false)?,
        (Some(_), None) => parsed.set_hour12(12)?,
        (Some(_), Some(_)) => {}
    }
    if parsed.minute().is_none() {
        parsed.set_minute(0)?;
    }
    if parsed.second().is_none() {
        parsed.set_second(0)?;
    }
    Ok(())
}

/// `value`, shortened for an error message.
fn clip(value: &str) -> String {
    if value.len() <= MAX_QUOTED {
        return value.to_owned();
    }
    let mut end = MAX_QUOTED;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &value[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn zone(name: &str) -> Zone {
        Zone::parse(name).unwrap()
    }

    fn fmt(pattern: &str) -> JavaDateFormat {
        JavaDateFormat::compile(pattern).unwrap()
    }

    fn la() -> Zone {
        Zone::Named(chrono_tz::America::Los_Angeles)
    }

    #[test]
    fn seed_dates_configurations_parse_realistic_values() {
        // Revel (seed 002): naive microseconds in PST, here in summer (PDT, -7).
        let revel = fmt("yyyy-MM-dd'T'HH:mm:ss.SSS");
        assert_eq!(
            revel.parse("2018-08-20T17:39:00.149863", &zone("PST")),
            Ok(utc("2018-08-21T00:39:00.149863Z"))
        );
        // ... and in winter (PST, -8).
        assert_eq!(
            revel.parse("2018-01-20T17:39:00.149863", &zone("PST")),
            Ok(utc("2018-01-21T01:39:00.149863Z"))
        );
        // Concur (seed 003): no zone (UTC), variable fraction digits.
        let concur = fmt("yyyy-MM-dd'T'HH:mm:ss.SSS");
        assert_eq!(
            concur.parse("2004-02-02T15:00:56.14", &Zone::Utc),
            Ok(utc("2004-02-02T15:00:56.140Z"))
        );
        // ServiceNow (seeds 000/001): UTC when display values are off.
        let servicenow = fmt("yyyy-MM-dd HH:mm:ss");
        assert_eq!(
            servicenow.parse("2024-05-01 10:00:00", &Zone::Utc),
            Ok(utc("2024-05-01T10:00:00Z"))
        );
        // SageOne (seeds 000/001): quoted 'Z' literal, zone GMT.
        let sageone = fmt("yyyy-MM-dd'T'HH:mm:ss'Z'");
        assert_eq!(
            sageone.parse("2024-05-01T10:00:00Z", &zone("GMT")),
            Ok(utc("2024-05-01T10:00:00Z"))
        );
    }

    #[test]
    fn fractions_parse_any_number_of_digits_and_may_be_absent_after_a_dot() {
        let f = fmt("yyyy-MM-dd'T'HH:mm:ss.SSS");
        let cases = [
            ("2004-02-02T15:00:56.1", 100_000_000),
            ("2004-02-02T15:00:56.14", 140_000_000),
            ("2004-02-02T15:00:56.140", 140_000_000),
            ("2004-02-02T15:00:56.149863", 149_863_000),
            ("2004-02-02T15:00:56.123456789", 123_456_789),
            ("2004-02-02T15:00:56.1234567891234", 123_456_789),
            ("2004-02-02T15:00:56", 0),
        ];
        for (value, nanos) in cases {
            let parsed = f.parse(value, &Zone::Utc).unwrap();
            assert_eq!(parsed.nanosecond(), nanos, "{value}");
            assert_eq!(parsed.second(), 56, "{value}");
        }
        // without a dot before it, an S run needs at least one digit
        let packed = fmt("HHmmssSSS");
        assert_eq!(
            packed.parse("101112", &Zone::Utc),
            Err(DateParseError::Mismatch {
                value: "101112".into(),
                pattern: "HHmmssSSS".into(),
                expected: "'SSS'".into(),
                offset: 6,
            })
        );
        assert_eq!(
            packed.parse("1011120", &Zone::Utc).map(|t| t.nanosecond()),
            Ok(0)
        );
        // a dot with no digits is a mismatch
        assert!(matches!(
            f.parse("2004-02-02T15:00:56.", &Zone::Utc),
            Err(DateParseError::Mismatch { offset: 19, .. })
        ));
    }

    #[test]
    fn fractions_format_exactly_the_given_number_of_digits() {
        let t = utc("2024-07-01T12:00:00.123456789Z");
        let cases = [
            ("ss.S", "00.1"),
            ("ss.SS", "00.12"),
            ("ss.SSS", "00.123"),
            ("ss.SSSS", "00.1234"),
            ("ss.SSSSSS", "00.123456"),
            ("ss.SSSSSSSSS", "00.123456789"),
            ("ss.SSSSSSSSSSS", "00.12345678900"),
            ("ssSSS", "00123"),
            ("ss,SSS", "00,123"),
        ];
        for (pattern, expected) in cases {
            assert_eq!(fmt(pattern).format(t, &Zone::Utc), expected, "{pattern}");
        }
    }

    #[test]
    fn every_letter_formats_like_java() {
        let t = utc("2024-07-01T12:00:00.123Z");
        let cases = [
            (
                "yyyy-MM-dd'T'HH:mm:ss.SSS",
                "PST",
                "2024-07-01T05:00:00.123",
            ),
            (
                "EEE, dd MMM yyyy HH:mm:ss Z",
                "PST",
                "Mon, 01 Jul 2024 05:00:00 -0700",
            ),
            (
                "EEEE MMMM d yyyy h:mm a",
                "PST",
                "Monday July 1 2024 5:00 AM",
            ),
            (
                "EEEE MMMM d yyyy h:mm a",
                "UTC",
                "Monday July 1 2024 12:00 PM",
            ),
            ("yy M d H m s", "UTC", "24 7 1 12 0 0"),
            ("yyy y", "UTC", "2024 2024"),
            ("D DDD u", "UTC", "183 183 1"),
            ("hh:mm a", "Asia/Tokyo", "09:00 PM"),
            ("X XX XXX Z", "+05:30", "+05 +0530 +05:30 +0530"),
            ("X XX XXX Z", "UTC", "Z Z Z +0000"),
            ("X XX XXX Z", "PST", "-07 -0700 -07:00 -0700"),
            ("z", "PST", "PDT"),
            ("zzz", "UTC", "UTC"),
            ("z", "GMT-08:00", "GMT-08:00"),
            ("z", "Asia/Kolkata", "IST"),
            ("z", "America/Sao_Paulo", "GMT-03:00"),
            ("LLL", "UTC", "Jul"),
        ];
        for (pattern, zone_name, expected) in cases {
            assert_eq!(
                fmt(pattern).format(t, &zone(zone_name)),
                expected,
                "{pattern} in {zone_name}"
            );
        }
        let january = utc("2024-01-15T12:00:00Z");
        assert_eq!(fmt("z Z").format(january, &zone("PST")), "PST -0800");
        assert_eq!(
            fmt("M/d/yy").format(utc("2009-01-05T00:00:00Z"), &Zone::Utc),
            "1/5/09"
        );
    }

    #[test]
    fn quotes_and_punctuation_are_literal() {
        let t = utc("2024-07-01T17:00:00Z");
        let cases = [
            ("h 'o''clock'", "5 o'clock"),
            ("HH''", "17'"),
            ("yyyy''MM", "2024'07"),
            ("'at' HH'h'", "at 17h"),
            ("'T'HH", "T17"),
            ("yyyy/MM/dd [HH]", "2024/07/01 [17]"),
            ("'yyyy' yyyy", "yyyy 2024"),
            ("HH'.'SSS", "17.000"),
            ("é HH ü", "é 17 ü"),
        ];
        for (pattern, expected) in cases {
            let f = fmt(pattern);
            assert_eq!(f.format(t, &Zone::Utc), expected, "{pattern}");
            assert_eq!(f.pattern(), pattern);
        }
        assert_eq!(
            fmt("h 'o''clock' a")
                .parse("5 o'clock PM", &Zone::Utc)
                .map(|t| t.hour()),
            Ok(17)
        );
    }

    #[test]
    fn pattern_errors_name_the_letter_and_position() {
        let cases = [
            (
                "yyyy-MM-ddTHH:mm",
                "unknown letter 'T' at offset 10 in date pattern 'yyyy-MM-ddTHH:mm' (quote literal text, e.g. 'T')",
            ),
            (
                "kk:mm",
                "unsupported letter 'k' at offset 0 in date pattern 'kk:mm' (supported: y M L d D H h a m s S E u X Z z)",
            ),
            ("YYYY", "unsupported letter 'Y' at offset 0 in date pattern 'YYYY' (supported: y M L d D H h a m s S E u X Z z)"),
            ("yyyy-MM-ddd", "unsupported width 'ddd' at offset 8 in date pattern 'yyyy-MM-ddd'"),
            ("yyyyy", "unsupported width 'yyyyy' at offset 0 in date pattern 'yyyyy'"),
            ("XXXX", "unsupported width 'XXXX' at offset 0 in date pattern 'XXXX'"),
            ("zzzz", "unsupported width 'zzzz' at offset 0 in date pattern 'zzzz'"),
            ("HH 'oops", "unterminated quote at offset 3 in date pattern 'HH 'oops'"),
            ("HH '", "unterminated quote at offset 3 in date pattern 'HH ''"),
            ("", "date pattern '' has no date or time fields"),
            ("'T' -", "date pattern ''T' -' has no date or time fields"),
        ];
        for (pattern, message) in cases {
            let error = JavaDateFormat::compile(pattern).unwrap_err();
            assert_eq!(error.to_string(), message, "{pattern}");
        }
        assert_eq!(
            JavaDateFormat::compile("yyyy-MM-ddTHH"),
            Err(PatternError::UnknownLetter {
                letter: 'T',
                offset: 10,
                pattern: "yyyy-MM-ddTHH".into()
            })
        );
        assert_eq!(
            "yyyy".parse::<JavaDateFormat>().map(|f| f.to_string()),
            Ok("yyyy".into())
        );
    }

    #[test]
    fn date_errors_name_the_value_and_pattern() {
        let day = fmt("yyyy-MM-dd");
        let cases = [
            (
                "2024/05/01",
                "date '2024/05/01' does not match pattern 'yyyy-MM-dd': expected '-' at offset 4",
            ),
            (
                "2024-13-01",
                "date '2024-13-01' has a value out of range for 'MM' at offset 5 (pattern 'yyyy-MM-dd')",
            ),
            ("2024-02-30", "date '2024-02-30' is not a valid date or time (pattern 'yyyy-MM-dd')"),
            (
                "2024-05-01T10:00",
                "date '2024-05-01T10:00' has unexpected text 'T10:00' at offset 10 after the end of pattern 'yyyy-MM-dd'",
            ),
            ("", "date '' does not match pattern 'yyyy-MM-dd': expected 'yyyy' at offset 0"),
            ("May 1", "date 'May 1' does not match pattern 'yyyy-MM-dd': expected 'yyyy' at offset 0"),
        ];
        for (value, message) in cases {
            assert_eq!(
                day.parse(value, &Zone::Utc).unwrap_err().to_string(),
                message,
                "{value}"
            );
        }
        let weekday = fmt("EEE yyyy-MM-dd");
        assert!(matches!(
            weekday.parse("Tue 2024-07-01", &Zone::Utc),
            Err(DateParseError::Invalid { .. })
        ));
        assert_eq!(
            weekday.parse("Mon 2024-07-01", &Zone::Utc),
            Ok(utc("2024-07-01T00:00:00Z"))
        );
        let long = "9".repeat(500);
        let message = day.parse(&long, &Zone::Utc).unwrap_err().to_string();
        assert!(message.len() < 250, "{message}");
        assert!(message.contains('…'), "{message}");
        assert!(matches!(
            fmt("HH:mm").parse("24:00", &Zone::Utc),
            Err(DateParseError::OutOfRange { offset: 0, .. })
        ));
    }

    #[test]
    fn values_with_offsets_or_zone_names_ignore_the_configured_zone() {
        let pst = zone("PST");
        let cases = [
            (
                "yyyy-MM-dd'T'HH:mm:ssXXX",
                "2024-05-01T10:00:00+05:30",
                "2024-05-01T04:30:00Z",
            ),
            (
                "yyyy-MM-dd'T'HH:mm:ssXXX",
                "2024-05-01T10:00:00Z",
                "2024-05-01T10:00:00Z",
            ),
            (
                "yyyy-MM-dd'T'HH:mm:ssX",
                "2024-05-01T10:00:00-08",
                "2024-05-01T18:00:00Z",
            ),
            (
                "yyyy-MM-dd'T'HH:mm:ssXX",
                "2024-05-01T10:00:00-0800",
                "2024-05-01T18:00:00Z",
            ),
            (
                "yyyy-MM-dd'T'HH:mm:ss.SSSZ",
                "2024-05-01T10:00:00.5+0200",
                "2024-05-01T08:00:00.5Z",
            ),
            (
                "yyyy-MM-dd HH:mm:ss z",
                "2024-05-01 10:00:00 PDT",
                "2024-05-01T17:00:00Z",
            ),
            (
                "yyyy-MM-dd HH:mm:ss z",
                "2024-05-01 10:00:00 UTC",
                "2024-05-01T10:00:00Z",
            ),
            (
                "yyyy-MM-dd HH:mm:ss z",
                "2024-05-01 10:00:00 GMT-03:00",
                "2024-05-01T13:00:00Z",
            ),
            (
                "yyyy-MM-dd HH:mm:ss z",
                "2024-05-01 10:00:00 CEST",
                "2024-05-01T08:00:00Z",
            ),
            (
                "yyyy-MM-dd HH:mm:ss z",
                "2024-05-01 10:00:00 Asia/Tokyo",
                "2024-05-01T01:00:00Z",
            ),
            (
                "yyyy-MM-dd HH:mm:ss z",
                "2024-05-01 10:00:00 IST",
                "2024-05-01T04:30:00Z",
            ),
            (
                "EEE, dd MMM yyyy HH:mm:ss Z",
                "Wed, 01 May 2024 10:00:00 -0700",
                "2024-05-01T17:00:00Z",
            ),
        ];
        for (pattern, value, expected) in cases {
            let f = fmt(pattern);
            assert!(f.has_zone_field(), "{pattern}");
            assert_eq!(f.parse(value, &pst), Ok(utc(expected)), "{pattern} {value}");
        }
        assert!(!fmt("yyyy-MM-dd'T'HH:mm:ss'Z'").has_zone_field());
        assert!(matches!(
            fmt("HH:mm z").parse("10:00 Nowhere", &pst),
            Err(DateParseError::Mismatch { offset: 6, .. })
        ));
    }

    #[test]
    fn lenient_numbers_twelve_hour_clock_defaults_and_whitespace() {
        let f = fmt("yyyy-MM-dd");
        assert_eq!(
            f.parse("2024-5-1", &Zone::Utc),
            Ok(utc("2024-05-01T00:00:00Z"))
        );
        assert_eq!(
            f.parse("  2024-05-01\n", &Zone::Utc),
            Ok(utc("2024-05-01T00:00:00Z"))
        );
        let twelve = fmt("MM/dd/yyyy hh:mm a");
        assert_eq!(
            twelve.parse("07/01/2024 12:05 AM", &Zone::Utc),
            Ok(utc("2024-07-01T00:05:00Z"))
        );
        assert_eq!(
            twelve.parse("07/01/2024 12:05 pm", &Zone::Utc),
            Ok(utc("2024-07-01T12:05:00Z"))
        );
        assert_eq!(
            twelve.parse("07/01/2024 01:05 PM", &Zone::Utc),
            Ok(utc("2024-07-01T13:05:00Z"))
        );
        // `h` without `a` is morning, missing fields default to 1970-01-01 00:00:00 as in Java
        assert_eq!(
            fmt("h:mm").parse("3:30", &Zone::Utc),
            Ok(utc("1970-01-01T03:30:00Z"))
        );
        assert_eq!(
            fmt("MMM yyyy").parse("Feb 2024", &Zone::Utc),
            Ok(utc("2024-02-01T00:00:00Z"))
        );
        assert_eq!(
            fmt("MMMM d, yyyy").parse("February 3, 2024", &Zone::Utc),
            Ok(utc("2024-02-03T00:00:00Z"))
        );
        assert_eq!(
            fmt("yyyy DDD").parse("2024 061", &Zone::Utc),
            Ok(utc("2024-03-01T00:00:00Z"))
        );
        assert_eq!(
            fmt("yyyyMMddHHmmss").parse("20240501103000", &Zone::Utc),
            Ok(utc("2024-05-01T10:30:00Z"))
        );
        assert_eq!(
            fmt("dd.MM.yy").parse("01.05.69", &Zone::Utc),
            Ok(utc("2069-05-01T00:00:00Z"))
        );
        assert_eq!(
            fmt("dd.MM.yy").parse("01.05.70", &Zone::Utc),
            Ok(utc("1970-05-01T00:00:00Z"))
        );
        assert_eq!(
            fmt("yyyy-MM-dd HH:mm:ss")
                .parse("2016-12-31 23:59:60", &Zone::Utc)
                .map(|t| t.timestamp()),
            Ok(utc("2016-12-31T23:59:59Z").timestamp())
        );
    }

    #[test]
    fn dst_gap_moves_forward_by_the_gap_length() {
        let f = fmt("yyyy-MM-dd'T'HH:mm:ss.SSS");
        // 2024-03-10 02:00 PST jumps to 03:00 PDT: 02:30 is read as PST, i.e. 03:30 PDT.
        let gap = f.parse("2024-03-10T02:30:00.000", &zone("PST")).unwrap();
        assert_eq!(gap, utc("2024-03-10T10:30:00Z"));
        assert_eq!(f.format(gap, &zone("PST")), "2024-03-10T03:30:00.000");
        assert_eq!(
            f.parse("2024-03-10T02:00:00", &zone("PST")),
            Ok(utc("2024-03-10T10:00:00Z"))
        );
        assert_eq!(
            f.parse("2024-03-10T01:59:59.999", &zone("PST")),
            Ok(utc("2024-03-10T09:59:59.999Z"))
        );
        assert_eq!(
            f.parse("2024-03-10T03:00:00", &zone("PST")),
            Ok(utc("2024-03-10T10:00:00Z"))
        );
        // Europe/Paris: 2024-03-31 02:00 CET jumps to 03:00 CEST.
        assert_eq!(
            f.parse("2024-03-31T02:15:00", &zone("Europe/Paris")),
            Ok(utc("2024-03-31T01:15:00Z"))
        );
        // Samoa skipped 2011-12-30 entirely (a day-long gap): still resolved, forward.
        let apia = Zone::Named(chrono_tz::Pacific::Apia);
        let skipped =
            NaiveDateTime::parse_from_str("2011-12-30T12:00:00", "%Y-%m-%dT%H:%M:%S").unwrap();
        let resolved = apia.resolve_local(skipped).unwrap();
        assert_eq!(
            apia.local(resolved).naive_local().to_string(),
            "2011-12-31 12:00:00"
        );
    }

    #[test]
    fn dst_fold_resolves_to_the_earlier_instant() {
        let f = fmt("yyyy-MM-dd HH:mm:ss");
        // 2024-11-03 02:00 PDT falls back to 01:00 PST: 01:30 happens twice; the first is PDT.
        assert_eq!(
            f.parse("2024-11-03 01:30:00", &la()),
            Ok(utc("2024-11-03T08:30:00Z"))
        );
        assert_eq!(
            f.parse("2024-11-03 00:59:59", &la()),
            Ok(utc("2024-11-03T07:59:59Z"))
        );
        assert_eq!(
            f.parse("2024-11-03 02:00:00", &la()),
            Ok(utc("2024-11-03T10:00:00Z"))
        );
        // both instants of the fold format to the same text
        assert_eq!(
            f.format(utc("2024-11-03T09:30:00Z"), &la()),
            "2024-11-03 01:30:00"
        );
        assert_eq!(
            f.format(utc("2024-11-03T08:30:00Z"), &la()),
            "2024-11-03 01:30:00"
        );
    }

    #[test]
    fn sentinels_are_none_only_in_parse_optional() {
        let f = fmt("yyyy-MM-dd'T'HH:mm:ss.SSS");
        let pst = zone("PST");
        for sentinel in [
            "0001-01-01T00:00:00",
            "0001-01-01T00:00:00.000",
            "0000-12-31T00:00:00",
            "",
            "   ",
        ] {
            assert_eq!(f.parse_optional(sentinel, &pst), Ok(None), "{sentinel:?}");
        }
        assert_eq!(
            f.parse_optional("0002-01-01T00:00:00", &Zone::Utc),
            Ok(Some(utc("0002-01-01T00:00:00Z")))
        );
        // plain parse keeps the date (and never panics on it)
        assert_eq!(
            f.parse("0001-01-01T00:00:00", &Zone::Utc),
            Ok(utc("0001-01-01T00:00:00Z"))
        );
        assert!(f.parse("0001-01-01T00:00:00", &pst).is_ok());
        // the epoch only when configured
        assert_eq!(
            f.parse_optional("1970-01-01T00:00:00.000", &Zone::Utc),
            Ok(Some(DateTime::UNIX_EPOCH))
        );
        let with_epoch = f.clone().with_epoch_sentinel(true);
        assert_eq!(
            with_epoch.parse_optional("1970-01-01T00:00:00.000", &Zone::Utc),
            Ok(None)
        );
        assert_eq!(
            with_epoch.parse_optional("1970-01-01T00:00:00", &pst),
            Ok(None)
        );
        assert_eq!(
            with_epoch.parse_optional("1969-12-31T16:00:00", &pst),
            Ok(None)
        );
        assert_eq!(
            with_epoch.parse_optional("1970-01-01T00:00:01", &Zone::Utc),
            Ok(Some(utc("1970-01-01T00:00:01Z")))
        );
        // errors stay errors
        assert!(f.parse_optional("garbage", &pst).is_err());
    }

    #[test]
    fn zone_names_follow_the_jdk() {
        let cases = [
            ("UTC", Zone::Utc),
            ("GMT", Zone::Utc),
            ("Z", Zone::Utc),
            ("utc", Zone::Utc),
            ("PST", la()),
            ("pst", la()),
            ("America/Los_Angeles", la()),
            ("CST", Zone::Named(chrono_tz::America::Chicago)),
            ("IST", Zone::Named(chrono_tz::Asia::Kolkata)),
            ("ECT", Zone::Named(chrono_tz::Europe::Paris)),
            ("CET", Zone::Named(chrono_tz::CET)),
            ("EST5EDT", Zone::Named(chrono_tz::EST5EDT)),
            ("Etc/GMT+8", Zone::Named(chrono_tz::Etc::GMTPlus8)),
            ("EST", Zone::Fixed(FixedOffset::west_opt(5 * 3600).unwrap())),
            ("MST", Zone::Fixed(FixedOffset::west_opt(7 * 3600).unwrap())),
            (
                "HST",
                Zone::Fixed(FixedOffset::west_opt(10 * 3600).unwrap()),
            ),
            (
                "-8:00",
                Zone::Fixed(FixedOffset::west_opt(8 * 3600).unwrap()),
            ),
            (
                "-08:00",
                Zone::Fixed(FixedOffset::west_opt(8 * 3600).unwrap()),
            ),
            (
                "+05:30",
                Zone::Fixed(FixedOffset::east_opt(5 * 3600 + 1800).unwrap()),
            ),
            (
                "+0530",
                Zone::Fixed(FixedOffset::east_opt(5 * 3600 + 1800).unwrap()),
            ),
            (
                "+530",
                Zone::Fixed(FixedOffset::east_opt(5 * 3600 + 1800).unwrap()),
            ),
            (
                "GMT-08:00",
                Zone::Fixed(FixedOffset::west_opt(8 * 3600).unwrap()),
            ),
            (
                "GMT+8",
                Zone::Fixed(FixedOffset::east_opt(8 * 3600).unwrap()),
            ),
            ("UTC+1", Zone::Fixed(FixedOffset::east_opt(3600).unwrap())),
            (
                " +18:00 ",
                Zone::Fixed(FixedOffset::east_opt(18 * 3600).unwrap()),
            ),
        ];
        for (name, expected) in cases {
            assert_eq!(Zone::parse(name), Ok(expected), "{name}");
        }
        // every JDK short id resolves
        for (id, _) in SHORT_IDS {
            assert!(Zone::parse(id).is_ok(), "{id}");
        }
        let errors = [
            ("PDT", "unknown time zone 'PDT' (expected UTC, GMT, an IANA name such as America/Los_Angeles, a Java short id such as PST, or an offset such as -08:00)"),
            ("Mars/Olympus", "unknown time zone 'Mars/Olympus' (expected UTC, GMT, an IANA name such as America/Los_Angeles, a Java short id such as PST, or an offset such as -08:00)"),
            ("", "unknown time zone '' (expected UTC, GMT, an IANA name such as America/Los_Angeles, a Java short id such as PST, or an offset such as -08:00)"),
            ("+8:0", "unknown time zone '+8:0' (expected UTC, GMT, an IANA name such as America/Los_Angeles, a Java short id such as PST, or an offset such as -08:00)"),
            ("GMT+x", "unknown time zone 'GMT+x' (expected UTC, GMT, an IANA name such as America/Los_Angeles, a Java short id such as PST, or an offset such as -08:00)"),
            ("+19:00", "time zone offset '+19:00' is out of range (at most 18 hours, minutes below 60)"),
            ("+05:75", "time zone offset '+05:75' is out of range (at most 18 hours, minutes below 60)"),
        ];
        for (name, message) in errors {
            assert_eq!(
                Zone::parse(name).unwrap_err().to_string(),
                message,
                "{name}"
            );
        }
        assert_eq!(la().to_string(), "America/Los_Angeles");
        assert_eq!(zone("-8:00").to_string(), "-08:00");
        assert_eq!(Zone::Utc.to_string(), "UTC");
        assert_eq!("PST".parse::<Zone>(), Ok(la()));
        assert_eq!(Zone::default(), Zone::Utc);
    }

    /// Patterns for the round trip, with the fraction digits they keep.
    const ROUND_TRIP_PATTERNS: &[(&str, u32)] = &[
        ("yyyy-MM-dd'T'HH:mm:ss.SSS", 3),
        ("yyyy-MM-dd'T'HH:mm:ss.SSSSSS", 6),
        ("yyyy-MM-dd HH:mm:ss", 0),
        ("yyyy-MM-dd'T'HH:mm:ss'Z'", 0),
        ("yyyy-MM-dd'T'HH:mm:ss.SSSXXX", 3),
        ("yyyy-MM-dd'T'HH:mm:ssX", 0),
        ("yyyyMMddHHmmssSSS", 3),
        ("EEE, dd MMM yyyy HH:mm:ss Z", 0),
        ("EEEE, MMMM d, yy h:mm:ss a z", 0),
        ("yyyy-DDD'T'HH:mm:ss.SSSSSSSSSXX", 9),
        ("dd/MM/yyyy hh:mm:ss.S a", 1),
        ("M/d/yyyy H:m:s.SS", 2),
    ];

    fn round_trip_zones() -> Vec<Zone> {
        vec![
            Zone::Utc,
            zone("PST"),
            zone("Europe/Paris"),
            zone("Asia/Kolkata"),
            zone("Australia/Lord_Howe"),
            zone("America/Sao_Paulo"),
            zone("-8:00"),
            zone("+05:45"),
        ]
    }

    fn truncate(instant: DateTime<Utc>, digits: u32) -> DateTime<Utc> {
        let unit = 10u32.pow(9 - digits);
        let nanos = instant.nanosecond() % 1_000_000_000;
        instant.with_nanosecond(nanos - nanos % unit).unwrap()
    }

    proptest! {
        /// Formatting then parsing with the same pattern gives the instant back at the pattern's
        /// precision; without an offset in the value, a DST fold gives the earlier instant, which
        /// formats to the same text.
        #[test]
        fn format_then_parse_round_trips(
            seconds in 86_400i64..3_155_673_600 - 86_400,
            nanos in 0u32..1_000_000_000,
            pattern in 0..ROUND_TRIP_PATTERNS.len(),
            zone_index in 0usize..8,
        ) {
            let (pattern, digits) = ROUND_TRIP_PATTERNS[pattern];
            let zone = round_trip_zones()[zone_index];
            let f = fmt(pattern);
            let instant = DateTime::from_timestamp(seconds, nanos).unwrap();
            // `X` prints whole hours only, as in Java: no round trip at +05:30
            let whole_hours = zone.offset_at(instant).local_minus_utc() % 3600 == 0;
            prop_assume!(whole_hours || !pattern.ends_with("ssX"));
            let text = f.format(instant, &zone);
            let back = f.parse(&text, &zone).unwrap();
            prop_assert_eq!(f.format(back, &zone), text.clone());
            let expected = truncate(instant, digits);
            if back != expected {
                // only a fold, which resolves to its earlier instant
                prop_assert!(!f.has_zone_field(), "{} -> {}", text, back);
                prop_assert!(back < expected && expected - back <= TimeDelta::hours(1), "{} -> {}", text, back);
            }
        }

        /// Any number of fraction digits parses, keeping the first nine.
        #[test]
        fn any_fraction_digits_parse(digits in "[0-9]{1,15}") {
            let f = fmt("HH:mm:ss.SSS");
            let back = f.parse(&format!("10:00:00.{digits}"), &Zone::Utc).unwrap();
            let kept: String = digits.chars().chain(std::iter::repeat('0')).take(9).collect();
            prop_assert_eq!(back.nanosecond(), kept.parse::<u32>().unwrap());
        }

        /// Arbitrary input never panics: patterns, zones and values.
        #[test]
        fn arbitrary_input_never_panics(pattern in "\\PC{0,24}", value in "\\PC{0,40}", name in "\\PC{0,12}") {
            if let Ok(f) = JavaDateFormat::compile(&pattern) {
                let _ = f.format(DateTime::UNIX_EPOCH, &la());
                let _ = f.parse(&value, &la());
                let _ = f.parse_optional(&value, &Zone::Utc);
            }
            let _ = Zone::parse(&name);
        }

        /// Patterns made of supported letters never panic on values made of date characters.
        #[test]
        fn letter_patterns_never_panic(pattern in "[yMdDHhmsSaEuXZzL'.:, -]{1,16}", value in "[0-9A-Za-z:+.,' -]{0,30}") {
            if let Ok(f) = JavaDateFormat::compile(&pattern) {
                let text = f.format(DateTime::UNIX_EPOCH, &Zone::Named(chrono_tz::Australia::Lord_Howe));
                let _ = f.parse(&text, &la());
                let _ = f.parse(&value, &la());
                let _ = f.parse_optional(&value, &Zone::Utc);
            }
        }

        /// Values shaped like the pattern never panic either, whatever the numbers.
        #[test]
        fn pattern_shaped_values_never_panic(value in "[0-9+-]{0,6}-[0-9]{1,3}-[0-9]{1,3}T[0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3}(\\.[0-9]{0,12})?([+-][0-9]{2}(:?[0-9]{2})?|Z)?") {
            for pattern in ["yyyy-MM-dd'T'HH:mm:ss.SSS", "yyyy-MM-dd'T'HH:mm:ss.SSSXXX"] {
                let _ = fmt(pattern).parse(&value, &la());
                let _ = fmt(pattern).parse_optional(&value, &Zone::Named(chrono_tz::Pacific::Apia));
            }
        }
    }
}
