//! `/mcp`: the semantic layer for AI agents, over the Model Context Protocol (streamable HTTP,
//! the `rmcp` crate). It sits behind the same gate as every data route: the bearer token's
//! principal reaches each tool through the HTTP request's extensions, so an agent gets exactly
//! the scopes, masking, limits, cached answers and audit lines of the JSON API. The tools only
//! translate; the service does the work.

mod format;

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::request::Parts;
use rmcp::ServerHandler;
use rmcp::model::{
    CallToolRequestParams, CallToolResponse, CallToolResult, ContentBlock, Implementation,
    JsonObject, ListToolsResult, PaginatedRequestParams, ServerCapabilities, ServerConfig, Tool,
    ToolAnnotations,
};
use rmcp::service::{RequestContext, RoleServer};
use rmcp::transport::streamable_http_server::session::never::NeverSessionManager;
use rmcp::transport::streamable_http_server::{StreamableHttpServerConfig, StreamableHttpService};
use serde::Deserialize;
use serde_json::{Value, json};

pub use format::{Lang, format_value};

use super::catalog::{CatalogView, MetricView};
use crate::security::Principal;
use crate::security::audit::{AuditDetails, AuditSlot};
use crate::semantic::{ColumnRole, QueryError, QueryRequest};
use crate::service::KpiService;

/// The MCP endpoint as a tower service, mounted at `/mcp` behind the gate.
pub fn service(
    kpi: Arc<KpiService>,
    max_body_bytes: usize,
) -> StreamableHttpService<Tools, NeverSessionManager> {
    let config = StreamableHttpServerConfig::default()
        // Stateless: each POST carries what it needs (the token above all); nothing to keep.
        .with_legacy_session_mode(false)
        .with_json_response(true)
        .with_sse_keep_alive(None)
        .with_max_request_body_bytes(max_body_bytes)
        // Host checks guard servers that trust whoever reaches them (DNS rebinding); here every
        // request carries a bearer token, which a rebinding page does not have, and a bank
        // reaches the server by its own host name.
        .disable_allowed_hosts();
    StreamableHttpService::new(
        move || Ok(Tools { kpi: kpi.clone() }),
        Arc::new(NeverSessionManager::default()),
        config,
    )
}

#[derive(Clone)]
pub struct Tools {
    kpi: Arc<KpiService>,
}

/// What the tools answer with: structured content, or an error the agent reads (its code,
/// message and the argument at fault).
type ToolAnswer = Result<(Value, String), QueryError>;

impl ServerHandler for Tools {
    fn get_info(&self) -> ServerConfig {
        let mut info = ServerConfig::new(ServerCapabilities::builder().enable_tools().build());
        info.server_info = Implementation::new("kpilens", env!("CARGO_PKG_VERSION"));
        info.instructions = Some(INSTRUCTIONS.to_string());
        info
    }

    async fn list_tools(
        &self,
        _request: Option<PaginatedRequestParams>,
        _context: RequestContext<RoleServer>,
    ) -> Result<ListToolsResult, rmcp::ErrorData> {
        Ok(ListToolsResult::with_all_items(tools()))
    }

    fn get_tool(&self, name: &str) -> Option<Tool> {
        tools().into_iter().find(|t| t.name == name)
    }

    async fn call_tool(
        &self,
        request: CallToolRequestParams,
        context: RequestContext<RoleServer>,
    ) -> Result<CallToolResponse, rmcp::ErrorData> {
        // Put there by the gate; a request that did not pass it never reaches a tool.
        let parts = context.extensions.get::<Parts>();
        let principal = parts
            .and_then(|p| p.extensions.get::<Principal>())
            .cloned()
            .ok_or_else(|| rmcp::ErrorData::internal_error("no principal on the request", None))?;
        let args = Value::Object(request.arguments.clone().unwrap_or_default());
        let answer = match request.name.as_ref() {
            "list_metrics" => self.list_metrics(&args),
            "describe_metric" => self.describe_metric(&args),
            "query_metrics" => self.query_metrics(&principal, &args).await,
            "explain_query" => self.explain_query(&principal, &args).await,
            "list_dashboards" => Ok(list_dashboards(&self.kpi)),
            "get_dashboard_snapshot" => self.dashboard_snapshot(&principal, &args).await,
            other => {
                return Err(rmcp::ErrorData::invalid_params(
                    format!("unknown tool '{}'", crate::text::clip(other)),
                    None,
                ));
            }
        };
        tracing::info!(tool = %request.name, principal = %principal.name, ok = answer.is_ok(), "mcp tool");
        if let Some(slot) = parts.and_then(|p| p.extensions.get::<AuditSlot>()) {
            slot.fill(audit_details(&request.name, &args, &answer));
        }
        let (mut result, structured) = match answer {
            Ok((structured, text)) => (
                CallToolResult::success(vec![ContentBlock::text(text)]),
                structured,
            ),
            // What an HTTP client is told, in the HTTP error's shape (an internal error's detail
            // goes to the log, not to the agent).
            Err(e) => {
                let view = e.client_view();
                let text = match view["field"].as_str() {
                    Some(field) => format!(
                        "{}: {field}: {}",
                        view["code"].as_str().unwrap_or_default(),
                        view["message"].as_str().unwrap_or_default()
                    ),
                    None => format!(
                        "{}: {}",
                        view["code"].as_str().unwrap_or_default(),
                        view["message"].as_str().unwrap_or_default()
                    ),
                };
                (
                    CallToolResult::error(vec![ContentBlock::text(text)]),
                    json!({ "error": view }),
                )
            }
        };
        result.structured_content = Some(structured);
        Ok(result.into())
    }
}

