//! Operator requests on the backend socket (PROTOCOL.md §1.4): a JSON
//! object whose member `control` names what the operator asks of the
//! running relay, `held` (list the commands waiting for cameras) or
//! `cancel` (drop them). Pure: read from a framed value, by the session
//! that got it; only root and the relay's own user may send one (the
//! session checks who sent it).

use crate::protocol::command::CommandType;
use crate::protocol::json::{self, Json};

/// Longest camera id an operator may name (as in `PRESENCE_FIELD`).
const MAX_CAMERA: usize = 128;

/// What an operator asks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The commands held or unconfirmed for `camera` (None: every camera).
    Held { camera: Option<String> },
    /// Drop what is held or unconfirmed for `camera`, of `types` only
    /// when any are named.
    Cancel {
        camera: String,
        types: Vec<CommandType>,
    },
}

/// `Some` when `json` is a control request (it has a `control` member),
/// with why it cannot be taken when it is malformed; `None` for anything
/// else (a command, to be validated).
pub fn request(json: &Json<'_>) -> Option<Result<Control, String>> {
    let member = |name: &str| {
        json.members()
            .find(|m| json::string_is(m.key, name))
            .map(|m| m.value)
    };
    let op = member("control")?;
    let other = json.members().find_map(|m| {
        let key = json::decode_string(m.key).unwrap_or_default();
        (!matches!(key.as_ref(), "control" | "camera" | "types")).then(|| key.into_owned())
    });
    if let Some(key) = other {
        return Some(Err(format!(
            "control requests take only \"control\", \"camera\" and \"types\", not {:?}",
            crate::ops::log_limit::cut(&key)
        )));
    }
    Some(parse(op, member("camera"), member("types")))
}

fn parse(op: &[u8], camera: Option<&[u8]>, types: Option<&[u8]>) -> Result<Control, String> {
    let camera = match camera {
        None => None,
        Some(raw) => Some(camera_name(raw)?),
    };
    match json::decode_string(op)
        .filter(|_| op.starts_with(b"\""))
        .as_deref()
    {
        Some("held") if types.is_none() => Ok(Control::Held { camera }),
        Some("cancel") => Ok(Control::Cancel {
            camera: camera.ok_or("a cancel names its \"camera\"")?,
            types: types.map(type_list).transpose()?.unwrap_or_default(),
        }),
        Some("held") => Err("\"types\" is for cancel".to_string()),
        _ => Err("field \"control\" must be \"held\" or \"cancel\"".to_string()),
    }
}

fn camera_name(raw: &[u8]) -> Result<String, String> {
    let name = json::decode_string(raw)
        .filter(|_| raw.starts_with(b"\""))
        .ok_or("field \"camera\" must be a string")?;
    if name.is_empty() || name.len() > MAX_CAMERA {
        return Err(format!("field \"camera\" must be 1-{MAX_CAMERA} bytes"));
    }
    Ok(name.into_owned())
}

fn type_list(raw: &[u8]) -> Result<Vec<CommandType>, String> {
    let names: Vec<String> = serde_json::from_slice(raw)
        .map_err(|_| "field \"types\" must be an array of command types".to_string())?;
    names
        .iter()
        .map(|n| {
            CommandType::parse(n).ok_or_else(|| {
                format!(
                    "unknown type {:?} in \"types\"",
                    crate::ops::log_limit::cut(n)
                )
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::frame::{Frame, FrameDecoder};

    fn read(text: &str) -> Option<Result<Control, String>> {
        let mut decoder = FrameDecoder::new(65536);
        decoder.push(text.as_bytes());
        match decoder.next_frame() {
            Some(Frame::Value(json)) => request(&json),
            _ => panic!("one value"),
        }
    }

    #[test]
    fn held_and_cancel_are_read() {
        assert_eq!(
            read(r#"{"control":"held"}"#),
            Some(Ok(Control::Held { camera: None }))
        );
        assert_eq!(
            read(r#"{"control":"held","camera":"A0B1"}"#),
            Some(Ok(Control::Held {
                camera: Some("A0B1".into())
            }))
        );
        assert_eq!(
            read(r#"{"control":"cancel","camera":"a0b1","types":["FMW","IMG"]}"#),
            Some(Ok(Control::Cancel {
                camera: "a0b1".into(),
                types: vec![CommandType::Fmw, CommandType::Img]
            }))
        );
    }

    #[test]
    fn commands_are_not_control_requests() {
        assert_eq!(read(r#"{"type":"IMG","unit":"u","camera":"c"}"#), None);
        assert_eq!(read(r#"{"ack_mode":"all"}"#), None);
    }

    #[test]
    fn malformed_requests_say_why() {
        let why = |t: &str| read(t).expect("a control request").expect_err("refused");
        assert!(why(r#"{"control":"cancel"}"#).contains("names its \"camera\""));
        assert!(why(r#"{"control":"drop","camera":"c"}"#).contains("\"held\" or \"cancel\""));
        assert!(why(r#"{"control":"cancel","camera":"c","types":["XYZ"]}"#).contains("XYZ"));
        assert!(why(r#"{"control":"held","camera":7}"#).contains("must be a string"));
        assert!(why(r#"{"control":"held","unit":"u"}"#).contains("not \"unit\""));
    }
}
