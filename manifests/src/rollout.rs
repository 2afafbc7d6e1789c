//! Rollout policy: how a deploy activates the hosts it staged — canary hosts first,
//! then waves, within a failure budget, and what a failure does. The types are read
//! from `ship.toml` (`[rollout]`, `[environments.<name>.rollout]`) and from the
//! command line, and merged field by field: the command line wins over an
//! environment, which wins over the file's defaults.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A number of hosts, or a percentage of the hosts a deploy activates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Amount {
    /// This many hosts.
    Hosts(usize),
    /// This percentage (1–100) of the hosts.
    Percent(u8),
}

impl Amount {
    /// The size of a wave of `total` hosts: a percentage rounds up (10% of 15 is 2),
    /// and a wave holds at least one host.
    pub fn wave_of(self, total: usize) -> usize {
        let n = match self {
            Amount::Hosts(n) => n,
            Amount::Percent(p) => (total * usize::from(p)).div_ceil(100),
        };
        n.max(1)
    }

    /// How many failures of `total` hosts are tolerated: a percentage rounds down
    /// (10% of 15 is 1), so a budget never grows past what it says.
    pub fn budget_of(self, total: usize) -> usize {
        match self {
            Amount::Hosts(n) => n,
            Amount::Percent(p) => total * usize::from(p) / 100,
        }
    }
}

impl FromStr for Amount {
    type Err = String;

    fn from_str(text: &str) -> Result<Amount, String> {
        let text = text.trim();
        if let Some(percent) = text.strip_suffix('%') {
            return match percent.trim().parse::<u8>() {
                Ok(p) if (1..=100).contains(&p) => Ok(Amount::Percent(p)),
                _ => Err(format!("{text:?} is not a percentage from 1% to 100%")),
            };
        }
        text.parse::<usize>().map(Amount::Hosts).map_err(|_| {
            format!("{text:?} is neither a number of hosts (3) nor a percentage (25%)")
        })
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Amount::Hosts(n) => write!(f, "{n}"),
            Amount::Percent(p) => write!(f, "{p}%"),
        }
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Number(u64),
            Text(String),
        }
        match Raw::deserialize(d)? {
            Raw::Number(n) => Ok(Amount::Hosts(n as usize)),
            Raw::Text(text) => text.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// What a deploy does when more hosts fail than its budget allows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnFailure {
    /// Start no new wave; the hosts already switched stay on the new release.
    Halt,
    /// Start no new wave, and return every host this deploy switched to the release
    /// it ran before.
    #[default]
    Revert,
}

impl FromStr for OnFailure {
    type Err = String;

    fn from_str(text: &str) -> Result<OnFailure, String> {
        match text {
            "halt" => Ok(OnFailure::Halt),
            "revert" => Ok(OnFailure::Revert),
            _ => Err(format!("{text:?} is not halt or revert")),
        }
    }
}

impl fmt::Display for OnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OnFailure::Halt => "halt",
            OnFailure::Revert => "revert",
        })
    }
}

/// A rollout policy as a file or the command line states it: every field optional,
/// so layers can be merged.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct RolloutTable {
    /// Hosts activated alone, first.
    pub canary: Option<usize>,
    /// How long the canary hosts' health is watched before the rest proceed.
    #[serde(default, deserialize_with = "crate::config::duration")]
    pub canary_wait: Option<Duration>,
    /// The size of each wave after the canary (default: all the rest at once).
    pub batch: Option<Amount>,
    /// How many failed hosts are tolerated (default 0).
    pub max_failures: Option<Amount>,
    /// What a failure beyond the budget does (default revert).
    pub on_failure: Option<OnFailure>,
}

impl RolloutTable {
    /// `self`, with what it leaves unset taken from `under`.
    pub fn over(&self, under: &RolloutTable) -> RolloutTable {
        RolloutTable {
            canary: self.canary.or(under.canary),
            canary_wait: self.canary_wait.or(under.canary_wait),
            batch: self.batch.or(under.batch),
            max_failures: self.max_failures.or(under.max_failures),
            on_failure: self.on_failure.or(under.on_failure),
        }
    }

    /// What serde cannot check; `table` names where the values came from.
    pub fn check(&self, table: &str) -> Result<(), String> {
        if self.batch == Some(Amount::Hosts(0)) {
            return Err(format!("{table} batch must be at least 1 host"));
        }
        Ok(())
    }

