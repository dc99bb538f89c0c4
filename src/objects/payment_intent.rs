//! `payment_intent` (`payment_intent.*` events) and the payment error shared with
//! SetupIntents and invoices.

use serde::Serialize;

use super::charge::Charge;
use super::common::{
    string_enum, ApiErrorType, Currency, Expandable, HasId, IdOnly, List, Metadata, Shipping,
};
use super::customer::Customer;
use super::invoice::Invoice;
use super::map_only::map_deserialize;
use super::payment_method::PaymentMethod;

/// A PaymentIntent: one payment, from creation through authentication to success.
///
/// Carried by `payment_intent.succeeded`, `.payment_failed`, `.created`, `.canceled`,
/// `.processing`, `.requires_action`, `.amount_capturable_updated` and
/// `.partially_funded`.
///
/// Its charges moved between API versions: before 2022-11-15 every charge is in the
/// `charges` list; from 2022-11-15 only `latest_charge` is sent.
/// [`latest_charge_id`](Self::latest_charge_id) reads either.
#[derive(Clone, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PaymentIntent {
    /// PaymentIntent id (`pi_…`).
    pub id: String,
    /// Always `"payment_intent"`.
    pub object: Option<String>,
    /// Amount intended to be collected, in the smallest currency unit.
    pub amount: Option<i64>,
    /// Amount that can still be captured.
    pub amount_capturable: Option<i64>,
    /// Amount received.
    pub amount_received: Option<i64>,
    /// Application fee requested, for Connect.
    pub application_fee_amount: Option<i64>,
    /// When it was canceled (Unix seconds).
    pub canceled_at: Option<i64>,
    /// Why it was canceled.
    pub cancellation_reason: Option<PaymentIntentCancellationReason>,
    /// When funds are captured.
    pub capture_method: Option<CaptureMethod>,
    /// Its charges, before API version 2022-11-15 (newest first). Later versions send
    /// [`latest_charge`](Self::latest_charge) instead.
    pub charges: Option<List<Charge>>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// Currency.
    pub currency: Option<Currency>,
    /// The customer (expandable).
    pub customer: Option<Expandable<Customer>>,
    /// Your description.
    pub description: Option<String>,
    /// The invoice that created it (expandable). Removed in API version
    /// 2025-03-31.basil: use the invoice's `payments` instead.
    pub invoice: Option<Expandable<Invoice>>,
    /// The error of the latest failed attempt; cleared when it succeeds.
    pub last_payment_error: Option<LastPaymentError>,
    /// The latest charge (expandable), from API version 2022-11-15.
    pub latest_charge: Option<Expandable<Charge>>,
    /// Whether it exists in live mode.
    pub livemode: Option<bool>,
    /// Your metadata.
    pub metadata: Metadata,
    /// What the customer must do next (redirect, 3-D Secure…), as raw JSON: its shape
    /// depends on its `type`.
    pub next_action: Option<serde_json::Value>,
    /// The connected account the payment is made on behalf of (expandable).
    pub on_behalf_of: Option<Expandable<IdOnly>>,
    /// The payment method (expandable).
    pub payment_method: Option<Expandable<PaymentMethod>>,
    /// Payment method types it may use.
    pub payment_method_types: Vec<String>,
    /// Email the receipt is sent to.
    pub receipt_email: Option<String>,
    /// Whether the payment method is saved for later.
    pub setup_future_usage: Option<SetupFutureUsage>,
    /// Shipping details.
    pub shipping: Option<Shipping>,
    /// Legacy source used (expandable).
    pub source: Option<Expandable<IdOnly>>,
    /// Statement descriptor.
    pub statement_descriptor: Option<String>,
    /// Suffix appended to the account's statement descriptor.
    pub statement_descriptor_suffix: Option<String>,
    /// Status.
    pub status: Option<PaymentIntentStatus>,
    /// Transfer group, for Connect.
    pub transfer_group: Option<String>,
}

// `next_action` may hold the client secret in a URL's query.
crate::secret::debug_hiding_json!(PaymentIntent {
    id,
    object,
    amount,
    amount_capturable,
    amount_received,
    application_fee_amount,
    canceled_at,
    cancellation_reason,
    capture_method,
    charges,
    created,
    currency,
    customer,
    description,
    invoice,
    last_payment_error,
    latest_charge,
    livemode,
    metadata,
    on_behalf_of,
    payment_method,
    payment_method_types,
    receipt_email,
    setup_future_usage,
    shipping,
    source,
    statement_descriptor,
    statement_descriptor_suffix,
    status,
    transfer_group;
    json: next_action
});

