//! `subscription` (`customer.subscription.*` events) and its items.

use serde::Serialize;

use super::common::{
    string_enum, CollectionMethod, Currency, Expandable, HasId, IdOnly, List, Metadata,
};
use super::customer::Customer;
use super::invoice::Invoice;
use super::map_only::map_deserialize;
use super::payment_method::PaymentMethod;
use super::price::{Plan, Price};
use super::setup_intent::SetupIntent;

/// A subscription.
///
/// Carried by `customer.subscription.created`, `.updated`, `.deleted`, `.paused`,
/// `.resumed`, `.trial_will_end`, `.pending_update_applied` and
/// `.pending_update_expired`.
///
/// In API version 2025-03-31.basil the billing period moved from the subscription
/// (`current_period_start`/`current_period_end`) to each item;
/// [`current_period_end`](Self::current_period_end) and
/// [`current_period_start`](Self::current_period_start) read either.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Subscription {
    /// Subscription id (`sub_…`).
    pub id: String,
    /// Always `"subscription"`.
    pub object: Option<String>,
    /// Percentage of each invoice paid to the platform, for Connect.
    pub application_fee_percent: Option<f64>,
    /// The anchor that billing periods are aligned to (Unix seconds).
    pub billing_cycle_anchor: Option<i64>,
    /// When it will be (or was) canceled (Unix seconds).
    pub cancel_at: Option<i64>,
    /// Whether it cancels at the end of the current period.
    pub cancel_at_period_end: Option<bool>,
    /// When cancellation was requested (Unix seconds).
    pub canceled_at: Option<i64>,
    /// Why it was canceled.
    pub cancellation_details: Option<CancellationDetails>,
    /// How its invoices are collected (`billing` before API version 2019-10-17).
    pub collection_method: Option<CollectionMethod>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// Currency.
    pub currency: Option<Currency>,
    /// End of the current period. Before API version 2025-03-31.basil only; see
    /// [`current_period_end()`](Self::current_period_end).
    pub current_period_end: Option<i64>,
    /// Start of the current period. Before API version 2025-03-31.basil only; see
    /// [`current_period_start()`](Self::current_period_start).
    pub current_period_start: Option<i64>,
    /// The customer (expandable).
    pub customer: Option<Expandable<Customer>>,
    /// Days until an invoice is due, for `send_invoice` subscriptions.
    pub days_until_due: Option<i64>,
    /// Default payment method (expandable).
    pub default_payment_method: Option<Expandable<PaymentMethod>>,
    /// Default legacy source (expandable).
    pub default_source: Option<Expandable<IdOnly>>,
    /// Your description.
    pub description: Option<String>,
    /// When it ended, if it did (Unix seconds).
    pub ended_at: Option<i64>,
    /// Its items, each with a price (the first page).
    pub items: List<SubscriptionItem>,
    /// Its most recent invoice (expandable).
    pub latest_invoice: Option<Expandable<Invoice>>,
    /// Whether it exists in live mode.
    pub livemode: Option<bool>,
    /// Your metadata.
    pub metadata: Metadata,
    /// Set while payment collection is paused.
    pub pause_collection: Option<PauseCollection>,
    /// SetupIntent for collecting authentication (expandable).
    pub pending_setup_intent: Option<Expandable<SetupIntent>>,
    /// The plan, when it has a single item. Legacy: not sent from API version
    /// 2025-03-31.basil.
    pub plan: Option<Plan>,
    /// The quantity, when it has a single item. Legacy: not sent from API version
    /// 2025-03-31.basil.
    pub quantity: Option<i64>,
    /// The schedule managing it (expandable).
    pub schedule: Option<Expandable<IdOnly>>,
    /// When it started (Unix seconds; `start` before API version 2019-10-17).
    pub start_date: Option<i64>,
    /// Status.
    pub status: Option<SubscriptionStatus>,
    /// Tax percentage applied to invoices. Legacy: replaced by tax rates.
    pub tax_percent: Option<f64>,
    /// When the trial ends (Unix seconds).
    pub trial_end: Option<i64>,
    /// When the trial started (Unix seconds).
    pub trial_start: Option<i64>,
}

