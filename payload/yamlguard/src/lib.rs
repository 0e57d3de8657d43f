//! A cheap, linear pre-scan of YAML text that bounds its size and its nesting depth before
//! `serde_yaml` (libyaml underneath) sees it.
//!
//! libyaml checks every token against the whole stack of open collections, so a document
//! nested N deep costs N² before serde_yaml's own recursion limit (128) refuses it: 200 KB of
//! `[[[[…` took 18–25 s. This scan walks the text once and counts what opens a level:
//! - block collections, by indentation (a deeper line opens a level, and each `- ` or `? ` at
//!   the start of a line opens one more, as in `- - - x`);
//! - flow collections, `[` and `{` that begin a node, and every bracket inside them.
//!
//! It skips comments, quoted scalars and block scalars (`|`, `>`), whose text is not
//! structure. It never under-counts what a parser would nest; it may over-count a little
//! (a plain scalar continued on deeper lines counts those lines), which only matters at a
//! depth real files never reach.

/// Bounds a YAML text must stay within.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of text.
    pub max_bytes: usize,
    /// Most levels of nested collections (block and flow together).
    pub max_depth: usize,
}

/// serde_yaml refuses values nested deeper than 128; nothing legitimate comes close.
pub const MAX_DEPTH: usize = 128;

impl Limits {
    /// Clusterfiles and plugin documents: hand-written, small.
    pub const CONFIG: Limits = Limits {
        max_bytes: 4 << 20,
        max_depth: MAX_DEPTH,
    };
    /// Kubernetes manifests and charts' output, which can be large (CRDs).
    pub const MANIFEST: Limits = Limits {
        max_bytes: 64 << 20,
        max_depth: MAX_DEPTH,
    };
}

/// Why a text was refused, with the line where the limit was crossed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GuardError {
    #[error("{size} bytes, more than the {max} bytes a YAML file may have here")]
    TooBig { size: usize, max: usize },
    #[error(
        "line {line}: nested more than {max} levels deep; flatten the document (no real \
         Clusterfile, plugin or manifest nests this deep)"
    )]
    TooDeep { line: usize, max: usize },
}

/// Checks `text` against `limits` in one pass.
pub fn check(text: &str, limits: Limits) -> Result<(), GuardError> {
    if text.len() > limits.max_bytes {
        return Err(GuardError::TooBig {
            size: text.len(),
            max: limits.max_bytes,
        });
    }
    Scanner::new(limits.max_depth).run(text)
}

/// Where a quoted scalar that spans lines left off.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Quote {
    None,
    Single,
    Double,
}

struct Scanner {
    max: usize,
    /// Columns of the open block collections, innermost last.
    block: Vec<usize>,
    /// Open flow collections.
    flow: usize,
    quote: Quote,
    /// The indentation of the line that started a block scalar whose lines are being skipped.
    block_scalar: Option<usize>,
}

impl Scanner {
    fn new(max: usize) -> Self {
        Scanner {
            max,
            block: Vec::new(),
            flow: 0,
            quote: Quote::None,
            block_scalar: None,
        }
    }

    fn run(mut self, text: &str) -> Result<(), GuardError> {
        for (i, line) in text.split('\n').enumerate() {
            self.line(line.as_bytes(), i + 1)?;
        }
        Ok(())
    }

    fn too_deep(&self, line: usize) -> Result<(), GuardError> {
        if self.block.len() + self.flow > self.max {
            return Err(GuardError::TooDeep {
                line,
                max: self.max,
            });
        }
        Ok(())
    }

    fn line(&mut self, l: &[u8], no: usize) -> Result<(), GuardError> {
        let indent = l.iter().take_while(|&&b| b == b' ').count();
        let blank = l[indent..]
            .iter()
            .all(|b| matches!(b, b' ' | b'\t' | b'\r'));
        if let Some(parent) = self.block_scalar {
            if blank || indent > parent {
                return Ok(());
            }
            self.block_scalar = None;
        }
        let mut i = 0;
        if self.quote == Quote::None && self.flow == 0 {
            if blank || l[indent] == b'#' {
                return Ok(());
            }
            if l.starts_with(b"---") || l.starts_with(b"...") {
                self.block.clear();
                i = 3;
            } else {
                // A line opens a block level when it is deeper than the innermost one.
                while self.block.last().is_some_and(|&c| c > indent) {
                    self.block.pop();
                }
                if self.block.last() != Some(&indent) {
                    self.block.push(indent);
                }
                i = indent;
                // `- - - x` and `? - x`: each indicator opens a collection of its own.
                while i < l.len()
                    && matches!(l.get(i), Some(b'-' | b'?'))
                    && matches!(l.get(i + 1), None | Some(b' ' | b'\t' | b'\r'))
                {
                    i += 1;
                    while matches!(l.get(i), Some(b' ' | b'\t')) {
                        i += 1;
                    }
                    if i < l.len() && !matches!(l[i], b'#' | b'\r') {
                        self.block.push(i);
                    }
                }
            }
            self.too_deep(no)?;
        }
        self.rest(l, i, indent, no)
    }

