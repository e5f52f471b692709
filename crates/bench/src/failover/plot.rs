//! The CDF plot of failover times, laid out like the paper's Figure 16: the top panel varies the
//! randomness (150–150 … 150–300 ms), the bottom one the minimum timeout (12–24 … 150–300 ms). The
//! x axis is logarithmic, in milliseconds; the y axis is the cumulative percent of trials.
//!
//! Drawn with `plotters`' bitmap backend only, and written as PNG with the `png` crate, so no
//! system library is needed. Text needs a TrueType font: the first found of
//! `CONCORD_PLOT_FONT` and a few usual system paths is used; without one the plot is drawn without
//! text (and [`PlotReport::labelled`] says so).

use std::path::Path;
use std::sync::OnceLock;
use std::time::Duration;

use plotters::prelude::*;
use plotters::style::FontStyle;

use super::RangeResult;

/// Width of the PNG, in pixels.
pub const WIDTH_PIXELS: u32 = 1200;
/// Height of the PNG, in pixels (two panels).
pub const HEIGHT_PIXELS: u32 = 1400;

/// Where fonts usually are; the environment variable `CONCORD_PLOT_FONT` comes first.
const FONT_PATHS: [&str; 5] = [
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/Library/Fonts/Arial.ttf",
];

/// Dark, distinct colors, one per curve (the built-in palettes include pale ones that vanish on
/// white).
const CURVE_COLORS: [RGBColor; 12] = [
    RGBColor(228, 26, 28),
    RGBColor(55, 126, 184),
    RGBColor(77, 175, 74),
    RGBColor(152, 78, 163),
    RGBColor(255, 127, 0),
    RGBColor(166, 86, 40),
    RGBColor(0, 0, 0),
    RGBColor(0, 139, 139),
    RGBColor(247, 129, 191),
    RGBColor(128, 128, 0),
    RGBColor(0, 0, 139),
    RGBColor(220, 20, 60),
];

/// A plot that could not be drawn or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PlotError {
    /// `plotters` failed to draw.
    #[error("drawing the plot failed: {0}")]
    Draw(String),
    /// The PNG could not be encoded or written.
    #[error("writing the PNG failed: {0}")]
    Png(#[from] png::EncodingError),
    /// The file could not be created.
    #[error("creating the PNG file failed: {0}")]
    Io(#[from] std::io::Error),
}

fn draw_error(error: impl std::fmt::Display) -> PlotError {
    PlotError::Draw(error.to_string())
}

/// What was drawn.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlotReport {
    /// Whether a font was found, so the plot has axis labels, titles and a legend.
    pub labelled: bool,
}

/// Registers the first font found under the family name `sans-serif`, once per process.
fn font_available() -> bool {
    static FONT: OnceLock<bool> = OnceLock::new();
    *FONT.get_or_init(|| {
        let from_environment = std::env::var("CONCORD_PLOT_FONT").ok();
        let candidates = from_environment.iter().map(String::as_str).chain(FONT_PATHS);
        for path in candidates {
            let Ok(bytes) = std::fs::read(path) else { continue };
            // plotters keeps fonts for the life of the process; this leaks one font file, once.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                return true;
            }
        }
        false
    })
}

fn in_top_panel(result: &RangeResult) -> bool {
    result.range.min == Duration::from_millis(150) && !result.range.pre_vote_and_check_quorum
}

fn in_bottom_panel(result: &RangeResult) -> bool {
    !result.range.pre_vote_and_check_quorum
        && (result.range.min < Duration::from_millis(150)
            || (result.range.min == Duration::from_millis(150)
                && result.range.max == Duration::from_millis(300)))
}

