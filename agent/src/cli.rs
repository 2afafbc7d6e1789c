//! The `ship-agent` command line (clap types stay here).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use manifests::{Sha256, Version};

/// Receives, verifies, activates and rolls back releases of an app on this host.
///
/// Every command works by hand on the host and also speaks ship's protocol: with
/// --json, stdout carries one JSON event per line ({"type":…,"data":…}) and nothing
/// else. Commands that change releases take the app root's lock without waiting
/// (`health` takes none: it only adds a journal record when the outcome changes).
#[derive(Debug, Parser)]
#[command(name = "ship-agent", version, max_term_width = 100)]
#[command(
    after_help = "Exit status: 0 done, 1 refused or failed (current stays on a complete \
release; the message says which), 2 usage error."
)]
pub struct Cli {
    /// Print protocol events as JSON lines on stdout instead of text on stderr.
    #[arg(long, global = true)]
    pub json: bool,
    /// The protocol version the caller speaks; a mismatch is refused.
    #[arg(long, global = true, value_name = "N")]
    pub protocol: Option<u32>,
    #[command(subcommand)]
    pub command: Command,
}

/// What the fleet file says for this host; `ship` passes it on each call.
#[derive(Debug, Args)]
pub struct HostArgs {
    /// The environment file, relative to the app root (overrides the release's
    /// `env_file`; default shared/.env).
    #[arg(long, value_name = "PATH", value_parser = relative_path)]
    pub env_file: Option<String>,
    /// Set a variable for hooks, restarts and health checks, winning over the
    /// environment file (repeatable).
    #[arg(long = "set", value_name = "NAME=VALUE", value_parser = crate::env::parse_assignment)]
    pub set: Vec<(String, String)>,
}

/// What a release needs of a host: checked by `check`, and by `fetch` before it
/// downloads anything.
#[derive(Debug, Args)]
pub struct NeedArgs {
    /// An environment variable that must be set (repeatable).
    #[arg(long = "need-env", value_name = "NAME", value_parser = env_name)]
    pub need_env: Vec<String>,
    /// A file that must exist, relative to the app root (repeatable).
    #[arg(long = "need-file", value_name = "PATH", value_parser = relative_path)]
    pub need_file: Vec<String>,
    /// An absolute path on this host that the release's symlinks point to (a host
    /// requirement, such as a virtualenv's interpreter; repeatable).
    #[arg(long = "need-host-path", value_name = "PATH", value_parser = host_path)]
    pub need_host_path: Vec<String>,
    /// Bytes the release needs on disk, all told (its files, 4 KiB per entry and a
    /// 16 MiB margin, as receive reckons).
    #[arg(long = "need-bytes", value_name = "BYTES")]
    pub need_bytes: Option<u64>,
    /// The environment file the release names (its manifest's `env_file`);
    /// --env-file wins over it.
    #[arg(long = "release-env-file", value_name = "PATH", value_parser = relative_path)]
    pub release_env_file: Option<String>,
    #[command(flatten)]
    pub host: HostArgs,
}

impl NeedArgs {
    /// As the protocol's `check` request names them.
    pub fn into_check(self) -> crate::protocol::Check {
        crate::protocol::Check {
            env: self.need_env,
            files: self.need_file,
            host_paths: self.need_host_path,
            bytes: self.need_bytes,
            release_env_file: self.release_env_file,
            host: self.host.settings(),
        }
    }
}

impl HostArgs {
    /// As the environment module takes them.
    pub fn settings(self) -> crate::protocol::HostSettings {
        crate::protocol::HostSettings {
            env_file: self.env_file,
            set: self.set,
        }
    }
}

fn relative_path(text: &str) -> Result<String, String> {
    manifests::behaviour::check_relative("path", text)?;
    Ok(text.to_owned())
}

fn host_path(text: &str) -> Result<String, String> {
    manifests::manifest::check_host_path(text).map_err(|reason| format!("{text:?} {reason}"))?;
    Ok(text.to_owned())
}

fn env_name(text: &str) -> Result<String, String> {
    if manifests::behaviour::is_env_name(text) {
        Ok(text.to_owned())
    } else {
        Err(format!("{text:?} is not an environment variable name"))
    }
}