    /// The policy, with defaults for what is unset.
    pub fn policy(&self) -> Policy {
        Policy {
            canary: self.canary.unwrap_or(0),
            canary_wait: self.canary_wait.unwrap_or(Duration::ZERO),
            batch: self.batch,
            max_failures: self.max_failures.unwrap_or(Amount::Hosts(0)),
            on_failure: self.on_failure.unwrap_or_default(),
        }
    }
}

/// A complete rollout policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Hosts activated alone, first (0: none).
    pub canary: usize,
    /// How long the canary hosts' health is watched.
    pub canary_wait: Duration,
    /// The size of each later wave (`None`: all at once).
    pub batch: Option<Amount>,
    /// Failed hosts tolerated.
    pub max_failures: Amount,
    /// What a failure beyond the budget does.
    pub on_failure: OnFailure,
}

impl Default for Policy {
    fn default() -> Policy {
        RolloutTable::default().policy()
    }
}

impl Policy {
    /// The waves for `total` hosts, as index ranges in activation order: the canary
    /// wave (when there is one), then batches.
    pub fn waves(&self, total: usize) -> Vec<std::ops::Range<usize>> {
        let mut waves = Vec::new();
        let canary = self.canary.min(total);
        if canary > 0 {
            waves.push(0..canary);
        }
        let size = self.batch.map_or(total, |b| b.wave_of(total)).max(1);
        let mut start = canary;
        while start < total {
            let end = (start + size).min(total);
            waves.push(start..end);
            start = end;
        }
        waves
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.canary > 0 {
            write!(f, "canary {}", self.canary)?;
            if !self.canary_wait.is_zero() {
                write!(
                    f,
                    " watched {}",
                    humantime::format_duration(self.canary_wait)
                )?;
            }
            f.write_str(", ")?;
        }
        match self.batch {
            Some(batch) => write!(f, "waves of {batch}")?,
            None => f.write_str("the rest at once")?,
        }
        write!(
            f,
            ", up to {} failed host(s), then {}",
            self.max_failures, self.on_failure
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_parse_and_round_as_they_should() {
        assert_eq!("3".parse::<Amount>(), Ok(Amount::Hosts(3)));
        assert_eq!(" 25% ".parse::<Amount>(), Ok(Amount::Percent(25)));
        assert!("0%".parse::<Amount>().is_err());
        assert!("150%".parse::<Amount>().is_err());
        assert!("many".parse::<Amount>().unwrap_err().contains("neither"));
        assert_eq!(Amount::Percent(10).wave_of(15), 2);
        assert_eq!(Amount::Percent(10).wave_of(3), 1);
        assert_eq!(Amount::Hosts(0).wave_of(3), 1);
        let zero = RolloutTable {
            batch: Some(Amount::Hosts(0)),
            ..RolloutTable::default()
        };
        assert_eq!(
            zero.check("--batch").unwrap_err(),
            "--batch batch must be at least 1 host"
        );
        assert_eq!(Amount::Percent(10).budget_of(15), 1);
        assert_eq!(Amount::Percent(10).budget_of(9), 0);
        assert_eq!(Amount::Hosts(2).budget_of(1), 2);
    }

    #[test]
    fn waves_start_with_the_canary() {
        let policy = |canary, batch| Policy {
            canary,
            batch,
            ..Policy::default()
        };
        assert_eq!(policy(0, None).waves(10), vec![(0..10)]);
        assert_eq!(policy(1, None).waves(10), [0..1, 1..10]);
        assert_eq!(
            policy(1, Some(Amount::Hosts(4))).waves(10),
            [0..1, 1..5, 5..9, 9..10]
        );
        assert_eq!(
            policy(2, Some(Amount::Percent(50))).waves(10),
            [0..2, 2..7, 7..10]
        );
        assert_eq!(policy(5, None).waves(3), vec![(0..3)]);
        assert!(policy(1, None).waves(0).is_empty());
    }

    #[test]
    fn layers_merge_field_by_field() {
        let file = RolloutTable {
            canary: Some(1),
            batch: Some(Amount::Percent(25)),
            ..RolloutTable::default()
        };
        let flags = RolloutTable {
            batch: Some(Amount::Hosts(2)),
            on_failure: Some(OnFailure::Halt),
            ..RolloutTable::default()
        };
        let policy = flags.over(&file).policy();
        assert_eq!(policy.canary, 1);
        assert_eq!(policy.batch, Some(Amount::Hosts(2)));
        assert_eq!(policy.on_failure, OnFailure::Halt);
        assert_eq!(policy.max_failures, Amount::Hosts(0));
        assert_eq!(
            policy.to_string(),
            "canary 1, waves of 2, up to 0 failed host(s), then halt"
        );
    }
}
