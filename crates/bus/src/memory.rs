//! In-process backend for the embedded single-binary mode and for tests. It
//! mirrors what `AmqpBus` gets from RabbitMQ quorum queues: FIFO work queues,
//! per-consumer prefetch, returned messages served before fresh ones with
//! `redelivered` set and the delivery count raised, dead-lettering past the
//! delivery limit (with the reason and time RabbitMQ records in `x-death`),
//! sweeps of the dead letters, and a topic exchange whose slow subscribers
//! lose events rather than slow the publishers down. Nothing survives the
//! process.

use std::{
    collections::{HashMap, VecDeque},
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard, PoisonError},
    task::{Context, Poll},
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use futures::Stream;
use tokio::sync::mpsc;
use tracing::debug;

use crate::{
    Acknowledge, Bus, DeadLetter, Decide, Delivery, DeliveryStream, Disposition, Event,
    EventStream, Message, QueueName, QueueStats, REDRIVES_HEADER, Result, Sweep,
};

/// How many events a subscriber may fall behind before new ones are dropped
/// for it.
const EVENT_BUFFER: usize = 1024;

/// In-process [`Bus`]; clones share the same queues and subscribers.
#[derive(Clone)]
pub struct MemoryBus {
    queues: Arc<HashMap<QueueName, Arc<Queue>>>,
    subscribers: Arc<Mutex<Vec<Subscriber>>>,
}

impl MemoryBus {
    /// `delivery_limit` is how many times a work message is redelivered
    /// before it is dead-lettered, as in [`crate::AmqpBus::connect`]: a
    /// message is delivered at most `delivery_limit + 1` times.
    pub fn new(delivery_limit: u32) -> Self {
        let queues = QueueName::ALL
            .into_iter()
            .map(|name| (name, Arc::new(Queue::new(name, delivery_limit))))
            .collect();
        Self {
            queues: Arc::new(queues),
            subscribers: Arc::default(),
        }
    }

    fn queue(&self, name: QueueName) -> &Arc<Queue> {
        &self.queues[&name]
    }
}

/// The queues whose dead letters share `queue`'s dead-letter queue, as
/// RabbitMQ routes them (`QueueName::dead_letter`): each keeps its own here.
fn sharing_dead_letters(queue: QueueName) -> impl Iterator<Item = QueueName> {
    QueueName::ALL
        .into_iter()
        .filter(move |q| q.dead_letter() == queue.dead_letter())
}

impl std::fmt::Debug for MemoryBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBus").finish_non_exhaustive()
    }
}

/// A message as the queue keeps it.
#[derive(Clone)]
struct Stored {
    payload: Vec<u8>,
    headers: Vec<(String, String)>,
    redelivered: bool,
    delivery_count: u32,
}

impl Stored {
    fn fresh(payload: Vec<u8>, headers: Vec<(String, String)>) -> Self {
        Self {
            payload,
            headers,
            redelivered: false,
            delivery_count: 0,
        }
    }
}

/// A dead-lettered message with what RabbitMQ would record in `x-death`.
struct Dead {
    message: Stored,
    reason: &'static str,
    deliveries: u32,
    at: SystemTime,
}

impl Dead {
    fn new(message: Stored, reason: &'static str, deliveries: u32) -> Self {
        Self {
            message,
            reason,
            deliveries,
            at: SystemTime::now(),
        }
    }

    fn letter(&self) -> DeadLetter {
        DeadLetter {
            payload: self.message.payload.clone(),
            headers: self.message.headers.clone(),
            reason: Some(self.reason.to_string()),
            deliveries: Some(self.deliveries),
            dead_lettered_at: Some(self.at),
            redrives: redrives(&self.message.headers),
        }
    }
}

