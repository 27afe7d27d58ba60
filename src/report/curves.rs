//! Loss and accuracy curves (plotters): `curves.png` in every run folder, redrawn each
//! epoch, and the same chart as SVG in the HTML reports. Text is drawn with an embedded
//! DejaVu Sans, so the PNG looks the same on every machine.

use super::history::History;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

pub const WIDTH: u32 = 1200;
pub const HEIGHT: u32 = 480;

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const RUNNING: RGBColor = RGBColor(158, 202, 225);
const VAL: RGBColor = RGBColor(230, 110, 20);

static FONT: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

fn register_font() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for style in [FontStyle::Normal, FontStyle::Bold] {
            // The bytes are a valid TrueType font (checked by the tests).
            let _ = plotters::style::register_font("sans-serif", style, FONT);
        }
    });
}

/// The y axis of a panel: accuracies from a multiple of 5 below the lowest value to 100,
/// losses from 0 to a little above the highest.
fn y_range(values: &[f64], accuracy: bool) -> (f64, f64) {
    if accuracy {
        let min = values.iter().copied().fold(100.0f64, f64::min);
        (((min - 2.0) / 5.0).floor().max(0.0) * 5.0, 100.0)
    } else {
        let max = values.iter().copied().fold(0.0f64, f64::max);
        (0.0, if max > 0.0 { max * 1.08 } else { 1.0 })
    }
}

/// An axis label: at most two decimals, no float noise ("0.6", not "0.6000000000000001").
fn tick(v: f64) -> String {
    format!("{}", (v * 100.0).round() / 100.0)
}

type Chart<'a, DB> = ChartContext<
    'a,
    DB,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// The legend box, out of the curves' way: top right for losses, bottom right for
/// accuracies.
fn legend<'a, DB: DrawingBackend + 'a>(
    chart: &mut Chart<'a, DB>,
    accuracy: bool,
) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
    chart
        .configure_series_labels()
        .position(if accuracy {
            SeriesLabelPosition::LowerRight
        } else {
            SeriesLabelPosition::UpperRight
        })
        .label_font(("sans-serif", 14))
        .background_style(WHITE.mix(0.85))
        .border_style(RGBColor(200, 200, 200))
        .draw()
}

/// Draws both panels (loss left, accuracy right) under `title`.
pub fn draw<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    h: &History,
    title: &str,
) -> Result<(), String> {
    register_font();
    let err = |e: DrawingAreaErrorKind<DB::ErrorType>| e.to_string();
    root.fill(&WHITE).map_err(err)?;
    let root = root
        .titled(title, ("sans-serif", 22).into_font().style(FontStyle::Bold))
        .map_err(err)?;
    let (left, right) = root.split_horizontally(root.dim_in_pixel().0 / 2);
    let last_x = h
        .steps
        .iter()
        .map(|p| p.x)
        .chain(h.epochs.iter().map(|e| e.epoch as f64))
        .fold(1.0f64, f64::max);
    let running: Vec<(f64, f64, f64)> = h
        .steps
        .iter()
        .map(|p| (p.x, p.loss, p.accuracy * 100.0))
        .collect();
    let epochs: Vec<(f64, f64, f64)> = h
        .epochs
        .iter()
        .map(|e| (e.epoch as f64, e.train_loss, e.train_accuracy * 100.0))
        .collect();
    let val: Vec<(f64, f64, f64)> = h
        .epochs
        .iter()
        .filter_map(|e| Some((e.epoch as f64, e.val_loss?, e.val_accuracy? * 100.0)))
        .collect();
    for (area, accuracy) in [(&left, false), (&right, true)] {
        let pick = |t: &(f64, f64, f64)| (t.0, if accuracy { t.2 } else { t.1 });
        let all: Vec<f64> = running
            .iter()
            .chain(&epochs)
            .chain(&val)
            .map(|t| pick(t).1)
            .filter(|v| v.is_finite())
            .collect();
        let (lo, hi) = y_range(&all, accuracy);
        let mut chart = ChartBuilder::on(area)
            .caption(
                if accuracy { "accuracy (%)" } else { "loss" },
                ("sans-serif", 18),
            )
            .margin(14)
            .x_label_area_size(42)
            .y_label_area_size(58)
            .build_cartesian_2d(0.0..last_x, lo..hi)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc(if accuracy {
                "accuracy (%)"
            } else {
                "cross-entropy loss"
            })
            .label_style(("sans-serif", 14))
            .axis_desc_style(("sans-serif", 15))
            .light_line_style(RGBColor(246, 246, 246))
            .max_light_lines(2)
            .x_label_formatter(&|v| tick(*v))
            .y_label_formatter(&|v| {
                if accuracy {
                    format!("{v:.0}")
                } else {
                    format!("{v:.2}")
                }
            })
            .draw()
            .map_err(err)?;
        let finite = |v: &[(f64, f64, f64)]| -> Vec<(f64, f64)> {
            v.iter().map(pick).filter(|p| p.1.is_finite()).collect()
        };
        if !running.is_empty() {
            chart
                .draw_series(LineSeries::new(finite(&running), RUNNING.stroke_width(2)))
                .map_err(err)?
                .label("train (running, within epoch)")
                .legend(|(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], RUNNING.stroke_width(2))
                });
        }
        for (points, color, label) in [
            (finite(&epochs), TRAIN, "train (epoch)"),
            (finite(&val), VAL, "validation"),
        ] {
            if points.is_empty() {
                continue;
            }
            chart
                .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(err)?;
        }
        legend(&mut chart, accuracy).map_err(err)?;
    }
    root.present().map_err(err)
}

