//! The 360° customer view as an analyst declares it (`profile:` in `metrics/*.yaml`): which
//! models hold one customer's data and which of their columns the page shows, section by
//! section. Nothing about the demo bank is built in: a bank with other tables writes its own.

use serde::Deserialize;

use super::{FormatSpec, Label};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSpec {
    pub label: Option<Label>,
    /// The column naming the customer in every section's model, and in the customer lists the
    /// cockpit links to the page from (`customer_id`).
    pub key: String,
    /// In page order. The first is `show: fields` over a model with one row per customer
    /// (`primary_key` = `key`): a customer is there, for whoever asks, when that row is.
    pub sections: Vec<ProfileSectionSpec>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileSectionSpec {
    pub id: String,
    pub label: Option<Label>,
    pub model: String,
    pub show: SectionShow,
    pub columns: Vec<ProfileColumnSpec>,
    /// `table`: only the rows at the latest time the customer has in the model (the loans and
    /// products held now, from monthly snapshots).
    #[serde(default)]
    pub latest: bool,
    /// Most rows shown (the most recent ones where the model has a time); default 100.
    pub limit: Option<usize>,
}

/// How a section is shown.
#[derive(Debug, Clone, Copy, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SectionShow {
    /// Label–value pairs of one row.
    Fields,
    /// The columns over the model's time (balances, AUM).
    Chart,
    /// Rows.
    Table,
    /// Rows as events on one timeline with the other timeline sections, newest first.
    Timeline,
}

impl SectionShow {
    pub fn name(self) -> &'static str {
        match self {
            SectionShow::Fields => "fields",
            SectionShow::Chart => "chart",
            SectionShow::Table => "table",
            SectionShow::Timeline => "timeline",
        }
    }
}

/// A column of the section's model or one of its dimensions (reached through its joins), by
/// name, or with a label and a number format.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum ProfileColumnSpec {
    Name(String),
    Described(DescribedColumn),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DescribedColumn {
    pub column: String,
    pub label: Option<Label>,
    pub format: Option<FormatSpec>,
}

impl ProfileColumnSpec {
    pub fn column(&self) -> &str {
        match self {
            ProfileColumnSpec::Name(c) => c,
            ProfileColumnSpec::Described(d) => &d.column,
        }
    }
}
