//! Subscription rules: correlation filters, `$Default` (true) and a tiny SQL subset.

use serde_amqp::Value;

use crate::{
    config::{CorrelationFilterConfig, RuleConfig},
    message::{message_id_string, AmqpMessage},
};

/// A compiled subscription filter.
#[derive(Debug, Clone)]
pub enum Filter {
    /// Matches every message (`$Default`, SQL `1=1`).
    True,
    /// Matches nothing (SQL `1=0`).
    False,
    /// A correlation filter.
    Correlation(Box<CorrelationFilterConfig>),
    /// A SQL filter (the subset in [`crate::sql`]).
    Sql(Box<crate::sql::Expr>),
}

impl Filter {
    /// Compiles a configured rule. SQL filters outside the supported subset are logged and
    /// match nothing.
    pub fn from_rule(rule: &RuleConfig) -> Filter {
        let p = &rule.properties;
        if p.filter_type.eq_ignore_ascii_case("correlation") {
            if let Some(cf) = &p.correlation_filter {
                return Filter::Correlation(Box::new(cf.clone()));
            }
        }
        if let Some(sql) = &p.sql_filter {
            return match crate::sql::parse(&sql.sql_expression) {
                Ok(crate::sql::Expr::Const(true)) => Filter::True,
                Ok(crate::sql::Expr::Const(false)) => Filter::False,
                Ok(expr) => Filter::Sql(Box::new(expr)),
                Err(e) => {
                    tracing::warn!(rule = %rule.name, expr = %sql.sql_expression, error = %e, "unsupported SQL filter; rule matches nothing");
                    Filter::False
                }
            };
        }
        Filter::True
    }

    /// Whether `msg` matches.
    pub fn matches(&self, msg: &AmqpMessage) -> bool {
        match self {
            Filter::True => true,
            Filter::False => false,
            Filter::Correlation(cf) => correlation_matches(cf, msg),
            Filter::Sql(expr) => expr.matches(msg),
        }
    }
}

fn eq_opt(want: &Option<String>, have: Option<String>) -> bool {
    match want {
        None => true,
        Some(w) => have.as_deref() == Some(w.as_str()),
    }
}

fn correlation_matches(cf: &CorrelationFilterConfig, msg: &AmqpMessage) -> bool {
    let p = msg.properties.clone().unwrap_or_default();
    eq_opt(&cf.content_type, p.content_type.map(|s| s.0))
        && eq_opt(
            &cf.correlation_id,
            p.correlation_id.as_ref().map(message_id_string),
        )
        && eq_opt(&cf.label, p.subject)
        && eq_opt(&cf.message_id, p.message_id.as_ref().map(message_id_string))
        && eq_opt(&cf.reply_to, p.reply_to)
        && eq_opt(&cf.reply_to_session_id, p.reply_to_group_id)
        && eq_opt(&cf.session_id, p.group_id)
        && eq_opt(&cf.to, p.to)
        && cf.properties.iter().all(|(name, want)| {
            msg.application_property(name)
                .is_some_and(|have| json_equals(want, have))
        })
}

fn json_equals(want: &serde_json::Value, have: &Value) -> bool {
    use serde_json::Value as J;
    let number = |v: &Value| -> Option<f64> {
        Some(match v {
            Value::Byte(n) => *n as f64,
            Value::Short(n) => *n as f64,
            Value::Int(n) => *n as f64,
            Value::Long(n) => *n as f64,
            Value::Ubyte(n) => *n as f64,
            Value::Ushort(n) => *n as f64,
            Value::Uint(n) => *n as f64,
            Value::Ulong(n) => *n as f64,
            Value::Float(n) => n.0 as f64,
            Value::Double(n) => n.0,
            _ => return None,
        })
    };
    match (want, have) {
        (J::String(w), Value::String(h)) => w == h,
        (J::String(w), Value::Symbol(h)) => w == h.as_str(),
        (J::Bool(w), Value::Bool(h)) => w == h,
        (J::Number(w), h) => match (w.as_f64(), number(h)) {
            (Some(a), Some(b)) => a == b,
            _ => false,
        },
        _ => false,
    }
}
