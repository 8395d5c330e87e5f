//! Cloud Elements URL templates: the `url` of an `event.poller.configuration` resource, such as
//! `/hubs/employee/employees?where=updated_date__gte='${DateTimeZone:PST:yyyy-MM-dd'T'HH:mm:ss.SSS}'`,
//! with placeholders filled in from the poll's "since" instant.
//!
//! | placeholder | renders |
//! | --- | --- |
//! | `${date:PATTERN}` | the instant in the resource's zone (UTC unless configured) |
//! | `${gmtDate:PATTERN}` | the instant in GMT |
//! | `${DateTimeZone:ZONE:PATTERN}`, `${dateTimeZone:ZONE:PATTERN}` | the instant in `ZONE` (`PST`, `America/Los_Angeles`, `-8:00`, …) |
//! | `${epoch}`, `${epoch:ms}` / `${epoch:s}` / `${epoch:us}` | Unix time in milliseconds / seconds / microseconds |
//!
//! `PATTERN` is a Java date pattern ([`JavaDateFormat`]) and runs to the first `}`; `ZONE` is read
//! by [`Zone::parse`] and is the longest prefix before a `:` that names a zone, so offsets with a
//! colon work (`${DateTimeZone:-8:00:yyyy-MM-dd}`). Everything outside placeholders is kept as
//! is. A template is compiled once, at config load ([`UrlTemplate::compile`]); rendering cannot
//! fail. URL encoding is the caller's choice: [`UrlTemplate::render_with`] applies an encoder to
//! placeholder output only.
//!
//! The placeholder syntax is Cloud Elements' own, with no crate for it; it is a short scan here.

use std::fmt;

use chrono::{DateTime, Utc};

use crate::formats::datefmt::{JavaDateFormat, PatternError, Zone, ZoneError};

/// The placeholder names, for error messages.
const KNOWN: &str = "date, gmtDate, DateTimeZone, dateTimeZone or epoch";

/// A compiled Cloud Elements URL template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlTemplate {
    template: String,
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Text(String),
    Date { format: JavaDateFormat, zone: Zone },
    Epoch(EpochUnit),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EpochUnit {
    Seconds,
    Millis,
    Micros,
}

impl UrlTemplate {
    /// Compiles `template`; `${date:…}` placeholders render in `default_zone` (the resource's zone,
    /// [`Zone::Utc`] when it sets none).
    pub fn compile(template: &str, default_zone: &Zone) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(start) = rest.find("${") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let offset = template.len() - rest.len() + start;
            let body_and_after = &rest[start + 2..];
            let Some(end) = body_and_after.find('}') else {
                return Err(TemplateError::Unterminated {
                    placeholder: clip(&rest[start..]),
                    offset,
                });
            };
            let body = &body_and_after[..end];
            parts.push(placeholder(body, offset, default_zone)?);
            rest = &body_and_after[end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(UrlTemplate {
            template: template.to_owned(),
            parts,
        })
    }

    /// The template as given.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// Whether the template has any placeholder (a template without one polls everything).
    pub fn has_placeholders(&self) -> bool {
        self.parts.iter().any(|part| !matches!(part, Part::Text(_)))
    }

    /// The template with every placeholder filled in for `instant`, unencoded.
    pub fn render(&self, instant: DateTime<Utc>) -> String {
        self.render_with(instant, str::to_owned)
    }

    /// The template with every placeholder filled in for `instant` and passed through `encode`
    /// (e.g. percent-encoding for a query string); the text around placeholders is kept as is.
    pub fn render_with(&self, instant: DateTime<Utc>, encode: impl Fn(&str) -> String) -> String {
        let mut out = String::with_capacity(self.template.len() + 16);
        for part in &self.parts {
            match part {
                Part::Text(text) => out.push_str(text),
                Part::Date { format, zone } => out.push_str(&encode(&format.format(instant, zone))),
                Part::Epoch(unit) => {
                    let value = match unit {
                        EpochUnit::Seconds => instant.timestamp(),
                        EpochUnit::Millis => instant.timestamp_millis(),
                        EpochUnit::Micros => instant.timestamp_micros(),
                    };
                    out.push_str(&encode(&value.to_string()));
                }
            }
        }
        out
    }
}

impl fmt::Display for UrlTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.template)
    }
}

