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

impl fmt::Debug for SigningSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        struct Redacted;
        impl fmt::Debug for Redacted {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("<redacted>")
            }
        }
        f.debug_struct("SigningSecret")
            .field("label", &self.label)
            .field("secret", &Redacted)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
