//! Drill-down one level of a hierarchy: the children's rows come from the query itself (grouped
//! by the next level, filtered to the path); the parent subtotal is the same query without the
//! level, so a ratio's parent is its own ratio of sums, never a mean of the children. Each child
//! gets its share of the parent (additive metrics only) and its rank among its siblings.

use std::collections::HashMap;

use serde_json::Value;

use super::planner::ColumnRole;
use super::result::{Breadcrumb, DrillResult, QueryResult, SchemaField};
use super::series::compare_values;
use super::validate::ValidatedQuery;
use crate::catalog::Catalog;
use crate::spec::{FormatSpec, FormatStyle, Label};

/// The parent query: the drill query without the drilled level.
pub fn parent_query(q: &ValidatedQuery) -> ValidatedQuery {
    let mut p = q.clone();
    if let Some(d) = &q.drill {
        p.dimensions.retain(|x| x != &d.level);
    }
    p.drill = None;
    p.compare = Vec::new();
    p.order = Vec::new();
    p.totals = false;
    p
}

/// Metrics whose values add up over the members of a level: a child's share is meaningful.
fn is_additive(catalog: &Catalog, metric: &str) -> bool {
    catalog.metrics[metric]
        .definition
        .adds_up(&catalog.measures)
}

pub fn merge(main: &mut QueryResult, q: &ValidatedQuery, catalog: &Catalog, parent: &QueryResult) {
    let Some(d) = &q.drill else {
        return;
    };
    let level_ix = main
        .column(&d.level)
        .expect("the drilled level is a column");
    // Parent key: every key column but the level.
    let key_ix = main.columns_where(|i, f| {
        i != level_ix && matches!(f.role, ColumnRole::Time | ColumnRole::Dimension)
    });
    let metric_ix = main.columns_where(|_, f| f.role == ColumnRole::Metric);
    let parent_ix = |n: &str| parent.column(n);
    let mut parents: HashMap<Vec<Value>, &Vec<Value>> = HashMap::new();
    for row in &parent.rows {
        let key = key_ix
            .iter()
            .map(|i| parent_ix(&main.schema[*i].name).map_or(Value::Null, |j| row[j].clone()))
            .collect();
        parents.insert(key, row);
    }
    let key_of =
        |row: &Vec<Value>| -> Vec<Value> { key_ix.iter().map(|i| row[*i].clone()).collect() };

    // Ranks among siblings (same parent key), 1 = largest, ties share a rank.
    let mut ranks: Vec<Vec<Value>> = vec![Vec::new(); main.rows.len()];
    for i in &metric_ix {
        let mut groups: HashMap<Vec<Value>, Vec<usize>> = HashMap::new();
        for (r, row) in main.rows.iter().enumerate() {
            groups.entry(key_of(row)).or_default().push(r);
        }
        let mut rank_of = vec![Value::Null; main.rows.len()];
        for members in groups.values() {
            let mut sorted = members.clone();
            sorted.sort_by(|a, b| compare_values(&main.rows[*a][*i], &main.rows[*b][*i], true));
            let mut rank = 0;
            for (pos, r) in sorted.iter().enumerate() {
                if main.rows[*r][*i].is_null() {
                    continue;
                }
                if pos == 0 || main.rows[sorted[pos - 1]][*i] != main.rows[*r][*i] {
                    rank = pos + 1;
                }
                rank_of[*r] = Value::from(rank);
            }
        }
        for (r, v) in rank_of.into_iter().enumerate() {
            ranks[r].push(v);
        }
    }

    let additive: Vec<bool> = metric_ix
        .iter()
        .map(|i| is_additive(catalog, &main.schema[*i].name))
        .collect();
    for (r, row) in main.rows.iter_mut().enumerate() {
        let parent_row = parents.get(&key_of(row)).copied();
        let mut extra = Vec::new();
        for (k, i) in metric_ix.iter().enumerate() {
            if additive[k] {
                let total = parent_row
                    .and_then(|p| parent_ix(&main.schema[*i].name).and_then(|j| p[j].as_f64()));
                let share = match (row[*i].as_f64(), total) {
                    (Some(v), Some(t)) if t != 0.0 => serde_json::Number::from_f64(v / t)
                        .map(Value::Number)
                        .unwrap_or(Value::Null),
                    _ => Value::Null,
                };
                extra.push(share);
            }
            extra.push(ranks[r][k].clone());
        }
        row.extend(extra);
    }
    if let Some(t) = &mut main.totals {
        for a in &additive {
            if *a {
                t.push(Value::Null);
            }
            t.push(Value::Null);
        }
    }

    // Parent rows aligned with the final schema.
    let width = main.schema.len();
    let parent_rows: Vec<Vec<Value>> = parent
        .rows
        .iter()
        .map(|p| {
            let mut row = vec![Value::Null; width];
            for (i, f) in main.schema.iter().enumerate() {
                if let Some(j) = parent_ix(&f.name) {
                    row[i] = p[j].clone();
                }
            }
            row
        })
        .collect();

    let mut fields = Vec::new();
    for (k, i) in metric_ix.iter().enumerate() {
        let f = &main.schema[*i];
        let derived = |suffix: &str, zh: &str, en: &str, style: FormatStyle| SchemaField {
            name: format!("{}.{suffix}", f.name),
            role: ColumnRole::Derived,
            data_type: if suffix == "rank" {
                "integer"
            } else {
                "number"
            },
            label: Label {
                zh: Some(format!("{}{zh}", f.label.zh.clone().unwrap_or_default())),
                en: Some(format!(
                    "{} ({en})",
                    f.label.en.clone().unwrap_or_else(|| f.name.clone())
                )),
            },
            format: Some(FormatSpec {
                style,
                decimals: None,
                currency: None,
            }),
            direction: None,
            thresholds: None,
            value_labels: Default::default(),
        };
        if additive[k] {
            fields.push(derived(
                "share",
                "占比",
                "share of parent",
                FormatStyle::Percent,
            ));
        }
        fields.push(derived("rank", "排名", "rank", FormatStyle::Integer));
    }
    main.schema.extend(fields);
    let width = main.schema.len();
    let parent_rows = parent_rows
        .into_iter()
        .map(|mut r| {
            r.resize(width, Value::Null);
            r
        })
        .collect();

    let levels = &catalog.hierarchies[&d.hierarchy];
    let depth = d.path.len();
    let mut breadcrumbs = vec![Breadcrumb {
        level: None,
        member: None,
        path: serde_json::Map::new(),
    }];
    let mut path = serde_json::Map::new();
    for (level, member) in &d.path {
        path.insert(level.clone(), member.clone());
        breadcrumbs.push(Breadcrumb {
            level: Some(level.clone()),
            member: Some(member.clone()),
            path: path.clone(),
        });
    }
    main.drill = Some(DrillResult {
        hierarchy: d.hierarchy.clone(),
        level: d.level.clone(),
        next_level: levels.get(depth + 1).cloned(),
        breadcrumbs,
        parent: parent_rows,
    });
}