/// Compiles the text between `${` and `}`.
fn placeholder<'a>(
    body: &'a str,
    offset: usize,
    default_zone: &Zone,
) -> Result<Part, TemplateError> {
    let (name, argument) = match body.split_once(':') {
        Some((name, argument)) => (name, Some(argument)),
        None => (body, None),
    };
    let pattern = |argument: Option<&'a str>| -> Result<&'a str, TemplateError> {
        argument
            .filter(|pattern| !pattern.is_empty())
            .ok_or_else(|| TemplateError::MissingPattern {
                placeholder: clip(body),
                offset,
            })
    };
    let date = |pattern: &str, zone: Zone| {
        JavaDateFormat::compile(pattern)
            .map(|format| Part::Date { format, zone })
            .map_err(|source| TemplateError::Pattern {
                placeholder: clip(body),
                offset,
                source,
            })
    };
    match name {
        "date" => date(pattern(argument)?, *default_zone),
        "gmtDate" => date(pattern(argument)?, Zone::Utc),
        "DateTimeZone" | "dateTimeZone" => {
            let argument = argument.unwrap_or_default();
            let (zone, rest) = split_zone(argument).map_err(|source| TemplateError::Zone {
                placeholder: clip(body),
                offset,
                source,
            })?;
            date(pattern(rest)?, zone)
        }
        "epoch" => match argument {
            None | Some("ms") => Ok(Part::Epoch(EpochUnit::Millis)),
            Some("s") => Ok(Part::Epoch(EpochUnit::Seconds)),
            Some("us") => Ok(Part::Epoch(EpochUnit::Micros)),
            Some(_) => Err(TemplateError::EpochUnit {
                placeholder: clip(body),
                offset,
            }),
        },
        _ => Err(TemplateError::Unknown {
            placeholder: clip(body),
            offset,
        }),
    }
}

/// Splits `ZONE:PATTERN` at the last `:` whose prefix names a zone (zones such as `-8:00` hold a
/// colon, patterns too). Without any, the error is the one for the text before the first `:`.
fn split_zone(argument: &str) -> Result<(Zone, Option<&str>), ZoneError> {
    let colons = argument.match_indices(':').map(|(at, _)| at).rev();
    for at in colons {
        if let Ok(zone) = Zone::parse(&argument[..at]) {
            return Ok((zone, Some(&argument[at + 1..])));
        }
    }
    let name = argument.split(':').next().unwrap_or_default();
    Zone::parse(name).map(|zone| (zone, None))
}

/// A URL template that could not be compiled. `placeholder` is the text between `${` and `}`;
/// `offset` is the byte offset of its `${` in the template.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A `${` without a closing `}`.
    #[error("unterminated placeholder '{placeholder}' at offset {offset}: missing '}}'")]
    Unterminated {
        /// The template from the `${` on (shortened when long).
        placeholder: String,
        /// Byte offset of the `${`.
        offset: usize,
    },
    /// A placeholder name other than `date`, `gmtDate`, `DateTimeZone`, `dateTimeZone`, `epoch`.
    #[error("unknown placeholder '${{{placeholder}}}' at offset {offset} (expected {KNOWN})")]
    Unknown {
        /// The placeholder text.
        placeholder: String,
        /// Byte offset of the `${`.
        offset: usize,
    },
    /// A date placeholder without a pattern, e.g. `${date}`.
    #[error("placeholder '${{{placeholder}}}' at offset {offset} has no date pattern (e.g. ${{date:yyyy-MM-dd'T'HH:mm:ss}})")]
    MissingPattern {
        /// The placeholder text.
        placeholder: String,
        /// Byte offset of the `${`.
        offset: usize,
    },
    /// An `epoch` unit other than `s`, `ms`, `us`.
    #[error("placeholder '${{{placeholder}}}' at offset {offset} has an unknown epoch unit (expected ${{epoch}}, ${{epoch:s}}, ${{epoch:ms}} or ${{epoch:us}})")]
    EpochUnit {
        /// The placeholder text.
        placeholder: String,
        /// Byte offset of the `${`.
        offset: usize,
    },
    /// The date pattern does not compile.
    #[error("placeholder '${{{placeholder}}}' at offset {offset}: {source}")]
    Pattern {
        /// The placeholder text.
        placeholder: String,
        /// Byte offset of the `${`.
        offset: usize,
        /// What is wrong with the pattern.
        #[source]
        source: PatternError,
    },
    /// The zone of a `DateTimeZone` placeholder is unknown.
    #[error("placeholder '${{{placeholder}}}' at offset {offset}: {source}")]
    Zone {
        /// The placeholder text.
        placeholder: String,
        /// Byte offset of the `${`.
        offset: usize,
        /// What is wrong with the zone.
        #[source]
        source: ZoneError,
    },
}

