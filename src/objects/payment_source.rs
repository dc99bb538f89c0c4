//! Legacy payment sources: `card`, `bank_account` and `source` (`customer.source.*`,
//! `account.external_account.*` and `source.*` events).

use serde::{Serialize, Serializer};

use super::common::{string_enum, Address, Currency, Expandable, HasId, IdOnly, Metadata};
use super::customer::Customer;
use super::map_only::map_deserialize;

/// A card saved as a legacy source on a customer, or as a connected account's external
/// account.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Card {
    /// Card id (`card_…`).
    pub id: String,
    /// Always `"card"`.
    pub object: Option<String>,
    /// The connected account it is an external account of (expandable).
    pub account: Option<Expandable<IdOnly>>,
    /// Billing address country.
    pub address_country: Option<String>,
    /// Billing address postal code.
    pub address_zip: Option<String>,
    /// Card brand as displayed: `Visa`, `American Express`, `MasterCard`…
    pub brand: Option<String>,
    /// Two-letter country code of the issuer.
    pub country: Option<String>,
    /// Default currency, for external accounts.
    pub currency: Option<Currency>,
    /// The customer it belongs to (expandable).
    pub customer: Option<Expandable<Customer>>,
    /// Result of the CVC check: `pass`, `fail`, `unavailable` or `unchecked`.
    pub cvc_check: Option<String>,
    /// `true` on a deleted card stub.
    pub deleted: Option<bool>,
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
    /// Your metadata.
    pub metadata: Metadata,
    /// Cardholder name.
    pub name: Option<String>,
}

map_deserialize!(Card {
    required "id" => id;
    "object" => object,
    "account" => account,
    "address_country" => address_country,
    "address_zip" => address_zip,
    "brand" => brand,
    "country" => country,
    "currency" => currency,
    "customer" => customer,
    "cvc_check" => cvc_check,
    "deleted" => deleted,
    "exp_month" => exp_month,
    "exp_year" => exp_year,
    "fingerprint" => fingerprint,
    "funding" => funding,
    "last4" => last4,
    "metadata" => metadata: null_as_default,
    "name" => name,
});

/// A bank account saved as a legacy source on a customer, or as a connected account's
/// external account.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BankAccount {
    /// Bank account id (`ba_…`).
    pub id: String,
    /// Always `"bank_account"`.
    pub object: Option<String>,
    /// The connected account it is an external account of (expandable).
    pub account: Option<Expandable<IdOnly>>,
    /// Account holder's name.
    pub account_holder_name: Option<String>,
    /// `individual` or `company`.
    pub account_holder_type: Option<String>,
    /// The bank's account type (`checking`, `savings`…), when known.
    pub account_type: Option<String>,
    /// Bank name.
    pub bank_name: Option<String>,
    /// Two-letter country code of the bank.
    pub country: Option<String>,
    /// Currency paid out to it.
    pub currency: Option<Currency>,
    /// The customer it belongs to (expandable).
    pub customer: Option<Expandable<Customer>>,
    /// `true` on a deleted bank account stub.
    pub deleted: Option<bool>,
    /// Identifies the account number across objects.
    pub fingerprint: Option<String>,
    /// Last four digits of the account number.
    pub last4: Option<String>,
    /// Your metadata.
    pub metadata: Metadata,
    /// Routing transit number.
    pub routing_number: Option<String>,
    /// Verification status.
    pub status: Option<BankAccountStatus>,
}

map_deserialize!(BankAccount {
    required "id" => id;
    "object" => object,
    "account" => account,
    "account_holder_name" => account_holder_name,
    "account_holder_type" => account_holder_type,
    "account_type" => account_type,
    "bank_name" => bank_name,
    "country" => country,
    "currency" => currency,
    "customer" => customer,
    "deleted" => deleted,
    "fingerprint" => fingerprint,
    "last4" => last4,
    "metadata" => metadata: null_as_default,
    "routing_number" => routing_number,
    "status" => status,
});

