//! `ship-agent`: everything that happens on a host — receive and verify an artifact
//! into `releases/<version>`, switch `current` atomically, roll back, prune, check
//! the running release's health, and keep the lock and the journal.
//!
//! The agent is small and synchronous: no SSH, no progress bars. It trusts nothing it
//! is sent: artifacts go through the packager's checking reader, identifiers are
//! validated types, and every change to the host is a rename (see `ARCHITECTURE.md`
//! for the invariants).

mod cli;
mod crash;
mod drift;
mod env;
mod error;
mod fetch;
mod fsutil;
mod health;
mod journal;
mod layout;
mod lifecycle;
mod lock;
mod output;
mod perms;
pub mod protocol;
mod prune;
mod receive;
mod releases;
mod reuse;
mod run;
mod status;
mod switch;
mod trust;
mod watch;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::process::ExitCode;

use clap::Parser;
use serde::Serialize;

use cli::{Cli, Command};
pub use error::AgentError;
use layout::AppRoot;
// The journal reader, for the fuzz targets (fuzz/); not an interface of the agent.
#[doc(hidden)]
pub use journal::parse as parse_journal;
pub use layout::installed_agent;
use manifests::Version;
use output::Output;
pub use output::human_bytes;
use protocol::{AgentInfo, Event, Failure, FailureKind, HelloReply};

/// Runs `ship-agent` with `args` (the first being the program name). Exit status: 0
/// done, 1 refused or failed, 2 usage.
pub fn run<I, T>(args: I) -> ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { 2 } else { 0 });
        }
    };
    let out = Output::new(cli.json);
    out.event(&Event::Agent(AgentInfo {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        protocol: protocol::VERSION,
    }));
    if let Some(theirs) = cli.protocol
        && theirs != protocol::VERSION
    {
        report_failure(
            out,
            Failure {
                kind: FailureKind::ProtocolMismatch,
                message: format!(
                    "protocol mismatch: the caller speaks protocol {theirs}, this ship-agent {} speaks {}",
                    env!("CARGO_PKG_VERSION"),
                    protocol::VERSION
                ),
                causes: Vec::new(),
                hint: None,
                details: None,
            },
        );
        return ExitCode::from(2);
    }
    if let Err(e) = perms::check_own_binary() {
        report_failure(out, e.failure());
        return ExitCode::from(1);
    }
    match dispatch(cli.command, out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            report_failure(out, e.failure());
            ExitCode::from(1)
        }
    }
}

fn report_failure(out: Output, failure: Failure) {
    if out.is_json() {
        out.event(&Event::Failed(failure));
    } else {
        eprintln!("error: {}", failure.message);
        for cause in &failure.causes {
            eprintln!("  caused by: {cause}");
        }
        if let Some(hint) = &failure.hint {
            eprintln!("hint: {hint}");
        }
    }
}

fn done(out: Output, reply: &impl Serialize) {
    out.event(&Event::Done(
        serde_json::to_value(reply).expect("replies serialize"),
    ));
}

/// Opens an existing app root.
fn existing(root: &cli::RootArg) -> Result<AppRoot, AgentError> {
    let app = AppRoot::new(&root.root).map_err(|e| AgentError::io("cannot use", &root.root, e))?;
    if !app.exists() {
        return Err(AgentError::NotAnAppRoot {
            root: app.path().to_owned(),
        });
    }
    Ok(app)
}

/// Takes the lock of `app` for `command`.
/// Takes the lock of `app` for `command`, then takes write permission away from
/// other accounts where an older agent or a loose umask left it (see [`perms`]).
fn locked(app: &AppRoot, command: &str) -> Result<lock::Lock, AgentError> {
    let lock =
        lock::acquire(&app.lock(), &format!("ship-agent {command}")).map_err(|e| match e {
            AgentError::Locked { holder, .. } => AgentError::Locked {
                root: app.path().to_owned(),
                holder,
            },
            other => other,
        })?;
    perms::tighten(app)?;
    Ok(lock)
}

/// `check`'s preflight (also `fetch`'s, before it downloads): what `needs` names and,
/// with `version`, what that release here requires.
fn preflight(
    app: &AppRoot,
    version: Option<&Version>,
    needs: protocol::Check,
) -> Result<protocol::Preflight, AgentError> {
    let (mut behaviour, mut host_paths) = match version {
        Some(version) => {
            let manifest = receive::read_release_manifest(app, version)?.ok_or_else(|| {
                AgentError::NoRelease {
                    version: version.clone(),
                    present: releases::present(app).unwrap_or_default(),
                }
            })?;
            (manifest.behaviour.clone(), lifecycle::host_paths(&manifest))
        }
        None => Default::default(),
    };
    behaviour.requires.env.extend(needs.env);
    behaviour.requires.files.extend(needs.files);
    for path in needs.host_paths {
        host_paths.entry(path).or_default();
    }
    if needs.release_env_file.is_some() {
        behaviour.env_file = needs.release_env_file;
    }
    lifecycle::preflight(app, &behaviour, &host_paths, &needs.host, needs.bytes)
}

