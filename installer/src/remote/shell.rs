//! Shell text with every value quoted by this module, never by its callers.
//!
//! A [`Script`] is for what only a shell can do (pipelines, redirections, `set -e` blocks): its
//! text is a constant template, and each value enters it through a named `{placeholder}`
//! that is filled with the value quoted as one word. One pass fills all of a template's
//! placeholders, so a value that happens to contain `{name}` is never filled in turn.
//!
//! A template writes a placeholder where a whole word (or a part of one) goes, outside any
//! quotes: `cat {path}`, `{dir}/journal.json`, never `"{path}"` nor `'{path}'`. A
//! `{name}` not given a value stays as it is (a shell's `${var}`, awk's `{print $4}`); in
//! debug builds a template whose placeholders and values do not match, or that puts one in
//! quotes, panics with the mistake named ([`template_problems`]).

use std::fmt::Display;

/// Quotes `s` as one word for a POSIX shell: inside single quotes, each `'` written as `'\''`.
pub(crate) fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// A command line for a person to read or paste into a shell: words of plain characters as
/// they are, the others quoted.
pub fn readable_line<I, S>(words: I) -> String
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    words
        .into_iter()
        .map(|w| {
            let w = w.as_ref();
            let plain = !w.is_empty()
                && w.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,@".contains(c));
            if plain {
                w.to_string()
            } else {
                quote(w)
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// True for a name a shell takes as a variable's: a letter or `_`, then letters, digits, `_`.
pub fn is_variable_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// A shell script: constant templates with quoted values, one after the other.
#[derive(Debug, Clone, Default)]
pub struct Script {
    parts: Vec<Part>,
}

#[derive(Debug, Clone)]
enum Part {
    /// A constant template and its values, already quoted.
    Template {
        text: &'static str,
        values: Vec<(&'static str, String)>,
    },
    /// Text that is complete as it is: made here from quoted words, or a script the user wrote.
    Done(String),
}

impl Script {
    /// A script from a constant template; its placeholders get values with [`Script::value`].
    pub fn new(template: &'static str) -> Script {
        Script::default().then(template)
    }

    /// A script of one simple command: every word quoted.
    pub fn argv<I, S>(words: I) -> Script
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let line = words
            .into_iter()
            .map(|w| quote(w.as_ref()))
            .collect::<Vec<_>>()
            .join(" ");
        Script {
            parts: vec![Part::Done(line)],
        }
    }

    /// Appends another constant template; the values given next belong to it.
    pub fn then(mut self, template: &'static str) -> Script {
        self.parts.push(Part::Template {
            text: template,
            values: Vec::new(),
        });
        self
    }

    /// Fills `{name}` in the last template with `value`, quoted as one word.
    pub fn value(self, name: &'static str, value: impl Display) -> Script {
        self.filled(name, quote(&value.to_string()))
    }

    /// Fills `{name}` in the last template with each of `values` quoted, separated by spaces
    /// (nothing for none).
    pub fn values<I>(self, name: &'static str, values: I) -> Script
    where
        I: IntoIterator,
        I::Item: Display,
    {
        let words: Vec<String> = values.into_iter().map(|v| quote(&v.to_string())).collect();
        self.filled(name, words.join(" "))
    }

    fn filled(mut self, name: &'static str, text: String) -> Script {
        match self.parts.last_mut() {
            Some(Part::Template { values, .. }) => values.push((name, text)),
            // A value with no template to go into is a mistake in this program's code.
            _ => debug_assert!(false, "value {name:?} given before any template"),
        }
        self
    }

    /// Appends `export NAME=VALUE` and a newline, the value quoted. A `name` that is no
    /// variable name is quoted as well, so the shell refuses it instead of running any of it.
    pub fn export(mut self, name: &str, value: impl Display) -> Script {
        let name = if is_variable_name(name) {
            name.to_string()
        } else {
            quote(name)
        };
        let line = format!("export {name}={}\n", quote(&value.to_string()));
        self.parts.push(Part::Done(line));
        self
    }

    /// Appends a script the user wrote (a hook, an app step) as it is: running the user's
    /// shell is its whole point. Never for text this program puts together.
    pub fn then_user_script(mut self, script: &str) -> Script {
        self.parts.push(Part::Done(script.to_string()));
        self
    }

    /// The script's text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Template { text, values } => {
                    debug_assert!(
                        template_problems(text, values).is_empty(),
                        "{:?} in the template {text:?}",
                        template_problems(text, values)
                    );
                    fill(text, values, &mut out);
                }
                Part::Done(text) => out.push_str(text),
            }
        }
        out
    }
}