/// The [`REDRIVES_HEADER`] count of a message; 0 when it has none.
fn redrives(headers: &[(String, String)]) -> u32 {
    headers
        .iter()
        .find(|(k, _)| k == REDRIVES_HEADER)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

struct Queue {
    name: QueueName,
    delivery_limit: u32,
    // A std mutex: critical sections never await, and the `Drop` impls of
    // deliveries and streams must settle synchronously.
    state: Mutex<QueueState>,
}

#[derive(Default)]
struct QueueState {
    /// Published and never delivered.
    ready: VecDeque<Stored>,
    /// Given back by a consumer; served before `ready`, as a quorum queue
    /// serves its returns.
    returned: VecDeque<Stored>,
    /// Delivered and not settled, by delivery tag.
    unacked: HashMap<u64, Unacked>,
    consumers: Vec<ConsumerSlot>,
    /// Where the next round-robin search for a consumer starts.
    cursor: usize,
    dead: VecDeque<Dead>,
    next_tag: u64,
    next_consumer: u64,
}

struct Unacked {
    consumer: u64,
    message: Stored,
}

struct ConsumerSlot {
    id: u64,
    /// 0 means unlimited, as in AMQP `basic.qos`.
    prefetch: u16,
    in_flight: usize,
    tx: mpsc::UnboundedSender<Dispatched>,
}

impl ConsumerSlot {
    fn has_capacity(&self) -> bool {
        self.prefetch == 0 || self.in_flight < usize::from(self.prefetch)
    }
}

/// A delivery on its way to a consumer stream. Plain data: the acker is made
/// when the stream yields it, so nothing in the channel settles on drop.
struct Dispatched {
    tag: u64,
    message: Stored,
}

impl Queue {
    fn new(name: QueueName, delivery_limit: u32) -> Self {
        Self {
            name,
            delivery_limit,
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, QueueState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands ready messages to consumers with free prefetch, round-robin.
    fn dispatch(&self, state: &mut QueueState) {
        while !(state.returned.is_empty() && state.ready.is_empty()) {
            let n = state.consumers.len();
            let Some(index) = (0..n)
                .map(|i| (state.cursor + i) % n)
                .find(|&i| state.consumers[i].has_capacity())
            else {
                return;
            };
            let message = match state.returned.pop_front() {
                Some(m) => m,
                None => state.ready.pop_front().expect("checked non-empty"),
            };
            let tag = state.next_tag;
            state.next_tag += 1;
            let consumer = &mut state.consumers[index];
            let sent = consumer.tx.send(Dispatched {
                tag,
                message: message.clone(),
            });
            if sent.is_err() {
                // The stream deregisters before its receiver goes, so this
                // is only a safety net.
                state.consumers.remove(index);
                state.returned.push_front(message);
                continue;
            }
            consumer.in_flight += 1;
            let consumer = consumer.id;
            state.unacked.insert(tag, Unacked { consumer, message });
            state.cursor = (index + 1) % n;
        }
    }

    /// Takes `tag` out of the unacknowledged set; `None` when it was settled
    /// already or returned with its consumer.
    fn take_unacked(state: &mut QueueState, tag: u64) -> Option<Stored> {
        let unacked = state.unacked.remove(&tag)?;
        if let Some(slot) = state
            .consumers
            .iter_mut()
            .find(|c| c.id == unacked.consumer)
        {
            slot.in_flight -= 1;
        }
        Some(unacked.message)
    }

    /// A delivery came back unprocessed: count it and requeue it, or
    /// dead-letter it once it exhausted the delivery limit.
    fn give_back(&self, state: &mut QueueState, mut message: Stored) {
        message.delivery_count += 1;
        message.redelivered = true;
        if message.delivery_count > self.delivery_limit {
            debug!(
                queue = self.name.as_str(),
                delivery_count = message.delivery_count,
                "delivery limit exceeded, dead-lettering"
            );
            let deliveries = message.delivery_count;
            state
                .dead
                .push_back(Dead::new(message, "delivery_limit", deliveries));
        } else {
            state.returned.push_back(message);
        }
    }

    fn settle(&self, tag: u64, outcome: Outcome) {
        let mut state = self.lock();
        let Some(message) = Self::take_unacked(&mut state, tag) else {
            // Like a stale AMQP delivery tag after its channel closed: the
            // message was already given back.
            return;
        };
        match outcome {
            Outcome::Ack => {}
            Outcome::Requeue => self.give_back(&mut state, message),
            Outcome::DeadLetter => {
                let deliveries = message.delivery_count + 1;
                state
                    .dead
                    .push_back(Dead::new(message, "rejected", deliveries));
            }
        }
        self.dispatch(&mut state);
    }

    fn remove_consumer(&self, id: u64) {
        let mut state = self.lock();
        state.consumers.retain(|c| c.id != id);
        state.cursor = 0;
        let mut tags: Vec<u64> = state
            .unacked
            .iter()
            .filter(|(_, u)| u.consumer == id)
            .map(|(&tag, _)| tag)
            .collect();
        // Give them back in the order they were delivered.
        tags.sort_unstable();
        for tag in tags {
            if let Some(unacked) = state.unacked.remove(&tag) {
                self.give_back(&mut state, unacked.message);
            }
        }
        self.dispatch(&mut state);
    }

    fn sweep(&self, limit: usize, decide: Decide<'_>) -> Sweep {
        let mut state = self.lock();
        let mut sweep = Sweep::default();
        let mut kept = Vec::new();
        while sweep.len() < limit {
            let Some(dead) = state.dead.pop_front() else {
                break;
            };
            let letter = dead.letter();
            match decide(&letter) {
                Disposition::Keep => {
                    kept.push(dead);
                    sweep.kept.push(letter);
                }
                Disposition::Redrive => {
                    let headers = letter.redriven_headers();
                    state
                        .ready
                        .push_back(Stored::fresh(dead.message.payload, headers));
                    sweep.redriven.push(letter);
                }
                Disposition::Discard => sweep.discarded.push(letter),
            }
        }
        // What is kept stays at the head, in its order.
        for dead in kept.into_iter().rev() {
            state.dead.push_front(dead);
        }
        self.dispatch(&mut state);
        sweep
    }
}

enum Outcome {
    Ack,
    Requeue,
    DeadLetter,
}

/// Settles one delivery; an unsettled one is requeued when dropped.
struct MemoryAcker {
    queue: Arc<Queue>,
    tag: u64,
}

#[async_trait]
impl Acknowledge for MemoryAcker {
    async fn ack(&self) -> Result<()> {
        self.queue.settle(self.tag, Outcome::Ack);
        Ok(())
    }

    async fn nack(&self, requeue: bool) -> Result<()> {
        let outcome = if requeue {
            Outcome::Requeue
        } else {
            Outcome::DeadLetter
        };
        self.queue.settle(self.tag, outcome);
        Ok(())
    }
}

impl Drop for MemoryAcker {
    fn drop(&mut self) {
        // A no-op after ack/nack: the tag is gone by then.
        self.queue.settle(self.tag, Outcome::Requeue);
    }
}

/// One consumer's deliveries; dropping it gives its unacked messages back,
/// like closing an AMQP channel.
struct ConsumerStream {
    queue: Arc<Queue>,
    id: u64,
    rx: mpsc::UnboundedReceiver<Dispatched>,
}

impl Stream for ConsumerStream {
    type Item = Result<Delivery>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx).map(|item| {
            item.map(|Dispatched { tag, message }| {
                let redelivered = message.redelivered || redrives(&message.headers) > 0;
                Ok(Delivery::new(
                    message.payload,
                    message.headers,
                    redelivered,
                    message.delivery_count,
                    Box::new(MemoryAcker {
                        queue: Arc::clone(&self.queue),
                        tag,
                    }),
                ))
            })
        })
    }
}

impl Drop for ConsumerStream {
    fn drop(&mut self) {
        self.queue.remove_consumer(self.id);
    }
}

struct Subscriber {
    pattern: Vec<String>,
    tx: mpsc::Sender<Event>,
}

/// AMQP topic matching: words split on `.`, `*` is exactly one word, `#` is
/// zero or more.
fn topic_matches(pattern: &[String], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((word, rest)) if word == "#" => {
            (0..=key.len()).any(|skip| topic_matches(rest, &key[skip..]))
        }
        Some((word, rest)) => match key.split_first() {
            Some((first, key_rest)) => {
                (word == "*" || word == first) && topic_matches(rest, key_rest)
            }
            None => false,
        },
    }
}

