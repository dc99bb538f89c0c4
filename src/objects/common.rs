//! Building blocks shared by the object structs: expandable references, lists, open
//! enums, currencies and addresses.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use super::map_only::map_deserialize;

/// Key-value pairs attached to a Stripe object (`metadata`). Stripe only ever sends
/// string values.
pub type Metadata = HashMap<String, String>;

/// Objects that carry a Stripe id.
///
/// Every object struct implements it, so an [`Expandable`] can give its id whether it
/// holds the id string or the expanded object.
pub trait HasId {
    /// The object's id (`cus_…`, `in_…`), if it has one. Only an `invoice.upcoming`
    /// invoice has none.
    fn id(&self) -> Option<&str>;
}

/// A reference Stripe can send either as an id string or, when expanded, as the whole
/// object.
///
/// ```
/// use stripe_webhooks::objects::{Customer, Expandable};
///
/// let id: Expandable<Customer> = serde_json::from_str(r#""cus_1""#).unwrap();
/// assert_eq!(id.id(), Some("cus_1"));
/// assert!(!id.is_expanded());
///
/// let full: Expandable<Customer> =
///     serde_json::from_str(r#"{"id":"cus_1","object":"customer","email":"a@b.c"}"#).unwrap();
/// assert_eq!(full.id(), Some("cus_1"));
/// assert_eq!(full.as_object().and_then(|c| c.email.as_deref()), Some("a@b.c"));
/// ```
#[derive(Clone, Debug, PartialEq)]
pub enum Expandable<T> {
    /// Not expanded: the object's id.
    Id(String),
    /// Expanded: the whole object.
    Object(Box<T>),
}

impl<T: HasId> Expandable<T> {
    /// The id, from the string or from the expanded object.
    pub fn id(&self) -> Option<&str> {
        match self {
            Expandable::Id(id) => Some(id),
            Expandable::Object(o) => o.id(),
        }
    }
}

impl<T> Expandable<T> {
    /// The expanded object, if Stripe sent it.
    pub fn as_object(&self) -> Option<&T> {
        match self {
            Expandable::Id(_) => None,
            Expandable::Object(o) => Some(o),
        }
    }

    /// Takes the expanded object out, if Stripe sent it.
    pub fn into_object(self) -> Option<T> {
        match self {
            Expandable::Id(_) => None,
            Expandable::Object(o) => Some(*o),
        }
    }

    /// Whether Stripe sent the whole object rather than its id.
    pub fn is_expanded(&self) -> bool {
        matches!(self, Expandable::Object(_))
    }
}

impl<T: Serialize> Serialize for Expandable<T> {
    /// Writes the id string, or the object when expanded.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Expandable::Id(id) => s.serialize_str(id),
            Expandable::Object(o) => o.serialize(s),
        }
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Expandable<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ExpandableVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for ExpandableVisitor<T> {
            type Value = Expandable<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id string or an object")
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Expandable::Id(v.to_owned()))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(Expandable::Id(v))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                T::deserialize(de::value::MapAccessDeserializer::new(map))
                    .map(|o| Expandable::Object(Box::new(o)))
            }
        }

        d.deserialize_any(ExpandableVisitor(PhantomData))
    }
}

/// A Stripe list object (`"object": "list"`), as embedded in `invoice.lines`,
/// `subscription.items` and the like. Only the first page is ever embedded: check
/// [`has_more`](Self::has_more) before assuming `data` is complete.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[non_exhaustive]
pub struct List<T> {
    /// Always `"list"`.
    pub object: String,
    /// The items on this page.
    pub data: Vec<T>,
    /// Whether more items exist than `data` holds.
    pub has_more: bool,
    /// The API path that lists every item.
    pub url: Option<String>,
    /// The total number of items, when Stripe includes it.
    pub total_count: Option<u64>,
}

