//! Any input: parsing never panics, and whatever parses prints to text that parses back to the
//! same selector and evaluates the same.
#![no_main]

use std::collections::BTreeMap;

use calico_selector::Selector;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(sel) = Selector::parse(text) else {
        return;
    };
    let printed = sel.to_string();
    let reparsed = Selector::parse(&printed).expect("canonical form must parse");
    assert_eq!(reparsed, sel, "round trip of {printed:?}");
    // Evaluate against labels built from the keys it mentions, so matching paths are exercised.
    let labels: BTreeMap<String, String> = sel
        .label_keys()
        .into_iter()
        .map(|k| (k.to_string(), k.to_string()))
        .collect();
    assert_eq!(sel.matches(&labels), reparsed.matches(&labels));
});
