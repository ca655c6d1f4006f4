//! Small text helpers every layer uses for messages and identifiers. Depends on nothing.

/// At most 80 characters of client input, for echoing it in an error without letting a huge
/// value through.
pub fn clip(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(MAX).collect::<String>())
    }
}

/// The first `chars` hex digits of a digest: versions, ETags, key ids.
pub fn hex_prefix(bytes: &[u8], chars: usize) -> String {
    let mut s: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    s.truncate(chars);
    s
}

/// The first line of an error: DataFusion's messages carry backtraces and plans below it.
pub fn first_line(e: &impl std::fmt::Display) -> String {
    e.to_string().lines().next().unwrap_or_default().to_string()
}

/// An error on one line (its lines joined by "; "), at most `max` characters: for a reason shown
/// in a status list, where the lines after the first say why (a memory error's top consumers).
pub fn one_line(e: &impl std::fmt::Display, max: usize) -> String {
    let joined = e
        .to_string()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    match joined.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &joined[..i]),
        None => joined,
    }
}
