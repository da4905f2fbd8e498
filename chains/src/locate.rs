//! Best-effort line numbers for mapping keys, found in the YAML source text.
//!
//! `serde_yaml::Value` has no positions, and its deserializer reports only the first error,
//! so to point at *every* problem we look the keys up in the text. A key is found when a
//! line, after its indentation, starts with the key (plain, `"double"` or `'single'`
//! quoted) followed by `:`. A child key is searched only inside its parent's block (the
//! following lines indented deeper than the parent) and only at the block's own
//! indentation, so an adapter called `url` is not confused with a `url:` inside another
//! adapter. When the child is not on a line of its own (flow style such as
//! `"POST /x": {pre: [a]}`) the parent's line is the answer: the problem is on that line.

/// Lines are 1-based everywhere in this module's API.
pub(super) struct Locator<'a> {
    lines: Vec<&'a str>,
}

impl<'a> Locator<'a> {
    pub(super) fn new(src: &'a str) -> Locator<'a> {
        Locator {
            lines: src.lines().collect(),
        }
    }

    /// The line of a key of the top-level mapping.
    pub(super) fn top_key(&self, key: &str) -> Option<usize> {
        let root = self
            .lines
            .iter()
            .position(|l| is_content(l) && !is_document_marker(l))?;
        let indent = indent_of(self.lines[root]);
        (root..self.lines.len())
            .find(|&i| {
                is_content(self.lines[i])
                    && indent_of(self.lines[i]) == indent
                    && key_at(self.lines[i], key)
            })
            .map(|i| i + 1)
    }

    /// The line of `key` in the mapping that is the value of the key on line `parent`;
    /// `parent` itself if the key is not on a line of its own.
    pub(super) fn child_key(&self, parent: Option<usize>, key: &str) -> Option<usize> {
        let parent = parent?;
        let parent_indent = indent_of(self.lines.get(parent.checked_sub(1)?)?);
        let mut child_indent = None;
        for (i, line) in self.lines.iter().enumerate().skip(parent) {
            if !is_content(line) {
                continue;
            }
            let indent = indent_of(line);
            if indent <= parent_indent {
                break;
            }
            if indent == *child_indent.get_or_insert(indent) && key_at(line, key) {
                return Some(i + 1);
            }
        }
        Some(parent)
    }
}

fn is_content(line: &str) -> bool {
    let t = line.trim();
    !t.is_empty() && !t.starts_with('#')
}

fn is_document_marker(line: &str) -> bool {
    line.starts_with("---") || line.starts_with('%')
}

fn indent_of(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Whether the line (after indentation) starts with `key` as a mapping key.
fn key_at(line: &str, key: &str) -> bool {
    let text = line.trim_start_matches(' ');
    let double = format!("\"{}\"", key.replace('\\', "\\\\").replace('"', "\\\""));
    let single = format!("'{}'", key.replace('\'', "''"));
    [key, double.as_str(), single.as_str()]
        .iter()
        .filter_map(|form| text.strip_prefix(form))
        .any(|rest| rest.trim_start_matches([' ', '\t']).starts_with(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SRC: &str = "\
# comment
version: 1
endpoints:
  \"POST /*/containers/create\":
    pre: [weave]
  'DELETE /*/containers/*': {post: [weave]}
adapters:
  url:
    url: http://x/
  weave: http://weave/
";

    #[test]
    fn finds_top_level_keys() {
        let loc = Locator::new(SRC);
        assert_eq!(loc.top_key("version"), Some(2));
        assert_eq!(loc.top_key("endpoints"), Some(3));
        assert_eq!(loc.top_key("adapters"), Some(7));
        assert_eq!(loc.top_key("max_buffer"), None);
    }

    #[test]
    fn finds_quoted_children_and_grandchildren() {
        let loc = Locator::new(SRC);
        let create = loc.child_key(loc.top_key("endpoints"), "POST /*/containers/create");
        assert_eq!(create, Some(4));
        assert_eq!(loc.child_key(create, "pre"), Some(5));
        assert_eq!(
            loc.child_key(loc.top_key("endpoints"), "DELETE /*/containers/*"),
            Some(6)
        );
    }

    #[test]
    fn flow_style_falls_back_to_the_parent_line() {
        let loc = Locator::new(SRC);
        let delete = loc.child_key(loc.top_key("endpoints"), "DELETE /*/containers/*");
        assert_eq!(loc.child_key(delete, "post"), Some(6));
    }

    #[test]
    fn searches_only_at_the_block_indentation() {
        let loc = Locator::new(SRC);
        let adapters = loc.top_key("adapters");
        assert_eq!(loc.child_key(adapters, "url"), Some(8));
        assert_eq!(loc.child_key(adapters, "weave"), Some(10));
        assert_eq!(
            loc.child_key(loc.child_key(adapters, "url"), "url"),
            Some(9)
        );
    }

    #[test]
    fn a_key_prefix_is_not_the_key() {
        assert!(key_at("  pre: [a]", "pre"));
        assert!(key_at("pre : [a]", "pre"));
        assert!(!key_at("  prefix: [a]", "pre"));
        assert!(!key_at("  # pre: [a]", "pre"));
    }
}
