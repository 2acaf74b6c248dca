//! Charts: one file per chart, each a [`Chart`] that draws one run or several (overlaid, with a legend)
//! to PNG or SVG. Shared styling, the embedded font, binning and sampling live here.
//!
//! Text uses DejaVu Sans embedded in the binary (the `dejavu` crate) through plotters' ab_glyph
//! backend, so titles and labels render on a machine with no fonts installed. Charts are drawn from
//! aggregated data: histogram bins, CDF points at most one per pixel, and an even sample of a scatter
//! that has more points than [`MAX_SCATTER_POINTS`] (the caption says so). Failed requests are left
//! out of latency charts; the caption counts them.

mod cdf;
mod chunk_gaps;
mod e2e_hist;
mod itl_hist;
mod itl_vs_throughput;
mod load;
mod sweep;
mod timeline;
mod ttft_vs_input;

use std::path::Path;
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::input::Run;

pub use cdf::Cdf;
pub use chunk_gaps::ChunkGaps;
pub use e2e_hist::E2eHistogram;
pub use itl_hist::ItlHistogram;
pub use itl_vs_throughput::ItlVsThroughput;
pub use load::LoadOverTime;
pub use sweep::Sweep;
pub use timeline::Timeline;
pub use ttft_vs_input::TtftVsInput;

/// Pixel size of every chart.
pub const SIZE: (u32, u32) = (1000, 700);

/// Font family name our charts use (registered from embedded bytes).
pub const FONT: &str = "sans-serif";

/// Scatter charts draw at most this many points; beyond it they draw an even sample and say so.
pub const MAX_SCATTER_POINTS: usize = 20_000;

/// Output format of the chart files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Png,
    Svg,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Png => "png",
            Format::Svg => "svg",
        }
    }
}

/// One chart of one or several runs.
pub trait Chart {
    /// File name without extension (`e2e_latencies`).
    fn file_stem(&self) -> &'static str;
    /// Whether the chart can be drawn for these runs (some need our records, or several runs).
    fn applies(&self, runs: &[&Run]) -> bool {
        !runs.is_empty()
    }
    /// Draws `runs` into `path`.
    fn render(&self, runs: &[&Run], path: &Path, format: Format) -> anyhow::Result<()>;
}

/// Every chart analyze knows, in the order they are written.
pub fn all_charts() -> Vec<Box<dyn Chart>> {
    vec![
        Box::new(E2eHistogram),
        Box::new(ItlHistogram),
        Box::new(ChunkGaps),
        Box::new(TtftVsInput),
        Box::new(ItlVsThroughput),
        Box::new(Cdf::ttft()),
        Box::new(Cdf::itl()),
        Box::new(Cdf::e2e()),
        Box::new(Timeline),
        Box::new(LoadOverTime),
        Box::new(Sweep),
    ]
}

/// Draws with the backend the format asks for: `$draw` is a generic function
/// `fn(&DrawingArea<DB, Shift>) -> anyhow::Result<()>`, instantiated once per backend.
macro_rules! with_backend {
    ($path:expr, $format:expr, $draw:expr) => {{
        $crate::charts::register_fonts()?;
        match $format {
            $crate::charts::Format::Png => {
                let root = plotters::prelude::BitMapBackend::new($path, $crate::charts::SIZE)
                    .into_drawing_area();
                $draw(&root)?;
                root.present().map_err($crate::charts::draw_err)?;
            }
            $crate::charts::Format::Svg => {
                let root = plotters::prelude::SVGBackend::new($path, $crate::charts::SIZE)
                    .into_drawing_area();
                $draw(&root)?;
                root.present().map_err($crate::charts::draw_err)?;
            }
        }
        Ok(())
    }};
}
pub(crate) use with_backend;

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

/// The colour of run `i` (matplotlib's tab10, so overlays read like the seed's charts).
pub fn color(i: usize) -> RGBColor {
    const TAB10: [(u8, u8, u8); 10] = [
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
    let (r, g, b) = TAB10[i % TAB10.len()];
    RGBColor(r, g, b)
}

/// Fills the background, draws the title and subtitle in a top strip, and returns the plotting area.
pub(crate) fn framed<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    sub: &str,
) -> anyhow::Result<DrawingArea<DB, Shift>> {
    root.fill(&WHITE).map_err(draw_err)?;
    let (head, body) = root.split_vertically(80);
    let x = SIZE.0 as i32 / 2;
    let top = Pos::new(HPos::Center, VPos::Top);
    head.draw_text(title, &(FONT, 30).into_text_style(&head).pos(top), (x, 12))
        .map_err(draw_err)?;
    let grey = BLACK.mix(0.6);
    head.draw_text(
        sub,
        &(FONT, 16).into_text_style(&head).color(&grey).pos(top),
        (x, 52),
    )
    .map_err(draw_err)?;
    Ok(body)
}

