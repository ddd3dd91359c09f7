//! The report as one self-contained HTML page: inline CSS, the chart as inline SVG, no script, no
//! font, no image and no stylesheet from anywhere else, so it opens the same offline, from a mail
//! attachment or from a ticket. Every piece of text from the ledger goes through [`esc`].

use std::fmt::Write as _;

use super::{Report, chart, percent};
use crate::app::short_peer;
use crate::domain::PlanClass;

/// Rows of a long table shown on the page; the CSV file beside it has them all.
pub const MAX_ROWS: usize = 200;

/// Escapes text for HTML element content and quoted attribute values.
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

const STYLE: &str = "
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2rem auto; max-width: 1040px;
       padding: 0 1rem; color: #222; line-height: 1.4; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5rem 0; font-size: .9rem; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: right; }
th { background: #f5f5f5; } td.l, th.l { text-align: left; }
code, td.cid { font-family: ui-monospace, 'DejaVu Sans Mono', monospace; font-size: .85rem; }
.muted { color: #666; } .bad { color: #b00020; font-weight: 600; } .good { color: #1b7a1b; font-weight: 600; }
.legend span.sw { display: inline-block; width: 1.4em; height: .35em; vertical-align: middle; margin-right: .3em; }
.legend li { display: inline-block; margin-right: 1.2em; }
.legend { list-style: none; padding: 0; }
figure { margin: 0; } svg { max-width: 100%; height: auto; }
";

/// The whole page. `svg` is the chart from [`chart::svg`].
pub fn page(r: &Report, svg: &str) -> String {
    let mut h = String::with_capacity(64 * 1024);
    let run = &r.run;
    let org = run.org.as_deref().unwrap_or("");
    let title = match run.kind {
        crate::domain::RunKind::Tag => format!("ledger report: tag run {} (org={org})", run.id),
        kind => format!(
            "ledger report: {kind} run {} over a set (org={}; a target counts as tagged when it shows the change)",
            run.id,
            if org.is_empty() { "-" } else { org }
        ),
    };
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<h1>{}</h1>\n",
        esc(&title),
        esc(&title)
    );
    summary(&mut h, r);
    section_chart(&mut h, r, svg);
    section_passes(&mut h, r);
    section_stragglers(&mut h, r);
    section_owned_by_others(&mut h, r);
    section_owners(&mut h, r);
    let _ = write!(
        h,
        "<h2>Files</h2>\n<p>Beside this page: {}, and the chart alone as \
         <a href=\"convergence.svg\">convergence.svg</a>.</p>\n\
         <p class=\"muted\">Written by ledger {} from the stored history of the ledger; nothing here \
         was read from the cluster when the report was made.</p>\n</body>\n</html>\n",
        super::files::ALL
            .iter()
            .map(|(n, _)| format!("<a href=\"{0}\">{0}</a>", esc(n)))
            .collect::<Vec<_>>()
            .join(", "),
        esc(env!("CARGO_PKG_VERSION"))
    );
    h
}

fn peer_cell(r: &Report, peer: &str) -> String {
    let i = r.peers.iter().position(|p| p == peer).unwrap_or(0);
    let write = if r.write_peer.as_deref() == Some(peer) { " (writes)" } else { "" };
    format!(
        "<span title=\"{}\" style=\"color:{}\">{}</span>{write}",
        esc(peer),
        chart::color_hex(i),
        esc(&short_peer(peer))
    )
}

fn summary(h: &mut String, r: &Report) {
    let run = &r.run;
    let _ = write!(
        h,
        "<table>\n<tr><th class=\"l\">cluster</th><td class=\"l\">{}</td></tr>\n\
         <tr><th class=\"l\">write peer</th><td class=\"l\"><code>{}</code></td></tr>\n\
         <tr><th class=\"l\">started</th><td class=\"l\">{}</td></tr>\n\
         <tr><th class=\"l\">finished</th><td class=\"l\">{}</td></tr>\n\
         <tr><th class=\"l\">state</th><td class=\"l\">{}{}</td></tr>\n\
         <tr><th class=\"l\">plan</th><td class=\"l\">{} targets, {} already tagged, {} owned by other organisations</td></tr>\n\
         </table>\n",
        esc(&run.cluster),
        esc(r.write_peer.as_deref().unwrap_or("-")),
        esc(&run.started_at),
        esc(run.finished_at.as_deref().unwrap_or("-")),
        esc(run.state.as_ref()),
        if run.dry_run { " (dry run: nothing was sent)" } else { "" },
        r.planned(PlanClass::Target),
        r.planned(PlanClass::Already),
        r.planned(PlanClass::Conflict),
    );
    if r.every_peer_converged() {
        let last = r.peers.iter().filter_map(|p| r.converged_after(p)).fold(0.0, f64::max);
        let _ = writeln!(
            h,
            "<p class=\"good\">Converged: every peer showed every target tagged {last:.1} s after the run started.</p>"
        );
    } else if r.converged() {
        let last = r.peers.iter().filter_map(|p| r.converged_after(p)).fold(0.0, f64::max);
        let _ = writeln!(
            h,
            "<p class=\"bad\">Converged on the {} peer(s) read, {last:.1} s after the run started; not known for the rest of the cluster.</p>",
            r.peers.len()
        );
    } else if !r.peers.is_empty() {
        let _ = writeln!(
            h,
            "<p class=\"bad\">Not converged: {} target(s) not tagged on some peer at the last verification.</p>",
            r.stragglers.len()
        );
    }
    if let Some(said) = crate::report::unverified(r.membership.as_ref()) {
        let _ = writeln!(h, "<p class=\"bad\" id=\"membership\">{}.</p>", esc(&said));
    }
}

fn section_chart(h: &mut String, r: &Report, svg: &str) {
    h.push_str("<h2>Convergence</h2>\n");
    if r.probes.is_empty() {
        h.push_str("<p class=\"muted\">This run has no convergence samples.</p>\n");
        return;
    }
    // Inline SVG takes its namespace from the HTML parser; the standalone file keeps the attribute.
    let inline = svg.replacen(" xmlns=\"http://www.w3.org/2000/svg\"", "", 1);
    let _ = write!(
        h,
        "<figure>\n{}\n<figcaption class=\"muted\">Targets each peer showed tagged, sample by sample \
         (x: seconds since the run started). Grey vertical lines: pass starts, each followed by its re-pins (shaded); grey horizontal line: \
         all targets (the run's targets and the pins already tagged before it, {} + {}).</figcaption>\n</figure>\n<ul class=\"legend\">\n",
        inline.trim_end(),
        r.planned(PlanClass::Target),
        r.planned(PlanClass::Already)
    );
    for (i, peer) in r.peers.iter().enumerate() {
        let _ = writeln!(
            h,
            "<li><span class=\"sw\" style=\"background:{}\"></span>{}</li>",
            chart::color_hex(i),
            peer_cell(r, peer)
        );
    }
    h.push_str("</ul>\n<table>\n<tr><th class=\"l\">peer</th><th>first read after pass 1</th><th>every target after</th></tr>\n");
    for peer in &r.peers {
        let first = r
            .first_read(1, peer)
            .map(|p| {
                format!(
                    "{} / {} ({:.1}%) at {:.1} s",
                    p.tagged,
                    p.targets,
                    percent(p.tagged, p.targets),
                    p.seconds
                )
            })
            .unwrap_or_else(|| "-".into());
        let after = match r.converged_after(peer) {
            Some(s) => format!("{s:.1} s"),
            None => "<span class=\"bad\">never</span>".into(),
        };
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{after}</td></tr>",
            peer_cell(r, peer),
            esc(&first)
        );
    }
    h.push_str("</table>\n");
}

