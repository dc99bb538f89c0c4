//! `invoice` (`invoice.*` events), its line items and payments.

use serde::Serialize;

use super::charge::Charge;
use super::common::{
    string_enum, CollectionMethod, Currency, Expandable, HasId, IdOnly, List, Metadata,
};
use super::customer::Customer;
use super::map_only::map_deserialize;
use super::payment_intent::{LastPaymentError, PaymentIntent};
use super::payment_method::PaymentMethod;
use super::price::{Plan, Price};
use super::subscription::Subscription;

/// An invoice.
///
/// Carried by every `invoice.*` event. `invoice.upcoming` sends an invoice that does not
/// exist yet, so [`id`](Self::id) is `None` there and only there.
///
/// Several fields moved in API version 2025-03-31.basil; the helper methods read both
/// shapes:
///
/// | Question | Before basil | From basil |
/// |---|---|---|
/// | [`subscription_id`](Self::subscription_id) | `subscription` | `parent.subscription_details.subscription` |
/// | [`payment_intent_id`](Self::payment_intent_id) | `payment_intent` | `payments.data[].payment.payment_intent` |
/// | [`charge_id`](Self::charge_id) | `charge` | `payments.data[].payment.charge` |
/// | [`is_paid`](Self::is_paid) | `paid` | `status == paid` |
/// | [`subscription_metadata`](Self::subscription_metadata) | `subscription_details.metadata` | `parent.subscription_details.metadata` |
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Invoice {
    /// Invoice id (`in_…`); `None` on `invoice.upcoming`.
    pub id: Option<String>,
    /// Always `"invoice"`.
    pub object: Option<String>,
    /// Final amount due, in the smallest currency unit.
    pub amount_due: Option<i64>,
    /// Amount paid beyond what was due.
    pub amount_overpaid: Option<i64>,
    /// Amount paid.
    pub amount_paid: Option<i64>,
    /// Amount still to be paid.
    pub amount_remaining: Option<i64>,
    /// Number of payment attempts made so far.
    pub attempt_count: Option<i64>,
    /// Whether a payment attempt was made.
    pub attempted: Option<bool>,
    /// Whether Stripe automatically finalizes and collects it.
    pub auto_advance: Option<bool>,
    /// Why it was created.
    pub billing_reason: Option<InvoiceBillingReason>,
    /// The latest charge for it (expandable). Before API version 2025-03-31.basil only;
    /// see [`charge_id`](Self::charge_id).
    pub charge: Option<Expandable<Charge>>,
    /// Whether it is closed to payment attempts. Before API version 2018-11-08 only
    /// (replaced by `auto_advance`).
    pub closed: Option<bool>,
    /// How it is collected.
    pub collection_method: Option<CollectionMethod>,
    /// When it was created (Unix seconds). Called `date` before API version 2019-03-14.
    pub created: Option<i64>,
    /// Currency.
    pub currency: Option<Currency>,
    /// The customer (expandable).
    pub customer: Option<Expandable<Customer>>,
    /// The customer's email when the invoice was finalized.
    pub customer_email: Option<String>,
    /// The customer's name when the invoice was finalized.
    pub customer_name: Option<String>,
    /// `created` before API version 2019-03-14 (Unix seconds).
    pub date: Option<i64>,
    /// Default payment method (expandable).
    pub default_payment_method: Option<Expandable<PaymentMethod>>,
    /// Your description (the memo).
    pub description: Option<String>,
    /// When payment is due (Unix seconds), for `send_invoice` invoices.
    pub due_date: Option<i64>,
    /// Whether it was forgiven. Before API version 2018-11-08 only (replaced by status
    /// `uncollectible`).
    pub forgiven: Option<bool>,
    /// URL of the hosted invoice page, for the customer to pay.
    pub hosted_invoice_url: Option<String>,
    /// URL of the PDF.
    pub invoice_pdf: Option<String>,
    /// Why finalization failed.
    pub last_finalization_error: Option<LastPaymentError>,
    /// Line items (the first page).
    pub lines: List<InvoiceLineItem>,
    /// Whether it exists in live mode.
    pub livemode: Option<bool>,
    /// Your metadata.
    pub metadata: Metadata,
    /// When the next automatic payment attempt happens (Unix seconds).
    pub next_payment_attempt: Option<i64>,
    /// Invoice number shown to the customer.
    pub number: Option<String>,
    /// Whether it was paid. Before API version 2025-03-31.basil only; see
    /// [`is_paid`](Self::is_paid).
    pub paid: Option<bool>,
    /// Whether it was paid outside Stripe. Before API version 2025-03-31.basil only.
    pub paid_out_of_band: Option<bool>,
    /// What created it (a subscription or a quote), from API version 2025-03-31.basil.
    pub parent: Option<InvoiceParent>,
    /// The PaymentIntent collecting it (expandable). Before API version
    /// 2025-03-31.basil only; see [`payment_intent_id`](Self::payment_intent_id).
    pub payment_intent: Option<Expandable<PaymentIntent>>,
    /// Its payments, from API version 2025-03-31.basil, when included.
    pub payments: Option<List<InvoicePayment>>,
    /// End of the usage period it covers (Unix seconds); for subscription periods see
    /// the line items' `period`.
    pub period_end: Option<i64>,
    /// Start of the usage period it covers (Unix seconds).
    pub period_start: Option<i64>,
    /// Receipt number.
    pub receipt_number: Option<String>,
    /// Status (present from API version 2018-11-08).
    pub status: Option<InvoiceStatus>,
    /// When the status changed.
    pub status_transitions: Option<InvoiceStatusTransitions>,
    /// The subscription it bills (expandable). Before API version 2025-03-31.basil only;
    /// see [`subscription_id`](Self::subscription_id).
    pub subscription: Option<Expandable<Subscription>>,
    /// The subscription's metadata when the invoice was created, between its
    /// introduction and API version 2025-03-31.basil (then in `parent`).
    pub subscription_details: Option<InvoiceSubscriptionDetails>,
    /// Total before discounts and taxes.
    pub subtotal: Option<i64>,
    /// Tax amount. Before API version 2025-03-31.basil only (then `total_taxes`).
    pub tax: Option<i64>,
    /// Total after discounts and taxes.
    pub total: Option<i64>,
    /// Total after discounts, before taxes.
    pub total_excluding_tax: Option<i64>,
    /// When the `invoice.created` webhooks were delivered (Unix seconds).
    pub webhooks_delivered_at: Option<i64>,
}

