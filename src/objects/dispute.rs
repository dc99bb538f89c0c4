//! `dispute` (`charge.dispute.*` events).

use serde::Serialize;

use super::charge::Charge;
use super::common::{string_enum, Currency, Expandable, HasId, Metadata};
use super::map_only::map_deserialize;
use super::payment_intent::PaymentIntent;

/// A dispute (chargeback or inquiry) a customer raised with their bank.
///
/// Carried by `charge.dispute.created`, `.updated`, `.closed`, `.funds_withdrawn` and
/// `.funds_reinstated`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Dispute {
    /// Dispute id (`du_…` or `dp_…`).
    pub id: String,
    /// Always `"dispute"`.
    pub object: Option<String>,
    /// Disputed amount, in the smallest currency unit.
    pub amount: Option<i64>,
    /// The disputed charge (expandable).
    pub charge: Option<Expandable<Charge>>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// Currency.
    pub currency: Option<Currency>,
    /// Evidence deadline and submission state.
    pub evidence_details: Option<DisputeEvidenceDetails>,
    /// Whether the charge can still be refunded to close the dispute.
    pub is_charge_refundable: Option<bool>,
    /// Whether it exists in live mode.
    pub livemode: Option<bool>,
    /// Your metadata.
    pub metadata: Metadata,
    /// The disputed PaymentIntent (expandable).
    pub payment_intent: Option<Expandable<PaymentIntent>>,
    /// The reason the customer gave.
    pub reason: Option<DisputeReason>,
    /// Status.
    pub status: Option<DisputeStatus>,
}

map_deserialize!(Dispute {
    required "id" => id;
    "object" => object,
    "amount" => amount,
    "charge" => charge,
    "created" => created,
    "currency" => currency,
    "evidence_details" => evidence_details,
    "is_charge_refundable" => is_charge_refundable,
    "livemode" => livemode,
    "metadata" => metadata: null_as_default,
    "payment_intent" => payment_intent,
    "reason" => reason,
    "status" => status,
});

impl Dispute {
    /// The disputed charge's id, whether `charge` is expanded or not.
    pub fn charge_id(&self) -> Option<&str> {
        self.charge.as_ref().and_then(Expandable::id)
    }

    /// The disputed PaymentIntent's id, whether `payment_intent` is expanded or not.
    pub fn payment_intent_id(&self) -> Option<&str> {
        self.payment_intent.as_ref().and_then(Expandable::id)
    }

    /// The evidence deadline (Unix seconds), from `evidence_details.due_by`.
    pub fn evidence_due_by(&self) -> Option<i64> {
        self.evidence_details.as_ref().and_then(|e| e.due_by)
    }
}

impl HasId for Dispute {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

/// Evidence deadline and submission state of a [`Dispute`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DisputeEvidenceDetails {
    /// Deadline for submitting evidence (Unix seconds).
    pub due_by: Option<i64>,
    /// Whether evidence has been staged.
    pub has_evidence: Option<bool>,
    /// Whether the deadline passed.
    pub past_due: Option<bool>,
    /// How many times evidence was submitted.
    pub submission_count: Option<i64>,
}

map_deserialize!(DisputeEvidenceDetails {
    "due_by" => due_by,
    "has_evidence" => has_evidence,
    "past_due" => past_due,
    "submission_count" => submission_count,
});

string_enum! {
    /// The reason given for a [`Dispute`].
    pub enum DisputeReason {
        /// The bank could not process the charge.
        BankCannotProcess = "bank_cannot_process",
        /// A check was returned.
        CheckReturned = "check_returned",
        /// A promised credit was not processed.
        CreditNotProcessed = "credit_not_processed",
        /// Initiated by the customer.
        CustomerInitiated = "customer_initiated",
        /// A debit was not authorized.
        DebitNotAuthorized = "debit_not_authorized",
        /// Charged twice.
        Duplicate = "duplicate",
        /// Fraud.
        Fraudulent = "fraudulent",
        /// Uncategorized.
        General = "general",
        /// Wrong account details.
        IncorrectAccountDetails = "incorrect_account_details",
        /// Insufficient funds.
        InsufficientFunds = "insufficient_funds",
        /// Network rules were not followed.
        Noncompliant = "noncompliant",
        /// The product was not received.
        ProductNotReceived = "product_not_received",
        /// The product was unacceptable.
        ProductUnacceptable = "product_unacceptable",
        /// Charged after the subscription was canceled.
        SubscriptionCanceled = "subscription_canceled",
        /// The customer does not recognize the charge.
        Unrecognized = "unrecognized",
    }
}

string_enum! {
    /// Status of a [`Dispute`].
    pub enum DisputeStatus {
        /// Lost, and can be appealed: evidence for the appeal is needed.
        AppealNeedsResponse = "appeal_needs_response",
        /// An appeal was submitted; the bank is deciding.
        AppealUnderReview = "appeal_under_review",
        /// Closed by refunding the charge (old API versions).
        ChargeRefunded = "charge_refunded",
        /// Lost.
        Lost = "lost",
        /// Evidence is needed.
        NeedsResponse = "needs_response",
        /// Prevented before becoming a dispute.
        Prevented = "prevented",
        /// Evidence submitted; the bank is deciding.
        UnderReview = "under_review",
        /// An inquiry was closed.
        WarningClosed = "warning_closed",
        /// An inquiry needs a response.
        WarningNeedsResponse = "warning_needs_response",
        /// An inquiry is under review.
        WarningUnderReview = "warning_under_review",
        /// Won.
        Won = "won",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/dispute.json"
    ));

    #[test]
    fn parses_fixture() {
        let d: Dispute = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(d.id, "dp_1Pgc71B7WZ01zgkWMevJiAUx");
        assert_eq!(d.amount, Some(1000));
        assert_eq!(d.charge_id(), Some("ch_1PgafuB7WZ01zgkWXYmPNZs8"));
        assert_eq!(d.reason, Some(DisputeReason::General));
        assert_eq!(d.status, Some(DisputeStatus::WarningNeedsResponse));
        assert_eq!(d.evidence_due_by(), Some(1_723_679_999));
        assert_eq!(d.is_charge_refundable, Some(true));
        let back: Dispute = serde_json::from_str(&serde_json::to_string(&d).unwrap()).unwrap();
        assert_eq!(back, d);
    }

    #[test]
    fn unknown_values_and_expanded_charge() {
        let d: Dispute = serde_json::from_str(
            r#"{"id":"du_1","reason":"aliens","status":"escalated","charge":{"id":"ch_1","object":"charge"}}"#,
        )
        .unwrap();
        assert_eq!(d.reason, Some(DisputeReason::Unknown("aliens".into())));
        assert_eq!(d.status, Some(DisputeStatus::Unknown("escalated".into())));
        assert_eq!(d.charge_id(), Some("ch_1"));
        assert!(d.charge.unwrap().is_expanded());
    }
}
