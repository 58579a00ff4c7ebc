//! The daemon's half of the codec, here so that both ends share one definition of the limits.

use serde::Deserialize;

use crate::proto::{ErrorBody, ErrorCode, Request, Response, VERSION};

/// Longest request line accepted, newline included.
pub const MAX_REQUEST_LINE: usize = 64 * 1024;

/// Parses one request line (with or without its newline).
pub fn read_request(line: &[u8]) -> Result<Request, ErrorBody> {
    let bad = |m: String| ErrorBody::new(ErrorCode::BadRequest, m);
    if line.len() > MAX_REQUEST_LINE {
        return Err(bad(format!(
            "request line longer than {MAX_REQUEST_LINE} bytes"
        )));
    }
    let text = std::str::from_utf8(line).map_err(|_| bad("request is not UTF-8".into()))?;
    let value: serde_json::Value =
        serde_json::from_str(text.trim_end()).map_err(|e| bad(format!("not JSON: {e}")))?;
    #[derive(Deserialize)]
    struct Envelope {
        v: Option<u64>,
        cmd: Option<serde_json::Value>,
    }
    let env = Envelope::deserialize(&value).map_err(|_| bad("request must be an object".into()))?;
    match env.v {
        None => return Err(bad("missing protocol version \"v\"".into())),
        Some(v) if v != u64::from(VERSION) => {
            return Err(ErrorBody::new(
                ErrorCode::UnsupportedVersion,
                format!("protocol version {v} is not supported (this rackd speaks {VERSION})"),
            ))
        }
        Some(_) => {}
    }
    match env.cmd {
        None => return Err(bad("missing \"cmd\"".into())),
        Some(serde_json::Value::String(cmd))
            if !["status", "suspend", "resume", "peer"].contains(&cmd.as_str()) =>
        {
            return Err(bad(format!("unknown cmd {cmd:?}")));
        }
        Some(_) => {}
    }
    Request::deserialize(&value).map_err(|e| bad(format!("bad request: {e}")))
}

/// One response as a JSON line without the newline.
pub fn encode_response(r: &Response) -> String {
    serde_json::to_string(r).unwrap_or_else(|e| {
        format!(
            "{{\"v\":{VERSION},\"ok\":false,\"error\":{{\"code\":\"internal\",\"message\":{:?}}}}}",
            e.to_string()
        )
    })
}

/// One request as a JSON line without the newline.
pub fn encode_request(r: &Request) -> String {
    let mut value = serde_json::to_value(r).unwrap_or_default();
    if let Some(obj) = value.as_object_mut() {
        obj.insert("v".into(), VERSION.into());
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for r in [
            Request::Status,
            Request::Suspend { id: "ab".into() },
            Request::Resume { id: "ab".into() },
            Request::Peer {
                id: "ab".into(),
                addr: "2001:db8::1".into(),
            },
        ] {
            let line = encode_request(&r);
            assert_eq!(read_request(line.as_bytes()).unwrap(), r, "{line}");
        }
        assert_eq!(
            encode_request(&Request::Suspend { id: "1f".into() }),
            r#"{"cmd":"suspend","id":"1f","v":1}"#
        );
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let r = read_request(br#"{"v":1,"cmd":"status","extra":true}"#).unwrap();
        assert_eq!(r, Request::Status);
    }

    #[test]
    fn errors_name_what_was_wrong() {
        let code = |line: &[u8]| read_request(line).unwrap_err();
        let e = code(br#"{"v":1,"cmd":"reboot"}"#);
        assert_eq!(e.code, ErrorCode::BadRequest);
        assert!(e.message.contains("reboot"), "{e}");
        let e = code(br#"{"v":2,"cmd":"status"}"#);
        assert_eq!(e.code, ErrorCode::UnsupportedVersion);
        assert!(e.message.contains('2'), "{e}");
        assert_eq!(code(br#"{"cmd":"status"}"#).code, ErrorCode::BadRequest);
        assert_eq!(code(b"[1,2]").code, ErrorCode::BadRequest);
        assert_eq!(code(b"\xff\xfe").code, ErrorCode::BadRequest);
        let e = code(br#"{"v":1,"cmd":"suspend"}"#);
        assert!(e.message.contains("id"), "{e}");
        let long = vec![b' '; MAX_REQUEST_LINE + 1];
        assert!(code(&long).message.contains("longer"));
    }

    #[test]
    fn error_response_layout() {
        let r = Response::error(ErrorBody::new(ErrorCode::PermissionDenied, "root only"));
        assert_eq!(
            encode_response(&r),
            r#"{"v":1,"ok":false,"error":{"code":"permission_denied","message":"root only"}}"#
        );
        assert_eq!(encode_response(&Response::ok()), r#"{"v":1,"ok":true}"#);
    }
}
