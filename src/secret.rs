//! Webhook signing secrets.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

pub(crate) type HmacSha256 = Hmac<Sha256>;

/// Why a string could not become a [`SigningSecret`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SecretError {
    /// The secret was the empty string (often an unset environment variable).
    #[error("signing secret is empty")]
    Empty,
    /// The secret starts or ends with whitespace, usually a stray newline from a file or
    /// an environment variable. Stripe secrets never do, so this would never verify.
    #[error("signing secret has leading or trailing whitespace")]
    SurroundingWhitespace,
}

/// A webhook endpoint's signing secret (`whsec_…`), with an optional label.
///
/// The key is prepared for HMAC-SHA256 once, when the secret is built, so verifying a
/// request does not re-key. `Debug` never prints the secret:
///
/// ```
/// use stripe_webhooks::SigningSecret;
///
/// let secret = SigningSecret::new("whsec_test_secret")?.with_label("2026-rotation");
/// assert_eq!(format!("{secret:?}"), r#"SigningSecret { label: Some("2026-rotation"), secret: <redacted> }"#);
/// # Ok::<(), stripe_webhooks::SecretError>(())
/// ```
#[derive(Clone)]
pub struct SigningSecret {
    mac: HmacSha256,
    label: Option<Arc<str>>,
    has_whsec_prefix: bool,
}

impl SigningSecret {
    /// Builds a secret from the string shown in the Stripe Dashboard (`whsec_` prefix
    /// included: Stripe keys the HMAC with the whole string).
    ///
    /// # Errors
    ///
    /// - [`SecretError::Empty`] for an empty string;
    /// - [`SecretError::SurroundingWhitespace`] if it starts or ends with whitespace.
    pub fn new(secret: impl AsRef<str>) -> Result<Self, SecretError> {
        let secret = secret.as_ref();
        if secret.is_empty() {
            return Err(SecretError::Empty);
        }
        if secret.trim() != secret {
            return Err(SecretError::SurroundingWhitespace);
        }
        // HMAC accepts keys of any length, so this cannot fail; map it anyway rather than panic.
        let mac = HmacSha256::new_from_slice(secret.as_bytes()).map_err(|_| SecretError::Empty)?;
        Ok(Self {
            mac,
            label: None,
            has_whsec_prefix: secret.starts_with("whsec_"),
        })
    }

    /// Attaches a label (for example `"current"` or `"previous"`). A successful
    /// verification reports the label of the secret that matched.
    #[must_use]
    pub fn with_label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(Arc::from(label.into()));
        self
    }

    /// The label given with [`with_label`](Self::with_label), if any.
    pub fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }

    pub(crate) fn label_arc(&self) -> Option<&Arc<str>> {
        self.label.as_ref()
    }

    /// A fresh MAC, already keyed with this secret.
    pub(crate) fn mac(&self) -> HmacSha256 {
        self.mac.clone()
    }

    pub(crate) fn has_whsec_prefix(&self) -> bool {
        self.has_whsec_prefix
    }
}

/// What `Debug` output shows in place of a secret.
pub(crate) struct Redacted;

impl fmt::Debug for Redacted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// `Redacted` for a secret that has a value.
pub(crate) fn redacted<T>(value: &Option<T>) -> Option<Redacted> {
    value.as_ref().map(|_| Redacted)
}

/// The objects whose `url` is a bearer link, which `Debug` output leaves out: a billing
/// portal session's lets whoever holds it act as the customer, and an identity
/// verification session's lets them submit documents in the user's place (Stripe: "Don't
/// store it, log it, send it in emails or expose it to anyone other than the user"), and
/// a file link's is "the publicly accessible URL to download the file" (dispute
/// evidence, identity documents) without authentication.
pub(crate) const BEARER_URL_OBJECTS: [&str; 3] = [
    "billing_portal.session",
    "identity.verification_session",
    "file_link",
];

/// The object that carries a whole card number and its CVC (`number`, `cvc`: an issuing
/// card retrieved with them expanded), which `Debug` output leaves out.
pub(crate) const CARD_NUMBER_OBJECT: &str = "issuing.card";

