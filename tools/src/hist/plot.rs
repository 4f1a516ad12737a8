//! The percentile-distribution plot, as HdrHistogram draws it: x is the percentile on a
//! log scale of `1/(1−p)` (so 90%, 99%, 99.9%, 99.99% are evenly spaced), y the latency
//! in µs; one line per series. SVG, or an HTML page with the SVG and the percentile table
//! inline (no network assets).

use std::ops::Range;

use plotters::coord::ranged1d::{KeyPointHint, NoDefaultFormatting, Ranged, ValueFormatter};
use plotters::prelude::*;

use super::{FIELDS, Series, UNIT, summary_cells};

/// One line of the plot.
pub struct Line<'a> {
    pub label: String,
    pub series: &'a Series,
}

/// Plot size in pixels.
pub const WIDTH: u32 = 960;
pub const HEIGHT: u32 = 600;

/// Points per decade of `1/(1−p)`.
const STEPS_PER_DECADE: usize = 50;

/// `log10(1/(1−p))`, the x of percentile `p` (0 ≤ p < 1).
pub fn x_of(p: f64) -> f64 {
    -(1.0 - p).log10()
}

/// The percentile label of `x` ("50%", "99.9%").
pub fn label_of(x: f64) -> String {
    let p = (1.0 - 10f64.powf(-x)) * 100.0;
    // Round to the digits the x's decade shows, then drop trailing zeros.
    let digits = (x.ceil() as i32 - 2).clamp(0, 8) as usize;
    let s = format!("{p:.digits$}");
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        &s
    };
    format!("{s}%")
}

/// The x axis: `log10(1/(1−p))` from 0 to `max`, with ticks at 0%, 50%, 90%, 99%, …
#[derive(Debug, Clone, Copy)]
struct PercentileAxis {
    max: f64,
}

impl Ranged for PercentileAxis {
    type FormatOption = NoDefaultFormatting;
    type ValueType = f64;

    fn map(&self, value: &f64, limit: (i32, i32)) -> i32 {
        let span = f64::from(limit.1 - limit.0);
        limit.0 + (value / self.max * span).round() as i32
    }

    fn key_points<Hint: KeyPointHint>(&self, hint: Hint) -> Vec<f64> {
        if hint.max_num_points() == 0 {
            return Vec::new();
        }
        let mut keys = vec![0.0, 2f64.log10()];
        keys.extend((1..=self.max as usize).map(|d| d as f64));
        keys
    }

    fn range(&self) -> Range<f64> {
        0.0..self.max
    }
}

impl ValueFormatter<f64> for PercentileAxis {
    fn format(value: &f64) -> String {
        label_of(*value)
    }
}

/// How far right the plot goes: 99.99% at least, up to 99.9999% when the largest
/// series has that many values.
fn x_max(lines: &[Line<'_>]) -> f64 {
    let most = lines
        .iter()
        .map(|l| l.series.hist.len())
        .max()
        .unwrap_or(0)
        .max(1);
    ((most as f64).log10().ceil()).clamp(4.0, 6.0)
}

/// The (x, latency) points of one series.
pub fn points(series: &Series, x_max: f64) -> Vec<(f64, f64)> {
    let n = (x_max * STEPS_PER_DECADE as f64).round() as usize;
    (0..=n)
        .map(|i| {
            let x = x_max * i as f64 / n as f64;
            let p = 1.0 - 10f64.powf(-x);
            (x, series.hist.value_at_quantile(p) as f64)
        })
        .collect()
}

/// Draws the lines as an SVG document.
pub fn svg(lines: &[Line<'_>], title: &str) -> Result<String, String> {
    let xmax = x_max(lines);
    let all: Vec<Vec<(f64, f64)>> = lines.iter().map(|l| points(l.series, xmax)).collect();
    let ymax = all.iter().flatten().map(|p| p.1).fold(1.0, f64::max) * 1.05;

    let mut out = String::new();
    {
        let root = SVGBackend::with_string(&mut out, (WIDTH, HEIGHT)).into_drawing_area();
        let e = |e: DrawingAreaErrorKind<_>| e.to_string();
        root.fill(&WHITE).map_err(e)?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 26))
            .margin(16)
            .margin_right(48)
            .x_label_area_size(48)
            .y_label_area_size(80)
            .build_cartesian_2d(PercentileAxis { max: xmax }, 0f64..ymax)
            .map_err(e)?;
        chart
            .configure_mesh()
            .x_desc("percentile")
            .y_desc(format!("latency ({UNIT})"))
            .y_label_formatter(&|y| format!("{y:.0}"))
            .label_style(("sans-serif", 15))
            .axis_desc_style(("sans-serif", 17))
            .draw()
            .map_err(e)?;
        for (i, (line, pts)) in lines.iter().zip(all).enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(pts, color.stroke_width(2)))
                .map_err(e)?
                .label(line.label.clone())
                .legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
        chart
            .configure_series_labels()
            .label_font(("sans-serif", 15))
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .draw()
            .map_err(e)?;
        root.present().map_err(e)?;
    }
    Ok(out)
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// A self-contained HTML page: the plot inline and the percentile table of each line.
pub fn html(lines: &[Line<'_>], title: &str) -> Result<String, String> {
    let svg = svg(lines, title)?;
    let svg = svg.trim_start_matches(|c| c != '<');
    let svg = match svg.strip_prefix("<?xml") {
        Some(rest) => rest.split_once("?>").map_or(rest, |(_, r)| r).trim_start(),
        None => svg,
    };
    let mut rows = String::new();
    for l in lines {
        rows.push_str(&format!("<tr><td>{}</td>", escape(&l.label)));
        for cell in summary_cells(l.series) {
            rows.push_str(&format!("<td>{cell}</td>"));
        }
        rows.push_str("</tr>\n");
    }
    let head: String = FIELDS
        .iter()
        .chain(&["intervals"])
        .map(|f| format!("<th>{f}</th>"))
        .collect();
    Ok(format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>{t}</title>\n\
         <style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}\
         td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:right}}\
         td:first-child,th:first-child{{text-align:left}}</style>\n</head>\n<body>\n\
         <h1>{t}</h1>\n{svg}\n<p>Latency in {UNIT}, all intervals of each tag merged.</p>\n\
         <table>\n<tr><th>series</th>{head}</tr>\n{rows}</table>\n</body>\n</html>\n",
        t = escape(title),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels() {
        let labels: Vec<String> = [0.0, 2f64.log10(), 1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
            .iter()
            .map(|&x| label_of(x))
            .collect();
        assert_eq!(
            labels,
            [
                "0%", "50%", "90%", "99%", "99.9%", "99.99%", "99.999%", "99.9999%"
            ]
        );
        assert!((x_of(0.999) - 3.0).abs() < 1e-9);
    }
}
