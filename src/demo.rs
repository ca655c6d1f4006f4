//! The demo's people: five named users (head office, a region head, a branch head, an RM, an
//! analyst) with HS256 tokens signed by a secret made at start, so the cockpit can be viewed as
//! each of them. Only `kpilens demo` uses this; a real deployment configures `--auth`.

use std::collections::BTreeMap;

use ring::rand::SecureRandom;
use serde::Serialize;
use serde_json::Value;

use crate::security::auth::{AuthConfig, Authenticator, Claims, JwtSpec, RoleSpec, sign_hs256};
use crate::security::{Principal, Scope, ScopeMember};
use crate::service::KpiService;
use crate::spec::Label;

#[derive(Debug, Clone, Serialize)]
pub struct DemoUser {
    pub id: String,
    pub label: Label,
    pub role: String,
    pub scope: Scope,
    pub token: String,
}

/// How long the demo's tokens live.
const TOKEN_HOURS: i64 = 12;

pub async fn demo_auth(service: &KpiService) -> Result<(Authenticator, Vec<DemoUser>), String> {
    let mut secret = [0u8; 32];
    ring::rand::SystemRandom::new()
        .fill(&mut secret)
        .map_err(|_| "no randomness for the demo's signing secret".to_string())?;
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let roles: BTreeMap<String, RoleSpec> = [
        ("head_office", true),
        ("region_head", false),
        ("branch_head", false),
        ("rm", true),
        ("analyst", false),
    ]
    .into_iter()
    .map(|(r, pd)| (r.to_string(), RoleSpec { personal_data: pd }))
    .collect();
    let config = AuthConfig {
        hierarchy: "org".to_string(),
        roles,
        jwt: Some(JwtSpec {
            hs256_secret: Some(secret.clone()),
            ..JwtSpec::default()
        }),
        api_keys: Vec::new(),
    };
    let catalog = service.state();
    let auth = Authenticator::new(config, std::path::Path::new("."), |h| {
        catalog.catalog().hierarchies.get(h).cloned()
    })
    .map_err(|(k, r)| format!("demo auth: {k}: {r}"))?;

    // Real members of the demo bank: the first region, its first branch, that branch's first RM.
    let local = Principal::local();
    let local = &local;
    let first = |level: &'static str, path: BTreeMap<String, String>| async move {
        service
            .members(local, "org", level, &path)
            .await
            .map_err(|e| format!("demo users: {e}"))?
            .members
            .into_iter()
            .next()
            .ok_or_else(|| format!("demo users: the data has no {level}"))
    };
    let region = first("region", BTreeMap::new()).await?;
    let text = |v: &Value| {
        v.as_str()
            .map(str::to_string)
            .unwrap_or_else(|| v.to_string())
    };
    let branch = first(
        "branch",
        BTreeMap::from([("region".to_string(), text(&region))]),
    )
    .await?;
    let rm = first(
        "rm",
        BTreeMap::from([
            ("region".to_string(), text(&region)),
            ("branch".to_string(), text(&branch)),
        ]),
    )
    .await?;
    let member = |v: &Value| match v.as_i64() {
        Some(i) => ScopeMember::Int(i),
        None => ScopeMember::Text(text(v)),
    };
    let scope = |level: &str, v: &Value| Scope(BTreeMap::from([(level.to_string(), member(v))]));
    let people = [
        (
            "head_office",
            "head_office",
            Scope::all(),
            "总行行长",
            "Head office",
        ),
        (
            "region_head",
            "region_head",
            scope("region", &region),
            "区域负责人",
            "Region head",
        ),
        (
            "branch_head",
            "branch_head",
            scope("branch", &branch),
            "分行行长",
            "Branch head",
        ),
        (
            "rm",
            "rm",
            scope("rm", &rm),
            "客户经理",
            "Relationship manager",
        ),
        ("analyst", "analyst", Scope::all(), "数据分析师", "Analyst"),
    ];
    let exp = chrono::Utc::now().timestamp() + TOKEN_HOURS * 3600;
    let users = people
        .into_iter()
        .map(|(id, role, scope, zh, en)| {
            let claims = Claims {
                sub: id.to_string(),
                role: role.to_string(),
                scope: scope.clone(),
                exp,
                nbf: None,
                iss: None,
                aud: None,
            };
            let where_ = if scope.is_all() {
                String::new()
            } else {
                format!(" · {}", scope.key())
            };
            DemoUser {
                id: id.to_string(),
                label: Label {
                    zh: Some(format!("{zh}{where_}")),
                    en: Some(format!("{en}{where_}")),
                },
                role: role.to_string(),
                scope,
                token: sign_hs256(secret.as_bytes(), &claims),
            }
        })
        .collect();
    Ok((auth, users))
}
