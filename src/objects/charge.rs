//! `charge` (`charge.*` events except disputes and `charge.refund.updated`).

use serde::{Deserialize, Serialize};

use super::common::{
    null_as_default, string_enum, BillingDetails, Currency, Expandable, HasId, IdOnly, List,
    Metadata, Shipping,
};
use super::customer::Customer;
use super::invoice::Invoice;
use super::payment_intent::PaymentIntent;
use super::refund::Refund;

/// A charge: one attempt to move money from a payment method.
///
/// Carried by `charge.succeeded`, `.failed`, `.captured`, `.refunded`, `.updated`,
/// `.pending` and `.expired`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Charge {
    /// Charge id (`ch_…` or `py_…`).
    pub id: String,
    /// Always `"charge"`.
    #[serde(default)]
    pub object: Option<String>,
    /// Amount intended to be collected, in the smallest currency unit.
    #[serde(default)]
    pub amount: Option<i64>,
    /// Amount captured.
    #[serde(default)]
    pub amount_captured: Option<i64>,
    /// Amount refunded (can be less than `amount` for partial refunds).
    #[serde(default)]
    pub amount_refunded: Option<i64>,
    /// Application fee requested, for Connect.
    #[serde(default)]
    pub application_fee_amount: Option<i64>,
    /// The balance transaction it created (expandable).
    #[serde(default)]
    pub balance_transaction: Option<Expandable<IdOnly>>,
    /// Billing details of the payment method at the time of the charge.
    #[serde(default)]
    pub billing_details: Option<BillingDetails>,
    /// Full statement descriptor the customer sees.
    #[serde(default)]
    pub calculated_statement_descriptor: Option<String>,
    /// Whether it was captured (uncaptured charges are authorizations).
    #[serde(default)]
    pub captured: Option<bool>,
    /// When it was created (Unix seconds).
    #[serde(default)]
    pub created: Option<i64>,
    /// Currency.
    #[serde(default)]
    pub currency: Option<Currency>,
    /// The customer (expandable).
    #[serde(default)]
    pub customer: Option<Expandable<Customer>>,
    /// Your description.
    #[serde(default)]
    pub description: Option<String>,
    /// Whether it was disputed.
    #[serde(default)]
    pub disputed: Option<bool>,
    /// Error code explaining a failure (see Stripe's error codes).
    #[serde(default)]
    pub failure_code: Option<String>,
    /// Message explaining a failure.
    #[serde(default)]
    pub failure_message: Option<String>,
    /// The invoice it paid (expandable). Removed in API version 2025-03-31.basil: use
    /// the invoice's `payments` instead.
    #[serde(default)]
    pub invoice: Option<Expandable<Invoice>>,
    /// Whether it exists in live mode.
    #[serde(default)]
    pub livemode: Option<bool>,
    /// Your metadata.
    #[serde(default, deserialize_with = "null_as_default")]
    pub metadata: Metadata,
    /// Whether the payment was accepted and why not.
    #[serde(default)]
    pub outcome: Option<ChargeOutcome>,
    /// Whether it succeeded or was authorized for later capture.
    #[serde(default)]
    pub paid: Option<bool>,
    /// The PaymentIntent it belongs to (expandable).
    #[serde(default)]
    pub payment_intent: Option<Expandable<PaymentIntent>>,
    /// Id of the payment method used.
    #[serde(default)]
    pub payment_method: Option<String>,
    /// Details of the payment method at the time of the charge.
    #[serde(default)]
    pub payment_method_details: Option<PaymentMethodDetails>,
    /// Email the receipt was sent to.
    #[serde(default)]
    pub receipt_email: Option<String>,
    /// Receipt number.
    #[serde(default)]
    pub receipt_number: Option<String>,
    /// URL of the receipt.
    #[serde(default)]
    pub receipt_url: Option<String>,
    /// Whether it was fully refunded.
    #[serde(default)]
    pub refunded: Option<bool>,
    /// Its refunds: included by default before API version 2022-11-15, only when
    /// expanded after.
    #[serde(default)]
    pub refunds: Option<List<Refund>>,
    /// Shipping details.
    #[serde(default)]
    pub shipping: Option<Shipping>,
    /// Statement descriptor.
    #[serde(default)]
    pub statement_descriptor: Option<String>,
    /// Suffix appended to the account's statement descriptor.
    #[serde(default)]
    pub statement_descriptor_suffix: Option<String>,
    /// Status.
    #[serde(default)]
    pub status: Option<ChargeStatus>,
    /// Transfer group, for Connect.
    #[serde(default)]
    pub transfer_group: Option<String>,
}

impl Charge {
    /// The customer's id, whether `customer` is expanded or not.
    pub fn customer_id(&self) -> Option<&str> {
        self.customer.as_ref().and_then(Expandable::id)
    }

    /// The PaymentIntent's id, whether `payment_intent` is expanded or not.
    pub fn payment_intent_id(&self) -> Option<&str> {
        self.payment_intent.as_ref().and_then(Expandable::id)
    }

