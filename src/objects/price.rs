//! `price` (`price.*` events, subscription items, line items) and the legacy `plan`.

use serde::Serialize;

use super::common::{string_enum, Currency, Expandable, HasId, Metadata};
use super::map_only::map_deserialize;
use super::product::Product;

/// A price: how much and how often to charge for a product.
///
/// Carried by `price.created`, `price.updated` and `price.deleted`, and embedded in
/// subscription items, checkout line items and (before API version 2025-03-31.basil)
/// invoice lines.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Price {
    /// Price id (`price_…`; old plan-backed prices keep the plan's id).
    pub id: String,
    /// Always `"price"`.
    pub object: Option<String>,
    /// Whether the price can be used for new purchases.
    pub active: Option<bool>,
    /// How quantities are turned into amounts.
    pub billing_scheme: Option<BillingScheme>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// Currency.
    pub currency: Option<Currency>,
    /// `true` on a deleted price stub.
    pub deleted: Option<bool>,
    /// Whether it exists in live mode.
    pub livemode: Option<bool>,
    /// A lookup key to find the price without its id.
    pub lookup_key: Option<String>,
    /// Your metadata.
    pub metadata: Metadata,
    /// A brief description, hidden from customers.
    pub nickname: Option<String>,
    /// The product it prices (expandable).
    pub product: Option<Expandable<Product>>,
    /// Billing interval for recurring prices; `None` for one-time prices.
    pub recurring: Option<Recurring>,
    /// Whether the amount includes tax.
    pub tax_behavior: Option<TaxBehavior>,
    /// One-time or recurring.
    #[serde(rename = "type")]
    pub type_: Option<PriceType>,
    /// Unit amount in the smallest currency unit, when it is an integer.
    pub unit_amount: Option<i64>,
    /// Unit amount as a decimal string, which may have more precision.
    pub unit_amount_decimal: Option<String>,
}

map_deserialize!(Price {
    required "id" => id;
    "object" => object,
    "active" => active,
    "billing_scheme" => billing_scheme,
    "created" => created,
    "currency" => currency,
    "deleted" => deleted,
    "livemode" => livemode,
    "lookup_key" => lookup_key,
    "metadata" => metadata: null_as_default,
    "nickname" => nickname,
    "product" => product,
    "recurring" => recurring,
    "tax_behavior" => tax_behavior,
    "type" => type_,
    "unit_amount" => unit_amount,
    "unit_amount_decimal" => unit_amount_decimal,
});

impl Price {
    /// The product's id, whether `product` is expanded or not.
    pub fn product_id(&self) -> Option<&str> {
        self.product.as_ref().and_then(Expandable::id)
    }
}

impl HasId for Price {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

/// The recurring part of a [`Price`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Recurring {
    /// How usage is aggregated (metered prices, before billing meters).
    pub aggregate_usage: Option<String>,
    /// Billing frequency.
    pub interval: Option<RecurringInterval>,
    /// Number of intervals between bills (3 with `month` = quarterly).
    pub interval_count: Option<i64>,
    /// The billing meter tracking usage, for metered prices.
    pub meter: Option<String>,
    /// Default trial length in days.
    pub trial_period_days: Option<i64>,
    /// Licensed (per seat) or metered.
    pub usage_type: Option<UsageType>,
}

map_deserialize!(Recurring {
    "aggregate_usage" => aggregate_usage,
    "interval" => interval,
    "interval_count" => interval_count,
    "meter" => meter,
    "trial_period_days" => trial_period_days,
    "usage_type" => usage_type,
});

/// A plan: the predecessor of [`Price`], still sent on subscriptions, subscription
/// items and (before API version 2025-03-31.basil) invoice lines.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Plan {
    /// Plan id (also usable as a price id).
    pub id: String,
    /// Always `"plan"`.
    pub object: Option<String>,
    /// Whether the plan can be used for new purchases.
    pub active: Option<bool>,
    /// Amount per interval in the smallest currency unit.
    pub amount: Option<i64>,
    /// Amount as a decimal string.
    pub amount_decimal: Option<String>,
    /// How quantities are turned into amounts.
    pub billing_scheme: Option<BillingScheme>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// Currency.
    pub currency: Option<Currency>,
    /// Billing frequency.
    pub interval: Option<RecurringInterval>,
    /// Number of intervals between bills.
    pub interval_count: Option<i64>,
    /// Whether it exists in live mode.
    pub livemode: Option<bool>,
    /// Your metadata.
    pub metadata: Metadata,
    /// Display name, before API version 2018-02-05 (then moved to the product).
    pub name: Option<String>,
    /// A brief description, hidden from customers.
    pub nickname: Option<String>,
    /// The product (expandable).
    pub product: Option<Expandable<Product>>,
    /// Default trial length in days.
    pub trial_period_days: Option<i64>,
    /// Licensed (per seat) or metered.
    pub usage_type: Option<UsageType>,
}

