//! MQTT clients of the test: a subscriber on its own thread that keeps what
//! arrives, short-lived publishers (a device's heartbeat or reply), and the
//! thread that drives a simulated device's connection.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

use super::{heartbeat_topic, reply_topic, COMMANDS, WAIT};

/// One message seen by a subscriber.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub topic: String,
    pub payload: Vec<u8>,
    /// When the subscriber's thread received it.
    pub at: Instant,
}

/// A real MQTT subscriber on its own thread.
pub struct Subscriber {
    rx: crossbeam_channel::Receiver<Message>,
    pub client: Client,
    /// Set when the Subscriber is dropped: its thread then stops retrying
    /// a broker that may be gone for good.
    dropped: Arc<std::sync::atomic::AtomicBool>,
}

impl Subscriber {
    /// Subscribes to `filter` (QoS 1) and waits for the SubAck.
    pub fn new(broker_port: u16, filter: &str) -> Subscriber {
        Subscriber::with_session(broker_port, filter, None)
    }

    /// With `Some(id)`: a persistent session under that client id, so messages
    /// published while the broker restarts are not missed... as far as the broker keeps them.
    pub fn with_session(broker_port: u16, filter: &str, id: Option<&str>) -> Subscriber {
        Subscriber::subscribe(broker_port, filter, id, QoS::AtLeastOnce)
    }

    /// A subscriber at `qos` (a clean session).
    pub fn with_qos(broker_port: u16, filter: &str, qos: QoS) -> Subscriber {
        Subscriber::subscribe(broker_port, filter, None, qos)
    }

    fn subscribe(broker_port: u16, filter: &str, id: Option<&str>, qos: QoS) -> Subscriber {
        static N: AtomicU32 = AtomicU32::new(0);
        let client_id = id.map(str::to_string).unwrap_or_else(|| {
            format!(
                "test-sub-{}-{}",
                std::process::id(),
                N.fetch_add(1, Ordering::SeqCst)
            )
        });
        let mut opts = MqttOptions::new(client_id, "127.0.0.1", broker_port);
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        opts.set_clean_session(id.is_none());
        let (client, mut conn) = Client::new(opts, 64);
        let (tx, rx) = crossbeam_channel::unbounded();
        let (ready_tx, ready_rx) = crossbeam_channel::bounded(1);
        let sub_client = client.clone();
        let filter = filter.to_string();
        let dropped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let gone = dropped.clone();
        std::thread::spawn(move || {
            for event in conn.iter() {
                match event {
                    Ok(Event::Incoming(Packet::ConnAck(_))) => {
                        let _ = sub_client.try_subscribe(filter.clone(), qos);
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = ready_tx.try_send(());
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if tx
                            .send(Message {
                                topic: p.topic.clone(),
                                payload: p.payload.to_vec(),
                                at: Instant::now(),
                            })
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => return,
                    Ok(_) => {}
                    Err(_) if gone.load(Ordering::SeqCst) => return,
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
        ready_rx
            .recv_timeout(WAIT)
            .expect("subscription acknowledged");
        Subscriber {
            rx,
            client,
            dropped,
        }
    }

    pub fn recv(&self, timeout: Duration) -> Option<Message> {
        self.rx.recv_timeout(timeout).ok()
    }

    /// Collects messages until `n` arrived or nothing came for `quiet`.
    pub fn collect(&self, n: usize, quiet: Duration) -> Vec<Message> {
        let mut out = Vec::new();
        while out.len() < n {
            match self.rx.recv_timeout(quiet) {
                Ok(m) => out.push(m),
                Err(_) => break,
            }
        }
        out
    }

    /// The payloads of [`Subscriber::collect`].
    pub fn payloads(&self, n: usize, quiet: Duration) -> Vec<Vec<u8>> {
        self.collect(n, quiet)
            .into_iter()
            .map(|m| m.payload)
            .collect()
    }

    /// Asserts nothing arrives within `wait`.
    pub fn assert_silent(&self, wait: Duration) {
        if let Ok(m) = self.rx.recv_timeout(wait) {
            panic!(
                "unexpected message on {}: {}",
                m.topic,
                String::from_utf8_lossy(&m.payload)
            );
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
        let _ = self.client.try_disconnect();
    }
}

/// Drives a simulated device's MQTT connection on a thread of its own.
/// After an error it waits a little before rumqttc dials again, and gives
/// up once the broker has been unreachable for 30 s: a test's broker is
/// usually gone for good by then, and a thread dialing a closed port in a
/// loop would burn a core for the rest of the test run.
pub fn pump(mut conn: rumqttc::Connection) {
    std::thread::spawn(move || {
        let mut failing_since: Option<Instant> = None;
        for event in conn.iter() {
            match event {
                Ok(_) => failing_since = None,
                // Every Client handle is gone: nothing more will be sent.
                Err(rumqttc::ConnectionError::RequestsDone) => return,
                Err(_) => {
                    let since = *failing_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > Duration::from_secs(30) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        }
    });
}

/// A short-lived MQTT publisher (a simulated device).
pub fn publish(broker_port: u16, topic: &str, payload: &[u8], qos: QoS) {
    publish_with(broker_port, topic, payload, qos, false);
}

/// [`publish`], retained (QoS 1): the broker offers it to every new subscriber.
pub fn publish_retained(broker_port: u16, topic: &str, payload: &[u8]) {
    publish_with(broker_port, topic, payload, QoS::AtLeastOnce, true);
}

fn publish_with(broker_port: u16, topic: &str, payload: &[u8], qos: QoS, retain: bool) {
    static N: AtomicU32 = AtomicU32::new(0);
    let mut opts = MqttOptions::new(
        format!(
            "test-pub-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ),
        "127.0.0.1",
        broker_port,
    );
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut conn) = Client::new(opts, 16);
    client
        .publish(topic, qos, retain, payload.to_vec())
        .unwrap();
    client.disconnect().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match conn.recv_timeout(Duration::from_millis(500)) {
            Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) => return,
            Ok(Err(_)) | Err(rumqttc::RecvTimeoutError::Disconnected) => return,
            _ => {}
        }
    }
}

/// A device-side MQTT client (large packets allowed) and a thread polling it.
pub fn device(broker: u16, name: &str) -> Client {
    let mut opts = MqttOptions::new(name, "127.0.0.1", broker);
    opts.set_max_packet_size(4 << 20, 4 << 20);
    opts.set_inflight(100);
    let (client, conn) = Client::new(opts, 256);
    crate::support::pump(conn);
    client
}

/// A heartbeat of camera `id` (at QoS 0, as the tests' devices send them).
pub fn heartbeat(broker: u16, id: &str, payload: &[u8]) {
    publish(broker, &heartbeat_topic(id), payload, QoS::AtMostOnce);
}

/// A camera's reply to `unit`'s last SCS or UDS, published (at QoS 1) as
/// the camera does.
pub fn device_reply(broker: u16, unit: &str, payload: &[u8]) {
    publish(broker, &reply_topic(unit), payload, QoS::AtLeastOnce);
}

/// A simulated camera for `send`'s tests: it takes the next command on the
/// command topics and answers it on `unit`'s reply topic with `reply`.
/// Subscribed before it returns; joining it gives the command it took.
pub fn answering_camera(broker: u16, unit: &str, reply: &[u8]) -> JoinHandle<Vec<u8>> {
    let sub = Subscriber::new(broker, COMMANDS);
    let (unit, reply) = (unit.to_string(), reply.to_vec());
    std::thread::spawn(move || {
        let command = sub.recv(WAIT).expect("the command reaches the camera");
        device_reply(broker, &unit, &reply);
        command.payload
    })
}