/// A legacy Source object (`src_…`), replaced by PaymentMethods.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Source {
    /// Source id (`src_…`).
    pub id: String,
    /// Always `"source"`.
    pub object: Option<String>,
    /// Amount for single-use sources, in the smallest currency unit.
    pub amount: Option<i64>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// Currency of a single-use source.
    pub currency: Option<Currency>,
    /// The customer it is attached to.
    pub customer: Option<String>,
    /// How the customer authenticates.
    pub flow: Option<SourceFlow>,
    /// Whether it exists in live mode.
    pub livemode: Option<bool>,
    /// Your metadata.
    pub metadata: Metadata,
    /// The owner's details.
    pub owner: Option<SourceOwner>,
    /// Statement descriptor.
    pub statement_descriptor: Option<String>,
    /// Status; only `chargeable` sources can be charged.
    pub status: Option<SourceStatus>,
    /// Kind of source.
    #[serde(rename = "type")]
    pub type_: Option<SourceType>,
    /// Whether it can be reused.
    pub usage: Option<SourceUsage>,
}

map_deserialize!(Source {
    required "id" => id;
    "object" => object,
    "amount" => amount,
    "created" => created,
    "currency" => currency,
    "customer" => customer,
    "flow" => flow,
    "livemode" => livemode,
    "metadata" => metadata: null_as_default,
    "owner" => owner,
    "statement_descriptor" => statement_descriptor,
    "status" => status,
    "type" => type_,
    "usage" => usage,
});

/// The owner of a [`Source`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct SourceOwner {
    /// Owner's address.
    pub address: Option<Address>,
    /// Owner's email.
    pub email: Option<String>,
    /// Owner's name.
    pub name: Option<String>,
    /// Owner's phone.
    pub phone: Option<String>,
}

map_deserialize!(SourceOwner {
    "address" => address,
    "email" => email,
    "name" => name,
    "phone" => phone,
});

impl HasId for Card {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

impl HasId for BankAccount {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

impl HasId for Source {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

impl Card {
    /// The customer's id, whether `customer` is expanded or not.
    pub fn customer_id(&self) -> Option<&str> {
        self.customer.as_ref().and_then(Expandable::id)
    }
}

impl BankAccount {
    /// The customer's id, whether `customer` is expanded or not.
    pub fn customer_id(&self) -> Option<&str> {
        self.customer.as_ref().and_then(Expandable::id)
    }
}

/// The object of a polymorphic source event (`customer.source.*`,
/// `account.external_account.*`): a card, a bank account or a legacy source, told apart
/// by the JSON `object` field, or, for a kind of source this release does not know (Stripe
/// adds them), the object as JSON ([`Unknown`](Self::Unknown)), so that such an event is
/// still typed rather than [`Event::Unparsed`](crate::Event::Unparsed).
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub enum PaymentSource {
    /// `"object": "bank_account"`.
    BankAccount(Box<BankAccount>),
    /// `"object": "card"`.
    Card(Box<Card>),
    /// `"object": "source"`.
    Source(Box<Source>),
    /// Any other `object`: the JSON object as Stripe sent it. Its `Debug` output hides
    /// the credentials it may hold (a `client_secret`).
    Unknown(Box<serde_json::Value>),
}

impl std::fmt::Debug for PaymentSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PaymentSource::BankAccount(b) => f.debug_tuple("BankAccount").field(b).finish(),
            PaymentSource::Card(c) => f.debug_tuple("Card").field(c).finish(),
            PaymentSource::Source(s) => f.debug_tuple("Source").field(s).finish(),
            PaymentSource::Unknown(v) => {
                let mut v = (**v).clone();
                crate::secret::redact_json(&mut v);
                f.debug_tuple("Unknown").field(&v).finish()
            }
        }
    }
}

impl PaymentSource {
    /// The `object` value this variant stands for (for [`Unknown`](Self::Unknown), the
    /// one Stripe sent).
    pub fn object_type(&self) -> &str {
        match self {
            PaymentSource::BankAccount(_) => "bank_account",
            PaymentSource::Card(_) => "card",
            PaymentSource::Source(_) => "source",
            PaymentSource::Unknown(v) => v["object"].as_str().unwrap_or_default(),
        }
    }

