//! RabbitMQ backend. Work queues are quorum queues with a delivery limit and
//! a dead-letter exchange; publishes wait for publisher confirms. The
//! connection is re-established lazily after it drops, so a broker restart
//! costs the callers one failed call, not a restart of the service.
//!
//! A sweep of dead letters takes them with `basic.get` on a channel of its
//! own in confirm mode; what it keeps goes back to the dead-letter queue
//! when that channel closes. (A quorum queue counts that return as a
//! delivery: harmless on a dead-letter queue declared without a delivery
//! limit, as ours is, but RabbitMQ 4.0–4.2 give every quorum queue a default
//! limit of 20; there, set a `delivery-limit` policy of -1 on
//! `gauntlet.*.dead`.)

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, SystemTime},
};

use async_trait::async_trait;
use futures::StreamExt;
use gauntlet_telemetry::propagation;
use lapin::{
    Acker, BasicProperties, Channel, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
        BasicPublishOptions, BasicQosOptions, ConfirmSelectOptions, ExchangeDeclareOptions,
        QueueBindOptions, QueueDeclareOptions,
    },
    types::{AMQPValue, FieldTable, LongString, ShortString},
};
use opentelemetry::trace::TraceContextExt as _;
use tokio::sync::Mutex;
use tracing::{Instrument as _, debug, warn};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

use crate::{
    Acknowledge, Bus, BusError, DEAD_LETTER_EXCHANGE, DeadLetter, Decide, Delivery, DeliveryStream,
    Disposition, EVENTS_EXCHANGE, Event, EventStream, Message, QueueName, QueueStats,
    REDRIVES_HEADER, Result, Sweep,
};

/// RabbitMQ-backed [`Bus`].
pub struct AmqpBus {
    url: String,
    delivery_limit: u32,
    state: Mutex<Option<Live>>,
    /// Delay queues declared since connecting.
    delays: Mutex<HashSet<String>>,
}

/// A connection and its confirm-mode publishing channel.
#[derive(Clone)]
struct Live {
    connection: Arc<Connection>,
    publisher: Channel,
}

impl AmqpBus {
    /// Connects and declares the topology (idempotent). `delivery_limit` is
    /// how many times a work message is redelivered before it is
    /// dead-lettered.
    pub async fn connect(url: &str, delivery_limit: u32) -> Result<Self> {
        let bus = Self {
            url: url.to_string(),
            delivery_limit,
            state: Mutex::new(None),
            delays: Mutex::default(),
        };
        bus.live().await?;
        Ok(bus)
    }

    async fn live(&self) -> Result<Live> {
        let mut state = self.state.lock().await;
        if let Some(live) = state.as_ref()
            && live.connection.status().connected()
            && live.publisher.status().connected()
        {
            return Ok(live.clone());
        }
        if state.is_some() {
            warn!("amqp connection lost, reconnecting");
        }
        *state = None;
        let connection = Connection::connect(&self.url, ConnectionProperties::default())
            .await
            .map_err(|e| BusError::Unavailable(e.to_string()))?;
        let publisher = connection.create_channel().await?;
        declare_topology(&publisher, self.delivery_limit).await?;
        publisher
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let live = Live {
            connection: Arc::new(connection),
            publisher,
        };
        *state = Some(live.clone());
        debug!("amqp connected");
        Ok(live)
    }

    /// Drops the cached connection so the next call reconnects.
    async fn forget(&self) {
        *self.state.lock().await = None;
    }

    /// Closes the connection (graceful shutdown).
    pub async fn close(&self) {
        if let Some(live) = self.state.lock().await.take() {
            let _ = live.connection.close(200, "bye".into()).await;
        }
    }

    async fn stats(&self, queue: &str) -> Result<QueueStats> {
        let live = self.live().await?;
        // A passive declare on a throwaway channel: a missing queue closes
        // the channel, which must not be the publishing one.
        let channel = live.connection.create_channel().await?;
        let q = channel
            .queue_declare(
                queue.into(),
                QueueDeclareOptions::default().passive(),
                FieldTable::default(),
            )
            .await?;
        let stats = QueueStats {
            messages: u64::from(q.message_count()),
            consumers: q.consumer_count(),
        };
        let _ = channel.close(200, "done".into()).await;
        Ok(stats)
    }

