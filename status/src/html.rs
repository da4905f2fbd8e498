//! The status page: [`page`] is the whole document, a full static render (usable without
//! JavaScript), whose script replaces the content of `<main>` every [`REFRESH_MS`] with
//! [`fragment`] fetched from `/status/fragment`. Plain HTML, its CSS and script built into
//! the binary (`include_str!`), no build step. Everything from the cluster is escaped.
//!
//! What tests and scripts may rely on: each node is a `<tr data-node="NAME"
//! data-health="HEALTH">` of `<table id="nodes">`; each adapter of each node a `<tr
//! data-node="NAME" data-adapter="ADAPTER">` of `<table id="adapters">` (the window's calls,
//! errors, refusals and mean, then the totals' calls, errors, timeouts, refusals and mean);
//! the gateway's requests in the window are `<span id="recent-requests">`.
//!
//! On a phone every table scrolls sideways in its own `<div class="scroll">`; the page itself
//! is never wider than the screen.

use std::fmt::Write;

use crate::model::{clock, Status};
use crate::window::short;

/// How often the page refreshes itself.
pub const REFRESH_MS: u64 = 2000;

const CSS: &str = include_str!("page.css");
const SCRIPT: &str = include_str!("page.js");

/// The whole page.
pub fn page(status: &Status) -> String {
    let mut out = String::with_capacity(8 * 1024);
    out.push_str(
        "<!doctype html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>busbar status</title>\n<style>\n",
    );
    out.push_str(CSS);
    let _ = write!(
        out,
        "</style>\n</head>\n<body data-refresh-ms=\"{REFRESH_MS}\" data-fragment=\"/status/fragment\">\n\
         <header><h1>busbar status</h1><span id=\"live\" data-state=\"static\">as of {} UTC; reload to refresh</span></header>\n\
         <main id=\"status\">\n",
        clock(status.generated_at_ms)
    );
    out.push_str(&fragment(status));
    out.push_str("</main>\n<script>\n");
    out.push_str(SCRIPT);
    out.push_str("</script>\n</body>\n</html>\n");
    out
}

/// The content of `<main>`: the summary, then the nodes, chains, adapters and errors.
pub fn fragment(s: &Status) -> String {
    let mut out = String::with_capacity(6 * 1024);
    let g = &s.gateway;
    let mode = match g.mode.as_str() {
        "embedded" => " &middot; embedded (one machine)",
        _ => "",
    };
    let recent = match &g.recent {
        Some(r) => format!(
            " &middot; <span id=\"recent-requests\">last {}: {} requests ({} 4xx, {} 5xx)</span>",
            window_label(g.window_s, r.window_s),
            r.requests,
            r.requests_4xx,
            r.requests_5xx
        ),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "<p class=\"summary\">gateway {}{mode} &middot; <b>{} of {} nodes healthy</b> &middot; {} requests since start ({} 4xx, {} 5xx){recent} &middot; probes every {}s &middot; at {} UTC</p>",
        esc(&g.version),
        s.healthy(),
        s.nodes.len(),
        g.requests,
        g.requests_4xx,
        g.requests_5xx,
        g.probe_interval_s,
        clock(s.generated_at_ms)
    );
    nodes(&mut out, s);
    chains(&mut out, s);
    adapters(&mut out, s);
    errors(&mut out, s);
    out
}

