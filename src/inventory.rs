//! The fleet as `ship` uses it: `ship.toml` resolved into hosts with their transport,
//! address and app root, and the selection of hosts by `--hosts` patterns.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use manifests::config::{EnvironmentTable, NotifyTable, ShipToml, StoreTable, TransportKind};
use manifests::rollout::RolloutTable;
use manifests::{AppName, HostName};

/// Default SSH connect and I/O timeout.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// Default number of releases kept per host.
const DEFAULT_KEEP: u32 = 5;

/// The app and its hosts.
#[derive(Debug, Clone)]
pub struct Fleet {
    /// The app's name.
    pub app: AppName,
    /// Releases kept per host.
    pub keep: u32,
    /// Where artifacts are found by version.
    pub artifacts: PathBuf,
    /// Every host, sorted by name.
    pub hosts: Vec<Host>,
    /// The app's behaviour as this file declares it (what `ship check` checks
    /// without a release; deploys use the artifact's own).
    pub behaviour: manifests::behaviour::Behaviour,
    /// The environment chosen with `--env`, if any.
    pub environment: Option<HostName>,
    /// The rollout policy the file sets (the environment's over `[rollout]`).
    pub rollout: RolloutTable,
    /// URLs that receive deploy events.
    pub webhooks: Vec<String>,
    /// The file deploy events are appended to.
    pub deploy_log: Option<PathBuf>,
    /// The artifact store (the environment's over `[store]`).
    pub store: StoreTable,
    /// The metric analysis (the environment's over `[analysis]`).
    pub analysis: manifests::analysis::AnalysisTable,
    groups: BTreeMap<HostName, Vec<HostName>>,
}

/// One host.
#[derive(Debug, Clone)]
pub struct Host {
    /// Its name in the inventory.
    pub name: HostName,
    /// The app root on it.
    pub root: String,
    /// How it is reached.
    pub reach: Reach,
    /// Its environment file, relative to the app root, when the fleet file sets one.
    pub env_file: Option<String>,
    /// Variables the fleet file sets for its hooks, restarts and health checks.
    pub env: BTreeMap<String, String>,
}

#[cfg(test)]
impl Host {
    /// A local host named `name` with its app root at `root`.
    pub fn local(name: &str, root: &str) -> Host {
        Host {
            name: name.parse().expect("a valid host name"),
            root: root.to_owned(),
            reach: Reach::Local,
            env_file: None,
            env: BTreeMap::new(),
        }
    }
}

/// How a host is reached.
#[derive(Debug, Clone)]
pub enum Reach {
    /// The agent runs on this machine.
    Local,
    /// Over SSH.
    Ssh(SshTarget),
}

/// Where and how to connect over SSH.
#[derive(Debug, Clone)]
pub struct SshTarget {
    /// Address (or a name for `~/.ssh/config` to resolve).
    pub address: String,
    /// Port, when set in the inventory.
    pub port: Option<u16>,
    /// Login user, when set in the inventory.
    pub user: Option<String>,
    /// Private key file, when set in the inventory.
    pub identity: Option<PathBuf>,
    /// known_hosts file.
    pub known_hosts: PathBuf,
    /// ssh_config file to read instead of OpenSSH's default ones.
    pub ssh_config: Option<PathBuf>,
    /// Connect and I/O timeout.
    pub timeout: Duration,
}

/// `path` of the fleet file in the directory `base`: `~` is the home directory, and a
/// relative path is relative to `base`.
fn expand(path: &Path, base: &Path) -> PathBuf {
    let home = std::env::var_os("HOME").map(PathBuf::from);
    match (path.strip_prefix("~"), home) {
        (Ok(rest), Some(home)) => home.join(rest),
        _ if path.is_relative() => base.join(path),
        _ => path.to_owned(),
    }
}

/// Where the fleet file `toml`, read from `config`, keeps its artifacts (`[app]
/// artifacts`, default `dist`).
pub fn artifacts_dir(toml: &ShipToml, config: &Path) -> PathBuf {
    let base = config.parent().unwrap_or(Path::new("."));
    expand(
        toml.app.artifacts.as_deref().unwrap_or(Path::new("dist")),
        base,
    )
}

