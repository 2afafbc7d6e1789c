//! The SSH transport: one `ssh2` session per host, reused for every command of a run.
//!
//! Host keys are checked against known_hosts and an unknown or changed key refuses
//! the host (with its fingerprint) unless new keys are explicitly accepted. Auth is by
//! ssh-agent, then identity files. Settings the inventory leaves out (user, port,
//! address, identity) come from `ssh -G`, which reads `~/.ssh/config` (or the file
//! `[ssh] config` names), where the OpenSSH client is installed.
//!
//! libssh2 is blocking with one lock per session, so a blocking read would stop the
//! artifact from being written meanwhile; commands therefore run non-blocking in one
//! loop that writes stdin, reads stdout and stderr, and waits on the socket when
//! neither can move.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use base64::Engine;
use ssh2::{CheckResult, HashType, KnownHostFileKind, Session};

use super::{Finished, Transport, TransportError};
use crate::inventory::SshTarget;
use crate::quote;

/// The channel window: large, so a stream of artifact bytes is not throttled by
/// acknowledgements on a link with latency.
const WINDOW: u32 = 8 << 20;
/// Largest SSH packet.
const PACKET: u32 = 32 << 10;
/// How many SSH keepalives a host may leave unanswered, in a row, before it is given
/// up on as stopped; they go out every `[ssh] timeout` / this, so a host that sends
/// nothing at all for the whole timeout has missed this many.
const UNANSWERED: u32 = 3;

/// A connected, authenticated host.
pub struct Ssh {
    session: Session,
    socket: TcpStream,
    /// What it connected to, to connect again when an idle session has died.
    target: SshTarget,
    accept_new_keys: bool,
}

/// Where to connect, with `~/.ssh/config` applied to what the inventory left out.
struct Resolved {
    address: String,
    port: u16,
    user: String,
    identities: Vec<PathBuf>,
}

fn resolve(target: &SshTarget) -> Resolved {
    let mut resolved = Resolved {
        address: target.address.clone(),
        port: target.port.unwrap_or(22),
        user: target.user.clone().unwrap_or_else(local_user),
        identities: target.identity.iter().cloned().collect(),
    };
    let mut ssh = std::process::Command::new("ssh");
    if let Some(config) = &target.ssh_config {
        ssh.arg("-F").arg(config);
    }
    let Ok(out) = ssh
        .args(["-G", &target.address])
        .stderr(std::process::Stdio::null())
        .output()
    else {
        return resolved;
    };
    if !out.status.success() {
        return resolved;
    }
    let config = String::from_utf8_lossy(&out.stdout);
    let home = std::env::var("HOME").unwrap_or_default();
    for line in config.lines() {
        let Some((key, value)) = line.split_once(' ') else {
            continue;
        };
        match key {
            "hostname" => resolved.address = value.to_owned(),
            "port" if target.port.is_none() => {
                resolved.port = value.parse().unwrap_or(resolved.port);
            }
            "user" if target.user.is_none() => resolved.user = value.to_owned(),
            "identityfile" if target.identity.is_none() => {
                let path = value.strip_prefix("~/").map_or_else(
                    || PathBuf::from(value),
                    |rest| PathBuf::from(&home).join(rest),
                );
                if path.is_file() {
                    resolved.identities.push(path);
                }
            }
            _ => {}
        }
    }
    resolved
}

fn local_user() -> String {
    std::env::var("USER").unwrap_or_else(|_| "root".into())
}

/// `SHA256:<base64>` of the session's host key, as OpenSSH prints it.
fn fingerprint(session: &Session) -> String {
    session.host_key_hash(HashType::Sha256).map_or_else(
        || "unknown".to_owned(),
        |hash| {
            format!(
                "SHA256:{}",
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(hash)
            )
        },
    )
}

