//! The SSH transport: one `ssh2` session per host, reused for every command of a run.
//!
//! Host keys are checked against known_hosts and an unknown or changed key refuses
//! the host (with its fingerprint) unless new keys are explicitly accepted; an accepted
//! key is appended to the file, one host at a time, so a fleet met at once loses none.
//! Auth is by ssh-agent, then identity files. Settings the inventory leaves out (user, port,
//! address, identity) come from `ssh -G`, which reads `~/.ssh/config` (or the file
//! `[ssh] config` names), where the OpenSSH client is installed.
//!
//! libssh2 is blocking with one lock per session, so a blocking read would stop the
//! artifact from being written meanwhile; commands therefore run non-blocking in one
//! loop that writes stdin, reads stdout and stderr, and waits on the socket when
//! neither can move.

use std::fs::OpenOptions;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use base64::Engine;
use ssh2::{CheckResult, HashType, HostKeyType, KnownHostFileKind, Session};

use super::{Finished, Transport, TransportError};
use crate::inventory::SshTarget;
use crate::quote;

/// The channel window: large, so a stream of artifact bytes is not throttled by
/// acknowledgements on a link with latency.
const WINDOW: u32 = 8 << 20;
/// Largest SSH packet.
const PACKET: u32 = 32 << 10;
/// How many times `[ssh] timeout` a host that is connected may send nothing at all,
/// keepalive replies included, before it is given up on as stopped. More than one:
/// a loaded host's sshd can be slow to answer, and a command may start slowly.
const STALL_TIMEOUTS: u32 = 3;
/// Held by whoever reads or appends to a known_hosts file (see [`known_host`]).
static KNOWN_HOSTS: Mutex<()> = Mutex::new(());

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
        // a host at work from one that stopped answering (see `exec`). Blocking calls
        // from here on (opening a channel) wait as long.
        session.set_keepalive(true, keepalive_interval(target.timeout));
        session.set_timeout(
            u32::try_from(stall_limit(target.timeout).as_millis()).unwrap_or(u32::MAX),
        );
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
    let file = &target.known_hosts;
    let known = known_host(
        session,
        file,
        (&r.address, r.port),
        (key, key_type),
        accept_new_keys,
    )
    .map_err(TransportError::HostKey)?;
    match known {
        CheckResult::Match => Ok(()),
        CheckResult::Mismatch => Err(TransportError::HostKey(format!(
            "the host key of {}:{} CHANGED (now {fp}); it does not match {}: refusing the host \
             (if the change is expected, remove the old key from that file)",
            r.address,
            r.port,
            file.display()
        ))),
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

/// What the known_hosts `file` says of `key` for `address:port`; where the host is not
/// in it and `accept_new` is set, the key is appended to it (creating the file) and
/// counts as a `Match`. `Err` says why the file could not be read or written.
///
/// Every host of a run connects at once, so the check holds [`KNOWN_HOSTS`] from the
/// read to the append: each host reads the file as the others left it, no new key is
/// lost to another host's write, and no half-written line is read. Appending one line,
/// rather than writing the whole file again, also keeps what libssh2 does not parse
/// (comments).
fn known_host(
    session: &Session,
    file: &Path,
    (address, port): (&str, u16),
    (key, key_type): (&[u8], HostKeyType),
    accept_new: bool,
) -> Result<CheckResult, String> {
    let _only_one = KNOWN_HOSTS.lock().unwrap_or_else(PoisonError::into_inner);
    let mut known = session
        .known_hosts()
        .map_err(|e| format!("cannot check host keys: {e}"))?;
    if file.exists() {
        known
            .read_file(file, KnownHostFileKind::OpenSSH)
            .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    }
    match known.check_port(address, port, key) {
        CheckResult::NotFound if accept_new => {
            let name = if port == 22 {
                address.to_owned()
            } else {
                format!("[{address}]:{port}")
            };
            append_known_host(session, file, &name, key, key_type)
                .map_err(|e| format!("cannot record the host key in {}: {e}", file.display()))?;
            Ok(CheckResult::Match)
        }
        found => Ok(found),
    }
}

/// Appends `name` with `key` to the known_hosts `file` as one OpenSSH line, after a
/// newline if the file's last line lacks one.
fn append_known_host(
    session: &Session,
    file: &Path,
    name: &str,
    key: &[u8],
    key_type: HostKeyType,
) -> io::Result<()> {
    let mut one = session.known_hosts()?;
    one.add(name, key, "added by ship", key_type.into())?;
    let host = one
        .iter()?
        .pop()
        .ok_or_else(|| io::Error::other("libssh2 lost the key it was given"))?;
    let mut line = one.write_string(&host, KnownHostFileKind::OpenSSH)?;
    if !line.ends_with('\n') {
        line.push('\n');
    }
    if let Some(dir) = file.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let mut out = OpenOptions::new()
        .read(true)
        .append(true)
        .create(true)
        .open(file)?;
    let len = out.metadata()?.len();
    let mut last = [b'\n'];
    if len > 0 {
        out.read_exact_at(&mut last, len - 1)?;
    }
    if last[0] != b'\n' {
        line.insert(0, '\n');
    }
    out.write_all(line.as_bytes())
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

    fn install(
        &mut self,
        content: &mut (dyn Read + Send),
        path: &str,
    ) -> Result<(), TransportError> {
        // The path is an argument of the script, never part of it.
        let script = r#"set -e; umask 022; dir=$(dirname "$1"); mkdir -p "$dir"; tmp="$1.new.$$"; cat > "$tmp"; chmod 755 "$tmp"; mv -f "$tmp" "$1""#;
        let argv: Vec<String> = ["sh", "-c", script, "sh", path]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        let finished = self.run(&argv, Some(content), &mut |_| {})?;
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

/// How long a connected host may send nothing before it is given up on, for the
/// `[ssh] timeout` `timeout`.
fn stall_limit(timeout: Duration) -> Duration {
    timeout * STALL_TIMEOUTS
}

/// Why a host was given up on after `limit` without a byte from it.
fn stopped_answering(limit: Duration) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!(
            "the host stopped answering: nothing from it in {} ({STALL_TIMEOUTS} x [ssh] timeout), keepalives unanswered",
            humantime::format_duration(limit)
        ),
    )
}

/// How often keepalives go out while a command runs, for the `[ssh] timeout`
/// `timeout`: twice per timeout (libssh2 counts whole seconds).
fn keepalive_interval(timeout: Duration) -> u32 {
    u32::try_from(timeout.as_secs() / 2)
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
                    stall_limit(self.target.timeout),
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
                let limit = stall_limit(self.target.timeout);
                if last_heard.elapsed() > limit {
                    return Err(session_err("waiting for the host")(stopped_answering(
                        limit,
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

#[cfg(test)]
mod tests {
    use base64::Engine;

    use super::*;

    /// An Ed25519 public key as a host sends it, made unique by `n`.
    fn ed25519(n: u8) -> Vec<u8> {
        let mut blob = Vec::new();
        blob.extend_from_slice(&11u32.to_be_bytes());
        blob.extend_from_slice(b"ssh-ed25519");
        blob.extend_from_slice(&32u32.to_be_bytes());
        blob.extend_from_slice(&[n; 32]);
        blob
    }

    fn check(file: &Path, address: &str, port: u16, key: u8, accept: bool) -> CheckResult {
        let session = Session::new().unwrap();
        known_host(
            &session,
            file,
            (address, port),
            (&ed25519(key), HostKeyType::Ed25519),
            accept,
        )
        .unwrap()
    }

    #[test]
    fn new_keys_of_hosts_accepted_at_once_are_all_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("known_hosts");
        // The operator's comment and a host, its line without a newline.
        let before = format!(
            "# kept\n[10.0.1.1]:2222 ssh-ed25519 {}",
            base64::engine::general_purpose::STANDARD.encode(ed25519(200))
        );
        std::fs::write(&file, &before).unwrap();
        std::thread::scope(|scope| {
            for n in 0..48u8 {
                let file = &file;
                scope.spawn(move || {
                    let found = check(file, &format!("10.0.0.{n}"), 2222, n, true);
                    assert!(matches!(found, CheckResult::Match), "{n}: {found:?}");
                });
            }
        });
        for n in 0..48u8 {
            let found = check(&file, &format!("10.0.0.{n}"), 2222, n, false);
            assert!(matches!(found, CheckResult::Match), "{n}: {found:?}");
        }
        assert!(matches!(
            check(&file, "10.0.1.1", 2222, 200, false),
            CheckResult::Match
        ));
        let after = std::fs::read_to_string(&file).unwrap();
        assert!(after.starts_with(&format!("{before}\n")), "{after}");
        assert_eq!(after.lines().count(), 2 + 48, "{after}");
    }

    #[test]
    fn a_changed_or_unaccepted_key_is_not_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ssh").join("known_hosts");
        assert!(matches!(
            check(&file, "10.0.0.1", 2222, 1, false),
            CheckResult::NotFound
        ));
        assert!(!file.exists());
        // Port 22 is written without brackets, as OpenSSH does.
        assert!(matches!(
            check(&file, "10.0.0.1", 22, 1, true),
            CheckResult::Match
        ));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.starts_with("10.0.0.1 ssh-ed25519 "), "{text}");
        assert!(matches!(
            check(&file, "10.0.0.1", 22, 2, true),
            CheckResult::Mismatch
        ));
        assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    }
}
