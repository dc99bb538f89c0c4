//! What the verify step allocates: nothing. A counting allocator counts this thread's
//! allocations only, so the other tests of the binary running beside it do not count.
//! Here rather than in the main crate's tests, which forbid `unsafe` (a global
//! allocator needs it).

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use stripe_webhooks::{verify_signature, FixedClock, SigningSecret, Verifier};

/// A `Stripe-Signature` header for `body`, as Stripe computes it.
fn sign(body: &[u8], secret: &str, t: i64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

struct Counting;

thread_local! {
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

// SAFETY: every call is passed to the system allocator unchanged; the count is a
// thread-local `Cell` with a const initialiser, which never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as the caller's contract for `GlobalAlloc::alloc`.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as the caller's contract for `GlobalAlloc::dealloc`.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.with(|n| n.set(n.get() + 1));
        // SAFETY: as the caller's contract for `GlobalAlloc::realloc`.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

/// How many times `f` allocated on this thread. Its result goes through `black_box`, so
/// that an optimised build cannot drop an allocation no one reads.
fn allocations<T>(f: impl FnOnce() -> T) -> (usize, T) {
    let before = ALLOCATIONS.with(Cell::get);
    let out = std::hint::black_box(f());
    (ALLOCATIONS.with(Cell::get) - before, out)
}

const BODY: &[u8] = br#"{"id":"evt_1","object":"event","type":"customer.created"}"#;
const NOW: i64 = 1_700_000_000;

#[test]
fn the_counter_sees_an_allocation() {
    let (n, v) = allocations(|| vec![1u8; 64]);
    assert_eq!(v.len(), 64);
    assert_eq!(n, 1);
}

#[test]
fn a_verifier_with_two_secrets_verifies_and_clones_without_allocating() {
    let verifier = Verifier::new(
        SigningSecret::new("whsec_current")
            .unwrap()
            .with_label("current"),
    )
    .with_secret(
        SigningSecret::new("whsec_previous")
            .unwrap()
            .with_label("previous"),
    )
    .with_clock(FixedClock(NOW));
    let header = sign(BODY, "whsec_previous", NOW);

    let (n, clone) = allocations(|| verifier.clone());
    assert_eq!(
        n, 0,
        "a clone, as an extractor makes per request, allocates nothing"
    );

    let (n, verified) = allocations(|| clone.verify(BODY, &header));
    let verified = verified.unwrap();
    assert_eq!(verified.matched_secret().label(), Some("previous"));
    assert_eq!(n, 0, "verify allocates nothing");

    let (n, rejected) = allocations(|| clone.verify(BODY, "t=1700000000,v1=00"));
    assert!(rejected.is_err());
    assert_eq!(n, 0, "a rejection allocates nothing either");
}

#[test]
fn verify_signature_allocates_nothing() {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let header = sign(BODY, "whsec_test", now);
    let (n, verified) = allocations(|| verify_signature(BODY, &header, "whsec_test"));
    assert_eq!(verified.unwrap().body(), BODY);
    assert_eq!(n, 0);
}

#[test]
fn building_from_a_secrets_list_then_adding_a_secret_keeps_every_secret() {
    // `with_secret` on a clone must not change the verifier it was cloned from.
    let base = Verifier::from_secrets_list("whsec_a,whsec_b").unwrap();
    let more = base
        .clone()
        .with_secret(SigningSecret::new("whsec_c").unwrap());
    assert_eq!(base.secrets().len(), 2);
    assert_eq!(more.secrets().len(), 3);
}