impl Fleet {
    /// Resolves `toml`, read from `config` (relative paths are relative to its
    /// directory): its top-level hosts, or those of environment `env`. Fails when
    /// the file names no app, no host, or no such environment.
    pub fn resolve(toml: &ShipToml, config: &Path, env: Option<&str>) -> Result<Fleet, String> {
        let full = toml;
        let base = config.parent().unwrap_or(Path::new("."));
        let app = toml
            .app
            .name
            .clone()
            .ok_or_else(|| format!("{} has no [app] name", config.display()))?;
        let environments = || {
            let names: Vec<&str> = toml.environments.keys().map(HostName::as_str).collect();
            if names.is_empty() {
                "it defines none".to_owned()
            } else {
                format!("it defines {}", names.join(", "))
            }
        };
        let chosen = match env {
            None => None,
            Some(name) => Some(
                toml.environments
                    .iter()
                    .find(|(n, _)| n.as_str() == name)
                    .ok_or_else(|| {
                        format!(
                            "{} has no environment {name:?}: {}",
                            config.display(),
                            environments()
                        )
                    })?,
            ),
        };
        let top = EnvironmentTable {
            root: toml.app.root.clone(),
            ssh: toml.ssh.clone(),
            hosts: toml.hosts.clone(),
            groups: toml.groups.clone(),
            group: toml.group.clone(),
            rollout: toml.rollout.clone(),
            notify: toml.notify.clone(),
            store: toml.store.clone(),
            analysis: toml.analysis.clone(),
        };
        let (environment, view) = match chosen {
            None => (None, top),
            Some((name, table)) => (
                Some(name.clone()),
                EnvironmentTable {
                    root: table.root.clone().or(top.root),
                    ssh: table.ssh.over(&top.ssh),
                    hosts: table.hosts.clone(),
                    groups: table.groups.clone(),
                    group: table.group.clone(),
                    rollout: table.rollout.over(&top.rollout),
                    notify: NotifyTable {
                        webhooks: top
                            .notify
                            .webhooks
                            .iter()
                            .chain(&table.notify.webhooks)
                            .cloned()
                            .collect(),
                        log: table.notify.log.clone().or(top.notify.log),
                    },
                    store: top.store.overridden_by(&table.store),
                    analysis: top.analysis.overridden_by(&table.analysis),
                },
            ),
        };
        if view.hosts.is_empty() {
            return Err(if toml.environments.is_empty() {
                format!("{} has no [hosts.<name>] table", config.display())
            } else {
                format!(
                    "{} has no top-level hosts: choose an environment with --env ({})",
                    config.display(),
                    environments()
                )
            });
        }
        let toml = &view;
        let expand = |p: &Path| expand(p, base);
        let known_hosts = toml
            .ssh
            .known_hosts
            .as_deref()
            .map_or_else(|| expand(Path::new("~/.ssh/known_hosts")), &expand);
        let hosts = toml
            .hosts
            .iter()
            .map(|(name, table)| {
                let root = table
                    .root
                    .clone()
                    .or_else(|| toml.root.clone())
                    .expect("checked when the config was read");
                let (root, reach) = match table.transport {
                    TransportKind::Local => (
                        expand(Path::new(&root)).to_string_lossy().into_owned(),
                        Reach::Local,
                    ),
                    TransportKind::Ssh => (
                        root,
                        Reach::Ssh(SshTarget {
                            address: table.address.clone().unwrap_or_else(|| name.to_string()),
                            port: table.port.or(toml.ssh.port),
                            user: table.user.clone().or_else(|| toml.ssh.user.clone()),
                            identity: table
                                .identity
                                .as_deref()
                                .or(toml.ssh.identity.as_deref())
                                .map(expand),
                            known_hosts: known_hosts.clone(),
                            ssh_config: toml.ssh.config.as_deref().map(&expand),
                            timeout: toml.ssh.timeout.unwrap_or(DEFAULT_TIMEOUT),
                        }),
                    ),
                };
                // The settings of the host's groups (in name order), then its own.
                let groups: Vec<_> = toml
                    .groups
                    .iter()
                    .filter(|(_, members)| members.contains(name))
                    .filter_map(|(group, _)| toml.group.get(group))
                    .collect();
                let mut env = BTreeMap::new();
                for group in &groups {
                    env.extend(group.env.clone());
                }
                env.extend(table.env.clone());
                let env_file = table
                    .env_file
                    .clone()
                    .or_else(|| groups.iter().rev().find_map(|g| g.env_file.clone()));
                Host {
                    name: name.clone(),
                    root,
                    reach,
                    env_file,
                    env,
                }
            })
            .collect();
        Ok(Fleet {
            behaviour: full.behaviour(),
            app,
            environment,
            keep: full.app.keep.unwrap_or(DEFAULT_KEEP),
            artifacts: artifacts_dir(full, config),
            hosts,
            rollout: toml.rollout.clone(),
            webhooks: toml.notify.webhooks.clone(),
            deploy_log: toml.notify.log.as_deref().map(&expand),
            store: view.store.clone(),
            analysis: view.analysis.clone(),
            groups: toml.groups.clone(),
        })
    }

