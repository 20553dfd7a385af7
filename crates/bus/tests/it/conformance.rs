//! One suite of `Bus` behaviours run against both backends: RabbitMQ (each
//! test in its own virtual host) and the in-process `MemoryBus`. A behaviour
//! is written once, as an async fn over `Arc<dyn Bus>`.

use std::{
    collections::HashSet,
    future::Future,
    sync::Arc,
    time::{Duration, SystemTime},
};

use futures::StreamExt;
use gauntlet_bus::{
    Bus, DeadLetter, Delivery, DeliveryStream, Disposition, EventStream, Message, QueueName,
    QueueStats, REDRIVES_HEADER,
};

/// Every backend under test gets this limit: a message is delivered at most
/// three times.
const DELIVERY_LIMIT: u32 = 2;
/// How long something that should happen may take.
const PATIENCE: Duration = Duration::from_secs(5);
/// How long to watch for something that must not happen.
const QUIET: Duration = Duration::from_millis(300);

macro_rules! conformance_suite {
    ($($behaviour:ident),* $(,)?) => {
        mod amqp {
            use std::sync::Arc;

            use gauntlet_bus::{AmqpBus, testing::TestVhost};

            $(
                #[tokio::test]
                async fn $behaviour() {
                    let vhost = TestVhost::create().await;
                    let bus = AmqpBus::connect(&vhost.url, super::DELIVERY_LIMIT)
                        .await
                        .unwrap();
                    super::$behaviour(Arc::new(bus)).await;
                }
            )*
        }

        mod memory {
            use std::sync::Arc;

            use gauntlet_bus::MemoryBus;

            $(
                #[tokio::test]
                async fn $behaviour() {
                    super::$behaviour(Arc::new(MemoryBus::new(super::DELIVERY_LIMIT))).await;
                }
            )*
        }
    };
}

conformance_suite!(
    acked_messages_leave_the_queue,
    requeued_message_comes_back_first_with_a_higher_delivery_count,
    message_past_the_delivery_limit_is_dead_lettered,
    dead_lettered_message_is_not_redelivered,
    prefetch_bounds_unacked_deliveries,
    competing_consumers_share_work_without_duplicates,
    dropped_consumers_deliveries_go_to_another_consumer,
    dropped_delivery_goes_back_to_the_queue,
    queue_stats_count_ready_messages_and_consumers,
    star_pattern_gets_one_runs_events,
    hash_pattern_matches_zero_or_more_words,
    every_matching_subscriber_gets_the_event,
    delayed_messages_arrive_after_their_delay_with_their_headers,
    dead_letters_are_listed_oldest_first_with_their_reason_and_stay,
    redriven_dead_letter_comes_back_fresh_and_the_others_stay,
    redriven_message_dies_again_only_after_a_whole_delivery_limit,
    discarded_dead_letters_are_gone,
    a_sweep_looks_at_no_more_than_its_limit,
    a_message_published_with_a_redrive_count_is_delivered_as_redelivered,
    a_delayed_retry_comes_before_the_backlog_and_dies_with_the_tasks,
);

fn msg(s: &str) -> Message {
    Message {
        payload: s.as_bytes().to_vec(),
        headers: vec![("traceparent".into(), format!("tp-{s}"))],
    }
}

fn msgs(names: &[&str]) -> Vec<Message> {
    names.iter().map(|s| msg(s)).collect()
}

fn text(d: &Delivery) -> &str {
    std::str::from_utf8(&d.payload).unwrap()
}

async fn next(stream: &mut DeliveryStream) -> Delivery {
    tokio::time::timeout(PATIENCE, stream.next())
        .await
        .expect("a delivery in time")
        .expect("stream open")
        .expect("delivery ok")
}

async fn assert_no_delivery(stream: &mut DeliveryStream) {
    if let Ok(Some(d)) = tokio::time::timeout(QUIET, stream.next()).await {
        panic!("unexpected delivery {:?}", d.map(|d| text(&d).to_string()));
    }
}

async fn next_event(events: &mut EventStream) -> String {
    let e = tokio::time::timeout(PATIENCE, events.next())
        .await
        .expect("an event in time")
        .expect("stream open");
    e.routing_key
}