    /// Properties of a persistent message with `headers`.
    fn properties(headers: &[(String, String)]) -> BasicProperties {
        BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/protobuf".into())
            .with_headers(to_field_table(headers))
    }

    /// The body of [`Bus::sweep_dead_letters`], on `channel` (in confirm
    /// mode); the caller closes it, which gives back what was kept.
    async fn sweep_on(
        &self,
        channel: &Channel,
        queue: QueueName,
        limit: usize,
        decide: Decide<'_>,
    ) -> Result<Sweep> {
        let mut sweep = Sweep::default();
        while sweep.len() < limit {
            let Some(got) = channel
                .basic_get(
                    queue.dead_letter().into(),
                    BasicGetOptions { no_ack: false },
                )
                .await?
            else {
                break;
            };
            let remaining = got.message_count;
            let delivery = got.delivery;
            let letter = self.dead_letter_of(queue, &delivery.properties, delivery.data);
            match decide(&letter) {
                Disposition::Keep => sweep.kept.push(letter),
                Disposition::Discard => {
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                    sweep.discarded.push(letter);
                }
                Disposition::Redrive => {
                    let confirmation = channel
                        .basic_publish(
                            "".into(),
                            queue.as_str().into(),
                            BasicPublishOptions::default(),
                            &letter.payload,
                            Self::properties(&letter.redriven_headers()),
                        )
                        .await?
                        .await?;
                    if !confirmation.is_ack() {
                        // Still held, so it goes back with the channel.
                        return Err(BusError::NotConfirmed);
                    }
                    // Only now: until the copy is confirmed, the dead one
                    // is the only one.
                    delivery.acker.ack(BasicAckOptions::default()).await?;
                    sweep.redriven.push(letter);
                }
            }
            if remaining == 0 {
                break;
            }
        }
        Ok(sweep)
    }

    /// A message of `queue`'s dead-letter queue, read back from the headers
    /// RabbitMQ added when it dead-lettered it (`x-death`, newest first).
    fn dead_letter_of(
        &self,
        queue: QueueName,
        props: &BasicProperties,
        payload: Vec<u8>,
    ) -> DeadLetter {
        let (headers, _) = from_properties(props);
        let headers: Vec<(String, String)> = headers
            .into_iter()
            .filter(|(k, _)| !is_broker_header(k))
            .collect();
        let death = props
            .headers()
            .as_ref()
            .and_then(|t| t.inner().get("x-death"))
            .and_then(|deaths| match deaths {
                AMQPValue::FieldArray(a) => a.as_slice().iter().find_map(|d| match d {
                    // Its death in a work queue that dead-letters here (not
                    // the expiry in a delay queue on its way).
                    AMQPValue::FieldTable(t)
                        if text(t.inner().get("queue")).is_some_and(|from| {
                            QueueName::ALL.iter().any(|q| {
                                q.dead_letter() == queue.dead_letter() && q.as_str() == from
                            })
                        }) =>
                    {
                        Some(t.clone())
                    }
                    _ => None,
                }),
                _ => None,
            });
        let reason = death.as_ref().and_then(|d| text(d.inner().get("reason")));
        let dead_lettered_at = death.as_ref().and_then(|d| match d.inner().get("time") {
            Some(AMQPValue::Timestamp(secs)) => {
                Some(SystemTime::UNIX_EPOCH + Duration::from_secs(*secs))
            }
            _ => None,
        });
        // Past the limit, it was delivered once more than the limit allows
        // redeliveries; a consumer's rejection says nothing of the count.
        let deliveries = match reason.as_deref() {
            Some("delivery_limit") => Some(self.delivery_limit + 1),
            _ => None,
        };
        let redrives = headers
            .iter()
            .find(|(k, _)| k == REDRIVES_HEADER)
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        DeadLetter {
            payload,
            headers,
            reason,
            deliveries,
            dead_lettered_at,
            redrives,
        }
    }

