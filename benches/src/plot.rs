//! Cost per call against dirty pages, log-log, one line per method and
//! memory size.

use std::path::Path;

use plotters::prelude::*;

use crate::methods::ALL;
use crate::{Cell, SIZES};

const COLOURS: [RGBColor; 7] = [
    RGBColor(0, 114, 178),
    RGBColor(86, 180, 233),
    RGBColor(213, 94, 0),
    RGBColor(230, 159, 0),
    RGBColor(204, 121, 167),
    RGBColor(0, 158, 115),
    RGBColor(120, 120, 120),
];

pub fn draw(path: &Path, cells: &[Cell]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (1000, 650)).into_drawing_area();
    root.fill(&WHITE)?;
    let max = cells.iter().map(|c| c.median_us).fold(1.0, f64::max) * 2.0;
    let min = cells
        .iter()
        .map(|c| c.median_us)
        .filter(|v| *v > 0.0)
        .fold(f64::MAX, f64::min)
        .min(0.5)
        / 2.0;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Call + reset, median µs vs pages dirtied by the call (solid: 16 MiB, dashed: 1 GiB)",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d((1f64..5000f64).log_scale(), (min..max).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("dirty pages (K)")
        .y_desc("µs per call")
        .draw()?;
    for (m, method) in ALL.iter().enumerate() {
        let colour = COLOURS[m % COLOURS.len()];
        for (s, (_, size)) in SIZES.iter().enumerate() {
            let points: Vec<(f64, f64)> = cells
                .iter()
                .filter(|c| c.method == *method && c.size == *size && c.k > 0)
                .map(|c| (c.k as f64, c.median_us))
                .collect();
            if points.is_empty() {
                continue;
            }
            let style = ShapeStyle::from(&colour).stroke_width(2);
            if s == 0 {
                chart
                    .draw_series(LineSeries::new(points.clone(), style))?
                    .label(method.name())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], colour));
            } else {
                chart.draw_series(DashedLineSeries::new(points.clone(), 6, 4, style))?;
            }
            chart.draw_series(points.iter().map(|p| Circle::new(*p, 3, colour.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    root.present()?;
    Ok(())
}
