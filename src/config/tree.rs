//! The untyped layer tree (figment `Dict`s) and its provenance: merging layers key by key while
//! recording which layer wrote every key, and finding a key's line in YAML text.
//!
//! Invariant: after every merge step, each key present in the tree has a provenance entry for
//! itself or for an ancestor, pointing at the layer whose value is now in the tree.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use figment::value::{Dict, Value};

use super::error::Origin;
use super::values::Profile;

/// A key path: map keys and list indices (as decimal strings).
pub(crate) type Path = Vec<String>;

/// Builds a [`Path`] from anything printable.
macro_rules! key_path {
    ($($seg:expr),* $(,)?) => {
        vec![$($seg.to_string()),*]
    };
}
pub(crate) use key_path;

/// Displays a path as `subscriptions[0].webhook.url`.
pub(crate) fn display_path(path: &[String]) -> String {
    let mut out = String::new();
    for seg in path {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

/// A layer that can write keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layer {
    File,
    Profile(Profile),
    Env(String),
}

#[derive(Debug, Clone)]
struct Written {
    layer: Layer,
    /// The key as written in that layer.
    key: Path,
}

/// Which layer wrote each key of the merged tree, plus what is needed to turn that into an
/// [`Origin`] with a line number.
#[derive(Debug, Clone, Default)]
pub(crate) struct Provenance {
    written: BTreeMap<Path, Written>,
    file: Option<Arc<(PathBuf, LineIndex)>>,
    profile: Option<Arc<LineIndex>>,
}

impl Provenance {
    pub(crate) fn new(file: Option<(PathBuf, LineIndex)>, profile: Option<LineIndex>) -> Self {
        Self {
            written: BTreeMap::new(),
            file: file.map(Arc::new),
            profile: profile.map(Arc::new),
        }
    }

    fn remove_under(&mut self, path: &[String]) {
        self.written.retain(|k, _| !k.starts_with(path));
    }

    fn record(&mut self, path: Path, written: Path, layer: &Layer) {
        self.written.insert(
            path,
            Written {
                layer: layer.clone(),
                key: written,
            },
        );
    }

    /// Records `value` and all its descendants.
    fn record_tree(&mut self, path: &[String], written: &[String], value: &Value, layer: &Layer) {
        self.record(path.to_vec(), written.to_vec(), layer);
        let children: Vec<(String, &Value)> = match value {
            Value::Dict(_, dict) => dict.iter().map(|(k, v)| (k.clone(), v)).collect(),
            Value::Array(_, items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| (i.to_string(), v))
                .collect(),
            _ => Vec::new(),
        };
        for (key, child) in children {
            let mut p = path.to_vec();
            p.push(key.clone());
            let mut w = written.to_vec();
            w.push(key);
            self.record_tree(&p, &w, child, layer);
        }
    }

    /// Records `layer` as the writer of `path` (and everything under it), dropping older entries.
    pub(crate) fn assign(&mut self, path: &[String], value: &Value, layer: &Layer) {
        self.remove_under(path);
        self.record_tree(path, path, value, layer);
    }

    /// Copies every entry under `from` to the same relative key under `to`.
    pub(crate) fn copy(&mut self, from: &[String], to: &[String]) {
        let copies: Vec<(Path, Written)> = self
            .written
            .iter()
            .filter(|(k, _)| k.starts_with(from) && k.len() > from.len())
            .map(|(k, w)| {
                let mut target = to.to_vec();
                target.extend_from_slice(&k[from.len()..]);
                (target, w.clone())
            })
            .collect();
        self.written.extend(copies);
    }

    /// Whether a layer wrote `path` itself, not only an ancestor of it.
    pub(crate) fn is_written(&self, path: &[String]) -> bool {
        self.lookup(path).is_some_and(|(_, n)| n == path.len())
    }

    /// The layer that wrote `path` (or its closest written ancestor).
    pub(crate) fn layer(&self, path: &[String]) -> Option<&Layer> {
        self.lookup(path).map(|(w, _)| &w.layer)
    }

    fn lookup(&self, path: &[String]) -> Option<(&Written, usize)> {
        (0..=path.len())
            .rev()
            .find_map(|n| self.written.get(&path[..n]).map(|w| (w, n)))
    }

    /// The key as the user wrote it, for messages about keys the user invented.
    pub(crate) fn written_key(&self, path: &[String]) -> Path {
        match self.lookup(path) {
            Some((w, n)) => {
                let mut key = w.key.clone();
                key.extend_from_slice(&path[n..]);
                key
            }
            None => path.to_vec(),
        }
    }

    /// Where the value at `path` came from. A key nobody set is `Default`, except inside a
    /// mapping written in the file, where the mapping's line is the useful place to point at
    /// (a profile or variable that set a sibling key says nothing about this one).
    pub(crate) fn origin(&self, path: &[String]) -> Origin {
        let Some((w, n)) = self.lookup(path) else {
            return Origin::Default;
        };
        if n < path.len() && w.layer != Layer::File {
            return Origin::Default;
        }
        let mut written = w.key.clone();
        written.extend_from_slice(&path[n..]);
        let renamed = (written != path).then(|| display_path(&written));
        match &w.layer {
            Layer::Env(variable) => Origin::Env {
                variable: variable.clone(),
            },
            Layer::File => match &self.file {
                Some(file) => Origin::File {
                    path: file.0.clone(),
                    line: file.1.line(&written),
                    written: renamed,
                },
                None => Origin::Default,
            },
            Layer::Profile(profile) => Origin::Profile {
                profile: *profile,
                line: self.profile.as_ref().and_then(|idx| idx.line(&written)),
                written: renamed,
            },
        }
    }
}

/// Merges `over` into `base` key by key (maps recursively; anything else replaces), recording
/// `layer` as the writer of every key it sets. A null over a map keeps the map (an empty
/// `webhook:` line means "nothing here", not "erase the defaults").
pub(crate) fn overlay(
    base: &mut Dict,
    over: &Dict,
    at: &[String],
    written_at: &[String],
    layer: &Layer,
    prov: &mut Provenance,
) {
    for (key, value) in over {
        let mut path = at.to_vec();
        path.push(key.clone());
        let mut written = written_at.to_vec();
        written.push(key.clone());
        match (base.get_mut(key), value) {
            (Some(Value::Dict(_, inner)), Value::Dict(_, over_inner)) => {
                prov.record(path.clone(), written.clone(), layer);
                overlay(inner, over_inner, &path, &written, layer, prov);
            }
            (Some(Value::Dict(..)), Value::Empty(..)) => {}
            _ => {
                prov.remove_under(&path);
                prov.record_tree(&path, &written, value, layer);
                base.insert(key.clone(), value.clone());
            }
        }
    }
}

/// Sets one key (creating parent maps; a non-map parent is replaced), recording `layer`.
pub(crate) fn set_path(
    tree: &mut Dict,
    path: &[String],
    value: Value,
    layer: &Layer,
    prov: &mut Provenance,
) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut dict = tree;
    for (depth, seg) in parents.iter().enumerate() {
        let entry = dict
            .entry(seg.clone())
            .or_insert_with(|| Value::from(Dict::new()));
        if !matches!(entry, Value::Dict(..)) {
            prov.remove_under(&path[..=depth]);
            *entry = Value::from(Dict::new());
        }
        let Value::Dict(_, inner) = entry else {
            return;
        };
        dict = inner;
    }
    prov.remove_under(path);
    prov.record_tree(path, path, &value, layer);
    dict.insert(last.clone(), value);
}