    /// Publishes `messages` in a PRODUCER span (`publish <destination>`,
    /// with the OpenTelemetry messaging attributes), parented to the trace
    /// context the first message carries (a run's batches go out from a
    /// background task, in its submission's trace) or else to the current
    /// span; each message then carries the producer span's context, and a
    /// message id made of the span id and its place in the batch.
    async fn publish_inner(
        &self,
        exchange: &str,
        routing_key: &str,
        messages: &[Message],
        confirm: bool,
    ) -> Result<()> {
        let destination = if exchange.is_empty() {
            routing_key
        } else {
            exchange
        };
        let span = tracing::info_span!(
            "amqp.publish",
            otel.name = %format_args!("publish {destination}"),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            messaging.system = "rabbitmq",
            messaging.operation.type = "send",
            messaging.operation.name = "publish",
            messaging.destination.name = destination,
            messaging.rabbitmq.destination.routing_key = routing_key,
            messaging.batch.message_count = messages.len() as i64,
        );
        if let Some(first) = messages.first() {
            let pairs = || first.headers.iter().map(|(k, v)| (k.as_str(), v.as_str()));
            let link = propagation::extract_link(pairs());
            if link.span().span_context().is_valid() {
                // Work that only links to its origin starts a trace of its own.
                let _ = span.set_parent(opentelemetry::Context::new());
                span.add_link(link.span().span_context().clone());
            } else {
                propagation::set_parent(&span, propagation::extract(pairs()));
            }
        }
        let published = self
            .publish_traced(exchange, routing_key, messages, confirm, &span)
            .instrument(span.clone())
            .await;
        if let Err(error) = &published {
            span.record("otel.status_code", "ERROR");
            span.record("otel.status_description", error.to_string().as_str());
        }
        published
    }

    async fn publish_traced(
        &self,
        exchange: &str,
        routing_key: &str,
        messages: &[Message],
        confirm: bool,
        span: &tracing::Span,
    ) -> Result<()> {
        let context = propagation::inject_context(&span.context());
        let producer = span.context().span().span_context().span_id();
        let live = self.live().await?;
        let mut confirms = Vec::with_capacity(messages.len());
        for (i, m) in messages.iter().enumerate() {
            let props = if context.is_empty() {
                Self::properties(&m.headers)
            } else {
                let mut headers: Vec<(String, String)> = m
                    .headers
                    .iter()
                    .filter(|(k, _)| k != propagation::TRACEPARENT && k != propagation::TRACESTATE)
                    .cloned()
                    .collect();
                headers.extend(context.iter().cloned());
                Self::properties(&headers).with_message_id(format!("{producer}-{i}").into())
            };
            let confirm_fut = live
                .publisher
                .basic_publish(
                    exchange.into(),
                    routing_key.into(),
                    BasicPublishOptions::default(),
                    &m.payload,
                    props,
                )
                .await;
            match confirm_fut {
                Ok(c) => confirms.push(c),
                Err(e) => {
                    self.forget().await;
                    return Err(e.into());
                }
            }
        }
        if confirm {
            for c in confirms {
                let confirmation = c.await?;
                if !confirmation.is_ack() {
                    return Err(BusError::NotConfirmed);
                }
            }
        }
        Ok(())
    }
}

async fn declare_topology(channel: &Channel, delivery_limit: u32) -> Result<()> {
    let durable_exchange = ExchangeDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel
        .exchange_declare(
            DEAD_LETTER_EXCHANGE.into(),
            ExchangeKind::Direct,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            EVENTS_EXCHANGE.into(),
            ExchangeKind::Topic,
            durable_exchange,
            FieldTable::default(),
        )
        .await?;
    for queue in QueueName::ALL {
        let mut dead_args = FieldTable::default();
        dead_args.insert("x-queue-type".into(), long_string("quorum"));
        channel
            .queue_declare(
                queue.dead_letter().into(),
                QueueDeclareOptions::durable(),
                dead_args,
            )
            .await?;
        channel
            .queue_bind(
                queue.dead_letter().into(),
                DEAD_LETTER_EXCHANGE.into(),
                queue.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let mut args = FieldTable::default();
        args.insert("x-queue-type".into(), long_string("quorum"));
        args.insert(
            "x-dead-letter-exchange".into(),
            long_string(DEAD_LETTER_EXCHANGE),
        );
        args.insert(
            "x-dead-letter-routing-key".into(),
            long_string(queue.as_str()),
        );
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(delivery_limit as i32),
        );
        channel
            .queue_declare(queue.as_str().into(), QueueDeclareOptions::durable(), args)
            .await?;
    }
    Ok(())
}

