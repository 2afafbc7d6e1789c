//! `ship.toml`: the app (`[app]`), read from the packed directory by `ship pack`,
//! and the fleet (`[ssh]`, `[hosts.*]`, `[groups]`), read by the commands that
//! reach hosts.
//!
//! User config is strict: an unknown key is an error that names the key, so a typo
//! never silently changes what gets deployed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::behaviour::{Behaviour, Hooks, Requires, Service};
use crate::ids::{AppName, HostName, Version};
use crate::rollout::RolloutTable;

/// The file name ship looks for.
pub const FILE_NAME: &str = "ship.toml";

/// A parsed `ship.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ShipToml {
    /// The `[app]` table.
    #[serde(default)]
    pub app: AppTable,
    /// The `[ssh]` table: defaults for every SSH host.
    #[serde(default)]
    pub ssh: SshTable,
    /// The `[hosts.<name>]` tables.
    #[serde(default)]
    pub hosts: BTreeMap<HostName, HostTable>,
    /// The `[groups]` table: group name to host names.
    #[serde(default)]
    pub groups: BTreeMap<HostName, Vec<HostName>>,
    /// The `[group.<name>]` tables: settings for every host of a group (a host's own
    /// settings win).
    #[serde(default)]
    pub group: BTreeMap<HostName, GroupTable>,
    /// The `[release]` table: how releases use the host.
    #[serde(default)]
    pub release: ReleaseTable,
    /// The `[hooks]` table.
    #[serde(default)]
    pub hooks: Hooks,
    /// The `[[service]]` tables.
    #[serde(default, rename = "service")]
    pub services: Vec<Service>,
    /// The `[rollout]` table: the rollout policy of every deploy, unless an
    /// environment or the command line says otherwise.
    #[serde(default)]
    pub rollout: RolloutTable,
    /// The `[notify]` table: where deploy events go.
    #[serde(default)]
    pub notify: NotifyTable,
    /// The `[store]` table: the artifact store `ship publish` uploads to and hosts
    /// fetch from.
    #[serde(default)]
    pub store: StoreTable,
    /// The `[trust]` table: the keys releases must be signed by.
    #[serde(default)]
    pub trust: TrustTable,
    /// The `[analysis]` table: the metrics a rollout is judged by.
    #[serde(default)]
    pub analysis: crate::analysis::AnalysisTable,
    /// The `[environments.<name>]` tables: fleets of their own (develop, staging,
    /// production), chosen with `--env`.
    #[serde(default)]
    pub environments: BTreeMap<HostName, EnvironmentTable>,
}

/// The `[store]` table. Credentials are never in the file: S3 takes them from the
/// standard AWS environment variables (`AWS_ACCESS_KEY_ID`, …).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct StoreTable {
    /// `s3://bucket/prefix`, `https://host/path` (PUT, WebDAV-style) or
    /// `file:///path`.
    pub url: Option<String>,
    /// An S3-compatible endpoint instead of AWS's (`http://127.0.0.1:3900`).
    pub endpoint: Option<String>,
    /// The S3 region (default: `AWS_REGION`, else `us-east-1`).
    pub region: Option<String>,
    /// How long a presigned URL handed to a host stays valid (default `1h`).
    #[serde(default, deserialize_with = "duration")]
    pub url_lifetime: Option<Duration>,
}

impl StoreTable {
    /// This table, with what `over` sets winning, field by field.
    pub fn overridden_by(&self, over: &StoreTable) -> StoreTable {
        StoreTable {
            url: over.url.clone().or_else(|| self.url.clone()),
            endpoint: over.endpoint.clone().or_else(|| self.endpoint.clone()),
            region: over.region.clone().or_else(|| self.region.clone()),
            url_lifetime: over.url_lifetime.or(self.url_lifetime),
        }
    }
}

/// The `[trust]` table: the public keys (minisign files, relative to the config
/// file) that `ship verify` checks signatures against, and that a deploy requires
/// the artifact to be signed by before anything moves.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct TrustTable {
    /// The public key files.
    #[serde(default)]
    pub keys: Vec<String>,
}

