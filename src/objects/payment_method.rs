//! `payment_method` (`payment_method.*` events).

use serde::Serialize;

use super::common::{string_enum, BillingDetails, Expandable, HasId, Metadata};
use super::customer::Customer;
use super::map_only::map_deserialize;

/// A payment method: a card, bank account or wallet a customer pays with.
///
/// Carried by `payment_method.attached`, `.detached`, `.updated` and
/// `.automatically_updated`. Only the card details are typed; other types' details are
/// in the raw object under the key named by [`type_`](Self::type_).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct PaymentMethod {
    /// Payment method id (`pm_…`; `card_…`/`src_…` for legacy objects).
    pub id: String,
    /// Always `"payment_method"`.
    pub object: Option<String>,
    /// Billing details.
    pub billing_details: Option<BillingDetails>,
    /// Card details, when `type` is `card`.
    pub card: Option<PaymentMethodCard>,
    /// When it was created (Unix seconds).
    pub created: Option<i64>,
    /// The customer it is attached to (expandable); `None` once detached.
    pub customer: Option<Expandable<Customer>>,
    /// Whether it exists in live mode.
    pub livemode: Option<bool>,
    /// Your metadata.
    pub metadata: Metadata,
    /// Kind of payment method.
    #[serde(rename = "type")]
    pub type_: Option<PaymentMethodType>,
}

map_deserialize!(PaymentMethod {
    required "id" => id;
    "object" => object,
    "billing_details" => billing_details,
    "card" => card,
    "created" => created,
    "customer" => customer,
    "livemode" => livemode,
    "metadata" => metadata: null_as_default,
    "type" => type_,
});

impl PaymentMethod {
    /// The customer's id, whether `customer` is expanded or not.
    pub fn customer_id(&self) -> Option<&str> {
        self.customer.as_ref().and_then(Expandable::id)
    }
}

impl HasId for PaymentMethod {
    fn id(&self) -> Option<&str> {
        Some(&self.id)
    }
}

/// Card details of a [`PaymentMethod`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct PaymentMethodCard {
    /// Card brand: `amex`, `visa`, `mastercard`… (free-form; new brands appear).
    pub brand: Option<String>,
    /// Two-letter country code of the issuer.
    pub country: Option<String>,
    /// Brand to show the customer (for co-branded cards).
    pub display_brand: Option<String>,
    /// Expiry month (1–12).
    pub exp_month: Option<i64>,
    /// Four-digit expiry year.
    pub exp_year: Option<i64>,
    /// Identifies the card number across payment methods.
    pub fingerprint: Option<String>,
    /// `credit`, `debit`, `prepaid` or `unknown`.
    pub funding: Option<String>,
    /// Last four digits.
    pub last4: Option<String>,
}

map_deserialize!(PaymentMethodCard {
    "brand" => brand,
    "country" => country,
    "display_brand" => display_brand,
    "exp_month" => exp_month,
    "exp_year" => exp_year,
    "fingerprint" => fingerprint,
    "funding" => funding,
    "last4" => last4,
});

