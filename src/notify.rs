//! Deploy notifications: ship's deploy events (a deploy started, a wave finished, a
//! release was reverted, …) posted as JSON to webhooks and appended as JSON Lines to a
//! local deploy log.
//!
//! This module owns the shape of an event (`event`, `time`, `text` and the caller's
//! fields), its delivery, and how a failed delivery is reported. Delivery never holds
//! up a deploy and never fails it: [`Notifier::send`] only queues the event; one
//! background thread appends it to the log and posts it to each webhook, in the order
//! the events were sent; [`Notifier::finish`] waits for that thread and hands back one
//! warning per failed delivery. Webhook URLs usually carry a token in their path, so a
//! warning shows a URL only as far as its first path segment.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::Duration;

use manifests::time::Timestamp;
use serde_json::{Map, Value};

/// How long one post may take, from connecting to reading the answer.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Where deploy events go.
pub struct Notifier {
    state: State,
}

enum State {
    /// No webhook and no log: events are dropped.
    Off,
    /// The delivery thread and the queue it reads.
    Running {
        queue: mpsc::Sender<String>,
        thread: JoinHandle<Vec<String>>,
    },
    /// The delivery thread could not be started; the warning says why.
    Broken(String),
}

impl Notifier {
    /// `webhooks`: URLs (http or https) to POST each event to as JSON; `log`: a file to
    /// append each event to as one JSON line (created with its parent dirs if missing).
    /// Both may be empty/None: then it does nothing.
    pub fn new(webhooks: Vec<String>, log: Option<PathBuf>) -> Notifier {
        if webhooks.is_empty() && log.is_none() {
            return Notifier { state: State::Off };
        }
        let (queue, events) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("notify".to_owned())
            .spawn(move || deliver(&events, &webhooks, log.map(DeployLog::new)));
        let state = match spawned {
            Ok(thread) => State::Running { queue, thread },
            Err(e) => State::Broken(format!(
                "deploy notifications are off: cannot start their thread: {}",
                io_message(&e)
            )),
        };
        Notifier { state }
    }

    /// Queues `event` (e.g. "started", "wave", "finished", "reverted", "rollback")
    /// with `data` (an object; the notifier adds "event", "time" (RFC 3339 UTC,
    /// seconds), and a human "text" line given as `text`, which chat tools such as
    /// Slack/Mattermost show). Never blocks on the network.
    pub fn send(&self, event: &str, text: &str, data: Value) {
        if let State::Running { queue, .. } = &self.state {
            // The thread only stops once `finish` drops the queue (or if it panicked,
            // which `finish` reports), so a failed send has nothing to add.
            let _ = queue.send(event_json(event, text, Timestamp::now(), data));
        }
    }

    /// Waits (at most a few seconds in total per pending post: each post has a 5 s
    /// timeout) for queued events to be delivered, and returns one warning per failed
    /// delivery, like "webhook http://127.0.0.1:9/hook: connection refused" or
    /// "webhook https://x/y answered 500" or "deploy log /path/deploys.log: Permission
    /// denied". Never fails.
    pub fn finish(self) -> Vec<String> {
        match self.state {
            State::Off => Vec::new(),
            State::Broken(warning) => vec![warning],
            State::Running { queue, thread } => {
                drop(queue);
                thread.join().unwrap_or_else(|_| {
                    vec!["deploy notifications stopped early: their thread panicked".to_owned()]
                })
            }
        }
    }
}

/// One event as the JSON text that is posted and logged: `event`, `time` and `text`,
/// then the fields of `data` (which cannot replace those three). `data` that is not
/// an object is kept whole under `data`.
fn event_json(event: &str, text: &str, time: Timestamp, data: Value) -> String {
    let mut object = Map::new();
    object.insert("event".to_owned(), event.into());
    object.insert("time".to_owned(), time.to_string().into());
    object.insert("text".to_owned(), text.into());
    match data {
        Value::Object(fields) => {
            for (key, value) in fields {
                object.entry(key).or_insert(value);
            }
        }
        Value::Null => {}
        other => {
            object.insert("data".to_owned(), other);
        }
    }
    Value::Object(object).to_string()
}