fn nodes(out: &mut String, s: &Status) {
    out.push_str("<section><h2>Nodes</h2><div class=\"scroll\"><table id=\"nodes\">\n<thead><tr><th>Node</th><th>Health</th><th>Containers</th><th>Engine</th><th>Probe</th><th>Labels</th><th>Address</th><th>Last error</th></tr></thead>\n<tbody>\n");
    if s.nodes.is_empty() {
        out.push_str("<tr><td colspan=\"8\" class=\"muted\">no node known</td></tr>\n");
    }
    for n in &s.nodes {
        let labels: String = n
            .labels
            .iter()
            .map(|(k, v)| format!("<span>{}={}</span>", esc(k), esc(v)))
            .collect();
        let _ = writeln!(
            out,
            "<tr data-node=\"{name}\" data-health=\"{health}\"><td>{name}</td><td class=\"health {health}\">{health}</td><td class=\"num\">{}</td><td>{}</td><td class=\"num\">{}</td><td class=\"labels\">{labels}</td><td>{}</td><td class=\"bad msg\">{}</td></tr>",
            n.containers.map_or("-".to_owned(), |c| c.to_string()),
            esc(n.engine_version.as_deref().unwrap_or("-")),
            n.probe_ms.map_or("-".to_owned(), |ms| format!("{ms:.1} ms")),
            esc(&n.addr),
            esc(n.last_error.as_deref().unwrap_or("")),
            name = esc(&n.name),
            health = esc(&n.health),
        );
    }
    out.push_str("</tbody></table></div></section>\n");
}

fn chains(out: &mut String, s: &Status) {
    out.push_str("<section><h2>Chains</h2><div class=\"scroll\"><table id=\"chains\">\n<thead><tr><th>Node</th><th>Revision</th><th>Source</th><th>Scopes (revision)</th><th>Refused</th></tr></thead>\n<tbody>\n");
    for n in &s.nodes {
        let Some(c) = &n.chains else {
            let _ = writeln!(
                out,
                "<tr data-node=\"{0}\"><td>{0}</td><td colspan=\"4\" class=\"muted\">not reported</td></tr>",
                esc(&n.name)
            );
            continue;
        };
        let scopes: Vec<_> = c
            .scopes
            .iter()
            .map(|(k, v)| format!("{} ({v})", esc(k)))
            .collect();
        let refused = match (&c.refused, c.refused_revision) {
            (Some(why), Some(rev)) => format!("revision {rev}: {}", esc(why)),
            (Some(why), None) => esc(why),
            _ => String::new(),
        };
        let source = match &c.file {
            Some(file) => format!("{} <code>{}</code>", esc(&c.source), esc(file)),
            None => esc(&c.source),
        };
        let _ = writeln!(
            out,
            "<tr data-node=\"{0}\"{1}><td>{0}</td><td class=\"num\">{2}</td><td>{source}</td><td>{3}</td><td class=\"refused\">{refused}</td></tr>",
            esc(&n.name),
            if c.refused.is_some() { " class=\"refused\"" } else { "" },
            // Chains from a file have no revision.
            if c.revision == 0 { "-".to_owned() } else { c.revision.to_string() },
            scopes.join(", "),
        );
    }
    out.push_str("</tbody></table></div>\n");
    // The chains themselves, where the gateway knows them (its embedded agent's).
    let hooks: Vec<_> = s
        .nodes
        .iter()
        .flat_map(|n| {
            n.chains
                .iter()
                .flat_map(move |c| c.endpoints.iter().map(move |h| (n, h)))
        })
        .collect();
    if !hooks.is_empty() {
        out.push_str("<div class=\"scroll\"><table id=\"hooks\">\n<thead><tr><th>Node</th><th>Endpoint</th><th>Pre-hooks</th><th>Post-hooks</th></tr></thead>\n<tbody>\n");
        for (n, h) in hooks {
            let list = |names: &[String]| {
                if names.is_empty() {
                    "-".to_owned()
                } else {
                    names.iter().map(|a| esc(a)).collect::<Vec<_>>().join(", ")
                }
            };
            let _ = writeln!(
                out,
                "<tr data-node=\"{}\"><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td></tr>",
                esc(&n.name),
                esc(&n.name),
                esc(&h.key),
                list(&h.pre),
                list(&h.post),
            );
        }
        out.push_str("</tbody></table></div>\n");
    }
    // The same per scope: which revision of each scope's document each node runs.
    let scopes = s.scopes();
    if !scopes.is_empty() {
        out.push_str("<div class=\"scroll\"><table id=\"scopes\">\n<thead><tr><th>Scope</th>");
        for n in &s.nodes {
            let _ = write!(out, "<th>{}</th>", esc(&n.name));
        }
        out.push_str("</tr></thead>\n<tbody>\n");
        for (scope, revs) in &scopes {
            let _ = write!(out, "<tr><td>{}</td>", esc(scope));
            for n in &s.nodes {
                match revs.get(n.name.as_str()) {
                    Some(rev) => {
                        let _ = write!(out, "<td class=\"num\">{rev}</td>");
                    }
                    None => out.push_str("<td class=\"num muted\">-</td>"),
                }
            }
            out.push_str("</tr>\n");
        }
        out.push_str("</tbody></table></div>\n");
    }
    out.push_str("</section>\n");
}

