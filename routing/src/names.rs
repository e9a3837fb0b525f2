//! Key names as the client sees them and as they are stored in the cluster.
//!
//! Two rewrites, both optional:
//!
//! - **Co-location rules.** A rule names a family of keys by prefix and says which part of the
//!   key decides its slot. A key of the family is stored as `{tag}key`, so every key with the
//!   same tag shares a slot and scripts and transactions over the family run natively. For
//!   example with the rule `prefix: celery-taskset-meta-, tag_until: "."` the key
//!   `celery-taskset-meta-42.j` is stored as `{42}celery-taskset-meta-42.j`.
//! - **Namespaced databases.** Keys of database `n > 0` are stored under the prefix
//!   `__slotway_db<n>__:`; database 0 keys are stored as they are.
//!
//! Both together: `__slotway_db1__:{42}celery-taskset-meta-42.j`. The prefix contains no `{`, so
//! the tag still decides the slot. [`KeyNames::restore`] maps a stored name back, and tells when
//! a stored name belongs to another database.
//!
//! A key that already contains `{` is never given a tag: the client chose its slot itself.

/// Where the stored name of a database's keys starts.
const DB_PREFIX_START: &[u8] = b"__slotway_db";

/// How a rule finds the part of a key that decides its slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tag {
    /// Every key of the family gets the same tag.
    Fixed(String),
    /// The part after the prefix, up to the first occurrence of this separator (or the end).
    Until(String),
}

/// One co-location rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// Keys starting with this belong to the family.
    pub prefix: String,
    /// How the tag is found.
    pub tag: Tag,
    /// Script arguments (ARGV) of the family are stored names too: for scripts that build key
    /// names from a prefix passed as an argument (`ARGV[1] .. name`). With a [`Tag::Fixed`]
    /// tag the stored name of a prefix is the prefix of the stored names, so what the script
    /// builds is the stored name. An argument that is data, not a name, would be changed too:
    /// only for families whose names never appear as data.
    pub script_args: bool,
}

/// The rules in force, and whether databases are namespaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyNames {
    rules: Vec<Rule>,
}

/// What a stored name is to a client of one database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restored {
    /// The client's name (prefix and tag removed).
    Name(Vec<u8>),
    /// The key belongs to another database: the client must not see it.
    Foreign,
}

// === impl Rule ===

impl Rule {
    /// The tag for `key`, if `key` belongs to this rule's family.
    fn tag_of<'a>(&'a self, key: &'a [u8]) -> Option<&'a [u8]> {
        let rest = key.strip_prefix(self.prefix.as_bytes())?;
        let tag = match &self.tag {
            Tag::Fixed(t) => t.as_bytes(),
            Tag::Until(sep) => {
                let sep = sep.as_bytes();
                match rest.windows(sep.len().max(1)).position(|w| w == sep) {
                    Some(end) if !sep.is_empty() => &rest[..end],
                    _ => rest,
                }
            }
        };
        (!tag.is_empty() && !tag.contains(&b'}') && !tag.contains(&b'{')).then_some(tag)
    }
}

// === impl KeyNames ===

impl KeyNames {
    /// Key names with these co-location rules.
    pub fn new(rules: Vec<Rule>) -> KeyNames {
        KeyNames { rules }
    }

    /// The built-in rules for Celery and kombu (`--preset celery`):
    ///
    /// - `celery-taskset-meta-<group id>` and its `.j .t .s .d .c` companions (chords) share
    ///   the slot of the group id;
    /// - `_kombu.binding.*`, `_kombu.binding_permanent.*` and `_kombu.binding_deadlines` share
    ///   one slot (kombu's binding script touches two of them);
    /// - `unacked`, `unacked_index` and `unacked_mutex` share one slot (kombu's ack
    ///   emulation writes the first two in one transaction, and WATCHes `unacked`).
    pub fn celery_rules() -> Vec<Rule> {
        vec![
            Rule {
                prefix: "celery-taskset-meta-".to_string(),
                tag: Tag::Until(".".to_string()),
                script_args: false,
            },
            // kombu's binding sweep gets `_kombu.binding.` and `_kombu.binding_permanent.` as
            // arguments and appends exchange names to them.
            Rule {
                prefix: "_kombu.binding".to_string(),
                tag: Tag::Fixed("_kombu.binding".to_string()),
                script_args: true,
            },
            Rule {
                prefix: "unacked".to_string(),
                tag: Tag::Fixed("unacked".to_string()),
                script_args: false,
            },
        ]
    }

