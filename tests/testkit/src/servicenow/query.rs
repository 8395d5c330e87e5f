//! ServiceNow encoded queries (`sysparm_query`): parsing, checking against a table's columns, and
//! evaluating against records.
//!
//! Grammar, as the Table API reads it: terms joined by `^` (AND); a term starting with `OR` is OR'ed
//! with the condition before it (OR binds tighter than AND: `a^b^ORc` = `a AND (b OR c)`); a term
//! starting with `NQ` opens a new OR'ed block; `ORDERBY<f>` / `ORDERBYDESC<f>` add sort keys; `EQ`
//! ends the query (ignored). `^^` is a literal `^` inside a value. A condition is
//! `<field><operator><value>` where the field is the longest run of `[a-z0-9_.]` (ServiceNow column
//! names are lower case). Comparisons are case-sensitive. Anything that cannot be parsed or names an
//! unknown column is *silently dropped* (so the query returns more rows), and reported in
//! [`Plan::ignored`] so tests can see it.

use std::cmp::Ordering;

use chrono::{FixedOffset, NaiveDate, NaiveDateTime, NaiveTime, TimeZone};

/// The date-time format of every ServiceNow date value (UTC unless display values are asked for).
pub const DATE_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// How a column's values compare and render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// Compared as strings (byte order).
    String,
    /// `yyyy-MM-dd HH:mm:ss` UTC, compared chronologically.
    DateTime,
    /// Compared as integers.
    Integer,
    /// A sys_id of a record in the named table; rendered as `{"link","value"}`.
    Reference(String),
}

/// A condition operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `=`
    Eq,
    /// `!=`
    Ne,
    /// `>`
    Gt,
    /// `>=`
    Ge,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `LIKE` (contains)
    Like,
    /// `NOT LIKE`
    NotLike,
    /// `STARTSWITH`
    StartsWith,
    /// `ENDSWITH`
    EndsWith,
    /// `IN` (comma-separated list)
    In,
    /// `NOT IN`
    NotIn,
    /// `ISEMPTY`
    IsEmpty,
    /// `ISNOTEMPTY`
    IsNotEmpty,
    /// `ANYTHING`
    Anything,
    /// `BETWEEN<a>@<b>` (inclusive)
    Between,
}

/// Operators by their spelling, longest first where one is a prefix of another.
const OPERATORS: &[(&str, Op)] = &[
    ("ISNOTEMPTY", Op::IsNotEmpty),
    ("ISEMPTY", Op::IsEmpty),
    ("ANYTHING", Op::Anything),
    ("STARTSWITH", Op::StartsWith),
    ("ENDSWITH", Op::EndsWith),
    ("NOT LIKE", Op::NotLike),
    ("NOT IN", Op::NotIn),
    ("BETWEEN", Op::Between),
    ("LIKE", Op::Like),
    ("IN", Op::In),
    ("!=", Op::Ne),
    (">=", Op::Ge),
    ("<=", Op::Le),
    ("=", Op::Eq),
    (">", Op::Gt),
    ("<", Op::Lt),
];

/// One `<field><op><value>` condition as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    /// Column name (maybe dot-walked).
    pub field: String,
    /// Operator.
    pub op: Op,
    /// Literal text after the operator.
    pub value: String,
}

/// A sort key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderKey {
    /// Column name.
    pub field: String,
    /// `ORDERBYDESC`.
    pub descending: bool,
}

/// One term of the query as written, before columns are checked.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Term {
    And(Condition),
    Or(Condition),
    NewQuery(Condition),
    Order(OrderKey),
    Invalid(String),
}

/// A parsed query: OR'ed blocks of AND'ed groups of OR'ed conditions, plus sort keys.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// `blocks[b][g][c]`: the record matches if any block has all its groups matching, and a group
    /// matches if any of its conditions does. No blocks: everything matches.
    pub blocks: Vec<Vec<Vec<Condition>>>,
    /// `ORDERBY`/`ORDERBYDESC` keys in order.
    pub order: Vec<OrderKey>,
    /// Terms that could not be parsed, verbatim.
    pub invalid: Vec<String>,
}