    /// The invoice's id, from `invoice` (present before API version 2025-03-31.basil
    /// only).
    pub fn invoice_id(&self) -> Option<&str> {
        self.invoice.as_ref().and_then(Expandable::id)
    }

    /// The balance transaction's id, whether expanded or not.
    pub fn balance_transaction_id(&self) -> Option<&str> {
        self.balance_transaction.as_ref().and_then(Expandable::id)
    }
}

impl HasId for Charge {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

/// Whether a [`Charge`] was accepted, and the reason when it was not.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChargeOutcome {
    /// Advice for retrying a declined card payment.
    #[serde(default)]
    pub advice_code: Option<String>,
    /// The card network's decline code.
    #[serde(default)]
    pub network_decline_code: Option<String>,
    /// `approved_by_network`, `declined_by_network`, `not_sent_to_network` or
    /// `reversed_after_approval`.
    #[serde(default)]
    pub network_status: Option<String>,
    /// A reason code for the outcome (`highest_risk_level`, `elevated_risk_level`…).
    #[serde(default)]
    pub reason: Option<String>,
    /// Radar's risk level: `normal`, `elevated`, `highest`…
    #[serde(default)]
    pub risk_level: Option<String>,
    /// Radar's risk score (0–100).
    #[serde(default)]
    pub risk_score: Option<i64>,
    /// A human-readable description of the outcome for you.
    #[serde(default)]
    pub seller_message: Option<String>,
    /// `authorized`, `manual_review`, `issuer_declined`, `blocked` or `invalid`.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
}

/// The payment method's details at the time of a [`Charge`]. Only card details are
/// typed; other types are under the key named by [`type_`](Self::type_) in the raw
/// object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PaymentMethodDetails {
    /// Card details, when `type` is `card`.
    #[serde(default)]
    pub card: Option<ChargeCardDetails>,
    /// Kind of payment method (`card`, `sepa_debit`…).
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
}

/// Card details of a [`Charge`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct ChargeCardDetails {
    /// Card brand: `amex`, `visa`, `mastercard`…
    #[serde(default)]
    pub brand: Option<String>,
    /// Two-letter country code of the issuer.
    #[serde(default)]
    pub country: Option<String>,
    /// Expiry month (1–12).
    #[serde(default)]
    pub exp_month: Option<i64>,
    /// Four-digit expiry year.
    #[serde(default)]
    pub exp_year: Option<i64>,
    /// Identifies the card number across objects.
    #[serde(default)]
    pub fingerprint: Option<String>,
    /// `credit`, `debit`, `prepaid` or `unknown`.
    #[serde(default)]
    pub funding: Option<String>,
    /// Last four digits.
    #[serde(default)]
    pub last4: Option<String>,
    /// Card network the charge went through.
    #[serde(default)]
    pub network: Option<String>,
}

string_enum! {
    /// Status of a [`Charge`].
    pub enum ChargeStatus {
        /// Failed.
        Failed = "failed",
        /// Not yet final (some asynchronous payment methods).
        Pending = "pending",
        /// Succeeded.
        Succeeded = "succeeded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/charge.json"
    ));

    #[test]
    fn parses_fixture() {
        let c: Charge = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(c.id, "ch_1PgafuB7WZ01zgkWXYmPNZs8");
        assert_eq!(c.amount, Some(100));
        assert_eq!(c.status, Some(ChargeStatus::Succeeded));
        assert_eq!(c.paid, Some(true));
        assert_eq!(
            c.balance_transaction_id(),
            Some("txn_1PgaxNB7WZ01zgkWEV3TLf40")
        );
        assert_eq!(
            c.billing_details.as_ref().unwrap().name.as_deref(),
            Some("Jenny Rosen")
        );
        let pmd = c.payment_method_details.as_ref().unwrap();
        assert_eq!(pmd.type_.as_deref(), Some("card"));
        assert_eq!(pmd.card.as_ref().unwrap().last4.as_deref(), Some("4242"));
        assert_eq!(c.refunds.as_ref().map(List::len), Some(0));
        assert_eq!(c.payment_intent_id(), None);
        assert_eq!(c.outcome.as_ref().unwrap().type_.as_deref(), Some("type"));
        let back: Charge = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn unknown_status_and_expanded_fields() {
        let c: Charge = serde_json::from_str(
            r#"{"id":"ch_1","status":"reversed","payment_intent":{"id":"pi_1","object":"payment_intent","amount":5},
                "customer":"cus_1","invoice":"in_1","refunds":null}"#,
        )
        .unwrap();
        assert_eq!(c.status, Some(ChargeStatus::Unknown("reversed".into())));
        assert_eq!(c.payment_intent_id(), Some("pi_1"));
        assert_eq!(
            c.payment_intent
                .as_ref()
                .unwrap()
                .as_object()
                .unwrap()
                .amount,
            Some(5)
        );
        assert_eq!(c.customer_id(), Some("cus_1"));
        assert_eq!(c.invoice_id(), Some("in_1"));
        assert!(c.refunds.is_none());
    }
}
