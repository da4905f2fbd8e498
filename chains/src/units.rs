//! Durations (`timeout`) and sizes (`max_buffer`) as written in a chain file.
//!
//! A duration is a positive number of seconds (`10`, `2.5`) or a number with a unit
//! (`500ms`, `10s`, `2m`, `1h`). A size is a positive number of bytes (`1048576`) or an
//! integer with a unit: `B`, decimal `KB`/`MB`/`GB` or binary `KiB`/`MiB`/`GiB`
//! (`64MiB`). A space between number and unit is allowed. Zero is rejected for both: a
//! zero timeout fails every call and a zero buffer refuses every post-hook.

use std::time::Duration;

use serde_yaml::Value;

/// `None` when the value is not a valid positive duration.
pub(super) fn duration(value: &Value) -> Option<Duration> {
    let secs = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => {
            let (number, unit) = split_unit(s);
            let scale = match unit {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                _ => return None,
            };
            number.parse::<f64>().ok()? * scale
        }
        _ => return None,
    };
    if secs.is_nan() || secs <= 0.0 {
        return None;
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// `None` when the value is not a valid positive size.
pub(super) fn size(value: &Value) -> Option<u64> {
    let bytes = match value {
        Value::Number(n) => n.as_u64()?,
        Value::String(s) => {
            let (number, unit) = split_unit(s);
            let scale: u64 = match unit {
                "" | "B" => 1,
                "KB" => 1000,
                "MB" => 1000 * 1000,
                "GB" => 1000 * 1000 * 1000,
                "KiB" => 1 << 10,
                "MiB" => 1 << 20,
                "GiB" => 1 << 30,
                _ => return None,
            };
            if !number.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            number.parse::<u64>().ok()?.checked_mul(scale)?
        }
        _ => return None,
    };
    (bytes > 0).then_some(bytes)
}

/// `"64 MiB"` -> `("64", "MiB")`.
fn split_unit(s: &str) -> (&str, &str) {
    let s = s.trim();
    let at = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    (&s[..at], s[at..].trim_start())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(s: &str) -> Value {
        serde_yaml::from_str(s).expect("test YAML")
    }

    #[test]
    fn durations() {
        assert_eq!(duration(&yaml("10")), Some(Duration::from_secs(10)));
        assert_eq!(duration(&yaml("2.5")), Some(Duration::from_millis(2500)));
        assert_eq!(duration(&yaml("10s")), Some(Duration::from_secs(10)));
        assert_eq!(duration(&yaml("500ms")), Some(Duration::from_millis(500)));
        assert_eq!(duration(&yaml("2m")), Some(Duration::from_secs(120)));
        assert_eq!(duration(&yaml("1 h")), Some(Duration::from_secs(3600)));
        for bad in [
            "0", "0s", "-1", "\"10\"", "10x", "s", "1e400", ".nan", "null", "[1]", "1.2.3s",
        ] {
            assert_eq!(duration(&yaml(bad)), None, "{bad}");
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(size(&yaml("1048576")), Some(1 << 20));
        assert_eq!(size(&yaml("\"4096\"")), Some(4096));
        assert_eq!(size(&yaml("64MiB")), Some(64 << 20));
        assert_eq!(size(&yaml("1 GiB")), Some(1 << 30));
        assert_eq!(size(&yaml("10KB")), Some(10_000));
        assert_eq!(size(&yaml("512B")), Some(512));
        for bad in [
            "0",
            "0MiB",
            "-1",
            "1.5MiB",
            "64mib",
            "64 parsecs",
            "99999999999GiB",
            "2.5",
            "null",
            "MiB",
        ] {
            assert_eq!(size(&yaml(bad)), None, "{bad}");
        }
    }
}
