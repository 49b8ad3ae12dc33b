//! The chart: in-zone share and p99 per variant and scenario, and the local share over time
//! while the local zone was slow. Hand-written SVG, no dependencies. Pure.

use std::fmt::Write as _;

use crate::plan::{Scenario, Variant};
use crate::report::Row;

const WIDTH: f64 = 960.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const PANEL: f64 = 230.0;
const GAP: f64 = 80.0;
const TOP: f64 = 110.0;

fn colour(variant: Variant) -> &'static str {
    // Okabe–Ito: tells apart for colour-blind readers too.
    match variant {
        Variant::Balancer => "#0072B2",
        Variant::Fixed50 => "#56B4E9",
        Variant::BalanceList => "#E69F00",
        Variant::Haproxy => "#D55E00",
        Variant::BalancerXds => "#009E73",
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

fn short(scenario: Scenario) -> &'static str {
    match scenario {
        Scenario::Balanced => "balanced",
        Scenario::SlowInstance => "1 instance +20 ms",
        Scenario::ClientStarved => "client CPU-starved",
        Scenario::SlowZone => "local zone +40 ms",
        Scenario::Killed => "1 instance killed",
    }
}

/// The chart for `rows`, titled `title`, with `subtitle` (the conditions) under it.
pub(crate) fn chart(rows: &[Row], title: &str, subtitle: &str) -> String {
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = draw(&mut out, rows, title, subtitle);
    out
}

fn draw(out: &mut String, rows: &[Row], title: &str, subtitle: &str) -> std::fmt::Result {
    let height = TOP + 20.0 + 3.0 * PANEL + 2.0 * GAP + 40.0;
    writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="12">"#
    )?;
    writeln!(
        out,
        r##"<rect width="100%" height="100%" fill="#ffffff"/>"##
    )?;
    writeln!(
        out,
        r#"<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{}</text>"#,
        escape(title)
    )?;
    writeln!(
        out,
        r##"<text x="{LEFT}" y="42" font-size="11" fill="#555555">{}</text>"##,
        escape(subtitle)
    )?;
    let variants: Vec<Variant> = Variant::ALL
        .into_iter()
        .filter(|v| rows.iter().any(|r| r.variant == *v))
        .collect();
    // Two columns, two rows.
    for (i, variant) in variants.iter().enumerate() {
        let x = LEFT + if i % 2 == 0 { 0.0 } else { 420.0 };
        let y = 56.0 + 18.0 * (i / 2) as f64;
        writeln!(
            out,
            r#"<rect class="legend" x="{x}" y="{y}" width="12" height="12" fill="{}"/><text x="{}" y="{}">({}) {}</text>"#,
            colour(*variant),
            x + 18.0,
            y + 10.0,
            variant.letter(),
            escape(variant.label())
        )?;
    }

    let scenarios: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| rows.iter().any(|r| r.scenario == *s))
        .collect();
    let top = TOP + 20.0;
    bars(
        out,
        rows,
        &scenarios,
        &variants,
        top,
        "Calls served in the client's zone",
        &Scale::Linear { max: 1.0 },
        |r| r.local_share,
        |v| format!("{:.0}", v * 100.0),
    )?;
    let (low, high) = p99_range(rows);
    bars(
        out,
        rows,
        &scenarios,
        &variants,
        top + PANEL + GAP,
        "p99 latency (ms, log scale)",
        &Scale::Log { low, high },
        |r| r.p99_ms,
        |v| {
            if v < 10.0 {
                format!("{v:.1}")
            } else {
                format!("{v:.0}")
            }
        },
    )?;
    timeline(out, rows, top + 2.0 * (PANEL + GAP))?;
    writeln!(out, "</svg>")
}

enum Scale {
    Linear { max: f64 },
    Log { low: f64, high: f64 },
}

impl Scale {
    /// 0 (bottom) to 1 (top).
    fn position(&self, value: f64) -> f64 {
        match *self {
            Self::Linear { max } => (value / max).clamp(0.0, 1.0),
            Self::Log { low, high } => ((value.max(low).log10() - low.log10())
                / (high.log10() - low.log10()))
            .clamp(0.0, 1.0),
        }
    }

