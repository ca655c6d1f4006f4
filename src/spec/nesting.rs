//! A guard run before YAML is parsed: the parser takes time quadratic in the depth of nested
//! flow collections (`[[[[...`), so 200 KB of `[` held a reload for tens of seconds. No
//! definition nests anywhere near this deep; past it the file is refused without parsing.

/// Deepest `[`/`{` nesting accepted in a definition file.
pub const MAX_FLOW_DEPTH: usize = 64;

/// The 1-based line where flow collections nest deeper than `max`, if they do. Quoted scalars
/// and comments are skipped, so a `[` inside a string does not count.
pub fn too_deep(text: &str, max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut line = 1;
    let mut chars = text.chars().peekable();
    let mut previous = '\n';
    while let Some(c) = chars.next() {
        match c {
            '\n' => line += 1,
            '#' if previous.is_whitespace() => {
                // A comment runs to the end of the line.
                for c in chars.by_ref() {
                    if c == '\n' {
                        line += 1;
                        break;
                    }
                }
                previous = '\n';
                continue;
            }
            '"' | '\'' if !previous.is_alphanumeric() => {
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
            }
            '[' | '{' => {
                depth += 1;
                if depth > max {
                    return Some(line);
                }
            }
            ']' | '}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        previous = c;
    }
    None
}
