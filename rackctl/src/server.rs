//! The codec of both ends, kept in one place so that the daemon and the client share the exact
//! encoding and limits. rackd reads each line with [`read_request`] and answers with
//! [`encode_response`]; it must read at most [`MAX_REQUEST_LINE`] + 1 bytes per line so that an
//! oversize line is recognised as such instead of being split.
//!
//! [`read_request`] never panics: any input gives a request or an [`ErrorBody`] to send back.

use serde::Serialize;
use serde_json::Value;

use crate::proto::{ErrorBody, ErrorCode, Request, Response, VERSION};

/// Longest request line accepted, newline included.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// Largest blob accepted after a `restore` line (socket queues are a few MiB at most).
pub const MAX_ATTACHMENT: u64 = 256 << 20;

/// Whether a request line that could not be served says a blob follows it (`blob_len` above 0):
/// the bytes after it are then not lines, and the connection cannot go on.
pub fn declares_attachment(line: &[u8]) -> bool {
    serde_json::from_slice::<Value>(line)
        .ok()
        .and_then(|v| v.get("blob_len").cloned())
        .is_some_and(|n| n.as_u64() != Some(0))
}

/// Parses one request line (with or without its newline). Unknown fields are ignored.
pub fn read_request(line: &[u8]) -> Result<Request, ErrorBody> {
    let bad = |m: String| ErrorBody::new(ErrorCode::BadRequest, m);
    if line.len() > MAX_REQUEST_LINE {
        return Err(bad(format!(
            "request line of {} bytes is longer than the limit of {MAX_REQUEST_LINE}",
            line.len()
        )));
    }
    let text = std::str::from_utf8(line).map_err(|e| bad(format!("request is not UTF-8: {e}")))?;
    let value: Value =
        serde_json::from_str(text.trim_end()).map_err(|e| bad(format!("not JSON: {e}")))?;
    let Value::Object(fields) = &value else {
        return Err(bad(format!(
            "request must be a JSON object, got {}",
            kind(&value)
        )));
    };
    // The version first: a future client's request may not parse as any of ours.
    match fields.get("v") {
        None => return Err(bad("missing protocol version \"v\"".into())),
        Some(v) if v.as_u64() == Some(u64::from(VERSION)) => {}
        Some(v) if v.is_u64() => {
            return Err(ErrorBody::new(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {v} is not supported (this rackd speaks {VERSION})"),
            ))
        }
        Some(v) => return Err(bad(format!("\"v\" must be an integer, got {v}"))),
    }
    match fields.get("cmd") {
        None => return Err(bad("missing \"cmd\"".into())),
        Some(Value::String(cmd)) if !Request::COMMANDS.contains(&cmd.as_str()) => {
            return Err(bad(format!(
                "unknown cmd {cmd:?} (known: {})",
                Request::COMMANDS.join(", ")
            )));
        }
        Some(Value::String(_)) => {}
        Some(other) => return Err(bad(format!("\"cmd\" must be a string, got {other}"))),
    }
    let request: Request =
        serde_json::from_value(value).map_err(|e| bad(format!("bad request: {e}")))?;
    if request.attachment_len() > MAX_ATTACHMENT {
        return Err(bad(format!(
            "blob_len {} is larger than the limit of {MAX_ATTACHMENT}",
            request.attachment_len()
        )));
    }
    Ok(request)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One response as a JSON line, without the newline.
pub fn encode_response(r: &Response) -> String {
    serde_json::to_string(r).unwrap_or_else(|e| {
        // Not reachable with the types above (no maps with non-string keys, no floats); kept
        // so that the daemon always has a well-formed line to send.
        serde_json::json!({
            "v": VERSION,
            "ok": false,
            "error": {"code": "internal", "message": format!("cannot encode response: {e}")},
        })
        .to_string()
    })
}

/// One request as a JSON line, without the newline: `{"v":1,"cmd":...}`.
pub fn encode_request(r: &Request) -> String {
    #[derive(Serialize)]
    struct Envelope<'a> {
        v: u32,
        #[serde(flatten)]
        request: &'a Request,
    }
    let envelope = Envelope {
        v: VERSION,
        request: r,
    };
    serde_json::to_string(&envelope)
        .unwrap_or_else(|e| unreachable!("a request of strings and integers always encodes: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all_requests() -> Vec<Request> {
        vec![
            Request::Status,
            Request::Suspend { id: "ab".into() },
            Request::Resume { id: "ab".into() },
            Request::Peer {
                id: "ab".into(),
                addr: "2001:db8::1".into(),
            },
            Request::Watch { interval_ms: None },
            Request::Watch {
                interval_ms: Some(250),
            },
            Request::Checkpoint { pid: 42, fd: 3 },
            Request::Restore {
                blob_len: 900,
                local: None,
            },
            Request::Restore {
                blob_len: 900,
                local: Some("192.0.2.9".into()),
            },
        ]
    }

    #[test]
    fn requests_golden() {
        let golden = [
            r#"{"v":1,"cmd":"status"}"#,
            r#"{"v":1,"cmd":"suspend","id":"ab"}"#,
            r#"{"v":1,"cmd":"resume","id":"ab"}"#,
            r#"{"v":1,"cmd":"peer","id":"ab","addr":"2001:db8::1"}"#,
            r#"{"v":1,"cmd":"watch"}"#,
            r#"{"v":1,"cmd":"watch","interval_ms":250}"#,
            r#"{"v":1,"cmd":"checkpoint","pid":42,"fd":3}"#,
            r#"{"v":1,"cmd":"restore","blob_len":900}"#,
            r#"{"v":1,"cmd":"restore","blob_len":900,"local":"192.0.2.9"}"#,
        ];
        for (r, want) in all_requests().iter().zip(golden) {
            assert_eq!(encode_request(r), want);
            assert_eq!(&read_request(want.as_bytes()).unwrap(), r, "{want}");
        }
    }

    #[test]
    fn command_list_matches_the_enum() {
        let names: Vec<&str> = all_requests().iter().map(Request::name).collect();
        for cmd in Request::COMMANDS {
            assert!(names.contains(&cmd), "{cmd} has no variant");
        }
        for name in names {
            assert!(
                Request::COMMANDS.contains(&name),
                "{name} missing in COMMANDS"
            );
        }
    }

    #[test]
    fn only_changes_need_root() {
        let changing: Vec<&str> = all_requests()
            .iter()
            .filter(|r| r.changes_state())
            .map(Request::name)
            .collect();
        assert_eq!(
            changing,
            [
                "suspend",
                "resume",
                "peer",
                "checkpoint",
                "restore",
                "restore"
            ]
        );
    }

    #[test]
    fn oversize_blobs_are_refused_before_they_are_read() {
        let line = format!(
            r#"{{"v":1,"cmd":"restore","blob_len":{}}}"#,
            MAX_ATTACHMENT + 1
        );
        let e = refused(line.as_bytes());
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("blob_len 268435457"), "{e}");
        let e = refused(br#"{"v":1,"cmd":"checkpoint","pid":-1,"fd":3}"#);
        assert!(e.message.contains("pid") || e.message.contains("-1"), "{e}");
    }

    #[test]
    fn unknown_fields_and_newline_are_accepted() {
        let r = read_request(b"{\"v\":1,\"cmd\":\"status\",\"extra\":{\"x\":[1]}}\r\n").unwrap();
        assert_eq!(r, Request::Status);
    }

    fn refused(line: &[u8]) -> ErrorBody {
        read_request(line).expect_err("must be refused")
    }

    #[test]
    fn unknown_cmd_is_named() {
        let e = refused(br#"{"v":1,"cmd":"reboot"}"#);
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("\"reboot\""), "{e}");
        let e = refused(br#"{"v":1,"cmd":7}"#);
        assert!(e.message.contains("7"), "{e}");
    }

    #[test]
    fn future_version_is_unsupported_even_with_unknown_cmd() {
        let e = refused(br#"{"v":2,"cmd":"teleport"}"#);
        assert_eq!(e.code, ErrorCode::UnsupportedVersion);
        assert!(e.message.contains("version 2"), "{e}");
        assert_eq!(
            refused(br#"{"v":0,"cmd":"status"}"#).code,
            ErrorCode::UnsupportedVersion
        );
        let e = refused(br#"{"v":"1","cmd":"status"}"#);
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("integer"), "{e}");
    }

    #[test]
    fn malformed_requests_say_what_is_wrong() {
        let cases: [(&[u8], &str); 6] = [
            (br#"{"cmd":"status"}"#, "\"v\""),
            (br#"{"v":1}"#, "\"cmd\""),
            (b"[1,2]", "an array"),
            (b"\xff\xfe", "UTF-8"),
            (b"{\"v\":1,", "not JSON"),
            (br#"{"v":1,"cmd":"suspend"}"#, "id"),
        ];
        for (line, needle) in cases {
            let e = refused(line);
            assert_eq!(e.code, ErrorCode::BadRequest, "{e}");
            assert!(e.message.contains(needle), "{needle:?} not in {e}");
        }
        let e = refused(br#"{"v":1,"cmd":"peer","id":5,"addr":"192.0.2.1"}"#);
        assert!(
            e.message.contains("id") || e.message.contains("string"),
            "{e}"
        );
    }

    #[test]
    fn line_limit_includes_the_newline() {
        let mut line = br#"{"v":1,"cmd":"status","pad":""#.to_vec();
        line.resize(MAX_REQUEST_LINE - 3, b'x');
        line.extend_from_slice(b"\"}\n");
        assert_eq!(line.len(), MAX_REQUEST_LINE);
        assert_eq!(read_request(&line).unwrap(), Request::Status);
        line.insert(40, b'x');
        let e = refused(&line);
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("65537 bytes"), "{e}");
    }

    #[test]
    fn response_golden() {
        let r = Response::error(ErrorBody::new(ErrorCode::PermissionDenied, "root only"));
        assert_eq!(
            encode_response(&r),
            r#"{"v":1,"ok":false,"error":{"code":"permission_denied","message":"root only"}}"#
        );
        assert_eq!(encode_response(&Response::ok()), r#"{"v":1,"ok":true}"#);
    }

    #[test]
    fn only_a_declared_blob_makes_a_bad_line_end_the_connection() {
        assert!(declares_attachment(
            b"{\"v\":9,\"cmd\":\"restore\",\"blob_len\":12}\n"
        ));
        assert!(declares_attachment(b"{\"cmd\":\"x\",\"blob_len\":\"12\"}"));
        assert!(!declares_attachment(b"{\"v\":1,\"cmd\":\"x1\"}\n"));
        assert!(!declares_attachment(
            b"{\"v\":1,\"cmd\":\"x\",\"blob_len\":0}"
        ));
        assert!(!declares_attachment(b"garbage\n"));
    }
}