/// RabbitMQ treats an empty routing key or pattern as zero words.
fn words(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

#[async_trait]
impl Bus for MemoryBus {
    fn backend(&self) -> &'static str {
        "in-process bus"
    }

    async fn publish(&self, queue: QueueName, messages: Vec<Message>) -> Result<()> {
        let queue = self.queue(queue);
        let mut state = queue.lock();
        state.ready.extend(
            messages
                .into_iter()
                .map(|m| Stored::fresh(m.payload, m.headers)),
        );
        queue.dispatch(&mut state);
        Ok(())
    }

    async fn publish_delayed(
        &self,
        queue: QueueName,
        messages: Vec<Message>,
        delay: Duration,
    ) -> Result<()> {
        let bus = self.clone();
        let delay = crate::delay_for(delay);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = bus.publish(queue, messages).await;
        });
        Ok(())
    }

    async fn consume(&self, queue: QueueName, prefetch: u16) -> Result<DeliveryStream> {
        let queue = Arc::clone(self.queue(queue));
        let (tx, rx) = mpsc::unbounded_channel();
        let id = {
            let mut state = queue.lock();
            let id = state.next_consumer;
            state.next_consumer += 1;
            state.consumers.push(ConsumerSlot {
                id,
                prefetch,
                in_flight: 0,
                tx,
            });
            queue.dispatch(&mut state);
            id
        };
        Ok(Box::pin(ConsumerStream { queue, id, rx }))
    }

    async fn publish_event(&self, routing_key: &str, message: Message) -> Result<()> {
        let key = words(routing_key);
        let event = Event {
            routing_key: routing_key.to_string(),
            payload: message.payload,
            headers: message.headers,
        };
        let mut subscribers = self
            .subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        subscribers.retain(|s| !s.tx.is_closed());
        for s in subscribers.iter() {
            if !topic_matches(&s.pattern, &key) {
                continue;
            }
            if let Err(mpsc::error::TrySendError::Full(_)) = s.tx.try_send(event.clone()) {
                debug!(routing_key, "subscriber lagging, event dropped");
            }
        }
        Ok(())
    }

    async fn subscribe(&self, pattern: &str) -> Result<EventStream> {
        let (tx, mut rx) = mpsc::channel(EVENT_BUFFER);
        self.subscribers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Subscriber {
                pattern: words(pattern).into_iter().map(String::from).collect(),
                tx,
            });
        Ok(Box::pin(futures::stream::poll_fn(move |cx| {
            rx.poll_recv(cx)
        })))
    }

    async fn queue_stats(&self, queue: QueueName) -> Result<QueueStats> {
        let state = self.queue(queue).lock();
        Ok(QueueStats {
            messages: (state.ready.len() + state.returned.len()) as u64,
            consumers: state.consumers.len() as u32,
        })
    }

    async fn dead_letter_stats(&self, queue: QueueName) -> Result<QueueStats> {
        let messages = sharing_dead_letters(queue)
            .map(|q| self.queue(q).lock().dead.len() as u64)
            .sum();
        Ok(QueueStats {
            messages,
            consumers: 0,
        })
    }

    async fn sweep_dead_letters(
        &self,
        queue: QueueName,
        limit: usize,
        decide: Decide<'_>,
    ) -> Result<Sweep> {
        let mut all = Sweep::default();
        for q in sharing_dead_letters(queue) {
            let sweep = self.queue(q).sweep(limit - all.len(), decide);
            all.kept.extend(sweep.kept);
            all.redriven.extend(sweep.redriven);
            all.discarded.extend(sweep.discarded);
        }
        Ok(all)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::*;

    fn matches(pattern: &str, key: &str) -> bool {
        let pattern: Vec<String> = words(pattern).into_iter().map(String::from).collect();
        topic_matches(&pattern, &words(key))
    }

    #[test]
    fn star_matches_exactly_one_word() {
        assert!(matches("run.r1.*", "run.r1.progress"));
        assert!(!matches("run.r1.*", "run.r1"));
        assert!(!matches("run.r1.*", "run.r1.progress.detail"));
        assert!(!matches("run.r1.*", "run.r2.progress"));
        assert!(matches("*.*", "a.b"));
        assert!(matches("run.*.done", "run..done"));
    }

    #[test]
    fn hash_matches_zero_or_more_words() {
        assert!(matches("#", ""));
        assert!(matches("#", "a.b.c"));
        assert!(matches("run.#", "run"));
        assert!(matches("run.#", "run.r1.progress"));
        assert!(!matches("run.#", "runs.r1"));
        assert!(matches("run.#.done", "run.done"));
        assert!(matches("run.#.done", "run.r1.x.done"));
        assert!(!matches("run.#.done", "run.r1.progress"));
        assert!(matches("#.#", "a"));
        assert!(matches("*.#", "a"));
        assert!(!matches("*.#", ""));
    }

    #[tokio::test]
    async fn a_subscriber_that_never_reads_does_not_block_publishers() {
        let bus = MemoryBus::new(3);
        let mut idle = bus.subscribe("run.*.progress").await.unwrap();
        let publish_many = async {
            for i in 0..(EVENT_BUFFER * 4) {
                let key = format!("run.r{i}.progress");
                bus.publish_event(&key, Message::default()).await.unwrap();
            }
        };
        tokio::time::timeout(Duration::from_secs(5), publish_many)
            .await
            .expect("publishing never waits for subscribers");
        // The first buffer-full arrived, the rest were dropped.
        let first = idle.next().await.unwrap();
        assert_eq!(first.routing_key, "run.r0.progress");
        let mut received = 1;
        while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(20), idle.next()).await {
            received += 1;
        }
        assert_eq!(received, EVENT_BUFFER);
    }

    #[tokio::test]
    async fn dropped_subscribers_are_forgotten() {
        let bus = MemoryBus::new(3);
        let events = bus.subscribe("#").await.unwrap();
        drop(events);
        bus.publish_event("run.r1.done", Message::default())
            .await
            .unwrap();
        assert!(bus.subscribers.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn acking_a_delivery_given_back_with_its_consumer_changes_nothing() {
        let bus = MemoryBus::new(3);
        bus.publish(QueueName::Tasks, vec![Message::default()])
            .await
            .unwrap();
        let mut first = bus.consume(QueueName::Tasks, 1).await.unwrap();
        let stale = first.next().await.unwrap().unwrap();
        drop(first);
        stale.ack().await.unwrap();
        let stats = bus.queue_stats(QueueName::Tasks).await.unwrap();
        assert_eq!(stats.messages, 1);
    }
}