map_deserialize!(PaymentIntent {
    required "id" => id;
    "object" => object,
    "amount" => amount,
    "amount_capturable" => amount_capturable,
    "amount_received" => amount_received,
    "application_fee_amount" => application_fee_amount,
    "canceled_at" => canceled_at,
    "cancellation_reason" => cancellation_reason,
    "capture_method" => capture_method,
    "charges" => charges,
    "created" => created,
    "currency" => currency,
    "customer" => customer,
    "description" => description,
    "invoice" => invoice,
    "last_payment_error" => last_payment_error,
    "latest_charge" => latest_charge,
    "livemode" => livemode,
    "metadata" => metadata: null_as_default,
    "next_action" => next_action,
    "on_behalf_of" => on_behalf_of,
    "payment_method" => payment_method,
    "payment_method_types" => payment_method_types: null_as_default,
    "receipt_email" => receipt_email,
    "setup_future_usage" => setup_future_usage,
    "shipping" => shipping,
    "source" => source,
    "statement_descriptor" => statement_descriptor,
    "statement_descriptor_suffix" => statement_descriptor_suffix,
    "status" => status,
    "transfer_group" => transfer_group,
});

impl PaymentIntent {
    /// The latest charge's id, from `latest_charge` (API version 2022-11-15 and later)
    /// or else the newest entry of the older `charges` list.
    pub fn latest_charge_id(&self) -> Option<&str> {
        match &self.latest_charge {
            Some(c) => c.id(),
            None => self
                .charges
                .as_ref()
                .and_then(|l| l.data.first())
                .map(|c| c.id.as_str()),
        }
    }

    /// The latest charge as an object, when Stripe sent it: an expanded
    /// `latest_charge`, or else the newest entry of the pre-2022-11-15 `charges` list.
    pub fn latest_charge(&self) -> Option<&Charge> {
        match &self.latest_charge {
            Some(c) => c.as_object(),
            None => self.charges.as_ref().and_then(|l| l.data.first()),
        }
    }

    /// The customer's id, whether `customer` is expanded or not.
    pub fn customer_id(&self) -> Option<&str> {
        self.customer.as_ref().and_then(Expandable::id)
    }

    /// The payment method's id, whether `payment_method` is expanded or not.
    pub fn payment_method_id(&self) -> Option<&str> {
        self.payment_method.as_ref().and_then(Expandable::id)
    }

    /// The invoice's id, from `invoice` (present before API version 2025-03-31.basil
    /// only).
    pub fn invoice_id(&self) -> Option<&str> {
        self.invoice.as_ref().and_then(Expandable::id)
    }
}

impl HasId for PaymentIntent {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

/// The error of a failed payment or setup attempt (`payment_intent.last_payment_error`,
/// `setup_intent.last_setup_error`, `invoice.last_finalization_error`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LastPaymentError {
    /// Advice for retrying a declined card payment.
    pub advice_code: Option<String>,
    /// The charge that failed, for card errors.
    pub charge: Option<String>,
    /// Error code (`card_declined`, `expired_card`, `authentication_required`…). A
    /// string rather than an enum: the list has hundreds of values and grows often.
    pub code: Option<String>,
    /// The issuer's decline code (`insufficient_funds`, `do_not_honor`…), for card
    /// errors.
    pub decline_code: Option<String>,
    /// Link to the error code's documentation.
    pub doc_url: Option<String>,
    /// A human-readable message, fit to show the customer for card errors.
    pub message: Option<String>,
    /// The card network's advice code.
    pub network_advice_code: Option<String>,
    /// The card network's decline code.
    pub network_decline_code: Option<String>,
    /// The parameter the error relates to.
    pub param: Option<String>,
    /// The payment method that failed.
    pub payment_method: Option<Box<PaymentMethod>>,
    /// The type of the payment method that failed, when `payment_method` is absent.
    pub payment_method_type: Option<String>,
    /// Error category.
    #[serde(rename = "type")]
    pub type_: Option<ApiErrorType>,
}

map_deserialize!(LastPaymentError {
    "advice_code" => advice_code,
    "charge" => charge,
    "code" => code,
    "decline_code" => decline_code,
    "doc_url" => doc_url,
    "message" => message,
    "network_advice_code" => network_advice_code,
    "network_decline_code" => network_decline_code,
    "param" => param,
    "payment_method" => payment_method,
    "payment_method_type" => payment_method_type,
    "type" => type_,
});

string_enum! {
    /// Status of a [`PaymentIntent`].
    pub enum PaymentIntentStatus {
        /// Canceled.
        Canceled = "canceled",
        /// Processing asynchronously.
        Processing = "processing",
        /// The customer must authenticate.
        RequiresAction = "requires_action",
        /// Authorized; capture it to collect the funds.
        RequiresCapture = "requires_capture",
        /// Waiting to be confirmed.
        RequiresConfirmation = "requires_confirmation",
        /// Needs a (new) payment method, e.g. after a failure.
        RequiresPaymentMethod = "requires_payment_method",
        /// `requires_payment_method` before API version 2019-02-11.
        RequiresSource = "requires_source",
        /// `requires_action` before API version 2019-02-11.
        RequiresSourceAction = "requires_source_action",
        /// Succeeded: the funds are yours.
        Succeeded = "succeeded",
    }
}