map_deserialize!(Invoice {
    "id" => id,
    "object" => object,
    "amount_due" => amount_due,
    "amount_overpaid" => amount_overpaid,
    "amount_paid" => amount_paid,
    "amount_remaining" => amount_remaining,
    "attempt_count" => attempt_count,
    "attempted" => attempted,
    "auto_advance" => auto_advance,
    "billing_reason" => billing_reason,
    "charge" => charge,
    "closed" => closed,
    "collection_method" => collection_method,
    "created" => created,
    "currency" => currency,
    "customer" => customer,
    "customer_email" => customer_email,
    "customer_name" => customer_name,
    "date" => date,
    "default_payment_method" => default_payment_method,
    "description" => description,
    "due_date" => due_date,
    "forgiven" => forgiven,
    "hosted_invoice_url" => hosted_invoice_url,
    "invoice_pdf" => invoice_pdf,
    "last_finalization_error" => last_finalization_error,
    "lines" => lines: null_as_default,
    "livemode" => livemode,
    "metadata" => metadata: null_as_default,
    "next_payment_attempt" => next_payment_attempt,
    "number" => number,
    "paid" => paid,
    "paid_out_of_band" => paid_out_of_band,
    "parent" => parent,
    "payment_intent" => payment_intent,
    "payments" => payments,
    "period_end" => period_end,
    "period_start" => period_start,
    "receipt_number" => receipt_number,
    "status" => status,
    "status_transitions" => status_transitions,
    "subscription" => subscription,
    "subscription_details" => subscription_details,
    "subtotal" => subtotal,
    "tax" => tax,
    "total" => total,
    "total_excluding_tax" => total_excluding_tax,
    "webhooks_delivered_at" => webhooks_delivered_at,
});