/// A tick or point label: whole numbers without a decimal point (`50`, not `50.0`), others with
/// three significant digits at most, so ticks stay short and comparable.
pub fn tick(v: &f64) -> String {
    let v = *v;
    if !v.is_finite() {
        return String::new();
    }
    if (v - v.round()).abs() < 1e-9 * v.abs().max(1.0) {
        return format!("{}", v.round() as i64);
    }
    let digits = (3 - 1 - v.abs().log10().floor() as i32).clamp(0, 6) as usize;
    let s = format!("{v:.digits$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// The caption under the title: what is shown, and what was left out.
pub fn subtitle(runs: &[&Run], shown: usize, sampled_from: Option<usize>) -> String {
    let (n, failed) = runs
        .iter()
        .map(|r| r.counts())
        .fold((0, 0), |(a, b), (n, f)| (a + n, b + f));
    let name = if runs.len() == 1 {
        runs[0].name.clone()
    } else {
        format!("{} runs", runs.len())
    };
    let mut s = format!("{name} · {shown} of {n} requests");
    if failed > 0 {
        s.push_str(&format!(" · {failed} errored, excluded"));
    }
    if let Some(total) = sampled_from {
        s.push_str(&format!(" · even sample of {total} points"));
    }
    s
}

/// A bar of a histogram: `[lo, hi)` holding `count` values.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Bin {
    pub lo: f64,
    pub hi: f64,
    pub count: u64,
}

/// The range `histogram` bins over: [min, max], or value ± 0.5 for a single distinct value (as
/// matplotlib's `hist` does).
pub fn bin_range(values: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    let (min, max) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if min > max {
        return None;
    }
    Some(if min == max {
        (min - 0.5, max + 0.5)
    } else {
        (min, max)
    })
}

/// `n` equal-width bins over `range`, the last one closed, as matplotlib's `hist(bins=n)`.
pub fn histogram_in(values: &[f64], n: usize, (lo, hi): (f64, f64)) -> Vec<Bin> {
    if n == 0 {
        return Vec::new();
    }
    let width = (hi - lo) / n as f64;
    let mut bins: Vec<Bin> = (0..n)
        .map(|i| Bin {
            lo: lo + i as f64 * width,
            hi: lo + (i + 1) as f64 * width,
            count: 0,
        })
        .collect();
    for v in values
        .iter()
        .copied()
        .filter(|v| v.is_finite() && *v >= lo && *v <= hi)
    {
        let i = (((v - lo) / width) as usize).min(n - 1);
        bins[i].count += 1;
    }
    bins
}

/// `n` equal-width bins over the values' own range.
pub fn histogram(values: &[f64], n: usize) -> Vec<Bin> {
    match bin_range(values.iter().copied()) {
        Some(r) => histogram_in(values, n, r),
        None => Vec::new(),
    }
}

/// Draws a histogram: filled bars for one run, outlined steps for several over common bins. `unit`
/// names the x axis' unit, for the caption's bin width.
pub(crate) fn draw_histogram<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    (title, x_desc, unit): (&str, &str, &str),
    runs: &[&Run],
    series: &[Vec<f64>],
    counted: &str,
) -> anyhow::Result<()> {
    let shown: usize = series.iter().map(Vec::len).sum();
    let range = bin_range(series.iter().flatten().copied()).unwrap_or((0.0, 1.0));
    let base = if counted == "Requests" {
        subtitle(runs, shown, None)
    } else {
        // Values are not requests here (e.g. gaps): count the requests they came from.
        let ok: usize = runs.iter().map(|r| r.counts().0 - r.counts().1).sum();
        format!(
            "{} · {shown} {}",
            subtitle(runs, ok, None),
            counted.to_lowercase()
        )
    };
    let caption = format!(
        "{base} · 30 bins of {} {unit}",
        tick(&((range.1 - range.0) / 30.0))
    );
    let area = framed(root, title, &caption)?;
    let all_bins: Vec<Vec<Bin>> = series.iter().map(|v| histogram_in(v, 30, range)).collect();
    let top = all_bins
        .iter()
        .flatten()
        .map(|b| b.count)
        .max()
        .unwrap_or(0);
    // An integer count axis, so tick labels are whole requests.
    let ymax = (top + top / 12 + 1).max(2);
    let mut chart = ChartBuilder::on(&area)
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(75)
        .build_cartesian_2d(range.0..range.1, 0u64..ymax)
        .map_err(draw_err)?;
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(counted)
        .axis_desc_style((FONT, 20))
        .label_style((FONT, 15))
        .x_label_formatter(&tick)
        .light_line_style(RGBColor(235, 235, 235))
        .y_labels(ymax.min(10) as usize)
        .draw()
        .map_err(draw_err)?;
    for (i, bins) in all_bins.iter().enumerate() {
        let c = color(i);
        if runs.len() == 1 {
            chart
                .draw_series(
                    bins.iter()
                        .map(|b| Rectangle::new([(b.lo, 0u64), (b.hi, b.count)], c.filled())),
                )
                .map_err(draw_err)?;
        } else {
            let steps: Vec<(f64, u64)> = bins
                .iter()
                .flat_map(|b| [(b.lo, b.count), (b.hi, b.count)])
                .collect();
            chart
                .draw_series(LineSeries::new(steps, c.stroke_width(2)))
                .map_err(draw_err)?
                .label(runs[i].name.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], c.stroke_width(3)));
        }
    }
    if runs.len() > 1 {
        legend(&mut chart)?;
    }
    Ok(())
}