map_deserialize!(Subscription {
    required "id" => id;
    "object" => object,
    "application_fee_percent" => application_fee_percent,
    "billing_cycle_anchor" => billing_cycle_anchor,
    "cancel_at" => cancel_at,
    "cancel_at_period_end" => cancel_at_period_end,
    "canceled_at" => canceled_at,
    "cancellation_details" => cancellation_details,
    "collection_method" => collection_method,
    "created" => created,
    "currency" => currency,
    "current_period_end" => current_period_end,
    "current_period_start" => current_period_start,
    "customer" => customer,
    "days_until_due" => days_until_due,
    "default_payment_method" => default_payment_method,
    "default_source" => default_source,
    "description" => description,
    "ended_at" => ended_at,
    "items" => items: null_as_default,
    "latest_invoice" => latest_invoice,
    "livemode" => livemode,
    "metadata" => metadata: null_as_default,
    "pause_collection" => pause_collection,
    "pending_setup_intent" => pending_setup_intent,
    "plan" => plan,
    "quantity" => quantity,
    "schedule" => schedule,
    "start_date" => start_date,
    "status" => status,
    "tax_percent" => tax_percent,
    "trial_end" => trial_end,
    "trial_start" => trial_start,
});

impl Subscription {
    /// End of the current billing period (Unix seconds): the subscription's
    /// `current_period_end` (before API version 2025-03-31.basil), or else the latest
    /// `current_period_end` of its items (from basil, where each item has its own
    /// period).
    pub fn current_period_end(&self) -> Option<i64> {
        self.current_period_end.or_else(|| {
            self.items
                .data
                .iter()
                .filter_map(|i| i.current_period_end)
                .max()
        })
    }

    /// Start of the current billing period (Unix seconds): the subscription's
    /// `current_period_start` (before API version 2025-03-31.basil), or else the
    /// earliest `current_period_start` of its items.
    pub fn current_period_start(&self) -> Option<i64> {
        self.current_period_start.or_else(|| {
            self.items
                .data
                .iter()
                .filter_map(|i| i.current_period_start)
                .min()
        })
    }

    /// The price ids of its items, in order (see [`SubscriptionItem::price_id`]). A
    /// legacy subscription without items gives its `plan`'s id.
    pub fn price_ids(&self) -> Vec<&str> {
        let ids: Vec<&str> = self
            .items
            .data
            .iter()
            .filter_map(SubscriptionItem::price_id)
            .collect();
        if ids.is_empty() {
            self.plan.iter().map(|p| p.id.as_str()).collect()
        } else {
            ids
        }
    }

    /// The customer's id, whether `customer` is expanded or not.
    pub fn customer_id(&self) -> Option<&str> {
        self.customer.as_ref().and_then(Expandable::id)
    }

    /// The latest invoice's id, whether `latest_invoice` is expanded or not.
    pub fn latest_invoice_id(&self) -> Option<&str> {
        self.latest_invoice.as_ref().and_then(Expandable::id)
    }

    /// The default payment method's id, whether expanded or not.
    pub fn default_payment_method_id(&self) -> Option<&str> {
        self.default_payment_method
            .as_ref()
            .and_then(Expandable::id)
    }
}

impl HasId for Subscription {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

/// An item of a [`Subscription`]: a price and a quantity.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SubscriptionItem {
    /// Subscription item id (`si_…`).
    pub id: String,
    /// Always `"subscription_item"`.
    pub object: Option<String>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// End of its current period, from API version 2025-03-31.basil.
    pub current_period_end: Option<i64>,
    /// Start of its current period, from API version 2025-03-31.basil.
    pub current_period_start: Option<i64>,
    /// Your metadata.
    pub metadata: Metadata,
    /// The plan (legacy, still sent).
    pub plan: Option<Plan>,
    /// The price (absent in API versions before prices existed).
    pub price: Option<Price>,
    /// Quantity.
    pub quantity: Option<i64>,
    /// The subscription's id.
    pub subscription: Option<String>,
}

