//! Exports for Excel: a query, a drill-through list or a dashboard (a sheet per panel) as an
//! `.xlsx` workbook (numbers carry the metric's format: percent as percent, currency with its
//! unit, dates as dates) or a UTF-8 CSV (one table, raw values, a byte order mark so Excel reads
//! the Chinese headers). Whatever is exported runs through the service exactly as the same
//! request over JSON does: the principal's scope, masking and limits apply.

use std::collections::{BTreeMap, BTreeSet};

use rust_xlsxwriter::{ExcelDateTime, Format, Workbook, Worksheet};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::security::Principal;
use crate::semantic::listing::{DrillThroughRequest, MAX_PAGE_SIZE};
use crate::semantic::{ErrorKind, QueryError, QueryRequest, QueryResult};
use crate::service::KpiService;
use crate::spec::{FormatSpec, FormatStyle, Label};

#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ExportFormat {
    Xlsx,
    Csv,
}

#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Language {
    #[default]
    Zh,
    En,
}

/// `POST /api/v1/export`: exactly one of `query`, `drill_through` or `dashboard` (with
/// `panel` for one panel, and the dashboard's reader `params`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRequest {
    pub format: ExportFormat,
    #[serde(default)]
    pub lang: Language,
    pub query: Option<QueryRequest>,
    pub drill_through: Option<DrillThroughRequest>,
    pub dashboard: Option<String>,
    pub panel: Option<String>,
    #[serde(default)]
    pub params: BTreeMap<String, String>,
}

/// A finished file.
pub struct ExportFile {
    pub content_type: &'static str,
    /// Without extension; ASCII letters, digits, `-` and `_` only (a header value).
    pub name: String,
    pub extension: &'static str,
    pub bytes: Vec<u8>,
    /// Rows written over all sheets, for the audit line.
    pub rows: usize,
    /// The metrics (or `model:x`) it holds, for the audit line.
    pub subjects: Vec<String>,
}

/// One table: headers, how each column is shown, rows and totals.
struct Sheet {
    title: String,
    columns: Vec<Column>,
    rows: Vec<Vec<Value>>,
    totals: Option<Vec<Value>>,
}

struct Column {
    header: String,
    format: Option<FormatSpec>,
    date: bool,
}

fn pick(label: &Label, lang: Language, fallback: &str) -> String {
    let chosen = match lang {
        Language::Zh => label.zh.as_ref().or(label.en.as_ref()),
        Language::En => label.en.as_ref().or(label.zh.as_ref()),
    };
    chosen.cloned().unwrap_or_else(|| fallback.to_string())
}

/// Rows as a reader sees them: coded values (码值) replaced by their labels in `lang`, where
/// the column declares them.
fn label_values(
    rows: &mut [Vec<Value>],
    value_labels: &[&BTreeMap<String, Label>],
    lang: Language,
) {
    for row in rows {
        for (v, labels) in row.iter_mut().zip(value_labels) {
            if let Value::String(s) = v
                && let Some(l) = labels.get(s.as_str())
            {
                *v = Value::String(pick(l, lang, s));
            }
        }
    }
}

fn sheet_of(title: String, result: &QueryResult, lang: Language) -> Sheet {
    let labels: Vec<_> = result.schema.iter().map(|f| &f.value_labels).collect();
    let mut rows = result.rows.clone();
    let mut totals = result.totals.clone();
    label_values(&mut rows, &labels, lang);
    label_values(totals.as_mut_slice(), &labels, lang);
    Sheet {
        title,
        columns: result
            .schema
            .iter()
            .map(|f| Column {
                header: pick(&f.label, lang, &f.name),
                format: f.format.clone(),
                date: f.data_type == "date",
            })
            .collect(),
        rows,
        totals,
    }
}

fn too_large(what: String) -> QueryError {
    QueryError::new(ErrorKind::Invalid, "export_too_large", what)
}

fn invalid(message: &str) -> QueryError {
    QueryError::invalid(message)
}