fn adapters(out: &mut String, s: &Status) {
    let label = esc(&window_label(
        s.gateway.window_s,
        s.gateway.recent.as_ref().map_or(0.0, |r| r.window_s),
    ));
    let _ = write!(
        out,
        "<section><h2>Adapters</h2><div class=\"scroll\"><table id=\"adapters\">\n<thead><tr><th rowspan=\"2\">Node</th><th rowspan=\"2\">Adapter</th><th colspan=\"4\" class=\"group\">last {label}</th><th colspan=\"5\" class=\"group\">since its agent started</th></tr>\n<tr><th>Calls</th><th>Errors</th><th>Refusals</th><th>Mean</th><th>Calls</th><th>Errors</th><th>Timeouts</th><th>Refusals</th><th>Mean</th></tr></thead>\n<tbody>\n"
    );
    let errors = |n: u64, percent: Option<f64>| match percent {
        Some(p) if n > 0 => format!("{n} ({p:.1}%)"),
        _ => n.to_string(),
    };
    let bad = |n: u64| if n > 0 { " bad" } else { "" };
    let ms = |ms: Option<f64>| ms.map_or("-".to_owned(), |ms| format!("{ms:.1} ms"));
    let mut any = false;
    for n in &s.nodes {
        for a in &n.adapters {
            any = true;
            let recent = match &a.recent {
                Some(r) => format!(
                    "<td class=\"num recent-calls\">{}</td><td class=\"num recent-errors{}\">{}</td><td class=\"num recent-refusals\">{}</td><td class=\"num\">{}</td>",
                    r.calls,
                    bad(r.errors),
                    errors(r.errors, r.error_percent()),
                    r.refusals,
                    ms(r.mean_ms()),
                ),
                None => "<td colspan=\"4\" class=\"muted\">not sampled yet</td>".to_owned(),
            };
            let _ = writeln!(
                out,
                "<tr data-node=\"{}\" data-adapter=\"{}\"><td>{}</td><td>{}</td>{recent}<td class=\"num calls\">{}</td><td class=\"num errors{}\">{}</td><td class=\"num\">{}</td><td class=\"num refusals\">{}</td><td class=\"num\">{}</td></tr>",
                esc(&n.name),
                esc(&a.adapter),
                esc(&n.name),
                esc(&a.adapter),
                a.calls,
                bad(a.errors),
                errors(a.errors, a.error_percent()),
                a.timeouts,
                a.refusals,
                ms(a.mean_ms()),
            );
        }
    }
    if !any {
        out.push_str("<tr><td colspan=\"11\" class=\"muted\">no adapter called yet</td></tr>\n");
    }
    out.push_str("</tbody></table></div></section>\n");
}

/// The window's name: `5m` for the span configured, or the life of the gateway when it is
/// younger (`42s, since start`).
pub fn window_label(span_s: f64, covered_s: f64) -> String {
    if span_s <= 0.0 {
        return "window".to_owned();
    }
    if covered_s + 0.5 < span_s {
        return format!("{}, since start", short(covered_s));
    }
    short(span_s)
}

