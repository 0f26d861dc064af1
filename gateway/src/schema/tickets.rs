//! Tickets: a confirmed booking's tickets (code and QR code), the public keys that
//! verify codes, revocations a scanner syncs, and check-in at the door (STAFF or
//! ADMIN). Everything here is answered by the ticket service; the QR code is drawn
//! here, only when selected.

use async_graphql::{Context, Enum, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use marquee_auth::Role;
use marquee_proto::ticket::v1 as ticket;

use super::values::{broken, timestamp};
use super::{Identity, Viewer, scope};
use crate::domain::{BookingId, ShowtimeId, checked, trusted};
use crate::error::GatewayError;

/// UNAUTHENTICATED for anonymous callers, FORBIDDEN unless the token says STAFF or
/// ADMIN (admins may do everything staff may).
pub(super) fn require_staff(viewer: &Viewer) -> Result<&Identity, GatewayError> {
    let identity = viewer.require()?;
    if !matches!(identity.role, Role::Staff | Role::Admin) {
        return Err(GatewayError::Forbidden("this operation needs the STAFF role"));
    }
    Ok(identity)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
pub enum TicketStatus {
    Valid,
    CheckedIn,
    Revoked,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Enum)]
pub enum CheckInOutcome {
    Admitted,
    AlreadyCheckedIn,
    Revoked,
    /// A bad signature, an unknown key, or a malformed code.
    Invalid,
    WrongShowtime,
    NotYetValid,
    Expired,
}

impl CheckInOutcome {
    fn from_proto(raw: i32) -> Result<Self, GatewayError> {
        use ticket::CheckInOutcome as Proto;
        Ok(match Proto::try_from(raw) {
            Ok(Proto::Admitted) => Self::Admitted,
            Ok(Proto::AlreadyCheckedIn) => Self::AlreadyCheckedIn,
            Ok(Proto::Revoked) => Self::Revoked,
            Ok(Proto::Invalid) => Self::Invalid,
            Ok(Proto::WrongShowtime) => Self::WrongShowtime,
            Ok(Proto::NotYetValid) => Self::NotYetValid,
            Ok(Proto::Expired) => Self::Expired,
            Ok(Proto::Unspecified) | Err(_) => return Err(broken("a check-in without an outcome")),
        })
    }
}

pub struct Ticket(pub ticket::Ticket);

#[Object]
impl Ticket {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }

    async fn seat_id(&self) -> ID {
        ID(self.0.seat_id.clone())
    }

    async fn status(&self) -> async_graphql::Result<TicketStatus> {
        use ticket::TicketStatus as Proto;
        Ok(match Proto::try_from(self.0.status) {
            Ok(Proto::Valid) => TicketStatus::Valid,
            Ok(Proto::CheckedIn) => TicketStatus::CheckedIn,
            Ok(Proto::Revoked) => TicketStatus::Revoked,
            Ok(Proto::Unspecified) | Err(_) => return Err(broken("a ticket without a status").into()),
        })
    }

    async fn checked_in_at(&self) -> Option<DateTime<Utc>> {
        self.0.checked_in_at.as_ref().and_then(marquee_kit::time::from_proto)
    }

    /// The signed code (README "Ticket codes"), base64url.
    async fn code(&self) -> &str {
        &self.0.code
    }

    /// The code as a QR code, an SVG document.
    async fn qr_svg(&self) -> async_graphql::Result<String> {
        Ok(qr_svg(&self.0.code)?)
    }

    async fn valid_from(&self) -> async_graphql::Result<DateTime<Utc>> {
        Ok(timestamp(self.0.valid_from.as_ref(), "a ticket without valid_from")?)
    }

    async fn valid_until(&self) -> async_graphql::Result<DateTime<Utc>> {
        Ok(timestamp(self.0.valid_until.as_ref(), "a ticket without valid_until")?)
    }
}

/// Medium error correction: a screen's glare or a crack still scans.
pub fn qr_svg(code: &str) -> Result<String, GatewayError> {
    use qrcode::render::svg;
    let qr = qrcode::QrCode::with_error_correction_level(code.as_bytes(), qrcode::EcLevel::M)
        .map_err(|e| GatewayError::Unexpected(anyhow::anyhow!("cannot draw a QR code: {e}")))?;
    Ok(qr.render::<svg::Color<'_>>().min_dimensions(256, 256).quiet_zone(true).build())
}

/// A public key that verifies ticket codes.
#[derive(Clone, Debug, SimpleObject)]
pub struct TicketKey {
    pub id: ID,
    /// "Ed25519".
    pub algorithm: String,
    /// The raw 32-byte public key, base64url without padding.
    pub public_key: String,
    pub valid_from: DateTime<Utc>,
    pub valid_until: DateTime<Utc>,
}

impl TicketKey {
    pub fn from_proto(key: ticket::TicketKey) -> Result<Self, GatewayError> {
        use base64::Engine as _;
        Ok(Self {
            public_key: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&key.public_key),
            valid_from: timestamp(key.valid_from.as_ref(), "a key without valid_from")?,
            valid_until: timestamp(key.valid_until.as_ref(), "a key without valid_until")?,
            id: ID(key.id),
            algorithm: key.algorithm,
        })
    }
}

#[derive(Clone, Debug, SimpleObject)]
pub struct RevokedTicket {
    pub ticket_id: ID,
    pub booking_id: ID,
    pub seat_id: ID,
    pub revoked_at: Option<DateTime<Utc>>,
    pub cursor: String,
}

/// Revocations of one showtime after a cursor; pass `cursor` as `after` next time.
#[derive(Clone, Debug, SimpleObject)]
pub struct RevokedTicketPage {
    pub tickets: Vec<RevokedTicket>,
    pub cursor: String,
    pub has_more: bool,
}

