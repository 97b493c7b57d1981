//! The codec's own cases, then its packets checked against an independent
//! implementation: rumqttc's `mqttbytes` v4 reads every packet the relay
//! writes, and the decoder reads what rumqttc's encoder writes.

use rumqttc::mqttbytes::v4::{
    ConnAck, Connect as RConnect, ConnectReturnCode, LastWill, Login, Packet, PubAck, PubComp,
    PubRec, PubRel, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::{check, Error as RError, Protocol, QoS};

use super::*;

fn bare(client_id: &str) -> Connect<'_> {
    Connect {
        client_id,
        keepalive_secs: 60,
        username: None,
        password: None,
        will: None,
    }
}

fn publish_to(topic: &str, pkid: Option<u16>, retain: bool, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    publish(&mut out, topic, pkid, retain, payload).expect("within MQTT's limits");
    out
}

#[test]
fn connect_with_credentials_and_will() {
    let mut out = Vec::new();
    connect(
        &mut out,
        &Connect {
            client_id: "relay",
            keepalive_secs: 60,
            username: Some("u"),
            password: Some("p"),
            will: Some(("t", b"off")),
        },
    )
    .expect("small");
    assert_eq!(
        out,
        [
            0x10, 31, 0, 4, b'M', b'Q', b'T', b'T', 4, 0xEE, 0, 60, 0, 5, b'r', b'e', b'l', b'a',
            b'y', 0, 1, b't', 0, 3, b'o', b'f', b'f', 0, 1, b'u', 0, 1, b'p'
        ]
    );
}

#[test]
fn bare_connect_asks_for_a_clean_session() {
    let mut out = Vec::new();
    connect(
        &mut out,
        &Connect {
            keepalive_secs: 5,
            ..bare("c")
        },
    )
    .expect("small");
    assert_eq!(out[9], 0x02, "clean session, nothing else");
}

#[test]
fn publish_qos1_and_qos0() {
    assert_eq!(
        publish_to("a/b", Some(0x0102), false, b"{}"),
        [0x32, 9, 0, 3, b'a', b'/', b'b', 1, 2, b'{', b'}']
    );
    assert_eq!(
        publish_to("a", None, true, b"x"),
        [0x31, 4, 0, 1, b'a', b'x']
    );
}

#[test]
fn remaining_length_uses_as_many_bytes_as_needed() {
    for (payload, len_bytes) in [(100, 1), (200, 2), (20_000, 3), (3_000_000, 4)] {
        let out = publish_to("t", Some(1), false, &vec![b'x'; payload]);
        assert_eq!(out.len(), 1 + len_bytes + 2 + 1 + 2 + payload, "{payload}");
    }
    let mut out = Vec::new();
    header(&mut out, PUBLISH, 321).expect("small");
    assert_eq!(out, [0x30, 0xC1, 0x02]);
}

