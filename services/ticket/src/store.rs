//! MongoDB (`<prefix>_ticket`):
//!
//! - `tickets`: one per seat of a confirmed booking, unique on (booking, seat), so
//!   issuing twice (a redelivered event) inserts nothing new. Check-in is one
//!   conditional update VALID → CHECKED_IN, so of concurrent scans exactly one wins.
//! - `check_ins`: one record per scan nonce, with what it was answered.
//! - `revocations`: per showtime, the revoked tickets in order with a sequence
//!   number, appended under an optimistic check on the sequence, so a reader paging
//!   by sequence never skips one written late.
//! - `cancelled_bookings`: bookings cancelled, so a cancellation handled before its
//!   confirmation still revokes the tickets issued after it.
//! - `reconciliation`: per event log read (`reconcile.rs`), where reading stopped.

use std::collections::{HashMap, HashSet};

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use marquee_messaging::outbox::Position;
use marquee_mongo::{Inserted, insert_outcomes};
use mongodb::bson::{self, Bson, doc};
use mongodb::options::IndexOptions;
use mongodb::{Collection, Database, IndexModel};
use serde::{Deserialize, Serialize};

use crate::domain::{Outcome, TicketStatus};

pub fn bson_time(at: DateTime<Utc>) -> bson::DateTime {
    bson::DateTime::from_millis(at.timestamp_millis())
}

pub fn chrono_time(at: bson::DateTime) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(at.timestamp_millis()).unwrap_or_default()
}

fn status_bson(status: TicketStatus) -> anyhow::Result<Bson> {
    bson::to_bson(&status).context("cannot encode a ticket status")
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TicketDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub booking_id: String,
    pub showtime_id: String,
    pub seat_id: String,
    pub status: TicketStatus,
    pub code: String,
    pub key_id: String,
    pub valid_from: bson::DateTime,
    pub valid_until: bson::DateTime,
    pub issued_at: bson::DateTime,
    #[serde(default)]
    pub checked_in_at: Option<bson::DateTime>,
    /// The nonce of the scan that admitted it: a repeat of that scan is ADMITTED again.
    #[serde(default)]
    pub checked_in_nonce: Option<String>,
    #[serde(default)]
    pub revoked_at: Option<bson::DateTime>,
}