map_deserialize!(SubscriptionItem {
    required "id" => id;
    "object" => object,
    "created" => created,
    "current_period_end" => current_period_end,
    "current_period_start" => current_period_start,
    "metadata" => metadata: null_as_default,
    "plan" => plan,
    "price" => price,
    "quantity" => quantity,
    "subscription" => subscription,
});

impl SubscriptionItem {
    /// The price id: `price.id`, or else `plan.id` (older versions).
    pub fn price_id(&self) -> Option<&str> {
        self.price
            .as_ref()
            .map(|p| p.id.as_str())
            .or_else(|| self.plan.as_ref().map(|p| p.id.as_str()))
    }
}

impl HasId for SubscriptionItem {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

/// Why a [`Subscription`] was canceled.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CancellationDetails {
    /// The customer's comment.
    pub comment: Option<String>,
    /// The customer's feedback.
    pub feedback: Option<CancellationFeedback>,
    /// Why it was canceled.
    pub reason: Option<CancellationReason>,
}

map_deserialize!(CancellationDetails {
    "comment" => comment,
    "feedback" => feedback,
    "reason" => reason,
});

/// Paused payment collection of a [`Subscription`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PauseCollection {
    /// What happens to invoices while paused.
    pub behavior: Option<PauseCollectionBehavior>,
    /// When collection resumes (Unix seconds).
    pub resumes_at: Option<i64>,
}

map_deserialize!(PauseCollection {
    "behavior" => behavior,
    "resumes_at" => resumes_at,
});

string_enum! {
    /// Status of a [`Subscription`].
    pub enum SubscriptionStatus {
        /// Active and paid.
        Active = "active",
        /// Canceled (final).
        Canceled = "canceled",
        /// The first payment has not succeeded yet.
        Incomplete = "incomplete",
        /// The first payment never succeeded (final).
        IncompleteExpired = "incomplete_expired",
        /// A renewal payment failed; Stripe is retrying.
        PastDue = "past_due",
        /// A trial ended without a payment method.
        Paused = "paused",
        /// In a free trial.
        Trialing = "trialing",
        /// Retries are exhausted; invoices stay open.
        Unpaid = "unpaid",
    }
}

string_enum! {
    /// Why a [`Subscription`] was canceled.
    pub enum CancellationReason {
        /// Canceled by a retention policy.
        CanceledByRetentionPolicy = "canceled_by_retention_policy",
        /// You or the customer asked.
        CancellationRequested = "cancellation_requested",
        /// A payment was disputed.
        PaymentDisputed = "payment_disputed",
        /// Payment failed.
        PaymentFailed = "payment_failed",
    }
}

string_enum! {
    /// The customer's feedback on canceling a [`Subscription`].
    pub enum CancellationFeedback {
        /// Customer service was poor.
        CustomerService = "customer_service",
        /// Quality was poor.
        LowQuality = "low_quality",
        /// Features are missing.
        MissingFeatures = "missing_features",
        /// Some other reason.
        Other = "other",
        /// Switched to another service.
        SwitchedService = "switched_service",
        /// Too complex.
        TooComplex = "too_complex",
        /// Too expensive.
        TooExpensive = "too_expensive",
        /// Not used enough.
        Unused = "unused",
    }
}

