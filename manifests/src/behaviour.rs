//! How an app lives on a host, as its `ship.toml` says (`[release]`, `[hooks]`,
//! `[[service]]`) and as every release carries it in its manifest: shared paths,
//! what must be present, hooks, and each service's restart method and health check.
//! Rolling back to an older release uses that release's own behaviour.

use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An app's behaviour on a host.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Behaviour {
    /// Paths that live in `<root>/shared/` and are linked into each release; a
    /// trailing `/` makes a directory, otherwise a file.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub shared: Vec<String>,
    /// What must be present before a release is switched to.
    #[serde(default, skip_serializing_if = "Requires::is_empty")]
    pub requires: Requires,
    /// The environment file, relative to the app root (default `shared/.env`): its
    /// variables count for `requires.env` and are set for hooks, restarts and
    /// health commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env_file: Option<String>,
    /// Programs run around the switch.
    #[serde(default, skip_serializing_if = "Hooks::is_empty")]
    pub hooks: Hooks,
    /// The app's services.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub services: Vec<Service>,
}

impl Behaviour {
    /// Whether the app declared nothing.
    pub fn is_empty(&self) -> bool {
        *self == Behaviour::default()
    }

    /// Checks names and paths; the reason names the offending value.
    pub fn check(&self) -> Result<(), String> {
        for path in &self.shared {
            check_relative("[release] shared", path.trim_end_matches('/'))?;
        }
        for var in &self.requires.env {
            if !is_env_name(var) {
                return Err(format!(
                    "requires.env: {var:?} is not an environment variable name"
                ));
            }
        }
        for file in &self.requires.files {
            check_relative("requires.files", file)?;
        }
        if let Some(file) = &self.env_file {
            check_relative("[release] env_file", file)?;
        }
        for hook in [&self.hooks.pre_activate, &self.hooks.post_activate]
            .into_iter()
            .flatten()
        {
            check_relative("[hooks]", hook)?;
        }
        let mut names = std::collections::HashSet::new();
        for service in &self.services {
            if service.name.is_empty() || !names.insert(service.name.as_str()) {
                return Err(format!(
                    "[[service]] names must be present and unique ({:?})",
                    service.name
                ));
            }
            if let Some(Restart::Signal { signal, pidfile }) = &service.restart {
                signal_number(signal).ok_or_else(|| {
                    format!("service {}: unknown signal {signal:?}", service.name)
                })?;
                check_relative(&format!("service {} pidfile", service.name), pidfile)?;
            }
        }
        Ok(())
    }
}

/// Whether `name` can be an environment variable's name (`[A-Za-z_][A-Za-z0-9_]*`).
pub fn is_env_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Checks a path relative to the release or app root: no `..`, not absolute.
pub fn check_relative(what: &str, path: &str) -> Result<(), String> {
    if path.is_empty()
        || path.starts_with('/')
        || path
            .split('/')
            .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err(format!(
            "{what}: {path:?} must be a relative path without `.`, `..` or empty parts"
        ));
    }
    Ok(())
}

/// The signal number for a name such as `HUP` or `SIGUSR2`.
pub fn signal_number(name: &str) -> Option<i32> {
    let name = name.strip_prefix("SIG").unwrap_or(name);
    Some(match name {
        "HUP" => 1,
        "INT" => 2,
        "QUIT" => 3,
        "KILL" => 9,
        "USR1" => 10,
        "USR2" => 12,
        "TERM" => 15,
        "CONT" => 18,
        "WINCH" => 28,
        _ => return None,
    })
}

/// `[release] requires`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Requires {
    /// Environment variables the services need: set for the agent, or in
    /// `shared/.env`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Files that must exist, relative to the app root (`shared/config/.env`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

impl Requires {
    fn is_empty(&self) -> bool {
        self.env.is_empty() && self.files.is_empty()
    }
}

/// `[hooks]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hooks {
    /// Run in the new release directory before the switch; failing stops the host.
    pub pre_activate: Option<String>,
    /// Run after the switch and the restarts.
    pub post_activate: Option<String>,
    /// How long a hook may run (default 5 minutes).
    #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

impl Hooks {
    fn is_empty(&self) -> bool {
        *self == Hooks::default()
    }
}

/// A `[[service]]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// Its name.
    pub name: String,
    /// How to restart it after a switch.
    pub restart: Option<Restart>,
    /// How to tell it is healthy.
    pub health: Option<Health>,
}

/// How a service is restarted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Restart {
    /// A shell command (`systemctl restart shop-web`, `supervisorctl restart web`).
    Command {
        /// The command line, run by `sh -c` in the new release.
        command: String,
        /// How long it may run (default 60s).
        #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
        timeout: Option<Duration>,
    },
    /// A signal to the pid in a pidfile (servers that re-exec on HUP or USR2).
    Signal {
        /// `HUP`, `USR2`, …
        signal: String,
        /// Relative to the app root.
        pidfile: String,
    },
}

/// How a service's health is checked, retried until its timeout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Health {
    /// An HTTP GET that must answer `expect` (default 200), and contain `body` if set.
    Http {
        /// `http://127.0.0.1:8080/health`.
        http: String,
        /// Expected status.
        expect: Option<u16>,
        /// A string the body must contain.
        body: Option<String>,
        /// How long to keep trying (default 30s).
        #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
        timeout: Option<Duration>,
    },
    /// A TCP connect.
    Tcp {
        /// `127.0.0.1:8080`.
        tcp: String,
        /// How long to keep trying (default 30s).
        #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
        timeout: Option<Duration>,
    },
    /// A command that must exit 0, run in the release directory.
    Command {
        /// The command line, run by `sh -c`.
        command: String,
        /// How long to keep trying (default 30s).
        #[serde(default, with = "duration", skip_serializing_if = "Option::is_none")]
        timeout: Option<Duration>,
    },
}

/// Durations as humantime strings (`30s`, `2m`).
mod duration {
    use super::*;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.collect_str(&humantime::format_duration(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_duration(&text)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("invalid duration {text:?}: {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_through_json_and_checks_names() {
        let b = Behaviour {
            shared: vec!["log/".into(), "config/.env".into()],
            requires: Requires {
                env: vec!["DATABASE_URL".into()],
                files: vec!["shared/config/.env".into()],
            },
            env_file: Some("shared/config/.env".into()),
            hooks: Hooks {
                pre_activate: Some("bin/migrate".into()),
                post_activate: None,
                timeout: Some(Duration::from_secs(60)),
            },
            services: vec![Service {
                name: "web".into(),
                restart: Some(Restart::Signal {
                    signal: "HUP".into(),
                    pidfile: "shared/tmp/pids/web.pid".into(),
                }),
                health: Some(Health::Http {
                    http: "http://127.0.0.1:8080/health".into(),
                    expect: Some(200),
                    body: None,
                    timeout: Some(Duration::from_secs(30)),
                }),
            }],
        };
        b.check().unwrap();
        let json = serde_json::to_string(&b).unwrap();
        assert!(json.contains("\"timeout\":\"1m\""), "{json}");
        assert_eq!(serde_json::from_str::<Behaviour>(&json).unwrap(), b);
        let mut bad = b.clone();
        bad.shared.push("../etc/".into());
        assert!(bad.check().unwrap_err().contains("\"../etc\""));
        let mut bad = b.clone();
        bad.requires.env.push("NOT-A-NAME".into());
        assert!(bad.check().is_err());
        let mut bad = b;
        bad.services.push(bad.services[0].clone());
        assert!(bad.check().unwrap_err().contains("unique"));
    }
}
