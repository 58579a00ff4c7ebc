//! The markdown table of medians, ratios and verdicts.

use std::fmt::Write;

use super::{format_number, Cell, Judged, Results, Row};

fn cell_text(cell: &Cell) -> String {
    match cell {
        Cell::Median(v) => format_number(*v),
        Cell::Unavailable(reason) => reason.clone(),
        Cell::None => "—".to_owned(),
    }
}

fn ratio_text(judged: &Judged) -> String {
    judged
        .ratio
        .map_or_else(|| "—".to_owned(), |r| format!("{r:.3}×"))
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
    let _ = writeln!(
        out,
        "Medians of {} runs (idle: {}, failure: {}); bulk {} MiB per run; {} round trips; {} \
         connections per rate run; {} idle connections; {} ms outage. Ratios are rackd / native.\n",
        plan.reps,
        plan.idle_reps,
        plan.failure_reps,
        plan.bulk_bytes >> 20,
        plan.round_trips,
        plan.connections,
        plan.idle_connections,
        plan.outage_ms
    );
    out.push_str(
        "| metric | unit | native | released | managed | released / native | managed / native \
         | target | released | managed |\n",
    );
    out.push_str("|---|---|--:|--:|--:|--:|--:|---|---|---|\n");
    for row in &results.rows {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.label,
            row.unit,
            cell_text(&row.native),
            cell_text(&row.released.cell),
            cell_text(&row.managed.cell),
            ratio_text(&row.released),
            ratio_text(&row.managed),
            target_text(row),
            row.released.verdict.as_str(),
            row.managed.verdict.as_str(),
        );
    }
    out.push_str(
        "\nReleased: rackd on the client only (the server has none). Managed: rackd on both \
         hosts. Restore is timed from the restore command to the first echo of a probe sending \
         a byte every few ms. Daemon CPU and RSS come from /proc/<pid>/stat and status.\n",
    );
    out
}
