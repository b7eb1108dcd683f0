//! Plots of a run, as PNG and SVG: loss curves, validation metric curves and the confusion
//! matrix. Text is drawn with a bundled font (DejaVu Sans), so no system font is needed.

use std::path::{Path, PathBuf};
use std::sync::Once;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;

use crate::{Result, TrainError};

static FONT: &[u8] = include_bytes!("../assets/DejaVuSans.ttf");
static REGISTER: Once = Once::new();

const FAMILY: &str = "sans-serif";

fn register() {
    REGISTER.call_once(|| {
        let _ = plotters::style::register_font(FAMILY, FontStyle::Normal, FONT);
    });
}

/// One named curve: `(x, y)` points.
pub struct Series {
    /// Legend label.
    pub label: String,
    /// Points in x order.
    pub points: Vec<(f64, f64)>,
}

/// A line chart with axes, labels and a legend.
pub struct LineChart {
    /// Title.
    pub title: String,
    /// x-axis label.
    pub x_label: String,
    /// y-axis label.
    pub y_label: String,
    /// The curves.
    pub series: Vec<Series>,
}

/// A confusion matrix: `counts[truth][predicted]`.
pub struct ConfusionChart {
    /// Title.
    pub title: String,
    /// Class names.
    pub labels: Vec<String>,
    /// Counts.
    pub counts: Vec<Vec<u64>>,
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

fn plot_err(path: &Path) -> impl Fn(String) -> TrainError + '_ {
    move |message| TrainError::Plot {
        path: path.to_path_buf(),
        message,
    }
}

fn draw_lines<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    c: &LineChart,
) -> std::result::Result<(), String> {
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let pts = c.series.iter().flat_map(|s| s.points.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for &(x, y) in pts.filter(|p| p.0.is_finite() && p.1.is_finite()) {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y0 = y0.min(y);
        y1 = y1.max(y);
    }
    if x0 > x1 {
        (x0, x1, y0, y1) = (0.0, 1.0, 0.0, 1.0);
    }
    if x1 - x0 < 1e-9 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, (FAMILY, 24))
        .margin(16)
        .x_label_area_size(48)
        .y_label_area_size(64)
        .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
        .map_err(e)?;
    chart
        .configure_mesh()
        .x_desc(&c.x_label)
        .y_desc(&c.y_label)
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(e)?;
    for (i, s) in c.series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .copied()
            .filter(|p| p.0.is_finite() && p.1.is_finite())
            .collect();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
            .map_err(e)?
            .label(&s.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(e)?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
}

fn draw_confusion<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    c: &ConfusionChart,
) -> std::result::Result<(), String> {
    use plotters::coord::ranged1d::SegmentValue;
    use plotters::style::text_anchor::{HPos, Pos, VPos};
    let e = |x: DrawingAreaErrorKind<DB::ErrorType>| x.to_string();
    root.fill(&WHITE).map_err(e)?;
    let k = c.labels.len().max(2);
    let longest = c
        .labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(4);
    let mut chart = ChartBuilder::on(&root)
        .caption(&c.title, (FAMILY, 24))
        .margin(16)
        .x_label_area_size(56)
        .y_label_area_size((longest * 9 + 40).min(260) as u32)
        // Integer ranges are inclusive in plotters: k segments are 0..k-1.
        .build_cartesian_2d((0..k - 1).into_segmented(), (0..k - 1).into_segmented())
        .map_err(e)?;
    let name = |i: usize| c.labels.get(i).cloned().unwrap_or_default();
    let center = |v: &SegmentValue<usize>| match v {
        SegmentValue::CenterOf(i) => Some(*i),
        _ => None,
    };
    chart
        .configure_mesh()
        .disable_mesh()
        .x_labels(k)
        .y_labels(k)
        .x_desc("predicted")
        .y_desc("true")
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 16))
        .x_label_formatter(&|v| center(v).filter(|&i| i < k).map(name).unwrap_or_default())
        // Row 0 at the top, as confusion matrices are read.
        .y_label_formatter(&|v| {
            center(v)
                .and_then(|i| (k - 1).checked_sub(i))
                .map(name)
                .unwrap_or_default()
        })
        .draw()
        .map_err(e)?;
    let row_totals: Vec<u64> = c.counts.iter().map(|r| r.iter().sum()).collect();
    for (t, row) in c.counts.iter().enumerate() {
        for (p, &n) in row.iter().enumerate() {
            let frac = n as f64 / row_totals[t].max(1) as f64;
            let shade = (255.0 * (1.0 - 0.8 * frac)) as u8;
            let y = k - 1 - t;
            chart
                .draw_series(std::iter::once(Rectangle::new(
                    [
                        (SegmentValue::Exact(p), SegmentValue::Exact(y)),
                        (SegmentValue::Exact(p + 1), SegmentValue::Exact(y + 1)),
                    ],
                    RGBColor(shade, shade, 255).filled(),
                )))
                .map_err(e)?;
            let color = if frac > 0.55 { WHITE } else { BLACK };
            let style = (FAMILY, 18)
                .into_font()
                .color(&color)
                .pos(Pos::new(HPos::Center, VPos::Center));
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{n} ({:.0}%)", 100.0 * frac),
                    (SegmentValue::CenterOf(p), SegmentValue::CenterOf(y)),
                    style,
                )))
                .map_err(e)?;
        }
    }
    root.present().map_err(e)?;
    Ok(())
}