    /// Scans a line from `i` on: quotes, flow brackets, comments and block scalar headers.
    fn rest(&mut self, l: &[u8], mut i: usize, indent: usize, no: usize) -> Result<(), GuardError> {
        // Whether `i` is where a node may begin (a quote or bracket there is syntax, not text).
        let mut node_start = true;
        while i < l.len() {
            let b = l[i];
            match self.quote {
                Quote::Single => {
                    if b == b'\'' {
                        if l.get(i + 1) == Some(&b'\'') {
                            i += 2;
                            continue;
                        }
                        self.quote = Quote::None;
                        node_start = false;
                    }
                    i += 1;
                    continue;
                }
                Quote::Double => {
                    if b == b'\\' {
                        i += 2;
                        continue;
                    }
                    if b == b'"' {
                        self.quote = Quote::None;
                        node_start = false;
                    }
                    i += 1;
                    continue;
                }
                Quote::None => {}
            }
            match b {
                b' ' | b'\t' | b'\r' => {
                    i += 1;
                    // `#` after a blank starts a comment.
                    if l.get(i) == Some(&b'#') {
                        return Ok(());
                    }
                    continue;
                }
                b'#' if i == 0 => return Ok(()),
                b'\'' if node_start => self.quote = Quote::Single,
                b'"' if node_start => self.quote = Quote::Double,
                b'[' | b'{' if node_start || self.flow > 0 => {
                    self.flow += 1;
                    self.too_deep(no)?;
                    node_start = true;
                    i += 1;
                    continue;
                }
                b']' | b'}' if self.flow > 0 => {
                    self.flow -= 1;
                    node_start = false;
                    i += 1;
                    continue;
                }
                b',' if self.flow > 0 => {
                    node_start = true;
                    i += 1;
                    continue;
                }
                b':' | b'-' | b'?'
                    if matches!(l.get(i + 1), None | Some(b' ' | b'\t' | b'\r'))
                        || (self.flow > 0 && b == b':') =>
                {
                    node_start = true;
                    i += 1;
                    continue;
                }
                // Anchors and tags come before the node they name.
                b'&' | b'!' if node_start => {
                    while i < l.len() && !matches!(l[i], b' ' | b'\t' | b'\r') {
                        i += 1;
                    }
                    continue;
                }
                b'|' | b'>' if node_start && self.flow == 0 => {
                    self.block_scalar = Some(indent);
                    return Ok(());
                }
                _ => {}
            }
            node_start = false;
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth_ok(text: &str, max: usize) -> bool {
        check(
            text,
            Limits {
                max_bytes: usize::MAX,
                max_depth: max,
            },
        )
        .is_ok()
    }

    #[test]
    fn counts_block_levels_by_indentation_and_indicators() {
        let doc = "a:\n  b:\n    c: 1\n  d: 2\ne: 3\n";
        assert!(depth_ok(doc, 3));
        assert!(!depth_ok(doc, 2));
        assert!(depth_ok("- - - x\n", 4));
        assert!(!depth_ok("- - - x\n", 3));
        // siblings at one level do not add up
        let flat: String = (0..1000).map(|i| format!("k{i}: v\n")).collect();
        assert!(depth_ok(&flat, 1));
    }

    #[test]
    fn counts_flow_brackets_only_where_a_node_begins() {
        assert!(!depth_ok("a: [[[[1]]]]\n", 4));
        assert!(depth_ok("a: [[[[1]]]]\n", 5));
        assert!(!depth_ok("a: &x !!seq [[[1]]]\n", 3));
        // brackets inside plain and quoted scalars are text
        let text = "a: x[[[[[[\nb: 'it''s [[[[[['\nc: \"[[[[[[ \\\" [[[\"\nd: it's [[[[\n";
        assert!(depth_ok(text, 1), "{text}");
        // and so is everything after a comment
        assert!(depth_ok("a: 1 # [[[[[[[\n# {{{{{{{\n", 1));
    }

    #[test]
    fn block_scalars_are_text() {
        let text = "script: |\n  if x; then\n      deeper\n          deeper still\n  fi\nnext: 1\n";
        assert!(depth_ok(text, 1));
        let text = "- >-\n      [[[[[[[[\n- b\n";
        assert!(depth_ok(text, 2));
    }

    #[test]
    fn refuses_deep_and_big_input_fast() {
        let deep = format!("a: {}{}\n", "[".repeat(100_000), "]".repeat(100_000));
        let t = std::time::Instant::now();
        let e = check(&deep, Limits::CONFIG).unwrap_err();
        assert_eq!(
            e,
            GuardError::TooDeep {
                line: 1,
                max: MAX_DEPTH
            }
        );
        let stairs: String = (0..2_000)
            .map(|i| format!("{}k:\n", " ".repeat(i)))
            .collect();
        assert!(matches!(
            check(&stairs, Limits::MANIFEST),
            Err(GuardError::TooDeep { line: 129, .. })
        ));
        assert!(t.elapsed() < std::time::Duration::from_secs(1));
        let e = check(
            "a: 1\n",
            Limits {
                max_bytes: 3,
                max_depth: 10,
            },
        )
        .unwrap_err();
        assert!(e.to_string().contains("5 bytes"), "{e}");
    }

    #[test]
    fn real_documents_pass() {
        let cf = "apiVersion: sealer.io/v2\nkind: Cluster\nspec:\n  hosts:\n    - ips: [10.0.0.2, 10.0.0.3]\n      roles: [master]\n      ssh: {port: \"22\"}\n---\nkind: Plugin\nspec:\n  data: |\n    echo {{ x }} [\n";
        assert!(depth_ok(cf, 6));
    }
}
