//! `--plot DIR`: SVG charts of latency distributions and throughput over time, drawn with
//! plotters' SVG backend only (text is emitted as SVG `<text>`, so no font files are read).

use crate::stats::Latencies;
use crate::workloads::Buckets;
use anyhow::{Context as _, anyhow};
use plotters::prelude::*;
use std::path::Path;

const SIZE: (u32, u32) = (900, 520);
const COLORS: [RGBColor; 2] = [RGBColor(31, 119, 180), RGBColor(255, 127, 14)];

/// A latency distribution of one side ("target" or "compare").
pub struct LatencyLine<'a> {
    pub side: &'a str,
    pub latencies: &'a Latencies,
}

/// A throughput series of one side.
pub struct RateLine<'a> {
    pub side: &'a str,
    pub buckets: &'a Buckets,
}

/// Percentile of "nines" `x`: 0 → 0%, 1 → 90%, 2 → 99%, 3 → 99.9%.
fn percentile_of_nines(x: f64) -> f64 {
    100.0 * (1.0 - 10f64.powf(-x))
}

/// Latency against percentile (x in nines, y in µs on a log scale).
pub fn latency_chart(path: &Path, title: &str, lines: &[LatencyLine]) -> anyhow::Result<()> {
    const NINES: f64 = 3.0;
    let curves: Vec<(&str, Vec<(f64, f64)>)> = lines
        .iter()
        .filter(|l| l.latencies.count() > 0)
        .map(|l| {
            let pts = (0..=300)
                .map(|k| {
                    let x = NINES * f64::from(k) / 300.0;
                    (
                        x,
                        l.latencies
                            .at_percentile_us(percentile_of_nines(x))
                            .max(0.001),
                    )
                })
                .collect();
            (l.side, pts)
        })
        .collect();
    let ys = curves.iter().flat_map(|c| c.1.iter().map(|p| p.1));
    let (ymin, ymax) = ys.fold((f64::MAX, 0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    if curves.is_empty() {
        return Ok(());
    }
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..NINES, (ymin * 0.9..ymax * 1.1).log_scale())
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .x_label_formatter(&|x| format!("{}%", trim(percentile_of_nines(*x))))
        .y_desc("latency (µs)")
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    for (i, (side, pts)) in curves.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(side)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    root.present()
        .with_context(|| format!("write {}", path.display()))
}

fn trim(p: f64) -> String {
    let s = format!("{p:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Throughput against time since the start of the workload.
pub fn rate_chart(path: &Path, title: &str, unit: &str, lines: &[RateLine]) -> anyhow::Result<()> {
    let curves: Vec<(&str, Vec<(f64, f64)>)> = lines
        .iter()
        .map(|l| (l.side, l.buckets.rates()))
        .filter(|c| !c.1.is_empty())
        .collect();
    if curves.is_empty() {
        return Ok(());
    }
    let xmax = curves
        .iter()
        .flat_map(|c| c.1.iter().map(|p| p.0))
        .fold(0f64, f64::max);
    let ymax = curves
        .iter()
        .flat_map(|c| c.1.iter().map(|p| p.1))
        .fold(0f64, f64::max);
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e:?}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0f64..xmax.max(0.1) * 1.02, 0f64..ymax.max(1.0) * 1.1)
        .map_err(|e| anyhow!("{e:?}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds")
        .y_desc(unit)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    for (i, (side, pts)) in curves.into_iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))
            .map_err(|e| anyhow!("{e:?}"))?
            .label(side)
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| anyhow!("{e:?}"))?;
    root.present()
        .with_context(|| format!("write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn charts_are_svg_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut l = Latencies::new();
        for us in 1..500 {
            l.record(Duration::from_micros(us));
        }
        let p = dir.path().join("lat.svg");
        latency_chart(
            &p,
            "latency",
            &[LatencyLine {
                side: "target",
                latencies: &l,
            }],
        )
        .expect("chart");
        let svg = std::fs::read_to_string(&p).expect("read svg");
        assert!(svg.starts_with("<svg") && svg.contains("polyline") && svg.contains("target"));

        let mut b = Buckets::new(Duration::from_millis(100));
        b.add(Duration::from_millis(50), 5.0);
        b.add(Duration::from_millis(150), 7.0);
        let p = dir.path().join("rate.svg");
        rate_chart(
            &p,
            "rate",
            "MB/s",
            &[RateLine {
                side: "compare",
                buckets: &b,
            }],
        )
        .expect("chart");
        let svg = std::fs::read_to_string(&p).expect("read svg");
        assert!(svg.contains("polyline") && svg.contains("compare") && svg.contains("MB/s"));
    }
}
