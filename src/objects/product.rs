//! `product` (`product.*` events).

use serde::Serialize;

use super::common::{string_enum, Expandable, HasId, IdOnly, Metadata};
use super::map_only::map_deserialize;
use super::price::Price;

/// A product: what you sell. Prices say how much it costs.
///
/// Carried by `product.created`, `product.updated` and `product.deleted`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Product {
    /// Product id (`prod_…`).
    pub id: String,
    /// Always `"product"`.
    pub object: Option<String>,
    /// Whether it can be bought.
    pub active: Option<bool>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// Its default price (expandable).
    pub default_price: Option<Expandable<Price>>,
    /// `true` on a deleted product stub.
    pub deleted: Option<bool>,
    /// Description shown to customers.
    pub description: Option<String>,
    /// Image URLs.
    pub images: Vec<String>,
    /// Whether it exists in live mode.
    pub livemode: Option<bool>,
    /// Your metadata.
    pub metadata: Metadata,
    /// Name shown to customers.
    pub name: Option<String>,
    /// Whether it is shipped (physical goods).
    pub shippable: Option<bool>,
    /// Statement descriptor for card statements.
    pub statement_descriptor: Option<String>,
    /// Tax code (expandable).
    pub tax_code: Option<Expandable<IdOnly>>,
    /// `good` or `service` (older accounts).
    #[serde(rename = "type")]
    pub type_: Option<ProductType>,
    /// Unit label shown on receipts and invoices.
    pub unit_label: Option<String>,
    /// When it was last updated (Unix seconds).
    pub updated: Option<i64>,
    /// A publicly accessible web page for it.
    pub url: Option<String>,
}

map_deserialize!(Product {
    required "id" => id;
    "object" => object,
    "active" => active,
    "created" => created,
    "default_price" => default_price,
    "deleted" => deleted,
    "description" => description,
    "images" => images: null_as_default,
    "livemode" => livemode,
    "metadata" => metadata: null_as_default,
    "name" => name,
    "shippable" => shippable,
    "statement_descriptor" => statement_descriptor,
    "tax_code" => tax_code,
    "type" => type_,
    "unit_label" => unit_label,
    "updated" => updated,
    "url" => url,
});

impl Product {
    /// The default price's id, whether `default_price` is expanded or not.
    pub fn default_price_id(&self) -> Option<&str> {
        self.default_price.as_ref().and_then(Expandable::id)
    }
}

impl HasId for Product {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

string_enum! {
    /// Kind of product (`product.type`).
    pub enum ProductType {
        /// A physical or digital good.
        Good = "good",
        /// A service, usually sold by subscription.
        Service = "service",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/product.json"
    ));

    #[test]
    fn parses_fixture() {
        let p: Product = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(p.id, "prod_QXg1hqf4jFNsqG");
        assert_eq!(p.name.as_deref(), Some("T-shirt"));
        assert_eq!(p.active, Some(true));
        assert_eq!(p.default_price_id(), Some("price_1PgafmB7WZ01zgkW02Hf9z6c"));
        assert_eq!(p.type_, Some(ProductType::Good));
        assert!(p.images.is_empty());
        let back: Product = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn unknown_enum_and_expanded_price() {
        let p: Product = serde_json::from_str(
            r#"{"id":"prod_1","type":"bundle","images":null,"default_price":{"id":"price_9","object":"price","unit_amount":5}}"#,
        )
        .unwrap();
        assert_eq!(p.type_, Some(ProductType::Unknown("bundle".into())));
        assert_eq!(p.default_price_id(), Some("price_9"));
        assert_eq!(
            p.default_price.unwrap().as_object().unwrap().unit_amount,
            Some(5)
        );
    }

    #[test]
    fn deleted_stub() {
        let p: Product =
            serde_json::from_str(r#"{"id":"prod_1","object":"product","deleted":true}"#).unwrap();
        assert_eq!(p.deleted, Some(true));
    }
}