const INSTRUCTIONS: &str = "kpilens answers a bank's KPIs with governed definitions: call \
list_metrics first, then query_metrics with metric names and dimensions from it. Never \
re-derive a metric (do not average ratios or sum month-end balances across months): ask for it. \
Every answer is limited to what the caller's token may see.";

/// The tools, with their input schemas. `query_metrics` and `explain_query` take the HTTP API's
/// own request (its schema from the OpenAPI document, so the two cannot drift apart).
fn tools() -> Vec<Tool> {
    let read_only = || ToolAnnotations::new().read_only(true);
    let object = |properties: Value, required: &[&str]| -> JsonObject {
        serde_json::from_value(json!({
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
        }))
        .expect("a JSON object")
    };
    let lang = json!({ "type": "string", "enum": ["zh", "en"], "description": "the language of labels and formatted values (default zh)" });
    let query = query_schema();
    vec![
        Tool::new(
            "list_metrics",
            "The bank's metrics: name, labels (zh/en), kind, what the number means in one sentence, the dimensions it can be sliced by, the time grains it has, its format.",
            object(json!({ "lang": lang }), &[]),
        )
        .annotate(read_only()),
        Tool::new(
            "describe_metric",
            "One metric in full: its kind and what it means, its definition (expression of a derived metric), format, direction, thresholds, and each dimension it can be sliced by with its label.",
            object(json!({ "metric": { "type": "string" }, "lang": lang }), &["metric"]),
        )
        .annotate(read_only()),
        Tool::new(
            "query_metrics",
            "Computes metrics: { metrics, dimensions?, filters?, time?: { grain?, from?, to? }, compare?, drill?, order?, limit? } exactly as POST /api/v1/query. Returns the columns, the raw rows, the same rows formatted as the metric says (percent, 万/亿), totals, and how it was served.",
            query.clone(),
        )
        .annotate(read_only()),
        Tool::new(
            "explain_query",
            "The plan a query would run (logical, optimised, and as SQL, for reading only), without running it.",
            query,
        )
        .annotate(read_only()),
        Tool::new(
            "list_dashboards",
            "The cockpit's dashboards: id, title, grain, number of panels, filters.",
            object(json!({}), &[]),
        )
        .annotate(read_only()),
        Tool::new(
            "get_dashboard_snapshot",
            "A dashboard's KPI tiles now: each metric's latest value, the previous period's and the change, red/amber/green status, formatted and raw.",
            object(
                json!({
                    "dashboard": { "type": "string" },
                    "as_of": { "type": "string", "format": "date", "description": "the date the tiles are as of (default: the latest data)" },
                    "lang": lang,
                }),
                &["dashboard"],
            ),
        )
        .annotate(read_only()),
    ]
}

/// The OpenAPI document's `QueryRequest`, its `#/components/schemas/...` references moved under
/// `$defs` (where a JSON Schema keeps them), plus the tool's own `lang`.
fn query_schema() -> JsonObject {
    let doc: Value = serde_json::from_str(super::OPENAPI).expect("openapi.json is JSON");
    let schemas = &doc["components"]["schemas"];
    let text = schemas["QueryRequest"]
        .to_string()
        .replace("#/components/schemas/", "#/$defs/");
    let mut schema: Value = serde_json::from_str(&text).expect("JSON");
    let defs: serde_json::Map<String, Value> = schemas
        .as_object()
        .expect("schemas")
        .iter()
        .map(|(k, v)| {
            let moved = v.to_string().replace("#/components/schemas/", "#/$defs/");
            (k.clone(), serde_json::from_str(&moved).expect("JSON"))
        })
        .collect();
    schema["$defs"] = Value::Object(defs);
    schema["properties"]["lang"] = json!({ "type": "string", "enum": ["zh", "en"] });
    serde_json::from_value(schema).expect("a JSON object")
}