fn section_passes(h: &mut String, r: &Report) {
    h.push_str("<h2>Passes</h2>\n");
    if r.passes.is_empty() {
        h.push_str("<p class=\"muted\">No pass: nothing was sent.</p>\n");
        return;
    }
    h.push_str(
        "<table id=\"passes\">\n<tr><th>pass</th><th class=\"l\">started</th><th>+s</th><th>targets</th>\
         <th>attempted</th><th>succeeded</th><th>failed</th>",
    );
    for peer in &r.peers {
        let _ = write!(h, "<th>tagged on {}</th>", peer_cell(r, peer));
    }
    h.push_str("</tr>\n");
    let starts = r.pass_starts();
    for p in &r.passes {
        let s = starts.iter().find(|(n, _)| *n == p.pass).map(|(_, s)| format!("{s:.1}"));
        let _ = write!(
            h,
            "<tr><td>{}</td><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
            p.pass,
            esc(&p.started_at),
            s.unwrap_or_default(),
            p.targets,
            p.attempted,
            p.succeeded,
            p.failed
        );
        for peer in &r.peers {
            match r.at_pass_end(p.pass, peer) {
                Some(x) => {
                    let _ = write!(
                        h,
                        "<td>{} <span class=\"muted\">({:.1}%)</span></td>",
                        x.tagged,
                        percent(x.tagged, x.targets)
                    );
                }
                None => h.push_str("<td>-</td>"),
            }
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n<p class=\"muted\">Tagged: what each peer showed at the end of the pass (its verification read).</p>\n");
}

fn section_stragglers(h: &mut String, r: &Report) {
    h.push_str("<h2>Stragglers</h2>\n");
    if r.verified.is_empty() {
        h.push_str(
            "<p class=\"muted\">No peer was verified with a complete snapshot in this run.</p>\n",
        );
        return;
    }
    h.push_str(
        "<table id=\"straggler-counts\">\n<tr><th class=\"l\">peer</th><th>verified by snapshot</th><th>pass</th><th>stragglers</th></tr>\n",
    );
    let mut verified: Vec<_> = r.verified.iter().collect();
    verified.sort_by_key(|v| r.peers.iter().position(|p| *p == v.peer));
    for v in verified {
        let n = r.stragglers.iter().filter(|s| s.peer == v.peer).count();
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{n}</td></tr>",
            peer_cell(r, &v.peer),
            v.snapshot_id,
            v.pass
        );
    }
    h.push_str("</table>\n");
    if r.stragglers.is_empty() {
        if r.every_member_read() {
            h.push_str("<p class=\"good\">None: every peer's last verification snapshot shows every target tagged.</p>\n");
        } else {
            h.push_str("<p class=\"good\">None: the last verification snapshot of each peer read shows every target tagged.</p>\n");
        }
        return;
    }
    h.push_str("<table id=\"stragglers\">\n<tr><th class=\"l\">peer</th><th class=\"l\">cid</th><th class=\"l\">state</th><th class=\"l\">org seen</th></tr>\n");
    for s in r.stragglers.iter().take(MAX_ROWS) {
        let _ = writeln!(
            h,
            "<tr><td class=\"l\">{}</td><td class=\"l cid\">{}</td><td class=\"l\">{}</td><td class=\"l\">{}</td></tr>",
            peer_cell(r, &s.peer),
            esc(&s.cid),
            esc(&s.state),
            esc(s.org.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>\n");
    more(h, r.stragglers.len(), "stragglers.csv");
}

/// The pins another organisation owns: left alone, as a shared cluster expects; conflicts when the
/// run asked for them by name (`--only`).
fn section_owned_by_others(h: &mut String, r: &Report) {
    let (title, what) = if r.asked_by_name {
        (
            "Conflicts",
            "were asked for with --only, belong to another organisation and were left alone",
        )
    } else {
        ("Owned by other organisations", "belong to another organisation and were left alone")
    };
    let _ = writeln!(h, "<h2>{title}</h2>");
    let others = &r.owned_by_others;
    if others.is_empty() {
        h.push_str(
            "<p class=\"muted\">None: no pin of the plan belonged to another organisation.</p>\n",
        );
        return;
    }
    let _ = writeln!(h, "<p>{} pin(s) {what}.</p>", others.len());
    h.push_str(
        "<table id=\"owned-by-others\">\n<tr><th class=\"l\">cid</th><th class=\"l\">owner</th></tr>\n",
    );
    for c in others.iter().take(MAX_ROWS) {
        let _ = writeln!(
            h,
            "<tr><td class=\"l cid\">{}</td><td class=\"l\">{}</td></tr>",
            esc(&c.cid),
            esc(c.owner.as_deref().unwrap_or(""))
        );
    }
    h.push_str("</table>\n");
    more(h, others.len(), "owned_by_others.csv");
}

fn section_owners(h: &mut String, r: &Report) {
    h.push_str("<h2>Owners</h2>\n");
    if r.owners.is_empty() {
        h.push_str("<p class=\"muted\">No complete snapshot of this cluster.</p>\n");
        return;
    }
    // Named orgs first (alphabetically), unowned last when any peer has some.
    let unowned = r.owners.iter().any(|o| o.unowned > 0);
    let orgs = crate::store::incident::org_names(&r.owners);
    let orgs = orgs.into_iter().map(Some).chain(unowned.then_some(None));
    h.push_str(
        "<p class=\"muted\">Pins per organisation in each peer's latest complete snapshot.</p>\n",
    );
    h.push_str("<table id=\"owners\">\n<tr><th class=\"l\">org</th>");
    for o in &r.owners {
        let _ = write!(
            h,
            "<th>{} <span class=\"muted\">#{}</span></th>",
            peer_cell(r, &o.peer),
            o.snapshot
        );
    }
    h.push_str("</tr>\n");
    for org in orgs {
        let _ = write!(
            h,
            "<tr><td class=\"l\">{}</td>",
            match org {
                Some(o) => esc(o),
                None => "<em>unowned</em>".into(),
            }
        );
        for o in &r.owners {
            let _ = write!(h, "<td>{}</td>", o.count(org));
        }
        h.push_str("</tr>\n");
    }
    h.push_str("</table>\n");
}

fn more(h: &mut String, n: usize, file: &str) {
    if n > MAX_ROWS {
        let _ = writeln!(
            h,
            "<p class=\"muted\">… and {} more in <a href=\"{1}\">{1}</a>.</p>",
            n - MAX_ROWS,
            esc(file)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup_and_quotes() {
        assert_eq!(esc(r#"<a href="x">&'"#), "&lt;a href=&quot;x&quot;&gt;&amp;&#39;");
        assert_eq!(esc("plain"), "plain");
    }
}