/// Whether a member of a Stripe object (of type `object`, its `object` member, when
/// known) holds a credential that `Debug` output leaves out: a client secret
/// (`client_secret`, or any name ending in `secret`), an OAuth `auth_code`, the `url`
/// of one of the [`BEARER_URL_OBJECTS`], or an issuing card's `number` and `cvc`
/// ([`CARD_NUMBER_OBJECT`]). The generator of `src/objects/generated/` applies the same
/// rule.
pub(crate) fn is_credential_member(object: Option<&str>, name: &str) -> bool {
    name.ends_with("secret")
        || name == "auth_code"
        || (name == "url" && object.is_some_and(|o| BEARER_URL_OBJECTS.contains(&o)))
        || (matches!(name, "number" | "cvc") && object == Some(CARD_NUMBER_OBJECT))
}

/// Whether a string holds a client secret as a value (`pi_…_secret_…`,
/// `seti_…_secret_…`, `src_client_secret_…`), as the URL of a payment's 3-D Secure
/// `next_action` does in its query.
pub(crate) fn holds_client_secret(s: &str) -> bool {
    s.contains("_secret_")
}

/// Free text (an error message) with its credentials hidden: in each run of letters,
/// digits and `_ - + / =`, from where a Stripe secret, restricted or ephemeral key or a
/// webhook signing secret starts (`sk_live_`, `sk_test_`, `rk_live_`, `rk_test_`,
/// `ek_live_`, `ek_test_`, `whsec_`: at the run's start or after a character that is not
/// a letter or digit, or, inside a word, when 16 letters or digits follow, as in a key
/// after an escape such as `\n`; `risk_test_run` is left alone) to the run's end (so
/// `api_key=sk_live_…` keeps `api_key=`), and a whole run that holds a client secret
/// (`_secret_`, as Stripe writes it: `STRIPE_SECRET_KEY` is a name, not a secret),
/// become `<redacted>`. A handler's error may quote what it had in hand.
pub(crate) fn redact_text(s: &str) -> std::borrow::Cow<'_, str> {
    const KEYS: [&str; 7] = [
        "sk_live_", "sk_test_", "rk_live_", "rk_test_", "ek_live_", "ek_test_", "whsec_",
    ];
    let in_token = |c: char| c.is_ascii_alphanumeric() || "_-+/=".contains(c);
    let client_secret = holds_client_secret;
    // Where a key starts in `t`: at its start, or after a character that is not a
    // letter or digit, or inside a word when a key's worth of letters and digits follows
    // (`\nwhsec_…` in a `Debug`-quoted list of secrets).
    let key_at = |t: &str| {
        KEYS.iter()
            .flat_map(|k| t.match_indices(k).map(move |(i, _)| (i, k.len())))
            .filter(|&(i, len)| {
                let at_word_start = t[..i]
                    .chars()
                    .next_back()
                    .map_or(true, |c| !c.is_ascii_alphanumeric());
                let body = t[i + len..]
                    .chars()
                    .take_while(char::is_ascii_alphanumeric)
                    .count();
                at_word_start || body >= 16
            })
            .map(|(i, _)| i)
            .min()
    };
    if !(client_secret(s) || key_at(s).is_some()) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find(in_token) {
        out.push_str(&rest[..start]);
        let token = &rest[start..];
        let end = token.find(|c: char| !in_token(c)).unwrap_or(token.len());
        let (token, after) = token.split_at(end);
        if client_secret(token) {
            out.push_str("<redacted>");
        } else if let Some(at) = key_at(token) {
            out.push_str(&token[..at]);
            out.push_str("<redacted>");
        } else {
            out.push_str(token);
        }
        rest = after;
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// An error's text as it is kept and logged: with [`redact_text`]'s credentials hidden
/// (the same `String` when it holds none).
pub(crate) fn redacted_text(text: String) -> String {
    let changed = match redact_text(&text) {
        std::borrow::Cow::Owned(r) => Some(r),
        std::borrow::Cow::Borrowed(_) => None,
    };
    changed.unwrap_or(text)
}

/// Hides credentials in a JSON value: each credential member's value
/// ([`is_credential_member`]) and each string that holds a client secret
/// ([`holds_client_secret`]), at any depth, become `"<redacted>"`.
pub(crate) fn redact_json(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            // Owned: the loop below borrows the map mutably. (`Debug` output only.)
            let object = m
                .get("object")
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            // An event's `data`: its `previous_attributes` are members of the object
            // beside them, which they do not name (a verification session's old `url`).
            let changed = m
                .get("object")
                .and_then(|o| o.get("object"))
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned);
            // A thin event's `changes`: their `before` and `after` are members of its
            // related object, which they do not name either.
            let thin_changed = (object.as_deref() == Some(THIN_EVENT_OBJECT)).then(|| {
                m.get("related_object")
                    .and_then(|o| o.get("type"))
                    .and_then(serde_json::Value::as_str)
                    .map(str::to_owned)
            });
            for (k, v) in m.iter_mut() {
                if is_credential_member(object.as_deref(), k) && !v.is_null() {
                    *v = serde_json::Value::from("<redacted>");
                } else {
                    if k == "previous_attributes" {
                        redact_members_of(changed.as_deref(), v);
                    }
                    if let (Some(related), "changes", serde_json::Value::Object(sides)) =
                        (&thin_changed, k.as_str(), &mut *v)
                    {
                        for side in ["before", "after"] {
                            if let Some(side) = sides.get_mut(side) {
                                redact_members_of(related.as_deref(), side);
                            }
                        }
                    }
                    redact_json(v);
                }
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::String(s) if holds_client_secret(s) => {
            *v = serde_json::Value::from("<redacted>");
        }
        _ => {}
    }
}