    fn ticks(&self) -> Vec<(f64, String)> {
        match *self {
            Self::Linear { max } => (0..=4)
                .map(|i| {
                    let v = max * f64::from(i) / 4.0;
                    (v, format!("{:.0} %", v * 100.0))
                })
                .collect(),
            Self::Log { low, high } => {
                let mut ticks = Vec::new();
                let mut decade = low;
                while decade <= high * 1.0001 {
                    for step in [1.0, 2.0, 5.0] {
                        let v = decade * step;
                        if v <= high * 1.0001 {
                            let text = if v < 1.0 {
                                format!("{v:.1}")
                            } else {
                                format!("{v:.0}")
                            };
                            ticks.push((v, text));
                        }
                    }
                    decade *= 10.0;
                }
                ticks
            }
        }
    }
}

/// Powers of ten around the p99s.
fn p99_range(rows: &[Row]) -> (f64, f64) {
    let values: Vec<f64> = rows.iter().map(|r| r.p99_ms).filter(|v| *v > 0.0).collect();
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(0.0, f64::max);
    if values.is_empty() {
        return (0.1, 100.0);
    }
    let low = 10f64.powf(min.log10().floor());
    let high = 10f64.powf(max.log10().ceil()).max(low * 10.0);
    (low, high)
}

#[allow(clippy::too_many_arguments)]
fn bars(
    out: &mut String,
    rows: &[Row],
    scenarios: &[Scenario],
    variants: &[Variant],
    top: f64,
    title: &str,
    scale: &Scale,
    value: impl Fn(&Row) -> f64,
    label: impl Fn(f64) -> String,
) -> std::fmt::Result {
    let bottom = top + PANEL;
    writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">{}</text>"#,
        top - 22.0,
        escape(title)
    )?;
    axis(out, top, scale)?;
    let plot = WIDTH - LEFT - RIGHT;
    let group = plot / scenarios.len().max(1) as f64;
    let bar = (group * 0.8) / variants.len().max(1) as f64;
    for (s, scenario) in scenarios.iter().enumerate() {
        let x0 = LEFT + group * s as f64 + group * 0.1;
        writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
            x0 + group * 0.4,
            bottom + 18.0,
            escape(short(*scenario))
        )?;
        for (v, variant) in variants.iter().enumerate() {
            let Some(row) = rows
                .iter()
                .find(|r| r.scenario == *scenario && r.variant == *variant)
            else {
                continue;
            };
            let value = value(row);
            let h = PANEL * scale.position(value);
            let x = x0 + bar * v as f64;
            writeln!(
                out,
                r#"<rect class="bar" x="{x:.1}" y="{:.1}" width="{:.1}" height="{h:.1}" fill="{}"><title>({}) {}: {}</title></rect>"#,
                bottom - h,
                bar - 2.0,
                colour(*variant),
                variant.letter(),
                escape(scenario.label()),
                label(value)
            )?;
            writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" text-anchor="middle" font-size="10">{}</text>"#,
                x + (bar - 2.0) / 2.0,
                bottom - h - 3.0,
                label(value)
            )?;
        }
    }
    Ok(())
}

fn axis(out: &mut String, top: f64, scale: &Scale) -> std::fmt::Result {
    let bottom = top + PANEL;
    for (value, text) in scale.ticks() {
        let y = bottom - PANEL * scale.position(value);
        writeln!(
            out,
            r##"<line x1="{LEFT}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#dddddd"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            escape(&text)
        )?;
    }
    writeln!(
        out,
        r##"<line x1="{LEFT}" y1="{bottom}" x2="{}" y2="{bottom}" stroke="#333333"/>"##,
        WIDTH - RIGHT
    )
}

