//! The `PaymentService` gRPC handlers and the one error type they return.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use marquee_kit::lease::renewing;
use marquee_kit::time::to_proto as timestamp;
use marquee_kit::{ApiError, ErrorCode};
use marquee_proto::common::v1::Money as PbMoney;
use marquee_proto::payment::v1 as pb;
use tokio::sync::Notify;
use tonic::{Code, Request, Response, Status};
use tracing::Instrument as _;

use crate::domain::{
    BookingId, Charge, IdempotencyKey, InvalidInput, Money, PaymentId, PaymentMethod, Refund, RefundReason,
    optional_user, positive,
};
use crate::events;
use crate::processor::{Outcome, Processor};
use crate::store::{
    self, AttemptDoc, Claim, Finish, Lease, PaymentDoc, PaymentStore, RefundDoc, bson_time, chrono_time,
};

/// How often a charge waiting for an in-flight attempt with its key looks again.
const WAIT_POLL: Duration = Duration::from_millis(20);
/// Each lost race means another refund landed, so this bounds a refund's retries
/// far above any realistic contention on one payment.
const MAX_REFUND_ROUNDS: usize = 256;

/// Everything that can go wrong at this service's boundary. A declined card is not
/// here: it is a normal reply whose payment is DECLINED.
#[derive(Debug, thiserror::Error)]
pub enum PaymentError {
    #[error(transparent)]
    InvalidInput(#[from] InvalidInput),
    #[error("idempotency key reused with different parameters")]
    IdempotencyKeyReused,
    /// Another call with this key has not finished; retrying later returns its result.
    #[error("charge in progress, retry")]
    InProgress,
    /// The processor failed transiently; nothing was charged. The payment is FAILED
    /// and a retry with the same key attempts again.
    #[error("payment processor unavailable ({0}); nothing was charged, retry with the same key")]
    ProcessorUnavailable(String),
    #[error("refund exceeds the refundable amount of {refundable_minor}")]
    OverRefund { refundable_minor: i64 },
    #[error("only a succeeded payment can be refunded")]
    NotRefundable,
    #[error("payment not found")]
    NotFound,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<PaymentError> for Status {
    fn from(error: PaymentError) -> Self {
        let message = error.to_string();
        let api = match error {
            PaymentError::InvalidInput(_) => ApiError::bad_input(message),
            PaymentError::NotFound => ApiError::not_found(message),
            PaymentError::InProgress => ApiError::new(ErrorCode::Conflict, message),
            PaymentError::IdempotencyKeyReused | PaymentError::NotRefundable => {
                ApiError::new(ErrorCode::Conflict, message).with_grpc_code(Code::FailedPrecondition)
            }
            PaymentError::OverRefund { refundable_minor } => ApiError::new(ErrorCode::Conflict, message)
                .with_meta("refundable_minor", refundable_minor.to_string())
                .with_grpc_code(Code::FailedPrecondition),
            // No public code means "try again later"; to a customer the payment did
            // not go through, and `retryable` tells callers a retry is safe.
            PaymentError::ProcessorUnavailable(_) => ApiError::new(ErrorCode::PaymentDeclined, message)
                .with_meta("retryable", "true")
                .with_grpc_code(Code::Unavailable),
            PaymentError::Unexpected(e) => return marquee_mongo::internal(&e),
        };
        api.into()
    }
}

fn money(raw: Option<PbMoney>) -> Result<Money, InvalidInput> {
    positive(Money::from_proto(raw.as_ref(), "amount")?)
}

fn parse_charge(req: pb::ChargeRequest) -> Result<Charge, InvalidInput> {
    Ok(Charge {
        booking_id: BookingId::parse(&req.booking_id)?,
        user_id: optional_user(&req.user_id)?,
        amount: money(req.amount)?,
        method: PaymentMethod::parse(&req.payment_method)?,
        idempotency_key: IdempotencyKey::parse(&req.idempotency_key)?,
    })
}

fn parse_refund(req: pb::RefundRequest) -> Result<Refund, InvalidInput> {
    Ok(Refund {
        payment_id: PaymentId::parse(&req.payment_id)?,
        amount: money(req.amount)?,
        reason: RefundReason::parse(&req.reason)?,
        idempotency_key: IdempotencyKey::parse(&req.idempotency_key)?,
    })
}

/// Tunables of the charge flow.
#[derive(Clone, Debug)]
pub struct ChargePolicy {
    /// How long a repeat waits for an in-flight attempt before answering ABORTED.
    pub wait: Duration,
    /// How long one attempt holds its key without a renewal before a retry may
    /// presume it dead; renewed every third of it while the attempt runs.
    pub lease: chrono::Duration,
}

impl ChargePolicy {
    fn lease_renewal(&self) -> Duration {
        (self.lease / 3).to_std().unwrap_or(Duration::from_secs(1))
    }
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct PaymentServiceImpl {
    store: PaymentStore,
    processor: Processor,
    policy: ChargePolicy,
    /// Wakes the outbox relay as soon as an event is written.
    outbox_written: Arc<Notify>,
}

/// What to do with a key that was already claimed.
enum Existing {
    Answer(PaymentDoc),
    Attempt(PaymentDoc, Lease),
}

impl PaymentServiceImpl {
    pub fn new(
        store: PaymentStore,
        processor: Processor,
        policy: ChargePolicy,
        outbox_written: Arc<Notify>,
    ) -> Self {
        Self { store, processor, policy, outbox_written }
    }

    async fn charge(&self, req: pb::ChargeRequest) -> Result<PaymentDoc, PaymentError> {
        let charge = parse_charge(req)?;
        let span = tracing::Span::current();
        span.record("booking.id", tracing::field::display(charge.booking_id));

        // Claim the key before touching the card: of any number of concurrent calls,
        // exactly one inserts and runs the attempt; the others see its document.
        let now = Utc::now();
        let lease = Lease::new(now, self.policy.lease);
        let pending = PaymentDoc::processing(PaymentId::generate(), &charge, now, &lease);
        let (payment, lease) = match self.store.claim(&pending).await? {
            Claim::Created => (pending, lease),
            Claim::Existing(existing) => {
                if !existing.matches(&charge) {
                    return Err(PaymentError::IdempotencyKeyReused);
                }
                match self.settle_existing(*existing).await? {
                    Existing::Answer(payment) => {
                        span.record("payment.id", payment.id.as_str());
                        tracing::info!("idempotent replay of a finished charge");
                        return Ok(payment);
                    }
                    Existing::Attempt(payment, lease) => (payment, lease),
                }
            }
        };
        span.record("payment.id", payment.id.as_str());

        // The attempt runs on its own task: a caller that gives up (deadline,
        // disconnect) must not leave the key leased with no one finishing it. It takes
        // the call's span along, so its events stay in the caller's trace.
        let this = self.clone();
        let method = charge.method;
        let attempt = async move { this.attempt(&payment, method, &lease).await };
        tokio::spawn(attempt.instrument(tracing::Span::current()))
            .await
            .context("payment attempt panicked")?
    }

    /// Waits briefly for an in-flight attempt; takes over a failed or abandoned one.
    async fn settle_existing(&self, mut existing: PaymentDoc) -> Result<Existing, PaymentError> {
        let deadline = tokio::time::Instant::now() + self.policy.wait;
        loop {
            if existing.status.is_settled() {
                return Ok(Existing::Answer(existing));
            }
            let now = Utc::now();
            if !existing.attempt_in_flight(now) {
                let lease = Lease::new(now, self.policy.lease);
                if let Some(leased) = self.store.take_over(&existing.id, &lease, now).await? {
                    tracing::info!(previous_attempts = leased.attempts.len(), "re-attempting a charge");
                    return Ok(Existing::Attempt(leased, lease));
                }
            }
            // In flight, or another retry leased it first: its result is coming.
            if tokio::time::Instant::now() >= deadline {
                return Err(PaymentError::InProgress);
            }
            tokio::time::sleep(WAIT_POLL).await;
            existing = self.store.find(&existing.id).await?.context("a claimed payment vanished")?;
        }
    }

    async fn attempt(
        &self,
        payment: &PaymentDoc,
        method: PaymentMethod,
        lease: &Lease,
    ) -> Result<PaymentDoc, PaymentError> {
        let started_at = bson_time(Utc::now());
        // The lease is renewed while the processor answers, so a slow attempt keeps its
        // key and only one whose process died is taken over after the lease.
        let processing = self.processor.process(method);
        let outcome = renewing(processing, self.policy.lease_renewal(), || {
            self.store.renew_lease(&payment.id, lease, self.policy.lease)
        })
        .await;
        let now = Utc::now();
        let attempt = |outcome: &str, reason: Option<&str>| AttemptDoc {
            outcome: outcome.to_owned(),
            reason: reason.map(str::to_owned),
            started_at,
            finished_at: bson_time(now),
        };
        let finish = match outcome {
            Outcome::Approved => Finish {
                status: store::Status::Succeeded,
                attempt: attempt("approved", None),
                decline_reason: None,
                event: Some(events::payment_succeeded(payment, now)),
            },
            Outcome::Declined { reason } => Finish {
                status: store::Status::Declined,
                attempt: attempt("declined", Some(reason)),
                decline_reason: Some(reason.to_owned()),
                event: None,
            },
            Outcome::Unavailable { reason } => Finish {
                status: store::Status::Failed,
                attempt: attempt("error", Some(reason)),
                decline_reason: None,
                event: None,
            },
        };
        let emits_event = finish.event.is_some();
        let finished = self.store.finish(&payment.id, lease, finish).await?;
        if emits_event {
            self.outbox_written.notify_one();
        }
        tracing::info!(payment.status = ?finished.status, attempts = finished.attempts.len(), "charge processed");
        match outcome {
            Outcome::Unavailable { reason } => Err(PaymentError::ProcessorUnavailable(reason.to_owned())),
            _ => Ok(finished),
        }
    }

    async fn refund(&self, req: pb::RefundRequest) -> Result<(RefundDoc, PaymentDoc), PaymentError> {
        let refund = parse_refund(req)?;
        let id = refund.payment_id.to_string();
        tracing::Span::current().record("payment.id", id.as_str());
        for _ in 0..MAX_REFUND_ROUNDS {
            let payment = self.store.find(&id).await?.ok_or(PaymentError::NotFound)?;
            if let Some(done) = payment.refund_by_key(refund.idempotency_key.as_str()) {
                if !done.matches(&refund) {
                    return Err(PaymentError::IdempotencyKeyReused);
                }
                tracing::info!(refund.id = %done.refund_id, "idempotent replay of a refund");
                return Ok((done.clone(), payment));
            }
            if !payment.status.is_refundable() {
                return Err(PaymentError::NotRefundable);
            }
            if payment.currency != refund.amount.currency() {
                return Err(InvalidInput("refund currency must be the payment's currency".to_owned()).into());
            }
            let refundable_minor = payment.amount_minor - payment.refunded_minor;
            if refund.amount.amount_minor() > refundable_minor {
                return Err(PaymentError::OverRefund { refundable_minor });
            }
            let now = Utc::now();
            let record = RefundDoc::new(&refund, now);
            let event = events::payment_refunded(&payment, &record, now);
            if let Some(updated) = self.store.add_refund(&payment, &record, &event, now).await? {
                self.outbox_written.notify_one();
                tracing::info!(
                    refund.id = %record.refund_id,
                    amount_minor = record.amount_minor,
                    refunded_minor = updated.refunded_minor,
                    "refund recorded"
                );
                return Ok((record, updated));
            }
            // Another refund changed the total since it was read: decide again.
        }
        Err(anyhow::anyhow!("refund of payment {id} lost {MAX_REFUND_ROUNDS} races in a row").into())
    }

    async fn get_payment(&self, req: pb::GetPaymentRequest) -> Result<PaymentDoc, PaymentError> {
        let id = PaymentId::parse(&req.id)?;
        tracing::Span::current().record("payment.id", tracing::field::display(id));
        self.store.find(&id.to_string()).await?.ok_or(PaymentError::NotFound)
    }

    async fn list_payments(&self, req: pb::ListPaymentsRequest) -> Result<Vec<PaymentDoc>, PaymentError> {
        let booking_id = BookingId::parse(&req.booking_id)?;
        tracing::Span::current().record("booking.id", tracing::field::display(booking_id));
        Ok(self.store.list_for_booking(&booking_id).await?)
    }
}

fn status_proto(status: store::Status) -> pb::PaymentStatus {
    match status {
        store::Status::Processing => pb::PaymentStatus::Processing,
        store::Status::Succeeded => pb::PaymentStatus::Succeeded,
        store::Status::Declined => pb::PaymentStatus::Declined,
        store::Status::Failed => pb::PaymentStatus::Failed,
        store::Status::PartiallyRefunded => pb::PaymentStatus::PartiallyRefunded,
        store::Status::Refunded => pb::PaymentStatus::Refunded,
    }
}

fn refund_proto(refund: &RefundDoc, currency: &str) -> pb::Refund {
    pb::Refund {
        id: refund.refund_id.clone(),
        amount: Some(PbMoney { amount_minor: refund.amount_minor, currency: currency.to_owned() }),
        reason: refund.reason.clone(),
        created_at: Some(timestamp(chrono_time(refund.created_at))),
    }
}

fn to_proto(payment: &PaymentDoc) -> pb::Payment {
    let money = |amount_minor| PbMoney { amount_minor, currency: payment.currency.clone() };
    pb::Payment {
        id: payment.id.clone(),
        booking_id: payment.booking_id.clone(),
        user_id: payment.user_id.clone().unwrap_or_default(),
        amount: Some(money(payment.amount_minor)),
        payment_method: payment.payment_method.clone(),
        status: status_proto(payment.status).into(),
        decline_reason: payment.decline_reason.clone().unwrap_or_default(),
        created_at: Some(timestamp(chrono_time(payment.created_at))),
        refunded: Some(money(payment.refunded_minor)),
        refunds: payment.refunds.iter().map(|r| refund_proto(r, &payment.currency)).collect(),
        attempts: payment
            .attempts
            .iter()
            .map(|a| pb::Attempt {
                outcome: a.outcome.clone(),
                reason: a.reason.clone().unwrap_or_default(),
                started_at: Some(timestamp(chrono_time(a.started_at))),
                finished_at: Some(timestamp(chrono_time(a.finished_at))),
            })
            .collect(),
        history: payment
            .history
            .iter()
            .map(|t| pb::StatusChange {
                status: status_proto(t.status).into(),
                at: Some(timestamp(chrono_time(t.at))),
            })
            .collect(),
    }
}

#[tonic::async_trait]
impl pb::payment_service_server::PaymentService for PaymentServiceImpl {
    #[tracing::instrument(
        name = "payment.charge",
        skip_all,
        fields(booking.id = tracing::field::Empty, payment.id = tracing::field::Empty)
    )]
    async fn charge(&self, request: Request<pb::ChargeRequest>) -> Result<Response<pb::Payment>, Status> {
        let payment = PaymentServiceImpl::charge(self, request.into_inner()).await?;
        Ok(Response::new(to_proto(&payment)))
    }

    #[tracing::instrument(name = "payment.get_payment", skip_all, fields(payment.id = tracing::field::Empty))]
    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        let payment = PaymentServiceImpl::get_payment(self, request.into_inner()).await?;
        Ok(Response::new(to_proto(&payment)))
    }

    #[tracing::instrument(name = "payment.refund", skip_all, fields(payment.id = tracing::field::Empty))]
    async fn refund(
        &self,
        request: Request<pb::RefundRequest>,
    ) -> Result<Response<pb::RefundResponse>, Status> {
        let (refund, payment) = PaymentServiceImpl::refund(self, request.into_inner()).await?;
        Ok(Response::new(pb::RefundResponse {
            refund: Some(refund_proto(&refund, &payment.currency)),
            payment: Some(to_proto(&payment)),
        }))
    }

    #[tracing::instrument(name = "payment.list_payments", skip_all, fields(booking.id = tracing::field::Empty))]
    async fn list_payments(
        &self,
        request: Request<pb::ListPaymentsRequest>,
    ) -> Result<Response<pb::ListPaymentsResponse>, Status> {
        let payments = PaymentServiceImpl::list_payments(self, request.into_inner()).await?;
        Ok(Response::new(pb::ListPaymentsResponse { payments: payments.iter().map(to_proto).collect() }))
    }
}