// As `map_deserialize!` writes for the other hand-written structs, for a generic one.
impl<'de, T: Deserialize<'de>> Deserialize<'de> for List<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = List<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object for `List`")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<List<T>, A::Error> {
                let mut list = List::default();
                while let Some(key) =
                    map.next_key::<crate::objects::map_only::BorrowedStr<'de>>()?
                {
                    match &*key.0 {
                        "object" => list.object = map.next_value()?,
                        "data" => list.data = map.next_value::<Option<_>>()?.unwrap_or_default(),
                        "has_more" => list.has_more = map.next_value()?,
                        "url" => list.url = map.next_value()?,
                        "total_count" => list.total_count = map.next_value()?,
                        _ => {
                            map.next_value::<de::IgnoredAny>()?;
                        }
                    }
                }
                Ok(list)
            }
        }

        d.deserialize_map(V(PhantomData))
    }
}

// Every field is read above: a field added to `List` and not there does not compile.
const _: fn(List<()>) = |l: List<()>| {
    let List {
        object: _,
        data: _,
        has_more: _,
        url: _,
        total_count: _,
    } = l;
};

fn list_object() -> String {
    "list".to_owned()
}

impl<T> Default for List<T> {
    fn default() -> Self {
        List {
            object: list_object(),
            data: Vec::new(),
            has_more: false,
            url: None,
            total_count: None,
        }
    }
}

impl<T> List<T> {
    /// Iterates over the items on this page.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.data.iter()
    }

    /// Number of items on this page.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether this page holds no items.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }
}

impl<'a, T> IntoIterator for &'a List<T> {
    type Item = &'a T;
    type IntoIter = std::slice::Iter<'a, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.data.iter()
    }
}

/// A three-letter ISO currency code, lowercase as Stripe sends it (`"usd"`).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Default, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Currency(pub String);

impl Currency {
    /// The code as sent, e.g. `"usd"`.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for Currency {
    fn from(s: &str) -> Self {
        Currency(s.to_owned())
    }
}

impl From<String> for Currency {
    fn from(s: String) -> Self {
        Currency(s)
    }
}

impl PartialEq<str> for Currency {
    fn eq(&self, other: &str) -> bool {
        self.0 == other
    }
}

impl PartialEq<&str> for Currency {
    fn eq(&self, other: &&str) -> bool {
        self.0 == *other
    }
}

/// A postal address. Every part may be missing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Address {
    /// City, district, suburb, town or village.
    pub city: Option<String>,
    /// Two-letter ISO country code.
    pub country: Option<String>,
    /// Address line 1 (street, PO box or company name).
    pub line1: Option<String>,
    /// Address line 2 (apartment, suite, unit or building).
    pub line2: Option<String>,
    /// ZIP or postal code.
    pub postal_code: Option<String>,
    /// State, county, province or region.
    pub state: Option<String>,
}

map_deserialize!(Address {
    "city" => city,
    "country" => country,
    "line1" => line1,
    "line2" => line2,
    "postal_code" => postal_code,
    "state" => state,
});

/// Shipping details: a name, an address and optionally a phone and a tracking number
/// (`customer.shipping`, `charge.shipping`, `payment_intent.shipping`,
/// `checkout.session.shipping_details`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Shipping {
    /// The shipping address.
    pub address: Option<Address>,
    /// The recipient's name.
    pub name: Option<String>,
    /// The recipient's phone number.
    pub phone: Option<String>,
    /// The delivery service that shipped a physical product.
    pub carrier: Option<String>,
    /// The tracking number of a physical product.
    pub tracking_number: Option<String>,
}

map_deserialize!(Shipping {
    "address" => address,
    "name" => name,
    "phone" => phone,
    "carrier" => carrier,
    "tracking_number" => tracking_number,
});

/// Billing details of a payment method or charge.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct BillingDetails {
    /// Billing address.
    pub address: Option<Address>,
    /// Email address.
    pub email: Option<String>,
    /// Full name.
    pub name: Option<String>,
    /// Phone number, including the extension.
    pub phone: Option<String>,
    /// Tax id.
    pub tax_id: Option<String>,
}

map_deserialize!(BillingDetails {
    "address" => address,
    "email" => email,
    "name" => name,
    "phone" => phone,
    "tax_id" => tax_id,
});