impl Ssh {
    /// Connects to `target`, checks its host key and logs in.
    pub fn connect(target: &SshTarget, accept_new_keys: bool) -> Result<Ssh, TransportError> {
        let r = resolve(target);
        let shown = format!("{}:{}", r.address, r.port);
        let connect = |source| TransportError::Connect {
            address: shown.clone(),
            source,
        };
        let address = (r.address.as_str(), r.port)
            .to_socket_addrs()
            .map_err(connect)?
            .next()
            .ok_or_else(|| connect(io::Error::from(io::ErrorKind::NotFound)))?;
        let socket = TcpStream::connect_timeout(&address, target.timeout).map_err(connect)?;
        let mut session = Session::new().map_err(|e| connect(e.into()))?;
        session.set_tcp_stream(socket.try_clone().map_err(connect)?);
        session.set_timeout(u32::try_from(target.timeout.as_millis()).unwrap_or(u32::MAX));
        session.handshake().map_err(|e| connect(e.into()))?;
        check_host_key(&session, target, &r, accept_new_keys)?;
        authenticate(&session, &r)?;
        // libssh2 runs the socket non-blocking already; ours (the same open socket)
        // must not block when it only peeks.
        socket.set_nonblocking(true).map_err(connect)?;
        // Keepalives want a reply: while a command runs, the replies are what tells
        // a host at work from one that stopped answering (see `run`).
        session.set_keepalive(true, keepalive_interval(target.timeout));
        Ok(Ssh {
            session,
            socket,
            target: target.clone(),
            accept_new_keys,
        })
    }

    /// Whether bytes from the host wait on the socket, unread by libssh2 yet.
    fn pending(&self) -> bool {
        let mut byte = [0u8; 1];
        matches!(self.socket.peek(&mut byte), Ok(1))
    }

    /// Whether the host (or something between) closed the connection: the socket
    /// reads end-of-stream or an error, where an open one would have nothing yet.
    fn closed_by_peer(&self) -> bool {
        let mut byte = [0u8; 1];
        match self.socket.peek(&mut byte) {
            Ok(n) => n == 0,
            Err(e) => e.kind() != io::ErrorKind::WouldBlock,
        }
    }

    /// Waits until the socket can move in the direction libssh2 is waiting for.
    fn wait(&self) -> io::Result<()> {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        let dirs = self.session.block_directions();
        let mut flags = PollFlags::empty();
        if matches!(
            dirs,
            ssh2::BlockDirections::Inbound | ssh2::BlockDirections::Both
        ) {
            flags |= PollFlags::POLLIN;
        }
        if matches!(
            dirs,
            ssh2::BlockDirections::Outbound | ssh2::BlockDirections::Both
        ) {
            flags |= PollFlags::POLLOUT;
        }
        if flags.is_empty() {
            flags = PollFlags::POLLIN;
        }
        let mut fds = [PollFd::new(self.socket.as_fd(), flags)];
        poll(&mut fds, PollTimeout::from(50u8)).map_err(io::Error::from)?;
        Ok(())
    }
}

fn check_host_key(
    session: &Session,
    target: &SshTarget,
    r: &Resolved,
    accept_new_keys: bool,
) -> Result<(), TransportError> {
    let (key, key_type) = session
        .host_key()
        .ok_or_else(|| TransportError::HostKey(format!("{} sent no host key", r.address)))?;
    let fp = fingerprint(session);
    let mut known = session
        .known_hosts()
        .map_err(|e| TransportError::HostKey(format!("cannot check host keys: {e}")))?;
    let file = &target.known_hosts;
    if file.exists() {
        known
            .read_file(file, KnownHostFileKind::OpenSSH)
            .map_err(|e| TransportError::HostKey(format!("cannot read {}: {e}", file.display())))?;
    }
    match known.check_port(&r.address, r.port, key) {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(TransportError::HostKey(format!(
            "the host key of {}:{} CHANGED (now {fp}); it does not match {}: refusing the host \
             (if the change is expected, remove the old key from that file)",
            r.address,
            r.port,
            file.display()
        ))),
        CheckResult::NotFound if accept_new_keys => {
            let name = if r.port == 22 {
                r.address.clone()
            } else {
                format!("[{}]:{}", r.address, r.port)
            };
            known
                .add(&name, key, "added by ship", key_type.into())
                .and_then(|()| {
                    if let Some(dir) = file.parent() {
                        let _ = std::fs::create_dir_all(dir);
                    }
                    known.write_file(file, KnownHostFileKind::OpenSSH)
                })
                .map_err(|e| {
                    TransportError::HostKey(format!(
                        "cannot record the host key in {}: {e}",
                        file.display()
                    ))
                })
        }
        CheckResult::NotFound => Err(TransportError::HostKey(format!(
            "the host key of {}:{} ({fp}) is not in {}: refusing an unknown host \
             (check the fingerprint, then pass --accept-new-host-keys)",
            r.address,
            r.port,
            file.display()
        ))),
        CheckResult::Failure => Err(TransportError::HostKey(format!(
            "the host key of {}:{} could not be checked",
            r.address, r.port
        ))),
    }
}

