//! A subset of Service Bus SQL filter expressions: comparisons (`=`, `<>`, `!=`, `<`, `<=`, `>`,
//! `>=`), `IS [NOT] NULL`, `[NOT] IN (…)`, `[NOT] LIKE '…'` (`%`, `_`), `EXISTS(prop)`, `AND`,
//! `OR`, `NOT`, parentheses, string/number/boolean literals, `sys.<SystemProperty>` and
//! `[user.]<property>` identifiers. Unknown (missing) values make a comparison false.

use serde_amqp::Value;

use crate::message::{message_id_string, AmqpMessage};

/// A parse error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("SQL filter: {0}")]
pub struct SqlError(String);

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Str(String),
    Num(f64),
    Op(String),
    LParen,
    RParen,
    Comma,
}

fn tokenize(text: &str) -> Result<Vec<Tok>, SqlError> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            c if c.is_whitespace() => i += 1,
            '(' => {
                out.push(Tok::LParen);
                i += 1;
            }
            ')' => {
                out.push(Tok::RParen);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '\'' => {
                let mut s = String::new();
                i += 1;
                loop {
                    match chars.get(i) {
                        None => return Err(SqlError("unterminated string".into())),
                        Some('\'') if chars.get(i + 1) == Some(&'\'') => {
                            s.push('\'');
                            i += 2;
                        }
                        Some('\'') => {
                            i += 1;
                            break;
                        }
                        Some(ch) => {
                            s.push(*ch);
                            i += 1;
                        }
                    }
                }
                out.push(Tok::Str(s));
            }
            '[' => {
                let end = chars[i..]
                    .iter()
                    .position(|ch| *ch == ']')
                    .ok_or_else(|| SqlError("unterminated [identifier]".into()))?;
                out.push(Tok::Ident(chars[i + 1..i + end].iter().collect()));
                i += end + 1;
            }
            '=' | '<' | '>' | '!' => {
                let two: String = chars[i..(i + 2).min(chars.len())].iter().collect();
                let op = if ["<>", "!=", "<=", ">="].contains(&two.as_str()) {
                    two
                } else {
                    c.to_string()
                };
                if op == "!" {
                    return Err(SqlError("unexpected '!'".into()));
                }
                i += op.chars().count();
                out.push(Tok::Op(op));
            }
            c if c.is_ascii_digit()
                || (c == '-' && chars.get(i + 1).is_some_and(|d| d.is_ascii_digit())) =>
            {
                let start = i;
                i += 1;
                while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.') {
                    i += 1;
                }
                let n: String = chars[start..i].iter().collect();
                out.push(Tok::Num(
                    n.parse().map_err(|_| SqlError(format!("bad number {n}")))?,
                ));
            }
            c if c.is_alphabetic() || c == '_' || c == '$' => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | '.' | '$' | '-'))
                {
                    i += 1;
                }
                out.push(Tok::Ident(chars[start..i].iter().collect()));
            }
            other => return Err(SqlError(format!("unexpected character {other:?}"))),
        }
        if out.len() > 10_000 {
            return Err(SqlError("expression too long".into()));
        }
    }
    Ok(out)
}

/// A literal or a property reference.
#[derive(Debug, Clone, PartialEq)]
enum Operand {
    Lit(Lit),
    Prop { system: bool, name: String },
}

#[derive(Debug, Clone, PartialEq)]
enum Lit {
    Str(String),
    Num(f64),
    Bool(bool),
    Null,
}

/// A compiled SQL filter.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    /// Constant.
    Const(bool),
    /// `a AND b`.
    And(Box<Expr>, Box<Expr>),
    /// `a OR b`.
    Or(Box<Expr>, Box<Expr>),
    /// `NOT a`.
    Not(Box<Expr>),
    /// Comparison.
    Cmp(Box<(Operand2, String, Operand2)>),
    /// `x IS [NOT] NULL`.
    IsNull(Operand2, bool),
    /// `x [NOT] IN (...)`.
    In(Operand2, Vec<Operand2>, bool),
    /// `x [NOT] LIKE 'pattern'`.
    Like(Operand2, String, bool),
    /// `EXISTS(prop)`.
    Exists(Operand2),
}

/// An operand (opaque outside this module).
#[derive(Debug, Clone, PartialEq)]
pub struct Operand2(Operand);

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
    depth: usize,
}

