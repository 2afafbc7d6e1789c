//! Named points inside multi-step operations where a crash must be survivable.
//!
//! When `SHIP_AGENT_PAUSE_AT` names a point, the agent stops there (after saying so
//! on stderr) until it is killed. The crash-safety tests use this to SIGKILL the
//! agent at every step and check that the host is still on a complete release.
//! Without the variable, a checkpoint costs one comparison.

use std::sync::OnceLock;

/// Marks the point `name`; see the module docs.
pub fn checkpoint(name: &str) {
    static PAUSE_AT: OnceLock<Option<String>> = OnceLock::new();
    let pause_at = PAUSE_AT.get_or_init(|| std::env::var("SHIP_AGENT_PAUSE_AT").ok());
    if pause_at.as_deref() == Some(name) {
        eprintln!("paused at {name}");
        loop {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
    }
}
