//! Kubefile lexing: logical lines and Dockerfile-style word expansion.

/// One instruction after joining `\` continuations; `line` is where it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LogicalLine {
    pub line: usize,
    pub text: String,
}

/// Splits the source into instructions. Comment lines and blank lines are
/// dropped, also in the middle of a continued instruction, as Docker does: a
/// commented-out line inside a long `RUN` must not end it.
pub(crate) fn logical_lines(src: &str) -> Vec<LogicalLine> {
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    let mut out = Vec::new();
    let mut current: Option<LogicalLine> = None;
    for (idx, raw) in src.split('\n').enumerate() {
        let raw = raw.strip_suffix('\r').unwrap_or(raw);
        let trimmed = raw.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let (body, continues) = match raw.trim_end().strip_suffix('\\') {
            Some(b) => (b, true),
            None => (raw, false),
        };
        match current.as_mut() {
            Some(cur) => cur.text.push_str(body),
            None => {
                current = Some(LogicalLine {
                    line: idx + 1,
                    text: body.to_string(),
                })
            }
        }
        if !continues {
            out.extend(current.take());
        }
    }
    // A trailing `\` on the last line just ends the file.
    out.extend(current);
    out
}

/// Variable lookup for expansion: the value, or `None` when unset.
pub(crate) trait Vars {
    fn get(&self, name: &str) -> Option<String>;
}

impl<F: Fn(&str) -> Option<String>> Vars for F {
    fn get(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// Expands `$VAR`, `${VAR}` and the `${VAR:-default}` family, and (with
/// `quotes`) removes shell quoting. Records unset variables for warnings.
pub(crate) struct Expander<'a> {
    vars: &'a dyn Vars,
    pub unset: Vec<String>,
}

#[derive(Clone, Copy)]
pub(crate) struct Mode {
    /// Split into words at unquoted whitespace.
    pub split: bool,
    /// Honour `'…'`, `"…"` and backslash escapes.
    pub quotes: bool,
}

pub(crate) const WORDS: Mode = Mode {
    split: true,
    quotes: true,
};
pub(crate) const ONE_WORD: Mode = Mode {
    split: false,
    quotes: true,
};
pub(crate) const RAW: Mode = Mode {
    split: false,
    quotes: false,
};

impl<'a> Expander<'a> {
    pub fn new(vars: &'a dyn Vars) -> Self {
        Expander {
            vars,
            unset: Vec::new(),
        }
    }

    /// Lexes `text` into words (one word unless `mode.split`).
    pub fn words(&mut self, text: &str, mode: Mode) -> Result<Vec<String>, String> {
        let chars: Vec<char> = text.chars().collect();
        let mut words = Vec::new();
        let mut cur = String::new();
        let mut in_word = false;
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if mode.split && c.is_whitespace() {
                if in_word {
                    words.push(std::mem::take(&mut cur));
                    in_word = false;
                }
                i += 1;
                continue;
            }
            in_word = true;
            match c {
                '\'' if mode.quotes => {
                    let end = find(&chars, i + 1, '\'')
                        .ok_or_else(|| format!("unterminated single quote in {text:?}"))?;
                    cur.extend(&chars[i + 1..end]);
                    i = end + 1;
                }
                '"' if mode.quotes => {
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => return Err(format!("unterminated double quote in {text:?}")),
                            Some('"') => {
                                i += 1;
                                break;
                            }
                            Some('\\') if matches!(chars.get(i + 1), Some('"' | '\\' | '$')) => {
                                cur.push(chars[i + 1]);
                                i += 2;
                            }
                            Some('$') => i = self.dollar(&chars, i, &mut cur)?,
                            Some(&other) => {
                                cur.push(other);
                                i += 1;
                            }
                        }
                    }
                }
                '\\' => match chars.get(i + 1) {
                    Some(&next) if mode.quotes || next == '$' => {
                        cur.push(next);
                        i += 2;
                    }
                    _ => {
                        cur.push('\\');
                        i += 1;
                    }
                },
                '$' => i = self.dollar(&chars, i, &mut cur)?,
                other => {
                    cur.push(other);
                    i += 1;
                }
            }
        }
        if in_word || !mode.split {
            words.push(cur);
        }
        Ok(words)
    }

    /// Expands into a single string (no word splitting).
    pub fn word(&mut self, text: &str, mode: Mode) -> Result<String, String> {
        let mut w = self.words(
            text,
            Mode {
                split: false,
                ..mode
            },
        )?;
        Ok(w.pop().unwrap_or_default())
    }

    /// Handles the `$` at `chars[i]`; returns the index after the expansion.
    fn dollar(&mut self, chars: &[char], i: usize, out: &mut String) -> Result<usize, String> {
        let start = i + 1;
        if chars.get(start) == Some(&'{') {
            let end = matching_brace(chars, start).ok_or_else(|| {
                format!("missing }} in {:?}", chars[i..].iter().collect::<String>())
            })?;
            let inner: String = chars[start + 1..end].iter().collect();
            self.braced(&inner, out)?;
            return Ok(end + 1);
        }
        let name_len = name_len(&chars[start..]);
        if name_len == 0 {
            // `$` not followed by a name is a literal dollar, as in sh.
            out.push('$');
            return Ok(start);
        }
        let name: String = chars[start..start + name_len].iter().collect();
        match self.vars.get(&name) {
            Some(v) => out.push_str(&v),
            None => self.unset.push(name),
        }
        Ok(start + name_len)
    }

    fn braced(&mut self, inner: &str, out: &mut String) -> Result<(), String> {
        let chars: Vec<char> = inner.chars().collect();
        let n = name_len(&chars);
        let bad =
            || format!("bad substitution ${{{inner}}}: write ${{NAME}} or ${{NAME:-default}}");
        if n == 0 {
            return Err(bad());
        }
        let name: String = chars[..n].iter().collect();
        let rest: String = chars[n..].iter().collect();
        let value = self.vars.get(&name);
        if rest.is_empty() {
            match value {
                Some(v) => out.push_str(&v),
                None => self.unset.push(name),
            }
            return Ok(());
        }
        // `:` makes an empty value count as unset, as in sh.
        let (colon, op_rest) = match rest.strip_prefix(':') {
            Some(r) => (true, r),
            None => (false, rest.as_str()),
        };
        let set = match &value {
            Some(v) => !(colon && v.is_empty()),
            None => false,
        };
        let mut chars = op_rest.chars();
        let op = chars.next().ok_or_else(bad)?;
        let word = chars.as_str();
        match op {
            '-' => {
                if set {
                    out.push_str(value.as_deref().unwrap_or_default());
                } else {
                    out.push_str(&self.word(word, RAW)?);
                }
            }
            '+' => {
                if set {
                    out.push_str(&self.word(word, RAW)?);
                }
            }
            '?' => {
                if set {
                    out.push_str(value.as_deref().unwrap_or_default());
                } else {
                    let msg = self.word(word, RAW)?;
                    let msg = if msg.is_empty() {
                        "it is required".to_string()
                    } else {
                        msg
                    };
                    return Err(format!("{name} is not set: {msg}; pass --build-arg {name}=... or set it with ARG/ENV"));
                }
            }
            _ => return Err(bad()),
        }
        Ok(())
    }
}

