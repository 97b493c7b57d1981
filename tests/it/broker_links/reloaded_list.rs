//! A broker list changed by a reload (issue 28) is one value both links
//! follow, across failovers, and nothing a reload does can crash the relay.
//! Real mosquittos, killed with SIGKILL.

use std::io::Write;
use std::time::{Duration, Instant};

use crate::support::{
    append, broker_list, device_link_on, numbered_command as command, publish_link_on, read_json,
    run_bin, wait_until, Broker, Relay, Subscriber, TempDir, COMMANDS, WAIT,
};

/// Reloads with `MQTT_BROKER = brokers` and waits for the line saying so.
fn reload_brokers(relay: &Relay, brokers: &[u16]) {
    let before = relay.log().matches("MQTT_BROKER").count();
    append(
        &relay.conf,
        &format!("MQTT_BROKER = {}\n", broker_list(brokers)),
    );
    relay.signal("HUP");
    relay.expect_log_count("MQTT_BROKER", before + 1, WAIT);
    assert!(
        relay.log().contains("MQTT_BROKER applied"),
        "{}",
        relay.log()
    );
}

/// The relay is still running (no panic, no abort).
fn expect_alive(relay: &mut Relay) {
    assert!(
        relay.wait_exit(Duration::from_millis(100)).is_none(),
        "the relay exited; log:\n{}",
        relay.log()
    );
}

/// Finding: `MQTT_BROKER = A, X` reloaded as `A, X, Y, B`, then A killed,
/// aborted the relay (index out of bounds in the device link). Grown, then
/// shrunk under a live link, the list is followed by both links through
/// two failovers, and commands keep arriving.
#[test]
fn a_broker_list_grown_and_shrunk_by_reload_is_failed_over_across_by_both_links() {
    let mut a = Broker::start();
    let (x, y) = (Broker::unstarted(""), Broker::unstarted(""));
    let mut b = Broker::start();
    let mut relay = Relay::start_listing(&[a.port, x.port], &[("MQTT_KEEPALIVE", "5")]);
    relay.expect_log(&publish_link_on(a.port), WAIT);
    relay.expect_subscribed();

    reload_brokers(&relay, &[a.port, x.port, y.port, b.port]);
    a.stop();
    relay.expect_log(&publish_link_on(b.port), WAIT);
    relay.expect_log(&device_link_on(b.port), WAIT);
    relay.expect_subscribed_times(2);
    expect_alive(&mut relay);
    let sub_b = Subscriber::new(b.port, COMMANDS);
    let mut backend = relay.connect();
    backend.write_all(command(1).as_bytes()).unwrap();
    assert!(sub_b.recv(WAIT).is_some(), "{}", relay.log());

    // Shrunk to A alone while on B: B is left at the next connection, and
    // neither link dials it again.
    a.restart();
    reload_brokers(&relay, &[a.port]);
    let shrunk_at = relay.log().len();
    b.stop();
    relay.expect_log(&publish_link_on(a.port), WAIT);
    let moved = Instant::now();
    relay.expect_log(&device_link_on(a.port), WAIT);
    assert!(
        moved.elapsed() < Duration::from_secs(10),
        "the device link followed late; log:\n{}",
        relay.log()
    );
    expect_alive(&mut relay);
    let sub_a = Subscriber::new(a.port, COMMANDS);
    backend.write_all(command(2).as_bytes()).unwrap();
    assert!(sub_a.recv(WAIT).is_some(), "{}", relay.log());
    let after = relay.log()[shrunk_at..].to_string();
    let b_named = format!("trying broker 127.0.0.1:{}", b.port);
    assert!(!after.contains(&b_named), "B was dialed again:\n{after}");
}

/// Finding: a reload from one broker to another left the device link
/// redialing the removed one for 45 s and more once it died (status exit
/// 3). It follows the publish link to the new broker at once.
#[test]
fn after_a_reload_to_another_broker_the_device_link_follows_the_publish_link_at_once() {
    let mut a = Broker::start();
    let b = Broker::start();
    let dir = TempDir::new("reload-follow");
    let status_file = dir.path().join("status.json");
    let pid_file = dir.path().join("relay.pid");
    let relay = Relay::start_listing(
        &[a.port],
        &[
            ("STATUS_FILE", &status_file.to_string_lossy()),
            ("PID_FILE", &pid_file.to_string_lossy()),
            ("STATUS_INTERVAL", "600"),
        ],
    );
    relay.expect_connected();
    relay.expect_subscribed();
    reload_brokers(&relay, &[b.port]);
    let killed = Instant::now();
    a.stop();
    relay.expect_log(&publish_link_on(b.port), WAIT);
    relay.expect_log(&device_link_on(b.port), WAIT);
    relay.expect_subscribed_times(2);
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(10),
        "the device link took {took:?}; log:\n{}",
        relay.log()
    );
    assert!(
        wait_until(Duration::from_secs(3), || {
            let s = read_json(&status_file);
            s["device_link"]["subscribed"] == true
                && s["broker"]["address"] == format!("127.0.0.1:{}", b.port)
        }),
        "{}",
        read_json(&status_file)
    );
    let conf = relay.conf.to_string_lossy().into_owned();
    let (code, out, err) = run_bin(&["status", "-c", &conf], None);
    assert_eq!(code, 0, "{out}{err}");
}

/// With every broker away the publish link waits out its backoff (up to
/// 30 s); a reload that names a new list ends the wait: its first broker is
/// dialed at once, and the device link follows.
#[test]
fn a_new_broker_list_ends_the_wait_after_every_broker_failed() {
    let away = Broker::unstarted("");
    let b = Broker::start();
    let relay = Relay::start(away.port, &[("LOG_LEVEL", "debug")]);
    // 1 + 2 + 4 s of failures: the next wait is 8 s.
    relay.expect_log("retrying in 8 s", WAIT);
    let reloaded = Instant::now();
    reload_brokers(&relay, &[b.port]);
    relay.expect_log(&publish_link_on(b.port), WAIT);
    relay.expect_log(&device_link_on(b.port), WAIT);
    let took = reloaded.elapsed();
    assert!(
        took < Duration::from_secs(4),
        "took {took:?}; log:\n{}",
        relay.log()
    );
}
