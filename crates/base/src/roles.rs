//! The roles a process can take, and the set of them it runs: parsed from a list or from one
//! comma-separated string, so flags, environment and TOML all spell it naturally.

use serde::{Deserialize, Serialize};

/// One job a process can do; a deployment runs any number of processes of each.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The JSON API, signed uploads, the VOD origin and the web UI; stateless.
    Api,
    /// VOD processing jobs from the queue, and the reconciler.
    Worker,
    /// RTMP/SRT termination and stream-key checks.
    Ingest,
    /// Real-time encoders, the live packager and the live origin.
    Live,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Api, Role::Worker, Role::Ingest, Role::Live];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Worker => "worker",
            Role::Ingest => "ingest",
            Role::Live => "live",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s.trim())
            .ok_or_else(|| {
                format!(
                    "unknown role {:?}: the roles are api, worker, ingest and live",
                    s.trim()
                )
            })
    }
}

/// A set of roles, written as a list or as one comma-separated string (`"api,worker"`, which is
/// what `OXCAST_ROLES` and `--roles` give).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(into = "Vec<Role>")]
pub struct Roles(std::collections::BTreeSet<Role>);

impl Roles {
    pub fn all() -> Self {
        Self(Role::ALL.into_iter().collect())
    }

    pub fn has(&self, r: Role) -> bool {
        self.0.contains(&r)
    }

    pub fn is_all(&self) -> bool {
        self.0.len() == Role::ALL.len()
    }

    pub fn iter(&self) -> impl Iterator<Item = Role> + '_ {
        self.0.iter().copied()
    }
}

impl From<Roles> for Vec<Role> {
    fn from(r: Roles) -> Self {
        r.0.into_iter().collect()
    }
}

impl std::fmt::Display for Roles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.iter().map(Role::as_str).collect();
        f.write_str(&names.join(","))
    }
}

impl std::str::FromStr for Roles {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let set = s
            .split(',')
            .filter(|p| !p.trim().is_empty())
            .map(str::parse)
            .collect::<Result<std::collections::BTreeSet<Role>, _>>()?;
        if set.is_empty() {
            return Err("no roles given: the roles are api, worker, ingest and live".into());
        }
        Ok(Self(set))
    }
}

impl<'de> Deserialize<'de> for Roles {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            Text(String),
            List(Vec<String>),
        }
        let text = match Form::deserialize(d)? {
            Form::Text(s) => s,
            Form::List(v) => v.join(","),
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}