fn errors(out: &mut String, s: &Status) {
    out.push_str("<section><h2>Last errors</h2><div class=\"scroll\"><table id=\"errors\">\n<thead><tr><th>Time (UTC)</th><th>Status</th><th>Request</th><th>Node</th><th>Request id</th><th>Message</th></tr></thead>\n<tbody>\n");
    if s.errors.is_empty() {
        out.push_str("<tr><td colspan=\"6\" class=\"muted\">none</td></tr>\n");
    }
    for e in &s.errors {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td class=\"num bad\">{}</td><td>{} {}</td><td>{}</td><td><code>{}</code></td><td class=\"msg\">{}</td></tr>",
            clock(e.at_ms),
            e.status,
            esc(&e.method),
            esc(&e.endpoint),
            esc(&e.node),
            esc(&e.request_id),
            esc(&e.message),
        );
    }
    out.push_str("</tbody></table></div></section>\n");
}

/// `s` as HTML text (element content or a quoted attribute).
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::fixtures;

    #[test]
    fn the_page_is_a_whole_document_with_every_node_and_its_script() {
        let s = fixtures::status();
        let page = page(&s);
        assert!(page.starts_with("<!doctype html>"));
        assert!(page.contains("<meta name=\"viewport\""));
        assert!(page.contains("<tr data-node=\"node1\" data-health=\"Healthy\">"));
        assert!(page.contains("<tr data-node=\"node3\" data-health=\"Unhealthy\">"));
        assert!(page.contains("2 of 3 nodes healthy"));
        assert!(page.contains("fetch(url,"), "the script is built in");
        assert!(page.ends_with("</html>\n"));
    }

    #[test]
    fn refusals_are_red_and_everything_from_the_cluster_is_escaped() {
        let s = fixtures::status();
        let f = fragment(&s);
        assert!(f.contains("<tr data-node=\"node2\" class=\"refused\">"));
        assert!(f.contains("revision 13: adapter &quot;x&quot;: no url"));
        assert!(!f.contains("<script>"), "{f}");
        assert!(f.contains("node node3: &lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(f.contains("connection refused &lt;&amp;&gt;"));
        assert!(f.contains("<code>req-1</code>"));
        // Adapter figures: 1 error in 10 calls, 5 ms on average; in the window 1 in 4, 2 ms.
        assert!(f.contains("1 (10.0%)"), "{f}");
        assert!(f.contains("5.0 ms"), "{f}");
        assert!(
            f.contains("<td class=\"num recent-calls\">4</td><td class=\"num recent-errors bad\">1 (25.0%)</td><td class=\"num recent-refusals\">2</td><td class=\"num\">2.0 ms</td>"),
            "{f}"
        );
        assert!(f.contains("last 5m"), "{f}");
        assert!(f.contains("last 5m: 12 requests (1 4xx, 1 5xx)"), "{f}");
        // The scope table: one row, a revision per node.
        assert!(f.contains("<table id=\"scopes\">"));
    }

    #[test]
    fn the_embedded_gateway_names_its_mode_and_lists_its_chains() {
        let mut s = fixtures::status();
        s.gateway.mode = "embedded".into();
        s.nodes.truncate(1);
        let c = s.nodes[0].chains.as_mut().unwrap();
        c.source = "file".into();
        c.file = Some("/etc/busbar/adapters.yml".into());
        c.endpoints = vec![crate::model::Hooks {
            key: "POST /*/containers/create".into(),
            pre: vec!["netpol".into(), "quota".into()],
            post: vec![],
        }];
        s.gateway.recent.as_mut().unwrap().window_s = 42.0;
        let f = fragment(&s);
        assert!(f.contains("embedded (one machine)"), "{f}");
        assert!(f.contains("1 of 1 nodes healthy"), "{f}");
        assert!(
            f.contains("file <code>/etc/busbar/adapters.yml</code>"),
            "{f}"
        );
        assert!(
            f.contains(
                "<td><code>POST /*/containers/create</code></td><td>netpol, quota</td><td>-</td>"
            ),
            "{f}"
        );
        assert!(f.contains("last 42s, since start"), "{f}");
    }

    #[test]
    fn an_empty_cluster_says_so() {
        let f = fragment(&Status::default());
        assert!(f.contains("no node known"));
        assert!(f.contains("no adapter called yet"));
        assert!(!f.contains("<table id=\"scopes\">"));
    }
}
