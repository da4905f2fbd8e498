//! `busbarctl status` on a terminal: [`screen`] draws the status in one screen: a summary
//! line, the nodes (health, containers, engine, probe time, the chain revision each runs,
//! refusals), the adapters (calls, error rate, timeouts, mean time) and the last errors, each
//! line cut to the terminal's width.

use crate::html::window_label;
use crate::model::{clock, Status};

/// How many of the last errors the screen shows.
pub const ERRORS_SHOWN: usize = 5;

const RED: &str = "\x1b[31m";
const GREEN: &str = "\x1b[32m";
const BOLD: &str = "\x1b[1m";
const RESET: &str = "\x1b[0m";

/// The status as text `width` columns wide, in colour (ANSI) when `color`.
pub fn screen(s: &Status, width: usize, color: bool) -> String {
    let paint = |code: &str, text: &str| {
        if color {
            format!("{code}{text}{RESET}")
        } else {
            text.to_owned()
        }
    };
    let mut out = Vec::new();
    let g = &s.gateway;
    let label = window_label(g.window_s, g.recent.as_ref().map_or(0.0, |r| r.window_s));
    let recent = match &g.recent {
        Some(r) => format!(
            " · last {label}: {} ({} 4xx, {} 5xx)",
            r.requests, r.requests_4xx, r.requests_5xx
        ),
        None => String::new(),
    };
    let mode = if g.mode == "embedded" {
        " · embedded"
    } else {
        ""
    };
    out.push(paint(
        BOLD,
        &cut(
            &format!(
                "busbar {}{mode} · {} of {} nodes healthy · {} requests ({} 4xx, {} 5xx){recent} · {} UTC",
                g.version,
                s.healthy(),
                s.nodes.len(),
                g.requests,
                g.requests_4xx,
                g.requests_5xx,
                clock(s.generated_at_ms)
            ),
            width,
        ),
    ));
    out.push(String::new());
    let mut rows = vec![[
        "NODE",
        "HEALTH",
        "CONTAINERS",
        "ENGINE",
        "PROBE",
        "CHAINS",
        "ERROR",
    ]
    .map(str::to_owned)];
    let mut health = Vec::new();
    for n in &s.nodes {
        let chains = match &n.chains {
            None => "-".to_owned(),
            Some(c) => match (&c.refused, c.refused_revision) {
                (Some(_), Some(rev)) => format!("{} REFUSED {rev}", c.revision),
                // A file's chains have no revision: the source says it all.
                (Some(_), None) if c.revision == 0 => format!("{} REFUSED", c.source),
                (Some(_), None) => format!("{} REFUSED", c.revision),
                _ if c.revision == 0 => c.source.clone(),
                _ => format!("{} ({})", c.revision, c.source),
            },
        };
        let error = n
            .last_error
            .clone()
            .or_else(|| n.chains.as_ref().and_then(|c| c.refused.clone()))
            .unwrap_or_default();
        health.push((
            n.health.clone(),
            n.chains.as_ref().is_some_and(|c| c.refused.is_some()),
        ));
        rows.push([
            n.name.clone(),
            n.health.clone(),
            n.containers.map_or("-".into(), |c| c.to_string()),
            n.engine_version.clone().unwrap_or_else(|| "-".into()),
            n.probe_ms.map_or("-".into(), |ms| format!("{ms:.1}ms")),
            chains,
            error,
        ]);
    }
    let table = columns(&rows);
    for (i, line) in table.into_iter().enumerate() {
        let line = cut(&line, width);
        let painted = match i.checked_sub(1).and_then(|i| health.get(i)) {
            None => paint(BOLD, &line),
            Some((h, _)) if h != "Healthy" => paint(RED, &line),
            Some((_, true)) => paint(RED, &line),
            Some(_) => paint(GREEN, &line),
        };
        out.push(painted);
    }
    if s.nodes.is_empty() {
        out.push("(no node known)".into());
    }
    let head = |what: &str| format!("{what}/{}", short_label(&label));
    let mut rows = vec![[
        "ADAPTER".to_owned(),
        "NODE".to_owned(),
        head("CALLS"),
        head("ERRORS"),
        head("REFUSALS"),
        head("MEAN"),
        "CALLS".to_owned(),
        "ERRORS".to_owned(),
        "TIMEOUTS".to_owned(),
        "REFUSALS".to_owned(),
    ]];
    let errors = |n: u64, percent: Option<f64>| match percent {
        Some(p) if n > 0 => format!("{n} ({p:.1}%)"),
        _ => n.to_string(),
    };
    for n in &s.nodes {
        for a in &n.adapters {
            let recent = match &a.recent {
                Some(r) => [
                    r.calls.to_string(),
                    errors(r.errors, r.error_percent()),
                    r.refusals.to_string(),
                    r.mean_ms().map_or("-".into(), |ms| format!("{ms:.1}ms")),
                ],
                None => ["-", "-", "-", "-"].map(str::to_owned),
            };
            let [calls, errs, refusals, mean] = recent;
            rows.push([
                a.adapter.clone(),
                n.name.clone(),
                calls,
                errs,
                refusals,
                mean,
                a.calls.to_string(),
                errors(a.errors, a.error_percent()),
                a.timeouts.to_string(),
                a.refusals.to_string(),
            ]);
        }
    }
    if rows.len() > 1 {
        out.push(String::new());
        for (i, line) in columns(&rows).into_iter().enumerate() {
            let line = cut(&line, width);
            out.push(if i == 0 { paint(BOLD, &line) } else { line });
        }
    }
    if !s.errors.is_empty() {
        out.push(String::new());
        out.push(paint(
            BOLD,
            &cut(
                &format!("LAST ERRORS ({} kept, newest first)", s.errors.len()),
                width,
            ),
        ));
        for e in s.errors.iter().take(ERRORS_SHOWN) {
            let node = if e.node.is_empty() { "-" } else { &e.node };
            let line = format!(
                "{} {} {} {} {node} {} {}",
                clock(e.at_ms),
                e.status,
                e.method,
                e.endpoint,
                e.request_id,
                e.message
            );
            out.push(cut(&line, width));
        }
    }
    let mut text = out.join("\n");
    text.push('\n');
    text
}

