//! The selector language as Calico documents and implements it: what matches, what is rejected,
//! and the canonical text form.

use std::collections::{BTreeMap, HashMap};

use calico_selector::{Expr, ParseError, Selector};

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn check(selector: &str, matching: &[&[(&str, &str)]], not_matching: &[&[(&str, &str)]]) {
    let sel = Selector::parse(selector).unwrap_or_else(|e| panic!("{selector:?}: {e}"));
    for l in matching {
        assert!(sel.matches(&labels(l)), "{selector:?} should match {l:?}");
    }
    for l in not_matching {
        assert!(
            !sel.matches(&labels(l)),
            "{selector:?} should not match {l:?}"
        );
    }
}

#[test]
fn equality_needs_the_label_present_with_that_value() {
    check(
        "a == 'b'",
        &[&[("a", "b")], &[("a", "b"), ("c", "d")]],
        &[&[], &[("a", "c")], &[("b", "b")]],
    );
    check(r#"a=="b""#, &[&[("a", "b")]], &[&[("a", "")]]);
}

#[test]
fn inequality_also_matches_when_the_label_is_absent() {
    check(
        "a != 'b'",
        &[&[], &[("a", "c")], &[("c", "b")]],
        &[&[("a", "b")]],
    );
}

#[test]
fn set_membership_and_its_negation() {
    check(
        "a in {'x', \"y\"}",
        &[&[("a", "x")], &[("a", "y")]],
        &[&[], &[("a", "z")]],
    );
    check(
        "a not in {'x', 'y'}",
        &[&[], &[("a", "z")]],
        &[&[("a", "x")], &[("a", "y")]],
    );
    check("a in {}", &[], &[&[], &[("a", "")]]);
    check("a not in {}", &[&[], &[("a", "x")]], &[]);
    // Calico accepts a trailing comma and the operator written as one word.
    check("a in {'x',}", &[&[("a", "x")]], &[&[("a", "y")]]);
    check("a notin {'x'}", &[&[("a", "y")]], &[&[("a", "x")]]);
}

#[test]
fn has_and_not_has() {
    check(
        "has(a)",
        &[&[("a", "")], &[("a", "x")]],
        &[&[], &[("b", "x")]],
    );
    check("!has(a)", &[&[], &[("b", "x")]], &[&[("a", "")]]);
    check("has( a )", &[&[("a", "x")]], &[&[]]);
    check("! has(a)", &[&[]], &[&[("a", "x")]]);
}

#[test]
fn string_operators_need_the_label_present() {
    check(
        "a contains 'ell'",
        &[&[("a", "hello")], &[("a", "ell")]],
        &[&[], &[("a", "help")]],
    );
    check(
        "a starts with 'he'",
        &[&[("a", "hello")]],
        &[&[], &[("a", "ohe")]],
    );
    check(
        "a ends with 'lo'",
        &[&[("a", "hello")]],
        &[&[], &[("a", "lol")]],
    );
    check("a startswith 'x'", &[&[("a", "xy")]], &[&[("a", "yx")]]);
    check("a ends   with 'x'", &[&[("a", "yx")]], &[&[("a", "xy")]]);
    // Every string contains, starts with and ends with the empty string, if present at all.
    check("a contains ''", &[&[("a", "")]], &[&[]]);
}

#[test]
fn all_global_and_empty_match_everything() {
    for s in ["all()", "global()", "", "   ", "all( )", "\tall()\t"] {
        check(s, &[&[], &[("a", "b")]], &[]);
    }
    assert!(Selector::parse("").unwrap().is_all());
    assert!(Selector::parse(" all() ").unwrap().is_all());
}

#[test]
fn boolean_operators_precedence_and_parentheses() {
    // && binds tighter than ||.
    check(
        "a == '1' || b == '1' && c == '1'",
        &[&[("a", "1")], &[("b", "1"), ("c", "1")]],
        &[&[("b", "1")], &[("c", "1")]],
    );
    check(
        "(a == '1' || b == '1') && c == '1'",
        &[&[("a", "1"), ("c", "1")], &[("b", "1"), ("c", "1")]],
        &[&[("a", "1")], &[("c", "1")]],
    );
    // `!` applies to one operation; a run of them collapses.
    check(
        "!a == '1' && has(b)",
        &[&[("b", "x")]],
        &[&[("a", "1"), ("b", "x")]],
    );
    check("!!has(a)", &[&[("a", "")]], &[&[]]);
    check(
        "!(has(a) || has(b))",
        &[&[("c", "")]],
        &[&[("a", "")], &[("b", "")]],
    );
}

#[test]
fn documented_examples() {
    // Examples in the style of Calico's policy documentation.
    check(
        "role == 'frontend'",
        &[&[("role", "frontend")]],
        &[&[("role", "backend")]],
    );
    check(
        "environment == 'production' && role in {'db', 'cache'}",
        &[&[("environment", "production"), ("role", "db")]],
        &[
            &[("environment", "dev"), ("role", "db")],
            &[("environment", "production")],
        ],
    );
    check(
        "projectcalico.org/namespace == 'prod' && k8s-app == 'kube-dns'",
        &[&[
            ("projectcalico.org/namespace", "prod"),
            ("k8s-app", "kube-dns"),
        ]],
        &[&[("k8s-app", "kube-dns")]],
    );
    check(
        "has(projectcalico.org/name) && !has(example.com/debug_01)",
        &[&[("projectcalico.org/name", "x")]],
        &[&[
            ("projectcalico.org/name", "x"),
            ("example.com/debug_01", ""),
        ]],
    );
}

#[test]
fn both_quote_styles_and_quotes_inside_values() {
    check(r#"a == "it's""#, &[&[("a", "it's")]], &[]);
    check(r#"a == 'say "hi"'"#, &[&[("a", "say \"hi\"")]], &[]);
}

#[test]
fn label_keys_may_start_with_digits_and_reuse_keywords() {
    check("1a == 'x'", &[&[("1a", "x")]], &[]);
    check("in == 'x' && has(all)", &[&[("in", "x"), ("all", "")]], &[]);
    check("contains contains 'x'", &[&[("contains", "axb")]], &[]);
}

#[test]
fn works_over_hashmaps_and_slices() {
    let sel = Selector::parse("a == 'b'").unwrap();
    let h: HashMap<String, String> = [("a".to_string(), "b".to_string())].into();
    assert!(sel.matches(&h));
    let pairs: &[(&str, &str)] = &[("a", "b")];
    assert!(sel.matches(pairs));
    let dynamic: &dyn calico_selector::Labels = &h;
    assert!(sel.matches(dynamic));
}

#[test]
fn canonical_form_is_calicos() {
    let cases = [
        ("", "all()"),
        (" (all() )", "all()"),
        ("! (has( b)||! has(a ))", "!(has(b) || !has(a))"),
        (r#"! (a == "b"&&! c != "d")"#, r#"!(a == "b" && !c != "d")"#),
        (r#"a == "'""#, r#"a == "'""#),
        (r#"a == '"'"#, r#"a == '"'"#),
        (r#"a startswith '"'"#, r#"a starts with '"'"#),
        (r#"a endswith "'""#, r#"a ends with "'""#),
        (r#"a!='"'"#, r#"a != '"'"#),
        (
            r#"a in {"z", "z", "x", "y", "x", "a"}"#,
            r#"a in {"a", "x", "y", "z"}"#,
        ),
        ("a notin {}", "a not in {}"),
        (
            "a == 'x' && b == 'y' || c == 'z'",
            r#"((a == "x" && b == "y") || c == "z")"#,
        ),
        ("global()", "global()"),
    ];
    for (input, expected) in cases {
        let sel = Selector::parse(input).unwrap();
        assert_eq!(sel.to_string(), expected, "canonical form of {input:?}");
        assert_eq!(
            Selector::parse(expected).unwrap(),
            sel,
            "re-parse of {expected:?}"
        );
    }
}

#[test]
fn malformed_selectors_are_rejected() {
    for bad in [
        "b == b",
        "b contains b",
        "b starts with b",
        "b ends with b",
        "'b1' == b",
        "b",
        "a b",
        "!",
        "foo == \"bar\" &",
        "foo == \"bar\" |",
        "foo != ||",
        "foo in {\"\", ||",
        "foo in \"\"",
        "\"FOO",
        "\"FOO'",
        "'FOO",
        "(",
        "(a == \"foo\"",
        ")",
        "()",
        "%",
        "a == \"b\" && %",
        "a == \"b\" || %",
        "a ",
        "has(foo) &&",
        "a = 'b'",
        "has (a)",
        "has()",
        "all(x)",
        "a == 'b'\n",
        "a in {,}",
        "a in {'x' 'y'}",
        "a containsx 'b'",
    ] {
        assert!(Selector::parse(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn errors_name_the_position_and_what_was_expected() {
    let err = Selector::parse("a == 'b' && c").unwrap_err();
    assert_eq!(err.position(), 13);
    assert!(
        matches!(&err, ParseError::Unexpected { expected, found, .. }
            if expected.contains("operator") && found == "end of input"),
        "{err:?}"
    );
    assert!(err.to_string().contains("at byte 13"), "{err}");

    let err = Selector::parse("a == b").unwrap_err();
    assert_eq!(err.position(), 5);
    assert!(
        err.to_string().contains("expected a quoted string"),
        "{err}"
    );

    let err = Selector::parse("x == 'a' && y == \"open").unwrap_err();
    assert_eq!(
        err,
        ParseError::UnterminatedString {
            position: 17,
            quote: '"'
        }
    );

    let err = Selector::parse("(a == 'b'").unwrap_err();
    assert_eq!(err.position(), 9);
    assert!(err.to_string().contains("')'"), "{err}");
}

#[test]
fn over_long_keys_and_deep_nesting_are_errors_not_crashes() {
    let long = format!("{} == 'x'", "k".repeat(513));
    assert!(matches!(
        Selector::parse(&long),
        Err(ParseError::LabelTooLong { length: 513, .. })
    ));
    assert!(Selector::parse(&format!("{} == 'x'", "k".repeat(512))).is_ok());
    let deep = format!("{}all(){}", "(".repeat(10_000), ")".repeat(10_000));
    assert!(matches!(
        Selector::parse(&deep),
        Err(ParseError::TooDeep { .. })
    ));
    let many_nots = format!("{}has(a)", "!".repeat(10_001));
    assert_eq!(Selector::parse(&many_nots).unwrap().to_string(), "!has(a)");
}

#[test]
fn label_keys_are_enumerated_for_indexing() {
    let sel = Selector::parse("a == 'x' && (has(b) || !c in {'1'}) && a != 'y' && all()").unwrap();
    assert_eq!(
        sel.label_keys().into_iter().collect::<Vec<_>>(),
        ["a", "b", "c"]
    );
    assert!(Selector::parse("all()").unwrap().label_keys().is_empty());
}

#[test]
fn built_trees_are_normalized_and_validated() {
    let sel = Selector::from_expr(Expr::And(vec![Expr::Has("a".into())])).unwrap();
    assert_eq!(sel, Selector::parse("has(a)").unwrap());
    assert!(Selector::from_expr(Expr::Has("bad key".into())).is_err());
    assert!(Selector::from_expr(Expr::Eq("a".into(), "'\"".into())).is_err());
    let nested = Selector::from_expr(Expr::Not(Box::new(Expr::Not(Box::new(Expr::Has(
        "a".into(),
    ))))))
    .unwrap();
    assert_eq!(nested.to_string(), "!(!has(a))");
    assert_eq!(Selector::parse(&nested.to_string()).unwrap(), nested);
}

#[test]
fn map_labels_and_and() {
    let sel = Selector::parse("a == 'x' && !has(b)").unwrap();
    let prefixed = sel.map_labels(|k| format!("pcns.{k}")).unwrap();
    assert_eq!(prefixed.to_string(), r#"(pcns.a == "x" && !has(pcns.b))"#);
    let all = Selector::all();
    assert_eq!(all.and(&sel), sel);
    assert_eq!(sel.and(&all), sel);
    assert_eq!(
        sel.and(&Selector::parse("has(c)").unwrap()).to_string(),
        r#"((a == "x" && !has(b)) && has(c))"#
    );
}
