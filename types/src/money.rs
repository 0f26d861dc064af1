//! Money: integer minor units of an ISO 4217 currency, never negative.

use std::fmt;

use marquee_proto::common::v1 as proto;

use crate::{InvalidInput, invalid};

/// Active ISO 4217 alphabetic codes (funds and precious-metal codes excluded).
const ISO_4217: &[&str] = &[
    "AED", "AFN", "ALL", "AMD", "ANG", "AOA", "ARS", "AUD", "AWG", "AZN", "BAM", "BBD", "BDT", "BGN", "BHD",
    "BIF", "BMD", "BND", "BOB", "BRL", "BSD", "BTN", "BWP", "BYN", "BZD", "CAD", "CDF", "CHF", "CLP", "CNY",
    "COP", "CRC", "CUP", "CVE", "CZK", "DJF", "DKK", "DOP", "DZD", "EGP", "ERN", "ETB", "EUR", "FJD", "FKP",
    "GBP", "GEL", "GHS", "GIP", "GMD", "GNF", "GTQ", "GYD", "HKD", "HNL", "HTG", "HUF", "IDR", "ILS", "INR",
    "IQD", "IRR", "ISK", "JMD", "JOD", "JPY", "KES", "KGS", "KHR", "KMF", "KPW", "KRW", "KWD", "KYD", "KZT",
    "LAK", "LBP", "LKR", "LRD", "LSL", "LYD", "MAD", "MDL", "MGA", "MKD", "MMK", "MNT", "MOP", "MRU", "MUR",
    "MVR", "MWK", "MXN", "MYR", "MZN", "NAD", "NGN", "NIO", "NOK", "NPR", "NZD", "OMR", "PAB", "PEN", "PGK",
    "PHP", "PKR", "PLN", "PYG", "QAR", "RON", "RSD", "RUB", "RWF", "SAR", "SBD", "SCR", "SDG", "SEK", "SGD",
    "SHP", "SLE", "SOS", "SRD", "SSP", "STN", "SVC", "SYP", "SZL", "THB", "TJS", "TMT", "TND", "TOP", "TRY",
    "TTD", "TWD", "TZS", "UAH", "UGX", "USD", "UYU", "UZS", "VED", "VES", "VND", "VUV", "WST", "XAF", "XCD",
    "XCG", "XOF", "XPF", "YER", "ZAR", "ZMW", "ZWG",
];

/// An amount in integer minor units of an ISO 4217 currency, never negative.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Money {
    amount_minor: i64,
    currency: &'static str,
}

impl Money {
    pub fn parse(amount_minor: i64, currency: &str) -> Result<Self, InvalidInput> {
        if amount_minor < 0 {
            return Err(invalid("amount must not be negative"));
        }
        let currency = ISO_4217
            .iter()
            .find(|code| **code == currency)
            .ok_or_else(|| invalid(format!("currency {currency:?} is not an ISO 4217 code, e.g. EUR")))?;
        Ok(Self { amount_minor, currency })
    }

    /// From a proto field that must be set; `field` names it in the refusal.
    pub fn from_proto(raw: Option<&proto::Money>, field: &str) -> Result<Self, InvalidInput> {
        let raw = raw.ok_or_else(|| invalid(format!("{field} is missing")))?;
        Self::parse(raw.amount_minor, &raw.currency).map_err(|e| invalid(format!("{field}: {e}")))
    }

    pub fn to_proto(&self) -> proto::Money {
        proto::Money { amount_minor: self.amount_minor, currency: self.currency.to_owned() }
    }

    pub fn amount_minor(&self) -> i64 {
        self.amount_minor
    }

    pub fn currency(&self) -> &str {
        self.currency
    }

    /// The sum of `prices`, all of one currency; `None` when there are none.
    pub fn sum<'a>(prices: impl IntoIterator<Item = &'a Money>) -> Result<Option<Money>, InvalidInput> {
        let mut total: Option<Money> = None;
        for price in prices {
            total = Some(match total {
                None => price.clone(),
                Some(sum) if sum.currency != price.currency => {
                    return Err(invalid(format!("cannot add {} to {}", price.currency, sum.currency)));
                }
                Some(sum) => {
                    let amount_minor = sum
                        .amount_minor
                        .checked_add(price.amount_minor)
                        .ok_or_else(|| invalid("the total overflows"))?;
                    Money { amount_minor, currency: sum.currency }
                }
            });
        }
        Ok(total)
    }

    /// The same currency, another amount (negative ones become zero).
    pub fn with_amount(&self, amount_minor: i64) -> Self {
        Self { amount_minor: amount_minor.max(0), currency: self.currency }
    }
}

/// Two decimals and the code ("12.50 EUR"), which fits every currency the catalog uses.
impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02} {}", self.amount_minor / 100, self.amount_minor % 100, self.currency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_is_a_non_negative_amount_of_an_iso_currency() {
        let price = Money::parse(1250, "EUR").unwrap();
        assert_eq!((price.amount_minor(), price.currency()), (1250, "EUR"));
        assert_eq!(price.to_string(), "12.50 EUR");
        assert_eq!(price.with_amount(-5).amount_minor(), 0);
        assert!(Money::parse(0, "USD").is_ok());
        assert!(Money::parse(-1, "EUR").is_err());
        for currency in ["", "eur", "EURO", "XXX", "ABC"] {
            assert!(Money::parse(1, currency).is_err(), "{currency:?}");
        }
    }

    #[test]
    fn prices_of_one_currency_add_up() {
        let (a, b) = (Money::parse(850, "EUR").unwrap(), Money::parse(1200, "EUR").unwrap());
        assert_eq!(Money::sum([&a, &b]).unwrap(), Some(Money::parse(2050, "EUR").unwrap()));
        assert_eq!(Money::sum([]).unwrap(), None);
        assert!(Money::sum([&a, &Money::parse(1, "USD").unwrap()]).is_err());
        assert!(Money::sum([&a, &a.with_amount(i64::MAX)]).is_err());
    }

    #[test]
    fn money_round_trips_through_proto_and_a_missing_field_is_named() {
        let price = Money::parse(850, "GBP").unwrap();
        assert_eq!(Money::from_proto(Some(&price.to_proto()), "total").unwrap(), price);
        assert_eq!(Money::from_proto(None, "total").unwrap_err().0, "total is missing");
        let negative = proto::Money { amount_minor: -1, currency: "EUR".to_owned() };
        assert!(Money::from_proto(Some(&negative), "refund").unwrap_err().0.starts_with("refund: "));
    }
}