impl Invoice {
    /// The id of the subscription it bills: `parent.subscription_details.subscription`
    /// (API version 2025-03-31.basil and later) or else `subscription` (earlier).
    pub fn subscription_id(&self) -> Option<&str> {
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_details.as_ref())
            .and_then(|d| d.subscription.as_ref())
            .or(self.subscription.as_ref())
            .and_then(Expandable::id)
    }

    /// The subscription's metadata as of the invoice: from
    /// `parent.subscription_details` (API version 2025-03-31.basil and later) or else
    /// from the older top-level `subscription_details`. `None` when neither is present.
    pub fn subscription_metadata(&self) -> Option<&Metadata> {
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_details.as_ref())
            .or(self.subscription_details.as_ref())
            .map(|d| &d.metadata)
    }

    /// The id of the PaymentIntent collecting it: `payment_intent` before API version
    /// 2025-03-31.basil, or else from `payments` (the default payment first, then the
    /// first with a PaymentIntent). `payments` is only in the payload when included, so
    /// this can be `None` for a paid invoice in newer versions.
    pub fn payment_intent_id(&self) -> Option<&str> {
        if let Some(pi) = &self.payment_intent {
            return pi.id();
        }
        self.find_payment(|p| p.payment_intent.as_ref().and_then(Expandable::id))
    }

    /// The id of the charge that paid it: `charge` before API version
    /// 2025-03-31.basil, or else from `payments` (as
    /// [`payment_intent_id`](Self::payment_intent_id)).
    pub fn charge_id(&self) -> Option<&str> {
        if let Some(ch) = &self.charge {
            return ch.id();
        }
        self.find_payment(|p| p.charge.as_ref().and_then(Expandable::id))
    }

    fn find_payment<'a>(
        &'a self,
        f: impl Fn(&'a InvoicePaymentDetails) -> Option<&'a str>,
    ) -> Option<&'a str> {
        let payments = self.payments.as_ref()?;
        let pick = |p: &'a InvoicePayment| p.payment.as_ref().and_then(&f);
        payments
            .data
            .iter()
            .filter(|p| p.is_default == Some(true))
            .find_map(pick)
            .or_else(|| payments.data.iter().find_map(pick))
    }

    /// The customer's id, whether `customer` is expanded or not.
    pub fn customer_id(&self) -> Option<&str> {
        self.customer.as_ref().and_then(Expandable::id)
    }

    /// Whether it is paid: `status` is `paid`, or (before API version
    /// 2025-03-31.basil) `paid` is `true`.
    pub fn is_paid(&self) -> bool {
        self.status == Some(InvoiceStatus::Paid) || self.paid == Some(true)
    }

    /// When it was created: `created`, or `date` before API version 2019-03-14.
    pub fn created_at(&self) -> Option<i64> {
        self.created.or(self.date)
    }

    /// The price ids of its line items (see [`InvoiceLineItem::price_id`]), in order,
    /// from the first page of `lines`.
    pub fn price_ids(&self) -> Vec<&str> {
        self.lines
            .data
            .iter()
            .filter_map(InvoiceLineItem::price_id)
            .collect()
    }
}

impl HasId for Invoice {
    fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }
}

/// A line of an [`Invoice`].
///
/// Before API version 2025-03-31.basil a line names its `price`, `plan`, `proration`,
/// `subscription_item` and `type` directly; from basil they are under `parent` and
/// `pricing`. The helper methods read both.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct InvoiceLineItem {
    /// Line item id (`il_…`; `sli_…`/`ii_…` in older versions).
    pub id: String,
    /// Always `"line_item"`.
    pub object: Option<String>,
    /// Amount, in the smallest currency unit.
    pub amount: Option<i64>,
    /// Amount excluding tax. Before API version 2025-03-31.basil only.
    pub amount_excluding_tax: Option<i64>,
    /// Currency.
    pub currency: Option<Currency>,
    /// Description shown on the invoice.
    pub description: Option<String>,
    /// Whether discounts apply to it.
    pub discountable: Option<bool>,
    /// The invoice's id.
    pub invoice: Option<String>,
    /// The invoice item behind it (expandable). Before API version 2025-03-31.basil
    /// only.
    pub invoice_item: Option<Expandable<IdOnly>>,
    /// Whether it exists in live mode.
    pub livemode: Option<bool>,
    /// Metadata: the subscription's or invoice item's.
    pub metadata: Metadata,
    /// What generated it, from API version 2025-03-31.basil.
    pub parent: Option<InvoiceLineItemParent>,
    /// The period it covers.
    pub period: Option<Period>,
    /// The plan. Before API version 2025-03-31.basil only.
    pub plan: Option<Plan>,
    /// The price. Before API version 2025-03-31.basil only (then
    /// `pricing.price_details`).
    pub price: Option<Price>,
    /// Pricing details, from API version 2025-03-31.basil.
    pub pricing: Option<InvoiceLineItemPricing>,
    /// Whether it is a proration. Before API version 2025-03-31.basil only.
    pub proration: Option<bool>,
    /// Quantity.
    pub quantity: Option<i64>,
    /// The subscription (expandable).
    pub subscription: Option<Expandable<Subscription>>,
    /// The subscription item's id. Before API version 2025-03-31.basil only.
    pub subscription_item: Option<Expandable<IdOnly>>,
    /// Amount before discounts and taxes, from API version 2025-03-31.basil.
    pub subtotal: Option<i64>,
    /// `subscription` or `invoiceitem`. Before API version 2025-03-31.basil only (then
    /// `parent.type`).
    #[serde(rename = "type")]
    pub type_: Option<InvoiceLineItemType>,
}

