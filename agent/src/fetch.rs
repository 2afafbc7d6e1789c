//! `fetch`: the artifact comes from a store instead of stdin, and is received exactly
//! as `receive` receives it (every file checked against the manifest, the artifact's
//! sha256 against the one ship sent), so integrity never depends on the store.
//!
//! A download has timeouts (connect, and each read), and a connection that drops is
//! resumed where it stopped with a `Range` request, after a backoff, a few times.
//! The URL comes on stdin, not in the process list, and no message carries its query
//! string (where a presigned URL keeps its signature).

use std::fs::File;
use std::io::{self, Read};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::error::AgentError;
use crate::output::Output;
use crate::protocol::without_query;

/// How long connecting, and each read of the body, may take.
const TIMEOUT: Duration = Duration::from_secs(15);
/// Attempts after the first, for a download that breaks off.
const RETRIES: u32 = 5;
/// The first wait before a retry; each next one doubles.
const BACKOFF: Duration = Duration::from_millis(250);

/// Why the store did not give the artifact.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct StoreError {
    /// What happened, with the store's own words (HTTP status, S3 error code).
    pub reason: String,
    /// The store answered with a refusal (it will not change its mind on a retry).
    pub refused: bool,
}

/// An opened download: its bytes, and why it stopped when the store failed it.
pub struct Opened {
    /// The artifact's bytes, resumed across broken connections.
    pub reader: Box<dyn Read + Send>,
    /// Why the store failed the download part way, once it has.
    pub failure: Failure,
}

/// Why the store failed a download, once it has (shared with the download).
#[derive(Clone, Default)]
pub struct Failure(Arc<Mutex<Option<String>>>);

impl Failure {
    /// `error` from receiving the download, as the store's own error when the store
    /// is what failed.
    pub fn blame(&self, error: AgentError, url: &str) -> AgentError {
        match self.0.lock().map(|f| f.clone()) {
            Ok(Some(reason)) => AgentError::Store {
                url: url.to_owned(),
                reason,
            },
            _ => error,
        }
    }

    fn set(&self, reason: String) {
        if let Ok(mut failure) = self.0.lock() {
            failure.get_or_insert(reason);
        }
    }
}

/// Opens `url` (`http://`, `https://` or `file://`) for reading. Fails before anything
/// is read when the store refuses or cannot be reached.
pub fn open(url: &str, out: Output) -> Result<Opened, AgentError> {
    let shown = without_query(url).to_owned();
    let store = |reason: String| AgentError::Store {
        url: shown.clone(),
        reason,
    };
    if let Some(path) = url.strip_prefix("file://") {
        let file = File::open(path).map_err(|e| store(e.to_string()))?;
        return Ok(Opened {
            reader: Box::new(file),
            failure: Failure::default(),
        });
    }
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        return Err(store(
            "only http://, https:// and file:// URLs can be fetched".to_owned(),
        ));
    }
    let mut download = Download {
        agent: ureq::Agent::config_builder()
            .timeout_connect(Some(TIMEOUT))
            .timeout_recv_response(Some(TIMEOUT))
            .timeout_per_read(Some(TIMEOUT))
            .http_status_as_error(false)
            .proxy(ureq::Proxy::try_from_env())
            .build()
            .into(),
        url: url.to_owned(),
        shown: shown.clone(),
        offset: 0,
        length: None,
        body: None,
        retries: 0,
        out,
        failure: Failure::default(),
    };
    download.connect().map_err(|e| store(e.reason))?;
    Ok(Opened {
        failure: download.failure.clone(),
        reader: Box::new(download),
    })
}

/// An HTTP download that resumes by `Range` after a broken connection.
struct Download {
    agent: ureq::Agent,
    url: String,
    /// The URL as messages show it.
    shown: String,
    /// Bytes read so far.
    offset: u64,
    /// The artifact's length, when the store said.
    length: Option<u64>,
    body: Option<ureq::BodyReader<'static>>,
    /// Retries made so far.
    retries: u32,
    out: Output,
    /// Why the store failed the download, once it has.
    failure: Failure,
}

impl Download {
    /// (Re)starts the download at `offset`.
    fn connect(&mut self) -> Result<(), StoreError> {
        let mut request = self.agent.get(&self.url);
        if self.offset > 0 {
            request = request.header("Range", &format!("bytes={}-", self.offset));
        }
        let response = request.call().map_err(|e| StoreError {
            reason: without_query(&e.to_string()).to_owned(),
            refused: false,
        })?;
        let status = response.status().as_u16();
        let resumed = self.offset > 0;
        if !(status == 200 && !resumed || status == 206 && resumed) {
            return Err(StoreError {
                reason: refusal(response),
                refused: true,
            });
        }
        if resumed {
            // The part must start where the last one stopped.
            let start = response
                .headers()
                .get("content-range")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("bytes "))
                .and_then(|v| v.split_once('-'))
                .and_then(|(start, _)| start.parse::<u64>().ok());
            if start != Some(self.offset) {
                return Err(StoreError {
                    reason: format!("the store resumed at another offset than {}", self.offset),
                    refused: true,
                });
            }
        } else {
            self.length = response
                .headers()
                .get("content-length")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok());
        }
        self.body = Some(response.into_body().into_reader());
        Ok(())
    }

    /// After a read failed with `error`: waits, then resumes where the download
    /// stopped, or gives up after the last retry.
    fn resume(&mut self, error: &io::Error) -> io::Result<()> {
        self.body = None;
        loop {
            if self.retries == RETRIES {
                return Err(io::Error::other(StoreError {
                    reason: format!(
                        "the download broke off after {} bytes ({}), {} retries",
                        self.offset,
                        without_query(&error.to_string()),
                        RETRIES
                    ),
                    refused: false,
                }));
            }
            std::thread::sleep(BACKOFF * 2u32.pow(self.retries));
            self.retries += 1;
            self.out.warn(&format!(
                "the download of {} broke off after {} bytes ({}); resuming (retry {} of {RETRIES})",
                self.shown,
                self.offset,
                without_query(&error.to_string()),
                self.retries
            ));
            match self.connect() {
                Ok(()) => return Ok(()),
                // A store that refuses (rather than one not there) will not change
                // its mind.
                Err(e) if e.refused => return Err(io::Error::other(e)),
                Err(_) => continue,
            }
        }
    }
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let Some(body) = self.body.as_mut() else {
                return Ok(0);
            };
            let error = match body.read(buf) {
                Ok(0) if self.length.is_some_and(|length| self.offset < length) => {
                    io::Error::from(io::ErrorKind::UnexpectedEof)
                }
                Ok(n) => {
                    self.offset += n as u64;
                    return Ok(n);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => e,
            };
            if let Err(e) = self.resume(&error) {
                self.failure.set(e.to_string());
                return Err(e);
            }
        }
    }
}

/// A refusal as the store put it: the HTTP status, and S3's error code and message
/// when the body has them.
fn refusal(response: ureq::http::Response<ureq::Body>) -> String {
    let status = response.status();
    let mut text = format!(
        "HTTP {} {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("")
    )
    .trim_end()
    .to_owned();
    let body = response
        .into_body()
        .with_config()
        .limit(64 * 1024)
        .read_to_string()
        .unwrap_or_default();
    let tag = |name: &str| {
        let start = body.find(&format!("<{name}>"))? + name.len() + 2;
        let end = body[start..].find(&format!("</{name}>"))? + start;
        Some(body[start..end].trim().to_owned())
    };
    if let Some(code) = tag("Code") {
        text += &format!(" ({code}");
        if let Some(message) = tag("Message") {
            text += &format!(": {message}");
        }
        text += ")";
    }
    text
}