/// A delay queue: a quorum queue whose messages expire after `delay` and
/// are then dead-lettered (at least once) onto `queue` through the default
/// exchange. Nobody consumes it.
async fn declare_delay_queue(channel: &Channel, queue: QueueName, delay: Duration) -> Result<()> {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long_string("quorum"));
    args.insert(
        "x-message-ttl".into(),
        AMQPValue::LongLongInt(delay.as_millis() as i64),
    );
    args.insert("x-dead-letter-exchange".into(), long_string(""));
    args.insert(
        "x-dead-letter-routing-key".into(),
        long_string(queue.as_str()),
    );
    args.insert(
        "x-dead-letter-strategy".into(),
        long_string("at-least-once"),
    );
    args.insert("x-overflow".into(), long_string("reject-publish"));
    channel
        .queue_declare(
            queue.delay_queue(delay).as_str().into(),
            QueueDeclareOptions::durable(),
            args,
        )
        .await?;
    Ok(())
}

fn long_string(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()))
}

/// A string field of a table.
fn text(value: Option<&AMQPValue>) -> Option<String> {
    match value? {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.as_str().to_string()),
        _ => None,
    }
}

/// Headers RabbitMQ adds to a copy it delivers or dead-letters: they
/// describe that copy, so a re-driven one starts without them.
fn is_broker_header(name: &str) -> bool {
    name == "x-death"
        || name == "x-delivery-count"
        || name.starts_with("x-first-death-")
        || name.starts_with("x-last-death-")
}

fn to_field_table(headers: &[(String, String)]) -> FieldTable {
    let mut table = FieldTable::default();
    for (k, v) in headers {
        table.insert(ShortString::from(k.as_str()), long_string(v));
    }
    table
}

fn from_properties(props: &BasicProperties) -> (Vec<(String, String)>, u32) {
    let mut headers = Vec::new();
    let mut delivery_count = 0;
    if let Some(table) = props.headers() {
        for (k, v) in table {
            match v {
                AMQPValue::LongString(s) => headers.push((
                    k.as_str().to_string(),
                    String::from_utf8_lossy(s.as_bytes()).into_owned(),
                )),
                AMQPValue::ShortString(s) => {
                    headers.push((k.as_str().to_string(), s.as_str().to_string()))
                }
                other if k.as_str() == "x-delivery-count" => {
                    delivery_count = match other {
                        AMQPValue::LongLongInt(n) => *n as u32,
                        AMQPValue::LongInt(n) => *n as u32,
                        AMQPValue::LongUInt(n) => *n,
                        AMQPValue::ShortInt(n) => *n as u32,
                        AMQPValue::ShortUInt(n) => u32::from(*n),
                        _ => 0,
                    }
                }
                _ => {}
            }
        }
    }
    (headers, delivery_count)
}

struct AmqpAcker(Acker);

impl Drop for AmqpAcker {
    fn drop(&mut self) {
        // Unsettled, the message would hold a prefetch slot until the channel
        // closes; give it back now instead. `usable` is false once settled or
        // after the channel closed (which returned the message already).
        if !self.0.usable() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let acker = self.0.clone();
        runtime.spawn(async move {
            let requeue = BasicNackOptions {
                requeue: true,
                multiple: false,
            };
            if let Err(error) = acker.nack(requeue).await {
                debug!(%error, "cannot requeue a dropped delivery");
            }
        });
    }
}

