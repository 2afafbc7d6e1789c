//! The protocol decoders of `agent::protocol`: each line as an event of the agent's
//! stdout (as `ship` parses it), the data of a `done` event as every reply, and the
//! whole input as each document `ship` sends on the agent's stdin. Whatever decodes
//! encodes back to the same value, and an event encodes on one line, since lines
//! frame the protocol.
#![no_main]

use agent::protocol::{
    Checked, Drift, Event, Had, HelloReply, HistoryReply, Judgement, Preflight, Pruned, Received,
    Source, Switched, TrustChange, TrustReply, Wanted,
};
use libfuzzer_sys::fuzz_target;
use serde::Serialize;
use serde::de::DeserializeOwned;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    for line in text.lines() {
        let Ok(event) = serde_json::from_str::<Event>(line) else {
            continue;
        };
        let encoded = serde_json::to_string(&event).expect("an event encodes");
        assert!(!encoded.contains('\n'), "an event is one line: {encoded}");
        let back: Event = serde_json::from_str(&encoded).expect("an encoded event decodes");
        assert_eq!(back, event);
        if let Event::Done(data) = event {
            replies(&data);
        }
    }
    // What ship sends on stdin.
    round_trips::<Wanted>(text);
    round_trips::<Source>(text);
    round_trips::<TrustChange>(text);
    round_trips::<Judgement>(text);
});

/// The data of a `done` event as each reply that may carry it.
fn replies(data: &serde_json::Value) {
    value_round_trips::<HelloReply>(data);
    value_round_trips::<Received>(data);
    value_round_trips::<Had>(data);
    value_round_trips::<Switched>(data);
    value_round_trips::<Preflight>(data);
    value_round_trips::<Checked>(data);
    value_round_trips::<Pruned>(data);
    value_round_trips::<HistoryReply>(data);
    value_round_trips::<TrustReply>(data);
    value_round_trips::<Drift>(data);
}

fn round_trips<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(text: &str) {
    if let Ok(value) = serde_json::from_str::<T>(text) {
        let encoded = serde_json::to_string(&value).expect("a decoded value encodes");
        let back: T = serde_json::from_str(&encoded).expect("an encoded value decodes");
        assert_eq!(back, value, "{encoded}");
    }
}

fn value_round_trips<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    data: &serde_json::Value,
) {
    if let Ok(value) = serde_json::from_value::<T>(data.clone()) {
        let encoded = serde_json::to_value(&value).expect("a decoded reply encodes");
        let back: T = serde_json::from_value(encoded).expect("an encoded reply decodes");
        assert_eq!(back, value);
    }
}