fn kw(t: Option<&Tok>, word: &str) -> bool {
    matches!(t, Some(Tok::Ident(s)) if s.eq_ignore_ascii_case(word))
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }
    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }
    fn expect(&mut self, t: Tok) -> Result<(), SqlError> {
        match self.next() {
            Some(x) if x == t => Ok(()),
            other => Err(SqlError(format!("expected {t:?}, found {other:?}"))),
        }
    }
    fn or(&mut self) -> Result<Expr, SqlError> {
        self.depth += 1;
        if self.depth > 64 {
            return Err(SqlError("expression nested too deeply".into()));
        }
        let mut e = self.and()?;
        while kw(self.peek(), "OR") {
            self.pos += 1;
            e = Expr::Or(Box::new(e), Box::new(self.and()?));
        }
        self.depth -= 1;
        Ok(e)
    }
    fn and(&mut self) -> Result<Expr, SqlError> {
        let mut e = self.not()?;
        while kw(self.peek(), "AND") {
            self.pos += 1;
            e = Expr::And(Box::new(e), Box::new(self.not()?));
        }
        Ok(e)
    }
    fn not(&mut self) -> Result<Expr, SqlError> {
        if kw(self.peek(), "NOT") {
            self.pos += 1;
            self.depth += 1;
            if self.depth > 64 {
                return Err(SqlError("expression nested too deeply".into()));
            }
            let inner = self.not()?;
            self.depth -= 1;
            return Ok(Expr::Not(Box::new(inner)));
        }
        self.primary()
    }
    fn operand(&mut self) -> Result<Operand2, SqlError> {
        Ok(Operand2(match self.next() {
            Some(Tok::Str(s)) => Operand::Lit(Lit::Str(s)),
            Some(Tok::Num(n)) => Operand::Lit(Lit::Num(n)),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("TRUE") => Operand::Lit(Lit::Bool(true)),
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("FALSE") => {
                Operand::Lit(Lit::Bool(false))
            }
            Some(Tok::Ident(s)) if s.eq_ignore_ascii_case("NULL") => Operand::Lit(Lit::Null),
            Some(Tok::Ident(s)) => {
                let lower = s.to_ascii_lowercase();
                if let Some(rest) = lower.strip_prefix("sys.") {
                    Operand::Prop {
                        system: true,
                        name: rest.to_string(),
                    }
                } else if lower.starts_with("user.") {
                    Operand::Prop {
                        system: false,
                        name: s[5..].to_string(),
                    }
                } else {
                    Operand::Prop {
                        system: false,
                        name: s,
                    }
                }
            }
            other => return Err(SqlError(format!("expected an operand, found {other:?}"))),
        }))
    }
    fn primary(&mut self) -> Result<Expr, SqlError> {
        if self.peek() == Some(&Tok::LParen) {
            self.pos += 1;
            let e = self.or()?;
            self.expect(Tok::RParen)?;
            return Ok(e);
        }
        if kw(self.peek(), "EXISTS") {
            self.pos += 1;
            self.expect(Tok::LParen)?;
            let o = self.operand()?;
            self.expect(Tok::RParen)?;
            return Ok(Expr::Exists(o));
        }
        let left = self.operand()?;
        if kw(self.peek(), "IS") {
            self.pos += 1;
            let negated = kw(self.peek(), "NOT");
            if negated {
                self.pos += 1;
            }
            if !kw(self.next().as_ref(), "NULL") {
                return Err(SqlError("expected NULL after IS".into()));
            }
            return Ok(Expr::IsNull(left, negated));
        }
        let negated = kw(self.peek(), "NOT");
        if negated {
            self.pos += 1;
        }
        if kw(self.peek(), "IN") {
            self.pos += 1;
            self.expect(Tok::LParen)?;
            let mut items = vec![self.operand()?];
            while self.peek() == Some(&Tok::Comma) {
                self.pos += 1;
                items.push(self.operand()?);
            }
            self.expect(Tok::RParen)?;
            return Ok(Expr::In(left, items, negated));
        }
        if kw(self.peek(), "LIKE") {
            self.pos += 1;
            return match self.next() {
                Some(Tok::Str(p)) => Ok(Expr::Like(left, p, negated)),
                other => Err(SqlError(format!(
                    "LIKE needs a string pattern, found {other:?}"
                ))),
            };
        }
        if negated {
            return Err(SqlError("NOT must precede IN or LIKE here".into()));
        }
        match self.next() {
            Some(Tok::Op(op)) => {
                let right = self.operand()?;
                Ok(Expr::Cmp(Box::new((left, op, right))))
            }
            None => match left.0 {
                Operand::Lit(Lit::Bool(b)) => Ok(Expr::Const(b)),
                _ => Err(SqlError("expected a comparison".into())),
            },
            other => Err(SqlError(format!(
                "expected a comparison operator, found {other:?}"
            ))),
        }
    }
}

