//! `checkout.session` (`checkout.session.*` events).

use serde::Serialize;

use super::common::{
    string_enum, Address, Currency, Expandable, HasId, IdOnly, List, Metadata, Shipping, TaxExempt,
};
use super::customer::Customer;
use super::invoice::Invoice;
use super::map_only::map_deserialize;
use super::payment_intent::PaymentIntent;
use super::price::Price;
use super::setup_intent::SetupIntent;
use super::subscription::Subscription;

/// A Checkout Session: a customer's visit to a Stripe-hosted (or embedded) payment page.
///
/// Carried by `checkout.session.completed`, `.expired`, `.async_payment_succeeded` and
/// `.async_payment_failed`. Fulfil an order on `completed` when
/// [`is_paid`](Self::is_paid), or on `async_payment_succeeded` for delayed payment
/// methods.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CheckoutSession {
    /// Session id (`cs_…`).
    pub id: String,
    /// Always `"checkout.session"`.
    pub object: Option<String>,
    /// Total before discounts and taxes, in the smallest currency unit.
    pub amount_subtotal: Option<i64>,
    /// Total after discounts and taxes.
    pub amount_total: Option<i64>,
    /// Where the customer goes on canceling.
    pub cancel_url: Option<String>,
    /// Your reference (a cart or user id) passed when creating the session.
    pub client_reference_id: Option<String>,
    /// Details collected during the session (shipping, from API version
    /// 2025-03-31.basil).
    pub collected_information: Option<CollectedInformation>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// Currency.
    pub currency: Option<Currency>,
    /// The customer (expandable); set once a customer exists.
    pub customer: Option<Expandable<Customer>>,
    /// Whether a customer is created: `always` or `if_required`.
    pub customer_creation: Option<CheckoutCustomerCreation>,
    /// What the customer entered: email, name, address.
    pub customer_details: Option<CustomerDetails>,
    /// The email passed when creating the session. The address the customer actually
    /// used is in `customer_details`; see [`customer_email()`](Self::customer_email).
    pub customer_email: Option<String>,
    /// When it expires (Unix seconds).
    pub expires_at: Option<i64>,
    /// The invoice created for it (expandable).
    pub invoice: Option<Expandable<Invoice>>,
    /// Its line items; only sent when expanded.
    pub line_items: Option<List<CheckoutLineItem>>,
    /// Whether it exists in live mode.
    pub livemode: Option<bool>,
    /// Your metadata.
    pub metadata: Metadata,
    /// Payment, setup or subscription.
    pub mode: Option<CheckoutMode>,
    /// The PaymentIntent (expandable), in `payment` mode.
    pub payment_intent: Option<Expandable<PaymentIntent>>,
    /// The payment link that created it (expandable).
    pub payment_link: Option<Expandable<IdOnly>>,
    /// Payment method types offered.
    pub payment_method_types: Vec<String>,
    /// Whether the funds are available.
    pub payment_status: Option<CheckoutPaymentStatus>,
    /// The session it was recovered from.
    pub recovered_from: Option<String>,
    /// The SetupIntent (expandable), in `setup` mode.
    pub setup_intent: Option<Expandable<SetupIntent>>,
    /// Shipping details, before API version 2022-08-01 (then `shipping_details`).
    pub shipping: Option<Shipping>,
    /// Shipping details, from API version 2022-08-01 until 2025-03-31.basil (then
    /// `collected_information.shipping_details`).
    pub shipping_details: Option<Shipping>,
    /// Status.
    pub status: Option<CheckoutSessionStatus>,
    /// The subscription (expandable), in `subscription` mode.
    pub subscription: Option<Expandable<Subscription>>,
    /// Where the customer goes after paying.
    pub success_url: Option<String>,
    /// Discount, shipping and tax totals.
    pub total_details: Option<TotalDetails>,
    /// URL of the hosted page, while open.
    pub url: Option<String>,
}

map_deserialize!(CheckoutSession {
    required "id" => id;
    "object" => object,
    "amount_subtotal" => amount_subtotal,
    "amount_total" => amount_total,
    "cancel_url" => cancel_url,
    "client_reference_id" => client_reference_id,
    "collected_information" => collected_information,
    "created" => created,
    "currency" => currency,
    "customer" => customer,
    "customer_creation" => customer_creation,
    "customer_details" => customer_details,
    "customer_email" => customer_email,
    "expires_at" => expires_at,
    "invoice" => invoice,
    "line_items" => line_items,
    "livemode" => livemode,
    "metadata" => metadata: null_as_default,
    "mode" => mode,
    "payment_intent" => payment_intent,
    "payment_link" => payment_link,
    "payment_method_types" => payment_method_types: null_as_default,
    "payment_status" => payment_status,
    "recovered_from" => recovered_from,
    "setup_intent" => setup_intent,
    "shipping" => shipping,
    "shipping_details" => shipping_details,
    "status" => status,
    "subscription" => subscription,
    "success_url" => success_url,
    "total_details" => total_details,
    "url" => url,
});

