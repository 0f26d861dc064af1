"""Training workload for the profile-guided build of secantusd-rs (scripts/infra).

Runs, against the instrumented server at 127.0.0.1:PORT, the commands a booking makes
of the MongoDB-wire server, on collections indexed as the services index theirs: the
booking inserted in batches, its saga
steps as version-conditional findAndModify, the charge inserted and finished, outbox
marks as batched updates, the published-event log, tickets and notifications inserted
in batches under unique indexes, and the reads of the relays, the sweeper and the
listing endpoints. Several threads at once, as the services' connection pools do.
Usage: secantus-train.py PORT [BOOKINGS]
"""

import datetime
import sys
import threading
import uuid

import pymongo
from pymongo import ReturnDocument, UpdateOne

PORT = int(sys.argv[1])
BOOKINGS = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
THREADS = 8
BATCH = 4

client = pymongo.MongoClient(f"mongodb://127.0.0.1:{PORT}/?directConnection=true", maxPoolSize=THREADS * 2)
db = client["secantus_train"]


def now():
    return datetime.datetime.now(datetime.timezone.utc)


def setup():
    client.drop_database("secantus_train")
    bookings = db["bookings"]
    bookings.create_index([("expires_at", 1)], name="held_by_expiry", partialFilterExpression={"status": "HELD"})
    bookings.create_index([("lease_until", 1)], name="leased_steps", sparse=True)
    bookings.create_index(
        [("release_pending", 1)], name="seats_to_release", partialFilterExpression={"release_pending": True}
    )
    bookings.create_index([("user_id", 1), ("idempotency_key", 1)], name="user_idempotency_key", unique=True)
    bookings.create_index([("user_id", 1), ("_id", -1)], name="user_newest_id_first")
    bookings.create_index(
        [("unsent_events", 1)], name="with_unsent_events", partialFilterExpression={"unsent_events": {"$gte": 1}}
    )
    payments = db["payments"]
    payments.create_index([("booking_id", 1), ("created_at", 1)], name="payments_by_booking")
    payments.create_index([("idempotency_key", 1)], name="payments_idempotency_key_unique", unique=True)
    payments.create_index(
        [("unsent_events", 1)], name="with_unsent_events", partialFilterExpression={"unsent_events": {"$gte": 1}}
    )
    db["published_events"].create_index([("sent_at", 1), ("_id", 1)], name="sent_at")
    db["tickets"].create_index([("booking_id", 1), ("seat_id", 1)], name="tickets_booking_seat_unique", unique=True)
    db["notifications"].create_index([("event_id", 1), ("channel", 1)], name="event_channel", unique=True)
    db["notifications"].create_index([("user_id", 1), ("sent_at", -1), ("_id", -1)], name="user_newest_first")


def event(kind):
    return {"event_id": str(uuid.uuid4()), "type": kind, "payload": b"\x08" * 240, "at": now()}


def booking_doc(user):
    at = now()
    held = event("booking.held")
    return {
        "_id": str(uuid.uuid4()),
        "user_id": user,
        "idempotency_key": str(uuid.uuid4()),
        "showtime_id": str(uuid.uuid4()),
        "status": "HELD",
        "public_status": "HELD",
        "version": 1,
        "seats": [{"seat_id": "E7", "price": {"amount_minor": 1250, "currency": "EUR"}}],
        "total": {"amount_minor": 1250, "currency": "EUR"},
        "expires_at": at,
        "created_at": at,
        "updated_at": at,
        "saga": [{"step": "hold", "outcome": "ok", "at": at}],
        "outbox": [held],
        "pending_events": [held["event_id"]],
        "unsent_events": 1,
    }