/// Parses a filter expression.
pub fn parse(text: &str) -> Result<Expr, SqlError> {
    let toks = tokenize(text)?;
    if toks.is_empty() {
        return Ok(Expr::Const(true));
    }
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let e = p.or()?;
    if p.pos != p.toks.len() {
        return Err(SqlError(format!("unexpected {:?}", p.peek())));
    }
    Ok(e)
}

fn lit_of(v: &Value) -> Lit {
    match v {
        Value::String(s) => Lit::Str(s.clone()),
        Value::Symbol(s) => Lit::Str(s.as_str().to_string()),
        Value::Bool(b) => Lit::Bool(*b),
        Value::Byte(n) => Lit::Num(*n as f64),
        Value::Short(n) => Lit::Num(*n as f64),
        Value::Int(n) => Lit::Num(*n as f64),
        Value::Long(n) => Lit::Num(*n as f64),
        Value::Ubyte(n) => Lit::Num(*n as f64),
        Value::Ushort(n) => Lit::Num(*n as f64),
        Value::Uint(n) => Lit::Num(*n as f64),
        Value::Ulong(n) => Lit::Num(*n as f64),
        Value::Float(n) => Lit::Num(n.0 as f64),
        Value::Double(n) => Lit::Num(n.0),
        Value::Uuid(u) => Lit::Str(uuid::Uuid::from_bytes(*u.as_inner()).to_string()),
        _ => Lit::Null,
    }
}

fn resolve(o: &Operand2, msg: &AmqpMessage) -> Lit {
    match &o.0 {
        Operand::Lit(l) => l.clone(),
        Operand::Prop {
            system: false,
            name,
        } => msg
            .application_property(name)
            .map(lit_of)
            .unwrap_or(Lit::Null),
        Operand::Prop { system: true, name } => {
            let p = msg.properties.clone().unwrap_or_default();
            let s = match name.as_str() {
                "messageid" => p.message_id.as_ref().map(message_id_string),
                "correlationid" => p.correlation_id.as_ref().map(message_id_string),
                "label" | "subject" => p.subject,
                "to" => p.to,
                "replyto" => p.reply_to,
                "sessionid" => p.group_id,
                "replytosessionid" => p.reply_to_group_id,
                "contenttype" => p.content_type.map(|s| s.0),
                _ => None,
            };
            s.map(Lit::Str).unwrap_or(Lit::Null)
        }
    }
}

fn compare(a: &Lit, op: &str, b: &Lit) -> Option<bool> {
    use std::cmp::Ordering;
    let ord = match (a, b) {
        (Lit::Null, _) | (_, Lit::Null) => return None,
        (Lit::Str(x), Lit::Str(y)) => x.cmp(y),
        (Lit::Num(x), Lit::Num(y)) => x.partial_cmp(y)?,
        (Lit::Bool(x), Lit::Bool(y)) => x.cmp(y),
        _ => return Some(matches!(op, "<>" | "!=")),
    };
    Some(match op {
        "=" => ord == Ordering::Equal,
        "<>" | "!=" => ord != Ordering::Equal,
        "<" => ord == Ordering::Less,
        "<=" => ord != Ordering::Greater,
        ">" => ord == Ordering::Greater,
        ">=" => ord != Ordering::Less,
        _ => return None,
    })
}

fn like(text: &str, pattern: &str) -> bool {
    let t: Vec<char> = text.chars().collect();
    let p: Vec<char> = pattern.chars().collect();
    // Iterative wildcard match with backtracking on the last '%'.
    let (mut ti, mut pi, mut star, mut mark) = (0usize, 0usize, None::<usize>, 0usize);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '_' || p[pi] == t[ti]) {
            ti += 1;
            pi += 1;
        } else if pi < p.len() && p[pi] == '%' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '%' {
        pi += 1;
    }
    pi == p.len()
}