pub async fn export(
    service: &KpiService,
    principal: &Principal,
    req: &ExportRequest,
) -> Result<ExportFile, QueryError> {
    let lang = req.lang;
    let (name, sheets, subjects) = match (&req.query, &req.drill_through, &req.dashboard) {
        (Some(q), None, None) => {
            let response = service.query(principal, q).await?;
            let title = q.metrics.join("_");
            let sheet = sheet_of(title.clone(), &response.result, lang);
            (title, vec![sheet], q.metrics.clone())
        }
        (None, Some(d), None) => {
            let sheet = drill_through_sheet(service, principal, d, lang).await?;
            (
                d.model.clone(),
                vec![sheet],
                vec![format!("model:{}", d.model)],
            )
        }
        (None, None, Some(id)) => {
            let view = crate::dashboard::render(service, principal, id, &req.params).await?;
            let mut sheets = Vec::new();
            let mut subjects = BTreeSet::new();
            for panel in &view.panels {
                if req.panel.as_ref().is_some_and(|p| *p != panel.layout.id) {
                    continue;
                }
                let title = pick(&panel.layout.title, lang, &panel.layout.id);
                match (&panel.result, &panel.error) {
                    (Some(result), _) => sheets.push(sheet_of(title, result, lang)),
                    // One panel that failed fails the export: a workbook missing a sheet
                    // silently would be read as complete.
                    (None, error) => {
                        return Err(QueryError::new(
                            ErrorKind::Invalid,
                            "panel_failed",
                            format!(
                                "panel '{}' has no result to export: {}",
                                panel.layout.id,
                                error.as_ref().map_or("".into(), |e| e.to_string())
                            ),
                        ));
                    }
                }
                subjects.extend(panel.layout.metrics.iter().cloned());
            }
            if let (Some(p), true) = (&req.panel, sheets.is_empty()) {
                return Err(invalid(&format!(
                    "dashboard '{id}' has no panel '{p}' (it has: {})",
                    view.panels
                        .iter()
                        .map(|p| p.layout.id.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ))
                .at("panel"));
            }
            let name = match &req.panel {
                Some(p) => format!("{id}_{p}"),
                None => id.clone(),
            };
            (name, sheets, subjects.into_iter().collect())
        }
        _ => {
            return Err(invalid(
                "give exactly one of 'query', 'drill_through' or 'dashboard'",
            ));
        }
    };
    if req.panel.is_some() && req.dashboard.is_none() {
        return Err(invalid("'panel' names a panel of the 'dashboard' given with it").at("panel"));
    }
    let rows = sheets.iter().map(|s| s.rows.len()).sum();
    let name = file_name(&name);
    if req.format == ExportFormat::Csv && sheets.len() != 1 {
        return Err(invalid(
            "a CSV holds one table: give 'panel', or ask for format xlsx (a sheet per panel)",
        )
        .at("format"));
    }
    // Encoding a large answer is seconds of CPU, cached answer or not: it takes a compute slot
    // of the principal's share, as a query does, and runs on the engine's threads, which give
    // way to the request runtime (`/healthz`, other users' cached answers).
    let _slot = service.hold_compute_slot(principal).await?;
    let format = req.format;
    let (content_type, extension, bytes) =
        crate::engine::run_blocking(move || encode(format, &sheets, lang))
            .await
            .map_err(|e| QueryError::internal(format!("encoding the export: {e}")))??;
    Ok(ExportFile {
        content_type,
        name,
        extension,
        bytes,
        rows,
        subjects,
    })
}

/// The file of `sheets` in `format`: its content type, extension and bytes.
fn encode(
    format: ExportFormat,
    sheets: &[Sheet],
    lang: Language,
) -> Result<(&'static str, &'static str, Vec<u8>), QueryError> {
    Ok(match format {
        ExportFormat::Xlsx => (
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
            to_xlsx(sheets, lang)
                .map_err(|e| QueryError::internal(format!("writing the workbook: {e}")))?,
        ),
        ExportFormat::Csv => (
            "text/csv; charset=utf-8",
            "csv",
            sheets.first().map_or_else(Vec::new, |s| to_csv(s, lang)),
        ),
    })
}

/// Every row of a drill-through list, page by page ([`MAX_PAGE_SIZE`] each), up to the
/// server's `--max-rows`.
async fn drill_through_sheet(
    service: &KpiService,
    principal: &Principal,
    req: &DrillThroughRequest,
    lang: Language,
) -> Result<Sheet, QueryError> {
    let mut page_req = DrillThroughRequest {
        page: 1,
        page_size: MAX_PAGE_SIZE,
        ..req.clone()
    };
    let first = service.drill_through(principal, &page_req).await?;
    let most = service.max_rows() as u64;
    if first.total > most {
        return Err(too_large(format!(
            "{} rows match; an export lists at most {most} (--max-rows): narrow the drill or the filters",
            first.total
        )));
    }
    let mut rows = first.rows;
    while (rows.len() as u64) < first.total {
        page_req.page += 1;
        let next = service.drill_through(principal, &page_req).await?;
        if next.rows.is_empty() {
            break;
        }
        rows.extend(next.rows);
    }
    let labels: Vec<_> = first.columns.iter().map(|c| &c.value_labels).collect();
    label_values(&mut rows, &labels, lang);
    Ok(Sheet {
        title: pick(&first.label, lang, &first.model),
        columns: first
            .columns
            .iter()
            .map(|c| Column {
                header: c.name.clone(),
                format: None,
                date: c.data_type == "date",
            })
            .collect(),
        rows,
        totals: None,
    })
}

fn file_name(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(80)
        .collect();
    format!("kpilens-{clean}")
}

fn total_label(lang: Language) -> &'static str {
    match lang {
        Language::Zh => "合计",
        Language::En => "Total",
    }
}

