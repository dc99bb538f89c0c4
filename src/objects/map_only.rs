//! `Deserialize` for the hand-written objects, written by [`map_deserialize!`] instead
//! of derived.
//!
//! `#[derive(Deserialize)]` gives each struct a visitor with a method for a map and one
//! for a sequence of its fields in order (which Stripe never sends, but `serde_json`
//! compiles in), a field-name visitor, and one local per field, each dropped on every
//! early return: for `Invoice`, 7.8k lines of LLVM IR, where this macro's visitor is
//! 2.9k. [`map_deserialize!`] writes
//! one visitor per struct that starts from `Default` and assigns each member as it
//! arrives, with one shared [`BorrowedStr`] type for the member names, borrowed from the input.
//! Behaviour, compared with the derive:
//!
//! - only a map is read: a JSON array is an `invalid type` error, as any other, and
//!   formats that write structs as sequences (bincode, postcard) cannot read these
//!   structs back;
//! - unknown members are skipped, absent ones keep their `Default`;
//! - a repeated member keeps its last value, as `serde_json::Value` does, instead of
//!   failing the object;
//! - a required member (`id` where the struct's `id` is not an `Option`) still fails
//!   with serde's `missing field` error.
//!
//! The macro names every field once, so a field added to a struct and not to its
//! `map_deserialize!` is a compile error.

use std::borrow::Cow;

use serde::{Deserialize, Deserializer};

/// A string (a member name, an event id), borrowed from the input unless it holds an
/// escape: serde's own `Cow<str>` always copies.
pub(crate) struct BorrowedStr<'de>(pub(crate) Cow<'de, str>);

impl<'de> Deserialize<'de> for BorrowedStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        super::common::open_str(d).map(BorrowedStr)
    }
}

/// A derived `T` read from a JSON object only: the derive also reads an array of the
/// fields in order, which Stripe never sends (`"data": [{…}, {…}]` would read as an
/// event's object and its previous attributes).
pub(crate) struct MapOnly<T>(pub(crate) T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for MapOnly<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);

        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for V<T> {
            type Value = T;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
                T::deserialize(serde::de::value::MapAccessDeserializer::new(map))
            }
        }

        d.deserialize_map(V(std::marker::PhantomData)).map(MapOnly)
    }
}

/// Implements `Deserialize` for a struct that implements `Default`, from its members'
/// wire names and fields: `"wire" => field`, or `"wire" => field: null_as_default` for a
/// collection that Stripe may send as `null`. An optional first `required "id" => id;`
/// names the one member that must be present.
macro_rules! map_deserialize {
    (
        $t:ident {
            $(required $rwire:literal => $rfield:ident;)?
            $($wire:literal => $field:ident $(: $mode:ident)?),* $(,)?
        }
    ) => {
        impl<'de> ::serde::Deserialize<'de> for $t {
            fn deserialize<D: ::serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                struct V;

                impl<'de> ::serde::de::Visitor<'de> for V {
                    type Value = $t;

                    fn expecting(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                        f.write_str(concat!("a JSON object for `", stringify!($t), "`"))
                    }

                    fn visit_map<A: ::serde::de::MapAccess<'de>>(
                        self,
                        mut map: A,
                    ) -> Result<$t, A::Error> {
                        let mut s = <$t as ::std::default::Default>::default();
                        $(let mut seen = { let _ = $rwire; false };)?
                        while let Some(key) = map.next_key::<$crate::objects::map_only::BorrowedStr<'de>>()? {
                            match &*key.0 {
                                $($rwire => {
                                    s.$rfield = map.next_value()?;
                                    seen = true;
                                })?
                                $($wire => {
                                    s.$field = $crate::objects::map_only::map_deserialize!(
                                        @value map $(, $mode)?
                                    );
                                })*
                                _ => {
                                    map.next_value::<::serde::de::IgnoredAny>()?;
                                }
                            }
                        }
                        $(if !seen {
                            return Err(<A::Error as ::serde::de::Error>::missing_field($rwire));
                        })?
                        Ok(s)
                    }
                }

                d.deserialize_map(V)
            }
        }

        // Every field is named above: a field left out does not compile.
        const _: fn($t) = |s: $t| {
            let $t { $($rfield: _,)? $($field: _),* } = s;
        };
    };
    (@value $map:ident) => {
        $map.next_value()?
    };
    (@value $map:ident, null_as_default) => {
        $map.next_value::<Option<_>>()?.unwrap_or_default()
    };
}
pub(crate) use map_deserialize;

#[cfg(test)]
mod tests {
    use super::super::Metadata;

    #[derive(Debug, Default, PartialEq)]
    struct Thing {
        id: String,
        name: Option<String>,
        kind: Option<String>,
        metadata: Metadata,
    }

    map_deserialize!(Thing {
        required "id" => id;
        "name" => name,
        "type" => kind,
        "metadata" => metadata: null_as_default,
    });

    fn thing(json: &str) -> Result<Thing, serde_json::Error> {
        serde_json::from_str(json)
    }

    #[test]
    fn members_by_wire_name_and_unknown_ones_skipped() {
        let t = thing(r#"{"id":"t_1","type":"a","extra":{"x":[1,null]},"name":"n"}"#).unwrap();
        assert_eq!(t.id, "t_1");
        assert_eq!(t.kind.as_deref(), Some("a"));
        assert_eq!(t.name.as_deref(), Some("n"));
        // A member name with an escape is read too.
        let t = thing(r#"{"id":"t_2","n\u0061me":"x"}"#).unwrap();
        assert_eq!(t.name.as_deref(), Some("x"));
    }

    #[test]
    fn null_collections_become_empty() {
        assert!(thing(r#"{"id":"t","metadata":null}"#)
            .unwrap()
            .metadata
            .is_empty());
        assert!(thing(r#"{"id":"t"}"#).unwrap().metadata.is_empty());
        let t = thing(r#"{"id":"t","metadata":{"a":"b"}}"#).unwrap();
        assert_eq!(t.metadata["a"], "b");
    }

    #[test]
    fn a_missing_required_member_or_a_wrong_type_fails() {
        let e = thing(r#"{"name":"n"}"#).unwrap_err().to_string();
        assert!(e.contains("missing field `id`"), "{e}");
        let e = thing(r#"{"id":"t","name":3}"#).unwrap_err().to_string();
        assert!(e.contains("invalid type: integer `3`"), "{e}");
        // Only an object is read: serde's derive would also take an array of fields.
        let e = thing(r#"["t","n"]"#).unwrap_err().to_string();
        assert!(e.contains("expected a JSON object for `Thing`"), "{e}");
    }

    #[test]
    fn a_repeated_member_keeps_its_last_value() {
        let t = thing(r#"{"id":"t","name":"a","name":"b"}"#).unwrap();
        assert_eq!(t.name.as_deref(), Some("b"));
    }
}
