//! The JSON protocol end to end: a `publish` frame whose `data` is the
//! input is parsed (with the checking parse of `data`), encoded as the
//! publication subscribers and history receive, and decoded as the Rust
//! client decodes it. Whatever the gateway accepts, every subscriber reads;
//! and the checking parse never accepts what a strict parser refuses.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use switchboard_core::{
    ChannelName,
    frame::{Request, ServerFrame, data, parse::parse, push},
};

type ClientFrame = ServerFrame<String, Value, Value, Value, Value>;

fuzz_target!(|bytes: &[u8]| {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    let checked = data::check(text);
    if checked.is_ok() {
        let value: Value = serde_json::from_str(text).expect("checked data parses strictly");
        // What a strict parser wrote back is accepted too.
        let again = serde_json::to_string(&value).expect("a value serializes");
        data::check(&again).expect("re-encoded data passes the check");
    }
    let frame = format!(r#"{{"type":"publish","id":1,"channel":"c:x","data":{text}}}"#);
    let Ok(incoming) = parse(&frame) else {
        return;
    };
    let Request::Publish { channel, data } = incoming.request else {
        // The input closed the object early and added fields of its own.
        return;
    };
    assert!(checked.is_ok() || data.get() != text.trim());
    let channel = ChannelName::new(channel.as_str()).expect("parsed channel is valid");
    let publication = push::publication(&channel, "u", data, 1, "e", 0);
    let decoded: ClientFrame =
        serde_json::from_slice(&publication).expect("subscribers decode every publication");
    assert!(matches!(decoded, ServerFrame::Message(_)));
});
