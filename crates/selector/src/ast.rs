//! The selector syntax tree, its evaluation and its canonical text form.

use std::collections::BTreeSet;
use std::fmt;

use crate::labels::Labels;

/// Longest label key Calico's tokenizer accepts.
pub const MAX_LABEL_LENGTH: usize = 512;

/// One node of a selector expression.
///
/// The shapes are those Calico's parser produces: `&&` and `||` chains are n-ary (one node per
/// chain, a parenthesised sub-expression stays a nested node), and a run of leading `!` is
/// collapsed to at most one [`Expr::Not`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Expr {
    /// `all()`: matches everything.
    All,
    /// `global()`: matches everything when evaluated; in a rule's `namespaceSelector` it means
    /// "non-namespaced resources" (the policy compiler rewrites it before evaluation).
    Global,
    /// `has(key)`: the label is present, with any value.
    Has(String),
    /// `key == "value"`: present and equal.
    Eq(String, String),
    /// `key != "value"`: absent, or present with another value.
    Ne(String, String),
    /// `key in {"a", "b"}`: present with one of the values.
    In(String, BTreeSet<String>),
    /// `key not in {"a", "b"}`: absent, or present with none of the values.
    NotIn(String, BTreeSet<String>),
    /// `key contains "s"`: present and containing the substring.
    Contains(String, String),
    /// `key starts with "s"`: present with the prefix.
    StartsWith(String, String),
    /// `key ends with "s"`: present with the suffix.
    EndsWith(String, String),
    /// `!expr`.
    Not(Box<Expr>),
    /// `a && b && ...`.
    And(Vec<Expr>),
    /// `a || b || ...`.
    Or(Vec<Expr>),
}

/// Why an [`Expr`] built by hand cannot be a selector.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExprError {
    /// A label key is empty, too long, or has a character outside `[A-Za-z0-9_./-]`.
    #[error(
        "invalid label key {key:?}: keys are 1..={MAX_LABEL_LENGTH} characters of [A-Za-z0-9_./-]"
    )]
    InvalidLabelKey {
        /// The offending key.
        key: String,
    },
    /// A value holds both quote characters: the language has no escapes, so it cannot be written.
    #[error("value {value:?} contains both ' and \", which a selector cannot express")]
    UnquotableValue {
        /// The offending value.
        value: String,
    },
}

pub(crate) fn is_label_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'/' | b'-')
}

/// Whether `key` is a label key the selector language can write (Calico's tokenizer rule).
pub fn is_valid_label_key(key: &str) -> bool {
    !key.is_empty() && key.len() <= MAX_LABEL_LENGTH && key.bytes().all(is_label_char)
}

impl Expr {
    /// Evaluates the expression against a set of labels, with Calico's semantics.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        match self {
            Expr::All | Expr::Global => true,
            Expr::Has(k) => labels.get_label(k).is_some(),
            Expr::Eq(k, v) => labels.get_label(k) == Some(v.as_str()),
            Expr::Ne(k, v) => labels.get_label(k) != Some(v.as_str()),
            Expr::In(k, set) => labels.get_label(k).is_some_and(|v| set.contains(v)),
            Expr::NotIn(k, set) => !labels.get_label(k).is_some_and(|v| set.contains(v)),
            Expr::Contains(k, s) => labels.get_label(k).is_some_and(|v| v.contains(s.as_str())),
            Expr::StartsWith(k, s) => labels
                .get_label(k)
                .is_some_and(|v| v.starts_with(s.as_str())),
            Expr::EndsWith(k, s) => labels.get_label(k).is_some_and(|v| v.ends_with(s.as_str())),
            Expr::Not(e) => !e.matches(labels),
            Expr::And(es) => es.iter().all(|e| e.matches(labels)),
            Expr::Or(es) => es.iter().any(|e| e.matches(labels)),
        }
    }

    /// Calls `f` on every label key the expression reads, in tree order (with repeats).
    pub fn for_each_label<'a>(&'a self, f: &mut impl FnMut(&'a str)) {
        match self {
            Expr::All | Expr::Global => {}
            Expr::Has(k)
            | Expr::Eq(k, _)
            | Expr::Ne(k, _)
            | Expr::In(k, _)
            | Expr::NotIn(k, _)
            | Expr::Contains(k, _)
            | Expr::StartsWith(k, _)
            | Expr::EndsWith(k, _) => f(k),
            Expr::Not(e) => e.for_each_label(f),
            Expr::And(es) | Expr::Or(es) => es.iter().for_each(|e| e.for_each_label(f)),
        }
    }

    /// A copy with every label key rewritten by `f` (values untouched).
    pub fn map_labels(&self, f: &impl Fn(&str) -> String) -> Expr {
        match self {
            Expr::All => Expr::All,
            Expr::Global => Expr::Global,
            Expr::Has(k) => Expr::Has(f(k)),
            Expr::Eq(k, v) => Expr::Eq(f(k), v.clone()),
            Expr::Ne(k, v) => Expr::Ne(f(k), v.clone()),
            Expr::In(k, s) => Expr::In(f(k), s.clone()),
            Expr::NotIn(k, s) => Expr::NotIn(f(k), s.clone()),
            Expr::Contains(k, v) => Expr::Contains(f(k), v.clone()),
            Expr::StartsWith(k, v) => Expr::StartsWith(f(k), v.clone()),
            Expr::EndsWith(k, v) => Expr::EndsWith(f(k), v.clone()),
            Expr::Not(e) => Expr::Not(Box::new(e.map_labels(f))),
            Expr::And(es) => Expr::And(es.iter().map(|e| e.map_labels(f)).collect()),
            Expr::Or(es) => Expr::Or(es.iter().map(|e| e.map_labels(f)).collect()),
        }
    }

    /// A copy with every `all()` and `global()` leaf replaced by the given expressions.
    pub fn replace_all_and_global(&self, all: &Expr, global: &Expr) -> Expr {
        match self {
            Expr::All => all.clone(),
            Expr::Global => global.clone(),
            Expr::Not(e) => Expr::Not(Box::new(e.replace_all_and_global(all, global))),
            Expr::And(es) => Expr::And(
                es.iter()
                    .map(|e| e.replace_all_and_global(all, global))
                    .collect(),
            ),
            Expr::Or(es) => Expr::Or(
                es.iter()
                    .map(|e| e.replace_all_and_global(all, global))
                    .collect(),
            ),
            leaf => leaf.clone(),
        }
    }

    /// Whether `global()` occurs anywhere in the expression.
    pub fn mentions_global(&self) -> bool {
        match self {
            Expr::Global => true,
            Expr::Not(e) => e.mentions_global(),
            Expr::And(es) | Expr::Or(es) => es.iter().any(Expr::mentions_global),
            _ => false,
        }
    }

    /// Checks every key and value can be written in selector syntax.
    pub fn validate(&self) -> Result<(), ExprError> {
        let key = |k: &String| {
            if is_valid_label_key(k) {
                Ok(())
            } else {
                Err(ExprError::InvalidLabelKey { key: k.clone() })
            }
        };
        let value = |v: &String| {
            if v.contains('"') && v.contains('\'') {
                Err(ExprError::UnquotableValue { value: v.clone() })
            } else {
                Ok(())
            }
        };
        match self {
            Expr::All | Expr::Global => Ok(()),
            Expr::Has(k) => key(k),
            Expr::Eq(k, v)
            | Expr::Ne(k, v)
            | Expr::Contains(k, v)
            | Expr::StartsWith(k, v)
            | Expr::EndsWith(k, v) => key(k).and_then(|()| value(v)),
            Expr::In(k, s) | Expr::NotIn(k, s) => {
                key(k)?;
                s.iter().try_for_each(value)
            }
            Expr::Not(e) => e.validate(),
            Expr::And(es) | Expr::Or(es) => es.iter().try_for_each(Expr::validate),
        }
    }

    /// Rewrites shapes the parser can never produce into equivalent ones it does produce:
    /// empty chains become `all()` (`&&`) or `!all()` (`||`), one-element chains their element.
    pub fn normalize(self) -> Expr {
        match self {
            Expr::Not(e) => Expr::Not(Box::new(e.normalize())),
            Expr::And(es) => normalize_chain(es, Expr::And, Expr::All),
            Expr::Or(es) => normalize_chain(es, Expr::Or, Expr::Not(Box::new(Expr::All))),
            leaf => leaf,
        }
    }
}