/// `text`, shortened for an error message.
fn clip(text: &str) -> String {
    const MAX: usize = 120;
    if text.len() <= MAX {
        return text.to_owned();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn compile(template: &str) -> UrlTemplate {
        UrlTemplate::compile(template, &Zone::Utc).unwrap()
    }

    /// Every URL template in the seeds, rendered at 2024-07-01T12:00:00.123Z (PDT, -7) and at
    /// 2024-01-15T12:00:00.123Z (PST, -8).
    #[test]
    fn seed_templates_render_exactly() {
        let summer = utc("2024-07-01T12:00:00.123Z");
        let winter = utc("2024-01-15T12:00:00.123Z");
        let cases = [
            // seeds 000 and 001: ServiceNow accounts
            (
                "/hubs/helpdesk/accounts?where=sys_updated_on>'${gmtDate:yyyy-MM-dd'T'HH:mm:ss}'",
                "/hubs/helpdesk/accounts?where=sys_updated_on>'2024-07-01T12:00:00'",
                "/hubs/helpdesk/accounts?where=sys_updated_on>'2024-01-15T12:00:00'",
            ),
            // seeds 000 and 001: SageOne customers
            (
                "/hubs/finance/customers?where=lastModifiedDate>='${date:yyyy-MM-dd'T'HH:mm:ss'Z'}' and attributes='created_at,updated_at",
                "/hubs/finance/customers?where=lastModifiedDate>='2024-07-01T12:00:00Z' and attributes='created_at,updated_at",
                "/hubs/finance/customers?where=lastModifiedDate>='2024-01-15T12:00:00Z' and attributes='created_at,updated_at",
            ),
            // seed 002: Revel employees and timesheets, PST with DST
            (
                "/hubs/employee/employees?where=updated_date__gte='${DateTimeZone:PST:yyyy-MM-dd'T'HH:mm:ss.SSS}'",
                "/hubs/employee/employees?where=updated_date__gte='2024-07-01T05:00:00.123'",
                "/hubs/employee/employees?where=updated_date__gte='2024-01-15T04:00:00.123'",
            ),
            (
                "/hubs/employee/timesheets?where=updated_date__gte='${DateTimeZone:PST:yyyy-MM-dd'T'HH:mm:ss.SSS}'",
                "/hubs/employee/timesheets?where=updated_date__gte='2024-07-01T05:00:00.123'",
                "/hubs/employee/timesheets?where=updated_date__gte='2024-01-15T04:00:00.123'",
            ),
            // seed 003: Concur reports
            (
                "/hubs/expense/reports?where=modifiedDateAfter='${date:yyyy-MM-dd'T'HH:mm:ss.SSS}'",
                "/hubs/expense/reports?where=modifiedDateAfter='2024-07-01T12:00:00.123'",
                "/hubs/expense/reports?where=modifiedDateAfter='2024-01-15T12:00:00.123'",
            ),
        ];
        for (template, in_summer, in_winter) in cases {
            let compiled = compile(template);
            assert!(compiled.has_placeholders());
            assert_eq!(compiled.render(summer), in_summer);
            assert_eq!(compiled.render(winter), in_winter);
            assert_eq!(compiled.template(), template);
            assert_eq!(compiled.to_string(), template);
        }
    }

    #[test]
    fn date_uses_the_default_zone_and_gmt_date_does_not() {
        let pst = Zone::parse("PST").unwrap();
        let template =
            UrlTemplate::compile("a=${date:yyyy-MM-dd HH:mm}&b=${gmtDate:HH:mm}", &pst).unwrap();
        assert_eq!(
            template.render(utc("2024-07-01T12:00:00Z")),
            "a=2024-07-01 05:00&b=12:00"
        );
    }

    #[test]
    fn all_placeholder_forms_render() {
        let instant = utc("2024-07-01T12:00:00.123456Z");
        let cases = [
            ("${epoch}", "1719835200123"),
            ("${epoch:ms}", "1719835200123"),
            ("${epoch:s}", "1719835200"),
            ("${epoch:us}", "1719835200123456"),
            ("${dateTimeZone:America/New_York:HH:mm}", "08:00"),
            (
                "${DateTimeZone:-8:00:yyyy-MM-dd'T'HH:mm}",
                "2024-07-01T04:00",
            ),
            ("${DateTimeZone:GMT+05:30:HH:mm}", "17:30"),
            ("${DateTimeZone:UTC:HH:mm:ss.SSSXXX}", "12:00:00.123Z"),
            ("${DateTimeZone:EST:HH:mm}", "07:00"),
            ("${DateTimeZone:CET:HH:mm z}", "14:00 CEST"),
            ("x${epoch:s}${epoch:s}y", "x17198352001719835200y"),
            ("$ {date} $notaplaceholder }", "$ {date} $notaplaceholder }"),
            ("", ""),
        ];
        for (template, expected) in cases {
            assert_eq!(compile(template).render(instant), expected, "{template}");
        }
        let before_1970 = utc("1969-12-31T23:59:59Z");
        assert_eq!(
            compile("${epoch:s} ${epoch}").render(before_1970),
            "-1 -1000"
        );
        assert!(!compile("/api/now/table/incident").has_placeholders());
        assert!(!compile("").has_placeholders());
    }

    #[test]
    fn render_with_encodes_placeholder_output_only() {
        let template = compile("/x?q=a>='${date:yyyy-MM-dd HH:mm:ss}'&t=${epoch:s}");
        let encoded = template.render_with(utc("2024-07-01T12:00:00Z"), |value| {
            value.replace(' ', "%20").replace(':', "%3A")
        });
        assert_eq!(encoded, "/x?q=a>='2024-07-01%2012%3A00%3A00'&t=1719835200");
    }

    #[test]
    fn errors_name_the_placeholder_and_its_offset() {
        let cases = [
            ("/x?a=${date:yyyy", "unterminated placeholder '${date:yyyy' at offset 5: missing '}'"),
            ("/x?a=${nope:yyyy}", "unknown placeholder '${nope:yyyy}' at offset 5 (expected date, gmtDate, DateTimeZone, dateTimeZone or epoch)"),
            ("${Date:yyyy}", "unknown placeholder '${Date:yyyy}' at offset 0 (expected date, gmtDate, DateTimeZone, dateTimeZone or epoch)"),
            ("${}", "unknown placeholder '${}' at offset 0 (expected date, gmtDate, DateTimeZone, dateTimeZone or epoch)"),
            ("ab${date}", "placeholder '${date}' at offset 2 has no date pattern (e.g. ${date:yyyy-MM-dd'T'HH:mm:ss})"),
            ("${gmtDate:}", "placeholder '${gmtDate:}' at offset 0 has no date pattern (e.g. ${date:yyyy-MM-dd'T'HH:mm:ss})"),
            ("${DateTimeZone:PST}", "placeholder '${DateTimeZone:PST}' at offset 0 has no date pattern (e.g. ${date:yyyy-MM-dd'T'HH:mm:ss})"),
            ("${epoch:ns}", "placeholder '${epoch:ns}' at offset 0 has an unknown epoch unit (expected ${epoch}, ${epoch:s}, ${epoch:ms} or ${epoch:us})"),
            (
                "q='${date:yyyy-MM-ddTHH:mm}'",
                "placeholder '${date:yyyy-MM-ddTHH:mm}' at offset 3: unknown letter 'T' at offset 10 in date pattern 'yyyy-MM-ddTHH:mm' (quote literal text, e.g. 'T')",
            ),
            (
                "${DateTimeZone:PDT:yyyy}",
                "placeholder '${DateTimeZone:PDT:yyyy}' at offset 0: unknown time zone 'PDT' (expected UTC, GMT, an IANA name such as America/Los_Angeles, a Java short id such as PST, or an offset such as -08:00)",
            ),
            (
                "${DateTimeZone::yyyy}",
                "placeholder '${DateTimeZone::yyyy}' at offset 0: unknown time zone '' (expected UTC, GMT, an IANA name such as America/Los_Angeles, a Java short id such as PST, or an offset such as -08:00)",
            ),
            ("${epoch:s} then ${date:'x}", "placeholder '${date:'x}' at offset 16: unterminated quote at offset 0 in date pattern ''x'"),
            ("${DateTimeZone:-8:00}", "placeholder '${DateTimeZone:-8:00}' at offset 0: date pattern '00' has no date or time fields"),
        ];
        for (template, message) in cases {
            let error = UrlTemplate::compile(template, &Zone::Utc).unwrap_err();
            assert_eq!(error.to_string(), message, "{template}");
        }
        assert!(matches!(
            UrlTemplate::compile("${date:kk}", &Zone::Utc),
            Err(TemplateError::Pattern {
                offset: 0,
                source: PatternError::UnsupportedLetter { letter: 'k', .. },
                ..
            })
        ));
        let long = format!("${{date:{}", "y".repeat(500));
        let message = UrlTemplate::compile(&long, &Zone::Utc)
            .unwrap_err()
            .to_string();
        assert!(message.len() < 200, "{message}");
    }

    proptest! {
        /// Arbitrary templates never panic, and text without `${` renders unchanged.
        #[test]
        fn arbitrary_templates_never_panic(template in "\\PC{0,60}", seconds in -10_000_000_000i64..10_000_000_000) {
            let instant = DateTime::from_timestamp(seconds, 0).unwrap();
            match UrlTemplate::compile(&template, &Zone::Utc) {
                Ok(compiled) => {
                    let rendered = compiled.render(instant);
                    if !template.contains("${") {
                        prop_assert_eq!(rendered, template);
                    }
                }
                Err(error) => prop_assert!(!error.to_string().is_empty()),
            }
        }

        /// Placeholder-shaped templates never panic either.
        #[test]
        fn placeholder_shaped_templates_never_panic(template in "(x|\\$\\{(date|gmtDate|DateTimeZone|epoch)(:[A-Za-z/+0-9:'. -]{0,12})?\\}?){0,4}") {
            if let Ok(compiled) = UrlTemplate::compile(&template, &Zone::Utc) {
                let _ = compiled.render(DateTime::UNIX_EPOCH);
            }
        }
    }
}