/// The value at `path`, following map keys and list indices.
pub(crate) fn value_at<'a>(tree: &'a Dict, path: &[String]) -> Option<&'a Value> {
    let (first, rest) = path.split_first()?;
    let mut value = tree.get(first)?;
    for seg in rest {
        value = match value {
            Value::Dict(_, dict) => dict.get(seg)?,
            Value::Array(_, items) => items.get(seg.parse::<usize>().ok()?)?,
            _ => return None,
        };
    }
    Some(value)
}

/// A short rendering of a value for error messages.
pub(crate) fn render_value(value: Option<&Value>) -> String {
    match value {
        None => "(not set)".to_owned(),
        Some(Value::String(_, s)) => format!("{s:?}"),
        Some(Value::Char(_, c)) => format!("{c:?}"),
        Some(Value::Bool(_, b)) => b.to_string(),
        Some(Value::Num(_, n)) => match (n.to_u128(), n.to_i128(), n.to_f64()) {
            (Some(u), _, _) => u.to_string(),
            (_, Some(i), _) => i.to_string(),
            (_, _, Some(f)) => f.to_string(),
            _ => "(number)".to_owned(),
        },
        Some(Value::Empty(..)) => "null".to_owned(),
        Some(Value::Dict(..)) => "(a mapping)".to_owned(),
        Some(Value::Array(..)) => "(a list)".to_owned(),
    }
}

