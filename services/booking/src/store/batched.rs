//! The commands of concurrent holds and pays sent together (`marquee_kit::batch`): in a
//! flash sale most holds are refused, and each one still looks up its idempotency key.
//! Batched, a burst of them costs a few commands instead of one each, and a lone call
//! still goes out at once.

use std::collections::HashMap;

use futures::TryStreamExt;
use marquee_kit::batch::Batcher;
use marquee_mongo::{Inserted, insert_outcomes};
use mongodb::Collection;
use mongodb::bson::{Document, doc};
use mongodb::error::Error;

use super::document::BookingDoc;

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
}

impl Batches {
    pub fn spawn(bookings: &Collection<BookingDoc>) -> Self {
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