#[test]
fn strings_longer_than_65535_bytes_are_refused_not_cut() {
    let long = "x".repeat(MAX_STRING + 1);
    let earlier = publish_to("a", Some(1), false, b"{}");
    let mut out = earlier.clone();
    assert_eq!(
        publish(&mut out, &long, Some(2), false, b"{}"),
        Err(EncodeError::StringTooLong {
            field: "topic",
            len: 65_536
        })
    );
    assert_eq!(out, earlier, "the batch holds only whole packets");

    let cases: [(&str, Connect<'_>); 5] = [
        ("client id", bare(&long)),
        (
            "will topic",
            Connect {
                will: Some((&long, b"off")),
                ..bare("c")
            },
        ),
        (
            "will message",
            Connect {
                will: Some(("t", long.as_bytes())),
                ..bare("c")
            },
        ),
        (
            "user name",
            Connect {
                username: Some(&long),
                ..bare("c")
            },
        ),
        (
            "password",
            Connect {
                username: Some("u"),
                password: Some(&long),
                ..bare("c")
            },
        ),
    ];
    for (field, packet) in cases {
        let mut out = earlier.clone();
        assert_eq!(
            connect(&mut out, &packet),
            Err(EncodeError::StringTooLong { field, len: 65_536 }),
            "{field}"
        );
        assert_eq!(out, earlier, "{field}: nothing appended");
    }
}

#[test]
fn remaining_length_is_capped_at_268435455() {
    let mut out = Vec::new();
    header(&mut out, PUBLISH, MAX_REMAINING).expect("the largest MQTT can say");
    assert_eq!(out, [0x30, 0xFF, 0xFF, 0xFF, 0x7F]);
    assert_eq!(
        header(&mut out, PUBLISH, MAX_REMAINING + 1),
        Err(EncodeError::PacketTooLarge(268_435_456))
    );
    assert_eq!(out.len(), 5, "nothing appended");

    // Zeroed by the allocator and only read if the encoder were wrong, so
    // these 256 MiB cost no memory.
    let payload = vec![0u8; MAX_REMAINING + 1 - (2 + 1 + 2)];
    let mut out = Vec::new();
    assert_eq!(
        publish(&mut out, "t", Some(1), false, &payload),
        Err(EncodeError::PacketTooLarge(268_435_456))
    );
    assert!(out.is_empty());
}

#[test]
fn qos1_needs_a_packet_id_and_a_password_a_user_name() {
    let mut out = Vec::new();
    assert_eq!(
        publish(&mut out, "t", Some(0), false, b"{}"),
        Err(EncodeError::PacketIdZero)
    );
    assert_eq!(
        connect(
            &mut out,
            &Connect {
                password: Some("p"),
                ..bare("c")
            }
        ),
        Err(EncodeError::PasswordWithoutUserName)
    );
    assert!(out.is_empty());
}

#[test]
fn encode_errors_name_the_field_and_the_limit() {
    let too_long = EncodeError::StringTooLong {
        field: "topic",
        len: 70_000,
    };
    assert_eq!(
        too_long.to_string(),
        "the topic is 70000 bytes, more than the 65535 an MQTT string can hold"
    );
    assert!(EncodeError::PacketTooLarge(268_435_456)
        .to_string()
        .contains("268435455"));
}

#[test]
fn the_limits_are_those_check_config_applies() {
    assert_eq!(MAX_STRING, crate::config::MAX_MQTT_STRING);
    assert_eq!(
        crate::config::LONGEST_UNIT,
        crate::protocol::command::MAX_UNIT_CHARS
    );
}

#[test]
fn decodes_what_a_broker_sends_the_publish_link() {
    assert_eq!(
        decode(&[0x20, 2, 0, 0]),
        Ok(Some((
            Incoming::ConnAck {
                session_present: false,
                code: 0
            },
            4
        )))
    );
    assert_eq!(
        decode(&[0x20, 2, 1, 5, 0xFF]),
        Ok(Some((
            Incoming::ConnAck {
                session_present: true,
                code: 5
            },
            4
        )))
    );
    assert_eq!(
        decode(&[0x40, 2, 0x12, 0x34]),
        Ok(Some((Incoming::PubAck(0x1234), 4)))
    );
    assert_eq!(decode(&[0xD0, 0]), Ok(Some((Incoming::PingResp, 2))));
    assert_eq!(
        decode(&[0x90, 3, 0, 1, 0]),
        Ok(Some((Incoming::Other(9), 5)))
    );
}

#[test]
fn partial_packets_wait_for_more_bytes() {
    let whole = [0x40, 2, 0, 7];
    for cut in 0..whole.len() {
        assert_eq!(decode(&whole[..cut]), Ok(None), "cut at {cut}");
    }
    assert_eq!(decode(&[0x30, 0x80]), Ok(None));
}

#[test]
fn hostile_lengths_are_errors_not_allocations() {
    assert_eq!(
        decode(&[0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F]),
        Err(DecodeError::BadLength)
    );
    assert_eq!(
        decode(&[0x30, 0xFF, 0xFF, 0xFF, 0x7F]),
        Err(DecodeError::TooLarge(268_435_455))
    );
    assert_eq!(
        decode(&[0x40, 3, 0, 1, 2]),
        Err(DecodeError::Malformed("PUBACK"))
    );
    assert_eq!(
        decode(&[0x20, 1, 0]),
        Err(DecodeError::Malformed("CONNACK"))
    );
}

// rumqttc's reader and writer work on `bytes::BytesMut`, a crate this one
// does not depend on. These helpers take rumqttc's functions as `fn`
// pointers, so the compiler names the buffer type from their signatures and
// no dependency is added for tests.

/// rumqttc's reading of the packet at the start of `bytes`, and how many
/// bytes it took.
fn rumqttc_read(bytes: &[u8]) -> Result<(Packet, usize), RError> {
    fn with<B: Default + Extend<u8> + AsRef<[u8]>>(
        bytes: &[u8],
        read: fn(&mut B, usize) -> Result<Packet, RError>,
    ) -> Result<(Packet, usize), RError> {
        let mut stream = B::default();
        stream.extend(bytes.iter().copied());
        let packet = read(&mut stream, usize::MAX)?;
        Ok((packet, bytes.len() - stream.as_ref().len()))
    }
    with(bytes, Packet::read)
}

/// rumqttc's reading of one whole packet: it must take every byte.
fn rumqttc_read_whole(bytes: &[u8]) -> Packet {
    let (packet, used) = rumqttc_read(bytes).expect("rumqttc reads the relay's packet");
    assert_eq!(
        used,
        bytes.len(),
        "the packet is framed as rumqttc frames it"
    );
    packet
}

/// The bytes rumqttc writes for `packet`.
fn rumqttc_write(packet: &Packet) -> Vec<u8> {
    fn with<B: Default + AsRef<[u8]>>(
        packet: &Packet,
        write: fn(&Packet, &mut B, usize) -> Result<usize, RError>,
    ) -> Vec<u8> {
        let mut stream = B::default();
        write(packet, &mut stream, usize::MAX).expect("rumqttc writes the packet");
        stream.as_ref().to_vec()
    }
    with(packet, Packet::write)
}

/// How many bytes the remaining length of the packet in `bytes` takes.
fn length_bytes(bytes: &[u8]) -> usize {
    1 + bytes[1..].iter().take_while(|b| *b & 0x80 != 0).count()
}

/// The relay's CONNECT as rumqttc reads it, checked field by field; unless
/// the password is empty (rumqttc cannot say that), rumqttc writes the very
/// same bytes back, so nothing was left unread inside the packet.
fn check_connect(c: &Connect<'_>) {
    let mut out = Vec::new();
    connect(&mut out, c).expect("within MQTT's limits");
    let Packet::Connect(read) = rumqttc_read_whole(&out) else {
        panic!("not a CONNECT");
    };
    let will = c
        .will
        .map(|(topic, message)| LastWill::new(topic, message, QoS::AtLeastOnce, true));
    let login = c
        .username
        .map(|user| Login::new(user, c.password.unwrap_or_default()));
    let want = RConnect {
        protocol: Protocol::V4,
        keep_alive: c.keepalive_secs,
        client_id: c.client_id.to_string(),
        clean_session: true,
        last_will: will,
        login,
    };
    assert_eq!(read, want);
    if c.password == Some("") {
        assert_eq!(out[9] & 0xC0, 0xC0, "user name and password flags");
        assert!(out.ends_with(&[0, 0]), "an empty password");
    } else {
        assert_eq!(rumqttc_write(&Packet::Connect(read)), out);
    }
}

#[test]
fn rumqttc_reads_every_connect_the_relay_writes() {
    let id_65535 = "i".repeat(MAX_STRING);
    let message_65535: Vec<u8> = (0..MAX_STRING).map(|i| i as u8).collect();
    let state = br#"{"state":"offline","client_id":"gw-1"}"#;
    let connects = [
        bare("ms500-relay-gw-pub"),
        Connect {
            will: Some(("/service/ms500-relay/gw/state", state)),
            ..bare("ms500-relay-gw-pub")
        },
        // MQTT_USERNAME without MQTT_PASSWORD: relay.rs sends an empty one.
        Connect {
            username: Some("relay"),
            password: Some(""),
            ..bare("c")
        },
        Connect {
            username: Some("relay"),
            ..bare("c")
        },
        Connect {
            client_id: "ms500-relay-gw-pub-probe",
            keepalive_secs: u16::MAX,
            username: Some("relay"),
            password: Some("s3cret:ü"),
            will: Some(("/state", state)),
        },
        bare(&id_65535),
        Connect {
            username: Some(&id_65535),
            password: Some(&id_65535),
            will: Some((&id_65535, &message_65535)),
            ..bare(&id_65535)
        },
    ];
    for c in &connects {
        check_connect(c);
    }
}

#[test]
fn rumqttc_reads_every_publish_the_relay_writes() {
    let topic_65535 = "t".repeat(MAX_STRING);
    let command = br#"{"type":"IMG","unit":"MS500-0001"}"#;
    let cases: [(&str, Option<u16>, bool, &[u8]); 7] = [
        ("/service/ms500/MS500-0001/socket", Some(1), false, command),
        ("/service/ms500/MS500-0001/socket", None, false, command),
        (
            "/service/ms500-relay/gw/state",
            Some(STATE_PKID),
            true,
            b"{}",
        ),
        ("/service/ms500-relay/gw/state", None, true, b"{}"),
        ("t", None, false, b""),
        (&topic_65535, Some(7), false, command),
        (&topic_65535, None, true, b""),
    ];
    for (topic, pkid, retain, payload) in cases {
        let out = publish_to(topic, pkid, retain, payload);
        let Packet::Publish(read) = rumqttc_read_whole(&out) else {
            panic!("not a PUBLISH");
        };
        let what = format!("{}-byte topic, {pkid:?}, retain {retain}", topic.len());
        assert!(!read.dup, "{what}");
        assert_eq!(read.retain, retain, "{what}");
        let qos = if pkid.is_some() {
            QoS::AtLeastOnce
        } else {
            QoS::AtMostOnce
        };
        assert_eq!(read.qos, qos, "{what}");
        assert_eq!(read.pkid, pkid.unwrap_or(0), "{what}");
        assert_eq!(read.topic, topic, "{what}");
        assert_eq!(&read.payload[..], payload, "{what}");
        assert_eq!(rumqttc_write(&Packet::Publish(read)), out, "{what}");
    }
}

#[test]
fn rumqttc_reads_pingreq_disconnect_and_a_batch() {
    let mut out = Vec::new();
    pingreq(&mut out);
    assert_eq!(rumqttc_read_whole(&out), Packet::PingReq);
    out.clear();
    disconnect(&mut out);
    assert_eq!(rumqttc_read_whole(&out), Packet::Disconnect);

    // What the publisher writes at once: commands, then at shutdown the
    // offline state and DISCONNECT.
    let mut batch = Vec::new();
    for pkid in 1..=3u16 {
        publish(&mut batch, "/c/u", Some(pkid), false, b"{}").expect("small");
    }
    publish(&mut batch, "/s", Some(STATE_PKID), true, b"off").expect("small");
    disconnect(&mut batch);
    let mut at = 0;
    let mut read = Vec::new();
    while at < batch.len() {
        let (packet, used) = rumqttc_read(&batch[at..]).expect("rumqttc reads the batch");
        read.push(packet);
        at += used;
    }
    let pkids: Vec<u16> = read
        .iter()
        .filter_map(|p| match p {
            Packet::Publish(p) => Some(p.pkid),
            _ => None,
        })
        .collect();
    assert_eq!(pkids, [1, 2, 3, STATE_PKID]);
    assert_eq!(read.last(), Some(&Packet::Disconnect));
}

#[test]
fn remaining_lengths_at_each_varint_boundary() {
    let boundaries = [
        (127, 1),
        (128, 2),
        (16_383, 2),
        (16_384, 3),
        (2_097_151, 3),
        (2_097_152, 4),
    ];
    // PUBLISH QoS 1 to "t": 2 + 1 topic bytes, 2 packet id bytes, the payload.
    for (remaining, len_bytes) in boundaries {
        let payload = vec![b'p'; remaining - 5];
        let out = publish_to("t", Some(9), false, &payload);
        assert_eq!(length_bytes(&out), len_bytes, "{remaining}");
        let header = check(out.iter(), usize::MAX).expect("rumqttc frames it");
        assert_eq!(header.frame_length(), out.len(), "{remaining}");
        let Packet::Publish(read) = rumqttc_read_whole(&out) else {
            panic!("not a PUBLISH");
        };
        assert_eq!((read.pkid, read.payload.len()), (9, remaining - 5));
    }
    // CONNECT: 10 bytes of variable header, then the client id as a string;
    // its strings cannot reach the larger boundaries.
    for (remaining, len_bytes) in &boundaries[..4] {
        let id = "c".repeat(remaining - 12);
        let mut out = Vec::new();
        connect(&mut out, &bare(&id)).expect("within MQTT's limits");
        assert_eq!(length_bytes(&out), *len_bytes, "{remaining}");
        check_connect(&bare(&id));
    }
}

#[test]
fn the_largest_remaining_length_reads_back_in_rumqttc() {
    let mut out = Vec::new();
    header(&mut out, PUBLISH | 0x02, MAX_REMAINING).expect("the largest MQTT can say");
    // rumqttc frames the header and asks for the packet's other bytes.
    match check(out.iter(), usize::MAX) {
        Err(RError::InsufficientBytes(more)) => assert_eq!(more, MAX_REMAINING),
        other => panic!("{other:?}"),
    }
}

/// Everything a broker could send, as rumqttc writes it, with what the
/// decoder must make of it.
fn broker_packets() -> Vec<(Vec<u8>, Incoming)> {
    let mut cases = Vec::new();
    let codes = [
        ConnectReturnCode::Success,
        ConnectReturnCode::RefusedProtocolVersion,
        ConnectReturnCode::BadClientId,
        ConnectReturnCode::ServiceUnavailable,
        ConnectReturnCode::BadUserNamePassword,
        ConnectReturnCode::NotAuthorized,
    ];
    for session_present in [false, true] {
        for code in codes {
            cases.push((
                rumqttc_write(&Packet::ConnAck(ConnAck::new(code, session_present))),
                Incoming::ConnAck {
                    session_present,
                    code: code as u8,
                },
            ));
        }
    }
    for pkid in [0, 1, 2, 0x1234, 0xFFFE, STATE_PKID] {
        cases.push((
            rumqttc_write(&Packet::PubAck(PubAck::new(pkid))),
            Incoming::PubAck(pkid),
        ));
    }
    cases.push((rumqttc_write(&Packet::PingResp), Incoming::PingResp));
    let granted = vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)];
    let others = [
        Packet::Publish(Publish::new("/device/x", QoS::AtMostOnce, "hi")),
        Packet::Publish(Publish {
            pkid: 4,
            ..Publish::new("/device/x", QoS::AtLeastOnce, vec![7; 300])
        }),
        Packet::PubRec(PubRec::new(5)),
        Packet::PubRel(PubRel::new(5)),
        Packet::PubComp(PubComp::new(5)),
        Packet::SubAck(SubAck::new(6, granted)),
        Packet::UnsubAck(UnsubAck::new(7)),
        Packet::PingReq,
        Packet::Disconnect,
        Packet::Connect(RConnect::new("x")),
    ];
    for packet in others {
        let bytes = rumqttc_write(&packet);
        let kind = bytes[0] >> 4;
        cases.push((bytes, Incoming::Other(kind)));
    }
    cases
}