/// Three-valued evaluation (`None` = unknown).
fn eval3(e: &Expr, msg: &AmqpMessage) -> Option<bool> {
    match e {
        Expr::Const(b) => Some(*b),
        Expr::And(a, b) => match (eval3(a, msg), eval3(b, msg)) {
            (Some(false), _) | (_, Some(false)) => Some(false),
            (Some(true), Some(true)) => Some(true),
            _ => None,
        },
        Expr::Or(a, b) => match (eval3(a, msg), eval3(b, msg)) {
            (Some(true), _) | (_, Some(true)) => Some(true),
            (Some(false), Some(false)) => Some(false),
            _ => None,
        },
        Expr::Not(a) => eval3(a, msg).map(|b| !b),
        Expr::Cmp(c) => compare(&resolve(&c.0, msg), &c.1, &resolve(&c.2, msg)),
        Expr::IsNull(o, negated) => Some((resolve(o, msg) == Lit::Null) != *negated),
        Expr::In(o, items, negated) => {
            let v = resolve(o, msg);
            if v == Lit::Null {
                return None;
            }
            let found = items
                .iter()
                .any(|i| compare(&v, "=", &resolve(i, msg)) == Some(true));
            Some(found != *negated)
        }
        Expr::Like(o, pattern, negated) => match resolve(o, msg) {
            Lit::Str(s) => Some(like(&s, pattern) != *negated),
            _ => None,
        },
        Expr::Exists(o) => Some(resolve(o, msg) != Lit::Null),
    }
}

impl Expr {
    /// Whether `msg` matches (unknown counts as no match).
    pub fn matches(&self, msg: &AmqpMessage) -> bool {
        eval3(self, msg) == Some(true)
    }
}

#[cfg(test)]
mod tests {
    use fe2o3_amqp_types::messaging::{MessageId, Properties};

    use super::*;

    fn msg() -> AmqpMessage {
        let mut m = AmqpMessage::with_data(b"{}");
        m.properties = Some(Properties {
            message_id: Some(MessageId::String("123456".into())),
            subject: Some("contact.updated".into()),
            ..Default::default()
        });
        m.set_application_property("userProp1", Value::String("value1".into()));
        m.set_application_property("priority", Value::Long(5));
        m.set_application_property("flag", Value::Bool(true));
        m
    }

    fn check(expr: &str) -> bool {
        parse(expr)
            .unwrap_or_else(|e| panic!("{expr}: {e}"))
            .matches(&msg())
    }

    #[test]
    fn microsoft_sample_and_friends() {
        assert!(check("sys.MessageId = '123456' AND userProp1 = 'value1'"));
        assert!(!check("sys.MessageId = '123456' AND userProp1 = 'value2'"));
        assert!(check("1=1") && !check("1=0") && check("TRUE") && check(""));
        assert!(check("priority > 3 AND priority <= 5 AND flag = TRUE"));
        assert!(check("user.priority IN (1, 5, 9) AND NOT (priority <> 5)"));
        assert!(check(
            "sys.Label LIKE 'contact.%' AND sys.Label NOT LIKE '%.deleted'"
        ));
        assert!(check(
            "missing IS NULL AND userProp1 IS NOT NULL AND EXISTS(userProp1)"
        ));
        assert!(
            !check("missing = 'x'") && !check("NOT missing = 'x'"),
            "unknown is not a match"
        );
        assert!(check("missing = 'x' OR [userProp1] = 'value1'"));
        assert!(check("userProp1 = 'it''s' OR 1=1"));
    }

    #[test]
    fn malformed_expressions_are_errors() {
        for bad in [
            "a =", "(a = 1", "a = 'x", "a ! b", "a LIKE 5", "a IS 3", "= 1", "a = 1 b",
        ] {
            assert!(parse(bad).is_err(), "{bad} should not parse");
        }
        let deep = format!("{}a = 1{}", "(".repeat(200), ")".repeat(200));
        assert!(parse(&deep).is_err(), "deep nesting refused");
    }

    #[test]
    fn like_wildcards() {
        assert!(like("abc", "a%") && like("abc", "%c") && like("abc", "a_c") && like("abc", "%"));
        assert!(!like("abc", "a_") && !like("abc", "b%"));
    }
}
