//! Health checks: an HTTP GET (status, and a body substring if asked), a TCP
//! connect, or a command that must exit 0 — each retried until its deadline after a
//! switch ([`check`]), or tried once when asked how a running release is ([`once`]).
//! A failure says what the last attempt saw (`GET /health → 503`) and, after
//! retries, for how long it was tried.

use std::io::Read;
use std::net::{TcpStream, ToSocketAddrs};
use std::process::Command;
use std::time::{Duration, Instant};

use manifests::behaviour::Health;

use crate::env::Environment;
use crate::output::Output;
use crate::run;

/// How long a check is retried unless it says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest a single attempt may take.
const ATTEMPT: Duration = Duration::from_secs(5);

/// The pause between attempts.
const PAUSE: Duration = Duration::from_millis(250);

/// How much of a response body is read.
const BODY_LIMIT: u64 = 64 * 1024;

/// A check that did not pass before its deadline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unhealthy {
    /// What the last attempt saw.
    pub last: String,
    /// How long it was tried.
    pub after: Duration,
}

impl std::fmt::Display for Unhealthy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} after {}",
            self.last,
            humantime::format_duration(Duration::from_secs(
                (self.after.as_secs_f64().round() as u64).max(1)
            ))
        )
    }
}

/// Checks `health` until it passes or its timeout runs out. `command` builds a
/// health command's process (in the release, with its environment).
pub fn check(
    health: &Health,
    env: &Environment,
    command: impl Fn(&str) -> Command,
    out: Output,
) -> Result<(), Unhealthy> {
    let started = Instant::now();
    let deadline = started + timeout(health);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let limit = left.clamp(Duration::from_millis(100), ATTEMPT);
        match attempt(health, env, &command, limit, out) {
            Ok(()) => return Ok(()),
            Err(last) if Instant::now() + PAUSE >= deadline => {
                return Err(Unhealthy {
                    last,
                    after: started.elapsed(),
                });
            }
            Err(_) => std::thread::sleep(PAUSE),
        }
    }
}

/// Checks `health` once, now: a single attempt, limited to the check's timeout and
/// to the longest a single attempt may take, whichever is shorter. `Err` says what
/// it saw (`GET /health → 503`).
pub fn once(
    health: &Health,
    env: &Environment,
    command: impl Fn(&str) -> Command,
    out: Output,
) -> Result<(), String> {
    attempt(health, env, &command, timeout(health).min(ATTEMPT), out)
}

/// How long `health` is retried.
fn timeout(health: &Health) -> Duration {
    match health {
        Health::Http { timeout, .. }
        | Health::Tcp { timeout, .. }
        | Health::Command { timeout, .. } => timeout.unwrap_or(DEFAULT_TIMEOUT),
    }
}

/// One attempt at `health`, taking at most `limit`. A health command's output is
/// not shown: what failed is in the `Err`, with the command's last line.
fn attempt(
    health: &Health,
    env: &Environment,
    command: &impl Fn(&str) -> Command,
    limit: Duration,
    out: Output,
) -> Result<(), String> {
    match health {
        Health::Http {
            http, expect, body, ..
        } => http_once(env, http, expect.unwrap_or(200), body.as_deref(), limit),
        Health::Tcp { tcp, .. } => tcp_once(env, tcp, limit),
        Health::Command { command: line, .. } => {
            run::run("health", command(line), limit, out.quiet())
                .map_err(|e| format!("`{line}`: {e}"))
        }
    }
}

/// One GET; `Err` says what was wrong, as `GET /path → 503`.
fn http_once(
    env: &Environment,
    url: &str,
    expect: u16,
    body: Option<&str>,
    timeout: Duration,
) -> Result<(), String> {
    let url = env.expand(url)?;
    let path = url
        .splitn(4, '/')
        .nth(3)
        .map_or("/".to_owned(), |p| format!("/{p}"));
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(timeout))
        .http_status_as_error(false)
        .max_redirects(0)
        .proxy(None)
        .build()
        .into();
    let mut response = agent
        .get(&url)
        .call()
        .map_err(|e| format!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    if status != expect {
        return Err(format!("GET {path} → {status}"));
    }
    if let Some(wanted) = body {
        let mut text = String::new();
        response
            .body_mut()
            .as_reader()
            .take(BODY_LIMIT)
            .read_to_string(&mut text)
            .map_err(|e| format!("GET {path}: cannot read the body: {e}"))?;
        if !text.contains(wanted) {
            let shown: String = text.trim().chars().take(80).collect();
            return Err(format!(
                "GET {path} → {status}, but the body does not contain {wanted:?} (it begins {shown:?})"
            ));
        }
    }
    Ok(())
}