/// A CSV cell. Text that a spreadsheet would read as a formula (a member named
/// `=HYPERLINK(...)`, `+1`, `-2+3`, `@SUM(...)`, or starting with a tab or carriage return) is
/// neutralised as OWASP's CSV-injection guidance says: a leading `'` and quoted, so it shows as
/// the text it is. Numbers stay numbers (a negative balance is not a formula).
fn csv_cell(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) if s.starts_with(['=', '+', '-', '@', '\t', '\r']) => {
            return format!("\"'{}\"", s.replace('"', "\"\""));
        }
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

fn to_csv(sheet: &Sheet, lang: Language) -> Vec<u8> {
    let mut out = String::from("\u{feff}");
    let line = |cells: Vec<String>| cells.join(",") + "\r\n";
    out += &line(
        sheet
            .columns
            .iter()
            .map(|c| csv_cell(&Value::String(c.header.clone())))
            .collect(),
    );
    for row in &sheet.rows {
        out += &line(row.iter().map(csv_cell).collect());
    }
    if let Some(totals) = &sheet.totals {
        let mut cells: Vec<String> = totals.iter().map(csv_cell).collect();
        if let Some(first) = cells.first_mut()
            && first.is_empty()
        {
            *first = total_label(lang).to_string();
        }
        out += &line(cells);
    }
    out.into_bytes()
}

/// The Excel number format of a metric's format.
fn number_format(format: &FormatSpec) -> String {
    let decimals = |default: u8| {
        let d = format.decimals.unwrap_or(default) as usize;
        if d == 0 {
            String::new()
        } else {
            format!(".{}", "0".repeat(d))
        }
    };
    match format.style {
        FormatStyle::Integer => "#,##0".to_string(),
        FormatStyle::Number => format!("#,##0{}", decimals(2)),
        FormatStyle::Percent => format!("0{}%", decimals(1)),
        FormatStyle::Currency => {
            let unit = match format.currency.as_deref() {
                Some("CNY") | None => "¥".to_string(),
                Some("USD") => "$".to_string(),
                Some("EUR") => "€".to_string(),
                Some(code) => format!("{code} "),
            };
            format!("\"{unit}\"#,##0{}", decimals(2))
        }
    }
}

/// Excel's rules for a sheet name: at most 31 characters, none of `[]:*?/\`, unique.
fn sheet_name(title: &str, taken: &mut BTreeSet<String>) -> String {
    let base: String = title
        .chars()
        .map(|c| if "[]:*?/\\".contains(c) { ' ' } else { c })
        .take(28)
        .collect();
    let base = if base.trim().is_empty() {
        "Sheet".to_string()
    } else {
        base.trim().to_string()
    };
    let mut name = base.clone();
    let mut n = 2;
    while !taken.insert(name.to_lowercase()) {
        name = format!("{base} {n}");
        n += 1;
    }
    name
}

fn to_xlsx(sheets: &[Sheet], lang: Language) -> Result<Vec<u8>, rust_xlsxwriter::XlsxError> {
    let mut workbook = Workbook::new();
    let mut taken = BTreeSet::new();
    let header = Format::new().set_bold().set_background_color("#E8EEF7");
    let date = Format::new().set_num_format("yyyy-mm-dd");
    for sheet in sheets {
        let ws = workbook.add_worksheet();
        ws.set_name(sheet_name(&sheet.title, &mut taken))?;
        let formats: Vec<Option<Format>> = sheet
            .columns
            .iter()
            .map(|c| {
                c.format
                    .as_ref()
                    .map(|f| Format::new().set_num_format(number_format(f)))
            })
            .collect();
        for (c, column) in sheet.columns.iter().enumerate() {
            ws.write_string_with_format(0, c as u16, &column.header, &header)?;
            let width = column.header.chars().count().max(10) as f64 + 4.0;
            ws.set_column_width(c as u16, width.min(40.0))?;
        }
        let mut r = 1u32;
        for row in &sheet.rows {
            write_row(ws, r, row, &sheet.columns, &formats, &date, None)?;
            r += 1;
        }
        if let Some(totals) = &sheet.totals {
            let bold = Format::new().set_bold();
            write_row(ws, r, totals, &sheet.columns, &formats, &date, Some(&bold))?;
            if totals.first().is_some_and(Value::is_null) {
                ws.write_string_with_format(r, 0, total_label(lang), &bold)?;
            }
        }
        ws.set_freeze_panes(1, 0)?;
    }
    if sheets.is_empty() {
        workbook.add_worksheet();
    }
    workbook.save_to_buffer()
}