string_enum! {
    /// Kind of payment method (`payment_method.type`). New kinds appear often and parse
    /// as `Unknown`.
    pub enum PaymentMethodType {
        /// Canadian pre-authorized debit.
        AcssDebit = "acss_debit",
        /// Affirm.
        Affirm = "affirm",
        /// Afterpay / Clearpay.
        AfterpayClearpay = "afterpay_clearpay",
        /// Alipay.
        Alipay = "alipay",
        /// Alma.
        Alma = "alma",
        /// Amazon Pay.
        AmazonPay = "amazon_pay",
        /// Australian BECS direct debit.
        AuBecsDebit = "au_becs_debit",
        /// UK Bacs direct debit.
        BacsDebit = "bacs_debit",
        /// Bancontact.
        Bancontact = "bancontact",
        /// Billie.
        Billie = "billie",
        /// Bizum.
        Bizum = "bizum",
        /// BLIK.
        Blik = "blik",
        /// Boleto.
        Boleto = "boleto",
        /// Card.
        Card = "card",
        /// Card read by a Terminal reader.
        CardPresent = "card_present",
        /// Cash App Pay.
        Cashapp = "cashapp",
        /// Crypto.
        Crypto = "crypto",
        /// A custom payment method.
        Custom = "custom",
        /// Customer cash balance.
        CustomerBalance = "customer_balance",
        /// EPS.
        Eps = "eps",
        /// FPX.
        Fpx = "fpx",
        /// Giropay.
        Giropay = "giropay",
        /// GrabPay.
        Grabpay = "grabpay",
        /// iDEAL.
        Ideal = "ideal",
        /// Interac card present.
        InteracPresent = "interac_present",
        /// Kakao Pay.
        KakaoPay = "kakao_pay",
        /// Klarna.
        Klarna = "klarna",
        /// Konbini.
        Konbini = "konbini",
        /// Korean card.
        KrCard = "kr_card",
        /// Link.
        Link = "link",
        /// MB WAY.
        MbWay = "mb_way",
        /// MobilePay.
        Mobilepay = "mobilepay",
        /// Multibanco.
        Multibanco = "multibanco",
        /// Naver Pay.
        NaverPay = "naver_pay",
        /// New Zealand bank account.
        NzBankAccount = "nz_bank_account",
        /// OXXO.
        Oxxo = "oxxo",
        /// Przelewy24.
        P24 = "p24",
        /// Pay by bank.
        PayByBank = "pay_by_bank",
        /// PAYCO.
        Payco = "payco",
        /// PayNow.
        Paynow = "paynow",
        /// PayPal.
        Paypal = "paypal",
        /// PayPay.
        Paypay = "paypay",
        /// PayTo.
        Payto = "payto",
        /// Pix.
        Pix = "pix",
        /// PromptPay.
        Promptpay = "promptpay",
        /// Revolut Pay.
        RevolutPay = "revolut_pay",
        /// Samsung Pay.
        SamsungPay = "samsung_pay",
        /// Satispay.
        Satispay = "satispay",
        /// Scalapay.
        Scalapay = "scalapay",
        /// SEPA direct debit.
        SepaDebit = "sepa_debit",
        /// SeQura.
        Sequra = "sequra",
        /// Sofort.
        Sofort = "sofort",
        /// Sunbit.
        Sunbit = "sunbit",
        /// Swish.
        Swish = "swish",
        /// TWINT.
        Twint = "twint",
        /// UPI.
        Upi = "upi",
        /// US bank account (ACH).
        UsBankAccount = "us_bank_account",
        /// WeChat Pay.
        WechatPay = "wechat_pay",
        /// Zip.
        Zip = "zip",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/data/stripe/fixtures/payment_method.json"
    ));

    #[test]
    fn parses_fixture() {
        let pm: PaymentMethod = serde_json::from_str(FIXTURE).unwrap();
        assert_eq!(pm.id, "pm_1Pgc75B7WZ01zgkWlHVgdEGJ");
        assert_eq!(pm.type_, Some(PaymentMethodType::Card));
        let card = pm.card.as_ref().unwrap();
        assert_eq!(card.brand.as_deref(), Some("visa"));
        assert_eq!(card.last4.as_deref(), Some("4242"));
        assert_eq!((card.exp_month, card.exp_year), (Some(8), Some(2030)));
        assert_eq!(
            pm.billing_details.as_ref().unwrap().email.as_deref(),
            Some("jenny@example.com")
        );
        assert_eq!(pm.metadata["order_id"], "123456789");
        assert_eq!(pm.customer_id(), None);
        let back: PaymentMethod =
            serde_json::from_str(&serde_json::to_string(&pm).unwrap()).unwrap();
        assert_eq!(back, pm);
    }

    #[test]
    fn unknown_type_and_customer_shapes() {
        let pm: PaymentMethod =
            serde_json::from_str(r#"{"id":"pm_1","type":"teleport_pay","customer":"cus_1"}"#)
                .unwrap();
        assert_eq!(
            pm.type_,
            Some(PaymentMethodType::Unknown("teleport_pay".into()))
        );
        assert_eq!(pm.customer_id(), Some("cus_1"));
        let pm: PaymentMethod = serde_json::from_str(
            r#"{"id":"pm_1","customer":{"id":"cus_2","object":"customer","email":"x@y.z"}}"#,
        )
        .unwrap();
        assert_eq!(pm.customer_id(), Some("cus_2"));
        assert!(pm.customer.unwrap().is_expanded());
    }
}