/// Parses an encoded query. Never fails: unreadable terms land in [`Query::invalid`].
pub fn parse(text: &str) -> Query {
    let mut query = Query::default();
    for raw in split_terms(text) {
        apply_term(&mut query, classify(&raw));
    }
    query.blocks.retain(|b| !b.is_empty());
    query
}

/// Splits on single `^`, keeping `^^` as a literal caret.
fn split_terms(text: &str) -> Vec<String> {
    let mut terms = Vec::new();
    let mut current = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '^' {
            current.push(c);
        } else if chars.peek() == Some(&'^') {
            chars.next();
            current.push('^');
        } else {
            terms.push(std::mem::take(&mut current));
        }
    }
    terms.push(current);
    terms.into_iter().filter(|t| !t.is_empty()).collect()
}

fn classify(raw: &str) -> Term {
    if raw == "EQ" {
        return Term::Invalid(String::new());
    }
    if let Some(field) = raw.strip_prefix("ORDERBYDESC") {
        return order_term(raw, field, true);
    }
    if let Some(field) = raw.strip_prefix("ORDERBY") {
        return order_term(raw, field, false);
    }
    let (wrap, body): (fn(Condition) -> Term, &str) = if let Some(rest) = raw.strip_prefix("OR") {
        (Term::Or, rest)
    } else if let Some(rest) = raw.strip_prefix("NQ") {
        (Term::NewQuery, rest)
    } else {
        (Term::And, raw)
    };
    match parse_condition(body) {
        Some(c) => wrap(c),
        None => Term::Invalid(raw.to_string()),
    }
}

fn order_term(raw: &str, field: &str, descending: bool) -> Term {
    if field.is_empty() || !field.chars().all(is_field_char) {
        return Term::Invalid(raw.to_string());
    }
    Term::Order(OrderKey {
        field: field.to_string(),
        descending,
    })
}

fn is_field_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '.'
}

/// Reads `<field><op><value>`.
fn parse_condition(text: &str) -> Option<Condition> {
    let end = text.find(|c| !is_field_char(c)).unwrap_or(text.len());
    let (field, rest) = text.split_at(end);
    if field.is_empty() {
        return None;
    }
    let (name, op) = OPERATORS.iter().find(|(name, _)| rest.starts_with(name))?;
    Some(Condition {
        field: field.to_string(),
        op: *op,
        value: rest[name.len()..].to_string(),
    })
}

fn apply_term(query: &mut Query, term: Term) {
    match term {
        Term::Order(key) => query.order.push(key),
        Term::Invalid(raw) if raw.is_empty() => {}
        Term::Invalid(raw) => query.invalid.push(raw),
        Term::NewQuery(c) => query.blocks.push(vec![vec![c]]),
        Term::And(c) => current_block(query).push(vec![c]),
        Term::Or(c) => match current_block(query).last_mut() {
            Some(group) => group.push(c),
            None => current_block(query).push(vec![c]),
        },
    }
}

fn current_block(query: &mut Query) -> &mut Vec<Vec<Condition>> {
    if query.blocks.is_empty() {
        query.blocks.push(Vec::new());
    }
    query.blocks.last_mut().expect("a block exists")
}

/// What the evaluator needs to know about a table.
pub trait Columns {
    /// The type of a column, or `None` when the table has no such column.
    fn field_type(&self, field: &str) -> Option<FieldType>;
}

/// A condition checked against the table, with its value prepared for comparison.
#[derive(Debug, Clone)]
pub struct Check {
    /// Column name (maybe dot-walked).
    pub field: String,
    /// Operator.
    pub op: Op,
    /// How the column compares.
    pub kind: Kind,
    /// The literal(s): one, or several for `IN`/`NOT IN`/`BETWEEN`. Dates are canonical UTC text.
    pub values: Vec<String>,
}