/// One scan at the door.
#[derive(Clone, Debug, InputObject)]
pub struct CheckInInput {
    pub code: String,
    pub showtime_id: ID,
    /// Fixed by the device per scan (8 to 128 characters): a repeated upload of the
    /// same scan answers the same.
    pub nonce: String,
    /// When the scan happened (offline devices upload later); default now.
    pub scanned_at: Option<DateTime<Utc>>,
}

pub struct CheckInResult(ticket::CheckInResponse);

#[Object]
impl CheckInResult {
    async fn outcome(&self) -> async_graphql::Result<CheckInOutcome> {
        Ok(CheckInOutcome::from_proto(self.0.outcome)?)
    }

    /// The ticket the code names, when it is one of ours.
    async fn ticket(&self) -> Option<Ticket> {
        self.0.ticket.clone().map(Ticket)
    }

    /// ADMITTED: this scan's time; ALREADY_CHECKED_IN: the first admission's.
    async fn checked_in_at(&self) -> Option<DateTime<Utc>> {
        self.0.checked_in_at.as_ref().and_then(marquee_kit::time::from_proto)
    }
}

/// `Booking.tickets`: none until the booking is confirmed and its tickets issued.
/// Batched per request (`RequestCache::tickets`): a page of bookings costs one
/// `ListTickets`, not one per booking.
pub(super) async fn booking_tickets(
    ctx: &Context<'_>,
    booking_id: &str,
) -> async_graphql::Result<Vec<Ticket>> {
    let scope = scope(ctx)?;
    let booking: BookingId = trusted(booking_id)?;
    Ok(scope.cache.tickets(&scope.upstreams, booking).await?.into_iter().map(Ticket).collect())
}

/// `Query.ticketKeys`: public.
pub(super) async fn ticket_keys(ctx: &Context<'_>) -> async_graphql::Result<Vec<TicketKey>> {
    let scope = scope(ctx)?;
    let keys = scope.upstreams.ticket_keys().await?;
    Ok(keys.into_iter().map(TicketKey::from_proto).collect::<Result<_, _>>()?)
}

/// `Query.revokedTickets`: staff only.
pub(super) async fn revoked_tickets(
    ctx: &Context<'_>,
    showtime_id: ID,
    after: Option<String>,
) -> async_graphql::Result<RevokedTicketPage> {
    let scope = scope(ctx)?;
    require_staff(scope.viewer)?;
    let showtime = checked(ShowtimeId::parse(&showtime_id))?;
    let page = scope.upstreams.revoked_tickets(&showtime, after.unwrap_or_default()).await?;
    Ok(RevokedTicketPage {
        tickets: page
            .tickets
            .into_iter()
            .map(|t| RevokedTicket {
                ticket_id: ID(t.ticket_id),
                booking_id: ID(t.booking_id),
                seat_id: ID(t.seat_id),
                revoked_at: t.revoked_at.as_ref().and_then(marquee_kit::time::from_proto),
                cursor: t.cursor,
            })
            .collect(),
        cursor: page.cursor,
        has_more: page.has_more,
    })
}

/// `Mutation.checkIn`: staff only; an invalid code is an outcome, not an error.
pub(super) async fn check_in(ctx: &Context<'_>, input: CheckInInput) -> async_graphql::Result<CheckInResult> {
    let scope = scope(ctx)?;
    let staff = require_staff(scope.viewer)?;
    let showtime = checked(ShowtimeId::parse(&input.showtime_id))?;
    let request = ticket::CheckInRequest {
        code: input.code,
        showtime_id: showtime.to_string(),
        nonce: input.nonce,
        scanned_at: input.scanned_at.map(marquee_kit::time::to_proto),
        staff_id: staff.user_id.to_string(),
    };
    Ok(CheckInResult(scope.upstreams.check_in(request).await?))
}

#[cfg(test)]
mod tests {
    use marquee_kit::Config as _;

    use super::*;

    /// The names of issue 18, which scanners and apps rely on.
    #[tokio::test]
    async fn the_sdl_keeps_the_ticket_contract() {
        let settings = crate::Settings::for_tests().unwrap();
        let sdl = super::super::build(crate::upstream::Upstreams::connect(&settings).unwrap()).sdl();
        for line in [
            "tickets: [Ticket!]!",
            "ticketKeys: [TicketKey!]!",
            "revokedTickets(showtimeId: ID!, after: String): RevokedTicketPage!",
            "checkIn(input: CheckInInput!): CheckInResult!",
            "scannedAt: DateTime",
            "qrSvg: String!",
            "checkedInAt: DateTime",
            "publicKey: String!",
            "ALREADY_CHECKED_IN",
            "NOT_YET_VALID",
            "WRONG_SHOWTIME",
        ] {
            assert!(sdl.contains(line), "missing `{line}` in\n{sdl}");
        }
    }

    /// A 171-character code (three-character seat, two-character key id) fits a QR
    /// code of version 10 or below (57×57 modules), which a phone reads off a screen.
    #[test]
    fn a_ticket_code_makes_a_small_qr_code() {
        // base64url has lower case letters, which only the byte mode encodes.
        let code: String = "aZ-_09xQ".chars().cycle().take(171).collect();
        let qr = qrcode::QrCode::with_error_correction_level(code.as_bytes(), qrcode::EcLevel::M).unwrap();
        assert!(matches!(qr.version(), qrcode::Version::Normal(v) if v <= 10), "{:?}", qr.version());
        let svg = qr_svg(&code).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"), "{svg}");
    }
}