/// One TCP connect.
fn tcp_once(env: &Environment, address: &str, timeout: Duration) -> Result<(), String> {
    let address = env.expand(address)?;
    let addrs: Vec<_> = address
        .to_socket_addrs()
        .map_err(|e| format!("tcp {address}: {e}"))?
        .collect();
    let mut last = format!("tcp {address}: no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, timeout) {
            Ok(_) => return Ok(()),
            Err(e) => last = format!("tcp {address}: {e}"),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::TcpListener;

    use super::*;
    use crate::protocol::HostSettings;

    fn env() -> Environment {
        let dir = tempfile::tempdir().unwrap();
        let root = crate::layout::AppRoot::new(dir.path()).unwrap();
        let host = HostSettings::default();
        Environment::load(&root, &Default::default(), &host).unwrap()
    }

    /// A real HTTP server on loopback answering every request with `status` and
    /// `body`, for `n` requests.
    fn serve(status: u16, body: &'static str, n: usize) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming().take(n) {
                let mut stream = stream.unwrap();
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        format!("http://{addr}/health")
    }

    fn http(url: String, body: Option<&str>) -> Health {
        Health::Http {
            http: url,
            expect: None,
            body: body.map(str::to_owned),
            timeout: Some(Duration::from_millis(600)),
        }
    }

    fn no_command(_: &str) -> Command {
        unreachable!("no health command here")
    }

    #[test]
    fn http_checks_status_and_body() {
        let out = Output::new(true).quiet();
        check(&http(serve(200, "ok v2", 1), None), &env(), no_command, out).unwrap();
        check(
            &http(serve(200, "ok v2", 1), Some("v2")),
            &env(),
            no_command,
            out,
        )
        .unwrap();
        let err = check(&http(serve(503, "down", 10), None), &env(), no_command, out).unwrap_err();
        assert_eq!(err.last, "GET /health → 503");
        assert!(err.after >= Duration::from_millis(300), "{err:?}");
        let err = check(
            &http(serve(200, "ok v1", 10), Some("v2")),
            &env(),
            no_command,
            out,
        )
        .unwrap_err();
        assert!(err.last.contains("does not contain \"v2\""), "{}", err.last);
    }

    #[test]
    fn tcp_and_command_checks() {
        let out = Output::new(true).quiet();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let tcp = |tcp: String| Health::Tcp {
            tcp,
            timeout: Some(Duration::from_millis(400)),
        };
        check(&tcp(addr.clone()), &env(), no_command, out).unwrap();
        drop(listener);
        let err = check(&tcp(addr), &env(), no_command, out).unwrap_err();
        assert!(err.last.contains("refused"), "{}", err.last);
        let sh = |line: &str| {
            let mut c = Command::new("sh");
            c.arg("-c").arg(line);
            c
        };
        let command = |line: &str| Health::Command {
            command: line.into(),
            timeout: Some(Duration::from_millis(400)),
        };
        check(&command("true"), &env(), sh, out).unwrap();
        let err = check(&command("echo nope; exit 1"), &env(), sh, out).unwrap_err();
        assert!(err.last.contains("exited with status 1"), "{}", err.last);
    }

    #[test]
    fn once_is_a_single_attempt_whatever_the_timeout() {
        let out = Output::new(true).quiet();
        // A real server answering 503 to every request, counting them.
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut buf = [0u8; 1024];
                let _ = stream.read(&mut buf);
                let _ = write!(
                    stream,
                    "HTTP/1.1 503 X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        let slow = Some(Duration::from_secs(30));
        let down = Health::Http {
            http: format!("http://{addr}/health"),
            expect: None,
            body: None,
            timeout: slow,
        };
        assert_eq!(
            once(&down, &env(), no_command, out).unwrap_err(),
            "GET /health → 503"
        );
        assert_eq!(requests.load(std::sync::atomic::Ordering::SeqCst), 1);

        // A command that fails runs once; one that passes passes.
        let dir = tempfile::tempdir().unwrap();
        let tries = dir.path().join("tries");
        let sh = |line: &str| {
            let mut c = Command::new("sh");
            c.arg("-c").arg(line);
            c
        };
        let failing = Health::Command {
            command: format!("echo try >> '{}'; exit 1", tries.display()),
            timeout: slow,
        };
        let err = once(&failing, &env(), sh, out).unwrap_err();
        assert!(err.ends_with("it exited with status 1"), "{err}");
        assert_eq!(std::fs::read_to_string(&tries).unwrap(), "try\n");
        let passing = Health::Command {
            command: "true".into(),
            timeout: slow,
        };
        once(&passing, &env(), sh, out).unwrap();

        // Nothing listening: refused at once, not retried for 30 seconds.
        let closed = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = closed.local_addr().unwrap().to_string();
        drop(closed);
        let started = Instant::now();
        let err = once(
            &Health::Tcp {
                tcp: address.clone(),
                timeout: slow,
            },
            &env(),
            no_command,
            out,
        )
        .unwrap_err();
        assert!(err.starts_with(&format!("tcp {address}: ")), "{err}");
        assert!(err.contains("refused"), "{err}");
        assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    }
}