/// Writes `stem.png` and `stem.svg` in `dir` for a line chart; returns both paths.
pub fn write_lines(dir: &Path, stem: &str, c: &LineChart) -> Result<Vec<PathBuf>> {
    register();
    write_both(
        dir,
        stem,
        (900, 540),
        |root| draw_lines(root, c),
        |root| draw_lines(root, c),
    )
}

/// Writes `stem.png` and `stem.svg` in `dir` for a confusion matrix.
pub fn write_confusion(dir: &Path, stem: &str, c: &ConfusionChart) -> Result<Vec<PathBuf>> {
    register();
    let side = (320 + 90 * c.labels.len()).min(1400) as u32;
    write_both(
        dir,
        stem,
        (side + 120, side),
        |root| draw_confusion(root, c),
        |root| draw_confusion(root, c),
    )
}

/// Draws both formats in memory, then writes each file atomically (like every write of
/// sequin).
fn write_both(
    dir: &Path,
    stem: &str,
    size: (u32, u32),
    png: impl FnOnce(DrawingArea<BitMapBackend<'_>, Shift>) -> std::result::Result<(), String>,
    svg: impl FnOnce(DrawingArea<SVGBackend<'_>, Shift>) -> std::result::Result<(), String>,
) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).map_err(|source| TrainError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let png_path = dir.join(format!("{stem}.png"));
    let svg_path = dir.join(format!("{stem}.svg"));
    let mut rgb = vec![0u8; size.0 as usize * size.1 as usize * 3];
    png(BitMapBackend::with_buffer(&mut rgb, size).into_drawing_area())
        .map_err(plot_err(&png_path))?;
    let mut encoded = std::io::Cursor::new(Vec::new());
    image::RgbImage::from_raw(size.0, size.1, rgb)
        .expect("the buffer has the image's size")
        .write_to(&mut encoded, image::ImageOutputFormat::Png)
        .map_err(|e| plot_err(&png_path)(e.to_string()))?;
    let mut text = String::new();
    svg(SVGBackend::with_string(&mut text, size).into_drawing_area())
        .map_err(plot_err(&svg_path))?;
    sequin_hf::write_atomic(&png_path, encoded.get_ref())?;
    sequin_hf::write_atomic(&svg_path, text.as_bytes())?;
    Ok(vec![png_path, svg_path])
}

/// The plots of a finished run, from its `metrics.jsonl` lines: `loss` (training and
/// validation loss by step), `metrics` (validation accuracy and macro-F1 by step), and, when
/// given, the confusion matrix.
pub fn plot_run(
    dir: &Path,
    log: &[serde_json::Value],
    confusion: Option<&ConfusionChart>,
) -> Result<Vec<PathBuf>> {
    let plots = dir.join("plots");
    let evals: Vec<&serde_json::Value> = log
        .iter()
        .filter(|m| m.get("validation").is_some())
        .collect();
    let pts = |key: &dyn Fn(&serde_json::Value) -> Option<f64>| -> Vec<(f64, f64)> {
        evals
            .iter()
            .filter_map(|m| Some((m["step"].as_f64()?, key(m)?)))
            .collect()
    };
    let mut out = Vec::new();
    let train_loss: Vec<(f64, f64)> = log
        .iter()
        .filter(|m| m.get("validation").is_none())
        .filter_map(|m| Some((m["step"].as_f64()?, m.get("loss")?.as_f64()?)))
        .collect();
    let mut loss = vec![Series {
        label: "training loss (mean since the previous point)".into(),
        points: if train_loss.is_empty() {
            pts(&|m| m["train_loss"].as_f64())
        } else {
            train_loss
        },
    }];
    let val_loss = pts(&|m| m["validation"]["loss"].as_f64());
    if !val_loss.is_empty() {
        loss.push(Series {
            label: "validation loss".into(),
            points: val_loss,
        });
    }
    out.extend(write_lines(
        &plots,
        "loss",
        &LineChart {
            title: "Loss".into(),
            x_label: "optimizer step".into(),
            y_label: "cross-entropy".into(),
            series: loss,
        },
    )?);
    let acc = pts(&|m| m["validation"]["accuracy"].as_f64());
    if !acc.is_empty() {
        out.extend(write_lines(
            &plots,
            "metrics",
            &LineChart {
                title: "Validation metrics".into(),
                x_label: "optimizer step".into(),
                y_label: "score".into(),
                series: vec![
                    Series {
                        label: "accuracy".into(),
                        points: acc,
                    },
                    Series {
                        label: "macro-F1".into(),
                        points: pts(&|m| m["validation"]["macro_f1"].as_f64()),
                    },
                ],
            },
        )?);
    }
    if let Some(c) = confusion {
        out.extend(write_confusion(&plots, "confusion", c)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_png_and_svg_with_text() {
        let dir = std::env::temp_dir().join(format!("sequin-plots-{}", std::process::id()));
        let log: Vec<serde_json::Value> = (1..=4)
            .map(|s| {
                serde_json::json!({"step": s * 10, "train_loss": 1.0 / s as f64,
                    "validation": {"loss": 1.2 / s as f64, "accuracy": 0.5 + 0.1 * s as f64,
                                   "macro_f1": 0.4 + 0.1 * s as f64, "n": 10}})
            })
            .collect();
        let confusion = ConfusionChart {
            title: "Confusion matrix (test)".into(),
            labels: vec!["great".into(), "other".into()],
            counts: vec![vec![50, 5], vec![7, 38]],
        };
        let files = plot_run(&dir, &log, Some(&confusion)).unwrap();
        assert_eq!(files.len(), 6);
        for f in &files {
            let bytes = std::fs::read(f).unwrap();
            if f.extension().unwrap() == "png" {
                assert_eq!(&bytes[1..4], b"PNG");
                assert!(bytes.len() > 5_000, "{} is nearly empty", f.display());
            } else {
                let text = String::from_utf8(bytes).unwrap();
                assert!(text.contains("<svg"));
                assert!(text.contains("optimizer step") || text.contains("predicted"));
            }
        }
        let svg = std::fs::read_to_string(dir.join("plots/loss.svg")).unwrap();
        assert!(svg.contains("validation loss"), "legend missing");
        let svg = std::fs::read_to_string(dir.join("plots/confusion.svg")).unwrap();
        assert!(
            svg.contains("great") && svg.contains("38 (84%)"),
            "labels or counts missing: {svg}"
        );
        if std::env::var_os("SEQUIN_KEEP_PLOTS").is_none() {
            let _ = std::fs::remove_dir_all(&dir);
        }
    }
}

/// Writes `reliability.png` and `reliability.svg` in `dir`: the reliability diagram of
/// single-label logits on `split` data, accuracy against confidence over the ECE bins, before
/// and after the calibration's temperature, with the diagonal of perfect calibration.
pub fn write_reliability(
    dir: &Path,
    logits: &[Vec<f32>],
    ids: &[usize],
    c: &crate::calibrate::Calibration,
    split: &str,
) -> Result<Vec<PathBuf>> {
    let curve = |t: f64| -> Vec<(f64, f64)> {
        crate::calibrate::reliability(logits, ids, t)
            .into_iter()
            .filter(|b| b.count > 0)
            .map(|b| (b.confidence, b.accuracy))
            .collect()
    };
    let chart = LineChart {
        title: format!("Reliability ({split}, {} examples)", logits.len()),
        x_label: "confidence of the top class".into(),
        y_label: "accuracy".into(),
        series: vec![
            Series {
                label: "perfect calibration".into(),
                points: vec![(0.0, 0.0), (1.0, 1.0)],
            },
            Series {
                label: format!("softmax (ECE {:.4})", c.before.ece),
                points: curve(1.0),
            },
            Series {
                label: format!("temperature {:.2} (ECE {:.4})", c.temperature, c.after.ece),
                points: curve(f64::from(c.temperature)),
            },
        ],
    };
    write_lines(dir, "reliability", &chart)
}
