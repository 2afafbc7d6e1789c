//! One operation at a time per app root: an exclusive `flock` on `.ship/lock`, taken
//! without waiting. The kernel drops the lock when the process exits, however it
//! exits, so a lock never outlives its holder. The holder writes who it is into the
//! file so that a refused second agent can say who holds it.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use manifests::Timestamp;
use nix::fcntl::{Flock, FlockArg};

use crate::error::AgentError;
use crate::protocol::Holder;

/// A held lock; dropping it releases it.
#[derive(Debug)]
pub struct Lock {
    _file: Flock<File>,
}

/// Takes the lock at `path` for `command`, or fails naming the holder (with `path`
/// as the locked root; callers put the app root there).
pub fn acquire(path: &Path, command: &str) -> Result<Lock, AgentError> {
    // Its owner's alone: anyone who can open it can hold it.
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|e| AgentError::io("cannot open the lock", path, e))?;
    let mut file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(locked) => locked,
        Err((mut file, _)) => {
            return Err(AgentError::Locked {
                root: path.to_owned(),
                holder: read_holder(&mut file),
            });
        }
    };
    let holder = Holder {
        pid: std::process::id(),
        command: command.to_owned(),
        since: Timestamp::now(),
    };
    let record = serde_json::to_vec(&holder).expect("a holder serializes");
    let written = file
        .set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| file.write_all(&record));
    written.map_err(|e| AgentError::io("cannot write the lock holder", path, e))?;
    Ok(Lock { _file: file })
}

/// Who holds the lock at `path`, if anyone; `Some(None)` when it is held by a holder
/// that has not said who it is yet.
pub fn holder(path: &Path) -> Option<Option<Holder>> {
    let file = File::open(path).ok()?;
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_free) => None,
        Err((mut file, _)) => Some(read_holder(&mut file)),
    }
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    serde_json::from_str(&text).ok()
}