/// An object Stripe references that this crate has no struct for (an account, a
/// balance transaction, a test clock…): only its `id` and `object` are kept when it
/// arrives expanded. Read the rest from the raw object JSON.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct IdOnly {
    /// The object's id.
    pub id: String,
    /// The object's type (`"account"`, `"balance_transaction"`…), when sent.
    pub object: Option<String>,
}

map_deserialize!(IdOnly {
    required "id" => id;
    "object" => object,
});

impl HasId for IdOnly {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

/// Reads a string, borrowed from the input when it can be: what every open enum
/// deserializes through, so each enum adds a `match` and no visitor of its own.
pub(crate) fn open_str<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<std::borrow::Cow<'de, str>, D::Error> {
    struct OpenStr;

    impl<'de> Visitor<'de> for OpenStr {
        type Value = std::borrow::Cow<'de, str>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string")
        }

        fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
            Ok(std::borrow::Cow::Borrowed(v))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            Ok(std::borrow::Cow::Owned(v.to_owned()))
        }

        fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
            Ok(std::borrow::Cow::Owned(v))
        }
    }

    d.deserialize_str(OpenStr)
}

/// Defines an open string enum: the known wire values as variants, plus
/// `Unknown(String)` for values this release does not know. It serializes as the wire
/// string and never fails to deserialize from a string.
macro_rules! string_enum {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $( $(#[$vmeta:meta])* $variant:ident = $wire:literal, )*
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                #[doc = ""]
                #[doc = concat!("Sent as `", $wire, "`.")]
                $variant,
            )*
            /// A value this release does not know, exactly as Stripe sent it.
            Unknown(String),
        }

        impl $name {
            /// The value as Stripe writes it.
            #[inline]
            pub fn as_str(&self) -> &str {
                match self {
                    $( $name::$variant => $wire, )*
                    $name::Unknown(s) => s.as_str(),
                }
            }

            /// Whether the value is one this release does not know.
            #[inline]
            pub fn is_unknown(&self) -> bool {
                matches!(self, $name::Unknown(_))
            }

            #[inline]
            fn from_known(s: &str) -> Option<Self> {
                match s {
                    $( $wire => Some($name::$variant), )*
                    _ => None,
                }
            }
        }

        impl ::std::fmt::Display for $name {
            #[inline]
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = ::std::convert::Infallible;
            /// Never fails: an unrecognised value becomes `Unknown`.
            #[inline]
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Ok(Self::from(s))
            }
        }

        impl From<&str> for $name {
            #[inline]
            fn from(s: &str) -> Self {
                Self::from_known(s).unwrap_or_else(|| $name::Unknown(s.to_owned()))
            }
        }

        impl ::serde::Serialize for $name {
            fn serialize<S: ::serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> ::serde::Deserialize<'de> for $name {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                $crate::objects::common::open_str(d).map(|s| match $name::from_known(&s) {
                    Some(known) => known,
                    None => $name::Unknown(s.into_owned()),
                })
            }
        }
    };
}

pub(crate) use string_enum;

string_enum! {
    /// How an invoice or subscription is paid (`collection_method`; `billing` before
    /// API version 2019-10-17).
    pub enum CollectionMethod {
        /// Stripe charges the default payment method.
        ChargeAutomatically = "charge_automatically",
        /// Stripe emails the invoice to the customer.
        SendInvoice = "send_invoice",
    }
}

string_enum! {
    /// A customer's tax exemption status.
    pub enum TaxExempt {
        /// Exempt from tax.
        Exempt = "exempt",
        /// Not exempt.
        None = "none",
        /// Reverse charge applies.
        Reverse = "reverse",
    }
}