map_deserialize!(InvoiceLineItem {
    required "id" => id;
    "object" => object,
    "amount" => amount,
    "amount_excluding_tax" => amount_excluding_tax,
    "currency" => currency,
    "description" => description,
    "discountable" => discountable,
    "invoice" => invoice,
    "invoice_item" => invoice_item,
    "livemode" => livemode,
    "metadata" => metadata: null_as_default,
    "parent" => parent,
    "period" => period,
    "plan" => plan,
    "price" => price,
    "pricing" => pricing,
    "proration" => proration,
    "quantity" => quantity,
    "subscription" => subscription,
    "subscription_item" => subscription_item,
    "subtotal" => subtotal,
    "type" => type_,
});

impl InvoiceLineItem {
    /// The price id: `pricing.price_details.price` (API version 2025-03-31.basil and
    /// later), or else `price.id`, or else `plan.id` (older versions).
    pub fn price_id(&self) -> Option<&str> {
        self.pricing
            .as_ref()
            .and_then(|p| p.price_details.as_ref())
            .and_then(|d| d.price.as_ref())
            .and_then(Expandable::id)
            .or_else(|| self.price.as_ref().map(|p| p.id.as_str()))
            .or_else(|| self.plan.as_ref().map(|p| p.id.as_str()))
    }

    /// The product id: `pricing.price_details.product`, or else the `price`'s or
    /// `plan`'s product.
    pub fn product_id(&self) -> Option<&str> {
        self.pricing
            .as_ref()
            .and_then(|p| p.price_details.as_ref())
            .and_then(|d| d.product.as_deref())
            .or_else(|| self.price.as_ref().and_then(Price::product_id))
            .or_else(|| self.plan.as_ref().and_then(Plan::product_id))
    }

    /// The subscription id: from `parent` (subscription item or invoice item details,
    /// API version 2025-03-31.basil and later) or else `subscription`.
    pub fn subscription_id(&self) -> Option<&str> {
        self.parent_details()
            .find_map(|d| d.subscription.as_deref())
            .or_else(|| self.subscription.as_ref().and_then(Expandable::id))
    }

    /// The subscription item id: `parent.subscription_item_details.subscription_item`
    /// or else `subscription_item`.
    pub fn subscription_item_id(&self) -> Option<&str> {
        self.parent
            .as_ref()
            .and_then(|p| p.subscription_item_details.as_ref())
            .and_then(|d| d.subscription_item.as_deref())
            .or_else(|| self.subscription_item.as_ref().and_then(Expandable::id))
    }

    /// Whether it is a proration: from `parent` (API version 2025-03-31.basil and
    /// later) or else `proration`. `false` when neither says.
    pub fn is_proration(&self) -> bool {
        self.parent_details()
            .find_map(|d| d.proration)
            .or(self.proration)
            .unwrap_or(false)
    }

    fn parent_details(&self) -> impl Iterator<Item = &LineItemParentDetails> {
        self.parent
            .as_ref()
            .into_iter()
            .flat_map(|p| {
                [
                    p.subscription_item_details.as_ref(),
                    p.invoice_item_details.as_ref(),
                ]
            })
            .flatten()
    }
}

impl HasId for InvoiceLineItem {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

/// A time period (Unix seconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Period {
    /// Start.
    pub start: Option<i64>,
    /// End.
    pub end: Option<i64>,
}

map_deserialize!(Period {
    "start" => start,
    "end" => end,
});

