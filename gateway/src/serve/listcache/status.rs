//! A container's `Status` text (`Up 5 minutes`, `Exited (0) 3 seconds ago`) as the engine would
//! write it now, for a row fetched earlier.
//!
//! dockerd 20.10 writes `Status` when it lists (`container.State.String()`): a prefix, the time
//! since the container started (`Up ...`) or finished (`Exited (N) ... ago`, `Restarting (N) ...
//! ago`) as `go-units`' `HumanDuration`, and a suffix (` (healthy)`, ` (Paused)`). A cached row's
//! text would stop moving: "Up 2 seconds" for ever. So the cache keeps, per row, the moment the
//! duration counts from ([`Template::since_ms`]) and writes the text again at each answer
//! ([`Template::render`]). That moment is, best first: the time of the event that started (or
//! stopped) the container; the one kept from the row's previous version if the new text still
//! fits it; else the middle of what the fetched text allows (exact to the second below a
//! minute, to the minute below an hour; a full resync every 30 s narrows it again).

/// A `Status` cut around its duration, with the moment the duration counts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// `Up `, `Exited (0) `, `Restarting (1) `.
    pub prefix: String,
    /// ``, ` (healthy)`, ` (Paused)`, ` ago`.
    pub suffix: String,
    /// Unix time in milliseconds the duration counts from.
    pub since_ms: i64,
}

/// Which event time a status counts from: a start, or a die.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counts {
    FromStart,
    FromFinish,
}

impl Template {
    /// The text at `now_ms`.
    pub fn render(&self, now_ms: i64) -> String {
        let mut text = String::new();
        self.write(now_ms, &mut text);
        text
    }

    /// The text at `now_ms`, appended to `out` (an answer writes 30,000 of them at 1,000
    /// nodes: no allocation each).
    pub fn write(&self, now_ms: i64, out: &mut String) {
        let d = (now_ms - self.since_ms).max(0);
        out.push_str(&self.prefix);
        write_human_duration(d, out);
        out.push_str(&self.suffix);
    }

    /// `status` (fetched at `fetched_ms`) cut around its duration, counting from `hint_ms` (an
    /// event's time) if the text fits it, else from `previous` if it has the same prefix and
    /// the text fits it, else from the middle of what the text allows. `None` if the status
    /// has no duration (`Created`, `Dead`, ...) or is not one dockerd writes.
    pub fn of(
        status: &str,
        fetched_ms: i64,
        hint: impl Fn(Counts) -> Option<i64>,
        previous: Option<&Template>,
    ) -> Option<Template> {
        let (prefix, duration, suffix, counts) = split(status)?;
        let (lo, hi) = bounds_ms(duration)?;
        let fits = |since: i64| {
            let d = fetched_ms - since;
            // A little slack: the engine read its clock a moment before we read ours.
            d >= lo - 250 && d < hi + 250
        };
        let since_ms = hint(counts)
            .filter(|&t| fits(t))
            .or_else(|| {
                previous
                    .filter(|p| p.prefix == prefix)
                    .map(|p| p.since_ms)
                    .filter(|&t| fits(t))
            })
            .unwrap_or(fetched_ms - (lo + hi) / 2);
        Some(Template {
            prefix: prefix.to_owned(),
            suffix: suffix.to_owned(),
            since_ms,
        })
    }
}

/// `Up 5 minutes (healthy)` -> (`Up `, `5 minutes`, ` (healthy)`, from start).
fn split(status: &str) -> Option<(&str, &str, &str, Counts)> {
    if let Some(rest) = status.strip_prefix("Up ") {
        let end = rest.find(" (").unwrap_or(rest.len());
        return Some((&status[..3], &rest[..end], &rest[end..], Counts::FromStart));
    }
    for word in ["Exited (", "Restarting ("] {
        if let Some(rest) = status.strip_prefix(word) {
            let close = rest.find(") ")?;
            let prefix_len = word.len() + close + 2;
            let duration = status[prefix_len..].strip_suffix(" ago")?;
            return Some((&status[..prefix_len], duration, " ago", Counts::FromFinish));
        }
    }
    None
}

const SEC: i64 = 1000;
const MIN: i64 = 60 * SEC;
const HOUR: i64 = 60 * MIN;
const DAY: i64 = 24 * HOUR;

/// The durations (ms, `[lo, hi)`) that `HumanDuration` writes as `text`.
fn bounds_ms(text: &str) -> Option<(i64, i64)> {
    match text {
        "Less than a second" => return Some((0, SEC)),
        "1 second" => return Some((SEC, 2 * SEC)),
        "About a minute" => return Some((MIN, 2 * MIN)),
        "About an hour" => return Some((HOUR, HOUR + 30 * MIN)),
        _ => {}
    }
    let (n, unit) = text.split_once(' ')?;
    let n: i64 = n.parse().ok()?;
    let half_hour = 30 * MIN;
    Some(match unit {
        "seconds" => (n * SEC, (n + 1) * SEC),
        "minutes" => (n * MIN, (n + 1) * MIN),
        // hours = int(h + 0.5)
        "hours" => (n * HOUR - half_hour, n * HOUR + half_hour),
        "days" => (n * DAY - half_hour, (n + 1) * DAY - half_hour),
        "weeks" => (n * 7 * DAY - half_hour, (n + 1) * 7 * DAY - half_hour),
        "months" => (n * 30 * DAY - half_hour, (n + 1) * 30 * DAY - half_hour),
        "years" => (n * 365 * DAY, (n + 1) * 365 * DAY),
        _ => return None,
    })
}