/// The tool's arguments as a request type, the argument at fault named in the error.
fn arguments<T: serde::de::DeserializeOwned>(args: &Value) -> Result<T, QueryError> {
    super::body::deserialize_at(args.clone())
}

#[derive(Deserialize, Default)]
struct LangOnly {
    #[serde(default)]
    lang: Lang,
}

/// The request with `lang` taken out (the query protocol does not know it).
fn split_lang(args: &Value) -> Result<(Value, Lang), QueryError> {
    let mut args = args.clone();
    let lang = match args.as_object_mut().and_then(|o| o.remove("lang")) {
        Some(l) => arguments::<LangOnly>(&json!({ "lang": l }))?.lang,
        None => Lang::Zh,
    };
    Ok((args, lang))
}

fn label(l: &crate::spec::Label, lang: Lang) -> String {
    match lang {
        Lang::Zh => l.zh.clone().or_else(|| l.en.clone()),
        Lang::En => l.en.clone().or_else(|| l.zh.clone()),
    }
    .unwrap_or_default()
}

/// What a metric's number means, by kind: the sentence an agent needs not to misuse it.
fn metric_entry(m: &MetricView, lang: Lang, grains: bool) -> Value {
    json!({
        "name": m.name,
        "label": m.label,
        "title": label(&m.label, lang),
        "kind": m.kind,
        "meaning": m.meaning,
        "description": m.description,
        "dimensions": m.dimensions,
        "grains": if grains && m.time { json!(["day", "week", "month", "quarter", "year"]) } else { json!([]) },
        "format": m.format,
        "direction": m.direction,
    })
}

impl Tools {
    fn list_metrics(&self, args: &Value) -> ToolAnswer {
        let (_, lang) = split_lang(args)?;
        let view = CatalogView::of(self.kpi.state().catalog());
        let metrics: Vec<Value> = view
            .metrics
            .iter()
            .map(|m| metric_entry(m, lang, true))
            .collect();
        let text = view
            .metrics
            .iter()
            .map(|m| {
                format!(
                    "{} ({}, {}): by {}",
                    m.name,
                    label(&m.label, lang),
                    m.kind,
                    m.dimensions.join(", ")
                )
            })
            .collect::<Vec<_>>()
            .join("\n");
        Ok((json!({ "metrics": metrics }), text))
    }

    fn describe_metric(&self, args: &Value) -> ToolAnswer {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Args {
            metric: String,
            #[serde(default)]
            lang: Lang,
        }
        let a: Args = arguments(args)?;
        let view = CatalogView::of(self.kpi.state().catalog());
        let m = view
            .metrics
            .iter()
            .find(|m| m.name == a.metric)
            .ok_or_else(|| {
                QueryError::new(
                    crate::semantic::ErrorKind::NotFound,
                    "unknown_metric",
                    format!(
                        "unknown metric '{}': list_metrics names them",
                        crate::text::clip(&a.metric)
                    ),
                )
                .at("metric")
            })?;
        let mut entry = metric_entry(m, a.lang, true);
        entry["expr"] = json!(m.expr);
        entry["thresholds"] = json!(m.thresholds);
        entry["dimensions"] = view
            .dimensions
            .iter()
            .filter(|d| m.dimensions.contains(&d.name))
            .map(|d| json!({ "name": d.name, "label": d.label, "title": label(&d.label, a.lang), "type": d.data_type }))
            .collect();
        let text = format!(
            "{} ({}): {}. Kind {}; sliced by {}.",
            m.name,
            label(&m.label, a.lang),
            m.meaning,
            m.kind,
            m.dimensions.join(", ")
        );
        Ok((entry, text))
    }

