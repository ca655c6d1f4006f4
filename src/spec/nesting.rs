//! A guard run before YAML is parsed: the parser takes time quadratic in the depth of nested
//! flow collections (`[[[[...`), so 200 KB of `[` held a reload for tens of seconds. No
//! definition nests anywhere near this deep; past it the file is refused without parsing.
//!
//! The guard must see every bracket the parser does: it skips a quoted scalar only where the
//! parser reads one, at the start of a node (a line's first token, after `- `, `? `, `: `, or a
//! flow `[`, `{`, `,`; past an anchor or a tag). A quote inside a plain scalar (`a."`) is a
//! character like any other, for both: skipping from there let brackets the parser nests go
//! uncounted.

/// Deepest `[`/`{` nesting accepted in a definition file.
pub const MAX_FLOW_DEPTH: usize = 64;

/// The 1-based line where flow collections nest deeper than `max`, if they do.
pub fn too_deep(text: &str, max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut previous = '\n';
    // Whether the next token starts a node (where a quoted scalar may begin).
    let mut node_start = true;
    while let Some(c) = chars.next() {
        let followed_by_space = chars.peek().is_none_or(|n| n.is_whitespace());
        match c {
            '\n' => {
                line += 1;
                node_start = true;
            }
            c if c.is_whitespace() => {}
            '#' if previous.is_whitespace() => {
                // A comment runs to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
                previous = '\n';
                node_start = true;
                continue;
            }
            '"' | '\'' if node_start => {
                let quote = c;
                while let Some(c) = chars.next() {
                    match c {
                        '\n' => line += 1,
                        '\\' if quote == '"' => {
                            chars.next();
                        }
                        // '' is an escaped quote inside a single-quoted scalar.
                        '\'' if quote == '\'' && chars.peek() == Some(&'\'') => {
                            chars.next();
                        }
                        c if c == quote => break,
                        _ => {}
                    }
                }
                node_start = false;
            }
            '[' | '{' => {
                depth += 1;
                if depth > max {
                    return Some(line);
                }
                node_start = true;
            }
            ']' | '}' => {
                depth = depth.saturating_sub(1);
                node_start = false;
            }
            ',' if depth > 0 => node_start = true,
            // `key: value`, or in a flow collection `"key":value`.
            ':' if followed_by_space || depth > 0 => node_start = true,
            '-' | '?' if node_start && followed_by_space => {}
            // An anchor or a tag before the node: the node still starts after it.
            '&' | '!' if node_start => {
                while chars.peek().is_some_and(|n| !n.is_whitespace()) {
                    chars.next();
                }
            }
            _ => node_start = false,
        }
        previous = c;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quote_inside_a_plain_scalar_hides_no_bracket() {
        let attack = format!("metrics:\n  a.\"b: {}", "[".repeat(100));
        assert_eq!(too_deep(&attack, 64), Some(2));
        let flow = format!("x: [a \"b, {}", "[".repeat(100));
        assert_eq!(too_deep(&flow, 64), Some(1));
        let anchored = format!("x: {}", "[ &a \"]]]\" ".repeat(100));
        assert_eq!(too_deep(&anchored, 64), Some(1));
    }

    #[test]
    fn brackets_in_quoted_scalars_and_comments_do_not_count() {
        let text = format!(
            "a: \"{}\"\nb: '{}'\nc: [\"x\", '[[', {{k: \"]]\"}}] # {}\n- \"{}\"\n",
            "[".repeat(100),
            "{".repeat(100),
            "[".repeat(100),
            "[".repeat(100)
        );
        assert_eq!(too_deep(&text, 64), None);
        assert_eq!(too_deep(&"[".repeat(65), 64), Some(1));
        assert_eq!(too_deep(&"[".repeat(64), 64), None);
    }
}
