//! What the operator sees of held commands: the status file and metrics per
//! camera, `send` exiting 0 only once a held command is published, and
//! `held` and `cancel` (issue 30).

use std::time::Duration;

use super::{camera_online, cmd, fast_camera, ids_with, power_off, CAMERA, CAMERA_LC, UNIT};
use crate::support::{read_json, read_lines, read_text, run_bin, send, wait_until, WAIT};

#[test]
fn status_and_metrics_show_each_cameras_state_interval_and_commands() {
    let files = [
        ("STATUS_FILE", "{dir}/status.json"),
        ("METRICS_FILE", "{dir}/metrics.prom"),
        ("STATUS_INTERVAL", "1"),
    ];
    let (_broker, relay, camera) = camera_online("5", &files, fast_camera());
    let (status, metrics) = (relay.status_file(), relay.path("metrics.prom"));
    assert!(
        wait_until(WAIT, || {
            status.exists() && read_json(&status)["devices"][0]["interval_s"].is_f64()
        }),
        "the interval is learned and shown"
    );
    let v = read_json(&status);
    assert_eq!(v["devices"][0]["state"], "present");
    assert_eq!(v["cameras"]["present"], 1);
    power_off(&relay, &camera);
    let mut backend = relay.connect();
    send(&mut backend, &cmd("FMW", 1));
    send(&mut backend, &cmd("IMG", 2));
    assert_eq!(read_lines(&backend, 2, WAIT).len(), 2);
    assert!(
        wait_until(WAIT, || read_json(&status)["held"] == 2),
        "status file never showed 2 held"
    );
    let v = read_json(&status);
    assert_eq!(v["held_cameras"][0]["camera"], CAMERA_LC);
    assert_eq!(v["held_cameras"][0]["held"], 2);
    assert_eq!(v["held_cameras"][0]["state"], "offline");
    let device = v["devices"][0].clone();
    assert_eq!(device["id"], CAMERA);
    assert_eq!(device["state"], "offline");
    assert_eq!(device["held"], 2);
    assert!(
        wait_until(WAIT, || read_text(&metrics)
            .contains("ms500_relay_commands_held 2\n")),
        "metrics never showed 2 held"
    );
    assert!(read_text(&metrics).contains("ms500_relay_cameras{state=\"offline\"} 1\n"));
    camera.power_on();
    assert!(
        wait_until(WAIT * 2, || read_text(&metrics)
            .contains("ms500_relay_commands_confirmed_total 2\n")),
        "metrics never showed 2 confirmed:\n{}",
        read_text(&metrics)
    );
    let (code, out, _) = relay.tool(&["status"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("1 present, 0 unknown, 0 offline"), "{out}");
}

/// Finding: `send` exited 0 after a `held` line, though a held command is
/// not published (0 means every command was published), and never said
/// what became of it within its wait. It now waits within `-w` for a held
/// command's outcome, prints it, and exits 0 only once it was published.
#[test]
fn send_succeeds_only_once_a_held_command_is_published_and_names_what_is_not() {
    let (_broker, relay, camera) = camera_online(
        "5",
        &[("COMMAND_TTLS", "IMG:2"), ("ACK_MODE", "all")],
        fast_camera(),
    );
    power_off(&relay, &camera);
    let conf = relay.conf.to_string_lossy().into_owned();

    // Held, and still held when the wait runs out.
    let (code, out, err) = run_bin(&["send", "-c", &conf, "-w", "1", &cmd("FMW", 1)], None);
    assert_eq!(code, 1, "{out}{err}");
    assert!(out.contains(r#""status":"held""#), "{out}");
    assert!(
        err.contains("1 of 1 commands still held in the relay for cameras that are offline"),
        "{err}"
    );

    // Held, then expired within the wait: its error line is printed.
    let (code, out, err) = run_bin(&["send", "-c", &conf, "-w", "15", &cmd("IMG", 2)], None);
    assert_eq!(code, 1, "{out}{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains(r#""status":"held""#), "{out}");
    assert!(
        lines[1].contains(r#""status":"error""#) && lines[1].contains("expired after"),
        "{out}"
    );
    assert!(
        err.contains("1 of 1 commands expired, never published"),
        "{err}"
    );

    // Held, then released by the camera's heartbeat within the wait: its ok
    // is printed and send succeeds.
    let (code, out, err) = std::thread::scope(|s| {
        s.spawn(|| {
            relay.expect_log_count("held FMW for unit", 2, WAIT);
            camera.power_on();
        });
        run_bin(&["send", "-c", &conf, "-w", "15", &cmd("FMW", 3)], None)
    });
    assert_eq!(code, 0, "{out}{err}\n{}", relay.log());
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!(
                r#"{{"status":"held","type":"FMW","unit":"{UNIT}","id":3,"camera":"{CAMERA_LC}"}}"#
            ),
            format!(r#"{{"status":"ok","type":"FMW","unit":"{UNIT}","id":3}}"#),
        ]
    );
}

#[test]
fn send_in_camera_mode_settles_on_delivered() {
    let (_broker, relay, camera) = camera_online("5", &[], fast_camera());
    let conf = relay.conf.to_string_lossy().into_owned();
    let (code, out, err) = run_bin(&["send", "-c", &conf, "-w", "15", &cmd("IMG", 7)], None);
    assert_eq!(code, 0, "{out}{err}\n{}", relay.log());
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!(
                r#"{{"status":"ok","type":"IMG","unit":"{UNIT}","id":7,"camera":"{CAMERA_LC}"}}"#
            ),
            format!(
                r#"{{"status":"delivered","type":"IMG","unit":"{UNIT}","id":7,"camera":"{CAMERA_LC}"}}"#
            ),
        ]
    );
    assert_eq!(camera.received().len(), 1);
}

/// Issue 30: which commands wait for a camera, since when, and dropping
/// the stale ones (the firmware update of a camera that will not return).
#[test]
fn held_lists_what_waits_and_cancel_drops_it_for_good() {
    let (_broker, mut relay, camera) = camera_online(
        "5",
        &[("SPOOL_FILE", "{dir}/relay.spool"), ("ACK_MODE", "all")],
        fast_camera(),
    );
    power_off(&relay, &camera);
    let mut backend = relay.connect();
    send(&mut backend, &cmd("FMW", 1));
    send(&mut backend, &cmd("IMG", 2));
    assert_eq!(ids_with(&read_lines(&backend, 2, WAIT), "held"), [1, 2]);
    let conf = relay.conf.to_string_lossy().into_owned();

    let (code, out, err) = run_bin(&["held", "-c", &conf], None);
    assert_eq!(code, 0, "{out}{err}");
    let rows: Vec<&str> = out.lines().filter(|l| l.starts_with(CAMERA_LC)).collect();
    assert_eq!(rows.len(), 2, "{out}");
    assert!(
        rows[0].contains("offline  held  FMW  MS500-H090-EP-2549-0038  1"),
        "{out}"
    );
    assert!(
        out.contains("2 held, 0 unconfirmed, for 1 cameras"),
        "{out}"
    );
    let (code, out, _) = run_bin(&["held", "-c", &conf, "--json", "A0B1C2D3E4F5"], None);
    assert_eq!(code, 0);
    let first: serde_json::Value = serde_json::from_str(out.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "FMW");
    assert_eq!(first["waiting"], "held");
    assert!(first["lifetime_left_s"].as_u64().unwrap() > 500);
    assert!(first["from"].as_str().unwrap().starts_with("127.0.0.1:"));

    let (code, out, err) = run_bin(&["cancel", "-c", &conf, CAMERA_LC, "FMW"], None);
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        [
            format!("cancelled FMW for unit {UNIT} id 1 (held)"),
            format!("cancelled 1 commands for camera {CAMERA_LC}"),
        ]
    );
    assert_eq!(
        read_lines(&backend, 1, WAIT),
        [format!(
            r#"{{"status":"error","type":"FMW","unit":"{UNIT}","id":1,"error":"cancelled by the operator"}}"#
        )]
    );
    relay.expect_log("cancelled FMW for unit", WAIT);
    let (_, out, _) = run_bin(&["held", "-c", &conf], None);
    assert!(
        out.contains("1 held, 0 unconfirmed, for 1 cameras"),
        "{out}"
    );

    // Gone for good: a restart does not bring it back from the spool.
    drop(backend);
    relay.signal("TERM");
    relay.wait_exit(WAIT).expect("the relay stops");
    relay.relaunch();
    relay.expect_subscribed_times(2);
    relay.expect_log(&format!("held IMG for unit {UNIT} from spool"), WAIT);
    camera.power_on();
    assert!(camera.wait_until(WAIT, |log| !log.received.is_empty()));
    std::thread::sleep(Duration::from_secs(2)); // nothing more comes
    camera.assert_in_order(&[cmd("IMG", 2)]);
}