/// `go-units`' `HumanDuration`, as dockerd 20.10 writes durations in `Status`.
pub fn human_duration(ms: i64) -> String {
    let mut text = String::new();
    write_human_duration(ms, &mut text);
    text
}

/// [`human_duration`], appended to `out`.
fn write_human_duration(ms: i64, out: &mut String) {
    use std::fmt::Write;
    let seconds = ms / SEC;
    if seconds < 1 {
        return out.push_str("Less than a second");
    }
    if seconds == 1 {
        return out.push_str("1 second");
    }
    if seconds < 60 {
        let _ = write!(out, "{seconds} seconds");
        return;
    }
    let minutes = ms / MIN;
    if minutes == 1 {
        return out.push_str("About a minute");
    }
    if minutes < 60 {
        let _ = write!(out, "{minutes} minutes");
        return;
    }
    let hours = ((ms as f64 / HOUR as f64) + 0.5) as i64;
    if hours == 1 {
        return out.push_str("About an hour");
    }
    let _ = if hours < 48 {
        write!(out, "{hours} hours")
    } else if hours < 24 * 7 * 2 {
        write!(out, "{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        write!(out, "{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        write!(out, "{} months", hours / 24 / 30)
    } else {
        write!(out, "{} years", ms / HOUR / 24 / 365)
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_duration_is_go_units() {
        for (ms, text) in [
            (0, "Less than a second"),
            (999, "Less than a second"),
            (1_000, "1 second"),
            (59_999, "59 seconds"),
            (60_000, "About a minute"),
            (119_999, "About a minute"),
            (120_000, "2 minutes"),
            (HOUR - 1, "59 minutes"),
            (HOUR, "About an hour"),
            (HOUR + 30 * MIN, "2 hours"),
            (47 * HOUR, "47 hours"),
            (48 * HOUR, "2 days"),
            (14 * DAY, "2 weeks"),
            (60 * DAY, "2 months"),
            (730 * DAY, "2 years"),
        ] {
            assert_eq!(human_duration(ms), text, "{ms}");
        }
    }

    #[test]
    fn every_duration_text_is_within_its_bounds() {
        let mut ms = 0;
        while ms < 800 * DAY {
            let text = human_duration(ms);
            let (lo, hi) = bounds_ms(&text).expect(&text);
            assert!(lo <= ms && ms < hi, "{ms} -> {text} -> {lo}..{hi}");
            ms += 1 + ms / 7;
        }
    }

    #[test]
    fn statuses_are_written_again_from_their_moment() {
        let none = |_| None;
        let t = Template::of("Up 5 seconds (healthy)", 100_000, none, None).unwrap();
        assert_eq!(t.prefix, "Up ");
        assert_eq!(t.suffix, " (healthy)");
        assert_eq!(t.render(100_000), "Up 5 seconds (healthy)");
        assert_eq!(t.render(160_000), "Up About a minute (healthy)");
        let t = Template::of("Exited (137) 2 minutes ago", 1_000_000, none, None).unwrap();
        assert_eq!(t.render(1_000_000), "Exited (137) 2 minutes ago");
        assert_eq!(t.render(1_000_000 + 2 * MIN), "Exited (137) 4 minutes ago");
        let t = Template::of("Up 3 minutes (Paused)", 0, none, None).unwrap();
        assert_eq!(t.render(0), "Up 3 minutes (Paused)");
        for s in [
            "Created",
            "Dead",
            "Removal In Progress",
            "",
            "Up soon",
            "Exited (1) now",
        ] {
            assert_eq!(Template::of(s, 0, none, None), None, "{s}");
        }
    }

    #[test]
    fn an_event_time_or_the_previous_moment_wins_when_the_text_fits() {
        let start = |c| (c == Counts::FromStart).then_some(95_500);
        let t = Template::of("Up 4 seconds", 100_000, start, None).unwrap();
        assert_eq!(t.since_ms, 95_500);
        // An event time the text contradicts is not used.
        let t = Template::of("Up 40 seconds", 100_000, start, None).unwrap();
        assert_eq!(t.since_ms, 59_500);
        // The previous moment is kept while the text fits it.
        let t2 = Template::of("Up 70 seconds", 130_000, |_| None, Some(&t));
        assert_eq!(t2.unwrap().since_ms, 59_500);
        let die = Template::of("Exited (0) 1 second ago", 130_000, |_| None, Some(&t));
        assert_eq!(die.unwrap().since_ms, 128_500, "another prefix: not kept");
    }
}