string_enum! {
    /// What happens to invoices while collection is paused.
    pub enum PauseCollectionBehavior {
        /// Invoices stay drafts.
        KeepAsDraft = "keep_as_draft",
        /// Invoices are marked uncollectible.
        MarkUncollectible = "mark_uncollectible",
        /// Invoices are voided.
        Void = "void",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/subscription.json"
    ));

    #[test]
    fn parses_fixture() {
        let s: Subscription = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(s.id, "sub_1Pgc6rB7WZ01zgkWNy0Cn5nw");
        assert_eq!(s.status, Some(SubscriptionStatus::Active));
        assert_eq!(s.customer_id(), Some("cus_QXg1o8vcGmoR32"));
        assert_eq!(s.cancel_at_period_end, Some(true));
        assert_eq!(s.items.len(), 1);
        let item = &s.items.data[0];
        assert_eq!(item.id, "si_QXhVnC2h0Jczwc");
        assert_eq!(item.price_id(), Some("price_1PgafmB7WZ01zgkW6dKueIc5"));
        assert_eq!(item.price.as_ref().unwrap().unit_amount, Some(2000));
        assert_eq!(s.price_ids(), ["price_1PgafmB7WZ01zgkW6dKueIc5"]);
        // dahlia: no subscription-level period; it comes from the item.
        assert_eq!(s.current_period_end, None);
        assert_eq!(s.current_period_end(), Some(976_287_773));
        assert_eq!(s.current_period_start(), Some(1_896_570_518));
        assert_eq!(
            s.pause_collection.as_ref().unwrap().behavior,
            Some(PauseCollectionBehavior::MarkUncollectible)
        );
        assert_eq!(s.latest_invoice_id(), None);
        let back: Subscription = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn periods_in_both_eras() {
        let old: Subscription = serde_json::from_str(
            r#"{"id":"sub_1","current_period_start":100,"current_period_end":200,
                "items":{"object":"list","data":[{"id":"si_1","current_period_start":1,"current_period_end":2}]}}"#,
        )
        .unwrap();
        assert_eq!(old.current_period_end(), Some(200));
        assert_eq!(old.current_period_start(), Some(100));
        let new: Subscription = serde_json::from_str(
            r#"{"id":"sub_1","items":{"object":"list","data":[
                {"id":"si_1","current_period_start":10,"current_period_end":40},
                {"id":"si_2","current_period_start":20,"current_period_end":30}]}}"#,
        )
        .unwrap();
        assert_eq!(new.current_period_end(), Some(40));
        assert_eq!(new.current_period_start(), Some(10));
        let none: Subscription = serde_json::from_str(r#"{"id":"sub_1","items":null}"#).unwrap();
        assert_eq!(none.current_period_end(), None);
        assert!(none.price_ids().is_empty());
    }

    #[test]
    fn legacy_plan_and_expanded_fields() {
        let s: Subscription = serde_json::from_str(
            r#"{"id":"sub_1","plan":{"id":"gold","object":"plan","amount":999,"interval":"month"},"quantity":1,"tax_percent":20.0,
                "customer":{"id":"cus_1","object":"customer","email":"a@b.c"},
                "latest_invoice":{"id":"in_1","object":"invoice","status":"open"},"status":"on_hold",
                "cancellation_details":{"reason":"payment_failed","feedback":"mystery"}}"#,
        )
        .unwrap();
        assert_eq!(s.price_ids(), ["gold"]);
        assert_eq!(s.tax_percent, Some(20.0));
        assert_eq!(s.customer_id(), Some("cus_1"));
        assert_eq!(
            s.customer
                .as_ref()
                .unwrap()
                .as_object()
                .unwrap()
                .email
                .as_deref(),
            Some("a@b.c")
        );
        assert_eq!(s.latest_invoice_id(), Some("in_1"));
        assert_eq!(
            s.status,
            Some(SubscriptionStatus::Unknown("on_hold".into()))
        );
        let cd = s.cancellation_details.unwrap();
        assert_eq!(cd.reason, Some(CancellationReason::PaymentFailed));
        assert_eq!(
            cd.feedback,
            Some(CancellationFeedback::Unknown("mystery".into()))
        );
    }
}
