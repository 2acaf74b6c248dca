//! CDFs of TTFT, inter-token latency and end-to-end latency, one line per run, with p50, p90 and p99
//! marked. At most one point per horizontal pixel is drawn (the quantile grid), whatever the count.

use std::path::Path;

use plotters::coord::Shift;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use tokenperf_core::stats::quantile;

use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::{
    Chart, FONT, Format, color, draw_err, framed, legend_at, padded, subtitle, tick, with_backend,
};
use crate::input::Run;

/// A CDF of one metric column.
pub struct Cdf {
    column: &'static str,
    stem: &'static str,
    title: &'static str,
    x_desc: &'static str,
    /// Multiplier from the column's unit to the axis's.
    scale: f64,
}

impl Cdf {
    pub fn ttft() -> Self {
        Self {
            column: "ttft_s",
            stem: "cdf_ttft",
            title: "TTFT, cumulative distribution",
            x_desc: "TTFT (ms)",
            scale: 1e3,
        }
    }
    pub fn itl() -> Self {
        Self {
            column: "inter_token_latency_s",
            stem: "cdf_inter_token_latency",
            title: "Inter-token Latency, cumulative distribution",
            x_desc: "Inter-token latency (ms)",
            scale: 1e3,
        }
    }
    pub fn e2e() -> Self {
        Self {
            column: "end_to_end_latency_s",
            stem: "cdf_e2e_latency",
            title: "End-to-end Latency, cumulative distribution",
            x_desc: "End-to-end latency (s)",
            scale: 1.0,
        }
    }

    /// Draws the chart; where each quantile label landed, and the plot's pixel area, so a test can
    /// check them.
    fn draw<DB: DrawingBackend>(
        &self,
        root: &DrawingArea<DB, Shift>,
        runs: &[&Run],
    ) -> anyhow::Result<Drawn> {
        let mut sorted = Vec::new();
        for r in runs {
            let mut v: Vec<f64> = r
                .ok_values(self.column)?
                .into_iter()
                .map(|x| x * self.scale)
                .collect();
            v.sort_unstable_by(f64::total_cmp);
            sorted.push(v);
        }
        let shown: usize = sorted.iter().map(Vec::len).sum();
        let area = framed(
            root,
            self.title,
            &format!("{} · p50, p90, p99 marked", subtitle(runs, shown, None)),
        )?;
        let (x0, x1) = padded(
            sorted
                .iter()
                .flat_map(|v| v.first().into_iter().chain(v.last()))
                .copied(),
        );
        let mut chart = ChartBuilder::on(&area)
            .margin(20)
            .x_label_area_size(55)
            .y_label_area_size(75)
            .build_cartesian_2d(x0..x1, 0.0..1.0)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc(self.x_desc)
            .y_desc("Fraction of requests")
            .axis_desc_style((FONT, 20))
            .label_style((FONT, 15))
            .x_label_formatter(&tick)
            .y_label_formatter(&tick)
            .light_line_style(RGBColor(235, 235, 235))
            .draw()
            .map_err(draw_err)?;
        let mut labels = Vec::new();
        for (i, v) in sorted.iter().enumerate() {
            if v.is_empty() {
                continue;
            }
            let c = color(i);
            let points: Vec<(f64, f64)> = (0..=1000)
                .map(|k| {
                    let q = k as f64 / 1000.0;
                    (quantile(v, q).unwrap_or(0.0), q)
                })
                .collect();
            let s = chart
                .draw_series(LineSeries::new(points, c.stroke_width(2)))
                .map_err(draw_err)?;
            if runs.len() > 1 {
                s.label(runs[i].name.clone()).legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], c.stroke_width(3))
                });
            }
            labels.extend(mark_quantiles(&mut chart, v, i, (x0, x1))?);
        }
        if runs.len() > 1 {
            // The curves rise from lower left to upper right: the lower right is empty.
            legend_at(&mut chart, SeriesLabelPosition::LowerRight)?;
        }
        let (xs, ys) = chart.plotting_area().get_pixel_range();
        Ok(Drawn {
            labels,
            plot: ((xs.start, ys.start), (xs.end, ys.end)),
        })
    }
}

/// A pixel rectangle: top-left and bottom-right corners.
pub type Rect = ((i32, i32), (i32, i32));

/// Where a chart's quantile labels went: (run, quantile, the text's pixel box), and the plot area.
#[derive(Debug)]
#[cfg_attr(not(test), allow(dead_code))] // read by the tests, which measure the labels
pub struct Drawn {
    pub labels: Vec<(usize, f64, Rect)>,
    pub plot: Rect,
}

