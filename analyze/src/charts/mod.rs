//! Charts: one file per chart, each a [`Chart`] that draws one run to a PNG. Shared styling, the
//! embedded font and the histogram binning live here.
//!
//! Text uses DejaVu Sans embedded in the binary (the `dejavu` crate) through plotters' ab_glyph
//! backend, so titles and labels render on a machine with no fonts installed.

mod e2e_hist;
mod itl_hist;
mod itl_vs_throughput;
mod ttft_vs_input;

use std::path::Path;
use std::sync::Once;

use plotters::prelude::*;

use crate::input::Run;

pub use e2e_hist::E2eHistogram;
pub use itl_hist::ItlHistogram;
pub use itl_vs_throughput::ItlVsThroughput;
pub use ttft_vs_input::TtftVsInput;

/// Pixel size of every chart.
pub const SIZE: (u32, u32) = (1000, 700);

/// Font family name our charts use (registered from embedded bytes).
pub const FONT: &str = "sans-serif";

/// Scatter charts draw at most this many points; beyond it they draw an even sample and say so.
pub const MAX_SCATTER_POINTS: usize = 20_000;

/// One chart of one run.
pub trait Chart {
    /// File name without extension (`e2e_latencies`).
    fn file_stem(&self) -> &'static str;
    /// Draws `run` into a PNG at `path`.
    fn render(&self, run: &Run, path: &Path) -> anyhow::Result<()>;
}

/// The seed's four charts.
pub fn seed_charts() -> Vec<Box<dyn Chart>> {
    vec![
        Box::new(E2eHistogram),
        Box::new(ItlHistogram),
        Box::new(TtftVsInput),
        Box::new(ItlVsThroughput),
    ]
}

/// Registers the embedded font once per process.
pub fn register_fonts() -> anyhow::Result<()> {
    static ONCE: Once = Once::new();
    let mut result = Ok(());
    ONCE.call_once(|| {
        for (style, bytes) in [
            (FontStyle::Normal, dejavu::sans::regular()),
            (FontStyle::Bold, dejavu::sans::bold()),
        ] {
            if plotters::style::register_font(FONT, style, bytes).is_err() {
                result = Err(anyhow::anyhow!("the embedded DejaVu font failed to load"));
            }
        }
    });
    result
}

pub(crate) fn draw_err<E: std::fmt::Debug>(e: E) -> anyhow::Error {
    anyhow::anyhow!("drawing failed: {e:?}")
}

/// Fills the background, draws the title and subtitle in a top strip, and returns the plotting area.
fn framed<'a>(
    root: &DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>,
    title: &str,
    sub: &str,
) -> anyhow::Result<DrawingArea<BitMapBackend<'a>, plotters::coord::Shift>> {
    root.fill(&WHITE).map_err(draw_err)?;
    let (head, body) = root.split_vertically(80);
    let center = (SIZE.0 as i32 / 2, 0);
    let title_style =
        (FONT, 30)
            .into_text_style(&head)
            .pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Top,
            ));
    head.draw_text(title, &title_style, (center.0, 12))
        .map_err(draw_err)?;
    let grey = BLACK.mix(0.6);
    let sub_style =
        (FONT, 16)
            .into_text_style(&head)
            .color(&grey)
            .pos(plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Top,
            ));
    head.draw_text(sub, &sub_style, (center.0, 52))
        .map_err(draw_err)?;
    Ok(body)
}

/// A bar of a histogram: `[lo, hi)` holding `count` values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: u64,
}

/// Equal-width bins over [min, max], the last one closed, as matplotlib's `hist(bins=n)`; a single
/// distinct value gets the range value ± 0.5, also as matplotlib does.
pub fn histogram(values: &[f64], n: usize) -> Vec<Bin> {
    let finite = values.iter().copied().filter(|v| v.is_finite());
    let (min, max) = finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
        (a.min(v), b.max(v))
    });
    if n == 0 || min > max {
        return Vec::new();
    }
    let (lo, hi) = if min == max {
        (min - 0.5, max + 0.5)
    } else {
        (min, max)
    };
    let width = (hi - lo) / n as f64;
    let mut bins: Vec<Bin> = (0..n)
        .map(|i| Bin {
            lo: lo + i as f64 * width,
            hi: lo + (i + 1) as f64 * width,
            count: 0,
        })
        .collect();
    for v in values.iter().copied().filter(|v| v.is_finite()) {
        let i = (((v - lo) / width) as usize).min(n - 1);
        bins[i].count += 1;
    }
    bins
}

