//! Label lookup used by the evaluator.

use std::collections::{BTreeMap, HashMap};
use std::hash::BuildHasher;

/// Something a selector can be evaluated against: a lookup from label key to value.
pub trait Labels {
    /// The value of label `key`, or `None` when the label is absent.
    fn get_label(&self, key: &str) -> Option<&str>;
}

impl Labels for BTreeMap<String, String> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl<S: BuildHasher> Labels for HashMap<String, String, S> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.get(key).map(String::as_str)
    }
}

impl Labels for [(&str, &str)] {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == key).map(|(_, v)| *v)
    }
}

impl<L: Labels + ?Sized> Labels for &L {
    fn get_label(&self, key: &str) -> Option<&str> {
        (**self).get_label(key)
    }
}

/// Two label sources seen as one: `first` wins, `second` fills in what `first` lacks.
///
/// Calico evaluates selectors over an endpoint's own labels layered over the labels it inherits
/// from its profiles (namespace and service account); the endpoint's own labels take precedence.
#[derive(Debug, Clone, Copy)]
pub struct Layered<A, B> {
    /// Labels that take precedence.
    pub first: A,
    /// Labels used only where `first` has no value.
    pub second: B,
}

impl<A: Labels, B: Labels> Labels for Layered<A, B> {
    fn get_label(&self, key: &str) -> Option<&str> {
        self.first
            .get_label(key)
            .or_else(|| self.second.get_label(key))
    }
}
