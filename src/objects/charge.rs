//! `charge` (`charge.*` events except disputes and `charge.refund.updated`).

use serde::Serialize;

use super::common::{
    string_enum, BillingDetails, Currency, Expandable, HasId, IdOnly, List, Metadata, Shipping,
};
use super::customer::Customer;
use super::invoice::Invoice;
use super::map_only::map_deserialize;
use super::payment_intent::PaymentIntent;
use super::refund::Refund;

/// A charge: one attempt to move money from a payment method.
///
/// Carried by `charge.succeeded`, `.failed`, `.captured`, `.refunded`, `.updated`,
/// `.pending` and `.expired`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Charge {
    /// Charge id (`ch_…` or `py_…`).
    pub id: String,
    /// Always `"charge"`.
    pub object: Option<String>,
    /// Amount intended to be collected, in the smallest currency unit.
    pub amount: Option<i64>,
    /// Amount captured.
    pub amount_captured: Option<i64>,
    /// Amount refunded (can be less than `amount` for partial refunds).
    pub amount_refunded: Option<i64>,
    /// Application fee requested, for Connect.
    pub application_fee_amount: Option<i64>,
    /// The balance transaction it created (expandable).
    pub balance_transaction: Option<Expandable<IdOnly>>,
    /// Billing details of the payment method at the time of the charge.
    pub billing_details: Option<BillingDetails>,
    /// Full statement descriptor the customer sees.
    pub calculated_statement_descriptor: Option<String>,
    /// Whether it was captured (uncaptured charges are authorizations).
    pub captured: Option<bool>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// Currency.
    pub currency: Option<Currency>,
    /// The customer (expandable).
    pub customer: Option<Expandable<Customer>>,
    /// Your description.
    pub description: Option<String>,
    /// Whether it was disputed.
    pub disputed: Option<bool>,
    /// Error code explaining a failure (see Stripe's error codes).
    pub failure_code: Option<String>,
    /// Message explaining a failure.
    pub failure_message: Option<String>,
    /// The invoice it paid (expandable). Removed in API version 2025-03-31.basil: use
    /// the invoice's `payments` instead.
    pub invoice: Option<Expandable<Invoice>>,
    /// Whether it exists in live mode.
    pub livemode: Option<bool>,
    /// Your metadata.
    pub metadata: Metadata,
    /// Whether the payment was accepted and why not.
    pub outcome: Option<ChargeOutcome>,
    /// Whether it succeeded or was authorized for later capture.
    pub paid: Option<bool>,
    /// The PaymentIntent it belongs to (expandable).
    pub payment_intent: Option<Expandable<PaymentIntent>>,
    /// Id of the payment method used.
    pub payment_method: Option<String>,
    /// Details of the payment method at the time of the charge.
    pub payment_method_details: Option<PaymentMethodDetails>,
    /// Email the receipt was sent to.
    pub receipt_email: Option<String>,
    /// Receipt number.
    pub receipt_number: Option<String>,
    /// URL of the receipt.
    pub receipt_url: Option<String>,
    /// Whether it was fully refunded.
    pub refunded: Option<bool>,
    /// Its refunds: included by default before API version 2022-11-15, only when
    /// expanded after.
    pub refunds: Option<List<Refund>>,
    /// Shipping details.
    pub shipping: Option<Shipping>,
    /// Statement descriptor.
    pub statement_descriptor: Option<String>,
    /// Suffix appended to the account's statement descriptor.
    pub statement_descriptor_suffix: Option<String>,
    /// Status.
    pub status: Option<ChargeStatus>,
    /// Transfer group, for Connect.
    pub transfer_group: Option<String>,
}

map_deserialize!(Charge {
    required "id" => id;
    "object" => object,
    "amount" => amount,
    "amount_captured" => amount_captured,
    "amount_refunded" => amount_refunded,
    "application_fee_amount" => application_fee_amount,
    "balance_transaction" => balance_transaction,
    "billing_details" => billing_details,
    "calculated_statement_descriptor" => calculated_statement_descriptor,
    "captured" => captured,
    "created" => created,
    "currency" => currency,
    "customer" => customer,
    "description" => description,
    "disputed" => disputed,
    "failure_code" => failure_code,
    "failure_message" => failure_message,
    "invoice" => invoice,
    "livemode" => livemode,
    "metadata" => metadata: null_as_default,
    "outcome" => outcome,
    "paid" => paid,
    "payment_intent" => payment_intent,
    "payment_method" => payment_method,
    "payment_method_details" => payment_method_details,
    "receipt_email" => receipt_email,
    "receipt_number" => receipt_number,
    "receipt_url" => receipt_url,
    "refunded" => refunded,
    "refunds" => refunds,
    "shipping" => shipping,
    "statement_descriptor" => statement_descriptor,
    "statement_descriptor_suffix" => statement_descriptor_suffix,
    "status" => status,
    "transfer_group" => transfer_group,
});

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
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ChargeOutcome {
    /// Advice for retrying a declined card payment.
    pub advice_code: Option<String>,
    /// The card network's decline code.
    pub network_decline_code: Option<String>,
    /// `approved_by_network`, `declined_by_network`, `not_sent_to_network` or
    /// `reversed_after_approval`.
    pub network_status: Option<String>,
    /// A reason code for the outcome (`highest_risk_level`, `elevated_risk_level`…).
    pub reason: Option<String>,
    /// Radar's risk level: `normal`, `elevated`, `highest`…
    pub risk_level: Option<String>,
    /// Radar's risk score (0–100).
    pub risk_score: Option<i64>,
    /// A human-readable description of the outcome for you.
    pub seller_message: Option<String>,
    /// `authorized`, `manual_review`, `issuer_declined`, `blocked` or `invalid`.
    #[serde(rename = "type")]
    pub type_: Option<String>,
}

map_deserialize!(ChargeOutcome {
    "advice_code" => advice_code,
    "network_decline_code" => network_decline_code,
    "network_status" => network_status,
    "reason" => reason,
    "risk_level" => risk_level,
    "risk_score" => risk_score,
    "seller_message" => seller_message,
    "type" => type_,
});

/// The payment method's details at the time of a [`Charge`]. Only card details are
/// typed; other types are under the key named by [`type_`](Self::type_) in the raw
/// object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PaymentMethodDetails {
    /// Card details, when `type` is `card`.
    pub card: Option<ChargeCardDetails>,
    /// Kind of payment method (`card`, `sepa_debit`…).
    #[serde(rename = "type")]
    pub type_: Option<String>,
}

map_deserialize!(PaymentMethodDetails {
    "card" => card,
    "type" => type_,
});

/// Card details of a [`Charge`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct ChargeCardDetails {
    /// Card brand: `amex`, `visa`, `mastercard`…
    pub brand: Option<String>,
    /// Two-letter country code of the issuer.
    pub country: Option<String>,
    /// Expiry month (1–12).
    pub exp_month: Option<i64>,
    /// Four-digit expiry year.
    pub exp_year: Option<i64>,
    /// Identifies the card number across objects.
    pub fingerprint: Option<String>,
    /// `credit`, `debit`, `prepaid` or `unknown`.
    pub funding: Option<String>,
    /// Last four digits.
    pub last4: Option<String>,
    /// Card network the charge went through.
    pub network: Option<String>,
}

map_deserialize!(ChargeCardDetails {
    "brand" => brand,
    "country" => country,
    "exp_month" => exp_month,
    "exp_year" => exp_year,
    "fingerprint" => fingerprint,
    "funding" => funding,
    "last4" => last4,
    "network" => network,
});

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