    /// The hosts `patterns` selects, in inventory order: comma-separated host names,
    /// globs (`web*`, `db?`) and groups (`@web`). Each pattern must match something.
    pub fn select(&self, patterns: &str) -> Result<Vec<&Host>, String> {
        let mut chosen = vec![false; self.hosts.len()];
        for pattern in patterns.split(',').map(str::trim) {
            if pattern.is_empty() {
                return Err(format!("--hosts {patterns:?} has an empty pattern"));
            }
            let mut matched = false;
            if let Some(group) = pattern.strip_prefix('@') {
                let members = self
                    .groups
                    .iter()
                    .find(|(name, _)| name.as_str() == group)
                    .map(|(_, members)| members)
                    .ok_or_else(|| {
                        let groups: Vec<&str> = self.groups.keys().map(HostName::as_str).collect();
                        format!(
                            "--hosts: there is no group {group:?} (groups: {})",
                            if groups.is_empty() {
                                "none".to_owned()
                            } else {
                                groups.join(", ")
                            }
                        )
                    })?;
                for (i, host) in self.hosts.iter().enumerate() {
                    if members.contains(&host.name) {
                        chosen[i] = true;
                        matched = true;
                    }
                }
            } else {
                for (i, host) in self.hosts.iter().enumerate() {
                    if glob_match(pattern, host.name.as_str()) {
                        chosen[i] = true;
                        matched = true;
                    }
                }
            }
            if !matched {
                let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
                return Err(format!(
                    "--hosts: {pattern:?} matches no host (hosts: {})",
                    names.join(", ")
                ));
            }
        }
        Ok(self
            .hosts
            .iter()
            .zip(chosen)
            .filter_map(|(host, chosen)| chosen.then_some(host))
            .collect())
    }
}

/// Whether `name` matches `pattern`, where `*` matches any run of characters and `?`
/// any one character.
fn glob_match(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = (pattern.chars().collect(), name.chars().collect());
    // Classic two-pointer matching with backtracking to the last `*`.
    let (mut pi, mut ni) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ni));
            pi += 1;
        } else if let Some((sp, sn)) = star {
            pi = sp + 1;
            ni = sn + 1;
            star = Some((sp, sn + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet() -> Fleet {
        let text = r#"
[app]
name = "shop"
root = "/srv/shop"
[hosts.web1]
[hosts.web2]
port = 2222
root = "/opt/shop"
env = { SHOP_PORT = "8081" }
[hosts.web10]
[hosts.db1]
[hosts.dev]
transport = "local"
root = "fleet/dev"
[groups]
web = ["web1", "web2"]
[group.web]
env = { SHOP_PORT = "8080", REGION = "eu" }
env_file = "shared/web.env"
"#;
        let path = Path::new("/etc/ship/ship.toml");
        Fleet::resolve(&ShipToml::parse(text, path).unwrap(), path, None).unwrap()
    }

    fn names(hosts: Vec<&Host>) -> Vec<&str> {
        hosts.into_iter().map(|h| h.name.as_str()).collect()
    }

    #[test]
    fn selects_by_name_glob_and_group() {
        let f = fleet();
        assert_eq!(names(f.select("web*").unwrap()), ["web1", "web10", "web2"]);
        assert_eq!(names(f.select("web?").unwrap()), ["web1", "web2"]);
        assert_eq!(names(f.select("@web").unwrap()), ["web1", "web2"]);
        assert_eq!(
            names(f.select("db1, @web,web1").unwrap()),
            ["db1", "web1", "web2"]
        );
        assert_eq!(names(f.select("*").unwrap()).len(), 5);
    }

    #[test]
    fn patterns_that_match_nothing_are_errors() {
        let f = fleet();
        assert_eq!(
            f.select("cache*").unwrap_err(),
            "--hosts: \"cache*\" matches no host (hosts: db1, dev, web1, web10, web2)"
        );
        assert_eq!(
            f.select("@db").unwrap_err(),
            "--hosts: there is no group \"db\" (groups: web)"
        );
        assert!(f.select("web1,").is_err());
    }

    #[test]
    fn host_settings_win_over_their_groups() {
        let f = fleet();
        let host = |name: &str| f.hosts.iter().find(|h| h.name.as_str() == name).unwrap();
        assert_eq!(host("web1").env["SHOP_PORT"], "8080");
        assert_eq!(host("web2").env["SHOP_PORT"], "8081");
        assert_eq!(host("web2").env["REGION"], "eu");
        assert_eq!(host("web2").env_file.as_deref(), Some("shared/web.env"));
        assert!(host("db1").env.is_empty() && host("db1").env_file.is_none());
    }

    #[test]
    fn hosts_inherit_and_override() {
        let f = fleet();
        let web2 = f.hosts.iter().find(|h| h.name.as_str() == "web2").unwrap();
        assert_eq!(web2.root, "/opt/shop");
        let Reach::Ssh(target) = &web2.reach else {
            panic!("ssh")
        };
        assert_eq!((target.address.as_str(), target.port), ("web2", Some(2222)));
        let dev = f.hosts.iter().find(|h| h.name.as_str() == "dev").unwrap();
        assert_eq!(dev.root, "/etc/ship/fleet/dev");
        assert!(matches!(dev.reach, Reach::Local));
        assert_eq!(f.keep, 5);
        assert_eq!(f.artifacts, Path::new("/etc/ship/dist"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b", "ac"));
        assert!(glob_match("?b", "ab"));
        assert!(!glob_match("?", ""));
    }
}