/// A thin (v2) event's `object`.
const THIN_EVENT_OBJECT: &str = "v2.core.event";

/// Hides the members of `v` that are credentials of an object of type `object` (a change
/// set holds its object's members without its `object`).
fn redact_members_of(object: Option<&str>, v: &mut serde_json::Value) {
    if let serde_json::Value::Object(m) = v {
        for (k, v) in m.iter_mut() {
            if is_credential_member(object, k) && !v.is_null() {
                *v = serde_json::Value::from("<redacted>");
            }
        }
    }
}

/// Hides credentials in a change set (an event's `previous_attributes`, a thin event's
/// `changes`), which holds members of an object of type `object` without naming it: as
/// [`redact_json`], and the members that are that type's credentials. Of a type not
/// known (`None`: a thin event's changes), its `url` is hidden as a
/// [bearer link](BEARER_URL_OBJECTS)'s, which it may be, and so are a `cvc` and a
/// `number` of 12 to 19 digits, as an issuing card's ([`CARD_NUMBER_OBJECT`]).
pub(crate) fn redact_change_set(object: Option<&str>, v: &mut serde_json::Value) {
    redact_members_of(object.or(BEARER_URL_OBJECTS.first().copied()), v);
    if let (None, serde_json::Value::Object(m)) = (object, &mut *v) {
        // And an issuing card's number and CVC, which they may be: a `cvc`, and a
        // `number` of a card number's 12 to 19 digits (an invoice's is not).
        for (k, v) in m.iter_mut() {
            let card_number =
                |s: &str| (12..=19).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
            let hidden = match (k.as_str(), &*v) {
                ("cvc", serde_json::Value::String(_)) => true,
                ("number", serde_json::Value::String(s)) => card_number(s),
                _ => false,
            };
            if hidden {
                *v = serde_json::Value::from("<redacted>");
            }
        }
    }
    redact_json(v);
}

/// [`debug_json`] for a change set ([`redact_change_set`]).
pub(crate) fn debug_change_set<'a>(
    object: Option<&str>,
    json: &'a str,
) -> std::borrow::Cow<'a, str> {
    // An issuing card's change set, or one of no known type that may be one.
    let card = matches!(object, None | Some(CARD_NUMBER_OBJECT))
        && (json.contains("\"cvc\"") || json.contains("\"number\""));
    if !(json.contains("\"url\"") || json.contains("\\u") || card) {
        return debug_json(json);
    }
    reparsed_redacted(json, |v| redact_change_set(object, v))
}

/// An event's `previous_attributes` shown by `Debug` ([`debug_change_set`]), with the
/// type of the object they belong to (`None` when the event's type does not say).
pub(crate) struct DebugChangeSet<'a>(pub(crate) Option<&'a str>, pub(crate) &'a str);

impl fmt::Debug for DebugChangeSet<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawValue({})", debug_change_set(self.0, self.1))
    }
}

/// A change set's JSON value shown by `Debug` ([`redact_change_set`]).
pub(crate) struct DebugChangeSetValue<'a>(pub(crate) &'a Option<serde_json::Value>);

