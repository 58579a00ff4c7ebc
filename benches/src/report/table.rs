//! The markdown table of medians, ratios and verdicts.

use std::fmt::Write;

use super::{format_number, Cell, Judged, Results, Row};

/// A median with its interquartile range relative to it, e.g. `23.6 (−8/+6 %)`; the range
/// only from three samples on.
fn cell_text(judged: &Judged) -> String {
    match &judged.cell {
        Cell::Median(v) => match judged.spread {
            Some(s) if s.n >= 3 => format!(
                "{} ({:+.0}/{:+.0} %)",
                format_number(*v),
                s.p25 * 100.0,
                s.p75 * 100.0
            ),
            _ => format_number(*v),
        },
        Cell::Unavailable(reason) => reason.clone(),
        Cell::None => "—".to_owned(),
    }
}

fn ratio_text(judged: &Judged) -> String {
    judged
        .ratio
        .map_or_else(|| "—".to_owned(), |r| format!("{r:.3}×"))
}

/// The A/A ratio and the noise derived from it, e.g. `1.04× (±12 %)`.
fn noise_text(row: &Row) -> String {
    match (row.native_b.ratio, row.noise) {
        (Some(r), Some(n)) => format!("{r:.3}× (±{:.0} %)", n * 100.0),
        _ => "—".to_owned(),
    }
}

fn target_text(row: &Row) -> String {
    match (&row.released.target, &row.managed.target) {
        (None, None) => "—".to_owned(),
        (Some(r), Some(m)) if r == m => format!("{r} (both)"),
        (r, m) => format!(
            "released {}; managed {}",
            r.as_deref().unwrap_or("—"),
            m.as_deref().unwrap_or("—")
        ),
    }
}

/// The results as a markdown document: conditions, then one row per metric.
pub fn render(results: &Results) -> String {
    let (meta, plan) = (&results.meta, &results.plan);
    let mut out = String::new();
    let _ = writeln!(out, "# rackd end-to-end benchmark ({} mode)\n", plan.name);
    if let Some(error) = &results.error {
        let _ = writeln!(
            out,
            "**Incomplete: the run stopped with an error; what follows is what was measured \
             before it.** {error}\n"
        );
    }
    let _ = writeln!(
        out,
        "{} UTC · {} cores ({}) · Linux {} · load at start {} · rackd config: {} · {:.0} s\n",
        meta.date_utc,
        meta.cores,
        meta.cpu_model,
        meta.kernel,
        meta.loadavg_at_start,
        meta.rackd_config,
        meta.duration_s
    );
    let _ = writeln!(out, "Load average at the end {}.\n", meta.loadavg_at_end);
    let _ = writeln!(
        out,
        "Medians of {} runs (idle: {}, failure: {}), modes interleaved run by run; bulk {} MiB \
         per run; {} round trips; {} connections per rate run; {} idle connections; outage {} ms \
         and at least {} ms after detection. After each median: first and third quartile \
         relative to it. Ratios are mode / native.\n",
        plan.reps,
        plan.idle_reps,
        plan.failure_reps,
        plan.bulk_bytes >> 20,
        plan.round_trips,
        plan.connections,
        plan.idle_connections,
        plan.outage_ms,
        plan.held_ms
    );
    out.push_str(
        "| metric | unit | native | native B | table only | released | managed \
         | A/A: native B / native (noise) | table only / native | released / native \
         | managed / native | target | released | managed |\n",
    );
    out.push_str("|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|---|---|\n");
    for row in &results.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.label,
            row.unit,
            cell_text(&row.native),
            cell_text(&row.native_b),
            cell_text(&row.table_only),
            cell_text(&row.released),
            cell_text(&row.managed),
            noise_text(row),
            ratio_text(&row.table_only),
            ratio_text(&row.released),
            ratio_text(&row.managed),
            target_text(row),
            row.released.verdict.text(row.noise),
            row.managed.verdict.text(row.noise),
        );
    }
    out.push_str(
        "\nNative B: native TCP in a second topology; the noise of a ratio is the larger of \
         |native B / native − 1| and half the interquartile range of either native's samples, \
         and a ratio closer to 1 than that is reported as within noise rather than pass or \
         miss. Table only: rackd's nftables table in both hosts, no daemon (started, then \
         SIGKILLed). Released: rackd on the client only (the server has none). Managed: rackd \
         on both hosts. Restore is timed from the restore command to the first echo of a probe \
         sending a byte every few ms. Daemon CPU and RSS come from /proc/<pid>/stat and \
         status.\n",
    );
    if let Some(c) = &results.table_cost {
        let _ = writeln!(
            out,
            "\n## Per-packet cost of rackd's table\n\n{} rounds of three runs of {} one-byte \
             round trips on one topology — rackd's table in both hosts; no table at all (removed \
             with `nft delete table`); an empty table with chains at rackd's two hooks — the \
             order rotating. Round trip without any table (median of the runs' medians): {:.0} \
             ns. rackd's table − no table, median over the rounds: **{:+.0} ns per round trip** \
             (quartiles {:+.0} / {:+.0} ns), {:+.2} % of the round trip; a round trip passes \
             the chains {} times (two packets, each through `out` on the sender and `pre` on \
             the receiver): {:+.0} ns per packet and chain. Empty chains at the same hooks − no \
             table: {} per round trip (what entering netfilter costs when no other table \
             hooks in).",
            c.pairs,
            plan.cost_round_trips,
            c.base_ns,
            c.delta_ns,
            c.delta_p25_ns,
            c.delta_p75_ns,
            c.share_of_round_trip * 100.0,
            super::cost::TRAVERSALS_PER_ROUND_TRIP,
            c.per_traversal_ns,
            c.hooks_ns
                .map_or_else(|| "not measured".to_owned(), |h| format!("{h:+.0} ns")),
        );
    }
    out
}