/// A release's signature, for a host that trusts keys.
#[derive(Debug, Args)]
pub struct SigningArgs {
    /// The release's signature: its .minisig file's text, in base64 (as ship sends
    /// it). A host that trusts keys requires one.
    #[arg(long, value_name = "BASE64", conflicts_with = "signature_file")]
    pub signature: Option<String>,
    /// The release's signature, from its .minisig file.
    #[arg(long, value_name = "PATH")]
    pub signature_file: Option<PathBuf>,
    /// Take a release signed with a lower sequence than one this host has accepted
    /// from the same key (a downgrade, or a replay): REASON goes in the journal with
    /// who allowed it.
    #[arg(long, value_name = "REASON", value_parser = reason)]
    pub allow_downgrade: Option<String>,
}

impl SigningArgs {
    /// The signature, read from its file when given as one.
    pub fn into_signing(self) -> Result<crate::trust::Signing, crate::AgentError> {
        let unusable =
            |what: String, e: manifests::signature::SignatureError| crate::AgentError::Untrusted {
                subject: what,
                reason: e.to_string(),
            };
        let signature = match (self.signature, self.signature_file) {
            (Some(arg), _) => Some(
                manifests::signature::decode_arg(&arg)
                    .map_err(|e| unusable("the release's signature".into(), e))?,
            ),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| crate::AgentError::io("cannot read", &path, e))?;
                Some(manifests::signature::Signature::parse(&text).map_err(|e| {
                    crate::AgentError::Untrusted {
                        subject: format!("the signature {}", path.display()),
                        reason: e.to_string(),
                    }
                })?)
            }
            (None, None) => None,
        };
        Ok(crate::trust::Signing {
            signature,
            allow_downgrade: self.allow_downgrade,
        })
    }
}

fn reason(text: &str) -> Result<String, String> {
    if text.trim().is_empty() {
        Err("say why the downgrade is allowed".into())
    } else {
        Ok(text.to_owned())
    }
}

/// What `trust` does.
#[derive(Debug, Subcommand)]
pub enum TrustCommand {
    /// List the keys this host trusts, with the highest signing sequence accepted
    /// from each.
    List,
    /// Trust a key (a minisign public key file). By hand on the host this is the
    /// owner's word; with --statement, a key the host trusts must have signed the
    /// addition (ship key endorse).
    Add {
        /// The public key file.
        key: PathBuf,
        /// A statement of the addition, signed by a trusted key.
        #[arg(long, value_name = "PATH")]
        statement: Option<PathBuf>,
    },
    /// Stop trusting a key (its public key file, or its id). A host left with no
    /// key takes unsigned releases again.
    Revoke {
        /// The public key file, or the key's id.
        key: String,
        /// A statement of the revocation, signed by a trusted key.
        #[arg(long, value_name = "PATH")]
        statement: Option<PathBuf>,
    },
    /// ship's request: a change (JSON on stdin: {"action": "add"|"revoke", "key":
    /// TEXT, "statement": TEXT, "first_contact": BOOL}) that a key the host trusts
    /// signed, or a first key for a host that trusts none, with first_contact.
    #[command(hide = true)]
    Apply,
}

