//! Binding a service's port as a restarted process meets it.

use std::time::Duration;

use gauntlet_service::startup::bind_within;

#[tokio::test]
async fn a_port_still_held_is_waited_for_then_bound() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let release = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(400));
        drop(held);
    });
    let listener = bind_within(&addr, Duration::from_secs(10))
        .await
        .expect("bound once the old listener let go");
    assert_eq!(listener.local_addr().unwrap().to_string(), addr);
    release.join().unwrap();
}

#[tokio::test]
async fn a_port_held_past_the_patience_is_an_error_naming_it() {
    let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let err = bind_within(&addr, Duration::from_millis(300))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains(&addr), "{err:#}");
    assert!(format!("{err:#}").contains("in use"), "{err:#}");
}

#[tokio::test]
async fn a_bad_address_fails_at_once() {
    let started = std::time::Instant::now();
    let err = bind_within("not-an-address", Duration::from_secs(10))
        .await
        .unwrap_err();
    assert!(format!("{err:#}").contains("not-an-address"), "{err:#}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