impl CheckoutSession {
    /// The customer's email: `customer_details.email` (what the customer entered), or
    /// else `customer_email` (what was passed in when the session was created).
    pub fn customer_email(&self) -> Option<&str> {
        self.customer_details
            .as_ref()
            .and_then(|d| d.email.as_deref())
            .or(self.customer_email.as_deref())
    }

    /// The customer's id, whether `customer` is expanded or not.
    pub fn customer_id(&self) -> Option<&str> {
        self.customer.as_ref().and_then(Expandable::id)
    }

    /// The subscription's id, whether `subscription` is expanded or not.
    pub fn subscription_id(&self) -> Option<&str> {
        self.subscription.as_ref().and_then(Expandable::id)
    }

    /// The PaymentIntent's id, whether `payment_intent` is expanded or not.
    pub fn payment_intent_id(&self) -> Option<&str> {
        self.payment_intent.as_ref().and_then(Expandable::id)
    }

    /// The SetupIntent's id, whether `setup_intent` is expanded or not.
    pub fn setup_intent_id(&self) -> Option<&str> {
        self.setup_intent.as_ref().and_then(Expandable::id)
    }

    /// The invoice's id, whether `invoice` is expanded or not.
    pub fn invoice_id(&self) -> Option<&str> {
        self.invoice.as_ref().and_then(Expandable::id)
    }

    /// The shipping details the customer entered, from whichever field the API version
    /// uses: `collected_information.shipping_details` (2025-03-31.basil and later),
    /// `shipping_details` (2022-08-01 on) or `shipping` (earlier).
    pub fn shipping_details(&self) -> Option<&Shipping> {
        self.collected_information
            .as_ref()
            .and_then(|c| c.shipping_details.as_ref())
            .or(self.shipping_details.as_ref())
            .or(self.shipping.as_ref())
    }

    /// Whether the order can be fulfilled: `payment_status` is `paid` or
    /// `no_payment_required`. `false` while an asynchronous payment is pending (wait for
    /// `checkout.session.async_payment_succeeded`).
    pub fn is_paid(&self) -> bool {
        matches!(
            self.payment_status,
            Some(CheckoutPaymentStatus::Paid | CheckoutPaymentStatus::NoPaymentRequired)
        )
    }
}

impl HasId for CheckoutSession {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

/// What the customer entered in a [`CheckoutSession`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CustomerDetails {
    /// Billing address.
    pub address: Option<Address>,
    /// Business name.
    pub business_name: Option<String>,
    /// Email address.
    pub email: Option<String>,
    /// Individual's name.
    pub individual_name: Option<String>,
    /// Name (cardholder or account holder).
    pub name: Option<String>,
    /// Phone number.
    pub phone: Option<String>,
    /// Tax exemption status.
    pub tax_exempt: Option<TaxExempt>,
}

map_deserialize!(CustomerDetails {
    "address" => address,
    "business_name" => business_name,
    "email" => email,
    "individual_name" => individual_name,
    "name" => name,
    "phone" => phone,
    "tax_exempt" => tax_exempt,
});

/// Details collected during a [`CheckoutSession`] (API version 2025-03-31.basil and
/// later).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct CollectedInformation {
    /// Business name.
    pub business_name: Option<String>,
    /// Individual's name.
    pub individual_name: Option<String>,
    /// Shipping name and address.
    pub shipping_details: Option<Shipping>,
}

map_deserialize!(CollectedInformation {
    "business_name" => business_name,
    "individual_name" => individual_name,
    "shipping_details" => shipping_details,
});

/// A line item of a [`CheckoutSession`] (`"object": "item"`), sent only when
/// `line_items` is expanded.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct CheckoutLineItem {
    /// Line item id (`li_…`).
    pub id: String,
    /// Always `"item"`.
    pub object: Option<String>,
    /// Discount amount, in the smallest currency unit.
    pub amount_discount: Option<i64>,
    /// Amount before discounts and taxes.
    pub amount_subtotal: Option<i64>,
    /// Tax amount.
    pub amount_tax: Option<i64>,
    /// Amount after discounts and taxes.
    pub amount_total: Option<i64>,
    /// Currency.
    pub currency: Option<Currency>,
    /// Description (the product's name by default).
    pub description: Option<String>,
    /// The price.
    pub price: Option<Price>,
    /// Quantity.
    pub quantity: Option<i64>,
}

map_deserialize!(CheckoutLineItem {
    required "id" => id;
    "object" => object,
    "amount_discount" => amount_discount,
    "amount_subtotal" => amount_subtotal,
    "amount_tax" => amount_tax,
    "amount_total" => amount_total,
    "currency" => currency,
    "description" => description,
    "price" => price,
    "quantity" => quantity,
});

impl CheckoutLineItem {
    /// The price's id.
    pub fn price_id(&self) -> Option<&str> {
        self.price.as_ref().map(|p| p.id.as_str())
    }
}

