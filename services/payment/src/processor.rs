//! The simulated card processor. The outcome depends only on the test card, so the
//! service's idempotency logic is exercised against a deterministic counterpart.

use crate::domain::PaymentMethod;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    Declined { reason: &'static str },
}

pub fn process(method: PaymentMethod) -> Outcome {
    match method {
        PaymentMethod::CardOk => Outcome::Approved,
        PaymentMethod::CardDeclined => Outcome::Declined { reason: "card_declined" },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cards_decide_the_outcome() {
        assert_eq!(process(PaymentMethod::CardOk), Outcome::Approved);
        assert_eq!(process(PaymentMethod::CardDeclined), Outcome::Declined { reason: "card_declined" });
    }
}
