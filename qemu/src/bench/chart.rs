//! The bench's picture: one panel per target, the last benches side by side (one column
//! per commit), every run of every tool a point in the tool's colour, and the zcnic/DPDK
//! ratio written above each column. Drawn with plotters' SVG backend.

use super::history::Entry;
use super::plan::{Target, Tool};
use plotters::prelude::*;

const PANEL: (u32, u32) = (960, 300);

/// Each tool's colour, the same in every panel.
pub fn colour(tool: Tool) -> RGBColor {
    match tool {
        Tool::Kernel => RGBColor(127, 127, 127),
        Tool::Testpmd => RGBColor(31, 119, 180),
        Tool::Zcnic => RGBColor(214, 39, 40),
        Tool::Ceiling => RGBColor(44, 160, 44),
        Tool::Hybrid => RGBColor(255, 127, 14),
    }
}

fn err(e: impl std::fmt::Display) -> String {
    format!("drawing the bench chart: {e}")
}

/// The chart of `entries` (oldest first) as SVG text.
pub fn svg(entries: &[Entry]) -> Result<String, String> {
    let mut out = String::new();
    {
        let size = (PANEL.0, PANEL.1 * Target::ALL.len() as u32);
        let root = SVGBackend::with_string(&mut out, size).into_drawing_area();
        root.fill(&WHITE).map_err(err)?;
        let panels = root.split_evenly((Target::ALL.len(), 1));
        for (area, target) in panels.iter().zip(Target::ALL) {
            panel(area, target, entries)?;
        }
        root.present().map_err(err)?;
    }
    Ok(out)
}

fn panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, plotters::coord::Shift>,
    target: Target,
    entries: &[Entry],
) -> Result<(), String> {
    let n = entries.len().max(1);
    let top = entries
        .iter()
        .flat_map(|e| {
            target
                .tools()
                .iter()
                .flat_map(|&t| e.runs(target, t).to_vec())
        })
        .fold(0.0, f64::max);
    let ymax = if top > 0.0 { top * 1.25 } else { 1.0 };
    let label = |x: &f64| -> String {
        let i = x.round();
        if (x - i).abs() > 1e-6 || i < 0.0 {
            return String::new();
        }
        entries.get(i as usize).map_or(String::new(), |e| {
            let dirty = if e.dirty { "+" } else { "" };
            format!(
                "{}{dirty} {}",
                &e.commit[..e.commit.len().min(7)],
                &e.date.get(..10).unwrap_or("")
            )
        })
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!("{} ({})", target.label(), target.rule().describe()),
            ("sans-serif", 16),
        )
        .margin(8)
        .x_label_area_size(24)
        .y_label_area_size(64)
        .build_cartesian_2d(-0.5f64..(n as f64 - 0.5), 0f64..ymax)
        .map_err(err)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n.min(12))
        .x_label_formatter(&label)
        .y_desc("frames/s")
        .y_label_formatter(&|y| format!("{:.2}M", y / 1e6))
        .draw()
        .map_err(err)?;
    let tools = target.tools();
    for (j, &tool) in tools.iter().enumerate() {
        let c = colour(tool);
        let offset = (j as f64 - (tools.len() - 1) as f64 / 2.0) * 0.1;
        let points: Vec<(f64, f64)> = entries
            .iter()
            .enumerate()
            .flat_map(|(i, e)| {
                e.runs(target, tool)
                    .iter()
                    .map(move |&v| (i as f64 + offset, v))
            })
            .collect();
        chart
            .draw_series(points.into_iter().map(|p| Circle::new(p, 4, c.filled())))
            .map_err(err)?
            .label(tool.label(target))
            .legend(move |(x, y)| Circle::new((x + 8, y), 4, c.filled()));
    }
    for (i, e) in entries.iter().enumerate() {
        if let Some(r) = e.ratio(target, "zcnic/testpmd") {
            let at = (i as f64 - 0.35, ymax * 0.97);
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("zcnic/DPDK {r:.2}x"),
                    at,
                    ("sans-serif", 13),
                )))
                .map_err(err)?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::history::{parse, recent, tests::HISTORY};

    fn hex(c: RGBColor) -> String {
        format!("#{:02X}{:02X}{:02X}", c.0, c.1, c.2)
    }

    #[test]
    fn the_chart_is_svg_with_one_series_per_tool_and_every_run_a_point() {
        let (entries, _) = parse(HISTORY);
        let full = recent(&entries, "full", 10);
        let text = svg(&full).unwrap();
        let doc = roxmltree::Document::parse(&text).expect("valid XML");
        assert_eq!(doc.root_element().tag_name().name(), "svg");
        let texts: Vec<String> = doc
            .descendants()
            .filter(|n| n.has_tag_name("text"))
            .map(|n| n.text().unwrap_or("").trim().to_string())
            .collect();
        let circles = |fill: &str| {
            doc.descendants()
                .filter(|n| n.has_tag_name("circle") && n.attribute("fill") == Some(fill))
                .count()
        };
        for tool in [
            Tool::Kernel,
            Tool::Testpmd,
            Tool::Zcnic,
            Tool::Ceiling,
            Tool::Hybrid,
        ] {
            let panels: Vec<Target> = Target::ALL
                .into_iter()
                .filter(|t| t.tools().contains(&tool))
                .collect();
            // One legend entry (series) per panel the tool appears in ...
            let legends = texts
                .iter()
                .filter(|t| panels.iter().any(|p| **t == tool.label(*p)))
                .count();
            assert_eq!(legends, panels.len(), "{tool:?}: {texts:?}");
            // ... and one point per recorded run, plus its legend marker per panel.
            let runs: usize = full
                .iter()
                .flat_map(|e| panels.iter().map(move |&p| e.runs(p, tool).len()))
                .sum();
            assert_eq!(circles(&hex(colour(tool))), runs + panels.len(), "{tool:?}");
        }
        assert!(texts.iter().any(|t| t == "zcnic/DPDK 1.24x"), "{texts:?}");
        assert!(texts.iter().any(|t| t == "zcnic/DPDK 1.29x"), "{texts:?}");
        assert!(
            texts.iter().any(|t| t.starts_with("bbbbbbb+ 2026-12-04")),
            "{texts:?}"
        );
    }

    #[test]
    fn an_empty_history_still_draws() {
        let text = svg(&[]).unwrap();
        roxmltree::Document::parse(&text).expect("valid XML");
    }
}