fn normalize_chain(es: Vec<Expr>, make: fn(Vec<Expr>) -> Expr, empty: Expr) -> Expr {
    let mut es: Vec<Expr> = es.into_iter().map(Expr::normalize).collect();
    match es.len() {
        0 => empty,
        1 => es.pop().unwrap_or(empty),
        _ => make(es),
    }
}

fn write_quoted(f: &mut fmt::Formatter<'_>, s: &str) -> fmt::Result {
    // Calico's choice: double quotes unless the value itself holds one.
    let q = if s.contains('"') { '\'' } else { '"' };
    write!(f, "{q}{s}{q}")
}

fn write_set(
    f: &mut fmt::Formatter<'_>,
    key: &str,
    op: &str,
    set: &BTreeSet<String>,
) -> fmt::Result {
    write!(f, "{key} {op} {{")?;
    for (i, v) in set.iter().enumerate() {
        if i > 0 {
            f.write_str(", ")?;
        }
        write_quoted(f, v)?;
    }
    f.write_str("}")
}

fn write_chain(f: &mut fmt::Formatter<'_>, es: &[Expr], op: &str) -> fmt::Result {
    f.write_str("(")?;
    for (i, e) in es.iter().enumerate() {
        if i > 0 {
            f.write_str(op)?;
        }
        write!(f, "{e}")?;
    }
    f.write_str(")")
}

/// Canonical text, the same as Calico's `Selector.String()` for every tree its parser produces:
/// chains in parentheses, single spaces around operators, sets sorted, double quotes preferred.
/// One deliberate difference: `!` applied to a `!` node is written `!(!x)`, because `!!x`
/// re-parses to `x` (Calico collapses runs of `!`).
impl fmt::Display for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Expr::All => f.write_str("all()"),
            Expr::Global => f.write_str("global()"),
            Expr::Has(k) => write!(f, "has({k})"),
            Expr::Eq(k, v) => {
                write!(f, "{k} == ")?;
                write_quoted(f, v)
            }
            Expr::Ne(k, v) => {
                write!(f, "{k} != ")?;
                write_quoted(f, v)
            }
            Expr::Contains(k, v) => {
                write!(f, "{k} contains ")?;
                write_quoted(f, v)
            }
            Expr::StartsWith(k, v) => {
                write!(f, "{k} starts with ")?;
                write_quoted(f, v)
            }
            Expr::EndsWith(k, v) => {
                write!(f, "{k} ends with ")?;
                write_quoted(f, v)
            }
            Expr::In(k, s) => write_set(f, k, "in", s),
            Expr::NotIn(k, s) => write_set(f, k, "not in", s),
            Expr::Not(e) => match e.as_ref() {
                Expr::Not(_) => write!(f, "!({e})"),
                _ => write!(f, "!{e}"),
            },
            Expr::And(es) => write_chain(f, es, " && "),
            Expr::Or(es) => write_chain(f, es, " || "),
        }
    }
}
