//! Tests of [`super`]: pattern compilation, formatting and parsing, zones and their DST rules.

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
fn a_fold_also_offers_its_later_instant() {
    let f = fmt("yyyy-MM-dd HH:mm:ss");
    // 01:20 on fall-back night is 08:20 UTC (PDT) and, an hour later, 09:20 UTC (PST).
    assert_eq!(
        f.later_in_fold("2024-11-03 01:20:00", &la()),
        Some(utc("2024-11-03T09:20:00Z"))
    );
    // one instant only: outside the fold, in a gap, with an offset, in a fixed zone
    assert_eq!(f.later_in_fold("2024-11-03 00:59:59", &la()), None);
    assert_eq!(f.later_in_fold("2024-11-03 02:00:00", &la()), None);
    assert_eq!(f.later_in_fold("2024-03-10 02:30:00", &la()), None);
    assert_eq!(
        f.later_in_fold("2024-11-03 01:20:00", &zone("-08:00")),
        None
    );
    let with_offset = fmt("yyyy-MM-dd HH:mm:ssXXX");
    assert_eq!(
        with_offset.later_in_fold("2024-11-03 01:20:00-07:00", &la()),
        None
    );
    assert_eq!(f.later_in_fold("not a date", &la()), None);
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