// === impl LineIndex ===

/// Line numbers of the keys of a block-style YAML text, found by indentation (flow style
/// `{a: 1}` maps are attributed to the line of their parent key). Also notices a key written
/// twice in one mapping, which YAML parsers silently resolve to the last one.
#[derive(Debug, Clone, Default)]
pub(crate) struct LineIndex {
    lines: HashMap<Path, usize>,
    duplicates: Vec<(Path, usize, usize)>,
}

#[derive(Debug)]
struct Frame {
    indent: usize,
    item: bool,
    path: Path,
}

impl LineIndex {
    pub(crate) fn new(text: &str) -> Self {
        let mut index = Self::default();
        let mut stack: Vec<Frame> = Vec::new();
        let mut counters: HashMap<Path, usize> = HashMap::new();
        let mut block_scalar: Option<usize> = None;
        for (n, raw) in text.lines().enumerate() {
            let line_no = n + 1;
            let indent = raw.len() - raw.trim_start_matches(' ').len();
            let content = strip_comment(raw.trim());
            if content.is_empty() || content == "---" || content == "..." {
                continue;
            }
            if let Some(scalar_indent) = block_scalar {
                if indent > scalar_indent {
                    continue;
                }
                block_scalar = None;
            }
            let mut indent = indent;
            let mut rest = content;
            // List items: `- ` at `indent`, possibly nested (`- - a`).
            while rest == "-" || rest.starts_with("- ") {
                while stack
                    .last()
                    .is_some_and(|f| f.indent > indent || (f.indent == indent && f.item))
                {
                    stack.pop();
                }
                let parent = stack.last().map(|f| f.path.clone()).unwrap_or_default();
                let counter = counters.entry(parent.clone()).or_insert(0);
                let mut path = parent;
                path.push(counter.to_string());
                *counter += 1;
                index.lines.entry(path.clone()).or_insert(line_no);
                stack.push(Frame {
                    indent,
                    item: true,
                    path,
                });
                let after = rest[1..].trim_start_matches(' ');
                indent += rest.len() - after.len();
                rest = after;
            }
            let Some((key, value)) = split_key(rest) else {
                continue;
            };
            while stack.last().is_some_and(|f| f.indent >= indent) {
                stack.pop();
            }
            let mut path = stack.last().map(|f| f.path.clone()).unwrap_or_default();
            path.push(key);
            if let Some(first) = index.lines.get(&path) {
                index.duplicates.push((path.clone(), *first, line_no));
            } else {
                index.lines.insert(path.clone(), line_no);
            }
            if value.starts_with('|') || value.starts_with('>') {
                block_scalar = Some(indent);
            }
            stack.push(Frame {
                indent,
                item: false,
                path,
            });
        }
        index
    }

    /// The line of `path`, or of its closest ancestor that has one.
    pub(crate) fn line(&self, path: &[String]) -> Option<usize> {
        (1..=path.len())
            .rev()
            .find_map(|n| self.lines.get(&path[..n]).copied())
    }

    /// Keys written twice in one mapping: (key, first line, repeated line).
    pub(crate) fn duplicates(&self) -> &[(Path, usize, usize)] {
        &self.duplicates
    }
}

/// Drops a trailing `# comment` (a `#` at the start or after whitespace, outside quotes).
fn strip_comment(line: &str) -> &str {
    let mut quote: Option<char> = None;
    let mut prev_space = true;
    for (i, c) in line.char_indices() {
        match quote {
            Some(q) if c == q => quote = None,
            Some(_) => {}
            None if c == '\'' || c == '"' => quote = Some(c),
            None if c == '#' && prev_space => return line[..i].trim_end(),
            None => {}
        }
        prev_space = c.is_whitespace();
    }
    line
}