/// The window's label without what follows its span (`42s, since start` -> `42s`).
fn short_label(label: &str) -> &str {
    label.split(',').next().unwrap_or(label)
}

/// Rows as left-aligned columns, two spaces apart, trailing spaces removed.
fn columns<const N: usize>(rows: &[[String; N]]) -> Vec<String> {
    let mut widths = [0usize; N];
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    rows.iter()
        .map(|row| {
            let mut line = String::new();
            for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
                line.push_str(cell);
                if i + 1 < N {
                    let pad = w - cell.chars().count() + 2;
                    line.extend(std::iter::repeat_n(' ', pad));
                }
            }
            line.trim_end().to_owned()
        })
        .collect()
}

/// `line` cut to `width` characters (with `…` where cut); no cut when `width` is 0.
fn cut(line: &str, width: usize) -> String {
    if width == 0 || line.chars().count() <= width {
        return line.to_owned();
    }
    let mut s: String = line.chars().take(width.saturating_sub(1)).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;

    #[test]
    fn one_screen_with_nodes_chains_adapters_and_errors() {
        let text = screen(&fixtures::status(), 200, false);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("busbar 0.1.0 · 2 of 3 nodes healthy"),
            "{text}"
        );
        assert!(lines[2].starts_with("NODE   HEALTH"), "{text}");
        assert!(lines[3].starts_with("node1  Healthy    3 "), "{text}");
        assert!(text.contains("12 REFUSED 13"), "{text}");
        assert!(text.contains("adapter \"x\": no url"), "{text}");
        assert!(lines[5].starts_with("node3  Unhealthy  -"), "{text}");
        assert!(
            lines[0].contains("· 40 requests (2 4xx, 1 5xx) · last 5m: 12 (1 4xx, 1 5xx) ·"),
            "{text}"
        );
        assert!(
            text.contains("ADAPTER  NODE   CALLS/5m  ERRORS/5m  REFUSALS/5m  MEAN/5m  CALLS  ERRORS     TIMEOUTS  REFUSALS"),
            "{text}"
        );
        assert!(
            text.contains("netpol   node1  4         1 (25.0%)  2            2.0ms    10     1 (10.0%)  1         2"),
            "{text}"
        );
        assert!(text.contains("LAST ERRORS (1 kept, newest first)"));
        assert!(text.contains("502 POST container_create node3 req-1"));
        assert!(!text.contains('\x1b'));
    }

    #[test]
    fn an_embedded_node_runs_its_file_and_says_when_a_reload_was_refused() {
        let mut s = fixtures::status();
        s.gateway.mode = "embedded".into();
        s.nodes.truncate(1);
        let c = s.nodes[0].chains.as_mut().unwrap();
        (c.revision, c.source) = (0, "file".into());
        let text = screen(&s, 200, false);
        assert!(
            text.starts_with("busbar 0.1.0 · embedded · 1 of 1 nodes healthy"),
            "{text}"
        );
        assert!(text.contains("1.5ms  file\n"), "{text}");
        let c = s.nodes[0].chains.as_mut().unwrap();
        c.refused = Some("line 3: unknown adapter".into());
        let text = screen(&s, 200, false);
        assert!(
            text.contains("1.5ms  file REFUSED  line 3: unknown adapter"),
            "{text}"
        );
    }

    #[test]
    fn lines_fit_the_width_and_colour_marks_health() {
        let text = screen(&fixtures::status(), 40, true);
        for line in text.lines() {
            let plain = line
                .replace(RED, "")
                .replace(GREEN, "")
                .replace(BOLD, "")
                .replace(RESET, "");
            assert!(plain.chars().count() <= 40, "{plain:?}");
        }
        assert!(text.contains(&format!("{RED}node3")), "{text}");
        assert!(
            text.contains(&format!("{RED}node2")),
            "a refusal is red: {text}"
        );
        assert!(text.contains(&format!("{GREEN}node1")), "{text}");
    }
}