string_enum! {
    /// Why a [`PaymentIntent`] was canceled.
    pub enum PaymentIntentCancellationReason {
        /// Abandoned.
        Abandoned = "abandoned",
        /// Canceled automatically.
        Automatic = "automatic",
        /// A duplicate.
        Duplicate = "duplicate",
        /// Expired.
        Expired = "expired",
        /// Its invoice failed.
        FailedInvoice = "failed_invoice",
        /// Fraud.
        Fraudulent = "fraudulent",
        /// The customer asked.
        RequestedByCustomer = "requested_by_customer",
        /// Its invoice was voided.
        VoidInvoice = "void_invoice",
    }
}

string_enum! {
    /// When a [`PaymentIntent`]'s funds are captured.
    pub enum CaptureMethod {
        /// On authorization.
        Automatic = "automatic",
        /// Asynchronously after authorization.
        AutomaticAsync = "automatic_async",
        /// When you capture it.
        Manual = "manual",
    }
}

string_enum! {
    /// How a saved payment method will be used (`setup_future_usage`,
    /// `setup_intent.usage`).
    pub enum SetupFutureUsage {
        /// Charged while the customer is away.
        OffSession = "off_session",
        /// Charged while the customer is present.
        OnSession = "on_session",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/payment_intent.json"
    ));

    #[test]
    fn parses_fixture() {
        let pi: PaymentIntent = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(pi.id, "pi_1PgafyB7WZ01zgkWSjxsAJo3");
        assert_eq!(pi.amount, Some(1099));
        assert_eq!(pi.status, Some(PaymentIntentStatus::RequiresPaymentMethod));
        assert_eq!(pi.capture_method, Some(CaptureMethod::Automatic));
        assert_eq!(
            pi.last_payment_error.as_ref().unwrap().type_,
            Some(ApiErrorType::IdempotencyError)
        );
        assert_eq!(pi.latest_charge_id(), None);
        assert_eq!(pi.payment_method_types, ["card"]);
        assert!(pi.next_action.is_some());
        let back: PaymentIntent =
            serde_json::from_str(&serde_json::to_string(&pi).unwrap()).unwrap();
        assert_eq!(back, pi);
    }

    #[test]
    fn latest_charge_in_both_eras() {
        let new: PaymentIntent =
            serde_json::from_str(r#"{"id":"pi_1","latest_charge":"ch_new"}"#).unwrap();
        assert_eq!(new.latest_charge_id(), Some("ch_new"));
        assert!(new.latest_charge().is_none());

        let expanded: PaymentIntent = serde_json::from_str(
            r#"{"id":"pi_1","latest_charge":{"id":"ch_x","object":"charge","amount":9}}"#,
        )
        .unwrap();
        assert_eq!(expanded.latest_charge_id(), Some("ch_x"));
        assert_eq!(expanded.latest_charge().unwrap().amount, Some(9));

        let old: PaymentIntent = serde_json::from_str(
            r#"{"id":"pi_1","charges":{"object":"list","data":[{"id":"ch_2","object":"charge"},{"id":"ch_1","object":"charge"}],"has_more":false,"total_count":2,"url":"/v1/charges?payment_intent=pi_1"}}"#,
        )
        .unwrap();
        assert_eq!(old.latest_charge_id(), Some("ch_2"));
        assert_eq!(old.latest_charge().unwrap().id, "ch_2");
    }

    #[test]
    fn unknown_values_and_legacy_status() {
        let pi: PaymentIntent = serde_json::from_str(
            r#"{"id":"pi_1","status":"requires_source","cancellation_reason":"bored","capture_method":"later",
                "last_payment_error":{"type":"quantum_error","code":"card_declined","decline_code":"insufficient_funds",
                "payment_method":{"id":"pm_1","object":"payment_method","type":"card","card":{"last4":"0002"}}}}"#,
        )
        .unwrap();
        assert_eq!(pi.status, Some(PaymentIntentStatus::RequiresSource));
        assert_eq!(
            pi.cancellation_reason,
            Some(PaymentIntentCancellationReason::Unknown("bored".into()))
        );
        assert_eq!(
            pi.capture_method,
            Some(CaptureMethod::Unknown("later".into()))
        );
        let err = pi.last_payment_error.unwrap();
        assert_eq!(
            err.type_,
            Some(ApiErrorType::Unknown("quantum_error".into()))
        );
        assert_eq!(err.decline_code.as_deref(), Some("insufficient_funds"));
        assert_eq!(
            err.payment_method.unwrap().card.unwrap().last4.as_deref(),
            Some("0002")
        );
    }
}