fn authenticate(session: &Session, r: &Resolved) -> Result<(), TransportError> {
    let mut tried = Vec::new();
    if std::env::var_os("SSH_AUTH_SOCK").is_some() {
        tried.push("ssh-agent".to_owned());
        let _ = session.userauth_agent(&r.user);
    }
    let home = PathBuf::from(std::env::var("HOME").unwrap_or_default());
    let defaults = ["id_ed25519", "id_ecdsa", "id_rsa"].map(|k| home.join(".ssh").join(k));
    let candidates = r
        .identities
        .iter()
        .chain(defaults.iter().filter(|p| p.is_file()));
    for identity in candidates {
        if session.authenticated() {
            break;
        }
        tried.push(identity.display().to_string());
        let _ = session.userauth_pubkey_file(&r.user, None, identity, None);
    }
    if session.authenticated() {
        Ok(())
    } else {
        Err(TransportError::Auth {
            user: r.user.clone(),
            tried: if tried.is_empty() {
                "no ssh-agent and no identity file".to_owned()
            } else {
                format!("tried {}", tried.join(", "))
            },
        })
    }
}

impl Transport for Ssh {
    fn run(
        &mut self,
        argv: &[String],
        stdin: Option<&mut (dyn Read + Send)>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Finished, TransportError> {
        let ran = self.exec(argv, stdin, on_line);
        match ran {
            Err(TransportError::Session { what, .. }) if self.closed_by_peer() => {
                Err(TransportError::Session {
                    what,
                    source: io::Error::new(
                        io::ErrorKind::ConnectionAborted,
                        "the connection was closed (the host's sshd ended it, or the network dropped it)",
                    ),
                })
            }
            ran => ran,
        }
    }

    fn install(&mut self, bytes: &[u8], path: &str) -> Result<(), TransportError> {
        // The path is an argument of the script, never part of it.
        let script = r#"set -e; dir=$(dirname "$1"); mkdir -p "$dir"; tmp="$1.new.$$"; cat > "$tmp"; chmod 755 "$tmp"; mv -f "$tmp" "$1""#;
        let argv: Vec<String> = ["sh", "-c", script, "sh", path]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let mut input = bytes;
        let finished = self.run(&argv, Some(&mut input), &mut |_| {})?;
        if finished.code != 0 {
            return Err(TransportError::Session {
                what: format!("cannot install {path}: {}", finished.stderr.trim()),
                source: io::Error::other(format!("exit {}", finished.code)),
            });
        }
        Ok(())
    }
}

/// libssh2's code for a blocking call that waited longer than the session's timeout.
const LIBSSH2_ERROR_TIMEOUT: i32 = -9;

/// Why a host was given up on after `timeout` without a byte from it.
fn stopped_answering(timeout: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "the host stopped answering: nothing from it in {} ([ssh] timeout)",
            humantime::format_duration(timeout)
        ),
    )
}

/// How often keepalives go out while a command runs: often enough that
/// [`UNANSWERED`] of them fit in the I/O timeout `timeout` (libssh2 counts whole
/// seconds).
fn keepalive_interval(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_secs() / u64::from(UNANSWERED))
        .unwrap_or(u32::MAX)
        .max(1)
}

