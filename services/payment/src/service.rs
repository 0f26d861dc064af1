//! The `PaymentService` gRPC handlers and the one error type they return.

use chrono::Utc;
use marquee_common::{ApiError, ErrorCode};
use marquee_proto::common::v1::Money as PbMoney;
use marquee_proto::payment::v1 as pb;
use tonic::{Request, Response, Status};

use crate::domain::{
    BookingId, Charge, Currency, IdempotencyKey, InvalidInput, Money, PaymentId, PaymentMethod,
};
use crate::processor::{self, Outcome};
use crate::store::{self, Claim, PaymentDoc, PaymentStore};

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
    #[error("payment not found")]
    NotFound,
    #[error(transparent)]
    Unexpected(#[from] anyhow::Error),
}

impl From<PaymentError> for Status {
    fn from(error: PaymentError) -> Self {
        let code = match &error {
            PaymentError::InvalidInput(_) => ErrorCode::BadUserInput,
            PaymentError::IdempotencyKeyReused | PaymentError::InProgress => ErrorCode::Conflict,
            PaymentError::NotFound => ErrorCode::NotFound,
            PaymentError::Unexpected(e) => return marquee_common::error::internal(e),
        };
        ApiError::new(code, error.to_string()).into()
    }
}

fn parse_charge(req: pb::ChargeRequest) -> Result<Charge, InvalidInput> {
    let amount = req.amount.ok_or_else(|| InvalidInput("amount is required".to_owned()))?;
    Ok(Charge {
        booking_id: BookingId::parse(&req.booking_id)?,
        amount: Money::new(amount.amount_minor, Currency::parse(&amount.currency)?)?,
        method: PaymentMethod::parse(&req.payment_method)?,
        idempotency_key: IdempotencyKey::parse(&req.idempotency_key)?,
    })
}

/// Shared state of the handlers.
#[derive(Clone)]
pub struct PaymentServiceImpl {
    store: PaymentStore,
}

impl PaymentServiceImpl {
    pub fn new(store: PaymentStore) -> Self {
        Self { store }
    }

    async fn charge(&self, req: pb::ChargeRequest) -> Result<pb::Payment, PaymentError> {
        let charge = parse_charge(req)?;
        let span = tracing::Span::current();
        span.record("booking.id", charge.booking_id.as_str());

        // Claim the key before touching the card: of any number of concurrent calls,
        // exactly one inserts and charges; the others see its document.
        let id = PaymentId::generate();
        let pending = PaymentDoc::processing(id, &charge, Utc::now());
        if let Claim::Existing(existing) = self.store.claim(&pending).await? {
            span.record("payment.id", existing.id.as_str());
            return replay(&existing, &charge);
        }
        span.record("payment.id", tracing::field::display(id));

        let (status, reason) = match processor::process(charge.method) {
            Outcome::Approved => (store::Status::Succeeded, None),
            Outcome::Declined { reason } => (store::Status::Declined, Some(reason)),
        };
        let finished = self.store.finish(&pending.id, status, reason, Utc::now()).await?;
        tracing::info!(payment.status = ?finished.status, "charge processed");
        Ok(to_proto(&finished))
    }

    async fn get_payment(&self, req: pb::GetPaymentRequest) -> Result<pb::Payment, PaymentError> {
        let id = PaymentId::parse(&req.id)?;
        tracing::Span::current().record("payment.id", tracing::field::display(id));
        let payment = self.store.find(id).await?.ok_or(PaymentError::NotFound)?;
        Ok(to_proto(&payment))
    }
}

/// The answer for a key that was already claimed: never a second charge.
fn replay(existing: &PaymentDoc, charge: &Charge) -> Result<pb::Payment, PaymentError> {
    if !existing.matches(charge) {
        return Err(PaymentError::IdempotencyKeyReused);
    }
    if existing.status == store::Status::Processing {
        return Err(PaymentError::InProgress);
    }
    tracing::info!("idempotent replay of a finished charge");
    Ok(to_proto(existing))
}

fn to_proto(payment: &PaymentDoc) -> pb::Payment {
    let status = match payment.status {
        store::Status::Processing => pb::PaymentStatus::Processing,
        store::Status::Succeeded => pb::PaymentStatus::Succeeded,
        store::Status::Declined => pb::PaymentStatus::Declined,
    };
    pb::Payment {
        id: payment.id.clone(),
        booking_id: payment.booking_id.clone(),
        amount: Some(PbMoney { amount_minor: payment.amount_minor, currency: payment.currency.clone() }),
        payment_method: payment.payment_method.clone(),
        status: status.into(),
        decline_reason: payment.decline_reason.clone().unwrap_or_default(),
        created_at: Some(marquee_common::time::to_proto(payment.created_at())),
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
        Ok(Response::new(PaymentServiceImpl::charge(self, request.into_inner()).await?))
    }

    #[tracing::instrument(name = "payment.get_payment", skip_all, fields(payment.id = tracing::field::Empty))]
    async fn get_payment(
        &self,
        request: Request<pb::GetPaymentRequest>,
    ) -> Result<Response<pb::Payment>, Status> {
        Ok(Response::new(PaymentServiceImpl::get_payment(self, request.into_inner()).await?))
    }
}
