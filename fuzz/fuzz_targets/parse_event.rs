//! Arbitrary bytes as a webhook body: parsing as a snapshot event or a thin event
//! notification must never panic, whatever the input, and neither must formatting the
//! result or the error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match stripe_webhooks::dangerous::parse_unverified(data) {
        Ok(event) => {
            let _ = format!("{event:?}");
        }
        Err(e) => {
            let _ = format!("{e} {e:?}");
        }
    }
    match stripe_webhooks::dangerous::parse_unverified_notification(data) {
        Ok(notification) => {
            let _ = format!("{notification:?}");
        }
        Err(e) => {
            let _ = format!("{e} {e:?}");
        }
    }
});
