//! Marquee's load generator and benchmarks (never run by `scripts/test`, except the
//! flash-sale smoke test in `tests/flash_sale.rs`):
//! - `cinema`: LockSeats + ConfirmSeats through gRPC against pgbench on the same SQL,
//!   and hot-seat contention (`scripts/bench-cinema`);
//! - `rush`: the whole mesh through GraphQL: the flash sale with its verification from
//!   the stores, browsing at fixed arrival rates, and the pgbench baseline of the same
//!   seat SQL in the same run (`scripts/bench`);
//! - `chaos`: the six real processes under GraphQL customers while every process is
//!   SIGKILLed in turn and the brokers restarted, then every promise checked from the
//!   stores (`scripts/chaos`);
//! - `replicas`: the flash sale and the connected users on the real service binaries,
//!   each its own process, with one and then two replicas of gateway, cinema, booking
//!   and payment (one of each killed mid-rush) and three gateways for the subscribers
//!   (`scripts/bench-replicas`);
//! - `checkin`: door scanners checking a showtime's tickets in through GraphQL.

pub mod brokers;
pub mod browse;
pub mod catalog;
pub mod chaos;
pub mod checkin;
pub mod cinema;
pub mod connected;
pub mod cpu;
pub mod flash_sale;
pub mod gql;
pub mod lag;
pub mod lean_grpc;
pub mod mesh;
pub mod mongo_ops;
pub mod pgbench;
pub mod procs;
pub mod replicas;
pub mod report;
pub mod rush;
pub mod signups;
pub mod stats;
pub mod stores;
pub mod subscribers;
