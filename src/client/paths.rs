//! Where each object type is retrieved: `GET /v1/customers/{id}` and so on.

/// Object types (their `object` field) and the collection path their id goes after.
const PATHS: &[(&str, &str)] = &[
    ("account", "/v1/accounts"),
    ("application_fee", "/v1/application_fees"),
    ("balance_transaction", "/v1/balance_transactions"),
    ("billing.meter", "/v1/billing/meters"),
    (
        "billing_portal.configuration",
        "/v1/billing_portal/configurations",
    ),
    ("charge", "/v1/charges"),
    ("checkout.session", "/v1/checkout/sessions"),
    ("coupon", "/v1/coupons"),
    ("credit_note", "/v1/credit_notes"),
    ("customer", "/v1/customers"),
    ("dispute", "/v1/disputes"),
    ("file", "/v1/files"),
    ("invoice", "/v1/invoices"),
    ("invoiceitem", "/v1/invoiceitems"),
    ("mandate", "/v1/mandates"),
    ("payment_intent", "/v1/payment_intents"),
    ("payment_link", "/v1/payment_links"),
    ("payment_method", "/v1/payment_methods"),
    ("payout", "/v1/payouts"),
    ("plan", "/v1/plans"),
    ("price", "/v1/prices"),
    ("product", "/v1/products"),
    ("promotion_code", "/v1/promotion_codes"),
    ("quote", "/v1/quotes"),
    ("refund", "/v1/refunds"),
    ("review", "/v1/reviews"),
    ("setup_intent", "/v1/setup_intents"),
    ("subscription", "/v1/subscriptions"),
    ("subscription_schedule", "/v1/subscription_schedules"),
    ("tax_rate", "/v1/tax_rates"),
    ("topup", "/v1/topups"),
    ("transfer", "/v1/transfers"),
];

/// The API path to retrieve an object of `object_type` (its `object` field, for example
/// `checkout.session`) with this `id`, or `None` for a type without a known path (or an
/// empty, `.` or `..` id). The id is one path segment: a custom id (a product's, plan's
/// or coupon's, which you choose) keeps letters, digits and `-._~`, and has any other
/// byte escaped (`plan:gold` is `plan%3Agold`); [`check_api_path`](super::check_api_path)
/// then refuses one that holds a `/`, `\` or control character, or a `%` that starts
/// what, decoded, escapes one (`50%OFF` passes, `a%2Fb` does not).
///
/// ```
/// use stripe_webhooks::client::object_path;
///
/// assert_eq!(object_path("customer", "cus_1").as_deref(), Some("/v1/customers/cus_1"));
/// assert_eq!(object_path("checkout.session", "cs_1").as_deref(), Some("/v1/checkout/sessions/cs_1"));
/// assert_eq!(object_path("plan", "pro.monthly").as_deref(), Some("/v1/plans/pro.monthly"));
/// assert_eq!(object_path("coupon", "25 OFF").as_deref(), Some("/v1/coupons/25%20OFF"));
/// assert_eq!(object_path("card", "card_1"), None); // cards live under their customer
/// ```
pub fn object_path(object_type: &str, id: &str) -> Option<String> {
    let base = collection_path(object_type)?;
    if matches!(id, "" | "." | "..") {
        return None;
    }
    let mut path = String::with_capacity(base.len() + 1 + id.len());
    path.push_str(base);
    path.push('/');
    push_segment(&mut path, id);
    Some(path)
}

/// Appends `id` to `path` as one path segment: every byte but RFC 3986's unreserved
/// ones percent-encoded.
pub(crate) fn push_segment(path: &mut String, id: &str) {
    use std::fmt::Write as _;
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            path.push(char::from(b));
        } else {
            let _ = write!(path, "%{b:02X}");
        }
    }
}

/// Whether [`object_path`] knows `object_type`.
pub(crate) fn collection_path(object_type: &str) -> Option<&'static str> {
    PATHS
        .iter()
        .find(|(t, _)| *t == object_type)
        .map(|(_, p)| *p)
}

/// Whether `collection` (`/v1/customers`) is where [`object_path`] puts a type's ids.
#[cfg(feature = "testing")]
pub(crate) fn is_collection(collection: &str) -> bool {
    PATHS.iter().any(|(_, p)| *p == collection)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_well_formed() {
        for w in PATHS.windows(2) {
            assert!(w[0].0 < w[1].0, "{} before {}", w[0].0, w[1].0);
        }
        for (_, p) in PATHS {
            assert!(p.starts_with("/v1/") && !p.ends_with('/'), "{p}");
        }
    }

    #[test]
    fn ids_are_checked() {
        assert_eq!(
            object_path("invoice", "in_1").as_deref(),
            Some("/v1/invoices/in_1")
        );
        assert_eq!(object_path("invoice", ".."), None);
        assert_eq!(object_path("invoice", "."), None);
        assert_eq!(object_path("invoice", ""), None);
        // Escaped into one segment; a `/` or `\\` stays refused where the path is sent.
        for (id, path) in [
            ("../x", "/v1/invoices/..%2Fx"),
            ("plan:gold", "/v1/invoices/plan%3Agold"),
            ("é", "/v1/invoices/%C3%A9"),
        ] {
            assert_eq!(object_path("invoice", id).as_deref(), Some(path));
        }
        for id in ["../x", "a\\b", "a\nb", "a%2Fb"] {
            let path = object_path("invoice", id).unwrap();
            assert!(
                crate::client::check_api_path(&path).is_err(),
                "{id}: {path}"
            );
        }
        for id in ["plan:gold", "pro.monthly", "25 OFF", "é"] {
            let path = object_path("invoice", id).unwrap();
            assert!(crate::client::check_api_path(&path).is_ok(), "{id}: {path}");
        }
    }
}