fn write_row(
    ws: &mut Worksheet,
    r: u32,
    row: &[Value],
    columns: &[Column],
    formats: &[Option<Format>],
    date: &Format,
    bold: Option<&Format>,
) -> Result<(), rust_xlsxwriter::XlsxError> {
    for (c, value) in row.iter().enumerate() {
        let col = c as u16;
        let style = |f: Option<&Format>| match (f, bold) {
            (Some(f), Some(_)) => f.clone().set_bold(),
            (Some(f), None) => f.clone(),
            (None, Some(b)) => b.clone(),
            (None, None) => Format::new(),
        };
        match value {
            Value::Null => {}
            Value::Number(n) => {
                let f = style(formats.get(c).and_then(Option::as_ref));
                ws.write_number_with_format(r, col, n.as_f64().unwrap_or(f64::NAN), &f)?;
            }
            Value::Bool(b) => {
                ws.write_boolean_with_format(r, col, *b, &style(None))?;
            }
            Value::String(s) if columns.get(c).is_some_and(|c| c.date) => {
                match ExcelDateTime::parse_from_str(s) {
                    Ok(d) => ws.write_datetime_with_format(r, col, &d, &style(Some(date)))?,
                    Err(_) => ws.write_string_with_format(r, col, s, &style(None))?,
                };
            }
            Value::String(s) => {
                ws.write_string_with_format(r, col, s, &style(None))?;
            }
            other => {
                ws.write_string_with_format(r, col, other.to_string(), &style(None))?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn format(style: FormatStyle, decimals: Option<u8>, currency: Option<&str>) -> FormatSpec {
        FormatSpec {
            style,
            decimals,
            currency: currency.map(str::to_string),
        }
    }

    #[test]
    fn number_formats_follow_the_metric() {
        assert_eq!(
            number_format(&format(FormatStyle::Percent, Some(2), None)),
            "0.00%"
        );
        assert_eq!(
            number_format(&format(FormatStyle::Percent, None, None)),
            "0.0%"
        );
        assert_eq!(
            number_format(&format(FormatStyle::Integer, None, None)),
            "#,##0"
        );
        assert_eq!(
            number_format(&format(FormatStyle::Currency, Some(0), Some("CNY"))),
            "\"¥\"#,##0"
        );
        assert_eq!(
            number_format(&format(FormatStyle::Currency, Some(0), Some("CZK"))),
            "\"CZK \"#,##0"
        );
        assert_eq!(
            number_format(&format(FormatStyle::Number, None, None)),
            "#,##0.00"
        );
    }

    #[test]
    fn sheet_names_are_what_excel_accepts() {
        let mut taken = BTreeSet::new();
        assert_eq!(sheet_name("a/b: c", &mut taken), "a b  c");
        assert_eq!(sheet_name("A/B: C", &mut taken), "A B  C 2");
        assert_eq!(sheet_name("", &mut taken), "Sheet");
        assert_eq!(sheet_name(&"长".repeat(40), &mut taken).chars().count(), 28);
        assert_eq!(file_name("客户 list/1"), "kpilens-___list_1");
    }

    #[test]
    fn csv_quotes_what_needs_quoting_and_labels_the_totals() {
        let sheet = Sheet {
            title: "t".into(),
            columns: vec![
                Column {
                    header: "区域".into(),
                    format: None,
                    date: false,
                },
                Column {
                    header: "a,b".into(),
                    format: None,
                    date: false,
                },
            ],
            rows: vec![vec![Value::from("西北"), Value::from(0.25)]],
            totals: Some(vec![Value::Null, Value::from(1)]),
        };
        let text = String::from_utf8(to_csv(&sheet, Language::Zh)).unwrap();
        assert_eq!(text, "\u{feff}区域,\"a,b\"\r\n西北,0.25\r\n合计,1\r\n");
    }

    #[test]
    fn csv_text_that_would_be_a_formula_is_text_and_numbers_stay_numbers() {
        let cell = |v: Value| csv_cell(&v);
        assert_eq!(
            cell(Value::from("=HYPERLINK(\"http://x\",\"y\")")),
            "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\""
        );
        assert_eq!(cell(Value::from("+1")), "\"'+1\"");
        assert_eq!(cell(Value::from("-2+3")), "\"'-2+3\"");
        assert_eq!(cell(Value::from("@SUM(A1)")), "\"'@SUM(A1)\"");
        assert_eq!(cell(Value::from("\tx")), "\"'\tx\"");
        assert_eq!(cell(Value::from("a=b")), "a=b");
        assert_eq!(cell(Value::from(-0.25)), "-0.25");
    }
}