async fn assert_no_event(events: &mut EventStream) {
    if let Ok(Some(e)) = tokio::time::timeout(QUIET, events.next()).await {
        panic!("unexpected event {}", e.routing_key);
    }
}

/// Waits until `read` returns `expected`: the broker applies acks and
/// dead-lettering asynchronously.
async fn eventually<F, Fut>(expected: QueueStats, read: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = QueueStats>,
{
    let wait = async {
        loop {
            let stats = read().await;
            if stats == expected {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    if tokio::time::timeout(PATIENCE, wait).await.is_err() {
        panic!("expected {expected:?}, still {:?}", read().await);
    }
}

async fn eventually_queue(bus: &Arc<dyn Bus>, queue: QueueName, messages: u64, consumers: u32) {
    let expected = QueueStats {
        messages,
        consumers,
    };
    eventually(expected, || async { bus.queue_stats(queue).await.unwrap() }).await;
}

async fn eventually_dead(bus: &Arc<dyn Bus>, queue: QueueName, messages: u64) {
    let expected = QueueStats {
        messages,
        consumers: 0,
    };
    eventually(expected, || async {
        bus.dead_letter_stats(queue).await.unwrap()
    })
    .await;
}

async fn acked_messages_leave_the_queue(bus: Arc<dyn Bus>) {
    bus.publish(QueueName::Tasks, msgs(&["a", "b"]))
        .await
        .unwrap();
    eventually_queue(&bus, QueueName::Tasks, 2, 0).await;

    let mut stream = bus.consume(QueueName::Tasks, 10).await.unwrap();
    let a = next(&mut stream).await;
    assert_eq!(text(&a), "a");
    assert_eq!(a.header("traceparent"), Some("tp-a"));
    assert!(!a.redelivered);
    assert_eq!(a.delivery_count, 0);
    let b = next(&mut stream).await;
    assert_eq!(text(&b), "b");
    a.ack().await.unwrap();
    b.ack().await.unwrap();
    assert_no_delivery(&mut stream).await;
    drop(stream);

    eventually_queue(&bus, QueueName::Tasks, 0, 0).await;
    eventually_dead(&bus, QueueName::Tasks, 0).await;
    // The other queue is untouched.
    eventually_queue(&bus, QueueName::Reports, 0, 0).await;
}

async fn requeued_message_comes_back_first_with_a_higher_delivery_count(bus: Arc<dyn Bus>) {
    bus.publish(QueueName::Tasks, msgs(&["a", "b"]))
        .await
        .unwrap();
    let mut stream = bus.consume(QueueName::Tasks, 1).await.unwrap();

    let first = next(&mut stream).await;
    assert_eq!(text(&first), "a");
    assert!(!first.redelivered);
    assert_eq!(first.delivery_count, 0);
    first.requeue().await.unwrap();

    // Returned messages are served before the ones never delivered.
    let again = next(&mut stream).await;
    assert_eq!(text(&again), "a");
    assert!(again.redelivered);
    assert_eq!(again.delivery_count, 1);
    assert_eq!(again.header("traceparent"), Some("tp-a"));
    again.ack().await.unwrap();

    let b = next(&mut stream).await;
    assert_eq!(text(&b), "b");
    assert!(!b.redelivered);
    b.ack().await.unwrap();
}

async fn message_past_the_delivery_limit_is_dead_lettered(bus: Arc<dyn Bus>) {
    bus.publish(QueueName::Reports, vec![msg("poison")])
        .await
        .unwrap();
    let mut stream = bus.consume(QueueName::Reports, 1).await.unwrap();
    for expected_count in 0..=DELIVERY_LIMIT {
        let d = next(&mut stream).await;
        assert_eq!(text(&d), "poison");
        assert_eq!(d.delivery_count, expected_count);
        d.requeue().await.unwrap();
    }
    assert_no_delivery(&mut stream).await;
    eventually_dead(&bus, QueueName::Reports, 1).await;
    eventually_queue(&bus, QueueName::Reports, 0, 1).await;
    eventually_dead(&bus, QueueName::Tasks, 0).await;
}

async fn dead_lettered_message_is_not_redelivered(bus: Arc<dyn Bus>) {
    bus.publish(QueueName::Tasks, msgs(&["poison", "fine"]))
        .await
        .unwrap();
    let mut stream = bus.consume(QueueName::Tasks, 1).await.unwrap();
    let poison = next(&mut stream).await;
    assert_eq!(text(&poison), "poison");
    poison.dead_letter().await.unwrap();
    let fine = next(&mut stream).await;
    assert_eq!(text(&fine), "fine");
    fine.ack().await.unwrap();
    assert_no_delivery(&mut stream).await;
    eventually_dead(&bus, QueueName::Tasks, 1).await;
    eventually_queue(&bus, QueueName::Tasks, 0, 1).await;
}

async fn prefetch_bounds_unacked_deliveries(bus: Arc<dyn Bus>) {
    let names = ["m0", "m1", "m2", "m3", "m4"];
    bus.publish(QueueName::Tasks, msgs(&names)).await.unwrap();
    let mut stream = bus.consume(QueueName::Tasks, 2).await.unwrap();

    let mut held = vec![next(&mut stream).await, next(&mut stream).await];
    assert_no_delivery(&mut stream).await;
    eventually_queue(&bus, QueueName::Tasks, 3, 1).await;

    let mut seen = Vec::new();
    while let Some(d) = held.pop() {
        seen.push(text(&d).to_string());
        d.ack().await.unwrap();
        if seen.len() + held.len() < names.len() {
            held.push(next(&mut stream).await);
            // Still one slot short of a third delivery.
            assert_eq!(held.len(), 2.min(names.len() - seen.len()));
        }
    }
    seen.sort();
    assert_eq!(seen, names);
    assert_no_delivery(&mut stream).await;
}

async fn competing_consumers_share_work_without_duplicates(bus: Arc<dyn Bus>) {
    let mut one = bus.consume(QueueName::Tasks, 1).await.unwrap();
    let mut two = bus.consume(QueueName::Tasks, 1).await.unwrap();
    eventually_queue(&bus, QueueName::Tasks, 0, 2).await;
    let names = ["t0", "t1", "t2", "t3", "t4", "t5"];
    bus.publish(QueueName::Tasks, msgs(&names)).await.unwrap();

    let mut seen = HashSet::new();
    // Each consumer holds one message at a time, so both must take part.
    for _ in 0..names.len() / 2 {
        for stream in [&mut one, &mut two] {
            let d = next(stream).await;
            assert!(seen.insert(text(&d).to_string()), "delivered twice");
            assert!(!d.redelivered);
            d.ack().await.unwrap();
        }
    }
    assert_eq!(seen, names.iter().map(|s| s.to_string()).collect());
    assert_no_delivery(&mut one).await;
    assert_no_delivery(&mut two).await;
    eventually_queue(&bus, QueueName::Tasks, 0, 2).await;
}

async fn dropped_consumers_deliveries_go_to_another_consumer(bus: Arc<dyn Bus>) {
    bus.publish(QueueName::Tasks, msgs(&["a", "b"]))
        .await
        .unwrap();
    let mut crashed = bus.consume(QueueName::Tasks, 10).await.unwrap();
    let a = next(&mut crashed).await;
    let b = next(&mut crashed).await;
    let mut survivor = bus.consume(QueueName::Tasks, 10).await.unwrap();
    assert_no_delivery(&mut survivor).await;

    // The consumer goes away with its deliveries still in hand.
    drop(crashed);
    let again_a = next(&mut survivor).await;
    let again_b = next(&mut survivor).await;
    assert_eq!((text(&again_a), text(&again_b)), ("a", "b"));
    for d in [&again_a, &again_b] {
        assert!(d.redelivered);
        assert_eq!(d.delivery_count, 1);
    }

    // Settling the stale copies does nothing to the redelivered ones.
    a.ack().await.unwrap();
    b.dead_letter().await.unwrap();
    assert_no_delivery(&mut survivor).await;
    again_a.ack().await.unwrap();
    again_b.ack().await.unwrap();
    eventually_queue(&bus, QueueName::Tasks, 0, 1).await;
    eventually_dead(&bus, QueueName::Tasks, 0).await;
}

async fn dropped_delivery_goes_back_to_the_queue(bus: Arc<dyn Bus>) {
    bus.publish(QueueName::Tasks, vec![msg("a")]).await.unwrap();
    let mut stream = bus.consume(QueueName::Tasks, 1).await.unwrap();
    let d = next(&mut stream).await;
    drop(d);
    let again = next(&mut stream).await;
    assert_eq!(text(&again), "a");
    assert!(again.redelivered);
    assert_eq!(again.delivery_count, 1);
    again.ack().await.unwrap();
    assert_no_delivery(&mut stream).await;
}

async fn queue_stats_count_ready_messages_and_consumers(bus: Arc<dyn Bus>) {
    eventually_queue(&bus, QueueName::Tasks, 0, 0).await;
    bus.publish(QueueName::Tasks, msgs(&["a", "b", "c"]))
        .await
        .unwrap();
    eventually_queue(&bus, QueueName::Tasks, 3, 0).await;

    let mut stream = bus.consume(QueueName::Tasks, 1).await.unwrap();
    let a = next(&mut stream).await;
    // The unacknowledged one is not counted.
    eventually_queue(&bus, QueueName::Tasks, 2, 1).await;
    let idle = bus.consume(QueueName::Reports, 1).await.unwrap();
    eventually_queue(&bus, QueueName::Reports, 0, 1).await;
    eventually_queue(&bus, QueueName::Tasks, 2, 1).await;

    a.ack().await.unwrap();
    next(&mut stream).await.ack().await.unwrap();
    eventually_queue(&bus, QueueName::Tasks, 0, 1).await;
    drop(stream);
    drop(idle);
    eventually_queue(&bus, QueueName::Tasks, 1, 0).await;
    eventually_queue(&bus, QueueName::Reports, 0, 0).await;
}

async fn star_pattern_gets_one_runs_events(bus: Arc<dyn Bus>) {
    let mut events = bus.subscribe("run.r1.*").await.unwrap();
    for key in [
        "run.r2.progress",
        "run.r1.progress",
        "run.r1",
        "run.r1.progress.detail",
        "run.r11.progress",
        "run.r1.done",
    ] {
        bus.publish_event(key, msg(key)).await.unwrap();
    }
    let e = tokio::time::timeout(PATIENCE, events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.routing_key, "run.r1.progress");
    assert_eq!(e.payload, b"run.r1.progress");
    assert_eq!(
        e.headers,
        vec![("traceparent".to_string(), "tp-run.r1.progress".to_string())]
    );
    assert_eq!(next_event(&mut events).await, "run.r1.done");
    assert_no_event(&mut events).await;
}

async fn hash_pattern_matches_zero_or_more_words(bus: Arc<dyn Bus>) {
    let mut run = bus.subscribe("run.#").await.unwrap();
    let mut done = bus.subscribe("run.#.done").await.unwrap();
    for key in [
        "run",
        "run.r1",
        "runs.r1",
        "run.done",
        "run.r1.progress",
        "run.r1.batch.b7.done",
        "other.run.done",
    ] {
        bus.publish_event(key, msg(key)).await.unwrap();
    }
    for expected in [
        "run",
        "run.r1",
        "run.done",
        "run.r1.progress",
        "run.r1.batch.b7.done",
    ] {
        assert_eq!(next_event(&mut run).await, expected);
    }
    assert_no_event(&mut run).await;
    for expected in ["run.done", "run.r1.batch.b7.done"] {
        assert_eq!(next_event(&mut done).await, expected);
    }
    assert_no_event(&mut done).await;
}

async fn every_matching_subscriber_gets_the_event(bus: Arc<dyn Bus>) {
    let mut first = bus.subscribe("run.r1.*").await.unwrap();
    let mut second = bus.subscribe("#").await.unwrap();
    let gone = bus.subscribe("#").await.unwrap();
    drop(gone);
    bus.publish_event("run.r1.done", msg("x")).await.unwrap();
    assert_eq!(next_event(&mut first).await, "run.r1.done");
    assert_eq!(next_event(&mut second).await, "run.r1.done");
    // A subscription made after an event does not see it.
    let mut late = bus.subscribe("#").await.unwrap();
    assert_no_event(&mut late).await;
}

async fn delayed_messages_arrive_after_their_delay_with_their_headers(bus: Arc<dyn Bus>) {
    let mut stream = bus.consume(QueueName::Tasks, 10).await.unwrap();
    let sent = std::time::Instant::now();
    // 700 ms is rounded up to the 1 s delay.
    bus.publish_delayed(
        QueueName::Tasks,
        msgs(&["later", "too"]),
        Duration::from_millis(700),
    )
    .await
    .unwrap();
    bus.publish(QueueName::Tasks, msgs(&["now"])).await.unwrap();
    let now = next(&mut stream).await;
    assert_eq!(text(&now), "now");
    now.ack().await.unwrap();

    let later = next(&mut stream).await;
    let waited = sent.elapsed();
    assert!(
        waited >= Duration::from_millis(950),
        "arrived after {waited:?}"
    );
    assert_eq!(text(&later), "later");
    assert_eq!(later.header("traceparent"), Some("tp-later"));
    assert!(!later.redelivered);
    assert_eq!(later.delivery_count, 0);
    let too = next(&mut stream).await;
    assert_eq!(text(&too), "too");
    later.ack().await.unwrap();
    too.ack().await.unwrap();
    assert_no_delivery(&mut stream).await;
    eventually_dead(&bus, QueueName::Tasks, 0).await;
}

fn letter_text(d: &DeadLetter) -> &str {
    std::str::from_utf8(&d.payload).unwrap()
}

/// Publishes `names` to the tasks queue and has a consumer reject each one
/// (`Delivery::dead_letter`), in order; returns once all are dead letters.
async fn reject_all(bus: &Arc<dyn Bus>, names: &[&str]) {
    bus.publish(QueueName::Tasks, msgs(names)).await.unwrap();
    let mut stream = bus.consume(QueueName::Tasks, 1).await.unwrap();
    for name in names {
        let d = next(&mut stream).await;
        assert_eq!(text(&d), *name);
        d.dead_letter().await.unwrap();
    }
    drop(stream);
    eventually_dead(bus, QueueName::Tasks, names.len() as u64).await;
}

/// Publishes `name` and gives it back until the delivery limit sends it to
/// the dead-letter queue; returns once it is there.
async fn exhaust(bus: &Arc<dyn Bus>, name: &str, dead_before: u64) {
    bus.publish(QueueName::Tasks, vec![msg(name)])
        .await
        .unwrap();
    let mut stream = bus.consume(QueueName::Tasks, 1).await.unwrap();
    for _ in 0..=DELIVERY_LIMIT {
        let d = next(&mut stream).await;
        assert_eq!(text(&d), name);
        d.requeue().await.unwrap();
    }
    assert_no_delivery(&mut stream).await;
    drop(stream);
    eventually_dead(bus, QueueName::Tasks, dead_before + 1).await;
}

fn assert_recent(at: Option<SystemTime>) {
    let at = at.expect("the time it was dead-lettered");
    let age = SystemTime::now()
        .duration_since(at)
        .unwrap_or(Duration::ZERO);
    assert!(age < Duration::from_secs(60), "dead-lettered {age:?} ago");
}

async fn dead_letters_are_listed_oldest_first_with_their_reason_and_stay(bus: Arc<dyn Bus>) {
    reject_all(&bus, &["rejected"]).await;
    exhaust(&bus, "worn-out", 1).await;

    for _ in 0..3 {
        let listed = bus.dead_letters(QueueName::Tasks, 100).await.unwrap();
        let names: Vec<&str> = listed.iter().map(letter_text).collect();
        assert_eq!(names, ["rejected", "worn-out"]);
        let (rejected, worn_out) = (&listed[0], &listed[1]);
        assert_eq!(rejected.reason.as_deref(), Some("rejected"));
        assert_eq!(worn_out.reason.as_deref(), Some("delivery_limit"));
        assert_eq!(worn_out.deliveries, Some(DELIVERY_LIMIT + 1));
        for d in &listed {
            // The publisher's headers, none of the broker's bookkeeping.
            assert_eq!(
                d.headers,
                vec![("traceparent".to_string(), format!("tp-{}", letter_text(d)))]
            );
            assert_eq!(d.redrives, 0);
            assert_recent(d.dead_lettered_at);
        }
        // Listing takes nothing away.
        eventually_dead(&bus, QueueName::Tasks, 2).await;
    }
    assert!(
        bus.dead_letters(QueueName::Reports, 100)
            .await
            .unwrap()
            .is_empty()
    );
    eventually_queue(&bus, QueueName::Tasks, 0, 0).await;
}

async fn redriven_dead_letter_comes_back_fresh_and_the_others_stay(bus: Arc<dyn Bus>) {
    reject_all(&bus, &["a", "b", "c"]).await;
    let sweep = bus
        .sweep_dead_letters(QueueName::Tasks, 100, &|d| {
            if letter_text(d) == "b" {
                Disposition::Redrive
            } else {
                Disposition::Keep
            }
        })
        .await
        .unwrap();
    let redriven: Vec<&str> = sweep.redriven.iter().map(letter_text).collect();
    let kept: Vec<&str> = sweep.kept.iter().map(letter_text).collect();
    assert_eq!(redriven, ["b"]);
    assert_eq!(kept, ["a", "c"]);
    assert!(sweep.discarded.is_empty());

    eventually_dead(&bus, QueueName::Tasks, 2).await;
    let mut stream = bus.consume(QueueName::Tasks, 10).await.unwrap();
    let b = next(&mut stream).await;
    assert_eq!(text(&b), "b");
    // A fresh delivery count, but marked as work that was tried before.
    assert_eq!(b.delivery_count, 0);
    assert!(b.redelivered);
    assert_eq!(b.header("traceparent"), Some("tp-b"));
    assert_eq!(b.header(REDRIVES_HEADER), Some("1"));
    b.ack().await.unwrap();
    assert_no_delivery(&mut stream).await;

    let left: Vec<String> = bus
        .dead_letters(QueueName::Tasks, 100)
        .await
        .unwrap()
        .iter()
        .map(|d| letter_text(d).to_string())
        .collect();
    assert_eq!(left, ["a", "c"]);
}

async fn redriven_message_dies_again_only_after_a_whole_delivery_limit(bus: Arc<dyn Bus>) {
    exhaust(&bus, "poison", 0).await;
    let sweep = bus
        .sweep_dead_letters(QueueName::Tasks, 100, &|_| Disposition::Redrive)
        .await
        .unwrap();
    assert_eq!(sweep.redriven.len(), 1);
    eventually_dead(&bus, QueueName::Tasks, 0).await;

    // Every delivery the limit allows, again.
    let mut stream = bus.consume(QueueName::Tasks, 1).await.unwrap();
    for expected_count in 0..=DELIVERY_LIMIT {
        let d = next(&mut stream).await;
        assert_eq!(text(&d), "poison");
        assert_eq!(d.delivery_count, expected_count);
        assert_eq!(d.header(REDRIVES_HEADER), Some("1"));
        d.requeue().await.unwrap();
    }
    assert_no_delivery(&mut stream).await;
    drop(stream);
    eventually_dead(&bus, QueueName::Tasks, 1).await;
    let dead = bus.dead_letters(QueueName::Tasks, 100).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].redrives, 1);
    assert_eq!(dead[0].reason.as_deref(), Some("delivery_limit"));
    // The next copy counts on.
    let sweep = bus
        .sweep_dead_letters(QueueName::Tasks, 100, &|_| Disposition::Redrive)
        .await
        .unwrap();
    assert_eq!(sweep.redriven.len(), 1);
    let mut stream = bus.consume(QueueName::Tasks, 1).await.unwrap();
    let d = next(&mut stream).await;
    assert_eq!(d.header(REDRIVES_HEADER), Some("2"));
    d.ack().await.unwrap();
}

async fn discarded_dead_letters_are_gone(bus: Arc<dyn Bus>) {
    reject_all(&bus, &["keep", "drop"]).await;
    let sweep = bus
        .sweep_dead_letters(QueueName::Tasks, 100, &|d| {
            if letter_text(d) == "drop" {
                Disposition::Discard
            } else {
                Disposition::Keep
            }
        })
        .await
        .unwrap();
    assert_eq!(sweep.discarded.len(), 1);
    assert_eq!(letter_text(&sweep.discarded[0]), "drop");
    eventually_dead(&bus, QueueName::Tasks, 1).await;
    let left = bus.dead_letters(QueueName::Tasks, 100).await.unwrap();
    assert_eq!(left.len(), 1);
    assert_eq!(letter_text(&left[0]), "keep");
    // Nothing went back to work.
    let mut stream = bus.consume(QueueName::Tasks, 10).await.unwrap();
    assert_no_delivery(&mut stream).await;
}

async fn a_sweep_looks_at_no_more_than_its_limit(bus: Arc<dyn Bus>) {
    reject_all(&bus, &["m0", "m1", "m2", "m3"]).await;
    let listed = bus.dead_letters(QueueName::Tasks, 2).await.unwrap();
    assert_eq!(
        listed.iter().map(letter_text).collect::<Vec<_>>(),
        ["m0", "m1"]
    );
    let sweep = bus
        .sweep_dead_letters(QueueName::Tasks, 3, &|_| Disposition::Redrive)
        .await
        .unwrap();
    assert_eq!(
        sweep.redriven.iter().map(letter_text).collect::<Vec<_>>(),
        ["m0", "m1", "m2"]
    );
    eventually_dead(&bus, QueueName::Tasks, 1).await;
    eventually_queue(&bus, QueueName::Tasks, 3, 0).await;
    assert!(
        bus.sweep_dead_letters(QueueName::Tasks, 0, &|_| Disposition::Discard)
            .await
            .unwrap()
            .is_empty()
    );
    eventually_dead(&bus, QueueName::Tasks, 1).await;
}

async fn a_message_published_with_a_redrive_count_is_delivered_as_redelivered(bus: Arc<dyn Bus>) {
    let mut again = msg("again");
    again.headers.push((REDRIVES_HEADER.into(), "1".into()));
    bus.publish(QueueName::Tasks, vec![msg("first"), again])
        .await
        .unwrap();
    let mut stream = bus.consume(QueueName::Tasks, 10).await.unwrap();
    let first = next(&mut stream).await;
    assert!(!first.redelivered);
    let again = next(&mut stream).await;
    assert_eq!(text(&again), "again");
    assert!(again.redelivered);
    assert_eq!(again.delivery_count, 0);
    first.ack().await.unwrap();
    again.ack().await.unwrap();
}

async fn a_delayed_retry_comes_before_the_backlog_and_dies_with_the_tasks(bus: Arc<dyn Bus>) {
    // A backlog of new batches nobody is taking yet, and a retry due in 1 s.
    let backlog: Vec<String> = (0..50).map(|i| format!("new-{i}")).collect();
    let names: Vec<&str> = backlog.iter().map(String::as_str).collect();
    bus.publish(QueueName::Tasks, msgs(&names)).await.unwrap();
    bus.publish_delayed(QueueName::Retries, msgs(&["retry"]), Duration::from_secs(1))
        .await
        .unwrap();
    eventually_queue(&bus, QueueName::Retries, 1, 0).await;
    eventually_queue(&bus, QueueName::Tasks, 50, 0).await;

    // Its own queue hands it over at once, whatever waits in `Tasks`.
    let mut retries = bus.consume(QueueName::Retries, 1).await.unwrap();
    for _ in 0..=DELIVERY_LIMIT {
        let d = next(&mut retries).await;
        assert_eq!(text(&d), "retry");
        d.requeue().await.unwrap();
    }
    assert_no_delivery(&mut retries).await;
    // Past its delivery limit it joins the dead letters of `Tasks`, where
    // operators list and redrive them, with its reason.
    eventually_dead(&bus, QueueName::Tasks, 1).await;
    let dead = bus.dead_letters(QueueName::Tasks, 10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(letter_text(&dead[0]), "retry");
    assert_eq!(dead[0].reason.as_deref(), Some("delivery_limit"));
    assert_eq!(dead[0].deliveries, Some(DELIVERY_LIMIT + 1));
    eventually_queue(&bus, QueueName::Tasks, 50, 0).await;
}