#[test]
fn decodes_what_rumqttc_writes() {
    for (bytes, want) in broker_packets() {
        assert_eq!(decode(&bytes), Ok(Some((want, bytes.len()))), "{bytes:?}");
        for cut in 0..bytes.len() {
            assert_eq!(decode(&bytes[..cut]), Ok(None), "{want:?} cut at {cut}");
        }
    }
    let big = rumqttc_write(&Packet::Publish(Publish::new(
        "/device/x",
        QoS::AtMostOnce,
        vec![0; MAX_INCOMING],
    )));
    assert_eq!(
        decode(&big),
        Err(DecodeError::TooLarge(2 + 9 + MAX_INCOMING))
    );
}

#[test]
fn decodes_a_stream_of_rumqttc_packets_however_it_is_split() {
    let cases = broker_packets();
    let stream: Vec<u8> = cases.iter().flat_map(|(b, _)| b.clone()).collect();
    let want: Vec<Incoming> = cases.iter().map(|(_, p)| *p).collect();
    for chunk in [1, 2, 3, 7, 64, stream.len()] {
        // As the publish link reads: append, decode what is whole, drain.
        let mut pending = Vec::new();
        let mut got = Vec::new();
        for piece in stream.chunks(chunk) {
            pending.extend_from_slice(piece);
            let mut used = 0;
            while let Some((packet, len)) = decode(&pending[used..]).expect("well formed") {
                got.push(packet);
                used += len;
            }
            pending.drain(..used);
        }
        assert!(pending.is_empty(), "chunks of {chunk}");
        assert_eq!(got, want, "chunks of {chunk}");
    }
}

