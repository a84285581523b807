//! Any byte string: the decoder never panics, and what it accepts re-encodes to bytes that
//! decode to the same message (in both AS-number widths).
#![no_main]

use calico_bgp::codec::{Ctx, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    for four_octet_as in [false, true] {
        let ctx = Ctx { four_octet_as };
        if let Ok(msg) = decode(data, ctx) {
            let bytes = encode(&msg, ctx).expect("a decoded message re-encodes");
            assert_eq!(decode(&bytes, ctx).as_ref(), Ok(&msg));
        }
    }
});