    /// The built-in rule for Dramatiq (`--preset dramatiq`): every key whose name starts with
    /// `dramatiq` shares one slot. Dramatiq's broker runs one script that receives only its
    /// namespace (`dramatiq`) as a key and builds every other name from it
    /// (`dramatiq:default.msgs`, `dramatiq:__heartbeats__`, ...); stored as `{dramatiq}dramatiq`,
    /// the namespace makes those names stored names of the same slot.
    pub fn dramatiq_rules() -> Vec<Rule> {
        vec![Rule {
            prefix: "dramatiq".to_string(),
            tag: Tag::Fixed("dramatiq".to_string()),
            script_args: false,
        }]
    }

    /// True if no rule is set (database prefixes may still apply).
    pub fn has_rules(&self) -> bool {
        !self.rules.is_empty()
    }

    /// The stored name of `key` for a client of database `db`, or `None` if it is stored as
    /// it is.
    pub fn store(&self, db: u32, key: &[u8]) -> Option<Vec<u8>> {
        let tag = if key.contains(&b'{') {
            None
        } else {
            self.rules.iter().find_map(|r| r.tag_of(key))
        };
        if db == 0 && tag.is_none() {
            return None;
        }
        let mut out = Vec::with_capacity(key.len() + 24);
        if db > 0 {
            out.extend_from_slice(&db_prefix(db));
        }
        if let Some(tag) = tag {
            out.push(b'{');
            out.extend_from_slice(tag);
            out.push(b'}');
        }
        out.extend_from_slice(key);
        Some(out)
    }

    /// The stored form of script argument `arg` for a client of database `db`, if the rule its
    /// name belongs to renames script arguments (see [`Rule::script_args`]).
    pub fn store_script_arg(&self, db: u32, arg: &[u8]) -> Option<Vec<u8>> {
        if arg.contains(&b'{') {
            return None;
        }
        let rule = self.rules.iter().find(|r| r.tag_of(arg).is_some())?;
        if !rule.script_args || !matches!(rule.tag, Tag::Fixed(_)) {
            return None;
        }
        self.store(db, arg)
    }

    /// The client's name for a stored key, as seen from database `db`.
    pub fn restore(&self, db: u32, stored: &[u8]) -> Restored {
        let rest = if db > 0 {
            match stored.strip_prefix(db_prefix(db).as_slice()) {
                Some(rest) => rest,
                None => return Restored::Foreign,
            }
        } else if is_namespaced(stored) {
            return Restored::Foreign;
        } else {
            stored
        };
        if let Some(inner) = rest.strip_prefix(b"{") {
            if let Some(end) = inner.iter().position(|&b| b == b'}') {
                let (tag, name) = (&inner[..end], &inner[end + 1..]);
                let ours = self
                    .rules
                    .iter()
                    .any(|r| !name.contains(&b'{') && r.tag_of(name) == Some(tag));
                if ours {
                    return Restored::Name(name.to_vec());
                }
            }
        }
        Restored::Name(rest.to_vec())
    }
}

/// The prefix of database `db`'s stored names (`__slotway_db1__:`); empty for database 0.
pub fn db_prefix(db: u32) -> Vec<u8> {
    if db == 0 {
        return Vec::new();
    }
    let mut p = DB_PREFIX_START.to_vec();
    p.extend_from_slice(db.to_string().as_bytes());
    p.extend_from_slice(b"__:");
    p
}

