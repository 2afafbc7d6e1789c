//! The journal: `.ship/journal.jsonl`, one JSON record per line, appended and
//! fsynced after every operation that changed (or refused to change) the host.
//!
//! It is the host's memory: which release was activated when, from what, by whom, and
//! so which release `rollback` returns to — never guessed from mtimes or names. A
//! crash can leave a torn last line; readers skip lines that do not parse, and the
//! next append starts on a fresh line.
//!
//! Appending does not need the app root's lock: `health` appends without it, beside
//! a deploy that holds it. Each append holds an `flock` on the journal file itself
//! for the moment it takes and writes its line with one `write(2)` in append mode,
//! so lines never interleave, and [`append_if`] decides from every record written
//! before its own.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use manifests::Timestamp;
use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

use crate::error::AgentError;
use crate::protocol::{Op, Outcome, Record};

impl Record {
    /// A record of `op` ending now with `result`.
    pub fn new(op: Op, result: Outcome) -> Record {
        Record {
            time: Timestamp::now(),
            user: current_user(),
            op,
            result,
            version: None,
            from: None,
            payload_digest: None,
            artifact_sha256: None,
            removed: Vec::new(),
            reason: None,
            key: None,
            signed_by: None,
            analysis: None,
        }
    }

    /// Whether this record switched `current` (an activation or rollback that
    /// succeeded).
    pub fn is_switch(&self) -> bool {
        matches!(self.op, Op::Activate | Op::Rollback | Op::Revert) && self.result == Outcome::Ok
    }
}

/// Who is acting: `SHIP_USER` (set by `ship` to the operator's name), else the name
/// of the user this agent runs as.
fn current_user() -> String {
    if let Some(user) = std::env::var("SHIP_USER").ok().filter(|u| !u.is_empty()) {
        return user;
    }
    let uid = nix::unistd::getuid();
    nix::unistd::User::from_uid(uid)
        .ok()
        .flatten()
        .map(|u| u.name)
        .unwrap_or_else(|| format!("uid {uid}"))
}

/// Appends `record` to the journal at `path` and fsyncs it.
pub fn append(path: &Path, record: &Record) -> Result<(), AgentError> {
    let mut file = open_locked(path)?;
    write_line(&mut file, record).map_err(|e| AgentError::io("cannot write the journal", path, e))
}

/// Appends the record `decide` makes from the journal's records (oldest first), if
/// it makes one, and returns it. No other append comes between reading and writing.
pub fn append_if(
    path: &Path,
    decide: impl FnOnce(&[Record]) -> Option<Record>,
) -> Result<Option<Record>, AgentError> {
    let mut file = open_locked(path)?;
    let mut text = String::new();
    file.rewind()
        .and_then(|()| file.read_to_string(&mut text))
        .map_err(|e| AgentError::io("cannot read the journal", path, e))?;
    let Some(record) = decide(&parse(&text)) else {
        return Ok(None);
    };
    write_line(&mut file, &record)
        .map_err(|e| AgentError::io("cannot write the journal", path, e))?;
    Ok(Some(record))
}

/// Opens (creating) the journal at `path` for appending, holding its `flock`; other
/// appends wait for it, for as long as one append takes.
fn open_locked(path: &Path) -> Result<Flock<File>, AgentError> {
    let mut file = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .mode(0o644)
        .open(path)
        .map_err(|e| AgentError::io("cannot write the journal", path, e))?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusive) {
            Ok(locked) => return Ok(locked),
            Err((again, Errno::EINTR)) => file = again,
            Err((_, errno)) => {
                return Err(AgentError::io(
                    "cannot lock the journal",
                    path,
                    io::Error::from(errno),
                ));
            }
        }
    }
}

/// Writes `record` as one line at the end of `file` and fsyncs it.
fn write_line(file: &mut File, record: &Record) -> io::Result<()> {
    let mut line = serde_json::to_vec(record).expect("a record serializes");
    line.push(b'\n');
    // A torn last line from a crash must not swallow this record.
    let len = file.metadata()?.len();
    if len > 0 {
        let mut last = [0u8; 1];
        file.seek(SeekFrom::Start(len - 1))?;
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            line.insert(0, b'\n');
        }
    }
    // One write(2) in append mode lands whole at the end, even beside a writer that
    // takes no flock (an older agent); a short write is reported, not continued,
    // since the rest could land after another writer's line.
    loop {
        match file.write(&line) {
            Ok(n) if n == line.len() => break,
            Ok(n) => {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("only {n} of {} bytes were written", line.len()),
                ));
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    file.sync_all()
}

/// Every record of the journal at `path`, oldest first; lines that do not parse (a
/// torn last line) are skipped. A missing journal is empty.
pub fn read(path: &Path) -> Result<Vec<Record>, AgentError> {
    match fs::read_to_string(path) {
        Ok(text) => Ok(parse(&text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(AgentError::io("cannot read the journal", path, e)),
    }
}

/// The records of a journal whose text is `text`, oldest first; lines that do not
/// parse (a torn last line) are skipped.
pub fn parse(text: &str) -> Vec<Record> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn appends_survive_a_torn_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let mut first = Record::new(Op::Activate, Outcome::Ok);
        first.version = Some("v1".parse().unwrap());
        append(&path, &first).unwrap();
        // A crash in the middle of a write.
        let mut file = OpenOptions::new().append(true).open(&path).unwrap();
        file.write_all(b"{\"time\":\"2026-").unwrap();
        let second = Record::new(Op::Prune, Outcome::Ok);
        append(&path, &second).unwrap();
        assert_eq!(read(&path).unwrap(), vec![first, second]);
    }

    #[test]
    fn unknown_fields_and_ops_are_tolerated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        fs::write(
            &path,
            "{\"time\":\"2026-01-01T00:00:00Z\",\"user\":\"a\",\"op\":\"teleport\",\"result\":\"ok\",\"extra\":1}\n",
        )
        .unwrap();
        let records = read(&path).unwrap();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].op, Op::Unknown);
    }

    #[test]
    fn append_if_decides_from_every_record_and_appends_serialize() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.jsonl");
        let health = |result| {
            let mut r = Record::new(Op::Health, result);
            r.version = Some("v1".parse().unwrap());
            r
        };
        // Record a health outcome only when it differs from the last one.
        let changed = |result| {
            move |records: &[Record]| {
                let last = records.iter().rev().find(|r| r.op == Op::Health);
                (last.map(|r| r.result) != Some(result)).then(|| health(result))
            }
        };
        assert!(
            append_if(&path, changed(Outcome::Failed))
                .unwrap()
                .is_some()
        );
        assert!(
            append_if(&path, changed(Outcome::Failed))
                .unwrap()
                .is_none()
        );
        assert!(append_if(&path, changed(Outcome::Ok)).unwrap().is_some());
        assert_eq!(read(&path).unwrap().len(), 2);

        let writers: Vec<_> = (0..4)
            .map(|_| {
                let path = path.clone();
                std::thread::spawn(move || {
                    for _ in 0..25 {
                        append(&path, &Record::new(Op::Prune, Outcome::Ok)).unwrap();
                    }
                })
            })
            .collect();
        for _ in 0..25 {
            append_if(&path, |_| Some(health(Outcome::Ok))).unwrap();
        }
        for writer in writers {
            writer.join().unwrap();
        }
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 127);
        assert_eq!(read(&path).unwrap().len(), 127, "every line parses");
    }
}