/// A release's signature, checked against the host's trust store before anything
/// of the release is read.
fn admit(
    app: &AppRoot,
    signing: cli::SigningArgs,
    payload: Option<&manifests::Sha256>,
    out: Output,
) -> Result<Option<trust::Admitted>, AgentError> {
    let holds = |version: &Version, payload: &manifests::Sha256| {
        receive::read_artifact_facts(app, version).is_some_and(|f| f.payload_digest == *payload)
    };
    let admitted = signing
        .into_signing()
        .and_then(|signing| trust::Trust::load(app)?.admit(&signing, payload, holds));
    if let Err(e) = &admitted {
        let mut record = protocol::Record::new(protocol::Op::Receive, protocol::Outcome::Failed);
        record.reason = Some(protocol::chain(e));
        // The refusal is the answer, even where the journal cannot take it.
        if let Err(journal_error) = journal::append(&app.journal(), &record) {
            out.warn(&format!("the refusal was not journaled: {journal_error}"));
        }
    }
    admitted
}

/// `trust`: lists, adds or revokes keys (under the lock, for a change).
fn change_trust(
    app: &AppRoot,
    command: cli::TrustCommand,
    out: Output,
) -> Result<protocol::TrustReply, AgentError> {
    use manifests::signature::{PublicKey, Signature};
    let untrusted = |subject: String| {
        move |e: manifests::signature::SignatureError| AgentError::Untrusted {
            subject: subject.clone(),
            reason: e.to_string(),
        }
    };
    let read = |path: &std::path::Path| {
        std::fs::read_to_string(path).map_err(|e| AgentError::io("cannot read", path, e))
    };
    let key_file = |path: &std::path::Path| -> Result<PublicKey, AgentError> {
        PublicKey::parse(&read(path)?).map_err(untrusted(format!("the key {}", path.display())))
    };
    let statement = |path: Option<std::path::PathBuf>| -> Result<Option<Signature>, AgentError> {
        path.map(|path| {
            Signature::parse(&read(&path)?)
                .map_err(untrusted(format!("the statement {}", path.display())))
        })
        .transpose()
    };
    if matches!(command, cli::TrustCommand::List) {
        return trust::Trust::load(app)?.reply(false);
    }
    app.create()
        .map_err(|e| AgentError::io("cannot create the app root", app.path(), e))?;
    let _lock = locked(app, "trust")?;
    let mut store = trust::Trust::load(app)?;
    let (changed, what) = match command {
        cli::TrustCommand::List => unreachable!("listed above"),
        cli::TrustCommand::Add { key, statement: s } => {
            let key = key_file(&key)?;
            let id = key.id();
            (
                store.add(key, statement(s)?.as_ref(), false, true)?,
                (protocol::Op::TrustAdd, id),
            )
        }
        cli::TrustCommand::Revoke { key, statement: s } => {
            let key = match key.parse::<manifests::signature::KeyId>() {
                Ok(id) => store
                    .key(id)
                    .cloned()
                    .ok_or_else(|| AgentError::Untrusted {
                        subject: format!("revoking key {id}"),
                        reason: format!(
                            "this host does not trust it ({})",
                            store.key_ids().join(", ")
                        ),
                    })?,
                Err(_) => key_file(std::path::Path::new(&key))?,
            };
            let id = key.id();
            (
                store.revoke(&key, statement(s)?.as_ref(), true)?,
                (protocol::Op::TrustRevoke, id),
            )
        }
        cli::TrustCommand::Apply => {
            let change: protocol::TrustChange =
                stdin_json("cannot read the trust change ({\"action\": …, \"key\": …}) from")?;
            let key = PublicKey::parse(&change.key).map_err(untrusted("the key sent".into()))?;
            let id = key.id();
            let statement = change
                .statement
                .as_deref()
                .map(Signature::parse)
                .transpose()
                .map_err(untrusted(format!("the statement about key {id}")))?;
            match change.action {
                protocol::TrustAction::Add => (
                    store.add(key, statement.as_ref(), change.first_contact, false)?,
                    (protocol::Op::TrustAdd, id),
                ),
                protocol::TrustAction::Revoke => (
                    store.revoke(&key, statement.as_ref(), false)?,
                    (protocol::Op::TrustRevoke, id),
                ),
            }
        }
    };
    let (op, id) = what;
    if changed && !store.enforced() {
        out.warn("this host trusts no key now: it takes unsigned releases");
    }
    if changed {
        let mut record = protocol::Record::new(op, protocol::Outcome::Ok);
        record.key = Some(id.to_string());
        journal::append(&app.journal(), &record)?;
        out.say(format!("{}: key {id}", op.name()));
    } else {
        out.say(format!("{}: key {id} (nothing to change)", op.name()));
    }
    store.reply(changed)
}