/// True if a stored name belongs to a database other than 0.
pub fn is_namespaced(stored: &[u8]) -> bool {
    stored.starts_with(DB_PREFIX_START)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Slot;

    fn celery() -> KeyNames {
        KeyNames::new(KeyNames::celery_rules())
    }

    #[test]
    fn chord_keys_share_a_slot_and_come_back() {
        let names = celery();
        let keys =
            ["", ".j", ".t", ".s", ".d", ".c"].map(|s| format!("celery-taskset-meta-8f1c{s}"));
        let stored: Vec<Vec<u8>> = keys
            .iter()
            .map(|k| names.store(0, k.as_bytes()).unwrap())
            .collect();
        assert_eq!(stored[1], b"{8f1c}celery-taskset-meta-8f1c.j");
        let slot = Slot::for_key(&stored[0]);
        assert!(stored.iter().all(|s| Slot::for_key(s) == slot));
        for (k, s) in keys.iter().zip(&stored) {
            assert_eq!(names.restore(0, s), Restored::Name(k.as_bytes().to_vec()));
        }
    }

    #[test]
    fn kombu_families() {
        let names = celery();
        let a = names.store(0, b"_kombu.binding.celery").unwrap();
        let b = names.store(0, b"_kombu.binding_deadlines").unwrap();
        assert_eq!(Slot::for_key(&a), Slot::for_key(&b));
        let u = names.store(0, b"unacked").unwrap();
        let i = names.store(0, b"unacked_index").unwrap();
        assert_eq!(Slot::for_key(&u), Slot::for_key(&i));
        assert_eq!(names.store(0, b"celery"), None);
        assert_eq!(names.store(0, b"{x}unacked"), None);
    }

    #[test]
    fn script_arguments_of_a_family_that_says_so_are_stored_names_too() {
        let names = celery();
        for db in [0, 3] {
            // kombu's sweep appends an exchange name to a prefix argument: what it builds is
            // the stored name of the table.
            let prefix = names.store_script_arg(db, b"_kombu.binding.").unwrap();
            let mut built = prefix.clone();
            built.extend_from_slice(b"celery.pidbox");
            assert_eq!(
                Some(built),
                names.store(db, b"_kombu.binding.celery.pidbox")
            );
        }
        // Not for rules without script_args, tags found in the key, or names with a brace.
        assert_eq!(names.store_script_arg(0, b"unacked"), None);
        assert_eq!(names.store_script_arg(0, b"celery-taskset-meta-1"), None);
        assert_eq!(names.store_script_arg(0, b"{x}_kombu.binding.a"), None);
        assert_eq!(names.store_script_arg(0, b"payload"), None);
    }

    #[test]
    fn names_built_from_dramatiqs_namespace_are_stored_names_of_its_slot() {
        let names = KeyNames::new(KeyNames::dramatiq_rules());
        let namespace = names.store(0, b"dramatiq").unwrap();
        assert_eq!(namespace, b"{dramatiq}dramatiq");
        // The broker's script gets the namespace as KEYS[1] and appends the rest.
        let mut built = namespace.clone();
        built.extend_from_slice(b":default.msgs");
        assert_eq!(
            Some(built.clone()),
            names.store(0, b"dramatiq:default.msgs")
        );
        assert_eq!(Slot::for_key(&built), Slot::for_key(&namespace));
        assert_eq!(
            names.restore(0, &built),
            Restored::Name(b"dramatiq:default.msgs".to_vec())
        );
        assert_eq!(names.store(0, b"other"), None);
    }

    #[test]
    fn databases_are_prefixed_and_isolated() {
        let names = celery();
        assert_eq!(names.store(1, b"k").unwrap(), b"__slotway_db1__:k");
        let chord = names.store(2, b"celery-taskset-meta-g.j").unwrap();
        assert_eq!(chord, b"__slotway_db2__:{g}celery-taskset-meta-g.j");
        assert_eq!(Slot::for_key(&chord), Slot::for_key(b"{g}"));
        assert_eq!(
            names.restore(2, &chord),
            Restored::Name(b"celery-taskset-meta-g.j".to_vec())
        );
        assert_eq!(names.restore(1, &chord), Restored::Foreign);
        assert_eq!(names.restore(0, &chord), Restored::Foreign);
        assert_eq!(
            names.restore(0, b"plain"),
            Restored::Name(b"plain".to_vec())
        );
        assert_eq!(names.restore(1, b"plain"), Restored::Foreign);
        // A client's own hash tag is kept.
        assert_eq!(names.restore(0, b"{u}a"), Restored::Name(b"{u}a".to_vec()));
        assert!(KeyNames::default().store(0, b"k").is_none());
    }
}