impl fmt::Debug for DebugChangeSetValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_redacted(f, self.0, |v| redact_change_set(None, v))
    }
}

/// `Some(value)` with `redact` applied to a copy of it, or `None`.
fn fmt_redacted(
    f: &mut fmt::Formatter<'_>,
    value: &Option<serde_json::Value>,
    redact: impl FnOnce(&mut serde_json::Value),
) -> fmt::Result {
    match value {
        None => f.write_str("None"),
        Some(v) => {
            let mut v = v.clone();
            redact(&mut v);
            f.debug_tuple("Some").field(&v).finish()
        }
    }
}

/// `json` parsed, `redact`ed and written again (`Debug` output only).
fn reparsed_redacted(
    json: &str,
    redact: impl FnOnce(&mut serde_json::Value),
) -> std::borrow::Cow<'_, str> {
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(mut v) => {
            redact(&mut v);
            std::borrow::Cow::Owned(v.to_string())
        }
        Err(_) => std::borrow::Cow::Borrowed("<unreadable JSON>"),
    }
}

/// A Stripe object's JSON text for `Debug` output: as it is, or, when it holds a
/// credential ([`redact_json`]) at any depth, with each shown as `"<redacted>"`.
pub(crate) fn debug_json(json: &str) -> std::borrow::Cow<'_, str> {
    // Most objects hold none: their text is shown as it is, without a parse. A `\u`
    // escape may spell any of these names (`client_secre\u0074`), which only the parse
    // reads as Stripe's serializers do.
    if !(json.contains("secret")
        || json.contains("\"auth_code\"")
        || json.contains("\\u")
        || BEARER_URL_OBJECTS.iter().any(|o| json.contains(o))
        || json.contains(CARD_NUMBER_OBJECT))
    {
        return std::borrow::Cow::Borrowed(json);
    }
    reparsed_redacted(json, redact_json)
}

/// JSON text shown by `Debug` through [`debug_json`].
pub(crate) struct DebugJson<'a>(pub(crate) &'a str);

impl fmt::Debug for DebugJson<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RawValue({})", debug_json(self.0))
    }
}

/// `Debug` for a hand-written object with raw JSON fields (`json: …`) that may hold a
/// client secret as a value (a 3-D Secure `next_action` URL): those are shown through
/// [`DebugValue`], the others as they are. Every field is named once: one left out does
/// not compile.
macro_rules! debug_hiding_json {
    ($t:ident { $($field:ident),* ; json: $($json:ident),* }) => {
        impl ::std::fmt::Debug for $t {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                let $t { $($field,)* $($json,)* } = self;
                let mut d = f.debug_struct(stringify!($t));
                $(d.field(stringify!($field), $field);)*
                $(d.field(stringify!($json), &$crate::secret::DebugValue($json));)*
                d.finish()
            }
        }
    };
}
pub(crate) use debug_hiding_json;

/// Anything holding raw JSON (a list or map of `Value`s), shown by `Debug` as its JSON
/// with the credentials hidden ([`redact_json`]).
pub(crate) struct DebugSerialized<'a, T>(pub(crate) &'a T);

impl<T: serde::Serialize> fmt::Debug for DebugSerialized<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match serde_json::to_value(self.0) {
            Ok(mut v) => {
                redact_json(&mut v);
                fmt::Debug::fmt(&v, f)
            }
            Err(_) => f.write_str("<unserializable>"),
        }
    }
}

/// JSON values shown by `Debug` with their credentials hidden ([`redact_json`]).
pub(crate) struct DebugValues<'a>(pub(crate) &'a [serde_json::Value]);

impl fmt::Debug for DebugValues<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_list();
        for v in self.0 {
            let mut v = v.clone();
            redact_json(&mut v);
            list.entry(&v);
        }
        list.finish()
    }
}

/// A JSON value shown by `Debug` with its credentials hidden ([`redact_json`]).
pub(crate) struct DebugValue<'a>(pub(crate) &'a Option<serde_json::Value>);