map_deserialize!(Plan {
    required "id" => id;
    "object" => object,
    "active" => active,
    "amount" => amount,
    "amount_decimal" => amount_decimal,
    "billing_scheme" => billing_scheme,
    "created" => created,
    "currency" => currency,
    "interval" => interval,
    "interval_count" => interval_count,
    "livemode" => livemode,
    "metadata" => metadata: null_as_default,
    "name" => name,
    "nickname" => nickname,
    "product" => product,
    "trial_period_days" => trial_period_days,
    "usage_type" => usage_type,
});

impl Plan {
    /// The product's id, whether `product` is expanded or not.
    pub fn product_id(&self) -> Option<&str> {
        self.product.as_ref().and_then(Expandable::id)
    }
}

impl HasId for Plan {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

string_enum! {
    /// One-time or recurring (`price.type`).
    pub enum PriceType {
        /// Charged once.
        OneTime = "one_time",
        /// Charged every interval.
        Recurring = "recurring",
    }
}

string_enum! {
    /// A billing interval.
    pub enum RecurringInterval {
        /// Daily.
        Day = "day",
        /// Weekly.
        Week = "week",
        /// Monthly.
        Month = "month",
        /// Yearly.
        Year = "year",
    }
}

string_enum! {
    /// Licensed (per seat) or metered usage.
    pub enum UsageType {
        /// Billed for the quantity set on the subscription.
        Licensed = "licensed",
        /// Billed for reported usage.
        Metered = "metered",
    }
}

string_enum! {
    /// How a quantity is turned into an amount.
    pub enum BillingScheme {
        /// A fixed amount per unit.
        PerUnit = "per_unit",
        /// Amounts from tiers.
        Tiered = "tiered",
    }
}

string_enum! {
    /// Whether a price includes tax.
    pub enum TaxBehavior {
        /// Tax is added on top.
        Exclusive = "exclusive",
        /// Tax is included.
        Inclusive = "inclusive",
        /// Not yet specified.
        Unspecified = "unspecified",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/price.json"
    ));
    const PLAN: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/plan.json"
    ));

    #[test]
    fn parses_fixture() {
        let p: Price = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(p.id, "price_1PgafmB7WZ01zgkW6dKueIc5");
        assert_eq!(p.type_, Some(PriceType::Recurring));
        assert_eq!(p.unit_amount, Some(2000));
        assert_eq!(p.unit_amount_decimal.as_deref(), Some("2000"));
        assert_eq!(p.currency.as_ref().map(Currency::as_str), Some("usd"));
        assert_eq!(p.product_id(), Some("prod_QXg1hqf4jFNsqG"));
        assert!(!p.product.as_ref().unwrap().is_expanded());
        let r = p.recurring.as_ref().unwrap();
        assert_eq!(r.interval, Some(RecurringInterval::Month));
        assert_eq!(r.interval_count, Some(1));
        assert_eq!(r.usage_type, Some(UsageType::Licensed));
        assert_eq!(p.tax_behavior, Some(TaxBehavior::Unspecified));
        assert_eq!(p.id(), Some(p.id.as_str()));
    }

    #[test]
    fn round_trips() {
        let p: Price = serde_json::from_str(FIXTURE).unwrap();
        let back: Price = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn unknown_enum_and_expanded_product() {
        let p: Price = serde_json::from_str(
            r#"{"id":"price_1","type":"per_fortnight","recurring":{"interval":"fortnight"},
                "product":{"id":"prod_1","object":"product","name":"Gold"},"metadata":null}"#,
        )
        .unwrap();
        assert_eq!(p.type_, Some(PriceType::Unknown("per_fortnight".into())));
        assert_eq!(
            p.recurring.as_ref().unwrap().interval,
            Some(RecurringInterval::Unknown("fortnight".into()))
        );
        assert_eq!(p.product_id(), Some("prod_1"));
        assert_eq!(
            p.product.unwrap().as_object().unwrap().name.as_deref(),
            Some("Gold")
        );
        assert!(p.metadata.is_empty());
    }

    #[test]
    fn parses_plan_fixture() {
        let plan: Plan = serde_json::from_str(PLAN).unwrap();
        assert!(!plan.id.is_empty());
        assert!(plan.interval.is_some());
        let back: Plan = serde_json::from_str(&serde_json::to_string(&plan).unwrap()).unwrap();
        assert_eq!(back, plan);
    }
}
