//! Redis's glob-style pattern matching (`stringmatchlen` in `util.c`), for KEYS and SCAN MATCH
//! patterns that the proxy has to apply itself (to client key names that differ from stored
//! names).
//!
//! `*` any run, `?` any byte, `[abc]`, `[^abc]`, `[a-z]` classes, `\x` a literal `x`.

/// True if `string` matches the glob `pattern`, as Redis matches it (case-sensitive).
pub fn matches(pattern: &[u8], string: &[u8]) -> bool {
    match_from(pattern, string, 0, false)
}

/// True if `pattern` matches some string that starts with `prefix` (the prefix is consumed
/// and what is left of the pattern can match something after it). Used to tell whether a
/// PSUBSCRIBE pattern can receive keyspace notifications (`__keyspace@...`).
pub fn may_match_with_prefix(pattern: &[u8], prefix: &[u8]) -> bool {
    match_from(pattern, prefix, 0, true)
}

/// `open_end`: the string may go on after `s`, so running out of it is a match.
fn match_from(mut p: &[u8], mut s: &[u8], depth: usize, open_end: bool) -> bool {
    // Redis bounds recursion the same way (it gives up past 1000 nested stars).
    if depth > 1000 {
        return false;
    }
    while let Some(&c) = p.first() {
        if open_end && s.is_empty() {
            return true;
        }
        match c {
            b'*' => {
                while p.get(1) == Some(&b'*') {
                    p = &p[1..];
                }
                if p.len() == 1 {
                    return true;
                }
                for i in 0..=s.len() {
                    if match_from(&p[1..], &s[i..], depth + 1, open_end) {
                        return true;
                    }
                }
                return false;
            }
            b'?' => {
                if s.is_empty() {
                    return false;
                }
                s = &s[1..];
            }
            b'[' => {
                let Some(&ch) = s.first() else {
                    return false;
                };
                p = &p[1..];
                let not = p.first() == Some(&b'^');
                if not {
                    p = &p[1..];
                }
                let mut matched = false;
                loop {
                    match p.first() {
                        None => {
                            // Unterminated class: Redis treats the end as closing it.
                            break;
                        }
                        Some(b'\\') if p.len() >= 2 => {
                            p = &p[1..];
                            if p[0] == ch {
                                matched = true;
                            }
                        }
                        Some(b']') => break,
                        Some(&lo) if p.len() >= 3 && p[1] == b'-' => {
                            let hi = p[2];
                            let (lo, hi) = if lo > hi { (hi, lo) } else { (lo, hi) };
                            if (lo..=hi).contains(&ch) {
                                matched = true;
                            }
                            p = &p[2..];
                        }
                        Some(&x) => {
                            if x == ch {
                                matched = true;
                            }
                        }
                    }
                    p = &p[1..];
                }
                if not {
                    matched = !matched;
                }
                if !matched {
                    return false;
                }
                s = &s[1..];
                if p.is_empty() {
                    return s.is_empty();
                }
            }
            b'\\' if p.len() >= 2 => {
                p = &p[1..];
                if s.first() != p.first() {
                    return false;
                }
                s = &s[1..];
            }
            _ => {
                if s.first() != Some(&c) {
                    return false;
                }
                s = &s[1..];
            }
        }
        p = &p[1..];
        if s.is_empty() {
            if open_end {
                return true;
            }
            while p.first() == Some(&b'*') {
                p = &p[1..];
            }
            break;
        }
    }
    p.is_empty() && s.is_empty()
}

#[cfg(test)]
mod tests {
    use super::{matches, may_match_with_prefix};

    #[test]
    fn patterns_that_can_match_a_prefix() {
        let prefix = b"__keyspace@";
        for p in [
            "*",
            "__key*",
            "__keyspace@0__:*",
            "__keyspace@*__:user:*",
            "_?keys*",
            "[_]_key*",
            "*space@*",
            "__keyspace@",
        ] {
            assert!(may_match_with_prefix(p.as_bytes(), prefix), "{p}");
        }
        // Too short, or a byte that differs.
        for p in [
            "",
            "__keyevent@*",
            "news.*",
            "__keyspace",
            "a*",
            "__keyspace[^@]*",
        ] {
            assert!(!may_match_with_prefix(p.as_bytes(), prefix), "{p}");
        }
        // The plain matcher is unchanged: the whole string must match.
        assert!(!matches(b"__keyspace@0__:*", prefix));
    }

    #[test]
    fn redis_examples() {
        let yes = [
            ("*", ""),
            ("*", "anything"),
            ("h?llo", "hello"),
            ("h*llo", "heeeello"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("celery-taskset-meta-*", "celery-taskset-meta-1.j"),
            ("a\\*b", "a*b"),
            ("*.j", "x.j"),
            ("[z-a]", "m"),
        ];
        for (p, s) in yes {
            assert!(matches(p.as_bytes(), s.as_bytes()), "{p} should match {s}");
        }
        let no = [
            ("h?llo", "hllo"),
            ("h[ae]llo", "hillo"),
            ("h[^e]llo", "hello"),
            ("a\\*b", "axb"),
            ("abc", "abcd"),
            ("*.j", "x.t"),
            ("", "x"),
        ];
        for (p, s) in no {
            assert!(
                !matches(p.as_bytes(), s.as_bytes()),
                "{p} should not match {s}"
            );
        }
    }
}