impl fmt::Debug for DebugValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt_redacted(f, self.0, redact_json)
    }
}

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningSecret")
            .field("label", &self.label)
            .field("secret", &Redacted)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A change set of no known type (a thin event's `changes` seen alone) hides what
    /// may be an issuing card's number and CVC, and keeps an invoice's number.
    #[test]
    fn a_change_set_of_no_type_hides_a_card_number() {
        let changes = r#"{"number":"4242424242424242","cvc":"123","last4":"4242"}"#;
        let shown = debug_change_set(None, changes);
        assert!(
            !shown.contains("4242424242424242") && !shown.contains("123"),
            "{shown}"
        );
        assert!(shown.contains(r#""last4":"4242""#), "{shown}");
        let invoice = r#"{"number":"INV-0001","status":"open"}"#;
        assert!(debug_change_set(None, invoice).contains("INV-0001"));
        // An issuing card's, named so: hidden too (its text names no object).
        let card = r#"{"number":"4242424242424242","cvc":"123"}"#;
        let shown = debug_change_set(Some(CARD_NUMBER_OBJECT), card);
        assert!(
            !shown.contains("4242424242424242") && !shown.contains("123"),
            "{shown}"
        );
        assert!(debug_change_set(Some("invoice"), invoice).contains("INV-0001"));
    }

    /// A thin event's `changes` hold members of its related object without naming it: a
    /// verification session's bearer link in them is hidden too, as in its
    /// `previous_attributes`; another object's `url` is not a credential.
    #[test]
    fn debug_json_hides_credentials_in_a_thin_events_changes() {
        let event = |ty: &str| {
            format!(
                r#"{{"id":"evt_1","object":"v2.core.event","type":"v1.{ty}.updated","livemode":false,"related_object":{{"id":"x_1","type":"{ty}","url":"/v1/x/x_1"}},"changes":{{"before":{{"url":"https://verify.stripe.com/start/OLD_LINK"}},"after":{{"url":"https://verify.stripe.com/start/NEW_LINK"}}}}}}"#
            )
        };
        let session = event("identity.verification_session");
        let shown = debug_json(&session);
        assert!(
            !shown.contains("OLD_LINK") && !shown.contains("NEW_LINK"),
            "{shown}"
        );
        assert!(shown.contains(r#""/v1/x/x_1""#), "{shown}");
        let other = event("payment_link");
        assert_eq!(debug_json(&other), other);
        let file_link = event("file_link");
        let file_link = debug_json(&file_link);
        assert!(!file_link.contains("NEW_LINK"), "{file_link}");
    }

    #[test]
    fn debug_json_hides_credentials_at_any_depth() {
        let plain = r#"{"id":"cus_1","name":"x"}"#;
        assert_eq!(debug_json(plain), plain);
        let json = r#"{"id":"pi_1","client_secret":"pi_1_secret_abc","nested":[{"auth_code":"ac_9"}],"secret":null,"next_action":{"redirect_to_url":{"url":"https://hooks.stripe.com/3d_secure?payment_intent_client_secret=pi_1_secret_abc"}}}"#;
        let shown = debug_json(json);
        assert!(
            !shown.contains("pi_1_secret_abc") && !shown.contains("ac_9"),
            "{shown}"
        );
        assert!(shown.contains(r#"{"url":"<redacted>"}"#), "{shown}");
        assert!(shown.contains(r#""client_secret":"<redacted>""#), "{shown}");
        assert!(shown.contains(r#""secret":null"#), "{shown}");
        assert!(shown.contains(r#""id":"pi_1""#), "{shown}");
        // Names and values spelled with escapes are read as JSON reads them.
        for (escaped, hidden) in [
            (r#"{"client_secre\u0074":"HIDDEN"}"#, "HIDDEN"),
            (r#"{"auth\u005fcode":"ac_9"}"#, "ac_9"),
            (r#"{"n":"pi_1\u005fsecre\u0074_x"}"#, "pi_1"),
            (
                r#"{"object":"identity.verification\u005fsession","url":"https://x.test/LINK"}"#,
                "LINK",
            ),
        ] {
            let shown = debug_json(escaped);
            assert!(!shown.contains(hidden), "{hidden} in {shown}");
        }
        let change_set = r#"{"\u0075rl":"https://x.test/LINK"}"#;
        assert!(!debug_change_set(None, change_set).contains("LINK"));
    }

    /// A whole event body (the console's view): the previous attributes of a bearer-link
    /// object lose their `url`, those of another object keep theirs.
    #[test]
    fn an_events_previous_attributes_are_redacted_as_their_objects_members() {
        let event = |object: &str| {
            format!(
                r#"{{"id":"evt_1","object":"event","data":{{"object":{{"id":"x_1","object":"{object}","url":null}},"previous_attributes":{{"url":"https://example.test/LINK","status":"open"}}}}}}"#
            )
        };
        let bearer = event("identity.verification_session");
        let shown = debug_json(&bearer);
        assert!(!shown.contains("LINK"), "{shown}");
        assert!(shown.contains(r#""status":"open""#), "{shown}");
        let payment_link = event("payment_link");
        let mut v: serde_json::Value = serde_json::from_str(&payment_link).unwrap();
        redact_json(&mut v);
        assert!(v.to_string().contains("LINK"), "{v}");
        // A file link's URL downloads the file without authentication.
        let file_link = event("file_link");
        let mut v: serde_json::Value = serde_json::from_str(&file_link).unwrap();
        redact_json(&mut v);
        assert!(!v.to_string().contains("LINK"), "{v}");
        // On its own, a change set's `url` is hidden: whose it is, it does not say.
        let alone = r#"{"url":"https://example.test/LINK","status":"open"}"#;
        assert!(!debug_change_set(None, alone).contains("LINK"));
        assert!(!debug_change_set(Some("billing_portal.session"), alone).contains("LINK"));
        assert!(debug_change_set(Some("payment_link"), alone).contains("LINK"));
    }

    #[test]
    fn text_hides_client_secrets_and_keys_only() {
        let e = "card declined at https://hooks.stripe.com/3d?payment_intent_client_secret=pi_1_secret_abc \
                 (key sk_live_51Habc, whsec_a+b/c=) for pi_1, see cus_2";
        let shown = redact_text(e);
        for hidden in ["pi_1_secret_abc", "sk_live_51Habc", "whsec_a+b/c="] {
            assert!(!shown.contains(hidden), "{shown}");
        }
        assert!(shown.contains("card declined at https:"), "{shown}");
        assert!(shown.contains("for pi_1, see cus_2"), "{shown}");
        assert_eq!(shown.matches("<redacted>").count(), 3, "{shown}");
        assert!(matches!(
            redact_text("plain"),
            std::borrow::Cow::Borrowed("plain")
        ));
        assert_eq!(redact_text("été sk_test_1 ü"), "été <redacted> ü");
        // A key glued to its name keeps the name.
        assert_eq!(
            redact_text("STRIPE_WEBHOOK_SECRET=whsec_abc --api-key=sk_live_9 ?key=rk_test_1"),
            "STRIPE_WEBHOOK_SECRET=<redacted> --api-key=<redacted> ?key=<redacted>"
        );
        // Ephemeral keys' secrets go too.
        assert_eq!(
            redact_text("portal failed: ek_test_YWNj and ek_live_x"),
            "portal failed: <redacted> and <redacted>"
        );
        assert_eq!(redact_text("key_sk_live_1"), "key_<redacted>");
        // A key right after an escape (a `Debug`-quoted list), or URL-encoded.
        assert_eq!(
            redact_text(r#""whsec_old\nwhsec_0123456789abcdefXYZ\n""#),
            r#""<redacted>\n<redacted>\n""#
        );
        assert_eq!(
            redact_text("Bearer%20sk_live_0123456789abcdefABCD"),
            "Bearer%20<redacted>"
        );
        // Words that hold a key's letters, and names that say "secret", are left alone.
        for plain in [
            "risk_test_run failed",
            "benchmark_test_x",
            "missing env var STRIPE_SECRET_KEY",
            "task_live_feed",
        ] {
            assert_eq!(redact_text(plain), plain);
        }
    }

    #[test]
    fn rejects_empty_and_whitespace() {
        assert_eq!(SigningSecret::new("").unwrap_err(), SecretError::Empty);
        for bad in [" whsec_x", "whsec_x\n", "\twhsec_x", "whsec_x "] {
            assert_eq!(
                SigningSecret::new(bad).unwrap_err(),
                SecretError::SurroundingWhitespace
            );
        }
    }

    #[test]
    fn debug_is_redacted() {
        let s = SigningSecret::new("whsec_supersecret").unwrap();
        let dbg = format!("{s:?}");
        assert!(!dbg.contains("supersecret"), "{dbg}");
        assert!(dbg.contains("<redacted>"));
    }
}
