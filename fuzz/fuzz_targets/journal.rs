//! The journal reader (`agent::parse_journal`, what every read of
//! `.ship/journal.jsonl` goes through). Each record it finds is written back as a
//! line that reads as the same record, and a record appended the way the agent
//! appends (after a newline when the last line is torn) is found after the others,
//! whatever the journal held before.
#![no_main]

use agent::parse_journal;
use agent::protocol::{Op, Outcome, Record};
use libfuzzer_sys::fuzz_target;
use manifests::Timestamp;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let records = parse_journal(text);
    let mut written = String::new();
    for record in &records {
        written.push_str(&serde_json::to_string(record).expect("a record encodes"));
        written.push('\n');
    }
    assert_eq!(parse_journal(&written), records, "{written}");

    let appended = Record {
        time: Timestamp::from_unix(1_795_451_200),
        user: "ops".into(),
        op: Op::Prune,
        result: Outcome::Ok,
        version: None,
        from: None,
        payload_digest: None,
        artifact_sha256: None,
        removed: Vec::new(),
        reason: None,
        key: None,
        signed_by: None,
        analysis: None,
    };
    let mut journal = text.to_owned();
    if !journal.is_empty() && !journal.ends_with('\n') {
        journal.push('\n');
    }
    journal.push_str(&serde_json::to_string(&appended).expect("a record encodes"));
    journal.push('\n');
    let mut expected = records;
    expected.push(appended);
    assert_eq!(parse_journal(&journal), expected, "{journal:?}");
});