/// How a checked column compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// By bytes.
    Text,
    /// Chronologically (canonical text).
    Date,
    /// Numerically.
    Integer,
}

/// A query checked against a table: what will be evaluated, and what was dropped.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// OR'ed blocks of AND'ed groups of OR'ed checks (empty: everything matches).
    pub blocks: Vec<Vec<Vec<Check>>>,
    /// Sort keys with their kind.
    pub order: Vec<(OrderKey, Kind)>,
    /// Every part of the query that was silently ignored, verbatim or as `field` / `ORDERBYfield`.
    pub ignored: Vec<String>,
}

impl Query {
    /// Checks the query against a table. `zone` is the session time zone used by
    /// `javascript:gs.dateGenerate(…)` literals.
    pub fn plan(&self, columns: &dyn Columns, zone: FixedOffset) -> Plan {
        let mut ignored = self.invalid.clone();
        let mut blocks = Vec::new();
        let mut everything = false;
        for block in &self.blocks {
            let groups = plan_block(block, columns, zone, &mut ignored);
            if groups.is_empty() {
                // A block whose every condition was dropped matches every record.
                everything = true;
            } else {
                blocks.push(groups);
            }
        }
        if everything {
            blocks.clear();
        }
        let order = self.plan_order(columns, &mut ignored);
        Plan {
            blocks,
            order,
            ignored,
        }
    }

    fn plan_order(
        &self,
        columns: &dyn Columns,
        ignored: &mut Vec<String>,
    ) -> Vec<(OrderKey, Kind)> {
        let mut order = Vec::new();
        for key in &self.order {
            match columns.field_type(&key.field) {
                Some(t) => order.push((key.clone(), kind_of(&t))),
                None => ignored.push(format!(
                    "ORDERBY{}{}",
                    if key.descending { "DESC" } else { "" },
                    key.field
                )),
            }
        }
        order
    }
}

fn plan_block(
    block: &[Vec<Condition>],
    columns: &dyn Columns,
    zone: FixedOffset,
    ignored: &mut Vec<String>,
) -> Vec<Vec<Check>> {
    let mut groups = Vec::new();
    for group in block {
        let checks: Vec<Check> = group
            .iter()
            .filter_map(|c| {
                let check = plan_condition(c, columns, zone);
                if check.is_none() {
                    ignored.push(condition_text(c));
                }
                check
            })
            .collect();
        if !checks.is_empty() {
            groups.push(checks);
        }
    }
    groups
}

fn condition_text(c: &Condition) -> String {
    let op = OPERATORS
        .iter()
        .find(|(_, op)| *op == c.op)
        .map(|(name, _)| *name)
        .unwrap_or("?");
    format!("{}{}{}", c.field, op, c.value)
}

fn kind_of(t: &FieldType) -> Kind {
    match t {
        FieldType::DateTime => Kind::Date,
        FieldType::Integer => Kind::Integer,
        FieldType::String | FieldType::Reference(_) => Kind::Text,
    }
}

fn plan_condition(c: &Condition, columns: &dyn Columns, zone: FixedOffset) -> Option<Check> {
    let kind = kind_of(&columns.field_type(&c.field)?);
    let raw: Vec<&str> = match c.op {
        Op::In | Op::NotIn => c.value.split(',').collect(),
        Op::Between => c.value.split('@').collect(),
        _ => vec![c.value.as_str()],
    };
    if c.op == Op::Between && raw.len() != 2 {
        return None;
    }
    let values = raw
        .into_iter()
        .map(|v| prepare_literal(v, kind, c.op, zone))
        .collect::<Option<Vec<String>>>()?;
    Some(Check {
        field: c.field.clone(),
        op: c.op,
        kind,
        values,
    })
}