/// The chart as PNG bytes.
pub fn png(h: &History, title: &str) -> Result<Vec<u8>, String> {
    let mut rgb = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (WIDTH, HEIGHT)).into_drawing_area();
        draw(&root, h, title)?;
    }
    let mut out = Vec::new();
    image::RgbImage::from_raw(WIDTH, HEIGHT, rgb)
        .ok_or("chart buffer has the wrong size")?
        .write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png)
        .map_err(|e| e.to_string())?;
    Ok(out)
}

/// The chart as an SVG document (for the HTML reports).
pub fn svg(h: &History, title: &str, size: (u32, u32)) -> Result<String, String> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        draw(&root, h, title)?;
    }
    Ok(text)
}

/// Redraws `curves.png` in `run_dir` from its metrics.jsonl (atomically, so that a viewer
/// never sees half a file).
pub fn write_png(run_dir: &Path) -> Result<(), String> {
    let h = History::read(&run_dir.join("metrics.jsonl")).map_err(|e| e.to_string())?;
    let title = super::title(run_dir, &h);
    let bytes = png(&h, &title)?;
    crate::fsutil::write_atomic(&run_dir.join("curves.png"), &bytes).map_err(|e| e.to_string())
}

/// Validation accuracy and loss per epoch of several runs, overlaid (the comparison page).
pub fn compare_svg(runs: &[(&str, &History)], size: (u32, u32)) -> Result<String, String> {
    register_font();
    const PALETTE: [RGBColor; 8] = [
        RGBColor(31, 119, 180),
        RGBColor(230, 110, 20),
        RGBColor(44, 160, 44),
        RGBColor(214, 39, 40),
        RGBColor(148, 103, 189),
        RGBColor(140, 86, 75),
        RGBColor(227, 119, 194),
        RGBColor(100, 100, 100),
    ];
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, size).into_drawing_area();
        let err = |e: DrawingAreaErrorKind<std::io::Error>| e.to_string();
        root.fill(&WHITE).map_err(err)?;
        let (left, right) = root.split_horizontally(size.0 / 2);
        let series: Vec<Vec<(f64, f64, f64)>> = runs
            .iter()
            .map(|(_, h)| {
                h.epochs
                    .iter()
                    .filter_map(|e| Some((e.epoch as f64, e.val_loss?, e.val_accuracy? * 100.0)))
                    .collect()
            })
            .collect();
        let last_x = series.iter().flatten().map(|p| p.0).fold(1.0f64, f64::max);
        for (area, accuracy) in [(&left, false), (&right, true)] {
            let pick = |t: &(f64, f64, f64)| (t.0, if accuracy { t.2 } else { t.1 });
            let values: Vec<f64> = series
                .iter()
                .flatten()
                .map(|t| pick(t).1)
                .filter(|v| v.is_finite())
                .collect();
            let (lo, hi) = y_range(&values, accuracy);
            let mut chart = ChartBuilder::on(area)
                .caption(
                    if accuracy {
                        "validation accuracy (%)"
                    } else {
                        "validation loss"
                    },
                    ("sans-serif", 18),
                )
                .margin(14)
                .x_label_area_size(42)
                .y_label_area_size(58)
                .build_cartesian_2d(0.0..last_x, lo..hi)
                .map_err(err)?;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .x_label_formatter(&|v| tick(*v))
                .label_style(("sans-serif", 14))
                .light_line_style(RGBColor(246, 246, 246))
                .max_light_lines(2)
                .y_label_formatter(&|v| {
                    if accuracy {
                        format!("{v:.0}")
                    } else {
                        format!("{v:.2}")
                    }
                })
                .draw()
                .map_err(err)?;
            for (i, ((name, _), points)) in runs.iter().zip(&series).enumerate() {
                let color = PALETTE[i % PALETTE.len()];
                let points: Vec<(f64, f64)> = points
                    .iter()
                    .map(pick)
                    .filter(|p| p.1.is_finite())
                    .collect();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))
                    .map_err(err)?
                    .label(name.to_string())
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                    });
                chart
                    .draw_series(points.iter().map(|&p| Circle::new(p, 3, color.filled())))
                    .map_err(err)?;
            }
            legend(&mut chart, accuracy).map_err(err)?;
        }
        root.present().map_err(err)?;
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn ticks_have_no_float_noise() {
        assert_eq!(super::tick(0.6000000000000001), "0.6");
        assert_eq!(super::tick(1.5999999999999999), "1.6");
        assert_eq!(super::tick(2.0), "2");
    }
}