    /// The card, if this is one.
    pub fn as_card(&self) -> Option<&Card> {
        match self {
            PaymentSource::Card(c) => Some(c),
            _ => None,
        }
    }

    /// The bank account, if this is one.
    pub fn as_bank_account(&self) -> Option<&BankAccount> {
        match self {
            PaymentSource::BankAccount(b) => Some(b),
            _ => None,
        }
    }

    /// The legacy source, if this is one.
    pub fn as_source(&self) -> Option<&Source> {
        match self {
            PaymentSource::Source(s) => Some(s),
            _ => None,
        }
    }

    /// The owning customer's id, when the object has one.
    pub fn customer_id(&self) -> Option<&str> {
        match self {
            PaymentSource::BankAccount(b) => b.customer_id(),
            PaymentSource::Card(c) => c.customer_id(),
            PaymentSource::Source(s) => s.customer.as_deref(),
            // A customer's id, or an expanded customer's.
            PaymentSource::Unknown(v) => match &v["customer"] {
                serde_json::Value::Object(c) => c.get("id").and_then(serde_json::Value::as_str),
                c => c.as_str(),
            },
        }
    }
}

impl HasId for PaymentSource {
    fn id(&self) -> Option<&str> {
        match self {
            PaymentSource::BankAccount(b) => b.id(),
            PaymentSource::Card(c) => c.id(),
            PaymentSource::Source(s) => s.id(),
            PaymentSource::Unknown(v) => v["id"].as_str(),
        }
    }
}

impl Serialize for PaymentSource {
    /// Writes the inner object.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            PaymentSource::BankAccount(b) => b.serialize(s),
            PaymentSource::Card(c) => c.serialize(s),
            PaymentSource::Source(x) => x.serialize(s),
            PaymentSource::Unknown(v) => v.serialize(s),
        }
    }
}

string_enum! {
    /// Verification status of a [`BankAccount`].
    pub enum BankAccountStatus {
        /// Added, not yet validated.
        New = "new",
        /// A transfer to it failed; it is disabled.
        Errored = "errored",
        /// Its account number was deactivated by the bank.
        TokenizedAccountNumberDeactivated = "tokenized_account_number_deactivated",
        /// Checked for basic validity.
        Validated = "validated",
        /// Verification failed.
        VerificationFailed = "verification_failed",
        /// Ownership verified.
        Verified = "verified",
    }
}

string_enum! {
    /// Status of a [`Source`].
    pub enum SourceStatus {
        /// Canceled.
        Canceled = "canceled",
        /// Can be charged.
        Chargeable = "chargeable",
        /// Used up (single-use).
        Consumed = "consumed",
        /// Failed to become chargeable.
        Failed = "failed",
        /// Waiting for the customer.
        Pending = "pending",
    }
}

string_enum! {
    /// Authentication flow of a [`Source`].
    pub enum SourceFlow {
        /// A verification code.
        CodeVerification = "code_verification",
        /// No authentication.
        None = "none",
        /// The customer pushes funds.
        Receiver = "receiver",
        /// A redirect to the customer's bank.
        Redirect = "redirect",
    }
}

string_enum! {
    /// Whether a [`Source`] can be reused.
    pub enum SourceUsage {
        /// Can be charged many times.
        Reusable = "reusable",
        /// Can be charged once.
        SingleUse = "single_use",
    }
}