/// The delivery thread: for each event in turn, the log line, then each webhook.
fn deliver(
    events: &mpsc::Receiver<String>,
    webhooks: &[String],
    mut log: Option<DeployLog>,
) -> Vec<String> {
    let agent = (!webhooks.is_empty()).then(agent);
    let mut dead = vec![false; webhooks.len()];
    let mut warnings = Vec::new();
    for body in events {
        if let Some(log) = &mut log
            && let Err(e) = log.append(&body)
        {
            warnings.push(format!(
                "deploy log {}: {}",
                log.path.display(),
                io_message(&e)
            ));
        }
        if let Some(agent) = &agent {
            for (url, dead) in webhooks.iter().zip(dead.iter_mut()) {
                if *dead {
                    continue;
                }
                // A webhook that fails once is not tried again in this run: a dead
                // one would cost every later event its timeout.
                if let Err(warning) = post(agent, url, &body) {
                    warnings.push(format!("{warning} (its later events are not sent)"));
                    *dead = true;
                }
            }
        }
    }
    warnings
}

/// The HTTP client for webhooks: every post is bounded by [`TIMEOUT`], redirects are
/// not followed (a redirect is a failed delivery), and any status is an answer to
/// judge rather than an error. Proxies come from the usual environment variables
/// (`HTTPS_PROXY`, `NO_PROXY`, …), except in tests, whose webhooks are on 127.0.0.1.
fn agent() -> ureq::Agent {
    let proxy = if cfg!(test) {
        None
    } else {
        ureq::Proxy::try_from_env()
    };
    ureq::Agent::config_builder()
        .timeout_global(Some(TIMEOUT))
        .max_redirects(0)
        .http_status_as_error(false)
        .user_agent(concat!("ship/", env!("CARGO_PKG_VERSION")))
        .proxy(proxy)
        .build()
        .into()
}

/// Posts `body` to `url`; a 2xx answer is a delivery. The error is the warning.
fn post(agent: &ureq::Agent, url: &str, body: &str) -> Result<(), String> {
    let shown = redact(url);
    let scheme = url.split_once("://").map_or("", |(scheme, _)| scheme);
    if !(scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")) {
        return Err(format!("webhook {shown}: not an http or https URL"));
    }
    let response = agent
        .post(url)
        .header("Content-Type", "application/json")
        .send(body)
        .map_err(|e| format!("webhook {shown}: {}", describe(&e, url, &shown)))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else {
        Err(format!("webhook {shown} answered {}", status.as_u16()))
    }
}

/// Why a post failed, in words that never contain the full `url`.
fn describe(error: &ureq::Error, url: &str, shown: &str) -> String {
    match error {
        ureq::Error::Io(e) => lower_first(&io_message(e)),
        ureq::Error::Timeout(_) => format!("no answer within {} s", TIMEOUT.as_secs()),
        ureq::Error::HostNotFound => "host not found".to_owned(),
        // Both quote the URL they could not use.
        ureq::Error::BadUri(_) | ureq::Error::Http(_) => "not a valid URL".to_owned(),
        other => other.to_string().replace(url, shown),
    }
}

/// The deploy log: one JSON line per event, appended.
struct DeployLog {
    path: PathBuf,
    /// Opened on the first event, and again after a failed write.
    file: Option<File>,
}

impl DeployLog {
    fn new(path: PathBuf) -> DeployLog {
        DeployLog { path, file: None }
    }

    fn append(&mut self, line: &str) -> io::Result<()> {
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                if let Some(parent) = self.path.parent()
                    && !parent.as_os_str().is_empty()
                {
                    fs::create_dir_all(parent)?;
                }
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&self.path)?;
                self.file.insert(file)
            }
        };
        // One write per line: appends from concurrent ship runs do not interleave.
        let written = file.write_all(format!("{line}\n").as_bytes());
        if written.is_err() {
            self.file = None;
        }
        written
    }
}

/// `https://hooks.example.com/services/T0/B0/secret?x=1` → `https://hooks.example.com/services/…`:
/// scheme, host and port, the first path segment, and `/…` if anything follows it.
/// User info (`user:password@`) is dropped.
fn redact(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest))
            if !scheme.is_empty()
                && scheme
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
        {
            (Some(scheme), rest)
        }
        _ => (None, url),
    };
    let (authority, rest) = rest.split_at(rest.find(['/', '?', '#']).unwrap_or(rest.len()));
    let host = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let mut shown = String::new();
    if let Some(scheme) = scheme {
        shown.push_str(scheme);
        shown.push_str("://");
    }
    shown.push_str(host);
    let more = match rest.strip_prefix('/') {
        Some(path) => {
            let (first, more) = path.split_at(path.find(['/', '?', '#']).unwrap_or(path.len()));
            shown.push('/');
            shown.push_str(first);
            more != "/" && !more.is_empty()
        }
        None => !rest.is_empty(),
    };
    if more {
        shown.push_str("/…");
    }
    shown
}