/// An `[environments.<name>]` table: a fleet of its own, with its own hosts, groups,
/// root and policy. What it leaves out comes from the top level of the file.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct EnvironmentTable {
    /// The app root on its hosts (overrides `[app] root`; a host's own wins).
    pub root: Option<String>,
    /// Its SSH defaults, field by field over `[ssh]`.
    #[serde(default)]
    pub ssh: SshTable,
    /// Its hosts (the top-level `[hosts]` do not belong to it).
    #[serde(default)]
    pub hosts: BTreeMap<HostName, HostTable>,
    /// Its groups of hosts.
    #[serde(default)]
    pub groups: BTreeMap<HostName, Vec<HostName>>,
    /// Settings for the hosts of its groups.
    #[serde(default)]
    pub group: BTreeMap<HostName, GroupTable>,
    /// Its rollout policy, field by field over `[rollout]`.
    #[serde(default)]
    pub rollout: RolloutTable,
    /// Where its deploy events go, besides `[notify]`.
    #[serde(default)]
    pub notify: NotifyTable,
    /// Its artifact store, field by field over `[store]`.
    #[serde(default)]
    pub store: StoreTable,
    /// Its analysis, field by field over `[analysis]` (its metrics replace the top
    /// level's).
    #[serde(default)]
    pub analysis: crate::analysis::AnalysisTable,
}

/// The `[notify]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct NotifyTable {
    /// URLs that receive each deploy event as a JSON POST.
    #[serde(default)]
    pub webhooks: Vec<String>,
    /// A file each deploy event is appended to as a JSON line (relative to the
    /// config file's directory).
    pub log: Option<PathBuf>,
}

/// The `[release]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct ReleaseTable {
    /// Paths kept in `shared/` and linked into every release.
    #[serde(default)]
    pub shared: Vec<String>,
    /// What must be present on a host.
    #[serde(default)]
    pub requires: Requires,
    /// The environment file, relative to the app root (default `shared/.env`).
    pub env_file: Option<String>,
}

/// The `[ssh]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct SshTable {
    /// Login user (default: from `~/.ssh/config`, else the local user).
    pub user: Option<String>,
    /// Private key file; ssh-agent is tried first.
    pub identity: Option<PathBuf>,
    /// known_hosts file (default `~/.ssh/known_hosts`).
    pub known_hosts: Option<PathBuf>,
    /// ssh_config file that fills in what a host leaves out (default: OpenSSH's own,
    /// `~/.ssh/config` and `/etc/ssh/ssh_config`).
    pub config: Option<PathBuf>,
    /// Port (default 22).
    pub port: Option<u16>,
    /// Connect timeout, like `10s` (default 10s); a connected host that sends
    /// nothing, not even a keepalive reply, for three times as long is given up on.
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
}

impl SshTable {
    /// `self`, with what it leaves unset taken from `under`.
    pub fn over(&self, under: &SshTable) -> SshTable {
        SshTable {
            user: self.user.clone().or_else(|| under.user.clone()),
            identity: self.identity.clone().or_else(|| under.identity.clone()),
            known_hosts: self
                .known_hosts
                .clone()
                .or_else(|| under.known_hosts.clone()),
            config: self.config.clone().or_else(|| under.config.clone()),
            port: self.port.or(under.port),
            timeout: self.timeout.or(under.timeout),
        }
    }
}

/// How `ship` reaches a host.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// Over SSH.
    #[default]
    Ssh,
    /// No SSH: the agent runs on this machine.
    Local,
}

/// A `[hosts.<name>]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HostTable {
    /// Address to connect to (default: the host's name, through `~/.ssh/config`).
    pub address: Option<String>,
    /// Port (overrides `[ssh] port`).
    pub port: Option<u16>,
    /// Login user (overrides `[ssh] user`).
    pub user: Option<String>,
    /// Private key file (overrides `[ssh] identity`).
    pub identity: Option<PathBuf>,
    /// App root on this host (overrides `[app] root`).
    pub root: Option<String>,
    /// `ssh` (default) or `local`.
    #[serde(default)]
    pub transport: TransportKind,
    /// Environment variables for this host's hooks, restarts and health checks
    /// (they win over the environment file; `${NAME}` in health addresses uses them).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// This host's environment file, relative to the app root (overrides
    /// `[release] env_file`).
    pub env_file: Option<String>,
}

/// A `[group.<name>]` table: what differs for the hosts of a group.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct GroupTable {
    /// Environment variables for the group's hooks, restarts and health checks.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The group's environment file, relative to the app root.
    pub env_file: Option<String>,
}

