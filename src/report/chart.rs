//! The convergence chart as SVG (plotters, SVG backend only: no fonts or system libraries needed): one
//! line per peer through its samples (x = seconds since the run started, y = targets shown tagged),
//! a grey vertical line where each pass started, its re-pins shaded, and a grey horizontal line at
//! the number of targets.
//! Peer colours come from [`PALETTE`], so the HTML legend matches the lines.

use plotters::prelude::*;

use super::Report;

pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 440;

/// Line colours, one per peer in [`Report::peers`] order (repeats after ten peers).
pub const PALETTE: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// The colour of the pass and target markers.
pub const MARKER: (u8, u8, u8) = (170, 170, 170);

/// The colour of peer `i` as `#rrggbb`.
pub fn color_hex(i: usize) -> String {
    let (r, g, b) = PALETTE[i % PALETTE.len()];
    format!("#{r:02X}{g:02X}{b:02X}")
}

fn rgb((r, g, b): (u8, u8, u8)) -> RGBColor {
    RGBColor(r, g, b)
}

/// The y range: from 0, or from a round number under the lowest sample when every sample is above
/// half of the targets (so a curve from 78% to 100% is not squeezed into the top fifth).
fn y_range(report: &Report) -> (f64, f64) {
    let targets = report.probes.iter().map(|p| p.targets).max().unwrap_or(0).max(1) as f64;
    let lowest = report.probes.iter().map(|p| p.tagged).min().unwrap_or(0) as f64;
    let top = targets * 1.03;
    if lowest < targets * 0.5 {
        return (0.0, top);
    }
    let step = 10f64.powf((targets.log10().floor() - 1.0).max(0.0));
    (((lowest * 0.95) / step).floor() * step, top)
}

/// Renders the chart as a standalone SVG document.
pub fn svg(report: &Report) -> anyhow::Result<String> {
    let mut buf = String::new();
    {
        let root = SVGBackend::with_string(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE)?;
        let x_max = report.probes.iter().map(|p| p.seconds).fold(0.0, f64::max).max(1.0) * 1.04;
        let (y_min, y_max) = y_range(report);
        let targets = report.probes.iter().map(|p| p.targets).max().unwrap_or(0);
        let mut chart = ChartBuilder::on(&root)
            .margin(18)
            .x_label_area_size(44)
            .y_label_area_size(72)
            .build_cartesian_2d(0f64..x_max, y_min..y_max)?;
        chart
            .configure_mesh()
            .x_desc("seconds since the run started")
            .y_desc(format!("targets shown tagged (of {targets})"))
            .axis_desc_style(("sans-serif", 15))
            .label_style(("sans-serif", 13))
            .light_line_style(RGBColor(240, 240, 240))
            .bold_line_style(RGBColor(220, 220, 220))
            .x_label_formatter(&|x| {
                if x_max < 12.0 { format!("{x:.1}") } else { format!("{x:.0}") }
            })
            .y_label_formatter(&|y| format!("{y:.0}"))
            .draw()?;
        let marker = rgb(MARKER);
        // The re-pin phase of each pass, shaded.
        for (_, start, end) in report.pass_spans() {
            if let Some(end) = end.filter(|e| *e > start) {
                chart.draw_series(std::iter::once(Rectangle::new(
                    [(start, y_min), (end, y_max)],
                    RGBColor(232, 240, 250).filled(),
                )))?;
            }
        }
        if targets > 0 {
            let t = targets as f64;
            chart.draw_series(LineSeries::new([(0.0, t), (x_max, t)], marker.stroke_width(1)))?;
        }
        for (pass, x) in report.pass_starts() {
            chart.draw_series(LineSeries::new([(x, y_min), (x, y_max)], marker.stroke_width(1)))?;
            chart.draw_series(std::iter::once(Text::new(
                format!("pass {pass}: re-pins"),
                (x + x_max * 0.005, y_max),
                ("sans-serif", 13).into_font().color(&RGBColor(90, 90, 90)),
            )))?;
        }
        for (i, peer) in report.peers.iter().enumerate() {
            let color = rgb(PALETTE[i % PALETTE.len()]);
            let points: Vec<(f64, f64)> = report
                .probes
                .iter()
                .filter(|p| &p.peer == peer)
                .map(|p| (p.seconds, p.tagged as f64))
                .collect();
            chart.draw_series(LineSeries::new(points.iter().copied(), color.stroke_width(2)))?;
            chart
                .draw_series(points.iter().map(|&(x, y)| Circle::new((x, y), 3, color.filled())))?;
        }
        root.present()?;
    }
    Ok(buf)
}