fn prepare_literal(value: &str, kind: Kind, op: Op, zone: FixedOffset) -> Option<String> {
    let textual = matches!(
        op,
        Op::Like | Op::NotLike | Op::StartsWith | Op::EndsWith | Op::IsEmpty | Op::IsNotEmpty
    ) || op == Op::Anything;
    match kind {
        Kind::Date if !textual && !value.is_empty() => {
            parse_date_literal(value, zone).map(|d| d.format(DATE_FORMAT).to_string())
        }
        Kind::Integer if !textual && !value.is_empty() => {
            value.trim().parse::<i64>().ok().map(|n| n.to_string())
        }
        _ => Some(value.to_string()),
    }
}

/// Reads a date literal as ServiceNow does: `yyyy-MM-dd HH:mm:ss` or `yyyy-MM-dd` (UTC), or
/// `javascript:gs.dateGenerate('yyyy-MM-dd','HH:mm:ss'|'start'|'end')` in the session zone.
pub fn parse_date_literal(value: &str, zone: FixedOffset) -> Option<NaiveDateTime> {
    if let Some(args) = value
        .strip_prefix("javascript:gs.dateGenerate(")
        .and_then(|r| r.strip_suffix(')'))
    {
        return date_generate(args, zone);
    }
    parse_utc(value)
}

/// Reads `yyyy-MM-dd HH:mm:ss` or `yyyy-MM-dd`.
pub fn parse_utc(value: &str) -> Option<NaiveDateTime> {
    let value = value.trim();
    NaiveDateTime::parse_from_str(value, DATE_FORMAT)
        .ok()
        .or_else(|| {
            NaiveDate::parse_from_str(value, "%Y-%m-%d")
                .ok()
                .map(|d| d.and_time(NaiveTime::MIN))
        })
}

fn date_generate(args: &str, zone: FixedOffset) -> Option<NaiveDateTime> {
    let parts: Vec<&str> = args
        .split(',')
        .map(|p| p.trim().trim_matches('\'').trim_matches('"'))
        .collect();
    let [date, time] = parts.as_slice() else {
        return None;
    };
    let date = NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let time = match *time {
        "start" => NaiveTime::MIN,
        "end" => NaiveTime::from_hms_opt(23, 59, 59)?,
        t => NaiveTime::parse_from_str(t, "%H:%M:%S").ok()?,
    };
    let local = zone.from_local_datetime(&date.and_time(time)).single()?;
    Some(local.naive_utc())
}

impl Plan {
    /// Whether a record matches; `value` gives a column's stored text ("" when empty).
    pub fn matches<'a>(&self, value: &dyn Fn(&str) -> &'a str) -> bool {
        self.blocks.is_empty()
            || self.blocks.iter().any(|block| {
                block
                    .iter()
                    .all(|group| group.iter().any(|check| check.matches(value(&check.field))))
            })
    }

    /// Compares two records by the sort keys, then by sys_id ascending (a stable tie-break).
    pub fn compare<'a>(
        &self,
        a: &dyn Fn(&str) -> &'a str,
        b: &dyn Fn(&str) -> &'a str,
    ) -> Ordering {
        for (key, kind) in &self.order {
            let ord = compare_values(a(&key.field), b(&key.field), *kind);
            let ord = if key.descending { ord.reverse() } else { ord };
            if ord != Ordering::Equal {
                return ord;
            }
        }
        a("sys_id").cmp(b("sys_id"))
    }

    /// The inclusive range of `field` (canonical date text) that every matching record lies in,
    /// if the conditions bound it: `(lower, upper)`, `None` meaning unbounded.
    pub fn range_of(&self, field: &str) -> (Option<String>, Option<String>) {
        if self.blocks.is_empty() {
            return (None, None);
        }
        let ranges: Vec<_> = self.blocks.iter().map(|b| block_range(b, field)).collect();
        let lower = ranges
            .iter()
            .map(|r| r.0.clone())
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().min());
        let upper = ranges
            .iter()
            .map(|r| r.1.clone())
            .collect::<Option<Vec<_>>>()
            .and_then(|v| v.into_iter().max());
        (lower, upper)
    }
}

