//! `customer` (`customer.*` events), also the expanded form of every `customer` field.

use serde::Serialize;

use super::common::{Address, Currency, Expandable, HasId, IdOnly, Metadata, Shipping, TaxExempt};
use super::map_only::map_deserialize;
use super::payment_method::PaymentMethod;

/// A customer.
///
/// Carried by `customer.created`, `customer.updated` and `customer.deleted`. It is also
/// what an expanded `customer` field holds, which may be the deleted stub
/// `{"id": "cus_…", "object": "customer", "deleted": true}`: every field but `id` is then
/// `None` and [`is_deleted`](Self::is_deleted) is `true`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Customer {
    /// Customer id (`cus_…`).
    pub id: String,
    /// Always `"customer"`.
    pub object: Option<String>,
    /// Billing address.
    pub address: Option<Address>,
    /// Credit balance in the smallest currency unit; negative is a credit
    /// (`account_balance` before API version 2019-10-17).
    pub balance: Option<i64>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// Default currency for recurring billing.
    pub currency: Option<Currency>,
    /// Default legacy source (card, bank account or source; expandable).
    pub default_source: Option<Expandable<IdOnly>>,
    /// `true` on a deleted customer stub.
    pub deleted: Option<bool>,
    /// Whether the latest invoice payment failed or an invoice is overdue.
    pub delinquent: Option<bool>,
    /// Your description.
    pub description: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Prefix of the customer's invoice numbers.
    pub invoice_prefix: Option<String>,
    /// Default invoice settings, including the default payment method.
    pub invoice_settings: Option<CustomerInvoiceSettings>,
    /// Whether it exists in live mode.
    pub livemode: Option<bool>,
    /// Your metadata.
    pub metadata: Metadata,
    /// Full name or business name.
    pub name: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Preferred languages, most preferred first.
    pub preferred_locales: Vec<String>,
    /// Shipping details.
    pub shipping: Option<Shipping>,
    /// Tax exemption status.
    pub tax_exempt: Option<TaxExempt>,
}

map_deserialize!(Customer {
    required "id" => id;
    "object" => object,
    "address" => address,
    "balance" => balance,
    "created" => created,
    "currency" => currency,
    "default_source" => default_source,
    "deleted" => deleted,
    "delinquent" => delinquent,
    "description" => description,
    "email" => email,
    "invoice_prefix" => invoice_prefix,
    "invoice_settings" => invoice_settings,
    "livemode" => livemode,
    "metadata" => metadata: null_as_default,
    "name" => name,
    "phone" => phone,
    "preferred_locales" => preferred_locales: null_as_default,
    "shipping" => shipping,
    "tax_exempt" => tax_exempt,
});

impl Customer {
    /// Whether this is a deleted customer stub.
    pub fn is_deleted(&self) -> bool {
        self.deleted == Some(true)
    }

    /// The id of the default payment method for invoices and subscriptions
    /// (`invoice_settings.default_payment_method`).
    pub fn default_payment_method_id(&self) -> Option<&str> {
        self.invoice_settings
            .as_ref()
            .and_then(|s| s.default_payment_method.as_ref())
            .and_then(Expandable::id)
    }
}

impl HasId for Customer {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

/// A customer's default invoice settings.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CustomerInvoiceSettings {
    /// Default payment method for subscriptions and invoices (expandable).
    pub default_payment_method: Option<Expandable<PaymentMethod>>,
    /// Default invoice footer.
    pub footer: Option<String>,
}

map_deserialize!(CustomerInvoiceSettings {
    "default_payment_method" => default_payment_method,
    "footer" => footer,
});

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/customer.json"
    ));

    #[test]
    fn parses_fixture() {
        let c: Customer = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(c.id, "cus_QXg1o8vcGmoR32");
        assert_eq!(c.balance, Some(0));
        assert_eq!(c.tax_exempt, Some(TaxExempt::None));
        assert_eq!(c.invoice_prefix.as_deref(), Some("7FE1103"));
        assert_eq!(c.email, None);
        assert_eq!(c.default_payment_method_id(), None);
        assert!(!c.is_deleted());
        let back: Customer = serde_json::from_str(&serde_json::to_string(&c).unwrap()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn deleted_stub_and_unknown_enum() {
        let c: Customer =
            serde_json::from_str(r#"{"id":"cus_1","object":"customer","deleted":true}"#).unwrap();
        assert!(c.is_deleted());
        let c: Customer = serde_json::from_str(
            r#"{"id":"cus_2","tax_exempt":"partially","preferred_locales":null,
                "invoice_settings":{"default_payment_method":{"id":"pm_1","object":"payment_method","type":"card"}}}"#,
        )
        .unwrap();
        assert_eq!(c.tax_exempt, Some(TaxExempt::Unknown("partially".into())));
        assert_eq!(c.default_payment_method_id(), Some("pm_1"));
        let c: Customer = serde_json::from_str(
            r#"{"id":"cus_3","invoice_settings":{"default_payment_method":"pm_2"}}"#,
        )
        .unwrap();
        assert_eq!(c.default_payment_method_id(), Some("pm_2"));
    }
}
