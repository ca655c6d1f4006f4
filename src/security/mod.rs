//! Who is asking and what they may see. A request's bearer token (JWT or API key) becomes a
//! [`Principal`]: a role (which says whether personal data is shown) and a [`Scope`] (a node of
//! the org hierarchy). The scope is injected into every plan as filters the request cannot
//! widen, and it is part of every cache key.

pub mod audit;
pub mod auth;
pub mod limits;

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A node of the scope hierarchy, as the path from the top (`{region: 华东, branch: 上海分行}`),
/// or a single level (`{branch: 上海分行}`: branch names are unique). Empty: the whole bank.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Scope(pub BTreeMap<String, ScopeMember>);

/// A member value: a string or an integer (RM ids).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(untagged)]
pub enum ScopeMember {
    Int(i64),
    Text(String),
}

impl ScopeMember {
    pub fn to_json(&self) -> Value {
        match self {
            ScopeMember::Int(i) => Value::from(*i),
            ScopeMember::Text(s) => Value::from(s.as_str()),
        }
    }
}

impl Scope {
    pub fn all() -> Self {
        Scope::default()
    }

    pub fn is_all(&self) -> bool {
        self.0.is_empty()
    }

    /// A stable text form for cache keys and the audit log: `branch=兰州分行`, or `*`.
    pub fn key(&self) -> String {
        if self.is_all() {
            return "*".to_string();
        }
        self.0
            .iter()
            .map(|(level, m)| format!("{level}={}", m.to_json()))
            .collect::<Vec<_>>()
            .join(",")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Principal {
    pub name: String,
    pub role: String,
    pub scope: Scope,
    /// The role may see names, ID numbers and phones unmasked.
    pub personal_data: bool,
}

impl Principal {
    /// The operator at the console (`kpilens query`, `kpilens test`): no token, the whole bank,
    /// personal data still masked.
    pub fn local() -> Self {
        Principal {
            name: "local".to_string(),
            role: "local".to_string(),
            scope: Scope::all(),
            personal_data: false,
        }
    }
}
