//! Arbitrary bytes as a YAML or JSON document: decoding, defaulting and validating must never
//! panic, and whatever decodes must re-encode to the same resource.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let value: serde_json::Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(_) => match serde_yaml_ng::from_str(text) {
            Ok(v) => v,
            Err(_) => return,
        },
    };
    if let Ok(resources) = calico_api::from_value_list(value) {
        for mut r in resources {
            let again = calico_api::from_value(r.to_value().expect("encodes"))
                .expect("a decoded resource decodes again");
            assert_eq!(again, r);
            r.set_defaults();
            let _ = r.validate();
        }
    }
});
