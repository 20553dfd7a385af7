//! Gauntlet's messaging: durable work queues (task batches, report jobs) with
//! dead-lettering, and a topic exchange of run events. `Bus` is the interface;
//! `AmqpBus` is the RabbitMQ backend, `MemoryBus` the in-process one with the
//! same semantics (checked by one conformance suite run against both).
//!
//! Messages carry opaque bytes plus string headers; the callers put protobuf
//! bodies and the W3C `traceparent` there.
//!
//! Dead letters can be looked at and settled one by one
//! ([`Bus::sweep_dead_letters`]): kept where they are, discarded, or
//! re-driven — published again onto their work queue as a fresh message
//! (delivery count 0), the dead copy removed only once the broker confirmed
//! the new one, so a crash in between leaves a duplicate, never a loss.

pub mod admin;
mod amqp;
mod memory;
#[cfg(feature = "testing")]
pub mod testing;

use std::{
    pin::Pin,
    time::{Duration, SystemTime},
};

pub use amqp::AmqpBus;
use async_trait::async_trait;
use futures::Stream;
pub use memory::MemoryBus;

/// Messaging failures.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("publish not confirmed by the broker")]
    NotConfirmed,
    #[error("{0}")]
    Admin(String),
}

pub type Result<T, E = BusError> = std::result::Result<T, E>;

/// The work queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum QueueName {
    /// `gauntlet.tasks`: task batches for workers.
    Tasks,
    /// `gauntlet.tasks.retry`: tasks handed back to wait (a provider's
    /// `Retry-After`), due now. Workers consume it beside `Tasks`, so a
    /// retry waits for its delay, not for the backlog of `Tasks` (delayed
    /// messages re-entering `Tasks` came out behind every batch queued
    /// meanwhile). Its dead letters join those of `Tasks`.
    Retries,
    /// `gauntlet.reports`: report jobs.
    Reports,
}

impl QueueName {
    pub fn as_str(self) -> &'static str {
        match self {
            QueueName::Tasks => "gauntlet.tasks",
            QueueName::Retries => "gauntlet.tasks.retry",
            QueueName::Reports => "gauntlet.reports",
        }
    }

    /// Where messages go after too many deliveries.
    pub fn dead_letter(self) -> &'static str {
        match self {
            QueueName::Tasks | QueueName::Retries => "gauntlet.tasks.dead",
            QueueName::Reports => "gauntlet.reports.dead",
        }
    }

    /// The queue that holds messages published with `delay` (one of
    /// [`DELAYS`]) until they are due: `gauntlet.tasks.delay.5s`.
    pub fn delay_queue(self, delay: Duration) -> String {
        format!("{}.delay.{}s", self.as_str(), delay.as_secs())
    }

    pub const ALL: [QueueName; 3] = [QueueName::Tasks, QueueName::Retries, QueueName::Reports];
}

/// The delays `Bus::publish_delayed` offers; a wanted delay is rounded up to
/// the next one (and capped at the last). One queue per delay keeps every
/// message in it due in arrival order.
pub const DELAYS: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(5),
    Duration::from_secs(10),
    Duration::from_secs(30),
    Duration::from_secs(60),
];

/// The delay `publish_delayed` applies for `wanted`.
pub fn delay_for(wanted: Duration) -> Duration {
    DELAYS
        .into_iter()
        .find(|d| *d >= wanted)
        .unwrap_or(DELAYS[DELAYS.len() - 1])
}

/// The topic exchange of run events.
pub const EVENTS_EXCHANGE: &str = "gauntlet.events";
/// The exchange dead letters are routed through.
pub const DEAD_LETTER_EXCHANGE: &str = "gauntlet.dlx";
/// Header of a re-driven message: how many times it has been re-driven from
/// the dead-letter queue (or re-published in place of lost work).
pub const REDRIVES_HEADER: &str = "x-gauntlet-redrives";

/// A message to publish.
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

/// One message taken from a work queue; it stays unacknowledged (and is
/// redelivered after a crash) until `ack`. Dropping it unsettled requeues it,
/// like `requeue`; so does dropping the consumer's `DeliveryStream` for every
/// delivery it has not settled (settling one afterwards does nothing).
pub struct Delivery {
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
    /// This message was delivered before: the broker says so, or it is a
    /// re-driven copy ([`REDRIVES_HEADER`]) of one that was. Either way its
    /// work may be partly done.
    pub redelivered: bool,
    /// Earlier delivery attempts, from the quorum queue's `x-delivery-count`
    /// (a re-driven copy starts again from 0).
    pub delivery_count: u32,
    /// The broker message's id (AMQP `message-id`), when it has one.
    pub message_id: Option<String>,
    acker: Box<dyn Acknowledge>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("bytes", &self.payload.len())
            .field("redelivered", &self.redelivered)
            .field("delivery_count", &self.delivery_count)
            .finish()
    }
}

impl Delivery {
    pub fn new(
        payload: Vec<u8>,
        headers: Vec<(String, String)>,
        redelivered: bool,
        delivery_count: u32,
        acker: Box<dyn Acknowledge>,
    ) -> Self {
        Self {
            payload,
            headers,
            redelivered,
            delivery_count,
            message_id: None,
            acker,
        }
    }