pub(crate) fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let text = String::deserialize(d)?;
    humantime::parse_duration(&text)
        .map(Some)
        .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
}

/// The `[app]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct AppTable {
    /// The app's name, used in artifact names.
    pub name: Option<AppName>,
    /// The version to pack, when the build does not pass `--version`.
    pub version: Option<Version>,
    /// The app root on every host, unless a host overrides it.
    pub root: Option<String>,
    /// Releases kept per host (default 5).
    pub keep: Option<u32>,
    /// Where `ship deploy <VERSION>` finds `<name>-<VERSION>.tar.zst` (default
    /// `dist`, relative to the config file).
    pub artifacts: Option<PathBuf>,
}

/// Why `ship.toml` could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file exists but could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file parses but does not make sense.
    #[error("invalid config {}: {reason}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong, naming the key.
        reason: String,
    },
    /// The file is not valid TOML of the expected shape.
    #[error("invalid config {}", path.display())]
    Parse {
        /// The file.
        path: PathBuf,
        /// What toml reported, with line and column.
        #[source]
        source: Box<toml::de::Error>,
    },
}

impl ShipToml {
    /// Parses and checks `text`, naming `path` in errors. A key this version does not
    /// know is an error that names it.
    pub fn parse(text: &str, path: &Path) -> Result<ShipToml, ConfigError> {
        let parse_err = |source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        };
        let deserializer = toml::de::Deserializer::parse(text).map_err(parse_err)?;
        let mut unknown = Vec::new();
        let toml: ShipToml =
            serde_ignored::deserialize(deserializer, |key| unknown.push(key.to_string()))
                .map_err(parse_err)?;
        if let Some(key) = unknown.first() {
            let secret = ["key", "secret", "token", "password"]
                .iter()
                .any(|word| key.to_lowercase().contains(word));
            let reason = if key.contains("store.") && secret {
                format!(
                    "unknown key `{key}`: store credentials never go in ship.toml; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the instance's role) where ship runs"
                )
            } else {
                format!("unknown key `{key}`")
            };
            return Err(ConfigError::Invalid {
                path: path.to_owned(),
                reason,
            });
        }
        toml.check().map_err(|reason| ConfigError::Invalid {
            path: path.to_owned(),
            reason,
        })?;
        Ok(toml)
    }

    /// The app's behaviour on hosts, as the manifest carries it.
    pub fn behaviour(&self) -> Behaviour {
        Behaviour {
            shared: self.release.shared.clone(),
            requires: self.release.requires.clone(),
            env_file: self.release.env_file.clone(),
            hooks: self.hooks.clone(),
            services: self.services.clone(),
        }
    }

    /// Reads and checks the file at `path`.
    pub fn load(path: &Path) -> Result<ShipToml, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        ShipToml::parse(&text, path)
    }

    /// What serde cannot check: references between tables and values that must fit
    /// together.
    fn check(&self) -> Result<(), String> {
        self.behaviour().check()?;
        if self.app.keep == Some(0) {
            return Err("[app] keep must be at least 1".into());
        }
        check_fleet(
            "",
            &self.hosts,
            &self.groups,
            &self.group,
            self.app.root.as_deref(),
        )?;
        check_webhooks("[notify]", &self.notify)?;
        self.rollout.check("[rollout]")?;
        self.analysis.check("[analysis]")?;
        for (name, env) in &self.environments {
            let prefix = format!("environments.{name}.");
            check_fleet(
                &prefix,
                &env.hosts,
                &env.groups,
                &env.group,
                env.root.as_deref().or(self.app.root.as_deref()),
            )?;
            if env.hosts.is_empty() {
                return Err(format!("[environments.{name}] has no hosts"));
            }
            check_webhooks(&format!("[environments.{name}.notify]"), &env.notify)?;
            env.rollout
                .check(&format!("[environments.{name}.rollout]"))?;
            env.analysis
                .check(&format!("[environments.{name}.analysis]"))?;
        }
        Ok(())
    }

    /// Reads `dir/ship.toml` if it exists; `Ok(None)` if it does not.
    pub fn load_from_dir(dir: &Path) -> Result<Option<ShipToml>, ConfigError> {
        let path = dir.join(FILE_NAME);
        match std::fs::read_to_string(&path) {
            Ok(text) => ShipToml::parse(&text, &path).map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(ConfigError::Read { path, source }),
        }
    }
}