fn block_range(block: &[Vec<Check>], field: &str) -> (Option<String>, Option<String>) {
    let mut lower: Option<String> = None;
    let mut upper: Option<String> = None;
    for group in block {
        let [check] = group.as_slice() else { continue };
        if check.field != field || check.kind == Kind::Integer {
            continue;
        }
        let v = check.values.first().cloned();
        let (lo, hi) = match check.op {
            Op::Gt | Op::Ge => (v, None),
            Op::Lt | Op::Le => (None, v),
            Op::Eq if check.values[0].is_empty() => (None, None),
            Op::Eq => (v.clone(), v),
            Op::Between => (v, check.values.get(1).cloned()),
            _ => (None, None),
        };
        if let Some(lo) = lo {
            lower = Some(lower.map_or(lo.clone(), |l| l.max(lo)));
        }
        if let Some(hi) = hi {
            upper = Some(upper.map_or(hi.clone(), |u| u.min(hi)));
        }
    }
    (lower, upper)
}

impl Check {
    /// Whether a stored value satisfies this condition. Empty values are SQL NULLs: they only
    /// match `ISEMPTY`, `ANYTHING` and `=` with an empty literal (ServiceNow's well-known
    /// "is not excludes empty" behaviour).
    pub fn matches(&self, stored: &str) -> bool {
        let first = self.values.first().map(String::as_str).unwrap_or("");
        match self.op {
            Op::IsEmpty => stored.is_empty(),
            Op::IsNotEmpty => !stored.is_empty(),
            Op::Anything => true,
            Op::Eq if first.is_empty() => stored.is_empty(),
            _ if stored.is_empty() => false,
            Op::Eq => self.cmp(stored, first) == Ordering::Equal,
            Op::Ne => self.cmp(stored, first) != Ordering::Equal,
            Op::Gt => self.cmp(stored, first) == Ordering::Greater,
            Op::Ge => self.cmp(stored, first) != Ordering::Less,
            Op::Lt => self.cmp(stored, first) == Ordering::Less,
            Op::Le => self.cmp(stored, first) != Ordering::Greater,
            Op::Like => stored.contains(first),
            Op::NotLike => !stored.contains(first),
            Op::StartsWith => stored.starts_with(first),
            Op::EndsWith => stored.ends_with(first),
            Op::In => self.values.iter().any(|v| self.cmp(stored, v).is_eq()),
            Op::NotIn => !self.values.iter().any(|v| self.cmp(stored, v).is_eq()),
            Op::Between => self.between(stored),
        }
    }

    fn between(&self, stored: &str) -> bool {
        let (lo, hi) = (&self.values[0], &self.values[1]);
        self.cmp(stored, lo) != Ordering::Less && self.cmp(stored, hi) != Ordering::Greater
    }

    fn cmp(&self, stored: &str, literal: &str) -> Ordering {
        compare_values(stored, literal, self.kind)
    }
}