#[async_trait]
impl Acknowledge for AmqpAcker {
    async fn ack(&self) -> Result<()> {
        self.0.ack(BasicAckOptions::default()).await?;
        Ok(())
    }

    async fn nack(&self, requeue: bool) -> Result<()> {
        self.0
            .nack(BasicNackOptions {
                requeue,
                multiple: false,
            })
            .await?;
        Ok(())
    }
}

#[async_trait]
impl Bus for AmqpBus {
    async fn publish(&self, queue: QueueName, messages: Vec<Message>) -> Result<()> {
        // Published through the default exchange, straight to the queue.
        self.publish_inner("", queue.as_str(), &messages, true)
            .await
    }

    async fn publish_delayed(
        &self,
        queue: QueueName,
        messages: Vec<Message>,
        delay: Duration,
    ) -> Result<()> {
        let delay = crate::delay_for(delay);
        let name = queue.delay_queue(delay);
        if !self.delays.lock().await.contains(&name) {
            let live = self.live().await?;
            declare_delay_queue(&live.publisher, queue, delay).await?;
            self.delays.lock().await.insert(name.clone());
        }
        self.publish_inner("", &name, &messages, true).await
    }

    async fn consume(&self, queue: QueueName, prefetch: u16) -> Result<DeliveryStream> {
        let live = self.live().await?;
        let channel = live.connection.create_channel().await?;
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await?;
        let consumer = channel
            .basic_consume(
                queue.as_str().into(),
                "".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        // The channel must outlive the stream; it is moved into the closure.
        let stream = consumer.map(move |item| {
            let _keep = &channel;
            let d = item?;
            let (headers, delivery_count) = from_properties(&d.properties);
            let redriven = headers.iter().any(|(k, _)| k == REDRIVES_HEADER);
            let message_id = d.properties.message_id().as_ref().map(|id| id.to_string());
            Ok(Delivery::new(
                d.data,
                headers,
                d.redelivered || redriven,
                delivery_count,
                Box::new(AmqpAcker(d.acker)),
            )
            .with_message_id(message_id))
        });
        Ok(Box::pin(stream))
    }

    async fn publish_event(&self, routing_key: &str, message: Message) -> Result<()> {
        self.publish_inner(EVENTS_EXCHANGE, routing_key, &[message], false)
            .await
    }

    async fn subscribe(&self, pattern: &str) -> Result<EventStream> {
        let live = self.live().await?;
        let channel = live.connection.create_channel().await?;
        let queue = channel
            .queue_declare(
                "".into(),
                QueueDeclareOptions::exclusive().auto_delete(),
                FieldTable::default(),
            )
            .await?;
        channel
            .queue_bind(
                queue.name().clone(),
                EVENTS_EXCHANGE.into(),
                pattern.into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        let consumer = channel
            .basic_consume(
                queue.name().clone(),
                "".into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await?;
        let stream = consumer.filter_map(move |item| {
            let _keep = &channel;
            let event = item.ok().map(|d| {
                let (headers, _) = from_properties(&d.properties);
                Event {
                    routing_key: d.routing_key.as_str().to_string(),
                    payload: d.data,
                    headers,
                }
            });
            futures::future::ready(event)
        });
        Ok(Box::pin(stream))
    }

    async fn queue_stats(&self, queue: QueueName) -> Result<QueueStats> {
        self.stats(queue.as_str()).await
    }

    async fn dead_letter_stats(&self, queue: QueueName) -> Result<QueueStats> {
        self.stats(queue.dead_letter()).await
    }

    async fn sweep_dead_letters(
        &self,
        queue: QueueName,
        limit: usize,
        decide: Decide<'_>,
    ) -> Result<Sweep> {
        if limit == 0 {
            return Ok(Sweep::default());
        }
        let live = self.live().await?;
        let channel = live.connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let sweep = self.sweep_on(&channel, queue, limit, decide).await;
        // Gives back every message still held: the kept ones, and on an
        // error the one being settled.
        if let Err(error) = channel.close(200, "swept".into()).await {
            debug!(%error, "closing the sweep channel failed");
        }
        sweep
    }
}