/// Where the app lives.
#[derive(Debug, Args)]
pub struct RootArg {
    /// The app root (holds current, releases/, shared/, .ship/).
    #[arg(long, env = "SHIP_ROOT")]
    pub root: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Unpack an artifact from stdin into releases/<version>, verifying every file.
    Receive {
        #[command(flatten)]
        root: RootArg,
        /// Refuse the artifact unless its sha256 is this (hashes the whole artifact).
        #[arg(long, value_name = "SHA256")]
        expect_digest: Option<Sha256>,
        /// Refuse the artifact unless its release's payload digest is this. Every
        /// file is checked against the manifest anyway, so this pins the content as
        /// firmly as --expect-digest, without hashing the compressed bytes.
        #[arg(long, value_name = "SHA256")]
        expect_payload: Option<Sha256>,
        /// The stream is a delta: it leaves out files whose content a release here
        /// has; those are copied from it (sharing blocks where the file system can)
        /// and checked against the manifest like the rest.
        #[arg(long, conflicts_with = "expect_digest")]
        delta: bool,
        /// The release whose manifest the delta's manifest was compressed against.
        #[arg(long, value_name = "VERSION", requires_all = ["delta", "base_sha256"])]
        base: Option<Version>,
        /// The sha256 of that manifest's bytes, which must be this host's.
        #[arg(long, value_name = "SHA256", requires = "base")]
        base_sha256: Option<Sha256>,
        #[command(flatten)]
        signing: SigningArgs,
    },
    /// Download an artifact from a store and receive it as `receive` does. The URL
    /// (http://, https:// or file://) comes on stdin as {"url": URL}, so that a
    /// presigned URL stays out of the process list; its query string is never
    /// printed. A download that breaks off is resumed where it stopped.
    Fetch {
        #[command(flatten)]
        root: RootArg,
        /// The artifact's sha256: what was downloaded must have it.
        #[arg(long, value_name = "SHA256")]
        expect_digest: Sha256,
        /// Refuse the artifact unless its release's payload digest is this.
        #[arg(long, value_name = "SHA256")]
        expect_payload: Option<Sha256>,
        /// What the release needs, checked as `check` does before anything is
        /// downloaded.
        #[command(flatten)]
        needs: NeedArgs,
        #[command(flatten)]
        signing: SigningArgs,
    },
    /// Journal a metric analysis ship made of the running release (JSON on stdin).
    #[command(hide = true)]
    Judged {
        #[command(flatten)]
        root: RootArg,
    },
    /// The keys this host trusts (in <root>/.ship/trust/): once it has one, it takes
    /// only releases that one of them signed, and never one signed before a release
    /// it already took from that key unless told to (--allow-downgrade).
    Trust {
        #[command(flatten)]
        root: RootArg,
        #[command(subcommand)]
        command: TrustCommand,
    },
    /// Which of the file contents listed on stdin ({"contents": [SHA256, …]}) the
    /// releases here have, each hashed now; a copy that differs from its manifest is
    /// reported and not counted.
    Have {
        #[command(flatten)]
        root: RootArg,
    },
    /// Make releases/<VERSION> live: preflight, shared paths, the pre_activate hook,
    /// the atomic switch of current, restarts and health checks, then the
    /// post_activate hook. A release that does not come up healthy is switched back
    /// to the one before (restarted and checked in turn) and marked bad.
    Activate {
        #[command(flatten)]
        root: RootArg,
        /// The release to activate.
        version: Version,
        #[command(flatten)]
        host: HostArgs,
        /// Once the release is live, prune to this many releases as `prune` does
        /// (a prune that fails is a warning: the release stays live).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        keep: Option<u32>,
    },
    /// Switch back to the release that was live before the current one (never one
    /// that failed its health check), then restart and check it as activate does.
    Rollback {
        #[command(flatten)]
        root: RootArg,
        /// Switch to this release instead.
        #[arg(long, value_name = "VERSION")]
        to: Option<Version>,
        #[command(flatten)]
        host: HostArgs,
    },
    /// Preflight alone: the lock is free, there is room for the release, and what it
    /// requires is here. Changes nothing; names everything that is missing.
    Check {
        #[command(flatten)]
        root: RootArg,
        /// A release on this host whose requirements to check as well.
        version: Option<Version>,
        #[command(flatten)]
        needs: NeedArgs,
    },
    /// Check the current release's services now, once each (no restart, no retries
    /// beyond one attempt): is what runs healthy? Changes nothing but the journal's
    /// health record.
    Health {
        #[command(flatten)]
        root: RootArg,
        #[command(flatten)]
        host: HostArgs,
    },
    /// The protocol's first exchange: agent version and protocol, and the app root's
    /// status (null when nothing was received there yet).
    Hello {
        #[command(flatten)]
        root: RootArg,
    },
    /// Show the current release, the kept ones, the lock and free disk.
    Status {
        #[command(flatten)]
        root: RootArg,
    },
    /// Show the journal: who did what, when, from what, to what.
    History {
        #[command(flatten)]
        root: RootArg,
    },
    /// Remove the oldest releases beyond N (never the current or the previous one).
    Prune {
        #[command(flatten)]
        root: RootArg,
        /// How many releases to keep.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
        keep: u32,
    },
    /// Re-hash a release (default: the current one) and name what changed on disk.
    Verify {
        #[command(flatten)]
        root: RootArg,
        /// The release to check.
        version: Option<Version>,
    },
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::{Cli, Command};
    use crate::protocol::{self, HostSettings, Request};

    /// Parses `request` as the agent does when ship sends it.
    fn parse<R: Request>(request: &R) -> Command {
        let mut argv = vec![
            "ship-agent".to_owned(),
            "--json".to_owned(),
            "--protocol".to_owned(),
            protocol::VERSION.to_string(),
            R::COMMAND.to_owned(),
            "--root".to_owned(),
            "/srv/shop".to_owned(),
        ];
        argv.extend(request.args());
        let cli = Cli::try_parse_from(&argv).unwrap_or_else(|e| panic!("{argv:?}: {e}"));
        assert!(cli.json);
        assert_eq!(cli.protocol, Some(protocol::VERSION));
        cli.command
    }