    async fn query_metrics(&self, principal: &Principal, args: &Value) -> ToolAnswer {
        let (args, lang) = split_lang(args)?;
        let req: QueryRequest = arguments(&args)?;
        let response = self.kpi.query(principal, &req).await?;
        let result = &response.result;
        let cell = |field: &crate::semantic::SchemaField, v: &Value| -> String {
            match (v, &field.format) {
                (Value::Null, _) => "—".to_string(),
                (Value::Number(n), Some(f)) if field.role != ColumnRole::Dimension => {
                    format_value(n.as_f64().unwrap_or_default(), f, lang)
                }
                (Value::String(s), _) => field
                    .value_labels
                    .get(s)
                    .map(|l| label(l, lang))
                    .unwrap_or_else(|| s.clone()),
                (other, _) => other.to_string(),
            }
        };
        let formatted: Vec<Vec<String>> = result
            .rows
            .iter()
            .map(|r| {
                result
                    .schema
                    .iter()
                    .zip(r)
                    .map(|(f, v)| cell(f, v))
                    .collect()
            })
            .collect();
        let totals: Option<Vec<String>> = result.totals.as_ref().map(|t| {
            result
                .schema
                .iter()
                .zip(t)
                .map(|(f, v)| cell(f, v))
                .collect()
        });
        let headers: Vec<String> = result
            .schema
            .iter()
            .map(|f| label(&f.label, lang))
            .collect();
        let mut text = headers.join(" | ");
        for row in &formatted {
            text.push('\n');
            text.push_str(&row.join(" | "));
        }
        if let Some(t) = &totals {
            text.push_str(&format!(
                "\n{} | {}",
                if lang == Lang::Zh { "合计" } else { "Total" },
                t[1..].join(" | ")
            ));
        }
        if result.truncated {
            text.push_str("\n(more rows matched than the limit)");
        }
        let mut structured =
            serde_json::to_value(&response).map_err(|e| QueryError::internal(e.to_string()))?;
        structured["formatted"] = json!(formatted);
        structured["formatted_totals"] = json!(totals);
        Ok((structured, text))
    }

    async fn explain_query(&self, principal: &Principal, args: &Value) -> ToolAnswer {
        let (args, _) = split_lang(args)?;
        let req: QueryRequest = arguments(&args)?;
        let plan = self.kpi.explain(principal, &req).await?;
        let structured =
            serde_json::to_value(&plan).map_err(|e| QueryError::internal(e.to_string()))?;
        let text = structured["sql"].as_str().unwrap_or_default().to_string();
        Ok((structured, text))
    }

    async fn dashboard_snapshot(&self, principal: &Principal, args: &Value) -> ToolAnswer {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Args {
            dashboard: String,
            as_of: Option<String>,
            #[serde(default)]
            lang: Lang,
        }
        let a: Args = arguments(args)?;
        let params: BTreeMap<String, String> = a
            .as_of
            .iter()
            .map(|d| ("as_of".to_string(), d.clone()))
            .collect();
        let plan = crate::dashboard::snapshot_plan(&self.kpi, principal, &a.dashboard, &params)
            .await
            .map_err(|e| {
                if e.field.is_none() {
                    e.at("dashboard")
                } else {
                    e
                }
            })?;
        let snapshot = crate::dashboard::snapshot(&self.kpi, &plan).await;
        let mut structured =
            serde_json::to_value(&snapshot).map_err(|e| QueryError::internal(e.to_string()))?;
        let mut lines = vec![format!("{} as of {}", snapshot.dashboard, snapshot.as_of)];
        if let Some(tiles) = structured["tiles"].as_array_mut() {
            for (tile, t) in tiles.iter_mut().zip(&snapshot.tiles) {
                let shown = |v: &Value| match (v.as_f64(), &t.format) {
                    (Some(x), Some(f)) => format_value(x, f, a.lang),
                    (Some(x), None) => x.to_string(),
                    _ => "—".to_string(),
                };
                tile["formatted"] =
                    json!({ "value": shown(&t.value), "previous": shown(&t.previous) });
                lines.push(format!(
                    "{}: {} (previous {})",
                    label(&t.label, a.lang),
                    shown(&t.value),
                    shown(&t.previous)
                ));
            }
        }
        Ok((structured, lines.join("\n")))
    }
}

fn list_dashboards(kpi: &KpiService) -> (Value, String) {
    let list = super::dashboards::summaries(kpi.state().catalog());
    let text = list
        .iter()
        .map(|d| d.id.clone())
        .collect::<Vec<_>>()
        .join(", ");
    (json!({ "dashboards": list }), text)
}

/// The audit line of a tool call: the tool, and for a query its metrics, dimensions, filters and
/// how many rows it answered.
fn audit_details(tool: &str, args: &Value, answer: &ToolAnswer) -> AuditDetails {
    let names = |key: &str| -> Vec<String> {
        args[key]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut metrics = vec![format!("mcp:{tool}")];
    metrics.extend(names("metrics"));
    if let Some(m) = args["metric"].as_str() {
        metrics.push(m.to_string());
    }
    let rows = match answer {
        Ok((structured, _)) => structured["rows"].as_array().map(|r| r.len() as u64),
        Err(_) => None,
    };
    AuditDetails {
        metrics,
        dimensions: names("dimensions"),
        filters: json!({ "filters": args.get("filters"), "drill": args.get("drill"), "dashboard": args.get("dashboard") }),
        rows,
        cached: match answer {
            Ok((structured, _)) => structured["meta"]["served_by"]
                .as_str()
                .map(|s| s == "cache"),
            Err(_) => None,
        },
    }
}