/// The JSON document on stdin; `action` says what could not be read, as in
/// "cannot read the artifact's URL from stdin".
fn stdin_json<T: serde::de::DeserializeOwned>(action: &'static str) -> Result<T, AgentError> {
    serde_json::from_reader(std::io::stdin().lock()).map_err(|e| {
        AgentError::io(
            action,
            "stdin",
            std::io::Error::new(std::io::ErrorKind::InvalidData, e),
        )
    })
}

fn dispatch(command: Command, out: Output) -> Result<(), AgentError> {
    match command {
        Command::Receive {
            root,
            expect_digest,
            expect_payload,
            delta,
            base,
            base_sha256,
            signing,
        } => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                return Err(AgentError::io(
                    "the artifact must come on stdin, for example `ship-agent receive --root ROOT < shop-v1.tar.zst`; stdin is",
                    "a terminal",
                    std::io::Error::from(std::io::ErrorKind::InvalidInput),
                ));
            }
            let app = AppRoot::new(&root.root)
                .map_err(|e| AgentError::io("cannot use", &root.root, e))?;
            app.create()
                .map_err(|e| AgentError::io("cannot create the app root", app.path(), e))?;
            let _lock = locked(&app, "receive")?;
            prune::clear_leftovers(&app)?;
            let signed = admit(&app, signing, expect_payload.as_ref(), out)?;
            let expect = receive::Expect {
                digest: expect_digest,
                payload: expect_payload,
                delta,
                base: base
                    .zip(base_sha256)
                    .map(|(version, sha256)| protocol::Base { version, sha256 }),
                signed,
            };
            let received = receive::receive(&app, stdin, &expect, out)?;
            done(out, &received);
        }
        Command::Fetch {
            root,
            expect_digest,
            expect_payload,
            needs,
            signing,
        } => {
            let source: protocol::Source =
                stdin_json("cannot read the artifact's URL ({\"url\": URL}) from")?;
            let app = AppRoot::new(&root.root)
                .map_err(|e| AgentError::io("cannot use", &root.root, e))?;
            // Nothing is written or downloaded for a host that cannot take the release.
            preflight(&app, None, needs.into_check())?;
            app.create()
                .map_err(|e| AgentError::io("cannot create the app root", app.path(), e))?;
            let _lock = locked(&app, "fetch")?;
            prune::clear_leftovers(&app)?;
            // An untrusted release is refused before it is downloaded.
            let signed = admit(&app, signing, expect_payload.as_ref(), out)?;
            let fetch::Opened { reader, failure } = fetch::open(&source.url, out)?;
            let expect = receive::Expect {
                digest: Some(expect_digest),
                payload: expect_payload,
                signed,
                ..receive::Expect::default()
            };
            let received = receive::receive(&app, reader, &expect, out)
                .map_err(|e| failure.blame(e, protocol::without_query(&source.url)))?;
            done(out, &received);
        }
        Command::Have { root } => {
            let wanted: protocol::Wanted = stdin_json(
                "cannot read the contents asked about ({\"contents\": [SHA256, …]}) from",
            )?;
            let app = AppRoot::new(&root.root)
                .map_err(|e| AgentError::io("cannot use", &root.root, e))?;
            let stock = if app.exists() {
                reuse::Stock::of(&app, out)?
            } else {
                reuse::Stock::default()
            };
            let mut missing: Vec<manifests::Sha256> = wanted.contents;
            missing.sort();
            missing.dedup();
            missing.retain(|content| !stock.has(content, out));
            done(out, &protocol::Had { missing });
        }
        Command::Activate {
            root,
            version,
            host,
            keep,
        } => {
            let app = existing(&root)?;
            let _lock = locked(&app, "activate")?;
            let mut switched = switch::activate(&app, &version, &host.settings(), out)?;
            if let Some(keep) = keep {
                match prune::prune(&app, keep as usize, out) {
                    Ok(pruned) => switched.pruned = pruned.removed,
                    Err(e) => switched
                        .warnings
                        .push(format!("prune failed: {}", protocol::chain(&e))),
                }
            }
            done(out, &switched);
        }
        Command::Rollback { root, to, host } => {
            let app = existing(&root)?;
            let _lock = locked(&app, "rollback")?;
            done(
                out,
                &switch::rollback(&app, to.as_ref(), &host.settings(), out)?,
            );
        }
        Command::Check {
            root,
            version,
            needs,
        } => {
            let app = AppRoot::new(&root.root)
                .map_err(|e| AgentError::io("cannot use", &root.root, e))?;
            let checked = preflight(&app, version.as_ref(), needs.into_check())?;
            out.say(format!("{}: preflight passed", app.path().display()));
            done(out, &checked);
        }
        Command::Health { root, host } => {
            let app = existing(&root)?;
            // No lock: this runs beside a deploy that holds it. It only reads, and
            // appends to the journal, which is safe without the lock (see `journal`).
            done(out, &watch::health(&app, &host.settings(), out)?);
        }
        Command::Hello { root } => {
            let app = AppRoot::new(&root.root)
                .map_err(|e| AgentError::io("cannot use", &root.root, e))?;
            let status = if app.exists() {
                Some(status::status(&app)?)
            } else {
                None
            };
            out.say(format!(
                "ship-agent {} (protocol {}); {}",
                env!("CARGO_PKG_VERSION"),
                protocol::VERSION,
                if status.is_some() {
                    "an app root"
                } else {
                    "not an app root yet"
                }
            ));
            done(
                out,
                &HelloReply {
                    agent: env!("CARGO_PKG_VERSION").to_owned(),
                    protocol: protocol::VERSION,
                    status,
                    trust: if app.exists() {
                        trust::Trust::load(&app)?.key_ids()
                    } else {
                        Vec::new()
                    },
                },
            );
        }
        Command::Trust { root, command } => {
            let app = AppRoot::new(&root.root)
                .map_err(|e| AgentError::io("cannot use", &root.root, e))?;
            let reply = change_trust(&app, command, out)?;
            done(out, &reply);
        }
        Command::Status { root } => {
            let app = existing(&root)?;
            let status = status::status(&app)?;
            status::print(&status, out);
            done(out, &status);
        }
        Command::Judged { root } => {
            let judgement: protocol::Judgement =
                stdin_json("cannot read the analysis ({\"version\": …, \"metrics\": […]}) from")?;
            let app = existing(&root)?;
            let passed = judgement.verdict == "pass";
            let mut record = protocol::Record::new(
                protocol::Op::Analysis,
                if passed {
                    protocol::Outcome::Ok
                } else {
                    protocol::Outcome::Failed
                },
            );
            record.version = Some(judgement.version.clone());
            if !passed {
                record.reason = Some(format!(
                    "the metric analysis after {} {}",
                    judgement.wave,
                    if judgement.verdict == "fail" {
                        "failed".to_owned()
                    } else {
                        format!("was {}", judgement.verdict)
                    }
                ));
            }
            record.analysis = Some(judgement);
            journal::append(&app.journal(), &record)?;
            done(out, &protocol::HistoryReply { records: 1 });
        }
        Command::History { root } => {
            let app = existing(&root)?;
            let records = journal::read(&app.journal())?;
            status::print_history(&records, out);
            for record in &records {
                out.event(&Event::Record(record.clone()));
            }
            done(
                out,
                &protocol::HistoryReply {
                    records: records.len(),
                },
            );
        }
        Command::Prune { root, keep } => {
            let app = existing(&root)?;
            let _lock = locked(&app, "prune")?;
            done(out, &prune::prune(&app, keep as usize, out)?);
        }
        Command::Verify { root, version } => {
            let app = existing(&root)?;
            let version = match version {
                Some(v) => v,
                None => releases::current(&app).ok_or_else(|| AgentError::NoRelease {
                    version: "current".parse().expect("valid"),
                    present: releases::present(&app).unwrap_or_default(),
                })?,
            };
            let drift = drift::verify(&app, &version)?;
            for (path, what) in &drift.changed {
                out.say(format!("changed  {path}: {what}"));
            }
            for path in &drift.added {
                out.say(format!("added    {path}"));
            }
            for path in &drift.removed {
                out.say(format!("removed  {path}"));
            }
            done(out, &drift);
            if drift.count() > 0 {
                return Err(AgentError::Drift {
                    version,
                    count: drift.count(),
                });
            }
            out.say(format!("{version}: every entry matches its manifest"));
        }
    }
    Ok(())
}
