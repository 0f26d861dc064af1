//! What the domain modules share: the `Date` scalar, `Money`, and how upstream
//! messages are read (a field our own services must send but did not is their bug,
//! never the client's fault).

use async_graphql::{InputValueError, InputValueResult, Scalar, ScalarType, SimpleObject, Value};
use chrono::{DateTime, NaiveDate, Utc};
use marquee_proto::common::v1 as common;

use crate::error::GatewayError;

/// A response from our own services that breaks its contract (a missing timestamp,
/// an unknown enum value): a bug upstream, never the client's fault.
pub(super) fn broken(what: &str) -> GatewayError {
    GatewayError::Unexpected(anyhow::anyhow!("upstream sent {what}"))
}

pub(super) fn timestamp(
    ts: Option<&prost_types::Timestamp>,
    what: &str,
) -> Result<DateTime<Utc>, GatewayError> {
    ts.and_then(marquee_kit::time::from_proto).ok_or_else(|| broken(what))
}

pub(super) fn non_empty(s: &str) -> Option<&str> {
    (!s.is_empty()).then_some(s)
}

/// A calendar day, `YYYY-MM-DD`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Date(pub NaiveDate);

#[Scalar(name = "Date")]
impl ScalarType for Date {
    fn parse(value: Value) -> InputValueResult<Self> {
        match &value {
            Value::String(s) => NaiveDate::parse_from_str(s, "%Y-%m-%d")
                .map(Date)
                .map_err(|_| InputValueError::custom("expected a date as YYYY-MM-DD")),
            _ => Err(InputValueError::expected_type(value)),
        }
    }

    fn to_value(&self) -> Value {
        Value::String(self.0.format("%Y-%m-%d").to_string())
    }
}

/// An amount in integer minor units (cents) of `currency`.
#[derive(Clone, Debug, SimpleObject)]
pub struct Money {
    pub amount: i64,
    pub currency: String,
}

impl Money {
    pub fn from_proto(money: Option<&common::Money>, what: &str) -> Result<Self, GatewayError> {
        let money = money.ok_or_else(|| broken(what))?;
        Ok(Self { amount: money.amount_minor, currency: money.currency.clone() })
    }
}
