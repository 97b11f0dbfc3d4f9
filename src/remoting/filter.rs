//! Tag filtering (rocketmq-remoting.md section 7.14): subscription building and the client-side
//! re-check of what the broker's hash-based filter let through.
//!
//! Brokers filter by the Java `String.hashCode` of the message tag, so hash collisions pass; the
//! client must compare the tag strings again. Expressions are normalised to `a||b` (no spaces)
//! because the Rust broker hashes the untrimmed parts (section 11.4 #4).

use crate::remoting::body::heartbeat::{ExpressionType, SubscriptionData};

/// The subscribe-all expression.
pub const SUB_ALL: &str = "*";

/// Java `String.hashCode`: `h = 31*h + u` over UTF-16 code units, wrapping in 32 bits.
pub fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, u| h.wrapping_mul(31).wrapping_add(i32::from(u)))
}

/// The tags of a tag expression: split on `||`, trimmed, empty parts dropped. Empty for `*`, for
/// an expression whose only tag is `*`, and for an empty expression (all mean "all").
pub fn parse_tags(expression: &str) -> Vec<String> {
    let e = expression.trim();
    if e.is_empty() || e == SUB_ALL {
        return Vec::new();
    }
    let mut tags: Vec<String> = Vec::new();
    for tag in e.split("||").map(str::trim).filter(|t| !t.is_empty()) {
        // Once each, as Java's tag set holds them.
        if !tags.iter().any(|t| t == tag) {
            tags.push(tag.to_owned());
        }
    }
    // `*||` (and `*||*`) would normalise to `*`; keep them meaning the same thing.
    if tags.len() == 1 && tags[0] == SUB_ALL {
        return Vec::new();
    }
    tags
}

/// The canonical form of a tag expression: tags joined by `||` without whitespace, or `*` when
/// the expression selects everything.
pub fn normalize_tag_expression(expression: &str) -> String {
    let tags = parse_tags(expression);
    if tags.is_empty() {
        SUB_ALL.to_owned()
    } else {
        tags.join("||")
    }
}

/// Builds the subscription of `topic` as Java's `FilterAPI.buildSubscriptionData` does, with a
/// normalised tag expression. SQL92 expressions are kept verbatim (trimmed) with no tags.
pub fn subscription(
    topic: &str,
    expression: &str,
    expression_type: ExpressionType,
    sub_version: i64,
) -> SubscriptionData {
    let (sub_string, tags_set) = match expression_type {
        ExpressionType::Tag => (normalize_tag_expression(expression), parse_tags(expression)),
        ExpressionType::Sql92 => (expression.trim().to_owned(), Vec::new()),
    };
    SubscriptionData {
        class_filter_mode: false,
        code_set: tags_set.iter().map(|t| java_hash(t)).collect(),
        expression_type,
        sub_string,
        sub_version,
        tags_set,
        topic: topic.to_owned(),
    }
}

/// Client-side re-check of a pulled message's `TAGS` against `sub`: a tag subscription with tags
/// keeps only messages whose tag equals one of them (untagged messages are dropped); `*` and
/// SQL92 subscriptions keep everything.
pub fn matches_tags(sub: &SubscriptionData, tags: Option<&str>) -> bool {
    if sub.class_filter_mode || sub.tags_set.is_empty() {
        return true;
    }
    tags.is_some_and(|t| sub.tags_set.iter().any(|s| s == t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn java_hash_matches_java() {
        assert_eq!(java_hash("TagA"), 2_598_919);
        assert_eq!(java_hash("TagB"), 2_598_920);
        assert_eq!(java_hash(""), 0);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE: exercises the wrap-around.
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        // Non-BMP: two surrogates 0xD83D 0xDE00.
        assert_eq!(java_hash("\u{1F600}"), 0xD83D * 31 + 0xDE00);
        assert_eq!(java_hash("é"), 0xE9);
    }

    #[test]
    fn expressions() {
        assert_eq!(parse_tags("TagA || TagB"), vec!["TagA", "TagB"]);
        assert_eq!(parse_tags(" a ||  || b||"), vec!["a", "b"]);
        assert!(parse_tags("*").is_empty());
        assert!(parse_tags("*||*").is_empty(), "as `*||`");
        assert_eq!(parse_tags("a || b||a"), ["a", "b"]);
        assert!(parse_tags("  ").is_empty());
        assert_eq!(normalize_tag_expression("TagA || TagB"), "TagA||TagB");
        assert_eq!(normalize_tag_expression(""), "*");
        assert_eq!(normalize_tag_expression(" * "), "*");
        assert_eq!(normalize_tag_expression("x"), "x");
    }

    #[test]
    fn builds_subscriptions() {
        let s = subscription("T1", "TagA || TagB", ExpressionType::Tag, 7);
        assert_eq!(s.sub_string, "TagA||TagB");
        assert_eq!(s.tags_set, vec!["TagA", "TagB"]);
        assert_eq!(s.code_set, vec![2_598_919, 2_598_920]);
        assert_eq!(s.sub_version, 7);
        assert_eq!(s.topic, "T1");
        let all = subscription("T1", "", ExpressionType::Tag, 0);
        assert_eq!(all.sub_string, "*");
        assert!(all.code_set.is_empty());
        let sql = subscription("T1", " a > 5 ", ExpressionType::Sql92, 0);
        assert_eq!(sql.sub_string, "a > 5");
        assert!(sql.tags_set.is_empty());
    }

    #[test]
    fn re_checks_tags() {
        let s = subscription("T", "A||B", ExpressionType::Tag, 0);
        assert!(matches_tags(&s, Some("A")));
        assert!(matches_tags(&s, Some("B")));
        assert!(!matches_tags(&s, Some("C")));
        assert!(!matches_tags(&s, Some("A ")));
        assert!(!matches_tags(&s, None));
        let all = subscription("T", "*", ExpressionType::Tag, 0);
        assert!(matches_tags(&all, None));
        assert!(matches_tags(&all, Some("x")));
        let sql = subscription("T", "a = 1", ExpressionType::Sql92, 0);
        assert!(matches_tags(&sql, None));
    }

    proptest! {
        /// Reference definition on explicit UTF-16 units with i64 arithmetic reduced mod 2^32.
        #[test]
        fn java_hash_is_the_polynomial(s in ".{0,30}") {
            let mut h: i64 = 0;
            for u in s.encode_utf16() {
                h = (h * 31 + i64::from(u)).rem_euclid(1 << 32);
            }
            prop_assert_eq!(java_hash(&s), h as u32 as i32);
        }

        #[test]
        fn normalisation_is_idempotent(
            parts in prop::collection::vec(("[a-zA-Z *]{0,6}", "[ ]{0,2}\\|\\|[ ]{0,2}"), 0..5),
        ) {
            let e: String = parts.iter().flat_map(|(t, sep)| [t.as_str(), sep.as_str()]).collect();
            let n = normalize_tag_expression(&e);
            prop_assert_eq!(normalize_tag_expression(&n), n.clone());
            prop_assert!(!n.contains(" ||") && !n.contains("|| ") && n.trim() == n);
            prop_assert_eq!(parse_tags(&n), parse_tags(&e));
        }
    }
}
