//! The small runtime the generated objects (`generated/`) are written against.
//!
//! A generated object is read in two steps: the JSON object is parsed into a
//! [`serde_json::Value`] (one parser, shared by every object), then a generated,
//! non-generic [`FromJson`] conversion moves each member into its field. Compared with
//! `#[derive(Deserialize)]`, which gives every struct a field-identifier visitor, a
//! `visit_seq` and a `visit_map`, each monomorphized for every deserializer and every
//! field type, this compiles to one plain function per struct: a hundred objects cost
//! about what a dozen derived ones do.
//!
//! The conversion is lenient at every level: a member whose value does not fit its
//! field (a field that changed type in an API version this release does not know) leaves
//! that field `None` (or empty) instead of failing the object, and an array element that
//! does not fit is skipped. The JSON as sent is always in the event's raw object.

use std::collections::HashMap;

use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::common::{Address, Expandable, IdOnly, List};

/// A value the generated objects can be built from, taking it out of its JSON.
pub(crate) trait FromJson: Sized {
    /// The value, or `None` when the JSON does not fit (including `null`).
    fn from_json(v: Value) -> Option<Self>;
}

/// Deserializes a generated object through [`Value`], for any deserializer.
pub(crate) fn deserialize_object<'de, T: FromJson, D: Deserializer<'de>>(
    d: D,
) -> Result<T, D::Error> {
    T::from_json(Value::deserialize(d)?)
        .ok_or_else(|| serde::de::Error::custom("expected a JSON object"))
}

/// The members of `v` when it is an object.
pub(crate) fn members(v: Value) -> Option<Map<String, Value>> {
    match v {
        Value::Object(m) => Some(m),
        _ => None,
    }
}

/// The index of the string `v` in `values` (sorted), or the string itself when it is not
/// there; `None` when `v` is not a string. Shared by every generated enum.
pub(crate) fn wire_index(v: Value, values: &[&str]) -> Option<Result<usize, String>> {
    let s = String::from_json(v)?;
    Some(values.binary_search(&s.as_str()).map_err(|_| s))
}

/// Takes the member `key` out of `m` for an optional field: `None` when it is absent,
/// `null`, or does not fit. Shared by every field of that type in every struct.
pub(crate) fn take<T: FromJson>(m: &mut Map<String, Value>, key: &str) -> Option<T> {
    m.remove(key).and_then(T::from_json)
}

/// Takes the member `key` out of `m` for a collection field: empty when it is absent,
/// `null`, or does not fit.
pub(crate) fn take_or_default<T: FromJson + Default>(m: &mut Map<String, Value>, key: &str) -> T {
    take(m, key).unwrap_or_default()
}

/// A field of a generated object, as its `Serialize` writes it: through a [`Value`].
/// Each object's `serialize` is then one table of `(name, &dyn Field)` and one call to
/// [`serialize_fields`], not a generic call per field, which is what the compiler has to
/// check and encode for every one of a few hundred structs.
pub(crate) trait Field {
    /// Whether the field is left out: an `Option` that is `None` (absent and `null` read
    /// back the same).
    fn absent(&self) -> bool {
        false
    }

    /// The field's value.
    fn to_value(&self) -> Result<Value, serde_json::Error>;
}

impl<T: Serialize> Field for Option<T> {
    fn absent(&self) -> bool {
        self.is_none()
    }

    fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

impl<T: Serialize> Field for Vec<T> {
    fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

impl<T: Serialize> Field for HashMap<String, T> {
    fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

impl<T: Serialize> Field for List<T> {
    fn to_value(&self) -> Result<Value, serde_json::Error> {
        serde_json::to_value(self)
    }
}

/// Writes a generated object as a map of the fields that are not
/// [`absent`](Field::absent).
pub(crate) fn serialize_fields<S: Serializer>(
    s: S,
    fields: &[(&'static str, &dyn Field)],
) -> Result<S::Ok, S::Error> {
    let mut m = s.serialize_map(None)?;
    for (key, field) in fields {
        if !field.absent() {
            let value = field.to_value().map_err(serde::ser::Error::custom)?;
            m.serialize_entry(key, &value)?;
        }
    }
    m.end()
}

impl FromJson for String {
    fn from_json(v: Value) -> Option<Self> {
        match v {
            Value::String(s) => Some(s),
            _ => None,
        }
    }
}

impl FromJson for i64 {
    fn from_json(v: Value) -> Option<Self> {
        v.as_i64()
    }
}

impl FromJson for f64 {
    fn from_json(v: Value) -> Option<Self> {
        v.as_f64()
    }
}

impl FromJson for bool {
    fn from_json(v: Value) -> Option<Self> {
        v.as_bool()
    }
}

impl FromJson for Value {
    fn from_json(v: Value) -> Option<Self> {
        (!v.is_null()).then_some(v)
    }
}

impl<T: FromJson> FromJson for Box<T> {
    fn from_json(v: Value) -> Option<Self> {
        T::from_json(v).map(Box::new)
    }
}

impl<T: FromJson> FromJson for Vec<T> {
    fn from_json(v: Value) -> Option<Self> {
        match v {
            Value::Array(items) => {
                let mut out = Vec::with_capacity(items.len());
                for item in items {
                    if let Some(x) = T::from_json(item) {
                        out.push(x);
                    }
                }
                Some(out)
            }
            _ => None,
        }
    }
}

impl<T: FromJson> FromJson for HashMap<String, T> {
    fn from_json(v: Value) -> Option<Self> {
        Some(
            members(v)?
                .into_iter()
                .filter_map(|(k, v)| Some((k, T::from_json(v)?)))
                .collect(),
        )
    }
}

impl<T: FromJson> FromJson for Expandable<T> {
    fn from_json(v: Value) -> Option<Self> {
        match v {
            Value::String(id) => Some(Expandable::Id(id)),
            v @ Value::Object(_) => T::from_json(v).map(|o| Expandable::Object(Box::new(o))),
            _ => None,
        }
    }
}

impl<T: FromJson> FromJson for List<T> {
    fn from_json(v: Value) -> Option<Self> {
        let mut list = List::default();
        for (k, v) in members(v)? {
            match k.as_str() {
                "object" => list.object = String::from_json(v).unwrap_or(list.object),
                "data" => list.data = Vec::from_json(v).unwrap_or_default(),
                "has_more" => list.has_more = v.as_bool().unwrap_or_default(),
                "url" => list.url = String::from_json(v),
                "total_count" => list.total_count = v.as_u64(),
                _ => {}
            }
        }
        Some(list)
    }
}

impl FromJson for Address {
    fn from_json(v: Value) -> Option<Self> {
        let mut a = Address::default();
        for (k, v) in members(v)? {
            let v = String::from_json(v);
            match k.as_str() {
                "city" => a.city = v,
                "country" => a.country = v,
                "line1" => a.line1 = v,
                "line2" => a.line2 = v,
                "postal_code" => a.postal_code = v,
                "state" => a.state = v,
                _ => {}
            }
        }
        Some(a)
    }
}

impl FromJson for IdOnly {
    fn from_json(v: Value) -> Option<Self> {
        let mut m = members(v)?;
        Some(IdOnly {
            id: m.remove("id").and_then(String::from_json)?,
            object: m.remove("object").and_then(String::from_json),
        })
    }
}

/// The hand-written objects, when a generated one embeds them (an expanded field, a
/// `price` inside a checkout line item): they go through their own strict, drift-aware
/// `Deserialize`, reusing the code their events already compile.
macro_rules! hand_written_from_json {
    ($($t:ty),* $(,)?) => {$(
        impl FromJson for $t {
            fn from_json(v: Value) -> Option<Self> {
                serde_json::from_str(&v.to_string()).ok()
            }
        }
    )*};
}

hand_written_from_json!(
    super::BankAccount,
    super::Card,
    super::Charge,
    super::CheckoutSession,
    super::Customer,
    super::Dispute,
    super::Invoice,
    super::InvoiceLineItem,
    super::InvoicePayment,
    super::PaymentIntent,
    super::PaymentMethod,
    super::Plan,
    super::Price,
    super::Product,
    super::Refund,
    super::SetupIntent,
    super::Source,
    super::Subscription,
    super::SubscriptionItem,
);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scalars_fit_or_are_none() {
        assert_eq!(String::from_json(json!("a")), Some("a".to_owned()));
        assert_eq!(String::from_json(json!(1)), None);
        assert_eq!(i64::from_json(json!(-3)), Some(-3));
        assert_eq!(i64::from_json(json!("3")), None);
        assert_eq!(f64::from_json(json!(2)), Some(2.0));
        assert_eq!(bool::from_json(Value::Null), None);
        assert_eq!(Value::from_json(Value::Null), None);
    }

    #[test]
    fn serialize_writes_present_fields_and_every_collection() {
        let c = super::super::Coupon {
            id: Some("co_1".into()),
            percent_off: Some(12.5),
            applies_to: Some(super::super::CouponAppliesTo {
                products: vec!["prod_1".into()],
            }),
            ..Default::default()
        };
        let v = serde_json::to_value(&c).unwrap();
        assert_eq!(
            v,
            json!({
                "id": "co_1",
                "percent_off": 12.5,
                "applies_to": {"products": ["prod_1"]},
                "currency_options": {},
                "metadata": {},
            })
        );
        let back: super::super::Coupon = serde_json::from_value(v).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn collections_skip_what_does_not_fit() {
        assert_eq!(Vec::<i64>::from_json(json!([1, "x", 3])), Some(vec![1, 3]));
        assert_eq!(Vec::<i64>::from_json(json!({"a": 1})), None);
        let m = HashMap::<String, String>::from_json(json!({"a": "b", "c": 1})).unwrap();
        assert_eq!(m.len(), 1);
        let l = List::<IdOnly>::from_json(
            json!({"object": "list", "data": [{"id": "a"}, {"no": "id"}], "has_more": true}),
        )
        .unwrap();
        assert_eq!(l.len(), 1);
        assert!(l.has_more);
        let e = Expandable::<IdOnly>::from_json(json!("x_1")).unwrap();
        assert!(!e.is_expanded());
        let e = Expandable::<IdOnly>::from_json(json!({"id": "x_2", "object": "x"})).unwrap();
        assert!(e.is_expanded());
        assert_eq!(Expandable::<IdOnly>::from_json(json!(5)), None);
        let a = Address::from_json(json!({"city": "Lyon", "line1": null, "zip": 1})).unwrap();
        assert_eq!(a.city.as_deref(), Some("Lyon"));
        let c = super::super::Customer::from_json(json!({"id": "cus_1", "object": "customer"}));
        assert_eq!(c.map(|c| c.id), Some("cus_1".to_owned()));
    }
}