impl Ssh {
    /// Runs `argv` on an exec channel of this session (see [`Transport::run`]).
    fn exec(
        &mut self,
        argv: &[String],
        mut stdin: Option<&mut (dyn Read + Send)>,
        on_line: &mut dyn FnMut(&str),
    ) -> Result<Finished, TransportError> {
        let command = quote::command_line(argv);
        // The program (past `env NAME=VALUE`), for messages.
        let program = argv
            .iter()
            .find(|a| *a != "env" && !a.contains('='))
            .map_or("the command", String::as_str);
        let session_err = |what: &str| {
            let what = format!("{what} ({program})");
            move |source: io::Error| TransportError::Session { what, source }
        };
        self.session.set_blocking(true);
        let start = |session: &Session| {
            session
                .channel_open("session", WINDOW, PACKET, None)
                .and_then(|mut channel| channel.exec(&command).map(|()| channel))
        };
        // A session left idle (between the waves of a rollout, say) may have been
        // dropped by the server or a NAT. Nothing has run yet, so connecting again
        // and starting the command there is safe.
        let mut channel = match start(&self.session) {
            Ok(channel) => channel,
            // The host is there but does not answer: connecting again would only wait
            // as long once more.
            Err(e) if e.code() == ssh2::ErrorCode::Session(LIBSSH2_ERROR_TIMEOUT) => {
                return Err(session_err("starting the command")(stopped_answering(
                    self.target.timeout,
                )));
            }
            Err(_) => {
                *self = Ssh::connect(&self.target, self.accept_new_keys)?;
                start(&self.session)
                    .map_err(|e| session_err("cannot start the command")(e.into()))?
            }
        };
        self.session.set_blocking(false);

        let mut input = vec![0u8; 256 << 10];
        let (mut in_pos, mut in_len) = (0usize, 0usize);
        let mut input_done = stdin.is_none();
        let mut eof_sent = false;
        let mut out = Vec::new();
        let mut err = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        let mut last_heard = Instant::now();
        loop {
            let mut progress = false;
            if !input_done {
                if in_pos == in_len {
                    let source = stdin.as_mut().expect("input not done");
                    let n = source
                        .read(&mut input)
                        .map_err(session_err("reading the input"))?;
                    if n == 0 {
                        input_done = true;
                    }
                    (in_pos, in_len) = (0, n);
                }
                if in_pos < in_len {
                    match channel.write(&input[in_pos..in_len]) {
                        Ok(n) => {
                            in_pos += n;
                            progress = true;
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                        // The command stopped reading (a refusal): its report says why.
                        Err(_) => input_done = true,
                    }
                }
            }
            if input_done && !eof_sent && in_pos == in_len {
                match channel.send_eof().map_err(io::Error::from) {
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    _ => eof_sent = true,
                }
            }
            match channel.read(&mut buf) {
                Ok(0) => {}
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    while let Some(end) = out.iter().position(|&b| b == b'\n') {
                        let line: Vec<u8> = out.drain(..=end).collect();
                        on_line(String::from_utf8_lossy(&line[..end]).as_ref());
                    }
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(session_err("reading from the command")(e)),
            }
            match channel.stderr().read(&mut buf) {
                Ok(0) => {}
                Ok(n) => {
                    err.extend_from_slice(&buf[..n]);
                    progress = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(session_err("reading from the command")(e)),
            }
            if channel.eof() && (input_done || eof_sent) {
                break;
            }
            if progress {
                last_heard = Instant::now();
            } else {
                if last_heard.elapsed() > self.target.timeout {
                    return Err(session_err("waiting for the host")(stopped_answering(
                        self.target.timeout,
                    )));
                }
                let _ = self.session.keepalive_send();
                self.wait().map_err(session_err("waiting for the host"))?;
                // Whatever came in while waiting, a keepalive's reply included, shows
                // the host is alive: libssh2 takes it in silently on the next read.
                if self.pending() {
                    last_heard = Instant::now();
                }
            }
        }
        if !out.is_empty() {
            on_line(String::from_utf8_lossy(&out).as_ref());
        }
        self.session.set_blocking(true);
        let _ = channel.wait_close();
        let code = channel
            .exit_status()
            .map_err(|e| session_err("reading the exit status")(e.into()))?;
        // A command a signal ended sends its signal's name instead of a status.
        let signal = channel
            .exit_signal()
            .ok()
            .and_then(|exit| exit.exit_signal)
            .filter(|name| !name.is_empty());
        Ok(Finished {
            code: if signal.is_some() { -1 } else { code },
            signal,
            stderr: String::from_utf8_lossy(&err).into_owned(),
        })
    }
}