/// An I/O error's message without the `(os error N)` suffix.
fn io_message(error: &io::Error) -> String {
    let message = error.to_string();
    match message.rfind(" (os error ") {
        Some(at) if message.ends_with(')') => message[..at].to_owned(),
        _ => message,
    }
}

fn lower_first(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map_or_else(String::new, |first| {
        first.to_lowercase().chain(chars).collect()
    })
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader, Read};
    use std::net::TcpListener;

    use serde_json::json;

    use super::*;

    /// One request as a test webhook received it.
    struct Request {
        head: String,
        body: String,
    }

    /// A webhook on 127.0.0.1 that answers every request with `status` (and an empty
    /// body, closing the connection) and passes on each request it read.
    fn webhook(status: u16) -> (String, mpsc::Receiver<Request>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook/T0/secret", listener.local_addr().unwrap());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = stream.unwrap();
                let mut reader = BufReader::new(&stream);
                let mut head = String::new();
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    head.push_str(&line);
                    if line == "\r\n" || line.is_empty() {
                        break;
                    }
                }
                let length = head
                    .lines()
                    .find_map(|l| {
                        let (name, value) = l.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                let mut body = vec![0; length];
                reader.read_exact(&mut body).unwrap();
                let body = String::from_utf8(body).unwrap();
                write!(
                    stream,
                    "HTTP/1.1 {status} Test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )
                .unwrap();
                drop(stream);
                if tx.send(Request { head, body }).is_err() {
                    break;
                }
            }
        });
        (url, rx)
    }

    fn received(rx: &mpsc::Receiver<Request>) -> Request {
        rx.recv_timeout(Duration::from_secs(2))
            .expect("the webhook got a request")
    }

    #[test]
    fn webhooks_get_each_event_in_order() {
        let (url, rx) = webhook(200);
        let notifier = Notifier::new(vec![url], None);
        notifier.send(
            "started",
            "deploying shop 1.2.0",
            json!({"app": "shop", "hosts": 3}),
        );
        notifier.send("wave", "wave 1 of 2 done", json!({"wave": 1}));
        notifier.send("finished", "shop 1.2.0 is live", json!({}));
        assert_eq!(notifier.finish(), Vec::<String>::new());

        let first = received(&rx);
        assert!(first.head.starts_with("POST /hook/T0/secret HTTP/1.1\r\n"));
        assert!(
            first
                .head
                .to_ascii_lowercase()
                .contains("content-type: application/json\r\n")
        );
        let first: Value = serde_json::from_str(&first.body).unwrap();
        assert_eq!(first["event"], "started");
        assert_eq!(first["text"], "deploying shop 1.2.0");
        assert_eq!(first["app"], "shop");
        assert_eq!(first["hosts"], 3);
        let time = first["time"].as_str().unwrap();
        assert!(time.parse::<Timestamp>().is_ok() && time.ends_with('Z'));

        let events: Vec<Value> = (0..2)
            .map(|_| serde_json::from_str(&received(&rx).body).unwrap())
            .collect();
        assert_eq!(events[0]["event"], "wave");
        assert_eq!(events[0]["wave"], 1);
        assert_eq!(events[1]["event"], "finished");
    }

    #[test]
    fn a_failing_webhook_is_a_warning() {
        let (url, rx) = webhook(500);
        let notifier = Notifier::new(vec![url.clone()], None);
        notifier.send("started", "deploying", json!({}));
        let warnings = notifier.finish();
        let port = url.split(':').nth(2).unwrap().split('/').next().unwrap();
        assert_eq!(
            warnings,
            [format!(
                "webhook http://127.0.0.1:{port}/hook/… answered 500 (its later events are not sent)"
            )]
        );
        received(&rx);
    }

    #[test]
    fn an_unreachable_webhook_is_a_warning() {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let url = format!("http://127.0.0.1:{port}/hook");
        let notifier = Notifier::new(vec![url.clone(), "ftp://x/y".to_owned()], None);
        // A dead webhook is tried once per run, not once per event.
        notifier.send("started", "deploying", json!({}));
        notifier.send("finished", "deployed", json!({}));
        let warnings = notifier.finish();
        assert_eq!(
            warnings,
            [
                format!("webhook {url}: connection refused (its later events are not sent)"),
                "webhook ftp://x/y: not an http or https URL (its later events are not sent)"
                    .to_owned(),
            ]
        );
    }

    #[test]
    fn https_webhooks_speak_tls() {
        // A server that answers in plain HTTP: the TLS handshake fails, which shows
        // that https URLs go through TLS (rustls with its bundled roots).
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("https://{}/hook/secret", listener.local_addr().unwrap());
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let _ = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
        });
        let notifier = Notifier::new(vec![url.clone()], None);
        notifier.send("started", "deploying", json!({}));
        let warnings = notifier.finish();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        let prefix = format!("webhook {}: ", redact(&url));
        // rustls's words for a server that does not speak TLS.
        assert!(
            warnings[0].starts_with(&prefix) && warnings[0].contains("corrupt message"),
            "{warnings:?}"
        );
    }

    #[test]
    fn the_log_gets_a_line_per_event() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/ship/deploys.log");
        for run in ["1.0.0", "1.1.0"] {
            let notifier = Notifier::new(Vec::new(), Some(path.clone()));
            notifier.send("started", "deploying", json!({"release": run}));
            notifier.send("finished", "done", json!({"release": run}));
            assert_eq!(notifier.finish(), Vec::<String>::new());
        }
        let text = fs::read_to_string(&path).unwrap();
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert!(text.ends_with('\n'));
        let seen: Vec<_> = events
            .iter()
            .map(|e| (e["event"].as_str().unwrap(), e["release"].as_str().unwrap()))
            .collect();
        assert_eq!(
            seen,
            [
                ("started", "1.0.0"),
                ("finished", "1.0.0"),
                ("started", "1.1.0"),
                ("finished", "1.1.0")
            ]
        );
    }

    #[test]
    fn an_unwritable_log_is_a_warning() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("file");
        fs::write(&file, "").unwrap();
        let path = file.join("deploys.log");
        let notifier = Notifier::new(Vec::new(), Some(path.clone()));
        notifier.send("started", "deploying", json!({}));
        let warnings = notifier.finish();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(
            warnings[0].starts_with(&format!("deploy log {}: ", path.display())),
            "{warnings:?}"
        );
        assert!(!warnings[0].contains("os error"), "{warnings:?}");
    }

    #[test]
    fn host_threads_can_share_a_notifier() {
        fn shared<T: Send + Sync>() {}
        shared::<Notifier>();
    }

    #[test]
    fn nowhere_to_send_is_silent() {
        let notifier = Notifier::new(Vec::new(), None);
        notifier.send("started", "deploying", json!({}));
        assert!(notifier.finish().is_empty());
    }

    #[test]
    fn events_carry_their_fields() {
        let time = Timestamp::from_unix(1_795_451_200);
        let event: Value = serde_json::from_str(&event_json(
            "reverted",
            "web1 reverted to 1.1.0",
            time,
            json!({"host": "web1", "event": "not this", "text": "nor this"}),
        ))
        .unwrap();
        assert_eq!(
            event,
            json!({
                "event": "reverted",
                "time": "2026-11-23T16:26:40Z",
                "text": "web1 reverted to 1.1.0",
                "host": "web1",
            })
        );
        let bare: Value = serde_json::from_str(&event_json("x", "y", time, json!([1]))).unwrap();
        assert_eq!(bare["data"], json!([1]));
    }

    #[test]
    fn urls_are_shown_without_their_secrets() {
        let cases = [
            (
                "https://hooks.slack.com/services/T000/B000/XXXX",
                "https://hooks.slack.com/services/…",
            ),
            ("http://127.0.0.1:9/hook", "http://127.0.0.1:9/hook"),
            ("http://127.0.0.1:9/hook/", "http://127.0.0.1:9/hook"),
            ("https://chat.example.com", "https://chat.example.com"),
            ("https://chat.example.com/", "https://chat.example.com/"),
            (
                "https://chat.example.com/hooks?token=abc",
                "https://chat.example.com/hooks/…",
            ),
            (
                "https://chat.example.com?token=abc",
                "https://chat.example.com/…",
            ),
            (
                "https://user:pw@example.com:8443/a/b",
                "https://example.com:8443/a/…",
            ),
            ("http://[::1]:8080/x#frag", "http://[::1]:8080/x/…"),
            ("example.com/hook/secret", "example.com/hook/…"),
            ("example.com/a?u=http://x/secret", "example.com/a/…"),
            ("", ""),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
        }
    }

    #[test]
    fn io_messages_read_as_text() {
        let refused = io::Error::from_raw_os_error(nix::errno::Errno::ECONNREFUSED as i32);
        assert_eq!(lower_first(&io_message(&refused)), "connection refused");
        assert_eq!(io_message(&io::Error::other("odd (thing)")), "odd (thing)");
    }
}
