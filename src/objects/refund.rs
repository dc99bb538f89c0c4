//! `refund` (`refund.*` and `charge.refund.updated` events).

use serde::Serialize;

use super::charge::Charge;
use super::common::{string_enum, Currency, Expandable, HasId, IdOnly, Metadata};
use super::map_only::map_deserialize;
use super::payment_intent::PaymentIntent;

/// A refund of a charge.
///
/// Carried by `refund.created`, `refund.updated`, `refund.failed` and
/// `charge.refund.updated`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Refund {
    /// Refund id (`re_…` or `pyr_…`).
    pub id: String,
    /// Always `"refund"`.
    pub object: Option<String>,
    /// Amount refunded, in the smallest currency unit.
    pub amount: Option<i64>,
    /// The balance transaction it created (expandable).
    pub balance_transaction: Option<Expandable<IdOnly>>,
    /// The charge refunded (expandable).
    pub charge: Option<Expandable<Charge>>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// Currency.
    pub currency: Option<Currency>,
    /// Your description.
    pub description: Option<String>,
    /// Why it failed, when `status` is `failed`: `lost_or_stolen_card`,
    /// `expired_or_canceled_card`, `charge_for_pending_refund_disputed`,
    /// `insufficient_funds`, `declined`, `merchant_request` or `unknown`.
    pub failure_reason: Option<String>,
    /// Your metadata.
    pub metadata: Metadata,
    /// The PaymentIntent refunded (expandable).
    pub payment_intent: Option<Expandable<PaymentIntent>>,
    /// Why it was made.
    pub reason: Option<RefundReason>,
    /// Receipt number.
    pub receipt_number: Option<String>,
    /// Status.
    pub status: Option<RefundStatus>,
}

map_deserialize!(Refund {
    required "id" => id;
    "object" => object,
    "amount" => amount,
    "balance_transaction" => balance_transaction,
    "charge" => charge,
    "created" => created,
    "currency" => currency,
    "description" => description,
    "failure_reason" => failure_reason,
    "metadata" => metadata: null_as_default,
    "payment_intent" => payment_intent,
    "reason" => reason,
    "receipt_number" => receipt_number,
    "status" => status,
});

impl Refund {
    /// The charge's id, whether `charge` is expanded or not.
    pub fn charge_id(&self) -> Option<&str> {
        self.charge.as_ref().and_then(Expandable::id)
    }

    /// The PaymentIntent's id, whether `payment_intent` is expanded or not.
    pub fn payment_intent_id(&self) -> Option<&str> {
        self.payment_intent.as_ref().and_then(Expandable::id)
    }
}

impl HasId for Refund {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

string_enum! {
    /// Why a [`Refund`] was made.
    pub enum RefundReason {
        /// A duplicate payment.
        Duplicate = "duplicate",
        /// An uncaptured charge expired.
        ExpiredUncapturedCharge = "expired_uncaptured_charge",
        /// Fraud.
        Fraudulent = "fraudulent",
        /// The customer asked.
        RequestedByCustomer = "requested_by_customer",
    }
}

string_enum! {
    /// Status of a [`Refund`].
    pub enum RefundStatus {
        /// Canceled.
        Canceled = "canceled",
        /// Failed; see `failure_reason`.
        Failed = "failed",
        /// In progress.
        Pending = "pending",
        /// The customer must act (some payment methods).
        RequiresAction = "requires_action",
        /// Succeeded.
        Succeeded = "succeeded",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/refund.json"
    ));

    #[test]
    fn parses_fixture() {
        let r: Refund = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(r.id, "re_1Pgc72B7WZ01zgkWqPvrRrPE");
        assert_eq!(r.amount, Some(100));
        assert_eq!(r.charge_id(), Some("ch_1PgafuB7WZ01zgkWXYmPNZs8"));
        assert_eq!(r.status, Some(RefundStatus::Succeeded));
        assert_eq!(r.reason, None);
        let back: Refund = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn unknown_reason_and_expanded_charge() {
        let r: Refund = serde_json::from_str(
            r#"{"id":"re_1","reason":"goodwill","charge":{"id":"ch_9","object":"charge","amount":7}}"#,
        )
        .unwrap();
        assert_eq!(r.reason, Some(RefundReason::Unknown("goodwill".into())));
        assert_eq!(r.charge_id(), Some("ch_9"));
        assert_eq!(r.charge.unwrap().as_object().unwrap().amount, Some(7));
    }
}