impl HasId for CheckoutLineItem {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

/// Discount, shipping and tax totals of a [`CheckoutSession`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct TotalDetails {
    /// Total discount.
    pub amount_discount: Option<i64>,
    /// Total shipping.
    pub amount_shipping: Option<i64>,
    /// Total tax.
    pub amount_tax: Option<i64>,
}

map_deserialize!(TotalDetails {
    "amount_discount" => amount_discount,
    "amount_shipping" => amount_shipping,
    "amount_tax" => amount_tax,
});

string_enum! {
    /// Status of a [`CheckoutSession`].
    pub enum CheckoutSessionStatus {
        /// Completed (payment may still be processing: see `payment_status`).
        Complete = "complete",
        /// Expired.
        Expired = "expired",
        /// Still open.
        Open = "open",
    }
}

string_enum! {
    /// Payment status of a [`CheckoutSession`].
    pub enum CheckoutPaymentStatus {
        /// Nothing to pay (e.g. a free trial or a 100 % discount).
        NoPaymentRequired = "no_payment_required",
        /// Paid: the funds are available.
        Paid = "paid",
        /// Not paid yet.
        Unpaid = "unpaid",
    }
}

string_enum! {
    /// Mode of a [`CheckoutSession`].
    pub enum CheckoutMode {
        /// A one-time payment.
        Payment = "payment",
        /// Saving a payment method.
        Setup = "setup",
        /// Starting a subscription.
        Subscription = "subscription",
    }
}

string_enum! {
    /// Whether a [`CheckoutSession`] creates a customer.
    pub enum CheckoutCustomerCreation {
        /// Always.
        Always = "always",
        /// Only when needed.
        IfRequired = "if_required",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/checkout.session.json"
    ));

    #[test]
    fn parses_fixture() {
        let s: CheckoutSession = serde_json::from_str(FIXTURE).unwrap();
        assert!(s.id.starts_with("cs_test_"));
        assert_eq!(s.mode, Some(CheckoutMode::Payment));
        assert_eq!(s.status, Some(CheckoutSessionStatus::Open));
        assert_eq!(s.payment_status, Some(CheckoutPaymentStatus::Unpaid));
        assert!(!s.is_paid());
        assert_eq!(s.customer_email(), Some("example@example.com"));
        assert_eq!(
            s.customer_details.as_ref().unwrap().tax_exempt,
            Some(TaxExempt::None)
        );
        assert_eq!(s.payment_intent_id(), Some("pi_1PgafyB7WZ01zgkWSjxsAJo3"));
        assert_eq!(
            s.success_url.as_deref(),
            Some("https://example.com/success")
        );
        assert_eq!(s.total_details.unwrap().amount_tax, Some(1_424_534_716));
        assert_eq!(
            s.shipping_details().and_then(|d| d.name.as_deref()),
            Some("name")
        );
        assert!(s.line_items.is_none());
        assert_eq!(s.customer_id(), None);
        let back: CheckoutSession =
            serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back, s);
    }

    #[test]
    fn customer_email_falls_back() {
        let s: CheckoutSession = serde_json::from_str(
            r#"{"id":"cs_1","customer_email":"given@x.y","customer_details":null}"#,
        )
        .unwrap();
        assert_eq!(s.customer_email(), Some("given@x.y"));
        let s: CheckoutSession = serde_json::from_str(
            r#"{"id":"cs_1","customer_email":"given@x.y","customer_details":{"email":"typed@x.y"}}"#,
        )
        .unwrap();
        assert_eq!(s.customer_email(), Some("typed@x.y"));
    }

    #[test]
    fn unknown_enums_expanded_fields_and_line_items() {
        let s: CheckoutSession = serde_json::from_str(
            r#"{"id":"cs_1","mode":"rental","status":"paused","payment_status":"no_payment_required",
                "customer":{"id":"cus_1","object":"customer","email":"c@x.y"},"subscription":"sub_1",
                "shipping":{"name":"Old","address":{"country":"US"}},
                "line_items":{"object":"list","data":[{"id":"li_1","object":"item","amount_total":500,"quantity":2,
                  "price":{"id":"price_1","object":"price","unit_amount":250}}],"has_more":false,"url":"/v1/checkout/sessions/cs_1/line_items"}}"#,
        )
        .unwrap();
        assert_eq!(s.mode, Some(CheckoutMode::Unknown("rental".into())));
        assert_eq!(
            s.status,
            Some(CheckoutSessionStatus::Unknown("paused".into()))
        );
        assert!(s.is_paid());
        assert_eq!(s.customer_id(), Some("cus_1"));
        assert!(s.customer.as_ref().unwrap().is_expanded());
        assert_eq!(s.subscription_id(), Some("sub_1"));
        assert_eq!(
            s.shipping_details().and_then(|d| d.name.as_deref()),
            Some("Old")
        );
        let items = s.line_items.as_ref().unwrap();
        assert_eq!(items.data[0].price_id(), Some("price_1"));
        assert_eq!(items.data[0].amount_total, Some(500));
    }
}