    /// This delivery with the broker message's id.
    pub fn with_message_id(mut self, id: Option<String>) -> Self {
        self.message_id = id;
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Done: the message is removed.
    pub async fn ack(self) -> Result<()> {
        self.acker.ack().await
    }

    /// Give it back to be delivered again (to this or another consumer).
    pub async fn requeue(self) -> Result<()> {
        self.acker.nack(true).await
    }

    /// Poison: route it to the dead-letter queue now.
    pub async fn dead_letter(self) -> Result<()> {
        self.acker.nack(false).await
    }
}

/// How a backend settles one delivery.
#[async_trait]
pub trait Acknowledge: Send + Sync {
    async fn ack(&self) -> Result<()>;
    async fn nack(&self, requeue: bool) -> Result<()>;
}

/// An event from the topic exchange.
#[derive(Debug, Clone)]
pub struct Event {
    pub routing_key: String,
    pub payload: Vec<u8>,
    pub headers: Vec<(String, String)>,
}

pub type DeliveryStream = Pin<Box<dyn Stream<Item = Result<Delivery>> + Send>>;
pub type EventStream = Pin<Box<dyn Stream<Item = Event> + Send>>;

/// A message in a dead-letter queue, as [`Bus::sweep_dead_letters`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub payload: Vec<u8>,
    /// The headers it was published with (the broker's own bookkeeping
    /// headers left out).
    pub headers: Vec<(String, String)>,
    /// Why it was dead-lettered, when the broker says: `rejected` (a
    /// consumer gave up on it) or `delivery_limit` (returned once too often).
    pub reason: Option<String>,
    /// How many times it was delivered from its work queue before, when known.
    pub deliveries: Option<u32>,
    /// When it was dead-lettered, when known (to the second on RabbitMQ).
    pub dead_lettered_at: Option<SystemTime>,
    /// How many times it had been re-driven before it died this time.
    pub redrives: u32,
}

impl DeadLetter {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The headers of its re-driven copy: its own, with the re-drive count
    /// raised by one.
    pub fn redriven_headers(&self) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .filter(|(k, _)| k != REDRIVES_HEADER)
            .cloned()
            .collect();
        headers.push((REDRIVES_HEADER.into(), (self.redrives + 1).to_string()));
        headers
    }
}

/// What [`Bus::sweep_dead_letters`] does with one dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Leave it in the dead-letter queue.
    Keep,
    /// Publish it again onto its work queue with a fresh delivery count,
    /// then remove it.
    Redrive,
    /// Remove it for good.
    Discard,
}

/// What one sweep saw, by what it did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Sweep {
    pub kept: Vec<DeadLetter>,
    pub redriven: Vec<DeadLetter>,
    pub discarded: Vec<DeadLetter>,
}

impl Sweep {
    /// Dead letters looked at.
    pub fn len(&self) -> usize {
        self.kept.len() + self.redriven.len() + self.discarded.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Decides the fate of one dead letter during a sweep.
pub type Decide<'a> = &'a (dyn Fn(&DeadLetter) -> Disposition + Send + Sync);

/// Depth of a work queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    pub messages: u64,
    pub consumers: u32,
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Publishes persistent messages and returns once the broker confirmed
    /// every one of them.
    async fn publish(&self, queue: QueueName, messages: Vec<Message>) -> Result<()>;
    /// Publishes persistent messages that reach `queue` only after `delay`
    /// (rounded up by [`delay_for`]); returns once the broker holds them.
    /// Meanwhile they are in no consumer's prefetch and in no `queue_stats`.
    async fn publish_delayed(
        &self,
        queue: QueueName,
        messages: Vec<Message>,
        delay: Duration,
    ) -> Result<()>;
    /// Deliveries from `queue`, at most `prefetch` unacknowledged at once.
    /// The stream ends (or yields an error) when the connection is lost;
    /// calling `consume` again reconnects.
    async fn consume(&self, queue: QueueName, prefetch: u16) -> Result<DeliveryStream>;
    /// Publishes one event on the topic exchange (fire and forget: events
    /// are hints, the database holds the truth).
    async fn publish_event(&self, routing_key: &str, message: Message) -> Result<()>;
    /// Events whose routing key matches `pattern` (`run.<id>.*`), from a
    /// private queue that lives as long as the stream.
    async fn subscribe(&self, pattern: &str) -> Result<EventStream>;
    /// The broker behind the bus, as health checks name it.
    fn backend(&self) -> &'static str {
        "rabbitmq"
    }
    /// Ready messages and consumers of `queue`; unacknowledged deliveries
    /// are not counted.
    async fn queue_stats(&self, queue: QueueName) -> Result<QueueStats>;
    /// The same for `queue`'s dead-letter queue (`QueueName::dead_letter`):
    /// messages dead-lettered explicitly or past the delivery limit.
    async fn dead_letter_stats(&self, queue: QueueName) -> Result<QueueStats>;
    /// Takes up to `limit` messages of `queue`'s dead-letter queue, oldest
    /// first, and settles each as `decide` says. A re-driven one is
    /// published onto `queue` (persistent, confirmed, with
    /// [`DeadLetter::redriven_headers`]) before it is removed; kept ones stay
    /// in the dead-letter queue. A message another client holds meanwhile
    /// (another sweep) is not seen. On an error, what was settled stays
    /// settled and the rest is kept.
    async fn sweep_dead_letters(
        &self,
        queue: QueueName,
        limit: usize,
        decide: Decide<'_>,
    ) -> Result<Sweep>;
    /// Up to `limit` dead letters of `queue`, oldest first, left where they are.
    async fn dead_letters(&self, queue: QueueName, limit: usize) -> Result<Vec<DeadLetter>> {
        let sweep = self
            .sweep_dead_letters(queue, limit, &|_| Disposition::Keep)
            .await?;
        Ok(sweep.kept)
    }
}
