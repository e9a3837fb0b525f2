//! INFO sections the masters report, merged into what one node holding all their data would
//! report: `# Memory`, `# Persistence`, the data counters of `# Stats` (hits, misses,
//! expirations, evictions), `# Errorstats` and `# Keyspace`.
//!
//! Each field is combined by its meaning: counters and sizes are summed; states that say
//! something is under way (`loading`, `rdb_bgsave_in_progress`) and per-node copies of the same
//! thing (`number_of_cached_scripts`) take the largest; `rdb_last_save_time` the oldest; ratios
//! and percentages the mean; a status is `err` if any node's is; other text is the first
//! master's. `*_human` fields are written again from the merged byte count, as Redis writes
//! them. Keyspace lines sum keys and expires and weight `avg_ttl` by keys.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use protocol::Frame;

/// The sections asked of every master for INFO (Redis 7 takes several at once).
pub const NODE_SECTIONS: [&str; 5] = ["memory", "persistence", "stats", "errorstats", "keyspace"];

/// One merged section: its fields in the order the first master listed them.
pub type Section = Vec<(String, String)>;

/// How a field's values from several masters become one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Combine {
    Sum,
    Max,
    Min,
    Mean,
    First,
}

/// The masters' INFO replies, merged by section name (lower case, `keyspace` included).
pub fn merge(replies: &[Frame]) -> BTreeMap<String, Section> {
    // section -> field -> every master's value, with the field order of first appearance.
    let mut seen: BTreeMap<String, Vec<(String, Vec<String>)>> = BTreeMap::new();
    for reply in replies {
        let text = match reply {
            Frame::Bulk(b) | Frame::Verbatim { text: b, .. } => String::from_utf8_lossy(b),
            _ => continue,
        };
        let mut section = String::new();
        for line in text.lines() {
            if let Some(name) = line.strip_prefix("# ") {
                section = name.trim().to_ascii_lowercase();
                continue;
            }
            let Some((field, value)) = line.split_once(':') else {
                continue;
            };
            let fields = seen.entry(section.clone()).or_default();
            match fields.iter_mut().find(|(f, _)| f == field) {
                Some((_, values)) => values.push(value.trim().to_string()),
                None => fields.push((field.to_string(), vec![value.trim().to_string()])),
            }
        }
    }
    seen.into_iter()
        .map(|(name, fields)| {
            let merged = if name == "keyspace" {
                merge_keyspace(&fields)
            } else {
                merge_fields(&fields)
            };
            (name, merged)
        })
        .collect()
}

fn merge_fields(fields: &[(String, Vec<String>)]) -> Section {
    let mut out: Section = fields
        .iter()
        .map(|(name, values)| (name.clone(), merge_values(name, values)))
        .collect();
    // `used_memory_human` and friends, from the merged byte counts.
    let numbers: Vec<(String, u64)> = out
        .iter()
        .filter_map(|(name, value)| Some((name.clone(), value.parse::<u64>().ok()?)))
        .collect();
    for (name, value) in &mut out {
        let Some(base) = name.strip_suffix("_human") else {
            continue;
        };
        if let Some((_, bytes)) = numbers.iter().find(|(n, _)| n == base) {
            *value = bytes_to_human(*bytes);
        }
    }
    out
}

fn merge_values(name: &str, values: &[String]) -> String {
    let first = values.first().cloned().unwrap_or_default();
    // `errorstat_ERR:count=3`, `cmdstat_get:calls=...`: each numeric part on its own.
    if first.contains('=') && !first.contains(' ') {
        return merge_parts(values);
    }
    match combine(name, &first) {
        Combine::First => {
            if name.ends_with("_status") && values.iter().any(|v| v == "err") {
                "err".to_string()
            } else {
                first
            }
        }
        how => merge_numbers(how, values).unwrap_or(first),
    }
}

