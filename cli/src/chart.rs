//! A grouped bar chart of ops/s (one group per operation, one bar per backend) as plain SVG.

use std::fmt::Write;

use crate::results::{BackendStats, OPS};

const COLORS: [&str; 6] = [
    "#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1",
];

/// The chart of `results`.
pub fn svg(results: &[BackendStats]) -> String {
    let (width, height, left, bottom, top) = (900u64, 420u64, 70u64, 60u64, 40u64);
    let plot_h = height - bottom - top;
    let max = results
        .iter()
        .flat_map(|b| b.ops.iter().map(|o| o.ops_per_sec))
        .max()
        .unwrap_or(1)
        .max(1);
    let groups = u64::try_from(OPS.len()).unwrap_or(1);
    let bars = u64::try_from(results.len()).unwrap_or(1).max(1);
    let group_w = (width - left - 20) / groups;
    let bar_w = (group_w - 20) / bars;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = write!(
        s,
        r#"<text x="{left}" y="22" font-size="15">stowage bench: operations per second</text>"#
    );
    let _ = write!(
        s,
        r#"<line x1="{left}" y1="{top}" x2="{left}" y2="{y}" stroke="black"/><line x1="{left}" y1="{y}" x2="{x}" y2="{y}" stroke="black"/>"#,
        y = height - bottom,
        x = width - 10
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="end">{max}</text>"#,
        left - 4,
        top + 4
    );
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="end">0</text>"#,
        left - 4,
        height - bottom
    );
    for (g, op) in OPS.iter().enumerate() {
        let g = u64::try_from(g).unwrap_or(0);
        let x0 = left + 10 + g * group_w;
        for (b, backend) in results.iter().enumerate() {
            let value = backend
                .ops
                .iter()
                .find(|o| o.op == *op)
                .map_or(0, |o| o.ops_per_sec);
            let h = value * plot_h / max;
            let x = x0 + u64::try_from(b).unwrap_or(0) * bar_w;
            let _ = write!(
                s,
                r#"<rect x="{x}" y="{}" width="{}" height="{h}" fill="{}"><title>{} {op}: {value} ops/s</title></rect>"#,
                height - bottom - h,
                bar_w.saturating_sub(2),
                COLORS[b % COLORS.len()],
                backend.name
            );
        }
        let _ = write!(
            s,
            r#"<text x="{}" y="{}" text-anchor="middle">{op}</text>"#,
            x0 + group_w / 2 - 10,
            height - bottom + 18
        );
    }
    for (b, backend) in results.iter().enumerate() {
        let x = left + u64::try_from(b).unwrap_or(0) * 140;
        let _ = write!(
            s,
            r#"<rect x="{x}" y="{}" width="12" height="12" fill="{}"/><text x="{}" y="{}">{}</text>"#,
            height - 24,
            COLORS[b % COLORS.len()],
            x + 16,
            height - 14,
            backend.name
        );
    }
    s.push_str("</svg>\n");
    s
}
