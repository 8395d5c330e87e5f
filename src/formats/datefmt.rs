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
//!   little, it never skips. [`JavaDateFormat::later_in_fold`] answers the other (later) instant,
//!   which change detection takes when the earlier would be older than what it already holds.
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

    /// The later instant of a local time that a DST fold makes ambiguous (01:30 on 2024-11-03 in
    /// Los Angeles: 01:30 PST, 09:30 UTC); `None` for a local time that names one instant.
    pub fn later_in_fold(&self, local: NaiveDateTime) -> Option<DateTime<Utc>> {
        match self {
            Zone::Named(tz) => match tz.offset_from_local_datetime(&local) {
                LocalResult::Ambiguous(_, later) => later
                    .fix()
                    .from_local_datetime(&local)
                    .single()
                    .map(|t| t.to_utc()),
                _ => None,
            },
            Zone::Utc | Zone::Fixed(_) => None,
        }
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

    /// The later instant `value` names when it is a local time in a DST fold (its zone has no
    /// offset in the value); `None` when it names one instant or does not parse. [`parse`]
    /// answers the earlier one.
    ///
    /// [`parse`]: Self::parse
    pub fn later_in_fold(&self, value: &str, zone: &Zone) -> Option<DateTime<Utc>> {
        let fields = self.parse_fields(value).ok()?;
        match (fields.offset, &fields.zone) {
            (Some(_), _) => None,
            (None, Some(own)) => own.later_in_fold(fields.local),
            (None, None) => zone.later_in_fold(fields.local),
        }
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
mod tests;