fn combine(name: &str, first: &str) -> Combine {
    let numeric = first.trim_end_matches('%').parse::<f64>().is_ok();
    if !numeric {
        return Combine::First;
    }
    if first.ends_with('%') || name.contains("ratio") {
        return Combine::Mean;
    }
    match name {
        // Every master has its own copy of the scripts and functions.
        "number_of_cached_scripts" | "number_of_functions" | "number_of_libraries" => Combine::Max,
        // Something is under way on some node; times of the latest run.
        "loading"
        | "async_loading"
        | "rdb_bgsave_in_progress"
        | "aof_rewrite_in_progress"
        | "aof_rewrite_scheduled"
        | "aof_enabled"
        | "module_fork_in_progress"
        | "active_defrag_running"
        | "rdb_last_bgsave_time_sec"
        | "rdb_current_bgsave_time_sec"
        | "aof_last_rewrite_time_sec"
        | "aof_current_rewrite_time_sec"
        | "current_eviction_exceeded_time"
        | "current_active_defrag_time"
        | "rdb_last_load_keys_expired"
        | "loading_eta_seconds" => Combine::Max,
        // The data is only as saved as its least recently saved part.
        "rdb_last_save_time" => Combine::Min,
        _ => Combine::Sum,
    }
}

fn merge_numbers(how: Combine, values: &[String]) -> Option<String> {
    let percent = values.first().is_some_and(|v| v.ends_with('%'));
    let parsed: Vec<f64> = values
        .iter()
        .map(|v| v.trim_end_matches('%').parse::<f64>().ok())
        .collect::<Option<_>>()?;
    let integral = values.iter().all(|v| v.parse::<i64>().is_ok());
    let n = parsed.len().max(1) as f64;
    let merged = match how {
        Combine::Sum => parsed.iter().sum(),
        Combine::Max => parsed.iter().copied().fold(f64::MIN, f64::max),
        Combine::Min => parsed.iter().copied().fold(f64::MAX, f64::min),
        Combine::Mean => parsed.iter().sum::<f64>() / n,
        Combine::First => return None,
    };
    Some(if integral && how != Combine::Mean {
        format!("{}", merged as i64)
    } else if percent {
        format!("{merged:.2}%")
    } else {
        format!("{merged:.2}")
    })
}

/// `count=3,rejected_calls=0`: numeric parts summed by name, in first-seen order.
fn merge_parts(values: &[String]) -> String {
    let mut parts: Vec<(String, f64, bool)> = Vec::new();
    for value in values {
        for part in value.split(',') {
            let Some((k, v)) = part.split_once('=') else {
                continue;
            };
            let Ok(n) = v.parse::<f64>() else {
                continue;
            };
            let integral = v.parse::<i64>().is_ok();
            match parts.iter_mut().find(|(name, _, _)| name == k) {
                Some((_, sum, int)) => {
                    *sum += n;
                    *int &= integral;
                }
                None => parts.push((k.to_string(), n, integral)),
            }
        }
    }
    let mut out = String::new();
    for (i, (k, v, integral)) in parts.iter().enumerate() {
        let sep = if i == 0 { "" } else { "," };
        if *integral {
            let _ = write!(out, "{sep}{k}={}", *v as i64);
        } else {
            let _ = write!(out, "{sep}{k}={v:.2}");
        }
    }
    out
}

/// `dbN:keys=..,expires=..,avg_ttl=..`: keys and expires summed, avg_ttl weighted by keys.
fn merge_keyspace(fields: &[(String, Vec<String>)]) -> Section {
    let mut dbs: BTreeMap<u64, (u64, u64, u128)> = BTreeMap::new();
    for (db, values) in fields {
        let Some(n) = db.strip_prefix("db").and_then(|n| n.parse::<u64>().ok()) else {
            continue;
        };
        let entry = dbs.entry(n).or_default();
        for value in values {
            let mut keys = 0;
            for part in value.split(',') {
                match part.split_once('=') {
                    Some(("keys", v)) => {
                        keys = v.parse().unwrap_or(0);
                        entry.0 += keys;
                    }
                    Some(("expires", v)) => entry.1 += v.parse::<u64>().unwrap_or(0),
                    Some(("avg_ttl", v)) => {
                        entry.2 += u128::from(v.parse::<u64>().unwrap_or(0)) * u128::from(keys)
                    }
                    _ => {}
                }
            }
        }
    }
    dbs.into_iter()
        .map(|(db, (keys, expires, weighted))| {
            let avg_ttl = if keys > 0 {
                weighted / u128::from(keys)
            } else {
                0
            };
            (
                format!("db{db}"),
                format!("keys={keys},expires={expires},avg_ttl={avg_ttl}"),
            )
        })
        .collect()
}

