use std::time::Duration;

use futures::StreamExt;
use gauntlet_bus::{AmqpBus, Bus, Message, QueueName, testing::TestVhost};

fn msg(s: &str) -> Message {
    Message {
        payload: s.as_bytes().to_vec(),
        headers: vec![("traceparent".into(), format!("tp-{s}"))],
    }
}

async fn next(stream: &mut gauntlet_bus::DeliveryStream) -> gauntlet_bus::Delivery {
    tokio::time::timeout(Duration::from_secs(10), stream.next())
        .await
        .expect("a delivery within 10 s")
        .expect("stream open")
        .expect("delivery ok")
}

#[tokio::test]
async fn published_batches_are_delivered_with_headers_and_acked_once() {
    let vhost = TestVhost::create().await;
    let bus = AmqpBus::connect(&vhost.url, 3).await.unwrap();
    bus.publish(QueueName::Tasks, vec![msg("a"), msg("b")])
        .await
        .unwrap();
    assert_eq!(bus.queue_stats(QueueName::Tasks).await.unwrap().messages, 2);

    let mut stream = bus.consume(QueueName::Tasks, 10).await.unwrap();
    let a = next(&mut stream).await;
    assert_eq!(a.payload, b"a");
    assert_eq!(a.header("traceparent"), Some("tp-a"));
    assert!(!a.redelivered);
    let b = next(&mut stream).await;
    a.ack().await.unwrap();
    b.ack().await.unwrap();
    drop(stream);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(bus.queue_stats(QueueName::Tasks).await.unwrap().messages, 0);
}

#[tokio::test]
async fn requeued_message_comes_back_and_dead_letters_after_the_limit() {
    let vhost = TestVhost::create().await;
    let bus = AmqpBus::connect(&vhost.url, 2).await.unwrap();
    bus.publish(QueueName::Tasks, vec![msg("poison")])
        .await
        .unwrap();
    let mut stream = bus.consume(QueueName::Tasks, 1).await.unwrap();

    let first = next(&mut stream).await;
    assert_eq!(first.delivery_count, 0);
    first.requeue().await.unwrap();
    let second = next(&mut stream).await;
    assert!(second.redelivered);
    assert_eq!(second.delivery_count, 1);
    second.requeue().await.unwrap();
    let third = next(&mut stream).await;
    assert_eq!(third.delivery_count, 2);
    // Past the delivery limit of 2 the broker dead-letters instead of redelivering.
    third.requeue().await.unwrap();

    let dead = async {
        loop {
            let conn = lapin::Connection::connect(&vhost.url, Default::default())
                .await
                .unwrap();
            let ch = conn.create_channel().await.unwrap();
            let q = ch
                .queue_declare(
                    QueueName::Tasks.dead_letter().into(),
                    lapin::options::QueueDeclareOptions::default().passive(),
                    Default::default(),
                )
                .await
                .unwrap();
            if q.message_count() == 1 {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), dead)
        .await
        .expect("the message reaches the dead-letter queue");
}

#[tokio::test]
async fn subscribers_get_only_matching_events() {
    let vhost = TestVhost::create().await;
    let bus = AmqpBus::connect(&vhost.url, 3).await.unwrap();
    let mut events = bus.subscribe("run.r1.*").await.unwrap();
    bus.publish_event("run.r2.progress", msg("other"))
        .await
        .unwrap();
    bus.publish_event("run.r1.progress", msg("mine"))
        .await
        .unwrap();
    let e = tokio::time::timeout(Duration::from_secs(10), events.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(e.routing_key, "run.r1.progress");
    assert_eq!(e.payload, b"mine");
}