/// The checks of one fleet's hosts and groups (`prefix` is empty at the top level,
/// `environments.<name>.` in an environment), with `root` as the default app root.
fn check_fleet(
    prefix: &str,
    hosts: &BTreeMap<HostName, HostTable>,
    groups: &BTreeMap<HostName, Vec<HostName>>,
    settings: &BTreeMap<HostName, GroupTable>,
    root: Option<&str>,
) -> Result<(), String> {
    for (group, members) in groups {
        if hosts.contains_key(group) {
            return Err(format!("[{prefix}groups] {group} has the name of a host"));
        }
        if let Some(unknown) = members.iter().find(|m| !hosts.contains_key(*m)) {
            return Err(format!(
                "[{prefix}groups] {group} names {unknown}, which is not under [{prefix}hosts]"
            ));
        }
    }
    for (group, table) in settings {
        if !groups.contains_key(group) {
            return Err(format!(
                "[{prefix}group.{group}] names no group of [{prefix}groups]"
            ));
        }
        if let Some(bad) = table.env.keys().find(|k| !crate::behaviour::is_env_name(k)) {
            return Err(format!(
                "[{prefix}group.{group}] env: {bad:?} is not an environment variable name"
            ));
        }
        if let Some(file) = &table.env_file {
            crate::behaviour::check_relative(&format!("[{prefix}group.{group}] env_file"), file)?;
        }
    }
    for (name, host) in hosts {
        let root = host.root.as_deref().or(root);
        match (root, host.transport) {
            (None, _) => {
                let env = match prefix.strip_suffix('.') {
                    Some(env) => format!(", under [{env}]"),
                    None => String::new(),
                };
                return Err(format!(
                    "[{prefix}hosts.{name}] has no root: set root there{env} or under [app]"
                ));
            }
            (Some(root), TransportKind::Ssh) if !root.starts_with('/') => {
                return Err(format!(
                    "[{prefix}hosts.{name}] root {root:?} must be an absolute path on the host"
                ));
            }
            _ => {}
        }
        if let Some(bad) = host.env.keys().find(|k| !crate::behaviour::is_env_name(k)) {
            return Err(format!(
                "[{prefix}hosts.{name}] env: {bad:?} is not an environment variable name"
            ));
        }
        if let Some(file) = &host.env_file {
            crate::behaviour::check_relative(&format!("[{prefix}hosts.{name}] env_file"), file)?;
        }
        if host.transport == TransportKind::Local
            && (host.address.is_some() || host.port.is_some() || host.user.is_some())
        {
            return Err(format!(
                "[{prefix}hosts.{name}] is local: address, port and user do not apply"
            ));
        }
    }
    Ok(())
}