#[test]
fn state_messages_fit_what_check_config_allows_besides_the_client_id() {
    use crate::mqtt::publish_link::StateMessages;
    for id in ["", "gw", "a \"quoted\" \\ id ü"] {
        let state = StateMessages::new("t".into(), id, std::time::SystemTime::now());
        let quoted = serde_json::Value::from(id).to_string().len();
        for message in [&state.online, &state.offline] {
            assert!(
                message.len() - quoted <= crate::config::STATE_MESSAGE_WITHOUT_ID,
                "{}",
                String::from_utf8_lossy(message)
            );
        }
    }
}

#[test]
fn what_check_config_accepts_the_codec_can_encode() {
    let longest = format!("/{}/{{unit}}", "c".repeat(65_405));
    let config = crate::config::parse(
        &format!(
            "COMMAND_TOPIC = {longest}\nSTATE_TOPIC = \"\"\nMQTT_CLIENT_ID = {}",
            "i".repeat(65_525)
        ),
        "relay.conf",
    )
    .expect("the longest COMMAND_TOPIC and MQTT_CLIENT_ID check-config accepts");
    let topic = config.command_topic_for(&"u".repeat(crate::protocol::command::MAX_UNIT_CHARS));
    assert_eq!(topic.len(), MAX_STRING);
    let payload = vec![b'x'; 16_777_216];
    let out = publish_to(&topic, Some(1), false, &payload);
    let Packet::Publish(read) = rumqttc_read_whole(&out) else {
        panic!("not a PUBLISH");
    };
    assert_eq!(
        (read.topic.len(), read.payload.len()),
        (MAX_STRING, payload.len())
    );
    check_connect(&bare(&format!("{}-pub-probe", config.client_id())));
}