string_enum! {
    /// The category of an API error (`last_payment_error.type`).
    pub enum ApiErrorType {
        /// An error on Stripe's side.
        ApiError = "api_error",
        /// A card or payment method problem: the most common kind.
        CardError = "card_error",
        /// An idempotency key was reused with other parameters.
        IdempotencyError = "idempotency_error",
        /// Invalid parameters.
        InvalidRequestError = "invalid_request_error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Thing {
        id: String,
        #[serde(default)]
        n: Option<i64>,
    }

    impl HasId for Thing {
        fn id(&self) -> Option<&str> {
            Some(&self.id)
        }
    }

    #[test]
    fn expandable_both_shapes() {
        let a: Expandable<Thing> = serde_json::from_str(r#""t_1""#).unwrap();
        assert_eq!(a, Expandable::Id("t_1".into()));
        assert_eq!(a.id(), Some("t_1"));
        assert!(!a.is_expanded());
        assert!(a.as_object().is_none());

        let b: Expandable<Thing> =
            serde_json::from_str(r#"{"id":"t_2","n":3,"extra":[1,{"x":null}]}"#).unwrap();
        assert!(b.is_expanded());
        assert_eq!(b.id(), Some("t_2"));
        assert_eq!(b.as_object().unwrap().n, Some(3));
        assert_eq!(serde_json::to_string(&b).unwrap(), r#"{"id":"t_2","n":3}"#);
        assert_eq!(serde_json::to_string(&a).unwrap(), r#""t_1""#);
        assert_eq!(b.into_object().unwrap().id, "t_2");

        let none: Option<Expandable<Thing>> = serde_json::from_str("null").unwrap();
        assert!(none.is_none());
        assert!(serde_json::from_str::<Expandable<Thing>>("12").is_err());
        // Errors inside an expanded object keep their message.
        let err = serde_json::from_str::<Expandable<Thing>>(r#"{"id":"t","n":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("invalid type"), "{err}");
    }

    #[test]
    fn list_defaults_and_null_data() {
        let l: List<Thing> =
            serde_json::from_str(r#"{"object":"list","data":null,"has_more":true}"#).unwrap();
        assert!(l.is_empty());
        assert!(l.has_more);
        let l: List<Thing> =
            serde_json::from_str(r#"{"data":[{"id":"a"},{"id":"b"}],"total_count":2}"#).unwrap();
        assert_eq!(l.object, "list");
        assert_eq!(l.len(), 2);
        assert_eq!(
            l.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
            ["a", "b"]
        );
        assert_eq!(l.total_count, Some(2));
        let back: List<Thing> = serde_json::from_str(&serde_json::to_string(&l).unwrap()).unwrap();
        assert_eq!(back, l);
        assert_eq!(List::<Thing>::default().object, "list");
    }

    #[test]
    fn string_enum_is_open() {
        let known: CollectionMethod = serde_json::from_str(r#""send_invoice""#).unwrap();
        assert_eq!(known, CollectionMethod::SendInvoice);
        assert_eq!(known.to_string(), "send_invoice");
        let unknown: CollectionMethod = serde_json::from_str(r#""carrier_pigeon""#).unwrap();
        assert_eq!(unknown, CollectionMethod::Unknown("carrier_pigeon".into()));
        assert!(unknown.is_unknown());
        assert_eq!(unknown.as_str(), "carrier_pigeon");
        assert_eq!(
            serde_json::to_string(&unknown).unwrap(),
            r#""carrier_pigeon""#
        );
        assert_eq!("exempt".parse::<TaxExempt>().unwrap(), TaxExempt::Exempt);
        // An owned string (as from a `serde_json::Value`) works too.
        let v = serde_json::Value::String("none".into());
        assert_eq!(TaxExempt::deserialize(v).unwrap(), TaxExempt::None);
        let v = serde_json::Value::String("new".into());
        assert_eq!(
            TaxExempt::deserialize(v).unwrap(),
            TaxExempt::Unknown("new".into())
        );
        assert!(serde_json::from_str::<TaxExempt>("1").is_err());
    }

    #[test]
    fn currency_and_address() {
        let c: Currency = serde_json::from_str(r#""eur""#).unwrap();
        assert_eq!(c.as_str(), "eur");
        assert_eq!(c.to_string(), "eur");
        assert_eq!(c, "eur");
        let a: Address =
            serde_json::from_str(r#"{"city":"Paris","country":"FR","line1":null}"#).unwrap();
        assert_eq!(a.city.as_deref(), Some("Paris"));
        assert_eq!(a.line1, None);
    }
}