def step(booking, to, lease, pushed_event=None):
    at = now()
    update = {
        "$set": {"status": to, "public_status": to, "updated_at": at},
        "$inc": {"version": 1},
        "$push": {"saga": {"$each": [{"step": to.lower(), "outcome": "ok", "at": at}]}},
    }
    if lease:
        update["$set"]["lease_until"] = at
    else:
        update["$unset"] = {"lease_until": ""}
    if pushed_event:
        update["$inc"]["unsent_events"] = 1
        update["$push"]["outbox"] = {"$each": [pushed_event]}
        update["$push"]["pending_events"] = {"$each": [pushed_event["event_id"]]}
    return db["bookings"].find_one_and_update(
        {"_id": booking["_id"], "version": booking["version"]}, update, return_document=ReturnDocument.AFTER
    )


def mark_sent(collection, docs, logged):
    """Marks the documents' pending events sent; `logged`: they are of a type the
    published-event log keeps (only those a consumer reconciles, e.g. booking.confirmed)."""
    ops = []
    for doc in docs:
        for event_id in doc["pending_events"]:
            ops.append(
                UpdateOne(
                    {"_id": doc["_id"], "pending_events": event_id},
                    {"$pull": {"pending_events": event_id}, "$inc": {"unsent_events": -1}},
                )
            )
    if ops:
        db[collection].bulk_write(ops, ordered=False)
    if logged:
        db["published_events"].insert_many(
            [{"_id": e, "sent_at": now()} for doc in docs for e in doc["pending_events"]], ordered=False
        )


def worker(count):
    bookings, payments = db["bookings"], db["payments"]
    for _ in range(0, count, BATCH):
        users = [str(uuid.uuid4()) for _ in range(BATCH)]
        docs = [booking_doc(u) for u in users]
        bookings.insert_many(docs, ordered=False)
        mark_sent("bookings", docs, logged=False)
        bookings.find_one({"user_id": users[0], "idempotency_key": docs[0]["idempotency_key"]})
        confirmed = []
        for doc in docs:
            doc = step(doc, "CHARGING", lease=True)
            payment = {
                "_id": str(uuid.uuid4()),
                "booking_id": doc["_id"],
                "idempotency_key": f"booking:{doc['_id']}:charge",
                "status": "PROCESSING",
                "lease_id": "l",
                "amount_minor": 1250,
                "created_at": now(),
                "history": [],
                "unsent_events": 0,
            }
            payments.insert_one(payment)
            succeeded = event("payment.succeeded")
            payments.find_one_and_update(
                {"_id": payment["_id"], "lease_id": "l"},
                {
                    "$set": {"status": "SUCCEEDED", "lease_id": None, "lease_until": None},
                    "$push": {"history": {"status": "SUCCEEDED", "at": now()}, "outbox": succeeded},
                    "$inc": {"unsent_events": 1},
                    "$addToSet": {"pending_events": succeeded["event_id"]},
                },
                return_document=ReturnDocument.AFTER,
            )
            confirmed.append(step(doc, "CONFIRMED", lease=False, pushed_event=event("booking.confirmed")))
        for doc in confirmed:
            doc["pending_events"] = doc["pending_events"][-1:]
        mark_sent("bookings", confirmed, logged=True)
        db["tickets"].insert_many(
            [{"_id": str(uuid.uuid4()), "booking_id": d["_id"], "seat_id": "E7", "code": "c" * 120} for d in docs],
            ordered=False,
        )
        db["notifications"].insert_many(
            [
                {"_id": str(uuid.uuid4()), "event_id": str(uuid.uuid4()), "channel": "email", "user_id": d["user_id"],
                 "sent_at": now(), "body": "b" * 400}
                for d in docs
            ],
            ordered=False,
        )
        list(bookings.find({"user_id": users[1]}).sort("_id", -1).limit(20))
        list(bookings.find({"unsent_events": {"$gte": 1}}).limit(64))
        list(bookings.find({"status": "HELD", "expires_at": {"$lt": now()}}).limit(64))
        list(payments.find({"booking_id": docs[2]["_id"]}).sort("created_at", 1))


setup()
threads = [threading.Thread(target=worker, args=(BOOKINGS // THREADS,)) for _ in range(THREADS)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
client.drop_database("secantus_train")
print(f"trained on {BOOKINGS} bookings")