string_enum! {
    /// Kind of [`Source`].
    pub enum SourceType {
        /// ACH credit transfer.
        AchCreditTransfer = "ach_credit_transfer",
        /// ACH debit.
        AchDebit = "ach_debit",
        /// Canadian pre-authorized debit.
        AcssDebit = "acss_debit",
        /// Alipay.
        Alipay = "alipay",
        /// Australian BECS direct debit.
        AuBecsDebit = "au_becs_debit",
        /// Bancontact.
        Bancontact = "bancontact",
        /// Card.
        Card = "card",
        /// Card read by a terminal.
        CardPresent = "card_present",
        /// EPS.
        Eps = "eps",
        /// Giropay.
        Giropay = "giropay",
        /// iDEAL.
        Ideal = "ideal",
        /// Klarna.
        Klarna = "klarna",
        /// Multibanco.
        Multibanco = "multibanco",
        /// Przelewy24.
        P24 = "p24",
        /// SEPA credit transfer.
        SepaCreditTransfer = "sepa_credit_transfer",
        /// SEPA direct debit.
        SepaDebit = "sepa_debit",
        /// Sofort.
        Sofort = "sofort",
        /// 3D Secure.
        ThreeDSecure = "three_d_secure",
        /// WeChat Pay.
        Wechat = "wechat",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CARD: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/card.json"
    ));
    const BANK: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/bank_account.json"
    ));
    const SOURCE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/source.json"
    ));

    #[test]
    fn parses_fixtures() {
        let c: Card = serde_json::from_str(CARD).unwrap();
        assert_eq!(c.id, "card_1PgaftB7WZ01zgkWm3waTcFp");
        assert_eq!(c.brand.as_deref(), Some("Visa"));
        assert_eq!(c.last4.as_deref(), Some("4242"));
        assert_eq!((c.exp_month, c.exp_year), (Some(8), Some(2030)));
        assert_eq!(c.name.as_deref(), Some("Jenny Rosen"));

        let b: BankAccount = serde_json::from_str(BANK).unwrap();
        assert_eq!(b.id, "ba_1PgagAB7WZ01zgkWr3DySp2Q");
        assert_eq!(b.status, Some(BankAccountStatus::New));
        assert_eq!(b.last4.as_deref(), Some("6789"));
        assert_eq!(b.bank_name.as_deref(), Some("STRIPE TEST BANK"));

        let s: Source = serde_json::from_str(SOURCE).unwrap();
        assert_eq!(s.id, "src_1Pgc75B7WZ01zgkWn9ogkWOr");
        assert_eq!(s.status, Some(SourceStatus::Pending));
        assert_eq!(s.type_, Some(SourceType::AchCreditTransfer));
        assert_eq!(s.flow, Some(SourceFlow::Receiver));
        assert_eq!(s.usage, Some(SourceUsage::Reusable));
        assert_eq!(
            s.owner.as_ref().unwrap().email.as_deref(),
            Some("jenny.rosen@example.com")
        );

        for (src, id) in [
            (
                PaymentSource::Card(Box::new(c.clone())),
                "card_1PgaftB7WZ01zgkWm3waTcFp",
            ),
            (
                PaymentSource::BankAccount(Box::new(b.clone())),
                "ba_1PgagAB7WZ01zgkWr3DySp2Q",
            ),
            (
                PaymentSource::Source(Box::new(s.clone())),
                "src_1Pgc75B7WZ01zgkWn9ogkWOr",
            ),
        ] {
            assert_eq!(src.id(), Some(id));
            let json: serde_json::Value = serde_json::to_value(&src).unwrap();
            assert_eq!(json["id"], id);
            assert_eq!(json["object"], src.object_type());
        }
        let back: Card = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
        let back: BankAccount = serde_json::from_str(&serde_json::to_string(&b).unwrap()).unwrap();
        assert_eq!(back, b);
        let back: Source = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn unknown_enums_and_customer_shapes() {
        let s: Source =
            serde_json::from_str(r#"{"id":"src_1","status":"frozen","type":"bitcoin"}"#).unwrap();
        assert_eq!(s.status, Some(SourceStatus::Unknown("frozen".into())));
        assert_eq!(s.type_, Some(SourceType::Unknown("bitcoin".into())));
        let c: Card = serde_json::from_str(r#"{"id":"card_1","customer":"cus_1"}"#).unwrap();
        assert_eq!(c.customer_id(), Some("cus_1"));
        let c: Card = serde_json::from_str(
            r#"{"id":"card_1","customer":{"id":"cus_2","object":"customer"}}"#,
        )
        .unwrap();
        assert_eq!(
            PaymentSource::Card(Box::new(c)).customer_id(),
            Some("cus_2")
        );
    }
}
