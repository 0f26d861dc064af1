//! The simulated card processor. The outcome depends only on the test card, so the
//! service's idempotency and retry logic is exercised against a deterministic
//! counterpart.

use std::time::Duration;

use crate::domain::PaymentMethod;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Approved,
    Declined {
        reason: &'static str,
    },
    /// A transient failure: nothing was charged, the same charge may be retried.
    Unavailable {
        reason: &'static str,
    },
}

#[derive(Debug, Clone)]
pub struct Processor {
    /// How long `pm_card_slow` takes (timeout tests).
    slow_delay: Duration,
}

impl Processor {
    pub fn new(slow_delay: Duration) -> Self {
        Self { slow_delay }
    }

    pub async fn process(&self, method: PaymentMethod) -> Outcome {
        if method == PaymentMethod::CardSlow {
            tokio::time::sleep(self.slow_delay).await;
        }
        decide(method)
    }
}

fn decide(method: PaymentMethod) -> Outcome {
    match method {
        PaymentMethod::CardOk | PaymentMethod::CardSlow => Outcome::Approved,
        PaymentMethod::CardDeclined => Outcome::Declined { reason: "card_declined" },
        PaymentMethod::CardInsufficientFunds => Outcome::Declined { reason: "insufficient_funds" },
        PaymentMethod::CardError => Outcome::Unavailable { reason: "processor_error" },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_cards_decide_the_outcome() {
        assert_eq!(decide(PaymentMethod::CardOk), Outcome::Approved);
        assert_eq!(decide(PaymentMethod::CardSlow), Outcome::Approved);
        assert_eq!(decide(PaymentMethod::CardDeclined), Outcome::Declined { reason: "card_declined" });
        assert_eq!(
            decide(PaymentMethod::CardInsufficientFunds),
            Outcome::Declined { reason: "insufficient_funds" }
        );
        assert!(matches!(decide(PaymentMethod::CardError), Outcome::Unavailable { .. }));
    }

    #[tokio::test(start_paused = true)]
    async fn the_slow_card_answers_after_the_configured_delay() {
        let processor = Processor::new(Duration::from_secs(3));
        let started = tokio::time::Instant::now();
        assert_eq!(processor.process(PaymentMethod::CardSlow).await, Outcome::Approved);
        assert_eq!(started.elapsed(), Duration::from_secs(3));
        let started = tokio::time::Instant::now();
        processor.process(PaymentMethod::CardOk).await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
