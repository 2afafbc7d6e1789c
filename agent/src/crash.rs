//! Named points inside multi-step operations where a crash must be survivable.
//!
//! When `SHIP_AGENT_PAUSE_AT` names a point, the agent stops there (after saying so
//! on stderr) until it is killed — or, when `SHIP_AGENT_RESUME_WHEN` names a file,
//! until that file exists. The crash-safety tests use this to SIGKILL the agent at
//! every step and check that the host is still on a complete release; the fleet
//! tests, to hold a lock while a second deploy runs; the health tests, to switch
//! releases while one is being checked. Without the variable, a checkpoint costs
//! one comparison.

use std::sync::OnceLock;

/// Marks the point `name`; see the module docs.
pub fn checkpoint(name: &str) {
    static PAUSE_AT: OnceLock<Option<String>> = OnceLock::new();
    let pause_at = PAUSE_AT.get_or_init(|| std::env::var("SHIP_AGENT_PAUSE_AT").ok());
    if pause_at.as_deref() == Some(name) {
        eprintln!("paused at {name}");
        let resume = std::env::var_os("SHIP_AGENT_RESUME_WHEN").map(std::path::PathBuf::from);
        loop {
            if resume.as_ref().is_some_and(|file| file.exists()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}