/// The caption under the title: how many requests are shown and how many were left out.
pub fn subtitle(run: &Run, shown: usize, sampled_from: Option<usize>) -> String {
    let (n, failed) = run.counts();
    let mut s = format!("{} · {shown} of {n} requests", run.name);
    if failed > 0 {
        s.push_str(&format!(" · {failed} errored, excluded"));
    }
    if let Some(total) = sampled_from {
        s.push_str(&format!(" · even sample of {total} points"));
    }
    s
}

/// Draws a histogram chart.
pub fn draw_histogram(
    path: &Path,
    title: &str,
    sub: &str,
    x_desc: &str,
    values: &[f64],
) -> anyhow::Result<()> {
    register_fonts()?;
    let bins = histogram(values, 30);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    let area = framed(&root, title, sub)?;
    let (x0, x1) = match (bins.first(), bins.last()) {
        (Some(a), Some(b)) => (a.lo, b.hi),
        _ => (0.0, 1.0),
    };
    // An integer count axis, so tick labels are whole requests.
    let top = bins.iter().map(|b| b.count).max().unwrap_or(0);
    let ymax = (top + top / 12 + 1).max(2);
    let mut chart = ChartBuilder::on(&area)
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(75)
        .build_cartesian_2d(x0..x1, 0u64..ymax)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc("Requests")
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .y_labels(ymax.min(10) as usize)
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(bins.iter().map(|b| {
            Rectangle::new(
                [(b.lo, 0u64), (b.hi, b.count)],
                RGBColor(31, 119, 180).filled(),
            )
        }))
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

/// Draws a scatter chart; above [`MAX_SCATTER_POINTS`] an even sample is drawn and the caption says so.
pub fn draw_scatter(
    path: &Path,
    title: &str,
    run: &Run,
    (x_desc, y_desc): (&str, &str),
    points: &[(f64, f64)],
) -> anyhow::Result<()> {
    register_fonts()?;
    let (shown, sampled_from): (Vec<(f64, f64)>, Option<usize>) =
        if points.len() > MAX_SCATTER_POINTS {
            let step = points.len() as f64 / MAX_SCATTER_POINTS as f64;
            (
                (0..MAX_SCATTER_POINTS)
                    .map(|i| points[(i as f64 * step) as usize])
                    .collect(),
                Some(points.len()),
            )
        } else {
            (points.to_vec(), None)
        };
    let range = |f: fn(&(f64, f64)) -> f64| {
        let (lo, hi) = shown
            .iter()
            .map(f)
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            });
        if lo > hi {
            (0.0, 1.0)
        } else {
            let pad = ((hi - lo) * 0.05).max(hi.abs() * 0.01).max(1e-9);
            (lo - pad, hi + pad)
        }
    };
    let (x0, x1) = range(|p| p.0);
    let (y0, y1) = range(|p| p.1);
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    let area = framed(&root, title, &subtitle(run, shown.len(), sampled_from))?;
    let mut chart = ChartBuilder::on(&area)
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(75)
        .build_cartesian_2d(x0..x1, y0..y1)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 15))
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(draw_err)?;
    chart
        .draw_series(
            shown
                .iter()
                .map(|&(x, y)| Circle::new((x, y), 3, RGBColor(31, 119, 180).mix(0.7).filled())),
        )
        .map_err(draw_err)?;
    root.present().map_err(draw_err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_bins_like_matplotlib() {
        let b = histogram(&[0.0, 1.0, 2.0, 3.0, 10.0], 5);
        assert_eq!(b.len(), 5);
        assert_eq!((b[0].lo, b[4].hi), (0.0, 10.0));
        assert_eq!(
            b.iter().map(|x| x.count).collect::<Vec<_>>(),
            vec![2, 2, 0, 0, 1]
        );
        let one = histogram(&[3.0, 3.0], 30);
        assert_eq!((one[0].lo, one[29].hi), (2.5, 3.5));
        assert_eq!(one.iter().map(|x| x.count).sum::<u64>(), 2);
        assert!(histogram(&[], 30).is_empty());
    }
}