/// What generated an [`Invoice`] (`invoice.parent`, API version 2025-03-31.basil and
/// later).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct InvoiceParent {
    /// Set when a quote created it.
    pub quote_details: Option<InvoiceQuoteDetails>,
    /// Set when a subscription created it.
    pub subscription_details: Option<InvoiceSubscriptionDetails>,
    /// Which of the two is set.
    #[serde(rename = "type")]
    pub type_: Option<InvoiceParentType>,
}

map_deserialize!(InvoiceParent {
    "quote_details" => quote_details,
    "subscription_details" => subscription_details,
    "type" => type_,
});

/// The quote an [`Invoice`] came from.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct InvoiceQuoteDetails {
    /// The quote's id.
    pub quote: Option<String>,
}

map_deserialize!(InvoiceQuoteDetails {
    "quote" => quote,
});

/// The subscription an [`Invoice`] came from (`invoice.parent.subscription_details`,
/// and the older top-level `invoice.subscription_details`, which only had `metadata`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct InvoiceSubscriptionDetails {
    /// The subscription's metadata when the invoice was created.
    pub metadata: Metadata,
    /// The subscription (expandable).
    pub subscription: Option<Expandable<Subscription>>,
    /// The proration date used, for proration invoices.
    pub subscription_proration_date: Option<i64>,
}

map_deserialize!(InvoiceSubscriptionDetails {
    "metadata" => metadata: null_as_default,
    "subscription" => subscription,
    "subscription_proration_date" => subscription_proration_date,
});

/// When an [`Invoice`]'s status changed (Unix seconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct InvoiceStatusTransitions {
    /// When it was finalized.
    pub finalized_at: Option<i64>,
    /// When it was marked uncollectible.
    pub marked_uncollectible_at: Option<i64>,
    /// When it was paid.
    pub paid_at: Option<i64>,
    /// When it was voided.
    pub voided_at: Option<i64>,
}

map_deserialize!(InvoiceStatusTransitions {
    "finalized_at" => finalized_at,
    "marked_uncollectible_at" => marked_uncollectible_at,
    "paid_at" => paid_at,
    "voided_at" => voided_at,
});

/// What generated an [`InvoiceLineItem`] (API version 2025-03-31.basil and later).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct InvoiceLineItemParent {
    /// Set when an invoice item generated it.
    pub invoice_item_details: Option<LineItemParentDetails>,
    /// Set when a subscription item generated it.
    pub subscription_item_details: Option<LineItemParentDetails>,
    /// Which of the two is set.
    #[serde(rename = "type")]
    pub type_: Option<InvoiceLineItemParentType>,
}

map_deserialize!(InvoiceLineItemParent {
    "invoice_item_details" => invoice_item_details,
    "subscription_item_details" => subscription_item_details,
    "type" => type_,
});

/// The invoice item or subscription item behind an [`InvoiceLineItem`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct LineItemParentDetails {
    /// The invoice item's id.
    pub invoice_item: Option<String>,
    /// Whether it is a proration.
    pub proration: Option<bool>,
    /// The subscription's id.
    pub subscription: Option<String>,
    /// The subscription item's id (subscription item details only).
    pub subscription_item: Option<String>,
}

map_deserialize!(LineItemParentDetails {
    "invoice_item" => invoice_item,
    "proration" => proration,
    "subscription" => subscription,
    "subscription_item" => subscription_item,
});

/// How an [`InvoiceLineItem`] is priced (API version 2025-03-31.basil and later).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct InvoiceLineItemPricing {
    /// The price and product.
    pub price_details: Option<LineItemPriceDetails>,
    /// Kind of pricing (`price_details`).
    #[serde(rename = "type")]
    pub type_: Option<InvoiceLineItemPricingType>,
    /// Unit amount as a decimal string.
    pub unit_amount_decimal: Option<String>,
}

map_deserialize!(InvoiceLineItemPricing {
    "price_details" => price_details,
    "type" => type_,
    "unit_amount_decimal" => unit_amount_decimal,
});

/// The price and product of an [`InvoiceLineItem`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct LineItemPriceDetails {
    /// The price (expandable).
    pub price: Option<Expandable<Price>>,
    /// The product's id.
    pub product: Option<String>,
}

map_deserialize!(LineItemPriceDetails {
    "price" => price,
    "product" => product,
});