/// Run `run`'s p50, p90 and p99 on its curve: a dot and a label placed by [`label_place`]; each
/// label's pixel box, measured with plotters' own text metrics.
fn mark_quantiles<DB: DrawingBackend>(
    chart: &mut ChartContext<'_, DB, Cartesian2d<RangedCoordf64, RangedCoordf64>>,
    v: &[f64],
    i: usize,
    (x0, x1): (f64, f64),
) -> anyhow::Result<Vec<(usize, f64, Rect)>> {
    let c = color(i);
    let mut boxes = Vec::new();
    for (q, name) in [(0.5, "p50"), (0.9, "p90"), (0.99, "p99")] {
        let x = quantile(v, q).unwrap_or(0.0);
        chart
            .draw_series(std::iter::once(Circle::new((x, q), 5, c.filled())))
            .map_err(draw_err)?;
        let (pos, y) = label_place(x, (x0, x1), q, i);
        let text = format!("{name} {}", tick(&x));
        let style = (FONT, 14).into_font().color(&c).pos(pos);
        let (w, h) = chart
            .plotting_area()
            .estimate_text_size(&text, &style)
            .map_err(draw_err)?;
        let (px, py) = chart.backend_coord(&(x, y));
        let left = if matches!(pos.h_pos, HPos::Right) {
            px - w as i32
        } else {
            px
        };
        boxes.push((i, q, ((left, py), (left + w as i32, py + h as i32))));
        chart
            .draw_series(std::iter::once(Text::new(text, (x, y), style)))
            .map_err(draw_err)?;
    }
    Ok(boxes)
}

/// Where the label of run `run`'s marker at `(x, q)` goes: runs stacked one line apart under the
/// marker, so neighbouring runs' labels do not print over each other, and anchored on the side
/// that stays inside the plot (left of the marker in the right half, right of it in the left).
fn label_place(x: f64, (x0, x1): (f64, f64), q: f64, run: usize) -> (Pos, f64) {
    let right_half = x > x0 + (x1 - x0) * 0.5;
    let h = if right_half { HPos::Right } else { HPos::Left };
    (Pos::new(h, VPos::Top), q - 0.02 - 0.045 * run as f64)
}

impl Chart for Cdf {
    fn file_stem(&self) -> &'static str {
        self.stem
    }
    fn render(&self, runs: &[&Run], path: &Path, format: Format) -> anyhow::Result<()> {
        with_backend!(path, format, |root: &DrawingArea<_, Shift>| self
            .draw(root, runs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three runs whose quantiles sit close together and near both edges: every label, measured in
    /// pixels with plotters' text metrics, lies inside the plot, and no two runs' labels overlap.
    #[test]
    fn labels_measured_inside_the_plot_and_apart() {
        let dir = tempfile::tempdir().unwrap();
        let mut runs = Vec::new();
        for (k, shift) in [0.0, 0.4, 0.9].iter().enumerate() {
            let rows: Vec<String> = (0..200)
                .map(|i| {
                    // Long tails push p99 to the right edge; the bulk near the left.
                    let t = 0.010 + shift * 1e-3 + if i > 196 { 2.0 } else { i as f64 * 1e-5 };
                    format!("{{\"error_code\": null, \"ttft_s\": {t}}}")
                })
                .collect();
            let p = dir.path().join(format!("r{k}_individual_responses.json"));
            std::fs::write(&p, format!("[{}]", rows.join(","))).unwrap();
            runs.extend(crate::input::load(&p).unwrap());
        }
        let refs: Vec<&Run> = runs.iter().collect();
        super::super::register_fonts().unwrap();
        let (w, h) = super::super::SIZE;
        let mut buf = vec![0u8; (w * h * 3) as usize];
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let drawn = Cdf::ttft().draw(&root, &refs).unwrap();
        assert_eq!(drawn.labels.len(), 9);
        let ((l, t), (r, b)) = drawn.plot;
        for (run, q, ((x0, y0), (x1, y1))) in &drawn.labels {
            assert!(
                *x0 >= l && *x1 <= r && *y0 >= t && *y1 <= b,
                "run {run} q {q}: label {:?} outside the plot {:?}",
                ((x0, y0), (x1, y1)),
                drawn.plot
            );
        }
        for (a, qa, ra) in &drawn.labels {
            for (b, qb, rb) in &drawn.labels {
                let apart =
                    ra.1.0 <= rb.0.0 || rb.1.0 <= ra.0.0 || ra.1.1 <= rb.0.1 || rb.1.1 <= ra.0.1;
                assert!(
                    a == b || qa != qb || apart,
                    "runs {a} and {b} at q {qa}: {ra:?} / {rb:?}"
                );
            }
        }
    }

    #[test]
    fn labels_of_neighbouring_runs_stack_and_stay_on_the_inside() {
        let range = (0.0, 100.0);
        let (a, ya) = label_place(95.0, range, 0.99, 0);
        let (_, yb) = label_place(95.0, range, 0.99, 1);
        assert!(ya > yb, "each run its own line");
        assert!(
            matches!(a.h_pos, HPos::Right),
            "near the right edge the text runs leftwards"
        );
        assert!(matches!(
            label_place(3.0, range, 0.5, 0).0.h_pos,
            HPos::Left
        ));
    }
}