/// Orders two stored values of a column: empty first, integers numerically, dates (canonical
/// text) chronologically, everything else by bytes.
pub fn compare_values(a: &str, b: &str, kind: Kind) -> Ordering {
    match (a.is_empty(), b.is_empty()) {
        (true, true) => return Ordering::Equal,
        (true, false) => return Ordering::Less,
        (false, true) => return Ordering::Greater,
        _ => {}
    }
    if kind == Kind::Integer {
        if let (Ok(x), Ok(y)) = (a.trim().parse::<i64>(), b.trim().parse::<i64>()) {
            return x.cmp(&y);
        }
    }
    a.cmp(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    struct Cols;
    impl Columns for Cols {
        fn field_type(&self, field: &str) -> Option<FieldType> {
            match field {
                "sys_updated_on" | "opened_at" => Some(FieldType::DateTime),
                "sys_mod_count" => Some(FieldType::Integer),
                "caller_id" => Some(FieldType::Reference("sys_user".into())),
                "sys_id" | "number" | "state" | "short_description" | "active" => {
                    Some(FieldType::String)
                }
                _ => None,
            }
        }
    }

    fn plan(q: &str) -> Plan {
        parse(q).plan(&Cols, FixedOffset::east_opt(0).unwrap())
    }

    fn rec(pairs: &[(&'static str, &'static str)]) -> HashMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    fn matches(q: &str, r: &HashMap<&'static str, &'static str>) -> bool {
        plan(q).matches(&|f| r.get(f).copied().unwrap_or(""))
    }

    #[test]
    fn parses_and_or_new_query_and_order() {
        let q =
            parse("active=true^state=1^ORstate=2^NQnumber=INC1^ORDERBYnumber^ORDERBYDESCsys_id");
        assert_eq!(q.blocks.len(), 2);
        assert_eq!(q.blocks[0].len(), 2, "two AND'ed groups");
        assert_eq!(q.blocks[0][1].len(), 2, "state=1 OR state=2");
        assert_eq!(q.blocks[1][0][0].value, "INC1");
        assert_eq!(
            q.order,
            vec![
                OrderKey {
                    field: "number".into(),
                    descending: false
                },
                OrderKey {
                    field: "sys_id".into(),
                    descending: true
                }
            ]
        );
    }

    #[test]
    fn operators_are_read_longest_first() {
        let q = parse("a>=1^b<=2^c!=3^dLIKEx^eNOT LIKEy^fSTARTSWITHz^gENDSWITHw^hIN1,2^iNOT IN3^jISEMPTY^kISNOTEMPTY");
        let ops: Vec<Op> = q.blocks[0].iter().map(|g| g[0].op).collect();
        assert_eq!(
            ops,
            vec![
                Op::Ge,
                Op::Le,
                Op::Ne,
                Op::Like,
                Op::NotLike,
                Op::StartsWith,
                Op::EndsWith,
                Op::In,
                Op::NotIn,
                Op::IsEmpty,
                Op::IsNotEmpty
            ]
        );
    }

    #[test]
    fn caret_caret_is_a_literal_caret_and_eq_ends() {
        let q = parse("short_description=a^^b^EQ");
        assert_eq!(q.blocks[0][0][0].value, "a^b");
        assert!(q.invalid.is_empty());
    }

    #[test]
    fn and_binds_looser_than_or() {
        let r = rec(&[("active", "false"), ("state", "2")]);
        assert!(!matches("active=true^state=1^ORstate=2", &r));
        assert!(matches("active=true^ORstate=2", &r));
        assert!(matches("active=true^NQstate=2", &r));
    }

    #[test]
    fn unknown_fields_and_garbage_are_dropped_and_reported() {
        let p = plan("nosuch=1^state=2^Garbage^ORDERBYnope");
        assert_eq!(p.ignored, vec!["Garbage", "nosuch=1", "ORDERBYnope"]);
        assert!(p.order.is_empty());
        let r = rec(&[("state", "2")]);
        assert!(
            matches("nosuch=1^state=2", &r),
            "the unknown part is ignored, not false"
        );
        assert!(
            matches("nosuch=1", &rec(&[])),
            "a fully invalid query matches everything"
        );
    }

    #[test]
    fn a_block_reduced_to_nothing_matches_everything() {
        let r = rec(&[("state", "9")]);
        assert!(matches("state=1^NQnosuch=2", &r));
    }

    #[test]
    fn comparisons_are_case_sensitive() {
        let r = rec(&[("short_description", "Email down")]);
        assert!(matches("short_descriptionLIKEEmail", &r));
        assert!(!matches("short_descriptionLIKEemail", &r));
        assert!(!matches("short_description=email down", &r));
        assert!(matches("short_descriptionSTARTSWITHEm", &r));
        assert!(matches("short_descriptionENDSWITHdown", &r));
    }

    #[test]
    fn dates_compare_chronologically_with_utc_literals() {
        let r = rec(&[("sys_updated_on", "2024-05-01 10:00:00")]);
        assert!(matches("sys_updated_on>=2024-05-01 10:00:00", &r));
        assert!(!matches("sys_updated_on>2024-05-01 10:00:00", &r));
        assert!(
            matches("sys_updated_on>2024-05-01", &r),
            "a bare date is midnight"
        );
        assert!(matches("sys_updated_on<2024-05-01 10:00:01", &r));
        assert!(matches("sys_updated_on=2024-05-01 10:00:00", &r));
        assert!(matches("sys_updated_onBETWEEN2024-05-01@2024-05-02", &r));
        let p = plan("sys_updated_on>=not a date");
        assert_eq!(p.ignored, vec!["sys_updated_on>=not a date"]);
    }

    #[test]
    fn date_generate_is_in_the_session_zone() {
        let zone = FixedOffset::east_opt(2 * 3600).unwrap();
        let d = parse_date_literal("javascript:gs.dateGenerate('2024-05-01','12:00:00')", zone);
        assert_eq!(d, parse_utc("2024-05-01 10:00:00"));
        let start = parse_date_literal("javascript:gs.dateGenerate('2024-05-01','start')", zone);
        assert_eq!(start, parse_utc("2024-04-30 22:00:00"));
    }

    #[test]
    fn integers_compare_numerically_strings_by_bytes() {
        let r = rec(&[("sys_mod_count", "10"), ("number", "10")]);
        assert!(matches("sys_mod_count>9", &r));
        assert!(!matches("number>9", &r), "as strings \"10\" < \"9\"");
    }

    #[test]
    fn empty_values_are_nulls() {
        let r = rec(&[("state", "")]);
        assert!(!matches("state!=1", &r));
        assert!(matches("stateISEMPTY", &r));
        assert!(matches("state=", &r));
        assert!(!matches("stateNOT IN1,2", &r));
        assert!(matches("stateANYTHING", &r));
    }

    #[test]
    fn in_and_not_in() {
        let r = rec(&[("state", "2")]);
        assert!(matches("stateIN1,2,3", &r));
        assert!(!matches("stateNOT IN1,2,3", &r));
        assert!(matches("stateNOT IN1,3", &r));
    }

    #[test]
    fn compare_orders_by_keys_then_sys_id() {
        let p = plan("ORDERBYDESCsys_mod_count");
        let a = rec(&[("sys_mod_count", "9"), ("sys_id", "b")]);
        let b = rec(&[("sys_mod_count", "10"), ("sys_id", "a")]);
        let get = |r: &HashMap<&'static str, &'static str>| {
            let r = r.clone();
            move |f: &str| -> &'static str { r.get(f).copied().unwrap_or("") }
        };
        assert_eq!(p.compare(&get(&a), &get(&b)), Ordering::Greater);
        let p = plan("ORDERBYsys_updated_on");
        assert_eq!(
            p.compare(&get(&a), &get(&b)),
            Ordering::Greater,
            "tie broken by sys_id"
        );
    }

    #[test]
    fn range_of_sys_updated_on_spans_all_blocks() {
        let p = plan("sys_updated_on>=2024-05-01 10:00:00^sys_updated_on<2024-06-01");
        assert_eq!(
            p.range_of("sys_updated_on"),
            (
                Some("2024-05-01 10:00:00".into()),
                Some("2024-06-01 00:00:00".into())
            )
        );
        let p = plan("sys_updated_on>2024-05-02^NQsys_updated_on=2024-05-01 10:00:00^sys_id>abc");
        assert_eq!(
            p.range_of("sys_updated_on").0,
            Some("2024-05-01 10:00:00".into())
        );
        let p = plan("sys_updated_on>2024-05-02^NQstate=1");
        assert_eq!(p.range_of("sys_updated_on"), (None, None));
        let p = plan("sys_updated_on>2024-05-02^ORstate=1");
        assert_eq!(
            p.range_of("sys_updated_on"),
            (None, None),
            "an OR'ed group bounds nothing"
        );
    }
}
