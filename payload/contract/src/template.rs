//! `*.tmpl` rendering with the bundle's ENV values: the discovery renders `*.yaml.tmpl`
//! manifests with the Kubefile's ENV to find their images, and the install renders every
//! `*.tmpl` file of the tree with the install-time environment (sealer's meaning: `a.b.tmpl`
//! becomes `a.b`).
//!
//! Supports the two spellings users bring from sealer and from shell-style
//! configs: `{{ .Key }}` (with `{{-`/`-}}` whitespace trimming) and `${Key}` /
//! `${Key:-default}`. A bare `$Key` is left alone so that shell scripts can be
//! templates too; `$${` writes a literal `${`.

use std::collections::BTreeMap;

/// Why a template could not be rendered; always names the file and line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error(
        "{file}:{line}: no value for {key:?}; set it with ENV {key}=... in the Kubefile \
         (or at install time), or give a default: ${{{key}:-default}}"
    )]
    MissingKey {
        file: String,
        line: usize,
        key: String,
    },
    #[error("{file}:{line}: {message}")]
    Syntax {
        file: String,
        line: usize,
        message: String,
    },
}

/// A shell variable name: a letter or `_`, then letters, digits and `_`.
pub fn is_var_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Renders `text` (the contents of template `file`) with `env`.
pub fn render_template(
    file: &str,
    text: &str,
    env: &BTreeMap<String, String>,
) -> Result<String, TemplateError> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    // Offset of `rest` in `text`, to report line numbers.
    let mut pos = 0usize;
    let line_at = |offset: usize| text[..offset].matches('\n').count() + 1;
    let syntax = |offset: usize, message: String| TemplateError::Syntax {
        file: file.to_string(),
        line: line_at(offset),
        message,
    };
    let missing = |offset: usize, key: &str| TemplateError::MissingKey {
        file: file.to_string(),
        line: line_at(offset),
        key: key.to_string(),
    };

    loop {
        let next_action = rest.find("{{");
        let next_dollar = rest.find("${");
        let at = match (next_action, next_dollar) {
            (None, None) => {
                out.push_str(rest);
                return Ok(out);
            }
            (Some(a), Some(d)) => a.min(d),
            (Some(a), None) => a,
            (None, Some(d)) => d,
        };

        if Some(at) == next_dollar {
            // `$${` is the escape for a literal `${`.
            if at > 0 && rest.as_bytes()[at - 1] == b'$' {
                out.push_str(&rest[..at - 1]);
                out.push_str("${");
                pos += at + 2;
                rest = &rest[at + 2..];
                continue;
            }
            out.push_str(&rest[..at]);
            let abs = pos + at;
            let body_start = at + 2;
            let Some(close) = rest[body_start..].find('}') else {
                return Err(syntax(
                    abs,
                    "\"${\" is not closed with \"}\" (write $${ for a literal ${)".into(),
                ));
            };
            let body = &rest[body_start..body_start + close];
            let (key, default) = match body.split_once(":-") {
                Some((k, d)) => (k, Some(d)),
                None => (body, None),
            };
            if !is_var_name(key) {
                return Err(syntax(
                    abs,
                    format!("${{{body}}} is not a template variable; write ${{Key}} or ${{Key:-default}}, or $${{ for a literal ${{"),
                ));
            }
            match (env.get(key), default) {
                (Some(v), Some(d)) if v.is_empty() => out.push_str(d),
                (Some(v), _) => out.push_str(v),
                (None, Some(d)) => out.push_str(d),
                (None, None) => return Err(missing(abs, key)),
            }
            let consumed = body_start + close + 1;
            pos += consumed;
            rest = &rest[consumed..];
            continue;
        }

        let abs = pos + at;
        let Some(close) = rest[at + 2..].find("}}") else {
            return Err(syntax(abs, "\"{{\" is not closed with \"}}\"".into()));
        };
        let mut action = &rest[at + 2..at + 2 + close];
        let mut before = &rest[..at];
        let consumed = at + 2 + close + 2;
        let mut after_trim = false;
        if let Some(a) = action.strip_prefix('-') {
            before = before.trim_end();
            action = a;
        }
        if let Some(a) = action.strip_suffix('-') {
            after_trim = true;
            action = a;
        }
        out.push_str(before);
        let inner = action.trim();
        let key = inner.strip_prefix('.').filter(|k| is_var_name(k));
        let Some(key) = key else {
            return Err(syntax(
                abs,
                format!("unsupported template action {{{{{action}}}}}: only {{{{ .Key }}}} is supported"),
            ));
        };
        match env.get(key) {
            Some(v) => out.push_str(v),
            None => return Err(missing(abs, key)),
        }
        pos += consumed;
        rest = &rest[consumed..];
        if after_trim {
            let trimmed = rest.trim_start();
            pos += rest.len() - trimmed.len();
            rest = trimmed;
        }
    }
}
