//! Calico's label selector language: parser, evaluator and canonical printer.
//!
//! ```
//! use std::collections::BTreeMap;
//! use calico_selector::Selector;
//!
//! let sel = Selector::parse("role == 'db' && env in {'prod', 'staging'}").unwrap();
//! let labels: BTreeMap<String, String> =
//!     [("role".to_string(), "db".to_string()), ("env".to_string(), "prod".to_string())].into();
//! assert!(sel.matches(&labels));
//! assert_eq!(sel.to_string(), r#"(role == "db" && env in {"prod", "staging"})"#);
//! ```
//!
//! Semantics follow Calico (libcalico-go `selector`): `!=` and `not in` match when the label is
//! absent; `==`, `in`, `contains`, `starts with` and `ends with` need the label present;
//! `all()` and `global()` match everything (a rule's `namespaceSelector: global()` is given its
//! "non-namespaced resources" meaning by the policy compiler, as Calico's rule conversion does);
//! the empty selector is `all()`.

mod ast;
mod labels;
mod parser;

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

pub use ast::{Expr, ExprError, MAX_LABEL_LENGTH, is_valid_label_key};
pub use labels::{Labels, Layered};
pub use parser::{MAX_NESTING, ParseError};

/// A parsed selector. Equality is structural on the parse tree, so two selectors that print the
/// same are equal; semantically equivalent but differently written selectors are not.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Selector {
    expr: Expr,
}

impl Selector {
    /// Parses selector text with Calico's grammar; `""` is `all()`.
    pub fn parse(input: &str) -> Result<Selector, ParseError> {
        parser::parse(input).map(|expr| Selector { expr })
    }

    /// The selector that matches everything.
    pub fn all() -> Selector {
        Selector { expr: Expr::All }
    }

    /// Builds a selector from a tree made in code. The tree is normalized to a shape the parser
    /// produces (see [`Expr::normalize`]), so printing and re-parsing gives back an equal value.
    pub fn from_expr(expr: Expr) -> Result<Selector, ExprError> {
        expr.validate()?;
        Ok(Selector {
            expr: expr.normalize(),
        })
    }

    /// The parse tree.
    pub fn expr(&self) -> &Expr {
        &self.expr
    }

    /// Whether the labels satisfy the selector.
    pub fn matches<L: Labels + ?Sized>(&self, labels: &L) -> bool {
        self.expr.matches(labels)
    }

    /// Whether this is exactly `all()` (or the empty selector).
    pub fn is_all(&self) -> bool {
        self.expr == Expr::All
    }

    /// Every label key the selector reads, sorted and without repeats: an endpoint whose labels
    /// change only outside this set cannot change whether it matches.
    pub fn label_keys(&self) -> BTreeSet<&str> {
        let mut keys = BTreeSet::new();
        self.expr.for_each_label(&mut |k| {
            keys.insert(k);
        });
        keys
    }

    /// `self && other`, dropping an `all()` side.
    pub fn and(&self, other: &Selector) -> Selector {
        match (&self.expr, &other.expr) {
            (Expr::All, _) => other.clone(),
            (_, Expr::All) => self.clone(),
            (a, b) => Selector {
                expr: Expr::And(vec![a.clone(), b.clone()]),
            },
        }
    }

    /// A copy with every label key rewritten by `f`; an error when `f` yields a key the language
    /// cannot write.
    pub fn map_labels(&self, f: impl Fn(&str) -> String) -> Result<Selector, ExprError> {
        Selector::from_expr(self.expr.map_labels(&f))
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.expr, f)
    }
}

impl FromStr for Selector {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Selector::parse(s)
    }
}