/// Webhooks must be http or https URLs.
fn check_webhooks(table: &str, notify: &NotifyTable) -> Result<(), String> {
    match notify
        .webhooks
        .iter()
        .find(|url| !url.starts_with("http://") && !url.starts_with("https://"))
    {
        Some(url) => Err(format!(
            "{table} webhooks: {url:?} is not an http:// or https:// URL"
        )),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;

    /// Each config text is refused with an error (or cause) containing its phrase.
    fn assert_refused(cases: &[(&str, &str)]) {
        for (text, expected) in cases {
            let err = ShipToml::parse(text, Path::new("ship.toml")).unwrap_err();
            let full = format!(
                "{err}: {}",
                err.source().map(|s| s.to_string()).unwrap_or_default()
            );
            assert!(full.contains(expected), "{text:?}: {full}");
        }
    }

    #[test]
    fn reads_name_and_version() {
        let t =
            ShipToml::parse("[app]\nname = \"shop\"\nversion = \"v3\"\n", Path::new("x")).unwrap();
        assert_eq!(t.app.name.unwrap().as_str(), "shop");
        assert_eq!(t.app.version.unwrap().as_str(), "v3");
    }

    #[test]
    fn unknown_keys_are_named() {
        let err =
            ShipToml::parse("[app]\nnmae = \"shop\"\n", Path::new("dir/ship.toml")).unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid config dir/ship.toml: unknown key `app.nmae`"
        );
    }

    #[test]
    fn reads_the_fleet() {
        let text = r#"
[app]
name = "shop"
root = "/srv/shop"
keep = 5
artifacts = "dist"

[ssh]
user = "deploy"
identity = "~/.ssh/id_ed25519"
known_hosts = "~/.ssh/known_hosts"
timeout = "5s"

[hosts.web1]
address = "10.0.0.11"
[hosts.web2]
address = "10.0.0.12"
port = 2222
root = "/opt/shop"
[hosts.dev]
transport = "local"
root = "./fleet/dev"

[groups]
web = ["web1", "web2"]
"#;
        let t = ShipToml::parse(text, Path::new("ship.toml")).unwrap();
        assert_eq!(t.app.keep, Some(5));
        assert_eq!(t.ssh.timeout, Some(Duration::from_secs(5)));
        assert_eq!(t.hosts.len(), 3);
        assert_eq!(t.hosts[&"web2".parse().unwrap()].port, Some(2222));
        assert_eq!(
            t.hosts[&"dev".parse().unwrap()].transport,
            TransportKind::Local
        );
        assert_eq!(t.groups[&"web".parse().unwrap()].len(), 2);
    }

    #[test]
    fn reads_the_store_and_its_overrides() {
        let text = r#"
[store]
url = "s3://releases/shop"
endpoint = "http://127.0.0.1:3900"
url_lifetime = "10m"
[environments.staging.store]
url = "https://cdn.example.com/shop"
[environments.staging.hosts.a]
root = "/srv/shop"
"#;
        let t = ShipToml::parse(text, Path::new("ship.toml")).unwrap();
        assert_eq!(t.store.url.as_deref(), Some("s3://releases/shop"));
        assert_eq!(t.store.url_lifetime, Some(Duration::from_secs(600)));
        let staging = t
            .store
            .overridden_by(&t.environments[&"staging".parse().unwrap()].store);
        assert_eq!(staging.url.as_deref(), Some("https://cdn.example.com/shop"));
        assert_eq!(staging.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
    }

    #[test]
    fn fleet_mistakes_are_named() {
        let cases = [
            (
                "[hosts.a]\nadress = \"x\"\n",
                "unknown key `hosts.a.adress`",
            ),
            (
                "[[service]]\nname = \"web\"\nrestart = { comand = \"x\" }\n",
                "did not match any variant of untagged enum Restart",
            ),
            (
                "[release]\nshared = [\"../x\"]\n",
                "must be a relative path",
            ),
            (
                "[hosts.a]\nroot = \"/r\"\n[groups]\nweb = [\"a\", \"b\"]\n",
                "[groups] web names b, which is not under [hosts]",
            ),
            ("[hosts.a]\naddress = \"x\"\n", "[hosts.a] has no root"),
            (
                "[hosts.a]\nroot = \"srv\"\n",
                "must be an absolute path on the host",
            ),
            ("[app]\nkeep = 0\n", "keep must be at least 1"),
            (
                "[store]\nurl = \"s3://b\"\nsecret_access_key = \"x\"\n",
                "store credentials never go in ship.toml",
            ),
            ("[store]\nurl_lifetime = \"soon\"\n", "invalid duration"),
            ("[ssh]\ntimeout = \"soon\"\n", "invalid duration \"soon\""),
            (
                "[hosts.\"a b\"]\nroot = \"/r\"\n",
                "invalid host name \"a b\"",
            ),
            (
                "[hosts.a]\nroot = \"/r\"\n[group.web]\nenv_file = \"x\"\n",
                "[group.web] names no group of [groups]",
            ),
            (
                "[hosts.a]\nroot = \"/r\"\nenv = { \"A-B\" = \"1\" }\n",
                "\"A-B\" is not an environment variable name",
            ),
            (
                "[hosts.a]\ntransport = \"local\"\nroot = \"r\"\naddress = \"x\"\n",
                "is local: address, port and user do not apply",
            ),
        ];
        assert_refused(&cases);
    }

    #[test]
    fn reads_the_app_behaviour() {
        let text = r#"
[release]
shared = ["log/", "tmp/pids/", "config/.env"]
requires.env = ["DATABASE_URL", "GOOGLE_PROJECT_API_KEY"]
requires.files = ["shared/config/.env"]

[hooks]
pre_activate = "bin/migrate"
post_activate = "bin/notify-cache"

[[service]]
name = "web"
restart = { command = "systemctl restart shop-web" }
health = { http = "http://127.0.0.1:8080/health", expect = 200, timeout = "30s" }

[[service]]
name = "worker"
restart = { signal = "HUP", pidfile = "shared/tmp/pids/worker.pid" }
health = { tcp = "127.0.0.1:9000" }
"#;
        let t = ShipToml::parse(text, Path::new("ship.toml")).unwrap();
        let b = t.behaviour();
        assert_eq!(b.shared.len(), 3);
        assert_eq!(b.requires.env, ["DATABASE_URL", "GOOGLE_PROJECT_API_KEY"]);
        assert_eq!(b.hooks.pre_activate.as_deref(), Some("bin/migrate"));
        assert_eq!(b.services.len(), 2);
        assert!(matches!(
            b.services[1].restart,
            Some(crate::behaviour::Restart::Signal { .. })
        ));
    }

    #[test]
    fn reads_environments_and_policy() {
        let text = r#"
[app]
name = "shop"
root = "/srv/shop"

[rollout]
canary = 1
canary_wait = "30s"
max_failures = "10%"

[notify]
webhooks = ["https://chat.example.com/hooks/abc"]
log = "deploys.log"

[environments.staging]
root = "/srv/shop-staging"
hosts.stage1 = { address = "10.0.1.1" }

[environments.production]
ssh.user = "deploy"
rollout = { batch = "25%", on_failure = "halt" }
[environments.production.hosts.web1]
[environments.production.hosts.web2]
[environments.production.groups]
web = ["web1", "web2"]
"#;
        let t = ShipToml::parse(text, Path::new("ship.toml")).unwrap();
        assert!(t.hosts.is_empty());
        assert_eq!(t.rollout.canary, Some(1));
        assert_eq!(t.rollout.canary_wait, Some(Duration::from_secs(30)));
        let production = &t.environments[&"production".parse().unwrap()];
        let policy = production.rollout.over(&t.rollout).policy();
        assert_eq!(policy.batch, Some(crate::rollout::Amount::Percent(25)));
        assert_eq!(policy.max_failures, crate::rollout::Amount::Percent(10));
        assert_eq!(policy.on_failure, crate::rollout::OnFailure::Halt);
        assert_eq!(production.ssh.user.as_deref(), Some("deploy"));
        assert_eq!(t.environments.len(), 2);
        assert_eq!(t.notify.log.as_deref(), Some(Path::new("deploys.log")));
    }

    #[test]
    fn environment_mistakes_are_named() {
        let cases = [
            (
                "[environments.prod.hosts.a]\naddress = \"x\"\n",
                "[environments.prod.hosts.a] has no root: set root there, under [environments.prod] or under [app]",
            ),
            (
                "[environments.prod]\nroot = \"/r\"\n",
                "[environments.prod] has no hosts",
            ),
            (
                "[environments.prod]\nroot = \"/r\"\nhosts.a = {}\ngroups.web = [\"b\"]\n",
                "[environments.prod.groups] web names b, which is not under [environments.prod.hosts]",
            ),
            (
                "[environments.prod]\nroot = \"/r\"\nhosts.a = {}\nrollout.batch = \"half\"\n",
                "neither a number of hosts",
            ),
            (
                "[rollout]\non_failure = \"panic\"\n",
                "unknown variant `panic`",
            ),
            (
                "[rollout]\nbatch = \"0%\"\n",
                "not a percentage from 1% to 100%",
            ),
            (
                "[rollout]\ncanary = 1\nwait = \"1m\"\n",
                "unknown key `rollout.wait`",
            ),
            (
                "[notify]\nwebhooks = [\"chat.example.com/x\"]\n",
                "[notify] webhooks: \"chat.example.com/x\" is not an http:// or https:// URL",
            ),
        ];
        assert_refused(&cases);
    }

    #[test]
    fn invalid_values_use_the_identifier_checks() {
        let err =
            ShipToml::parse("[app]\nversion = \"v1/../x\"\n", Path::new("s.toml")).unwrap_err();
        let cause = err.source().unwrap().to_string();
        assert!(cause.contains("invalid version \"v1/../x\""), "{cause}");
    }
}