fn timeline(out: &mut String, rows: &[Row], top: f64) -> std::fmt::Result {
    let slow: Vec<&Row> = rows
        .iter()
        .filter(|r| r.scenario == Scenario::SlowZone && !r.timeline.is_empty())
        .collect();
    writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" font-size="14" font-weight="bold">Local zone 40 ms slow, then recovered: calls served in the client's zone over time</text>"#,
        top - 22.0
    )?;
    let scale = Scale::Linear { max: 1.0 };
    axis(out, top, &scale)?;
    let bottom = top + PANEL;
    let end = slow
        .iter()
        .filter_map(|r| r.timeline.last().map(|w| w[0]))
        .fold(1.0, f64::max);
    let plot = WIDTH - LEFT - RIGHT;
    let x_of = |t: f64| LEFT + plot * (t / end).clamp(0.0, 1.0);
    if let Some(row) = slow.first()
        && let (Some(slowed), Some(recovered)) = (row.slowed_s, row.recovered_s)
    {
        writeln!(
            out,
            r##"<rect class="slow" x="{:.1}" y="{top}" width="{:.1}" height="{PANEL}" fill="#f2d7d5" opacity="0.6"/><text x="{:.1}" y="{}" font-size="10">zone slow</text>"##,
            x_of(slowed),
            x_of(recovered) - x_of(slowed),
            x_of(slowed) + 4.0,
            top + 12.0
        )?;
    }
    let mut t = 0.0;
    while t <= end + 1e-9 {
        writeln!(
            out,
            r#"<text x="{:.1}" y="{}" text-anchor="middle" font-size="10">{t:.0} s</text>"#,
            x_of(t),
            bottom + 14.0
        )?;
        t += if end > 20.0 { 5.0 } else { 1.0 };
    }
    for row in slow {
        let points: Vec<String> = row
            .timeline
            .iter()
            .map(|[t, share]| format!("{:.1},{:.1}", x_of(*t), bottom - PANEL * share))
            .collect();
        writeln!(
            out,
            r#"<polyline class="share" fill="none" stroke="{}" stroke-width="2" points="{}"><title>({}) {}</title></polyline>"#,
            colour(row.variant),
            points.join(" "),
            row.variant.letter(),
            escape(row.variant.label())
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Spill;

    fn row(scenario: Scenario, variant: Variant, local_share: f64, p99_ms: f64) -> Row {
        Row {
            scenario,
            variant,
            rounds: 1,
            calls_per_s: 1000.0,
            calls_per_s_min: 1000.0,
            calls_per_s_max: 1000.0,
            p50_ms: p99_ms / 2.0,
            p99_ms,
            local_share,
            faulted_share: None,
            failed: 0,
            calls: 1000,
            spills: vec![Spill {
                baseline: 1.0,
                spilled_after_s: Some(1.0),
                back_after_s: None,
            }],
            timeline: if scenario == Scenario::SlowZone {
                vec![[0.5, 1.0], [1.0, 0.5], [1.5, 0.9]]
            } else {
                Vec::new()
            },
            slowed_s: Some(0.5),
            recovered_s: Some(1.0),
            task_shares: Vec::new(),
        }
    }

    #[test]
    fn the_chart_is_well_formed_svg_with_a_bar_per_row_and_panel_and_a_line_per_variant() {
        let rows = [
            row(Scenario::Balanced, Variant::Balancer, 1.0, 0.8),
            row(Scenario::Balanced, Variant::Haproxy, 0.55, 2.5),
            row(Scenario::SlowZone, Variant::Balancer, 0.7, 45.0),
            row(Scenario::SlowZone, Variant::Haproxy, 0.3, 44.0),
        ];
        let text = chart(&rows, "A & B <test>", "conditions");
        let document = roxmltree::Document::parse(&text).expect("well-formed SVG");
        let root = document.root_element();
        assert_eq!(root.tag_name().name(), "svg");
        let count = |class: &str| {
            document
                .descendants()
                .filter(|n| n.attribute("class") == Some(class))
                .count()
        };
        assert_eq!(count("bar"), 2 * rows.len(), "in-zone and p99 panels");
        assert_eq!(count("share"), 2, "one line per variant in the slow zone");
        assert_eq!(count("slow"), 1);
        assert_eq!(count("legend"), 2);
        let texts: String = document.descendants().filter_map(|n| n.text()).collect();
        assert!(texts.contains("A & B <test>"));
        assert!(texts.contains("HAProxy hop"));
    }

    #[test]
    fn a_log_scale_spans_powers_of_ten_around_the_values() {
        let rows = [
            row(Scenario::Balanced, Variant::Balancer, 1.0, 0.8),
            row(Scenario::SlowZone, Variant::Balancer, 1.0, 45.0),
        ];
        assert_eq!(p99_range(&rows), (0.1, 100.0));
        let scale = Scale::Log {
            low: 0.1,
            high: 100.0,
        };
        assert!((scale.position(1.0) - 1.0 / 3.0).abs() < 1e-9);
        let ticks: Vec<String> = scale.ticks().into_iter().map(|(_, t)| t).collect();
        assert_eq!(
            ticks,
            ["0.1", "0.2", "0.5", "1", "2", "5", "10", "20", "50", "100"]
        );
    }
}
