//! A picture of a pktgen run: every second, per stream, what was sent and received, what
//! was missing and the latency of that second ([`Sample`]); written as CSV (`--csv`, one
//! row per second per stream) and drawn as SVG (`--plot`, two charts over time: rates,
//! then latency; one line per stream and metric) with the plotters crate.

use plotters::prelude::*;
use std::io::Write;
use std::path::Path;

/// One second of one stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    /// Seconds since the start (the end of the second sampled).
    pub t: f64,
    pub stream: u16,
    pub tx_pps: f64,
    pub tx_mbps: f64,
    /// Frames received that second (0 without a receive port).
    pub rx_pps: f64,
    /// Frames of the stream missing so far (sent, not yet received).
    pub lost: u64,
    /// Latency of the frames received that second, µs.
    pub p50_us: Option<f64>,
    pub p99_us: Option<f64>,
}

/// The CSV header.
pub const CSV_HEADER: &str = "second,stream,tx_pps,tx_mbps,rx_pps,lost,p50_us,p99_us";

/// `samples` as CSV, one row per second per stream (latency cells empty when none came).
pub fn write_csv(path: &Path, samples: &[Sample]) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    writeln!(f, "{CSV_HEADER}")?;
    let opt = |v: Option<f64>| v.map_or(String::new(), |v| format!("{v:.1}"));
    for s in samples {
        writeln!(
            f,
            "{:.3},{},{:.0},{:.3},{:.0},{},{},{}",
            s.t,
            s.stream,
            s.tx_pps,
            s.tx_mbps,
            s.rx_pps,
            s.lost,
            opt(s.p50_us),
            opt(s.p99_us)
        )?;
    }
    f.flush()
}

/// The series of a chart: per stream, one metric over time.
type Series = Vec<(String, Vec<(f64, f64)>)>;

/// The streams in `samples`, in first-seen order.
fn streams(samples: &[Sample]) -> Vec<u16> {
    let mut ids = Vec::new();
    for s in samples {
        if !ids.contains(&s.stream) {
            ids.push(s.stream);
        }
    }
    ids
}

/// Per stream, `metric` of its samples (those that have it).
fn series(samples: &[Sample], name: &str, metric: impl Fn(&Sample) -> Option<f64>) -> Series {
    streams(samples)
        .into_iter()
        .map(|id| {
            let points = samples
                .iter()
                .filter(|s| s.stream == id)
                .filter_map(|s| metric(s).map(|v| (s.t, v)))
                .collect();
            (format!("stream {id} {name}"), points)
        })
        .collect()
}

/// Draws `samples` into an SVG at `path`: frames per second sent and received per stream
/// on top, latency p50 and p99 per stream below (when anything came back), over time.
/// Every data line is one `<polyline>` of stroke width 2 (axes and ticks are 1); `title`
/// heads the charts.
pub fn write_svg(path: &Path, title: &str, samples: &[Sample]) -> Result<(), String> {
    let receiving = samples.iter().any(|s| s.rx_pps > 0.0 || s.p50_us.is_some());
    let mut rates = series(samples, "tx pps", |s| Some(s.tx_pps));
    if receiving {
        rates.extend(series(samples, "rx pps", |s| Some(s.rx_pps)));
    }
    let mut latency = series(samples, "p50 us", |s| s.p50_us);
    latency.extend(series(samples, "p99 us", |s| s.p99_us));
    latency.retain(|(_, p)| !p.is_empty());
    let height = if latency.is_empty() { 400 } else { 800 };
    let root = SVGBackend::new(path, (1000, height)).into_drawing_area();
    let err = |e: &dyn std::fmt::Display| format!("{}: {e}", path.display());
    root.fill(&WHITE).map_err(|e| err(&e))?;
    let areas = if latency.is_empty() {
        vec![root.clone()]
    } else {
        root.split_evenly((2, 1))
    };
    let end = samples.iter().map(|s| s.t).fold(1.0, f64::max);
    let charts = [
        (format!("{title}: frames per second"), rates),
        (format!("{title}: latency (us)"), latency),
    ];
    for (area, (caption, lines)) in areas.iter().zip(charts) {
        let top = lines
            .iter()
            .flat_map(|(_, p)| p.iter().map(|&(_, v)| v))
            .fold(1.0, f64::max);
        let mut chart = ChartBuilder::on(area)
            .caption(caption, ("sans-serif", 20))
            .margin(10)
            .x_label_area_size(30)
            .y_label_area_size(70)
            .build_cartesian_2d(0.0..end, 0.0..top * 1.1)
            .map_err(|e| err(&e))?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .draw()
            .map_err(|e| err(&e))?;
        for (k, (name, points)) in lines.into_iter().enumerate() {
            let color = Palette99::pick(k).to_rgba();
            chart
                .draw_series(LineSeries::new(points, color.stroke_width(2)))
                .map_err(|e| err(&e))?
                .label(name)
                .legend(move |(x, y)| {
                    Rectangle::new([(x, y - 4), (x + 12, y + 4)], color.filled())
                });
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()
            .map_err(|e| err(&e))?;
    }
    root.present().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples() -> Vec<Sample> {
        (1..=5)
            .flat_map(|t| {
                [1u16, 2].map(|stream| Sample {
                    t: f64::from(t),
                    stream,
                    tx_pps: 1000.0 * f64::from(stream),
                    tx_mbps: 0.5,
                    rx_pps: 990.0 * f64::from(stream),
                    lost: t as u64,
                    p50_us: Some(10.0 + f64::from(t)),
                    p99_us: (t > 1).then_some(50.0),
                })
            })
            .collect()
    }

    /// The data lines: polylines of stroke width 2.
    fn data_lines(doc: &roxmltree::Document) -> usize {
        doc.descendants()
            .filter(|n| n.has_tag_name("polyline") && n.attribute("stroke-width") == Some("2"))
            .count()
    }

    fn temp(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("zcnic-plot-{}-{name}", std::process::id()))
    }

    #[test]
    fn csv_has_a_row_per_second_per_stream() {
        let path = temp("a.csv");
        write_csv(&path, &samples()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows[0], CSV_HEADER);
        assert_eq!(rows.len(), 1 + 5 * 2);
        assert_eq!(rows[1], "1.000,1,1000,0.500,990,1,11.0,");
        assert!(rows[1..].iter().all(|r| r.split(',').count() == 8));
    }

    #[test]
    fn svg_parses_with_a_line_per_stream_and_metric() {
        let path = temp("b.svg");
        write_svg(&path, "pktgen 0000:00:02.0", &samples()).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let doc = roxmltree::Document::parse(&text).expect("well-formed XML");
        let lines = data_lines(&doc);
        // 2 streams x (tx, rx) rates and 2 streams x (p50, p99) latency.
        assert_eq!(lines, 8, "{text}");
        for name in ["stream 1 tx pps", "stream 2 rx pps", "stream 2 p99 us"] {
            assert!(text.contains(name), "legend names {name}");
        }
        // Sending only: the rate chart alone, one line per stream.
        let tx_only: Vec<Sample> = samples()
            .into_iter()
            .map(|s| Sample {
                rx_pps: 0.0,
                p50_us: None,
                p99_us: None,
                ..s
            })
            .collect();
        write_svg(&path, "t", &tx_only).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let doc = roxmltree::Document::parse(&text).unwrap();
        assert_eq!(data_lines(&doc), 2);
    }
}
