//! Transports: how `ship` runs `ship-agent` on a host. [`Local`](local::Local) runs it
//! as a subprocess; [`Ssh`](ssh::Ssh) over an SSH exec channel. The orchestration
//! only sees [`Transport`], so every fleet command runs the same way against local
//! directories (tests, the demo) and real hosts.

pub mod local;
pub mod ssh;

use std::io::Read;

/// What a finished remote command left.
#[derive(Debug)]
pub struct Finished {
    /// Its exit status (127: command not found; -1 when a signal ended it).
    pub code: i32,
    /// The signal that ended it (`KILL`, `TERM`, …), when one did.
    pub signal: Option<String>,
    /// What it printed on stderr.
    pub stderr: String,
}

/// Why a transport could not run a command.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// The host could not be reached.
    #[error("cannot connect to {address}")]
    Connect {
        /// The address tried.
        address: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The host's key is not the one known for it.
    #[error("{0}")]
    HostKey(String),
    /// No credential was accepted.
    #[error("authentication as {user} failed ({tried})")]
    Auth {
        /// The login user.
        user: String,
        /// What was tried.
        tried: String,
    },
    /// The session broke while a command ran.
    #[error("{what}")]
    Session {
        /// What was being done.
        what: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// Runs commands on one host.
pub trait Transport: Send {
    /// Runs `argv` on the host. `stdin`, when given, is streamed to the command and
    /// then closed; each line the command prints on stdout goes to `on_line`.
    fn run(
        &mut self,
        argv: &[String],
        stdin: Option<&mut (dyn Read + Send)>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Finished, TransportError>;

    /// Writes what `content` reads to the file `path` on the host, made executable,
    /// replacing it atomically (used to install the agent). The content is streamed,
    /// so hosts installed at once do not each hold a copy in memory.
    fn install(
        &mut self,
        content: &mut (dyn Read + Send),
        path: &str,
    ) -> Result<(), TransportError>;
}