/// A payment towards an [`Invoice`] (`invoice.payments`, API version 2025-03-31.basil
/// and later).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct InvoicePayment {
    /// Invoice payment id (`inpay_…`).
    pub id: String,
    /// Always `"invoice_payment"`.
    pub object: Option<String>,
    /// Amount paid.
    pub amount_paid: Option<i64>,
    /// Amount requested.
    pub amount_requested: Option<i64>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// Currency.
    pub currency: Option<Currency>,
    /// The invoice's id (expandable).
    pub invoice: Option<Expandable<IdOnly>>,
    /// Whether it is the invoice's default payment.
    pub is_default: Option<bool>,
    /// Whether it exists in live mode.
    pub livemode: Option<bool>,
    /// The PaymentIntent or charge behind it.
    pub payment: Option<InvoicePaymentDetails>,
    /// Status.
    pub status: Option<InvoicePaymentStatus>,
    /// When the status changed.
    pub status_transitions: Option<InvoicePaymentStatusTransitions>,
}

map_deserialize!(InvoicePayment {
    required "id" => id;
    "object" => object,
    "amount_paid" => amount_paid,
    "amount_requested" => amount_requested,
    "created" => created,
    "currency" => currency,
    "invoice" => invoice,
    "is_default" => is_default,
    "livemode" => livemode,
    "payment" => payment,
    "status" => status,
    "status_transitions" => status_transitions,
});

impl HasId for InvoicePayment {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

/// The PaymentIntent or charge behind an [`InvoicePayment`].
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct InvoicePaymentDetails {
    /// The charge (expandable), when `type` is `charge`.
    pub charge: Option<Expandable<Charge>>,
    /// The PaymentIntent (expandable), when `type` is `payment_intent`.
    pub payment_intent: Option<Expandable<PaymentIntent>>,
    /// The payment record (expandable), when `type` is `payment_record`.
    pub payment_record: Option<Expandable<IdOnly>>,
    /// Which of the three is set.
    #[serde(rename = "type")]
    pub type_: Option<InvoicePaymentType>,
}

map_deserialize!(InvoicePaymentDetails {
    "charge" => charge,
    "payment_intent" => payment_intent,
    "payment_record" => payment_record,
    "type" => type_,
});

/// When an [`InvoicePayment`]'s status changed (Unix seconds).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct InvoicePaymentStatusTransitions {
    /// When it was canceled.
    pub canceled_at: Option<i64>,
    /// When it was paid.
    pub paid_at: Option<i64>,
}

map_deserialize!(InvoicePaymentStatusTransitions {
    "canceled_at" => canceled_at,
    "paid_at" => paid_at,
});

string_enum! {
    /// Status of an [`Invoice`].
    pub enum InvoiceStatus {
        /// Being edited.
        Draft = "draft",
        /// Finalized, awaiting payment.
        Open = "open",
        /// Paid.
        Paid = "paid",
        /// Unlikely to be paid.
        Uncollectible = "uncollectible",
        /// Canceled.
        Void = "void",
    }
}

string_enum! {
    /// Why an [`Invoice`] was created.
    pub enum InvoiceBillingReason {
        /// Pending invoice items were invoiced automatically.
        AutomaticPendingInvoiceItemInvoice = "automatic_pending_invoice_item_invoice",
        /// Created by hand.
        Manual = "manual",
        /// A quote was accepted.
        QuoteAccept = "quote_accept",
        /// A subscription (legacy value).
        Subscription = "subscription",
        /// A new subscription.
        SubscriptionCreate = "subscription_create",
        /// A subscription renewed.
        SubscriptionCycle = "subscription_cycle",
        /// A usage threshold was reached.
        SubscriptionThreshold = "subscription_threshold",
        /// A subscription changed.
        SubscriptionUpdate = "subscription_update",
        /// An upcoming invoice preview.
        Upcoming = "upcoming",
    }
}

string_enum! {
    /// Which parent generated an [`Invoice`].
    pub enum InvoiceParentType {
        /// A quote.
        QuoteDetails = "quote_details",
        /// A subscription.
        SubscriptionDetails = "subscription_details",
    }
}

string_enum! {
    /// Which parent generated an [`InvoiceLineItem`].
    pub enum InvoiceLineItemParentType {
        /// An invoice item.
        InvoiceItemDetails = "invoice_item_details",
        /// A subscription item.
        SubscriptionItemDetails = "subscription_item_details",
    }
}