/// The CDF's corners: for each trial, where the curve steps up. Trials with no leader within the
/// bound keep the curve below 100%.
fn cdf_points(result: &RangeResult, x_min_ms: f64) -> Vec<(f64, f64)> {
    let trials = result.trials().max(1) as f64;
    let mut points = Vec::with_capacity(result.times.len() * 2 + 1);
    let mut below = 0.0;
    points.push((x_min_ms, 0.0));
    for (index, time) in result.times.iter().enumerate() {
        let x = (time.as_secs_f64() * 1000.0).max(x_min_ms);
        let above = (index + 1) as f64 / trials * 100.0;
        points.push((x, below));
        points.push((x, above));
        below = above;
    }
    points
}

/// Draws both panels and writes the PNG to `path`.
pub fn write_cdf_png(path: &Path, results: &[RangeResult], bound: Duration) -> Result<PlotReport, PlotError> {
    let labelled = font_available();
    let width = WIDTH_PIXELS as usize;
    let height = HEIGHT_PIXELS as usize;
    let mut buffer = vec![0u8; width * height * 3];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, (WIDTH_PIXELS, HEIGHT_PIXELS)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_error)?;
        let panels = root.split_evenly((2, 1));
        let top: Vec<&RangeResult> = results.iter().filter(|result| in_top_panel(result)).collect();
        let bottom: Vec<&RangeResult> = results.iter().filter(|result| in_bottom_panel(result)).collect();
        let x_max_ms = bound.as_secs_f64() * 1000.0;
        let with_pre_vote = results.iter().filter(|result| result.range.pre_vote_and_check_quorum);
        let top_all: Vec<&RangeResult> = top.iter().copied().chain(with_pre_vote).collect();
        let titled = [
            ("varying randomness (minimum 150 ms)", top_all, 80.0),
            ("varying the minimum timeout", bottom, 10.0),
        ];
        let mut color_index = 0usize;
        for ((title, shown, x_min_ms), panel) in titled.into_iter().zip(panels.iter()) {
            let mut builder = ChartBuilder::on(panel);
            builder.margin(20).margin_right(40);
            if labelled {
                builder.caption(
                    format!("time without leader after a leader crash: {title}"),
                    ("sans-serif", 24),
                );
                builder.x_label_area_size(50).y_label_area_size(70);
            } else {
                builder.x_label_area_size(5).y_label_area_size(5);
            }
            let mut chart = builder
                .build_cartesian_2d((x_min_ms..x_max_ms).log_scale(), 0.0..100.0)
                .map_err(draw_error)?;
            {
                let mut mesh = chart.configure_mesh();
                mesh.x_desc("milliseconds from the crash to a new leader (log scale)")
                    .y_desc("cumulative percent of trials")
                    .x_label_formatter(&|ms| format!("{ms:.0}"))
                    .y_label_formatter(&|percent| format!("{percent:.0}%"));
                if labelled {
                    mesh.label_style(("sans-serif", 16)).axis_desc_style(("sans-serif", 18));
                } else {
                    mesh.x_labels(0).y_labels(0).disable_axes();
                }
                mesh.draw().map_err(draw_error)?;
            }
            for result in shown {
                let color = CURVE_COLORS[color_index % CURVE_COLORS.len()];
                color_index += 1;
                let series = chart
                    .draw_series(LineSeries::new(cdf_points(result, x_min_ms), color.stroke_width(2)))
                    .map_err(draw_error)?;
                if labelled {
                    series.label(result.range.label()).legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                }
            }
            if labelled {
                chart
                    .configure_series_labels()
                    .position(SeriesLabelPosition::LowerRight)
                    .background_style(WHITE.mix(0.8))
                    .border_style(BLACK)
                    .label_font(("sans-serif", 16))
                    .draw()
                    .map_err(draw_error)?;
            }
        }
        root.present().map_err(draw_error)?;
    }
    let file = std::fs::File::create(path)?;
    let mut encoder = png::Encoder::new(std::io::BufWriter::new(file), WIDTH_PIXELS, HEIGHT_PIXELS);
    encoder.set_color(png::ColorType::Rgb);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header()?;
    writer.write_image_data(&buffer)?;
    writer.finish()?;
    Ok(PlotReport { labelled })
}
