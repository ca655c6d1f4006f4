//! Numbers as the cockpit shows them (`web/app/format.js`), for agents that quote them: percent,
//! integer, number, and currency in 万 / 亿 (zh) or K / M / B (en).

use crate::spec::{FormatSpec, FormatStyle};

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Lang {
    #[default]
    Zh,
    En,
}

/// `v` with `decimals` digits after the point and thousands separators.
fn grouped(v: f64, decimals: usize) -> String {
    let text = format!("{:.*}", decimals, v.abs());
    let (int, frac) = text.split_once('.').unwrap_or((&text, ""));
    let mut out = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if !frac.is_empty() {
        out.push('.');
        out.push_str(frac);
    }
    // -0.00 reads as 0.00.
    if v < 0.0 && out.chars().any(|c| c.is_ascii_digit() && c != '0') {
        out.insert(0, '-');
    }
    out
}

pub fn format_value(v: f64, format: &FormatSpec, lang: Lang) -> String {
    let decimals = format.decimals.map(usize::from);
    match format.style {
        FormatStyle::Percent => format!("{}%", grouped(v * 100.0, decimals.unwrap_or(1))),
        FormatStyle::Integer => grouped(v.round(), 0),
        FormatStyle::Number => grouped(v, decimals.unwrap_or(2)),
        FormatStyle::Currency => currency(v, format.currency.as_deref(), lang),
    }
}

/// ¥76.33亿 / ¥7.63B: two decimals in the largest unit the amount reaches.
fn currency(v: f64, code: Option<&str>, lang: Lang) -> String {
    let symbol = match code {
        None | Some("CNY") => "¥".to_string(),
        Some(c) => format!("{c} "),
    };
    let sign = if v < 0.0 { "-" } else { "" };
    let abs = v.abs();
    let steps: &[(f64, &str)] = match lang {
        Lang::Zh => &[(1e8, "亿"), (1e4, "万")],
        Lang::En => &[(1e9, "B"), (1e6, "M"), (1e3, "K")],
    };
    for (unit, suffix) in steps {
        if abs >= *unit {
            return format!("{sign}{symbol}{}{suffix}", grouped(abs / unit, 2));
        }
    }
    format!("{sign}{symbol}{}", grouped(abs, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(style: FormatStyle, decimals: Option<u8>) -> FormatSpec {
        FormatSpec {
            style,
            decimals,
            currency: None,
        }
    }

    #[test]
    fn numbers_read_as_on_the_cockpit() {
        let zh = Lang::Zh;
        assert_eq!(
            format_value(0.01234, &spec(FormatStyle::Percent, None), zh),
            "1.2%"
        );
        assert_eq!(
            format_value(0.01234, &spec(FormatStyle::Percent, Some(2)), zh),
            "1.23%"
        );
        assert_eq!(
            format_value(1234567.4, &spec(FormatStyle::Integer, None), zh),
            "1,234,567"
        );
        assert_eq!(
            format_value(-1234.5, &spec(FormatStyle::Number, None), zh),
            "-1,234.50"
        );
        assert_eq!(
            format_value(-0.001, &spec(FormatStyle::Number, None), zh),
            "0.00"
        );
        let money = spec(FormatStyle::Currency, None);
        assert_eq!(format_value(7_633_000_000.0, &money, zh), "¥76.33亿");
        assert_eq!(format_value(60_600.0, &money, zh), "¥6.06万");
        assert_eq!(format_value(999.0, &money, zh), "¥999");
        assert_eq!(format_value(7_633_000_000.0, &money, Lang::En), "¥7.63B");
        let czk = FormatSpec {
            currency: Some("CZK".into()),
            ..money
        };
        assert_eq!(format_value(-1500.0, &czk, Lang::En), "-CZK 1.50K");
    }
}