/// Splits `key: value` / `key:`; `None` for lines that are not a mapping key.
fn split_key(content: &str) -> Option<(String, &str)> {
    let (key, value) = if let Some(quoted) = content.strip_prefix('"') {
        let end = quoted.find('"')?;
        let after = quoted[end + 1..].strip_prefix(':')?;
        (quoted[..end].to_owned(), after)
    } else if let Some(quoted) = content.strip_prefix('\'') {
        let end = quoted.find('\'')?;
        let after = quoted[end + 1..].strip_prefix(':')?;
        (quoted[..end].to_owned(), after)
    } else {
        let mut split = None;
        for (i, c) in content.char_indices() {
            if c == ':' {
                let next = content[i + 1..].chars().next();
                if next.is_none() || next.is_some_and(char::is_whitespace) {
                    split = Some(i);
                    break;
                }
            }
            if matches!(c, '{' | '[' | '"' | '\'') {
                return None;
            }
        }
        let i = split?;
        (content[..i].trim_end().to_owned(), &content[i + 1..])
    };
    if !(value.is_empty() || value.starts_with(char::is_whitespace)) {
        return None;
    }
    Some((key, value.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const YAML: &str = "\
# comment
namesrv_addr: \"a:1\"   # trailing
client:
  tls:
    enabled: true
subscriptions:
- group: g0
  topic: t0
  webhook:
    url: http://x
    headers: {a: b}
- group: g1
  topic: \"t:1\"
  note: |
    not: a key
  webhook: {url: http://y}
profile: low_latency
";

    fn p(s: &str) -> Path {
        s.split('.').map(str::to_owned).collect()
    }

    #[test]
    fn finds_lines_of_nested_keys_and_list_items() {
        let idx = LineIndex::new(YAML);
        assert_eq!(idx.line(&p("namesrv_addr")), Some(2));
        assert_eq!(idx.line(&p("client.tls.enabled")), Some(5));
        assert_eq!(idx.line(&p("subscriptions.0")), Some(7));
        assert_eq!(idx.line(&p("subscriptions.0.group")), Some(7));
        assert_eq!(idx.line(&p("subscriptions.0.webhook.url")), Some(10));
        assert_eq!(idx.line(&p("subscriptions.1")), Some(12));
        assert_eq!(idx.line(&p("subscriptions.1.topic")), Some(13));
        assert_eq!(idx.line(&p("subscriptions.1.webhook.url")), Some(16));
        // Inside a block scalar: attributed to the scalar's key.
        assert_eq!(idx.line(&p("subscriptions.1.note.not")), Some(14));
        assert_eq!(idx.line(&p("profile")), Some(17));
        assert_eq!(idx.line(&p("nothing")), None);
        assert!(idx.duplicates().is_empty());
    }

    #[test]
    fn indented_lists_and_duplicates() {
        let idx = LineIndex::new("subs:\n  - a: 1\n    b: 2\n  - a: 3\n    a: 4\n");
        assert_eq!(idx.line(&p("subs.0.b")), Some(3));
        assert_eq!(idx.line(&p("subs.1.a")), Some(4));
        assert_eq!(idx.duplicates(), [(p("subs.1.a"), 4, 5)]);
    }

    #[test]
    fn paths_display_with_indices() {
        assert_eq!(
            display_path(&p("subscriptions.0.webhook.url")),
            "subscriptions[0].webhook.url"
        );
        assert_eq!(display_path(&p("a")), "a");
    }

    #[test]
    fn overlay_records_the_winning_layer() {
        let mut prov = Provenance::default();
        let mut base = Dict::new();
        let mut inner = Dict::new();
        inner.insert("x".into(), Value::from(1u32));
        inner.insert("y".into(), Value::from(2u32));
        let mut first = Dict::new();
        first.insert("m".into(), Value::from(inner));
        overlay(&mut base, &first, &[], &[], &Layer::File, &mut prov);
        set_path(
            &mut base,
            &p("m.y"),
            Value::from("3"),
            &Layer::Env("V".into()),
            &mut prov,
        );
        assert_eq!(prov.layer(&p("m.x")), Some(&Layer::File));
        assert_eq!(prov.layer(&p("m.y")), Some(&Layer::Env("V".into())));
        assert_eq!(render_value(value_at(&base, &p("m.y"))), "\"3\"");
        assert_eq!(render_value(value_at(&base, &p("m.x"))), "1");
        assert_eq!(render_value(value_at(&base, &p("m.z"))), "(not set)");
    }
}
