//! `kpilens demo`: the demo bank generated where it lives by default, then served with named
//! users whose tokens are printed, and a route the cockpit lists them from.

use std::net::SocketAddr;
use std::path::Path;

use kpilens::api::guard::AuthMode;
use kpilens::config::Settings;
use kpilens::datagen::{self, GenerateOptions};
use kpilens::demo;
use kpilens::security::Principal;
use kpilens::server;

use super::serve::{open_answering, print_paths};

const DEMO_DATA: &str = "data/demo";

pub async fn run(addr: SocketAddr, scale: f64, settings: Settings) -> Result<(), String> {
    // The demo bank is generated only where it lives by default (`--data` names another
    // project's data, which is served as it is). `deposit_day` is the generator's newest
    // table: older demo data is generated again.
    let demo_bank = settings.data_dir == Path::new(DEMO_DATA);
    let mut settings = settings;
    if settings.check_state_dir().is_err() {
        // A read-only data set (the shared Berka copy): the demo's state goes to a
        // folder of its own under the system's temporary folder.
        let data =
            std::fs::canonicalize(&settings.data_dir).unwrap_or_else(|_| settings.data_dir.clone());
        let name = kpilens::text::hex_prefix(
            &<sha2::Sha256 as sha2::Digest>::digest(data.to_string_lossy().as_bytes()),
            12,
        );
        settings.state_dir = Some(std::env::temp_dir().join(format!("kpilens-state-{name}")));
    }
    if demo_bank && !settings.data_dir.join("deposit_day").exists() {
        println!(
            "generating the demo bank (scale {scale}) into {} ...",
            settings.data_dir.display()
        );
        let report = datagen::generate(&GenerateOptions {
            out: settings.data_dir.clone(),
            scale,
            seed: 42,
            daily_days: datagen::DAILY_DAYS,
        })
        .map_err(|e| format!("generate: {e}"))?;
        println!("{report}");
    }
    serve_demo(addr, settings).await
}

/// The demo: named users with printed tokens, and a route the cockpit lists them from.
async fn serve_demo(addr: SocketAddr, mut settings: Settings) -> Result<(), String> {
    let (listener, service) = open_answering(addr, &settings).await?;
    if settings.alerts_clock_start.is_none()
        && service.state().catalog().models.contains_key("tickets")
    {
        // The demo bank's history ends before today: the alert clock starts at 18:00 on its
        // last day, so the record rules (SLAs, maturities, first contacts) see a live bank.
        let catalog = service.state();
        let last = service
            .latest_date(
                &catalog,
                "tickets",
                &kpilens::service::RequestContext::named("kpilens"),
            )
            .await
            .map_err(|e| e.to_string())?;
        if let Some(day) = last {
            let zone = settings.time_zone;
            settings.alerts_clock_start = day
                .and_hms_opt(18, 0, 0)
                .and_then(|t| t.and_local_timezone(zone).earliest())
                .map(|t| t.fixed_offset());
        }
        if let Some(start) = settings.alerts_clock_start {
            println!("alert clock starts at {start} (where the demo data ends)");
        }
    }
    // Demo users need the demo bank's org chart (region > branch > rm); another project is
    // served as `serve --no-auth` serves it.
    let (auth, users) = match demo::demo_auth(&service).await {
        Ok((auth, users)) => (AuthMode::Tokens(Box::new(auth)), users),
        Err(why) => {
            println!("no demo users ({why}): serving without sign-in, as --no-auth does");
            (AuthMode::Disabled, Vec::new())
        }
    };
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    print_paths(&settings);
    if !users.is_empty() {
        println!("demo users (tokens valid 12 h; the cockpit lets you pick one):");
    }
    for u in &users {
        println!("  {:<12} {:<28} {}", u.id, u.scope.key(), u.token);
    }
    println!(
        "kpilens serving {} metrics on http://{local}",
        service.state().catalog().metrics.len()
    );
    let listed = serde_json::to_value(&users).map_err(|e| e.to_string())?;
    let extra = if users.is_empty() {
        axum::Router::new()
    } else {
        axum::Router::new().route(
            "/api/v1/demo/users",
            axum::routing::get(move || async move { axum::Json(listed) }),
        )
    };
    let warm_for = users
        .iter()
        .filter(|u| !u.scope.is_all())
        .map(|u| Principal {
            name: u.id.clone(),
            role: u.role.clone(),
            scope: u.scope.clone(),
            personal_data: false,
        })
        .collect();
    server::serve_with(&settings, service, listener, auth, extra, warm_for)
        .await
        .map_err(|e| e.to_string())
}
