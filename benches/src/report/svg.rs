//! A hand-written SVG bar chart of the rackd / native ratios, with native at 1.0 and the
//! targets marked.

use std::fmt::Write;

use super::{Judged, Row, Verdict};
use crate::metrics::{metric, Goal};

const WIDTH: f64 = 960.0;
const LABEL_WIDTH: f64 = 330.0;
const PLOT_WIDTH: f64 = 500.0;
const BAR_HEIGHT: f64 = 12.0;
const ROW_HEIGHT: f64 = 36.0;
const TOP: f64 = 60.0;
const RELEASED_COLOUR: &str = "#7fb3d5";
const MANAGED_COLOUR: &str = "#1f618d";
const MISS_COLOUR: &str = "#c0392b";
/// Ratios beyond this are drawn clipped, with their value written.
const MAX_SCALE: f64 = 4.0;

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The plot of every row that has a ratio.
pub fn render(rows: &[Row]) -> String {
    let plotted: Vec<&Row> = rows
        .iter()
        .filter(|r| r.released.ratio.is_some() || r.managed.ratio.is_some())
        .collect();
    let largest = plotted
        .iter()
        .flat_map(|r| [r.released.ratio, r.managed.ratio])
        .flatten()
        .fold(1.5_f64, f64::max);
    let scale_max = (largest * 1.1).min(MAX_SCALE);
    let x = |ratio: f64| LABEL_WIDTH + ratio.clamp(0.0, scale_max) / scale_max * PLOT_WIDTH;
    let height = TOP + plotted.len() as f64 * ROW_HEIGHT + 40.0;

    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(svg, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="10" y="22" font-size="16" font-weight="bold">rackd / native (medians; 1.0 = native)</text>"#
    );
    for (i, (name, colour)) in [("released", RELEASED_COLOUR), ("managed", MANAGED_COLOUR)]
        .iter()
        .enumerate()
    {
        let lx = LABEL_WIDTH + i as f64 * 110.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{lx}" y="32" width="12" height="12" fill="{colour}"/><text x="{}" y="43">{name}</text>"#,
            lx + 16.0
        );
    }
    let _ = writeln!(
        svg,
        r#"<line x1="{0}" y1="31" x2="{0}" y2="45" stroke="black" stroke-width="2"/><text x="{1}" y="43">target</text>"#,
        LABEL_WIDTH + 226.0,
        LABEL_WIDTH + 232.0
    );
    let _ = writeln!(
        svg,
        r#"<rect x="{}" y="32" width="12" height="12" fill="white" stroke="{MISS_COLOUR}" stroke-width="2"/><text x="{}" y="43" fill="{MISS_COLOUR}">missed</text>"#,
        LABEL_WIDTH + 300.0,
        LABEL_WIDTH + 316.0
    );
    let bottom = height - 30.0;
    // A light grid every 0.5, the native line at 1.0 dashed.
    let mut tick = 0.0;
    while tick <= scale_max + 1e-9 {
        let stroke = if (tick - 1.0f64).abs() < 1e-9 {
            r##"stroke="#555" stroke-dasharray="4 3""##
        } else {
            r##"stroke="#ddd""##
        };
        let _ = writeln!(
            svg,
            r#"<line x1="{0:.1}" y1="{TOP}" x2="{0:.1}" y2="{bottom}" {stroke}/><text x="{0:.1}" y="{1}" text-anchor="middle">{tick:.1}</text>"#,
            x(tick),
            bottom + 14.0
        );
        tick += 0.5;
    }
    for (i, row) in plotted.iter().enumerate() {
        let y = TOP + i as f64 * ROW_HEIGHT;
        let better = if row.higher_is_better {
            "higher is better"
        } else {
            "lower is better"
        };
        let _ = writeln!(
            svg,
            r##"<text x="10" y="{}">{}</text><text x="10" y="{}" fill="#777" font-size="10">{} ({better})</text>"##,
            y + 12.0,
            escape(row.label),
            y + 25.0,
            escape(row.unit)
        );
        let goals = [
            (
                &row.released,
                metric(row.metric).released,
                RELEASED_COLOUR,
                y + 2.0,
            ),
            (
                &row.managed,
                metric(row.metric).managed,
                MANAGED_COLOUR,
                y + 4.0 + BAR_HEIGHT,
            ),
        ];
        for (judged, goal, colour, by) in goals {
            bar(&mut svg, judged, goal, colour, by, x);
        }
    }
    svg.push_str("</svg>\n");
    svg
}

fn bar(
    svg: &mut String,
    judged: &Judged,
    goal: Option<Goal>,
    colour: &str,
    y: f64,
    x: impl Fn(f64) -> f64,
) {
    let Some(ratio) = judged.ratio else {
        return;
    };
    let missed = judged.verdict == Verdict::Miss;
    let outline = if missed {
        format!(r#" stroke="{MISS_COLOUR}" stroke-width="2""#)
    } else {
        String::new()
    };
    let _ = writeln!(
        svg,
        r#"<rect x="{LABEL_WIDTH}" y="{y}" width="{:.1}" height="{BAR_HEIGHT}" fill="{colour}"{outline}/>"#,
        x(ratio) - LABEL_WIDTH,
    );
    let mut text_x = x(ratio);
    if let Some(Goal::RatioAtLeast(t) | Goal::RatioAtMost(t)) = goal {
        let _ = writeln!(
            svg,
            r#"<line x1="{0:.1}" y1="{1}" x2="{0:.1}" y2="{2}" stroke="black" stroke-width="2"/>"#,
            x(t),
            y - 1.0,
            y + BAR_HEIGHT + 1.0
        );
        text_x = text_x.max(x(t));
    }
    let (text_colour, suffix) = if missed {
        (MISS_COLOUR, " missed")
    } else {
        ("black", "")
    };
    let _ = writeln!(
        svg,
        r#"<text x="{:.1}" y="{:.1}" font-size="10" fill="{text_colour}">{ratio:.3}{suffix}</text>"#,
        text_x + 4.0,
        y + BAR_HEIGHT - 2.0
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Mode;
    use crate::report::summarize;
    use crate::samples::Samples;

    #[test]
    fn plot_has_a_bar_per_ratio_and_escapes_labels() {
        let mut s = Samples::default();
        s.add("rr_p50", Mode::Native, 40.0);
        s.add("rr_p50", Mode::Released, 40.0);
        s.add("rr_p50", Mode::Managed, 60.0);
        let svg = render(&summarize(&s));
        assert!(svg.starts_with("<svg"));
        assert!(svg.trim_end().ends_with("</svg>"));
        // One bar missed its target (1.5× > 1.10×), the other met it (1.0× ≤ 1.01×).
        assert_eq!(svg.matches(" missed<").count(), 1, "{svg}");
        assert!(svg.contains(">1.500 missed<"), "{svg}");
        assert!(svg.contains(">1.000<"), "{svg}");
        assert_eq!(escape("a<b & c>"), "a&lt;b &amp; c&gt;");
    }
}
