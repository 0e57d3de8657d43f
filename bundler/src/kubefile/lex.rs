//! Kubefile lexing: logical lines and Dockerfile-style word expansion.
//!
//! Expansion is bounded: a Kubefile is hostile input, and `ENV A=$A$A` repeated doubles a
//! value per line (a 404-byte file asked for 16 GiB), while `${A:-${A:-…}}` nested costs a
//! scan of the rest of the line per level. No instruction expands to more than
//! [`MAX_EXPANSION`] bytes, and defaults nest at most [`MAX_NESTING`] deep.

/// Most bytes one instruction's words may expand to.
pub const MAX_EXPANSION: usize = 1 << 20;

/// Deepest nesting of `${NAME:-${…}}` defaults.
pub const MAX_NESTING: usize = 16;

/// Why an instruction's text could not be expanded; the parser adds the file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    #[error("unterminated single quote in {0:?}")]
    UnterminatedSingle(String),
    #[error("unterminated double quote in {0:?}")]
    UnterminatedDouble(String),
    #[error("missing }} in {0:?}")]
    MissingBrace(String),
    #[error("bad substitution ${{{0}}}: write ${{NAME}} or ${{NAME:-default}}")]
    BadSubstitution(String),
    #[error("{name} is not set: {message}; pass --build-arg {name}=... or set it with ARG/ENV")]
    Required { name: String, message: String },
    #[error(
        "expands to more than {MAX_EXPANSION} bytes (a variable built from itself, like \
         ENV A=$A$A, doubles on every line); build long values in a file instead"
    )]
    TooLong,
    #[error("${{…:-${{…}}}} defaults nest more than {MAX_NESTING} deep; flatten them")]
    TooDeep,
}

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
    /// Bytes produced so far, nested defaults included: bounded by [`MAX_EXPANSION`].
    produced: usize,
    /// Nesting of `${…:-…}` words being expanded.
    depth: usize,
    /// Whether the text being expanded honours quotes: the word of a `${NAME:-word}` then
    /// does too, as in Docker (`${NAME:-"keda"}` is `keda`).
    quotes: bool,
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
            produced: 0,
            depth: 0,
            quotes: false,
        }
    }

    /// Appends `text` to `out`, within the instruction's budget.
    fn emit(&mut self, out: &mut String, text: &str) -> Result<(), LexError> {
        self.produced += text.len();
        if self.produced > MAX_EXPANSION {
            return Err(LexError::TooLong);
        }
        out.push_str(text);
        Ok(())
    }

    /// Lexes `text` into words (one word unless `mode.split`).
    pub fn words(&mut self, text: &str, mode: Mode) -> Result<Vec<String>, LexError> {
        let outer = std::mem::replace(&mut self.quotes, mode.quotes);
        let r = self.words_in(text, mode);
        self.quotes = outer;
        r
    }

    fn words_in(&mut self, text: &str, mode: Mode) -> Result<Vec<String>, LexError> {
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
                        .ok_or_else(|| LexError::UnterminatedSingle(text.into()))?;
                    cur.extend(&chars[i + 1..end]);
                    i = end + 1;
                }
                '"' if mode.quotes => {
                    i += 1;
                    loop {
                        match chars.get(i) {
                            None => return Err(LexError::UnterminatedDouble(text.into())),
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
    pub fn word(&mut self, text: &str, mode: Mode) -> Result<String, LexError> {
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
    fn dollar(&mut self, chars: &[char], i: usize, out: &mut String) -> Result<usize, LexError> {
        let start = i + 1;
        if chars.get(start) == Some(&'{') {
            let end = matching_brace(chars, start)?
                .ok_or_else(|| LexError::MissingBrace(chars[i..].iter().collect()))?;
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
            Some(v) => self.emit(out, &v)?,
            None => self.unset.push(name),
        }
        Ok(start + name_len)
    }

    fn braced(&mut self, inner: &str, out: &mut String) -> Result<(), LexError> {
        let chars: Vec<char> = inner.chars().collect();
        let n = name_len(&chars);
        let bad = || LexError::BadSubstitution(inner.into());
        if n == 0 {
            return Err(bad());
        }
        let name: String = chars[..n].iter().collect();
        let rest: String = chars[n..].iter().collect();
        let value = self.vars.get(&name);
        if rest.is_empty() {
            match value {
                Some(v) => self.emit(out, &v)?,
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
        let value = value.unwrap_or_default();
        match op {
            '-' if set => self.emit(out, &value)?,
            '-' => {
                let w = self.nested(word)?;
                self.emit(out, &w)?;
            }
            '+' if set => {
                let w = self.nested(word)?;
                self.emit(out, &w)?;
            }
            '+' => {}
            '?' if set => self.emit(out, &value)?,
            '?' => {
                let msg = self.nested(word)?;
                return Err(LexError::Required {
                    name,
                    message: if msg.is_empty() {
                        "it is required".into()
                    } else {
                        msg
                    },
                });
            }
            _ => return Err(bad()),
        }
        Ok(())
    }

    /// Expands the word of a `${NAME:-word}`, one level deeper.
    fn nested(&mut self, word: &str) -> Result<String, LexError> {
        if self.depth >= MAX_NESTING {
            return Err(LexError::TooDeep);
        }
        self.depth += 1;
        let mode = if self.quotes { ONE_WORD } else { RAW };
        let r = self.word(word, mode);
        self.depth -= 1;
        r
    }
}

fn find(chars: &[char], from: usize, c: char) -> Option<usize> {
    chars[from.min(chars.len())..]
        .iter()
        .position(|&x| x == c)
        .map(|p| p + from)
}

/// Index of the `}` closing the `{` at `open`, skipping nested `${…}`. Braces nested deeper
/// than a default may nest are refused here, before the rest of the line is scanned.
fn matching_brace(chars: &[char], open: usize) -> Result<Option<usize>, LexError> {
    let mut depth = 0usize;
    let mut i = open;
    while i < chars.len() {
        match chars[i] {
            '{' => {
                depth += 1;
                if depth > MAX_NESTING + 1 {
                    return Err(LexError::TooDeep);
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return Ok(Some(i));
                }
            }
            _ => {}
        }
        i += 1;
    }
    Ok(None)
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

pub(crate) use bale_contract::template::is_var_name;

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
        // Quotes in a default are removed when the text honours quotes, as in Docker.
        assert_eq!(words("${NOPE:-\"keda\"} ${NOPE:-'a b'}"), ["keda", "a b"]);
        assert_eq!(words("a$ $1 5$"), ["a$", "$1", "5$"]);
        let mut e = Expander::new(&vars);
        let err = |e: &mut Expander, t: &str| e.words(t, WORDS).expect_err(t).to_string();
        assert!(err(&mut e, "${NOPE:?needed}").contains("NOPE is not set: needed"));
        assert!(err(&mut e, "${").contains("missing }"));
        assert!(err(&mut e, "${1}").contains("bad substitution"));
        assert!(err(&mut e, "'abc").contains("unterminated"));
        e.words("$NOPE ${ALSO}", WORDS).expect("lexes");
        assert_eq!(e.unset, ["NOPE", "ALSO"]);
    }

    #[test]
    fn references() {
        assert_eq!(referenced_vars("echo $A ${B:-x} $ 1$"), ["A", "B"]);
    }

    /// F14: nesting is refused past [`MAX_NESTING`] at once; before, each level rescanned the
    /// rest of the line (quadratic).
    #[test]
    fn nested_defaults_are_bounded() {
        let nest = |n: usize| format!("{}x{}", "${NOPE:-".repeat(n), "}".repeat(n));
        assert_eq!(words(&nest(MAX_NESTING)), ["x"]);
        let mut e = Expander::new(&vars);
        assert_eq!(
            e.words(&nest(MAX_NESTING + 1), WORDS),
            Err(LexError::TooDeep)
        );
        let t = std::time::Instant::now();
        let deep = nest(50_000);
        assert_eq!(e.words(&deep, WORDS), Err(LexError::TooDeep));
        assert!(
            t.elapsed() < std::time::Duration::from_secs(1),
            "{:?}",
            t.elapsed()
        );
    }

    /// F14: a value that doubles per reference stops at [`MAX_EXPANSION`].
    #[test]
    fn expansion_size_is_bounded() {
        let big = "x".repeat(MAX_EXPANSION / 4 + 1);
        let lookup = |n: &str| (n == "BIG").then(|| big.clone());
        let mut e = Expander::new(&lookup);
        assert_eq!(e.words("$BIG $BIG $BIG", WORDS).map(|w| w.len()), Ok(3));
        let mut e = Expander::new(&lookup);
        assert_eq!(
            e.words("$BIG ${BIG} \"$BIG\" ${NOPE:-$BIG}", WORDS),
            Err(LexError::TooLong)
        );
    }
}
