//! Property tests: value types round-trip through their text and JSON forms, and decoding
//! never panics on arbitrary input.

use calico_api::*;
use proptest::prelude::*;
use serde_json::{Value, json};

fn port() -> impl Strategy<Value = Port> {
    prop_oneof![
        (1u16..).prop_map(Port::Number),
        (1u16.., 1u16..).prop_filter_map("ordered range", |(a, b)| {
            (a < b).then_some(Port::Range { min: a, max: b })
        }),
        "[a-z][a-z0-9-]{0,13}[a-z0-9]".prop_map(Port::Named),
    ]
}

/// Arbitrary JSON, a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        "[a-zA-Z0-9 ./:()=!&|-]{0,12}".prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..5)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn ports_round_trip_through_text_and_json(p in port()) {
        prop_assert_eq!(Port::parse(&p.to_string()), Ok(p.clone()));
        let json = serde_json::to_value(&p).unwrap();
        prop_assert_eq!(serde_json::from_value::<Port>(json).unwrap(), p);
    }

    #[test]
    fn protocols_round_trip_through_json(n in 1u8..) {
        let p = Protocol::Number(n);
        let json = serde_json::to_value(&p).unwrap();
        prop_assert_eq!(serde_json::from_value::<Protocol>(json).unwrap(), p);
        let text = serde_json::to_value(n.to_string()).unwrap();
        prop_assert_eq!(serde_json::from_value::<Protocol>(text).unwrap(), Protocol::Number(n));
    }

    /// Any spec of any kind: decoding either fails with an error or yields a resource that
    /// re-encodes to a document decoding to the same resource; defaults and validation never
    /// panic.
    #[test]
    fn decoding_arbitrary_documents_never_panics_and_round_trips(
        kind in prop::sample::select(KINDS.iter().map(|k| k.kind).collect::<Vec<_>>()),
        spec in json_value(),
        name in "[a-z0-9.-]{0,20}",
    ) {
        let doc = json!({
            "apiVersion": API_VERSION,
            "kind": kind,
            "metadata": {"name": name},
            "spec": spec,
        });
        if let Ok(mut r) = from_value(doc) {
            let again = from_value(r.to_value().unwrap()).unwrap();
            prop_assert_eq!(&again, &r);
            r.set_defaults();
            let _ = r.validate();
        }
    }

    /// Every /16../24 IPv4 pool with a block size between its prefix and 32 is valid, and
    /// its defaults keep it valid.
    #[test]
    fn well_formed_ipv4_pools_validate(
        a in 1u8..=223, b: u8, prefix in 16u8..=24, block in 24i64..=32,
    ) {
        prop_assume!(!(a == 169 && b == 254) && a != 127);
        let net = ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(a, b, 0, 0), prefix).unwrap().trunc();
        let mut pool: IPPool = match from_value(json!({
            "apiVersion": API_VERSION, "kind": "IPPool",
            "metadata": {"name": "p"},
            "spec": {"cidr": net.to_string(), "blockSize": block},
        })).unwrap() {
            AnyResource::IPPool(p) => p,
            other => panic!("{other:?}"),
        };
        prop_assert!(pool.validate().is_ok(), "{:?}", pool.validate());
        Defaults::default(&mut pool);
        prop_assert!(pool.validate().is_ok(), "{:?}", pool.validate());
    }
}
