//! The commands of concurrent holds and pays sent together (`marquee_kit::batch`): in a
//! flash sale most holds are refused, and each one still looks up its idempotency key,
//! claims a hold slot and gives it back. Batched, a burst of them costs a few commands
//! instead of several each, and a lone call still goes out at once.

use std::collections::HashMap;

use futures::TryStreamExt;
use marquee_kit::batch::Batcher;
use marquee_mongo::{Inserted, insert_outcomes};
use mongodb::Collection;
use mongodb::bson::{Document, doc};
use mongodb::error::Error;

use super::document::BookingDoc;

/// The collection of hold slots.
pub(super) const SLOTS: &str = "hold_slots";

/// A user's id and an idempotency key, as stored.
pub(super) type Key = (String, String);

#[derive(Clone)]
pub(super) struct Batches {
    /// Bookings by id.
    pub by_id: Batcher<String, Option<BookingDoc>, Error>,
    /// Bookings by user and idempotency key.
    pub by_key: Batcher<Key, Option<BookingDoc>, Error>,
    /// New booking documents.
    pub inserts: Batcher<Document, Inserted, Error>,
    /// New hold slot claims.
    pub slot_claims: Batcher<Document, Inserted, Error>,
    /// Slots given back: (slot, booking id), each deleted only while that booking holds it.
    pub slot_frees: Batcher<(String, String), (), Error>,
}

impl Batches {
    pub fn spawn(bookings: &Collection<BookingDoc>, slots: &Collection<Document>) -> Self {
        Self {
            by_id: Batcher::spawn("look up bookings", {
                let bookings = bookings.clone();
                move |ids: Vec<String>| {
                    let bookings = bookings.clone();
                    async move { marquee_mongo::find_each(&bookings, &ids, BookingDoc::id).await }
                }
            }),
            by_key: Batcher::spawn("look up bookings by idempotency key", {
                let bookings = bookings.clone();
                move |keys: Vec<Key>| find_by_keys(bookings.clone(), keys)
            }),
            inserts: Batcher::spawn("insert bookings", {
                let bookings = bookings.clone_with_type::<Document>();
                move |docs: Vec<Document>| insert(bookings.clone(), docs)
            }),
            slot_claims: Batcher::spawn("claim hold slots", {
                let slots = slots.clone();
                move |docs: Vec<Document>| insert(slots.clone(), docs)
            }),
            slot_frees: Batcher::spawn("free hold slots", {
                let slots = slots.clone();
                move |frees: Vec<(String, String)>| free(slots.clone(), frees)
            }),
        }
    }
}

async fn find_by_keys(
    bookings: Collection<BookingDoc>,
    keys: Vec<Key>,
) -> Vec<Result<Option<BookingDoc>, Error>> {
    let each = |(user_id, key): &Key| doc! { "user_id": user_id, "idempotency_key": key };
    let filter = match keys.as_slice() {
        [one] => each(one),
        _ => doc! { "$or": keys.iter().map(each).collect::<Vec<_>>() },
    };
    match find(&bookings, filter).await {
        Ok(found) => {
            let found: HashMap<(&str, &str), &BookingDoc> =
                found.iter().map(|doc| (doc.key(), doc)).collect();
            keys.iter()
                .map(|(user_id, key)| {
                    Ok(found.get(&(user_id.as_str(), key.as_str())).map(|&doc| doc.clone()))
                })
                .collect()
        }
        Err(error) => vec![Err(error); keys.len()],
    }
}

async fn find(bookings: &Collection<BookingDoc>, filter: Document) -> Result<Vec<BookingDoc>, Error> {
    bookings.find(filter).await?.try_collect().await
}

async fn insert(collection: Collection<Document>, docs: Vec<Document>) -> Vec<Result<Inserted, Error>> {
    let count = docs.len();
    insert_outcomes(collection.insert_many(docs).ordered(false).await, count)
}

/// One `delete` statement for the whole batch: slots by `_id` among those freed,
/// still held by one of the bookings freeing. A booking holds exactly one slot, so
/// the cross product of the two lists matches only the pairs asked for, and the
/// statement is planned through `_id`. (A statement per slot costs secantusd-rs a
/// third more per slot; a `$or` of pairs is a collection scan there.)
async fn free(slots: Collection<Document>, frees: Vec<(String, String)>) -> Vec<Result<(), Error>> {
    let (ids, holders): (Vec<&str>, Vec<&str>) =
        frees.iter().map(|(slot, booking_id)| (slot.as_str(), booking_id.as_str())).unzip();
    let filter = doc! { "_id": { "$in": ids }, "booking_id": { "$in": holders } };
    match slots.delete_many(filter).await {
        Ok(_) => vec![Ok(()); frees.len()],
        Err(error) => vec![Err(error); frees.len()],
    }
}
