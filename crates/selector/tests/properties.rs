//! Property tests: random trees print and re-parse to themselves, the evaluator agrees with an
//! independent reference evaluator, and Boolean identities hold.

use std::collections::{BTreeMap, BTreeSet};

use calico_selector::{Expr, Selector};
use proptest::prelude::*;

// Small alphabets so random labels collide with random selectors often.
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("in".to_string()),
        Just("contains".to_string()),
        Just("has".to_string()),
        Just("all".to_string()),
        Just("projectcalico.org/namespace".to_string()),
        Just("k8s-app_1".to_string()),
    ]
}

fn value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        Just("x".to_string()),
        Just("xy".to_string()),
        Just("y".to_string()),
        Just("it's".to_string()),
        Just("say \"x\"".to_string()),
        Just(" && ) || (".to_string()),
    ]
}

fn leaf() -> impl Strategy<Value = Expr> {
    prop_oneof![
        Just(Expr::All),
        Just(Expr::Global),
        key().prop_map(Expr::Has),
        (key(), value()).prop_map(|(k, v)| Expr::Eq(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::Ne(k, v)),
        (key(), prop::collection::btree_set(value(), 0..3)).prop_map(|(k, s)| Expr::In(k, s)),
        (key(), prop::collection::btree_set(value(), 0..3)).prop_map(|(k, s)| Expr::NotIn(k, s)),
        (key(), value()).prop_map(|(k, v)| Expr::Contains(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::StartsWith(k, v)),
        (key(), value()).prop_map(|(k, v)| Expr::EndsWith(k, v)),
    ]
}

fn expr() -> impl Strategy<Value = Expr> {
    leaf().prop_recursive(5, 48, 4, |inner| {
        prop_oneof![
            inner.clone().prop_map(|e| Expr::Not(Box::new(e))),
            prop::collection::vec(inner.clone(), 0..4).prop_map(Expr::And),
            prop::collection::vec(inner, 0..4).prop_map(Expr::Or),
        ]
    })
}

fn label_map() -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(key(), value(), 0..5)
}

/// Reference semantics written independently of the crate: each operator spelled out from
/// Calico's documentation over a plain list of pairs.
fn reference(e: &Expr, labels: &[(String, String)]) -> bool {
    let lookup = |k: &str| -> Option<&str> {
        labels
            .iter()
            .find(|(lk, _)| lk == k)
            .map(|(_, v)| v.as_str())
    };
    match e {
        Expr::All | Expr::Global => true,
        Expr::Has(k) => lookup(k).is_some(),
        Expr::Eq(k, v) => matches!(lookup(k), Some(x) if x == v),
        Expr::Ne(k, v) => match lookup(k) {
            None => true,
            Some(x) => x != v,
        },
        Expr::In(k, s) => match lookup(k) {
            None => false,
            Some(x) => s.iter().any(|m| m == x),
        },
        Expr::NotIn(k, s) => match lookup(k) {
            None => true,
            Some(x) => s.iter().all(|m| m != x),
        },
        Expr::Contains(k, v) => lookup(k).is_some_and(|x| x.find(v.as_str()).is_some()),
        Expr::StartsWith(k, v) => {
            lookup(k).is_some_and(|x| x.len() >= v.len() && &x[..v.len()] == v)
        }
        Expr::EndsWith(k, v) => {
            lookup(k).is_some_and(|x| x.len() >= v.len() && &x[x.len() - v.len()..] == v)
        }
        Expr::Not(inner) => !reference(inner, labels),
        Expr::And(es) => {
            let mut r = true;
            for e in es {
                r = r && reference(e, labels);
            }
            r
        }
        Expr::Or(es) => {
            let mut r = false;
            for e in es {
                r = r || reference(e, labels);
            }
            r
        }
    }
}

fn pairs(m: &BTreeMap<String, String>) -> Vec<(String, String)> {
    m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn printing_then_parsing_gives_back_the_same_selector(e in expr()) {
        let sel = Selector::from_expr(e).unwrap();
        let text = sel.to_string();
        let reparsed = Selector::parse(&text).unwrap_or_else(|err| panic!("{text:?}: {err}"));
        prop_assert_eq!(&reparsed, &sel, "text {}", text);
        prop_assert_eq!(reparsed.to_string(), text);
    }

    #[test]
    fn normalization_keeps_the_meaning(e in expr(), labels in label_map()) {
        let sel = Selector::from_expr(e.clone()).unwrap();
        prop_assert_eq!(sel.matches(&labels), reference(&e, &pairs(&labels)));
    }

    #[test]
    fn evaluator_agrees_with_the_reference(e in expr(), labels in label_map()) {
        prop_assert_eq!(e.matches(&labels), reference(&e, &pairs(&labels)));
        let sel = Selector::from_expr(e).unwrap();
        let reparsed = Selector::parse(&sel.to_string()).unwrap();
        prop_assert_eq!(reparsed.matches(&labels), sel.matches(&labels));
    }

    #[test]
    fn de_morgan_holds(es in prop::collection::vec(expr(), 1..4), labels in label_map()) {
        let not = |e: &Expr| Expr::Not(Box::new(e.clone()));
        let not_and = Expr::Not(Box::new(Expr::And(es.clone())));
        let or_not = Expr::Or(es.iter().map(not).collect());
        prop_assert_eq!(not_and.matches(&labels), or_not.matches(&labels));
        let not_or = Expr::Not(Box::new(Expr::Or(es.clone())));
        let and_not = Expr::And(es.iter().map(not).collect());
        prop_assert_eq!(not_or.matches(&labels), and_not.matches(&labels));
        // The same through the text form.
        let parse = |e: Expr| Selector::parse(&Selector::from_expr(e).unwrap().to_string()).unwrap();
        prop_assert_eq!(parse(not_and).matches(&labels), parse(or_not).matches(&labels));
    }

    #[test]
    fn negative_operators_are_negations_of_positive_ones(
        k in key(), v in value(), s in prop::collection::btree_set(value(), 0..3), labels in label_map()
    ) {
        let ne = Selector::parse(&Selector::from_expr(Expr::Ne(k.clone(), v.clone())).unwrap().to_string()).unwrap();
        let not_eq = Expr::Not(Box::new(Expr::Eq(k.clone(), v)));
        prop_assert_eq!(ne.matches(&labels), not_eq.matches(&labels));
        let not_in = Expr::NotIn(k.clone(), s.clone());
        prop_assert_eq!(not_in.matches(&labels), !Expr::In(k.clone(), s).matches(&labels));
        let not_has = Selector::parse(&format!("!has({k})")).unwrap();
        prop_assert_eq!(not_has.matches(&labels), !labels.contains_key(&k));
    }

    #[test]
    fn label_keys_cover_everything_the_result_depends_on(
        e in expr(), labels in label_map(), other_key in key(), extra_value in prop::option::of(value())
    ) {
        let sel = Selector::from_expr(e).unwrap();
        let keys: BTreeSet<&str> = sel.label_keys();
        // Setting, changing or removing a label the selector does not read never changes the result.
        prop_assume!(!keys.contains(other_key.as_str()));
        let mut changed = labels.clone();
        match extra_value {
            Some(v) => changed.insert(other_key, v),
            None => changed.remove(&other_key),
        };
        prop_assert_eq!(sel.matches(&labels), sel.matches(&changed));
    }

    #[test]
    fn parse_never_panics_on_arbitrary_text(s in "\\PC{0,64}") {
        let _ = Selector::parse(&s);
    }

    #[test]
    fn parse_never_panics_on_selector_like_text(
        s in prop::collection::vec(prop_oneof![
            Just("a"), Just(" "), Just("=="), Just("!="), Just("!"), Just("("), Just(")"),
            Just("{"), Just("}"), Just(","), Just("'x'"), Just("\""), Just("in"), Just("not"),
            Just("has("), Just("all("), Just("global("), Just("&&"), Just("||"), Just("contains"),
            Just("starts"), Just("with"), Just("\t"), Just("é")
        ], 0..24)
    ) {
        let text: String = s.concat();
        if let Ok(sel) = Selector::parse(&text) {
            // Whatever parses prints to something that parses to the same selector.
            prop_assert_eq!(Selector::parse(&sel.to_string()).unwrap(), sel);
        }
    }
}