/// A scan, as answered.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckInDoc {
    /// The nonce.
    #[serde(rename = "_id")]
    pub nonce: String,
    pub code: String,
    pub showtime_id: String,
    pub outcome: Outcome,
    pub ticket_id: Option<String>,
    pub checked_in_at: Option<bson::DateTime>,
    pub scanned_at: bson::DateTime,
    pub staff_id: String,
    pub recorded_at: bson::DateTime,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RevocationEntry {
    pub seq: i64,
    pub ticket_id: String,
    pub booking_id: String,
    pub seat_id: String,
    pub revoked_at: bson::DateTime,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct RevocationLog {
    /// The showtime.
    #[serde(rename = "_id")]
    showtime_id: String,
    seq: i64,
    entries: Vec<RevocationEntry>,
}

/// A scan that asks to admit its ticket.
#[derive(Clone, Debug)]
pub struct Admission {
    pub ticket_id: String,
    pub nonce: String,
    pub at: DateTime<Utc>,
}

#[derive(Clone)]
pub struct TicketStore {
    db: Database,
    tickets: Collection<TicketDoc>,
    check_ins: Collection<CheckInDoc>,
    revocations: Collection<RevocationLog>,
    cancelled: Collection<bson::Document>,
    reconciliation: Collection<bson::Document>,
}

/// Where reading an event log stopped (`reconciliation`).
#[derive(Debug, Deserialize)]
struct ReconciledDoc {
    sent_at: bson::DateTime,
    event_id: String,
}

impl TicketStore {
    /// Opens the collections and ensures their indexes exist (idempotent).
    pub async fn init(db: &Database) -> anyhow::Result<Self> {
        let tickets = db.collection::<TicketDoc>("tickets");
        tickets
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "booking_id": 1, "seat_id": 1 })
                    .options(
                        IndexOptions::builder()
                            .unique(true)
                            .name("tickets_booking_seat_unique".to_owned())
                            .build(),
                    )
                    .build(),
            )
            .await
            .context("cannot create the tickets index")?;
        Ok(Self {
            db: db.clone(),
            tickets,
            check_ins: db.collection("check_ins"),
            revocations: db.collection("revocations"),
            cancelled: db.collection("cancelled_bookings"),
            reconciliation: db.collection("reconciliation"),
        })
    }

    /// Inserts the tickets of several bookings with one command, each ticket unless it
    /// exists already (by booking and seat). Answers per booking, in order, how many of
    /// its tickets were new (the others an earlier call issued).
    pub async fn insert_bookings(
        &self,
        bookings: &[Vec<TicketDoc>],
    ) -> Vec<Result<usize, mongodb::error::Error>> {
        let all: Vec<&TicketDoc> = bookings.iter().flatten().collect();
        let count = all.len();
        let outcomes = if all.is_empty() {
            Vec::new()
        } else {
            insert_outcomes(self.tickets.insert_many(all).ordered(false).await, count)
        };
        let mut start = 0;
        bookings
            .iter()
            .map(|tickets| {
                let mine = &outcomes[start..start + tickets.len()];
                start += tickets.len();
                mine.iter().try_fold(0, |new, outcome| match outcome {
                    Ok(Inserted::New) => Ok(new + 1),
                    Ok(Inserted::Duplicate) => Ok(new),
                    Err(error) => Err(error.clone()),
                })
            })
            .collect()
    }

    /// Per booking, in order, whether it was cancelled: one command for all of them.
    pub async fn cancelled_among(&self, booking_ids: &[String]) -> Vec<Result<bool, mongodb::error::Error>> {
        let found = self.cancelled_of(booking_ids).await;
        booking_ids
            .iter()
            .map(|id| match &found {
                Ok(found) => Ok(found.contains(id)),
                Err(error) => Err(error.clone()),
            })
            .collect()
    }

    /// Those of `booking_ids` recorded as cancelled: one command.
    pub async fn cancelled_of(
        &self,
        booking_ids: &[String],
    ) -> Result<HashSet<String>, mongodb::error::Error> {
        let docs: Vec<bson::Document> =
            self.cancelled.find(doc! { "_id": { "$in": booking_ids } }).await?.try_collect().await?;
        Ok(docs.iter().filter_map(|d| d.get_str("_id").ok().map(str::to_owned)).collect())
    }

    /// Those of `booking_ids` with at least one ticket: one command, on the (booking,
    /// seat) index, reading nothing but the booking ids.
    pub async fn with_tickets(&self, booking_ids: &[String]) -> anyhow::Result<HashSet<String>> {
        let docs: Vec<bson::Document> = self
            .tickets
            .clone_with_type::<bson::Document>()
            .find(doc! { "booking_id": { "$in": booking_ids } })
            .projection(doc! { "_id": 0, "booking_id": 1 })
            .await
            .context("cannot look up issued bookings")?
            .try_collect()
            .await
            .context("cannot read issued bookings")?;
        Ok(docs.iter().filter_map(|d| d.get_str("booking_id").ok().map(str::to_owned)).collect())
    }

    /// Where reading `log` stopped, if it was ever read.
    pub async fn reconciled_to(&self, log: &str) -> anyhow::Result<Option<Position>> {
        let found = self
            .reconciliation
            .clone_with_type::<ReconciledDoc>()
            .find_one(doc! { "_id": log })
            .await
            .with_context(|| format!("cannot read where reconciling {log}'s events stopped"))?;
        Ok(found.map(|doc| Position { sent_at: chrono_time(doc.sent_at), event_id: doc.event_id }))
    }

    /// Records that reading `log` got to `position`, unless a later position is
    /// recorded already (another replica read further).
    pub async fn save_reconciled_to(&self, log: &str, position: &Position) -> anyhow::Result<()> {
        let at = bson_time(position.sent_at);
        let earlier = doc! {
            "_id": log,
            "$or": [
                { "sent_at": { "$lt": at } },
                { "sent_at": at, "event_id": { "$lt": &position.event_id } },
            ],
        };
        let saved = self
            .reconciliation
            .update_one(earlier, doc! { "$set": { "sent_at": at, "event_id": &position.event_id } })
            .upsert(true)
            .await;
        match saved {
            // The document exists with a position not earlier than this one.
            Err(error) if marquee_mongo::is_duplicate_key(&error) => Ok(()),
            saved => saved
                .map(drop)
                .with_context(|| format!("cannot record where reconciling {log}'s events stopped")),
        }
    }

    /// Per booking, in order, its tickets: one command for all of them.
    pub async fn tickets_among(
        &self,
        booking_ids: &[String],
    ) -> Vec<Result<Vec<TicketDoc>, mongodb::error::Error>> {
        let found: Result<Vec<TicketDoc>, mongodb::error::Error> = async {
            self.tickets.find(doc! { "booking_id": { "$in": booking_ids } }).await?.try_collect().await
        }
        .await;
        match found {
            Ok(found) => {
                let mut by_booking: HashMap<String, Vec<TicketDoc>> = HashMap::new();
                for ticket in found {
                    by_booking.entry(ticket.booking_id.clone()).or_default().push(ticket);
                }
                // A booking may be asked for twice in one batch (a redelivered event).
                booking_ids.iter().map(|id| Ok(by_booking.get(id).cloned().unwrap_or_default())).collect()
            }
            Err(error) => booking_ids.iter().map(|_| Err(error.clone())).collect(),
        }
    }

    /// The tickets of these bookings, by booking then seat.
    pub async fn by_bookings(&self, booking_ids: &[String]) -> anyhow::Result<Vec<TicketDoc>> {
        self.tickets
            .find(doc! { "booking_id": { "$in": booking_ids } })
            .sort(doc! { "booking_id": 1, "seat_id": 1 })
            .await
            .context("cannot list tickets")?
            .try_collect()
            .await
            .context("cannot read tickets")
    }

    pub async fn ticket(&self, id: &str) -> anyhow::Result<Option<TicketDoc>> {
        self.tickets.find_one(doc! { "_id": id }).await.context("cannot read a ticket")
    }

    /// VALID → CHECKED_IN for the scans of a batch ([`marquee_kit::batch::Batcher`]): one
    /// `update` command holding a conditional statement per scan (each atomic on its
    /// ticket, so of scans of one ticket exactly one matches, in or across batches),
    /// then one `find` of the tickets. Per scan, its ticket as it is now (`None`: no
    /// such ticket); the scan admitted it when it is CHECKED_IN with the scan's nonce.
    pub async fn admit_many(
        &self,
        scans: Vec<Admission>,
    ) -> Vec<Result<Option<TicketDoc>, mongodb::error::Error>> {
        match self.try_admit_many(&scans).await {
            Ok(found) => scans.iter().map(|scan| Ok(found.get(&scan.ticket_id).cloned())).collect(),
            Err(error) => vec![Err(error); scans.len()],
        }
    }

    async fn try_admit_many(
        &self,
        scans: &[Admission],
    ) -> Result<HashMap<String, TicketDoc>, mongodb::error::Error> {
        let valid = bson::to_bson(&TicketStatus::Valid)?;
        let checked_in = bson::to_bson(&TicketStatus::CheckedIn)?;
        let statements: Vec<bson::Document> = scans
            .iter()
            .map(|scan| {
                doc! {
                    "q": { "_id": &scan.ticket_id, "status": valid.clone() },
                    "u": { "$set": {
                        "status": checked_in.clone(),
                        "checked_in_at": bson_time(scan.at),
                        "checked_in_nonce": &scan.nonce,
                    } },
                }
            })
            .collect();
        let mut command = doc! { "update": self.tickets.name(), "updates": statements, "ordered": false };
        // A raw command carries no write concern of its own: the collection's, as every
        // other write of this store.
        if let Some(concern) = self.tickets.write_concern() {
            command.insert("writeConcern", bson::to_bson(concern)?);
        }
        let reply = self.db.run_command(command).await?;
        for field in ["writeErrors", "writeConcernError"] {
            if let Some(failure) = reply.get(field) {
                return Err(mongodb::error::Error::custom(format!(
                    "the admissions' update failed: {failure}"
                )));
            }
        }
        let ids: Vec<&str> = scans.iter().map(|scan| scan.ticket_id.as_str()).collect();
        let tickets: Vec<TicketDoc> =
            self.tickets.find(doc! { "_id": { "$in": ids } }).await?.try_collect().await?;
        Ok(tickets.into_iter().map(|ticket| (ticket.id.clone(), ticket)).collect())
    }

    /// The recorded scans of these nonces, one answer per nonce in order (for
    /// [`marquee_kit::batch::Batcher`]: one command for a batch of scans).
    pub async fn check_ins(
        &self,
        nonces: Vec<String>,
    ) -> Vec<Result<Option<CheckInDoc>, mongodb::error::Error>> {
        let found = match self.find_check_ins(&nonces).await {
            Ok(found) => found,
            Err(error) => return vec![Err(error); nonces.len()],
        };
        nonces.iter().map(|nonce| Ok(found.get(nonce).cloned())).collect()
    }

    async fn find_check_ins(
        &self,
        nonces: &[String],
    ) -> Result<HashMap<String, CheckInDoc>, mongodb::error::Error> {
        let cursor = self.check_ins.find(doc! { "_id": { "$in": nonces } }).await?;
        let records: Vec<CheckInDoc> = cursor.try_collect().await?;
        Ok(records.into_iter().map(|record| (record.nonce.clone(), record)).collect())
    }

    /// Records scans' answers in one unordered insert, one answer per record in order:
    /// `None` when recorded, or the record already there for its nonce (a repeated
    /// upload of the same scan, possibly in this very batch).
    pub async fn record_check_ins(
        &self,
        records: Vec<CheckInDoc>,
    ) -> Vec<Result<Option<CheckInDoc>, mongodb::error::Error>> {
        let outcomes =
            insert_outcomes(self.check_ins.insert_many(&records).ordered(false).await, records.len());
        let mut answers = Vec::with_capacity(records.len());
        let mut repeated = Vec::new();
        for (index, outcome) in outcomes.into_iter().enumerate() {
            answers.push(match outcome {
                Ok(Inserted::New) => Ok(None),
                Ok(Inserted::Duplicate) => {
                    repeated.push(index);
                    Ok(None)
                }
                Err(error) => Err(error),
            });
        }
        if repeated.is_empty() {
            return answers;
        }
        let nonces: Vec<String> = repeated.iter().map(|&i| records[i].nonce.clone()).collect();
        let found = self.find_check_ins(&nonces).await;
        for index in repeated {
            answers[index] = match &found {
                // Missing would mean the record that collided is gone; nothing deletes one.
                Ok(found) => Ok(found.get(&records[index].nonce).cloned()),
                Err(error) => Err(error.clone()),
            };
        }
        answers
    }

    /// Notes that a booking was cancelled (idempotent).
    pub async fn mark_cancelled(&self, booking_id: &str, now: DateTime<Utc>) -> anyhow::Result<()> {
        self.cancelled
            .update_one(doc! { "_id": booking_id }, doc! { "$setOnInsert": { "at": bson_time(now) } })
            .upsert(true)
            .await
            .context("cannot record a cancelled booking")?;
        Ok(())
    }

    /// Revokes every ticket of a booking and appends them to their showtime's
    /// revocation log (idempotent: a ticket is logged once).
    pub async fn revoke_booking(&self, booking_id: &str, now: DateTime<Utc>) -> anyhow::Result<usize> {
        let revoked = status_bson(TicketStatus::Revoked)?;
        self.tickets
            .update_many(
                doc! { "booking_id": booking_id, "status": { "$ne": &revoked } },
                doc! { "$set": { "status": &revoked, "revoked_at": bson_time(now) } },
            )
            .await
            .context("cannot revoke tickets")?;
        let tickets = self.by_bookings(&[booking_id.to_owned()]).await?;
        let Some(showtime_id) = tickets.first().map(|t| t.showtime_id.clone()) else {
            return Ok(0);
        };
        self.log_revocations(&showtime_id, &tickets, now).await?;
        Ok(tickets.len())
    }

    /// Appends the tickets not yet in the showtime's log, numbered after its last
    /// entry. The append is conditional on the sequence read, so concurrent appends
    /// take turns and the sequence has neither gaps nor late arrivals.
    async fn log_revocations(
        &self,
        showtime_id: &str,
        tickets: &[TicketDoc],
        now: DateTime<Utc>,
    ) -> anyhow::Result<()> {
        loop {
            let log = self
                .revocations
                .find_one(doc! { "_id": showtime_id })
                .await
                .context("cannot read the revocation log")?;
            let exists = log.is_some();
            let log = log.unwrap_or_else(|| RevocationLog {
                showtime_id: showtime_id.to_owned(),
                ..Default::default()
            });
            let mut seq = log.seq;
            let fresh: Vec<RevocationEntry> = tickets
                .iter()
                .filter(|t| !log.entries.iter().any(|e| e.ticket_id == t.id))
                .map(|t| {
                    seq += 1;
                    RevocationEntry {
                        seq,
                        ticket_id: t.id.clone(),
                        booking_id: t.booking_id.clone(),
                        seat_id: t.seat_id.clone(),
                        revoked_at: t.revoked_at.unwrap_or_else(|| bson_time(now)),
                    }
                })
                .collect();
            if fresh.is_empty() {
                return Ok(());
            }
            let written = if exists {
                let entries = bson::to_bson(&fresh).context("cannot encode revocations")?;
                let result = self
                    .revocations
                    .update_one(
                        doc! { "_id": showtime_id, "seq": log.seq },
                        doc! { "$set": { "seq": seq }, "$push": { "entries": { "$each": entries } } },
                    )
                    .await
                    .context("cannot append to the revocation log")?;
                result.modified_count == 1
            } else {
                let first = RevocationLog { showtime_id: showtime_id.to_owned(), seq, entries: fresh };
                match self.revocations.insert_one(&first).await {
                    Ok(_) => true,
                    Err(error) if marquee_mongo::is_duplicate_key(&error) => false,
                    Err(error) => return Err(error).context("cannot start the revocation log"),
                }
            };
            if written {
                return Ok(());
            }
        }
    }

    /// Revocations of a showtime after sequence `after`, oldest first, at most `limit`,
    /// and whether more follow.
    pub async fn revoked_after(
        &self,
        showtime_id: &str,
        after: i64,
        limit: usize,
    ) -> anyhow::Result<(Vec<RevocationEntry>, bool)> {
        let log = self
            .revocations
            .find_one(doc! { "_id": showtime_id })
            .await
            .context("cannot read the revocation log")?;
        let mut entries: Vec<RevocationEntry> =
            log.map(|log| log.entries).unwrap_or_default().into_iter().filter(|e| e.seq > after).collect();
        let more = entries.len() > limit;
        entries.truncate(limit);
        Ok((entries, more))
    }
}