string_enum! {
    /// Kind of an [`InvoiceLineItem`], before API version 2025-03-31.basil.
    pub enum InvoiceLineItemType {
        /// From an invoice item.
        Invoiceitem = "invoiceitem",
        /// From a subscription.
        Subscription = "subscription",
    }
}

string_enum! {
    /// Kind of [`InvoiceLineItemPricing`].
    pub enum InvoiceLineItemPricingType {
        /// Priced by a price.
        PriceDetails = "price_details",
    }
}

string_enum! {
    /// Status of an [`InvoicePayment`].
    pub enum InvoicePaymentStatus {
        /// Canceled.
        Canceled = "canceled",
        /// Not yet paid.
        Open = "open",
        /// Paid.
        Paid = "paid",
    }
}

string_enum! {
    /// What an [`InvoicePayment`] is made with.
    pub enum InvoicePaymentType {
        /// A charge.
        Charge = "charge",
        /// A PaymentIntent.
        PaymentIntent = "payment_intent",
        /// A payment record (paid outside Stripe).
        PaymentRecord = "payment_record",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/invoice.json"
    ));
    const PAYMENT: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/invoice_payment.json"
    ));

    #[test]
    fn parses_fixture() {
        let inv: Invoice = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(inv.id.as_deref(), Some("in_1Pgc6tB7WZ01zgkWu9fdqL6I"));
        assert_eq!(inv.amount_due, Some(1000));
        assert_eq!(inv.status, Some(InvoiceStatus::Draft));
        assert_eq!(inv.billing_reason, Some(InvoiceBillingReason::Manual));
        assert_eq!(
            inv.collection_method,
            Some(CollectionMethod::ChargeAutomatically)
        );
        assert_eq!(inv.customer_id(), Some("cus_QXg1o8vcGmoR32"));
        // The fixture keeps a legacy `"subscription": null` next to `parent`.
        assert!(inv.subscription.is_none());
        assert_eq!(inv.subscription_id(), Some("subscription"));
        assert_eq!(
            inv.parent.as_ref().unwrap().type_,
            Some(InvoiceParentType::QuoteDetails)
        );
        assert_eq!(inv.lines.len(), 1);
        let line = &inv.lines.data[0];
        assert_eq!(line.id, "il_1Pgc6sB7WZ01zgkWFnxLrLCq");
        assert_eq!(line.amount, Some(1000));
        assert_eq!(line.period.unwrap().end, Some(1_721_954_054));
        assert_eq!(line.subscription_id(), Some("subscription"));
        assert_eq!(line.subscription_item_id(), Some("subscription_item"));
        assert!(line.is_proration());
        assert_eq!(line.price_id(), None);
        assert_eq!(inv.status_transitions.unwrap().paid_at, None);
        assert!(!inv.is_paid());
        assert_eq!(inv.payment_intent_id(), None);
        assert_eq!(inv.created_at(), Some(1_234_567_890));
        let back: Invoice = serde_json::from_str(&serde_json::to_string(&inv).unwrap()).unwrap();
        assert_eq!(back, inv);
    }

    #[test]
    fn upcoming_invoice_has_no_id() {
        let inv: Invoice = serde_json::from_str(
            r#"{"object":"invoice","amount_due":5,"lines":{"object":"list","data":[]}}"#,
        )
        .unwrap();
        assert_eq!(inv.id, None);
        assert_eq!(HasId::id(&inv), None);
        assert!(inv.lines.is_empty());
    }

    #[test]
    fn invoice_payment_fixture() {
        let p: InvoicePayment = serde_json::from_str(PAYMENT).unwrap();
        assert_eq!(p.id, "obj_123");
        assert_eq!(p.is_default, Some(true));
        assert_eq!(
            p.status,
            Some(InvoicePaymentStatus::Unknown("status".into()))
        );
        assert_eq!(
            p.payment.as_ref().unwrap().type_,
            Some(InvoicePaymentType::PaymentIntent)
        );
    }

    #[test]
    fn subscription_in_both_eras() {
        let old: Invoice =
            serde_json::from_str(r#"{"id":"in_1","subscription":"sub_old"}"#).unwrap();
        assert_eq!(old.subscription_id(), Some("sub_old"));
        let new: Invoice = serde_json::from_str(
            r#"{"id":"in_1","parent":{"type":"subscription_details","subscription_details":{"metadata":{"k":"v"},"subscription":"sub_new"}}}"#,
        )
        .unwrap();
        assert_eq!(new.subscription_id(), Some("sub_new"));
        assert_eq!(new.subscription_metadata().unwrap()["k"], "v");
        let expanded: Invoice =
            serde_json::from_str(r#"{"id":"in_1","subscription":{"id":"sub_x","object":"subscription","status":"active"}}"#)
                .unwrap();
        assert_eq!(expanded.subscription_id(), Some("sub_x"));
        assert!(expanded.subscription.unwrap().is_expanded());
    }

    #[test]
    fn payments_in_both_eras() {
        let old: Invoice = serde_json::from_str(
            r#"{"id":"in_1","payment_intent":"pi_old","charge":"ch_old","paid":true}"#,
        )
        .unwrap();
        assert_eq!(old.payment_intent_id(), Some("pi_old"));
        assert_eq!(old.charge_id(), Some("ch_old"));
        assert!(old.is_paid());
        let new: Invoice = serde_json::from_str(
            r#"{"id":"in_1","status":"paid","payments":{"object":"list","data":[
                {"id":"inpay_1","is_default":false,"payment":{"type":"charge","charge":"ch_other"}},
                {"id":"inpay_2","is_default":true,"payment":{"type":"payment_intent","payment_intent":{"id":"pi_new","object":"payment_intent"}}}
            ],"has_more":false}}"#,
        )
        .unwrap();
        assert_eq!(new.payment_intent_id(), Some("pi_new"));
        assert_eq!(new.charge_id(), Some("ch_other"));
        assert!(new.is_paid());
    }

    #[test]
    fn unknown_enums_and_broken_types() {
        let inv: Invoice = serde_json::from_str(
            r#"{"id":"in_1","status":"disputed","billing_reason":"subscription_magic","collection_method":"barter"}"#,
        )
        .unwrap();
        assert_eq!(inv.status, Some(InvoiceStatus::Unknown("disputed".into())));
        assert_eq!(
            inv.billing_reason,
            Some(InvoiceBillingReason::Unknown("subscription_magic".into()))
        );
        assert_eq!(
            inv.collection_method,
            Some(CollectionMethod::Unknown("barter".into()))
        );
        assert!(serde_json::from_str::<Invoice>(
            r#"{"lines":{"data":[{"id":"il_1","amount":"x"}]}}"#
        )
        .is_err());
    }

    #[test]
    fn legacy_line_shapes() {
        let line: InvoiceLineItem = serde_json::from_str(
            r#"{"id":"sli_1","object":"line_item","type":"subscription","proration":false,"subscription":"sub_1",
                "subscription_item":"si_1","plan":{"id":"gold","object":"plan","product":"prod_1"},
                "price":{"id":"price_1","object":"price","product":"prod_2"}}"#,
        )
        .unwrap();
        assert_eq!(line.type_, Some(InvoiceLineItemType::Subscription));
        assert_eq!(line.price_id(), Some("price_1"));
        assert_eq!(line.product_id(), Some("prod_2"));
        assert_eq!(line.subscription_id(), Some("sub_1"));
        assert_eq!(line.subscription_item_id(), Some("si_1"));
        assert!(!line.is_proration());
        let plan_only: InvoiceLineItem =
            serde_json::from_str(r#"{"id":"sli_2","plan":{"id":"gold","product":"prod_1"}}"#)
                .unwrap();
        assert_eq!(plan_only.price_id(), Some("gold"));
        assert_eq!(plan_only.product_id(), Some("prod_1"));
        let basil: InvoiceLineItem = serde_json::from_str(
            r#"{"id":"il_1","pricing":{"type":"price_details","price_details":{"price":"price_9","product":"prod_9"},"unit_amount_decimal":"100"},
                "parent":{"type":"subscription_item_details","subscription_item_details":{"proration":true,"subscription":"sub_9","subscription_item":"si_9"}}}"#,
        )
        .unwrap();
        assert_eq!(basil.price_id(), Some("price_9"));
        assert_eq!(basil.product_id(), Some("prod_9"));
        assert_eq!(basil.subscription_id(), Some("sub_9"));
        assert!(basil.is_proration());
    }
}