/// A byte count as Redis's INFO writes it (`bytesToHuman`): `512B`, `1.50K`, `3.62M`, ...
pub fn bytes_to_human(n: u64) -> String {
    const UNITS: [(u64, &str); 5] = [
        (1 << 10, "K"),
        (1 << 20, "M"),
        (1 << 30, "G"),
        (1 << 40, "T"),
        (1 << 50, "P"),
    ];
    if n < 1024 {
        return format!("{n}B");
    }
    for (i, (size, unit)) in UNITS.iter().enumerate() {
        let next = UNITS.get(i + 1).map_or(u64::MAX, |(s, _)| *s);
        if n < next || i == UNITS.len() - 1 {
            return format!("{:.2}{unit}", n as f64 / *size as f64);
        }
    }
    format!("{n}B")
}

/// The proxy's own CPU time in seconds, `(system, user)`, from `/proc/self/stat` (zeros where
/// there is none). INFO shows it for the `_main_thread` fields too: the proxy's threads are
/// alike, none of them is Redis's main thread.
pub fn own_cpu() -> (f64, f64) {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return (0.0, 0.0);
    };
    // Fields after the command name (which may hold spaces) start at ")".
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the file: 11 and 12 (from 0) after ")".
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // USER_HZ is 100 on every Linux architecture Redis and Slotway run on.
    (ticks(12) / 100.0, ticks(11) / 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn reply(text: &str) -> Frame {
        Frame::Bulk(Bytes::from(text.replace('\n', "\r\n")))
    }

    #[test]
    fn sections_merge_by_meaning() {
        let a = reply(
            "# Memory\nused_memory:1048576\nused_memory_human:1.00M\nmem_fragmentation_ratio:1.50\nused_memory_peak_perc:20.00%\nnumber_of_cached_scripts:2\nmem_allocator:jemalloc-5.3.0\nmaxmemory_policy:noeviction\n\n# Persistence\nloading:0\nrdb_last_save_time:100\nrdb_last_bgsave_status:ok\n\n# Stats\nkeyspace_hits:5\ninstantaneous_input_kbps:0.50\n\n# Errorstats\nerrorstat_ERR:count=2\n\n# Keyspace\ndb0:keys=10,expires=0,avg_ttl=0\n",
        );
        let b = reply(
            "# Memory\nused_memory:2097152\nused_memory_human:2.00M\nmem_fragmentation_ratio:2.50\nused_memory_peak_perc:40.00%\nnumber_of_cached_scripts:2\nmem_allocator:jemalloc-5.3.0\nmaxmemory_policy:noeviction\n\n# Persistence\nloading:1\nrdb_last_save_time:50\nrdb_last_bgsave_status:err\n\n# Stats\nkeyspace_hits:7\ninstantaneous_input_kbps:0.25\n\n# Errorstats\nerrorstat_ERR:count=1\nerrorstat_NOGROUP:count=4\n\n# Keyspace\ndb0:keys=30,expires=3,avg_ttl=400\n",
        );
        let merged = merge(&[a, b]);
        let get = |s: &str, f: &str| {
            merged[s]
                .iter()
                .find(|(k, _)| k == f)
                .map(|(_, v)| v.clone())
                .unwrap()
        };
        assert_eq!(get("memory", "used_memory"), "3145728");
        assert_eq!(get("memory", "used_memory_human"), "3.00M");
        assert_eq!(get("memory", "mem_fragmentation_ratio"), "2.00");
        assert_eq!(get("memory", "used_memory_peak_perc"), "30.00%");
        assert_eq!(get("memory", "number_of_cached_scripts"), "2");
        assert_eq!(get("memory", "mem_allocator"), "jemalloc-5.3.0");
        assert_eq!(get("persistence", "loading"), "1");
        assert_eq!(get("persistence", "rdb_last_save_time"), "50");
        assert_eq!(get("persistence", "rdb_last_bgsave_status"), "err");
        assert_eq!(get("stats", "keyspace_hits"), "12");
        assert_eq!(get("stats", "instantaneous_input_kbps"), "0.75");
        assert_eq!(get("errorstats", "errorstat_ERR"), "count=3");
        assert_eq!(get("errorstats", "errorstat_NOGROUP"), "count=4");
        assert_eq!(get("keyspace", "db0"), "keys=40,expires=3,avg_ttl=300");
    }

    #[test]
    fn human_sizes_are_written_as_redis_writes_them() {
        assert_eq!(bytes_to_human(0), "0B");
        assert_eq!(bytes_to_human(1023), "1023B");
        assert_eq!(bytes_to_human(1536), "1.50K");
        assert_eq!(bytes_to_human(3_791_064), "3.62M");
        assert_eq!(bytes_to_human(25_276_502_016), "23.54G");
    }
}
