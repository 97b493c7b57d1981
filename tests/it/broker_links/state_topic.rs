//! The relay's own state on the broker: a retained `online`, `offline` on a
//! clean stop and by the last will otherwise, under a client id that stays
//! the same across restarts.

use std::time::Duration;

use crate::support::{relay_with_subscriber, Broker, Cutter, Message, Relay, Subscriber, WAIT};

fn state_subscriber(broker: &Broker) -> Subscriber {
    Subscriber::new(broker.port, "/service/ms500-relay/+/state")
}

fn state_of(m: &Message) -> serde_json::Value {
    serde_json::from_slice(&m.payload).expect("state is JSON")
}

/// The `state` of the next state message on `sub`, if one comes.
fn next_state(sub: &Subscriber) -> Option<serde_json::Value> {
    sub.recv(WAIT).map(|m| state_of(&m)["state"].clone())
}

/// The `state` a new subscriber learns at once: the retained one.
fn retained_state(broker: &Broker) -> Option<serde_json::Value> {
    next_state(&state_subscriber(broker))
}

#[test]
fn after_a_lost_connection_the_relay_says_online_again_over_its_will() {
    let broker = Broker::start();
    let cutter = Cutter::new(broker.port);
    let sub = state_subscriber(&broker);
    let relay = Relay::start(cutter.port, &[("MQTT_CLIENT_ID", "gw-cut")]);
    assert_eq!(next_state(&sub), Some("online".into()));
    // The network drops the connection: the broker publishes the will...
    cutter.cut();
    assert_eq!(next_state(&sub), Some("offline".into()));
    // ...and the relay, connected again, replaces it.
    assert_eq!(next_state(&sub), Some("online".into()));
    assert_eq!(retained_state(&broker), Some("online".into()), "retained");
    drop(relay);
}

#[test]
fn the_state_topic_says_online_then_offline_on_a_clean_stop_and_by_the_will_after_kill_9() {
    let broker = Broker::start();
    let sub = state_subscriber(&broker);
    let mut relay = Relay::start(
        broker.port,
        &[("MQTT_CLIENT_ID", "gw-test-1"), ("MQTT_KEEPALIVE", "5")],
    );
    let online = sub.recv(WAIT).expect("online published");
    assert_eq!(online.topic, "/service/ms500-relay/gw-test-1/state");
    let v = state_of(&online);
    assert_eq!(v["state"], "online");
    assert_eq!(v["client_id"], "gw-test-1");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["pid"], relay.pid());
    assert!(v["started"].as_str().is_some_and(|t| t.ends_with('Z')));
    assert!(String::from_utf8_lossy(&online.payload).starts_with(r#"{"state":"online""#));

    relay.signal("TERM");
    assert_eq!(relay.wait_exit(WAIT).and_then(|s| s.code()), Some(0));
    let offline = sub.recv(WAIT).expect("offline on a clean stop");
    assert_eq!(state_of(&offline)["state"], "offline");
    // Retained: a newcomer learns it at once.
    assert_eq!(retained_state(&broker), Some("offline".into()));

    // Killed: the broker publishes the last will.
    relay.relaunch();
    assert_eq!(next_state(&sub), Some("online".into()));
    relay.crash();
    let will = sub.recv(WAIT).expect("the last will");
    assert_eq!(state_of(&will)["state"], "offline");
    assert_eq!(retained_state(&broker), Some("offline".into()));
}

#[test]
fn an_empty_state_topic_publishes_nothing() {
    let (_broker, relay, sub) =
        relay_with_subscriber("/service/ms500-relay/#", &[("STATE_TOPIC", "")]);
    relay.expect_connected();
    sub.assert_silent(Duration::from_millis(800));
}

#[test]
fn the_default_client_id_is_stable_and_two_relays_on_one_host_set_their_own() {
    let (_broker, mut relay, sub) = relay_with_subscriber("/service/ms500-relay/+/state", &[]);
    let first = sub.recv(WAIT).expect("state").topic;
    assert!(
        first.starts_with("/service/ms500-relay/ms500-relay-"),
        "{first}"
    );
    assert!(
        !first.contains(&format!("-{}/", relay.pid())),
        "no pid in it: {first}"
    );
    relay.relaunch();
    let again = sub.recv(WAIT).expect("state").topic;
    assert_eq!(first, again, "the same id after a restart");
}