/// An even sample of at most `max` points, and the original count when it was sampled.
pub fn sample<T: Copy>(points: &[T], max: usize) -> (Vec<T>, Option<usize>) {
    if points.len() <= max {
        return (points.to_vec(), None);
    }
    let step = points.len() as f64 / max as f64;
    (
        (0..max)
            .map(|i| points[(i as f64 * step) as usize])
            .collect(),
        Some(points.len()),
    )
}

/// A padded axis range over values.
pub fn padded(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
            (a.min(v), b.max(v))
        });
    if lo > hi {
        return (0.0, 1.0);
    }
    let pad = ((hi - lo) * 0.05).max(hi.abs() * 0.01).max(1e-9);
    (lo - pad, hi + pad)
}

/// Points drawn for one run, and how many there were when they were sampled.
type Sampled = (Vec<(f64, f64)>, Option<usize>);

/// Draws a scatter chart, one colour per run.
pub(crate) fn draw_scatter<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    title: &str,
    runs: &[&Run],
    (x_desc, y_desc): (&str, &str),
    series: &[Vec<(f64, f64)>],
) -> anyhow::Result<()> {
    let per_run = MAX_SCATTER_POINTS / series.len().max(1);
    let sampled: Vec<Sampled> = series.iter().map(|s| sample(s, per_run)).collect();
    let shown: usize = sampled.iter().map(|s| s.0.len()).sum();
    let from: Option<usize> = sampled
        .iter()
        .any(|s| s.1.is_some())
        .then(|| series.iter().map(Vec::len).sum());
    let area = framed(root, title, &subtitle(runs, shown, from))?;
    let (x0, x1) = padded(sampled.iter().flat_map(|s| s.0.iter().map(|p| p.0)));
    let (y0, y1) = padded(sampled.iter().flat_map(|s| s.0.iter().map(|p| p.1)));
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
        .x_label_formatter(&tick)
        .y_label_formatter(&tick)
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(draw_err)?;
    for (i, (points, _)) in sampled.iter().enumerate() {
        let c = color(i);
        let s = chart
            .draw_series(
                points
                    .iter()
                    .map(|&(x, y)| Circle::new((x, y), 3, c.mix(0.7).filled())),
            )
            .map_err(draw_err)?;
        if runs.len() > 1 {
            s.label(runs[i].name.clone())
                .legend(move |(x, y)| Circle::new((x + 10, y), 4, c.filled()));
        }
    }
    if runs.len() > 1 {
        legend(&mut chart)?;
    }
    Ok(())
}

pub(crate) fn legend<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    legend_at(chart, SeriesLabelPosition::UpperRight)
}

pub(crate) fn legend_at<'a, DB, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    position: SeriesLabelPosition,
) -> anyhow::Result<()>
where
    DB: DrawingBackend + 'a,
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .label_font((FONT, 15))
        .position(position)
        .draw()
        .map_err(draw_err)
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

    #[test]
    fn ticks_are_short_and_whole_numbers_have_no_point() {
        assert_eq!(tick(&50.0), "50");
        assert_eq!(tick(&1.0), "1");
        assert_eq!(tick(&0.0), "0");
        assert_eq!(tick(&2.5), "2.5");
        assert_eq!(tick(&0.0125), "0.0125");
        assert_eq!(tick(&123.456), "123");
        assert_eq!(tick(&-7.25), "-7.25");
        assert_eq!(tick(&0.30000000000000004), "0.3");
    }

    #[test]
    fn sampling_is_even_and_says_so() {
        let v: Vec<u32> = (0..100).collect();
        let (s, from) = sample(&v, 10);
        assert_eq!(s, vec![0, 10, 20, 30, 40, 50, 60, 70, 80, 90]);
        assert_eq!(from, Some(100));
        assert_eq!(sample(&v, 1000).1, None);
    }
}
