//! The gateway's parser of client frames (core/src/frame/parse.rs) on any
//! bytes: never a panic, never unbounded work; what it accepts holds.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard_core::frame::{Request, parse::parse};

fuzz_target!(|bytes: &[u8]| {
    // The WebSocket layer closes non-UTF-8 text frames (1007) before this.
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    match parse(text) {
        Ok(incoming) => {
            if let Some(id) = incoming.id {
                assert!(matches!(id.get().as_bytes()[0], b'"' | b'-' | b'0'..=b'9'));
            }
            if let Request::Publish { data, .. } = incoming.request {
                // Accepted data is read by a strict parser.
                serde_json::from_str::<serde_json::Value>(data.get())
                    .expect("accepted data parses strictly");
            }
        }
        Err(rejected) => {
            // The refusal renders (the gateway sends it as text).
            let _ = rejected.error.to_string();
        }
    }
});