/// Writes `template` to `out` with each `{name}` that has a value replaced by it.
fn fill(template: &str, values: &[(&'static str, String)], out: &mut String) {
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let value = after.find('}').and_then(|close| {
            let name = &after[..close];
            values
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (v, close))
        });
        match value {
            Some((v, close)) => {
                out.push_str(v);
                rest = &after[close + 1..];
            }
            None => {
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
}

/// What is wrong with a template and its values, for the checks in debug builds and tests:
/// a value given twice or never used, a `{name}` with no value (outside quotes and not
/// `${name}`), a placeholder inside quotes or written `${name}`. Quotes are followed as a
/// shell would at the top level (`'…'`, `"…"`, backslashes, `#` comments); empty when fine.
pub fn template_problems(template: &str, values: &[(&'static str, String)]) -> Vec<String> {
    #[derive(PartialEq, Clone, Copy)]
    enum Quoting {
        None,
        Single,
        Double,
    }
    let mut problems = Vec::new();
    for (i, (name, _)) in values.iter().enumerate() {
        if values[..i].iter().any(|(n, _)| n == name) {
            problems.push(format!("{{{name}}} given two values"));
        }
        if !template.contains(&format!("{{{name}}}")) {
            problems.push(format!("{{{name}}} given a value but not in the template"));
        }
    }
    let bytes = template.as_bytes();
    let mut quoting = Quoting::None;
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        match (quoting, c) {
            (Quoting::Single, b'\'') => quoting = Quoting::None,
            (Quoting::Single, c) if c != b'{' => {}
            (_, b'\\') => i += 1,
            (Quoting::None, b'\'') => quoting = Quoting::Single,
            (Quoting::None, b'"') => quoting = Quoting::Double,
            (Quoting::Double, b'"') => quoting = Quoting::None,
            (Quoting::None, b'#') if i == 0 || b" \t\n;".contains(&bytes[i - 1]) => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            (_, b'{') => {
                let after = &template[i + 1..];
                let name = after.find('}').map(|close| &after[..close]);
                if let Some(name) = name.filter(|n| is_variable_name(n)) {
                    let dollar = i > 0 && bytes[i - 1] == b'$';
                    let has_value = values.iter().any(|(n, _)| *n == name);
                    if has_value && dollar {
                        problems.push(format!("{{{name}}} written as ${{{name}}}"));
                    } else if has_value && quoting != Quoting::None {
                        problems.push(format!("{{{name}}} inside quotes"));
                    } else if !has_value && !dollar && quoting == Quoting::None {
                        problems.push(format!("{{{name}}} has no value"));
                    }
                }
            }
            _ => {}
        }
        i += 1;
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `sh -c` makes of `line` as the words of `printf '<%s>'`.
    fn words_seen_by_sh(line: &str) -> String {
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("printf '<%s>' {line}"))
            .output()
            .unwrap();
        assert!(out.status.success(), "{line}");
        String::from_utf8(out.stdout).unwrap()
    }

    const AWKWARD: &[&str] = &[
        "a b",
        "it's",
        "''",
        "$HOME",
        "$(touch /tmp/x)",
        "`id`",
        "\"q\"",
        "two\nlines",
        "",
        "back\\slash",
        "*",
        "{d}",
        "-n",
        "; rm -rf /",
    ];

    #[test]
    fn every_value_reaches_the_shell_as_one_word_unchanged() {
        let line = Script::argv(AWKWARD).text();
        let want: String = AWKWARD.iter().map(|w| format!("<{w}>")).collect();
        assert_eq!(words_seen_by_sh(&line), want);
        let line = Script::new("{all}").values("all", AWKWARD).text();
        assert_eq!(words_seen_by_sh(&line), want);
        for w in AWKWARD {
            let line = Script::new("x{v}y").value("v", w).text();
            assert_eq!(words_seen_by_sh(&line), format!("<x{w}y>"), "{w:?}");
        }
    }

    #[test]
    fn quoting_is_single_quotes_throughout() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
        assert_eq!(quote(""), "''");
        assert_eq!(quote("$x\n"), "'$x\n'");
        assert_eq!(Script::argv(["rm", "-f", "a b"]).text(), "'rm' '-f' 'a b'");
        assert_eq!(Script::argv(Vec::<String>::new()).text(), "");
    }

    #[test]
    fn templates_are_filled_in_one_pass() {
        let s = Script::new("cat {p} 2>/dev/null || true; echo ${HOME}").value("p", "/a/{q}");
        assert_eq!(s.text(), "cat '/a/{q}' 2>/dev/null || true; echo ${HOME}");
        let s = Script::new("mv {a} {b}")
            .value("a", "{b}")
            .value("b", "it's")
            .then("; rm -rf {list}")
            .values("list", ["x", "y z"])
            .then("; rm -rf {list}")
            .values("list", Vec::<&str>::new());
        assert_eq!(s.text(), r"mv '{b}' 'it'\''s'; rm -rf 'x' 'y z'; rm -rf ");
        assert_eq!(
            Script::new("head -c {n} > {t}.part")
                .value("n", 42u64)
                .value("t", "/x")
                .text(),
            "head -c '42' > '/x'.part"
        );
    }

    #[test]
    fn exports_and_user_scripts() {
        let s = Script::default()
            .export("BALE_ROLE", "master")
            .export("A", "it's $x")
            .export("BAD;rm", "v")
            .then("exec 2>&1\n")
            .then_user_script("echo {not_a_value} \"$BALE_ROLE\"");
        assert_eq!(
            s.text(),
            "export BALE_ROLE='master'\nexport A='it'\\''s $x'\nexport 'BAD;rm'='v'\n\
             exec 2>&1\necho {not_a_value} \"$BALE_ROLE\""
        );
        assert!(is_variable_name("_A1") && !is_variable_name("1A") && !is_variable_name(""));
    }

    #[test]
    fn readable_lines_quote_only_what_needs_it() {
        assert_eq!(
            readable_line([
                "bale",
                "install",
                "--hosts=10.0.0.1,10.0.0.2",
                "a b",
                "",
                "it's"
            ]),
            r"bale install --hosts=10.0.0.1,10.0.0.2 'a b' '' 'it'\''s'"
        );
    }

    #[test]
    fn template_mistakes_are_named() {
        let v = |names: &[&'static str]| -> Vec<(&'static str, String)> {
            names.iter().map(|n| (*n, String::new())).collect()
        };
        assert!(template_problems("cat {p} # it's {p}\nx", &v(&["p"])).is_empty());
        assert!(template_problems("awk '{print $4}' {p}; echo ${HOME}", &v(&["p"])).is_empty());
        assert!(template_problems("echo \"a\\\"b\" {p}", &v(&["p"])).is_empty());
        let p = |t: &str, names: &[&'static str]| template_problems(t, &v(names)).join("; ");
        assert_eq!(p("cat \"{p}\"", &["p"]), "{p} inside quotes");
        assert_eq!(p("bash -c 'echo {p}'", &["p"]), "{p} inside quotes");
        assert_eq!(p("cat ${p}", &["p"]), "{p} written as ${p}");
        assert_eq!(
            p("cat {q}", &["p"]),
            "{p} given a value but not in the template; {q} has no value"
        );
        assert_eq!(p("cat {p}", &["p", "p"]), "{p} given two values");
    }
}
