//! The status lines of PROTOCOL.md §1.3, built here and only here: `ok`
//! and `error` for every command, `held`, and the camera's lines
//! (`delivered`, `resent`) with `ACK_MODE = camera`. Called by the
//! publisher's policy (through the outbox), the sessions (rejections) and
//! the listener (a refused connection). Pure.

/// One status line of PROTOCOL.md §1.3. `id` is the command's own `id` as JSON text.
pub fn status_line(
    kind: Option<&str>,
    unit: Option<&str>,
    id: Option<&str>,
    error: Option<&str>,
) -> Vec<u8> {
    let mut line = Vec::with_capacity(96);
    line.extend_from_slice(if error.is_some() {
        b"{\"status\":\"error\",\"type\":"
    } else {
        b"{\"status\":\"ok\",\"type\":"
    });
    push_json_string(&mut line, kind);
    line.extend_from_slice(b",\"unit\":");
    push_json_string(&mut line, unit);
    if let Some(id) = id {
        line.extend_from_slice(b",\"id\":");
        line.extend_from_slice(id.as_bytes());
    }
    if let Some(error) = error {
        line.extend_from_slice(b",\"error\":");
        push_json_string(&mut line, Some(error));
    }
    line.push(b'}');
    line
}

/// The status line of a command held for a camera that is offline
/// (PROTOCOL.md §1.3): `{"status":"held",…,"camera":…}`.
pub fn held_line(kind: &str, unit: &str, id: Option<&str>, camera: &str) -> Vec<u8> {
    let mut line = Vec::with_capacity(112);
    line.extend_from_slice(b"{\"status\":\"held\",\"type\":");
    push_json_string(&mut line, Some(kind));
    line.extend_from_slice(b",\"unit\":");
    push_json_string(&mut line, Some(unit));
    if let Some(id) = id {
        line.extend_from_slice(b",\"id\":");
        line.extend_from_slice(id.as_bytes());
    }
    line.extend_from_slice(b",\"camera\":");
    push_json_string(&mut line, Some(camera));
    line.push(b'}');
    line
}

/// The `ok` line of a command whose camera will confirm it (`ACK_MODE =
/// camera`): it names the camera, so the backend knows a `delivered` line
/// (or `resent`, or an `error`) follows.
pub fn ok_line_for_camera(kind: &str, unit: &str, id: Option<&str>, camera: &str) -> Vec<u8> {
    camera_line("ok", kind, unit, id, camera, None)
}

/// A line about a command and its camera (`ACK_MODE = camera`, PROTOCOL.md
/// §1.3): `{"status":STATUS,"type":…,"unit":…,"id":…,"camera":…}`, with
/// `"reason"` for `resent`.
pub fn camera_line(
    status: &str,
    kind: &str,
    unit: &str,
    id: Option<&str>,
    camera: &str,
    reason: Option<&str>,
) -> Vec<u8> {
    let mut line = Vec::with_capacity(128);
    line.extend_from_slice(b"{\"status\":");
    push_json_string(&mut line, Some(status));
    line.extend_from_slice(b",\"type\":");
    push_json_string(&mut line, Some(kind));
    line.extend_from_slice(b",\"unit\":");
    push_json_string(&mut line, Some(unit));
    if let Some(id) = id {
        line.extend_from_slice(b",\"id\":");
        line.extend_from_slice(id.as_bytes());
    }
    line.extend_from_slice(b",\"camera\":");
    push_json_string(&mut line, Some(camera));
    if let Some(reason) = reason {
        line.extend_from_slice(b",\"reason\":");
        push_json_string(&mut line, Some(reason));
    }
    line.push(b'}');
    line
}

fn push_json_string(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            // serde_json escapes exactly as JSON requires; writing to a Vec cannot fail.
            let _ = serde_json::to_writer(&mut *out, s);
        }
        None => out.extend_from_slice(b"null"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[u8]) -> serde_json::Value {
        serde_json::from_slice(line).unwrap()
    }

    #[test]
    fn held_line_names_the_camera() {
        let line = held_line("FMW", "u1", Some("7"), "30eda0e27100");
        assert_eq!(
            line,
            br#"{"status":"held","type":"FMW","unit":"u1","id":7,"camera":"30eda0e27100"}"#
        );
        let line = held_line("IMG", "u1", None, "a\"b");
        assert_eq!(parse(&line)["camera"], "a\"b");
        assert!(parse(&line).get("id").is_none());
    }

    #[test]
    fn camera_lines_name_the_camera_and_a_resend_its_reason() {
        let line = camera_line("delivered", "FMW", "u1", Some("7"), "30eda0e27100", None);
        assert_eq!(
            line,
            br#"{"status":"delivered","type":"FMW","unit":"u1","id":7,"camera":"30eda0e27100"}"#
        );
        let line = camera_line("resent", "CFG", "u1", None, "c", Some("reconnect"));
        assert_eq!(
            line,
            br#"{"status":"resent","type":"CFG","unit":"u1","camera":"c","reason":"reconnect"}"#
        );
        assert_eq!(
            ok_line_for_camera("IMG", "u1", None, "c"),
            br#"{"status":"ok","type":"IMG","unit":"u1","camera":"c"}"#
        );
    }

    #[test]
    fn ok_line_without_id_has_no_id_key() {
        let line = status_line(Some("IMG"), Some("u1"), None, None);
        assert_eq!(line, br#"{"status":"ok","type":"IMG","unit":"u1"}"#);
    }

    #[test]
    fn error_line_echoes_id_and_escapes_the_reason() {
        let line = status_line(
            Some("AIM"),
            Some("u1"),
            Some("\"a-7\""),
            Some("missing field \"md5\""),
        );
        let v = parse(&line);
        assert_eq!(v["status"], "error");
        assert_eq!(v["id"], "a-7");
        assert_eq!(v["error"], "missing field \"md5\"");
    }

    #[test]
    fn unknown_type_and_unit_are_null() {
        let v = parse(&status_line(None, None, Some("12"), Some("x")));
        assert!(v["type"].is_null());
        assert!(v["unit"].is_null());
        assert_eq!(v["id"], 12);
    }
}