fn find(chars: &[char], from: usize, c: char) -> Option<usize> {
    chars[from.min(chars.len())..]
        .iter()
        .position(|&x| x == c)
        .map(|p| p + from)
}

/// Index of the `}` closing the `{` at `open`, skipping nested `${…}`.
fn matching_brace(chars: &[char], open: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// Length of the variable name at the start: `[A-Za-z_][A-Za-z0-9_]*`.
fn name_len(chars: &[char]) -> usize {
    match chars.first() {
        Some(c) if c.is_ascii_alphabetic() || *c == '_' => chars
            .iter()
            .take_while(|c| c.is_ascii_alphanumeric() || **c == '_')
            .count(),
        _ => 0,
    }
}

pub(crate) fn is_var_name(s: &str) -> bool {
    let chars: Vec<char> = s.chars().collect();
    !chars.is_empty() && name_len(&chars) == chars.len()
}

/// Names referenced as `$NAME` or `${NAME…}` in a shell command.
pub(crate) fn referenced_vars(text: &str) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '$' {
            let start = if chars.get(i + 1) == Some(&'{') {
                i + 2
            } else {
                i + 1
            };
            let n = name_len(&chars[start.min(chars.len())..]);
            if n > 0 {
                out.push(chars[start..start + n].iter().collect());
            }
            i = start + n;
        } else {
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(name: &str) -> Option<String> {
        match name {
            "A" => Some("a".into()),
            "EMPTY" => Some(String::new()),
            "SP" => Some("x y".into()),
            _ => None,
        }
    }

    fn words(text: &str) -> Vec<String> {
        let mut e = Expander::new(&vars);
        e.words(text, WORDS).expect("lexes")
    }

    #[test]
    fn logical() {
        let src = "FROM scratch\n# c\n\nRUN a \\\n  # inside\n  b \\\n\n  c\r\nCMD x\\";
        let l = logical_lines(src);
        assert_eq!(l.len(), 3);
        assert_eq!(l[1].line, 4);
        assert_eq!(l[1].text, "RUN a   b   c");
        assert_eq!(l[2].text, "CMD x");
    }

    #[test]
    fn expansion() {
        assert_eq!(
            words("$A ${A}b \"$A c\" '$A' \\$A"),
            ["a", "ab", "a c", "$A", "$A"]
        );
        assert_eq!(
            words("${NOPE:-d$A} ${EMPTY:-e} ${EMPTY-e} ${A:+alt} ${NOPE+alt}x"),
            ["da", "e", "", "alt", "x"]
        );
        assert_eq!(words("$SP"), ["x y"]);
        assert_eq!(words("a$ $1 5$"), ["a$", "$1", "5$"]);
        let mut e = Expander::new(&vars);
        assert!(e
            .words("${NOPE:?needed}", WORDS)
            .expect_err("required")
            .contains("NOPE is not set: needed"));
        assert!(e
            .words("${", WORDS)
            .expect_err("open")
            .contains("missing }"));
        assert!(e
            .words("${1}", WORDS)
            .expect_err("bad")
            .contains("bad substitution"));
        assert!(e
            .words("'abc", WORDS)
            .expect_err("quote")
            .contains("unterminated"));
        e.words("$NOPE ${ALSO}", WORDS).expect("lexes");
        assert_eq!(e.unset, ["NOPE", "ALSO"]);
    }

    #[test]
    fn references() {
        assert_eq!(referenced_vars("echo $A ${B:-x} $ 1$"), ["A", "B"]);
    }
}