    /// A signature of "data" by a new key, with leave to downgrade.
    fn signing() -> protocol::Signing {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let sig = minisign::sign(None, &pair.sk, &b"data"[..], Some("ship-release x"), None);
        protocol::Signing {
            signature: Some(sig.unwrap().into_string()),
            allow_downgrade: Some("roll back the schema, ticket 42".into()),
        }
    }

    fn same_signing(parsed: super::SigningArgs) {
        let sent = signing();
        let parsed = parsed.into_signing().unwrap();
        assert_eq!(parsed.signature.unwrap().comment(), "ship-release x");
        assert_eq!(parsed.allow_downgrade, sent.allow_downgrade);
    }

    fn host() -> HostSettings {
        HostSettings {
            env_file: Some("shared/prod.env".into()),
            set: vec![
                ("SHOP_PORT".into(), "8080".into()),
                ("GREETING".into(), "a=b c".into()),
            ],
        }
    }

    #[test]
    fn every_request_parses_back_into_what_was_sent() {
        let v2: manifests::Version = "v2".parse().unwrap();
        assert!(
            matches!(parse(&protocol::Hello), Command::Hello { root } if root.root == std::path::Path::new("/srv/shop"))
        );
        assert!(matches!(parse(&protocol::History), Command::History { .. }));

        let payload: manifests::Sha256 = "cd".repeat(32).parse().unwrap();
        for delta in [false, true] {
            let base = delta.then(|| protocol::Base {
                version: v2.clone(),
                sha256: payload.clone(),
            });
            let Command::Receive {
                expect_payload,
                expect_digest,
                delta: parsed,
                base: parsed_base,
                base_sha256,
                signing: parsed_signing,
                ..
            } = parse(&protocol::Receive {
                expect_payload: payload.clone(),
                delta,
                base: base.clone(),
                signing: signing(),
            })
            else {
                panic!("not receive")
            };
            assert_eq!(
                (expect_payload.as_ref(), expect_digest, parsed),
                (Some(&payload), None, delta)
            );
            assert_eq!(
                parsed_base.zip(base_sha256),
                base.map(|b| (b.version, b.sha256))
            );
            same_signing(parsed_signing);
        }
        assert!(matches!(parse(&protocol::Have), Command::Have { .. }));
        assert!(matches!(parse(&protocol::Judge), Command::Judged { .. }));
        assert!(matches!(
            parse(&protocol::TrustList),
            Command::Trust {
                command: super::TrustCommand::List,
                ..
            }
        ));
        assert!(matches!(
            parse(&protocol::TrustApply),
            Command::Trust {
                command: super::TrustCommand::Apply,
                ..
            }
        ));

        let Command::Activate {
            version, host: h, ..
        } = parse(&protocol::Activate {
            version: v2.clone(),
            host: host(),
            keep: Some(3),
        })
        else {
            panic!("not activate")
        };
        assert_eq!((version, h.settings()), (v2.clone(), host()));

        for to in [None, Some(v2.clone())] {
            let Command::Rollback {
                to: parsed,
                host: h,
                ..
            } = parse(&protocol::Rollback {
                to: to.clone(),
                host: HostSettings::default(),
            })
            else {
                panic!("not rollback")
            };
            assert_eq!((parsed, h.settings()), (to, HostSettings::default()));
        }

        let check = protocol::Check {
            env: vec!["DATABASE_URL".into()],
            files: vec!["shared/secret.key".into()],
            host_paths: vec!["/usr/bin/python3.11".into()],
            bytes: Some(123_456),
            release_env_file: Some("shared/.env.release".into()),
            host: host(),
        };
        let Command::Check { version, needs, .. } = parse(&check) else {
            panic!("not check")
        };
        assert_eq!(version, None);
        assert_eq!(needs.into_check(), check);
        let digest: manifests::Sha256 = "ab".repeat(32).parse().unwrap();
        let fetch = protocol::Fetch {
            expect_digest: digest.clone(),
            expect_payload: digest.clone(),
            needs: check.clone(),
            signing: signing(),
        };
        let Command::Fetch {
            expect_digest,
            expect_payload,
            needs,
            signing: parsed_signing,
            ..
        } = parse(&fetch)
        else {
            panic!("not fetch")
        };
        same_signing(parsed_signing);
        assert_eq!(
            (expect_digest, expect_payload, needs.into_check()),
            (digest.clone(), Some(digest), check)
        );

        let Command::Health { host: h, .. } = parse(&protocol::Health { host: host() }) else {
            panic!("not health")
        };
        assert_eq!(h.settings(), host());

        let Command::Prune { keep, .. } = parse(&protocol::Prune { keep: 3 }) else {
            panic!("not prune")
        };
        assert_eq!(keep, 3);
    }
}
