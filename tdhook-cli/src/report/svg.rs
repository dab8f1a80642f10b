//! Small SVG charts: heatmaps (single or a row of panels sharing one colour scale) and bar
//! charts, with titles, axis labels and colour legends. Plain strings, no dependencies.

use std::fmt::Write;

/// Escape text for XML.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const FONT: &str = "font-family=\"Helvetica, Arial, sans-serif\"";
const INK: &str = "#222";
const MUTED: &str = "#555";

/// An RGB colour.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rgb(pub u8, pub u8, pub u8);

impl Rgb {
    /// `#rrggbb`.
    pub fn hex(self) -> String {
        format!("#{:02x}{:02x}{:02x}", self.0, self.1, self.2)
    }

    /// Relative luminance in [0, 1] (for choosing a readable text colour on top).
    pub fn luminance(self) -> f64 {
        let c = |v: u8| {
            let v = v as f64 / 255.0;
            if v <= 0.03928 {
                v / 12.92
            } else {
                ((v + 0.055) / 1.055).powf(2.4)
            }
        };
        0.2126 * c(self.0) + 0.7152 * c(self.1) + 0.0722 * c(self.2)
    }

    fn lerp(self, other: Rgb, t: f64) -> Rgb {
        let m = |a: u8, b: u8| (a as f64 + (b as f64 - a as f64) * t).round() as u8;
        Rgb(m(self.0, other.0), m(self.1, other.1), m(self.2, other.2))
    }
}

/// A colour scale from values to colours.
#[derive(Clone, Debug, PartialEq)]
pub struct ColorScale {
    /// Value at the first stop.
    pub min: f64,
    /// Value at the last stop.
    pub max: f64,
    /// Evenly spaced colour stops.
    pub stops: Vec<Rgb>,
    /// What the values are (the legend's title).
    pub label: String,
}

impl ColorScale {
    /// Viridis-like sequential scale (dark purple → yellow), for values like probabilities.
    pub fn sequential(min: f64, max: f64, label: &str) -> Self {
        let stops = [
            (68, 1, 84),
            (72, 40, 120),
            (62, 74, 137),
            (49, 104, 142),
            (38, 130, 142),
            (31, 158, 137),
            (53, 183, 121),
            (109, 205, 89),
            (180, 222, 44),
            (253, 231, 37),
        ];
        Self {
            min,
            max,
            stops: stops.iter().map(|&(r, g, b)| Rgb(r, g, b)).collect(),
            label: label.into(),
        }
    }

    /// Blue → white → red diverging scale, symmetric around 0 (`-limit..limit`).
    pub fn diverging(limit: f64, label: &str) -> Self {
        let stops = [
            (33, 102, 172),
            (103, 169, 207),
            (209, 229, 240),
            (247, 247, 247),
            (253, 219, 199),
            (239, 138, 98),
            (178, 24, 43),
        ];
        Self {
            min: -limit,
            max: limit,
            stops: stops.iter().map(|&(r, g, b)| Rgb(r, g, b)).collect(),
            label: label.into(),
        }
    }

    /// The colour of `v` (clamped to the range).
    pub fn color(&self, v: f64) -> Rgb {
        if !v.is_finite() {
            return Rgb(200, 200, 200);
        }
        let t = ((v - self.min) / (self.max - self.min)).clamp(0.0, 1.0);
        let n = self.stops.len() - 1;
        let x = t * n as f64;
        let i = (x.floor() as usize).min(n - 1);
        self.stops[i].lerp(self.stops[i + 1], x - i as f64)
    }

    /// A vertical legend (gradient bar with ticks) at `(x, y)`, `h` tall; `id` must be unique
    /// in the page.
    fn legend(&self, out: &mut String, id: &str, x: f64, y: f64, h: f64) {
        let w = 14.0;
        let _ = write!(
            out,
            "<defs><linearGradient id=\"{id}\" x1=\"0\" y1=\"1\" x2=\"0\" y2=\"0\">"
        );
        let n = self.stops.len() - 1;
        for (i, c) in self.stops.iter().enumerate() {
            let _ = write!(
                out,
                "<stop offset=\"{:.3}\" stop-color=\"{}\"/>",
                i as f64 / n as f64,
                c.hex()
            );
        }
        let _ = write!(out, "</linearGradient></defs>");
        let _ = write!(
            out,
            "<rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" fill=\"url(#{id})\" stroke=\"#888\" stroke-width=\"0.5\"/>"
        );
        for k in 0..=4 {
            let v = self.min + (self.max - self.min) * k as f64 / 4.0;
            let ty = y + h - h * k as f64 / 4.0;
            let _ = write!(
                out,
                "<line x1=\"{}\" y1=\"{ty}\" x2=\"{}\" y2=\"{ty}\" stroke=\"{MUTED}\"/>\
                 <text x=\"{}\" y=\"{}\" font-size=\"12\" {FONT} fill=\"{INK}\">{}</text>",
                x + w,
                x + w + 4.0,
                x + w + 7.0,
                ty + 4.0,
                fmt_tick(v)
            );
        }
        let cx = x + w + 46.0;
        let cy = y + h / 2.0;
        let _ = write!(
            out,
            "<text x=\"{cx}\" y=\"{cy}\" font-size=\"12\" {FONT} fill=\"{MUTED}\" text-anchor=\"middle\" \
             transform=\"rotate(-90 {cx} {cy})\">{}</text>",
            esc(&self.label)
        );
    }
}

/// Split `text` into lines of at most about `max` characters, at spaces.
pub fn wrap(text: &str, max: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for word in text.split(' ') {
        if !line.is_empty() && line.chars().count() + 1 + word.chars().count() > max {
            lines.push(std::mem::take(&mut line));
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(word);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Title and wrapped subtitle at the top left; returns the y below them.
fn header(out: &mut String, title: &str, subtitle: &str, width: f64) -> f64 {
    let _ = write!(
        out,
        "<text x=\"12\" y=\"26\" font-size=\"17\" font-weight=\"bold\" {FONT} fill=\"{INK}\">{}</text>",
        esc(title)
    );
    let mut y = 26.0;
    if !subtitle.is_empty() {
        let max = ((width - 24.0) / 6.6).max(30.0) as usize;
        for line in wrap(subtitle, max) {
            y += 18.0;
            let _ = write!(
                out,
                "<text x=\"12\" y=\"{y}\" font-size=\"13\" {FONT} fill=\"{MUTED}\">{}</text>",
                esc(&line)
            );
        }
    }
    y + 8.0
}

/// Height the header takes at `width`.
fn header_height(subtitle: &str, width: f64) -> f64 {
    let max = ((width - 24.0) / 6.6).max(30.0) as usize;
    let lines = if subtitle.is_empty() {
        0
    } else {
        wrap(subtitle, max).len()
    };
    26.0 + 18.0 * lines as f64 + 8.0
}

fn fmt_tick(v: f64) -> String {
    if v.abs() < 1e-9 {
        "0".into()
    } else if (v - v.round()).abs() < 1e-9 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

/// One heatmap panel: `values[row][col]`.
#[derive(Clone, Debug, Default)]
pub struct Panel {
    /// Panel title (e.g. `head 2`).
    pub title: String,
    /// Values, row-major; NaN cells are drawn grey.
    pub values: Vec<Vec<f64>>,
}

/// A heatmap: one or several panels side by side sharing row/column labels and a colour scale.
#[derive(Clone, Debug)]
pub struct Heatmap {
    /// Chart title.
    pub title: String,
    /// Optional line under the title.
    pub subtitle: String,
    /// One label per row (left).
    pub row_labels: Vec<String>,
    /// One label per column (bottom, rotated).
    pub col_labels: Vec<String>,
    /// Axis title of rows.
    pub row_title: String,
    /// Axis title of columns.
    pub col_title: String,
    /// The panels.
    pub panels: Vec<Panel>,
    /// Colours.
    pub scale: ColorScale,
    /// Cell size in px.
    pub cell: f64,
    /// Write each cell's value in it.
    pub annotate: bool,
    /// Outline these `(panel, row, col)` cells.
    pub highlight: Vec<(usize, usize, usize)>,
}

impl Heatmap {
    /// Render; `id` prefixes the ids of gradients so several charts can share a page.
    pub fn svg(&self, id: &str) -> String {
        let rows = self.row_labels.len();
        let cols = self.col_labels.len();
        let c = self.cell;
        let label_w = 8.0
            + 7.0
                * self
                    .row_labels
                    .iter()
                    .map(|l| l.chars().count())
                    .max()
                    .unwrap_or(0) as f64;
        let left = 30.0 + label_w;
        // Labels are rotated by 55°: their vertical extent is about sin 55° of their length.
        let col_label_h = 16.0
            + 5.4
                * self
                    .col_labels
                    .iter()
                    .map(|l| l.chars().count())
                    .max()
                    .unwrap_or(0) as f64;
        let panel_w = cols as f64 * c;
        let gap = 24.0;
        let grid_w =
            self.panels.len() as f64 * panel_w + (self.panels.len().saturating_sub(1)) as f64 * gap;
        let grid_h = rows as f64 * c;
        let width = (left + grid_w + 110.0).max(8.5 * self.title.chars().count() as f64 + 24.0);
        let top = header_height(&self.subtitle, width) + 6.0;
        let top = top + if self.panels.len() > 1 { 20.0 } else { 0.0 };
        let height = top + grid_h + col_label_h + 28.0;
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
             viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-label=\"{}\">\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
            esc(&self.title)
        );
        header(&mut s, &self.title, &self.subtitle, width);
        for (pi, panel) in self.panels.iter().enumerate() {
            let x0 = left + pi as f64 * (panel_w + gap);
            if self.panels.len() > 1 || !panel.title.is_empty() {
                let _ = write!(
                    s,
                    "<text x=\"{}\" y=\"{}\" font-size=\"13\" font-weight=\"bold\" {FONT} fill=\"{INK}\" text-anchor=\"middle\">{}</text>",
                    x0 + panel_w / 2.0,
                    top - 8.0,
                    esc(&panel.title)
                );
            }
            for (r, row) in panel.values.iter().enumerate() {
                for (ci, &v) in row.iter().enumerate() {
                    let col = self.scale.color(v);
                    let (x, y) = (x0 + ci as f64 * c, top + r as f64 * c);
                    let _ = write!(
                        s,
                        "<rect x=\"{x:.1}\" y=\"{y:.1}\" width=\"{c:.1}\" height=\"{c:.1}\" fill=\"{}\"><title>{} / {}: {v:.3}</title></rect>",
                        col.hex(),
                        esc(&self.row_labels[r]),
                        esc(&self.col_labels[ci])
                    );
                    if self.annotate && v.is_finite() {
                        let ink = if col.luminance() > 0.35 {
                            "#111"
                        } else {
                            "#fff"
                        };
                        let _ = write!(
                            s,
                            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"{:.0}\" {FONT} fill=\"{ink}\" text-anchor=\"middle\">{}</text>",
                            x + c / 2.0,
                            y + c / 2.0 + 4.0,
                            (c * 0.3).clamp(9.0, 13.0),
                            fmt_cell(v)
                        );
                    }
                }
            }
            let _ = write!(
                s,
                "<rect x=\"{x0}\" y=\"{top}\" width=\"{panel_w}\" height=\"{grid_h}\" fill=\"none\" stroke=\"#999\" stroke-width=\"0.6\"/>"
            );
            for &(p, r, ci) in &self.highlight {
                if p == pi {
                    let _ = write!(
                        s,
                        "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"{c:.1}\" height=\"{c:.1}\" fill=\"none\" stroke=\"#000\" stroke-width=\"2.5\"/>",
                        x0 + ci as f64 * c,
                        top + r as f64 * c
                    );
                }
            }
            // Column labels (rotated), under every panel.
            for (ci, l) in self.col_labels.iter().enumerate() {
                let x = x0 + ci as f64 * c + c / 2.0 + 4.0;
                let y = top + grid_h + 8.0;
                let _ = write!(
                    s,
                    "<text x=\"{x:.1}\" y=\"{y:.1}\" font-size=\"12\" {FONT} fill=\"{INK}\" text-anchor=\"end\" \
                     transform=\"rotate(-55 {x:.1} {y:.1})\">{}</text>",
                    esc(l)
                );
            }
        }
        // Row labels, left of the first panel.
        for (r, l) in self.row_labels.iter().enumerate() {
            let _ = write!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" {FONT} fill=\"{INK}\" text-anchor=\"end\">{}</text>",
                left - 6.0,
                top + r as f64 * c + c / 2.0 + 4.0,
                esc(l)
            );
        }
        // Axis titles.
        let ry = top + grid_h / 2.0;
        let _ = write!(
            s,
            "<text x=\"16\" y=\"{ry}\" font-size=\"13\" {FONT} fill=\"{MUTED}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {ry})\">{}</text>",
            esc(&self.row_title)
        );
        let _ = write!(
            s,
            "<text x=\"{}\" y=\"{}\" font-size=\"13\" {FONT} fill=\"{MUTED}\" text-anchor=\"middle\">{}</text>",
            left + grid_w / 2.0,
            height - 10.0,
            esc(&self.col_title)
        );
        self.scale.legend(
            &mut s,
            &format!("{id}-legend"),
            left + grid_w + 18.0,
            top,
            grid_h.max(120.0),
        );
        s.push_str("</svg>\n");
        s
    }
}

fn fmt_cell(v: f64) -> String {
    let t = format!("{v:.2}");
    match t.as_str() {
        "-0.00" | "0.00" => "0".into(),
        _ => t.replace("0.", ".").replace("-.", "−."),
    }
}

/// A bar chart with a value axis from `y_min` to `y_max`.
#[derive(Clone, Debug)]
pub struct BarChart {
    /// Chart title.
    pub title: String,
    /// Optional line under the title.
    pub subtitle: String,
    /// One label per bar.
    pub labels: Vec<String>,
    /// Bar heights.
    pub values: Vec<f64>,
    /// Optional second series drawn as dots with this label (e.g. train accuracy).
    pub dots: Option<(String, Vec<f64>)>,
    /// Bar colours (one per bar, or one for all).
    pub colors: Vec<Rgb>,
    /// Label of the bars' series (legend).
    pub series: String,
    /// Value axis title.
    pub y_title: String,
    /// Category axis title.
    pub x_title: String,
    /// Value axis range.
    pub y_min: f64,
    /// Value axis range.
    pub y_max: f64,
    /// A dashed horizontal reference line (value, label), e.g. chance.
    pub reference: Option<(f64, String)>,
}

impl BarChart {
    /// Render.
    pub fn svg(&self) -> String {
        let n = self.labels.len().max(1);
        let bar_slot = 68.0;
        let left = 70.0;
        let plot_h = 260.0;
        let plot_w = n as f64 * bar_slot;
        let ref_w = self
            .reference
            .as_ref()
            .map_or(0.0, |(_, l)| 10.0 + 7.0 * l.chars().count() as f64);
        let width = (left + plot_w + 20.0 + ref_w)
            .max(8.5 * self.title.chars().count() as f64 + 24.0)
            .max(460.0);
        // Header, then a legend row, then the plot.
        let legend_y = header_height(&self.subtitle, width) + 10.0;
        let top = legend_y + 22.0;
        let height = top + plot_h + 70.0;
        let y_of = |v: f64| top + plot_h - (v - self.y_min) / (self.y_max - self.y_min) * plot_h;
        let mut s = String::new();
        let _ = write!(
            s,
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width:.0}\" height=\"{height:.0}\" \
             viewBox=\"0 0 {width:.0} {height:.0}\" role=\"img\" aria-label=\"{}\">\
             <rect width=\"100%\" height=\"100%\" fill=\"white\"/>",
            esc(&self.title)
        );
        header(&mut s, &self.title, &self.subtitle, width);
        // Grid and value axis.
        for k in 0..=5 {
            let v = self.y_min + (self.y_max - self.y_min) * k as f64 / 5.0;
            let y = y_of(v);
            let _ = write!(
                s,
                "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#e3e3e3\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" {FONT} fill=\"{INK}\" text-anchor=\"end\">{}</text>",
                left + plot_w,
                left - 6.0,
                y + 4.0,
                fmt_tick(v)
            );
        }
        let cy = top + plot_h / 2.0;
        let _ = write!(
            s,
            "<text x=\"18\" y=\"{cy}\" font-size=\"13\" {FONT} fill=\"{MUTED}\" text-anchor=\"middle\" transform=\"rotate(-90 18 {cy})\">{}</text>",
            esc(&self.y_title)
        );
        let zero = y_of(self.y_min.max(0.0).min(self.y_max));
        for (i, (&v, l)) in self.values.iter().zip(&self.labels).enumerate() {
            let x = left + i as f64 * bar_slot + 10.0;
            let w = bar_slot - 20.0;
            let y = y_of(v.clamp(self.y_min, self.y_max));
            let (y0, h) = if y < zero {
                (y, zero - y)
            } else {
                (zero, y - zero)
            };
            let color = self
                .colors
                .get(i)
                .or(self.colors.first())
                .copied()
                .unwrap_or(Rgb(70, 110, 170));
            // The value inside the bar's end when it fits (dots may sit just above), else outside.
            let inside = h >= 24.0;
            let (ty, ink) = match (y < zero, inside) {
                (true, true) => (
                    y0 + 16.0,
                    if color.luminance() > 0.35 {
                        INK
                    } else {
                        "#fff"
                    },
                ),
                (true, false) => (y0 - 5.0, INK),
                (false, true) => (
                    y0 + h - 7.0,
                    if color.luminance() > 0.35 {
                        INK
                    } else {
                        "#fff"
                    },
                ),
                (false, false) => (y0 + h + 14.0, INK),
            };
            let _ = write!(
                s,
                "<rect x=\"{x:.1}\" y=\"{y0:.1}\" width=\"{w:.1}\" height=\"{h:.1}\" fill=\"{}\"><title>{}: {v:.3}</title></rect>\
                 <text x=\"{:.1}\" y=\"{ty:.1}\" font-size=\"12\" font-weight=\"bold\" {FONT} fill=\"{ink}\" text-anchor=\"middle\">{}</text>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" {FONT} fill=\"{INK}\" text-anchor=\"middle\">{}</text>",
                color.hex(),
                esc(l),
                x + w / 2.0,
                if v.is_finite() {
                    format!("{v:.2}")
                } else {
                    "n/a".into()
                },
                x + w / 2.0,
                top + plot_h + 18.0,
                esc(l)
            );
        }
        if let Some((name, dots)) = &self.dots {
            for (i, &v) in dots.iter().enumerate() {
                let x = left + i as f64 * bar_slot + bar_slot / 2.0;
                let _ = write!(
                    s,
                    "<circle cx=\"{x:.1}\" cy=\"{:.1}\" r=\"4.5\" fill=\"white\" stroke=\"{INK}\" stroke-width=\"1.8\"><title>{}: {v:.3}</title></circle>",
                    y_of(v.clamp(self.y_min, self.y_max)),
                    esc(name)
                );
            }
        }
        if let Some((v, label)) = &self.reference {
            let y = y_of(*v);
            let _ = write!(
                s,
                "<line x1=\"{left}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#c0392b\" stroke-dasharray=\"6 4\" stroke-width=\"1.5\"/>\
                 <text x=\"{:.1}\" y=\"{:.1}\" font-size=\"12\" {FONT} fill=\"#c0392b\">{}</text>",
                left + plot_w,
                left + plot_w + 6.0,
                y + 4.0,
                esc(label)
            );
        }
        let _ = write!(
            s,
            "<line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{:.1}\" stroke=\"{MUTED}\"/>\
             <line x1=\"{left}\" y1=\"{zero:.1}\" x2=\"{:.1}\" y2=\"{zero:.1}\" stroke=\"{MUTED}\"/>",
            top + plot_h,
            left + plot_w
        );
        let _ = write!(
            s,
            "<text x=\"{:.1}\" y=\"{:.1}\" font-size=\"13\" {FONT} fill=\"{MUTED}\" text-anchor=\"middle\">{}</text>",
            left + plot_w / 2.0,
            top + plot_h + 44.0,
            esc(&self.x_title)
        );
        // Legend: bars (and dots).
        let ly = legend_y + 4.0;
        let color = self.colors.first().copied().unwrap_or(Rgb(70, 110, 170));
        let _ = write!(
            s,
            "<rect x=\"{left}\" y=\"{:.1}\" width=\"12\" height=\"12\" fill=\"{}\"/>\
             <text x=\"{:.1}\" y=\"{ly:.1}\" font-size=\"12\" {FONT} fill=\"{INK}\">{}</text>",
            ly - 10.0,
            color.hex(),
            left + 17.0,
            esc(&self.series)
        );
        if let Some((name, _)) = &self.dots {
            let lx = left + 30.0 + 7.0 * self.series.chars().count() as f64;
            let _ = write!(
                s,
                "<circle cx=\"{lx:.1}\" cy=\"{:.1}\" r=\"4.5\" fill=\"white\" stroke=\"{INK}\" stroke-width=\"1.8\"/>\
                 <text x=\"{:.1}\" y=\"{ly:.1}\" font-size=\"12\" {FONT} fill=\"{INK}\">{}</text>",
                ly - 4.0,
                lx + 9.0,
                esc(name)
            );
        }
        s.push_str("</svg>\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scales_hit_their_ends_and_middle() {
        let d = ColorScale::diverging(1.0, "x");
        assert_eq!(d.color(-1.0), d.stops[0]);
        assert_eq!(d.color(1.0), *d.stops.last().unwrap());
        assert_eq!(d.color(0.0), Rgb(247, 247, 247));
        assert_eq!(d.color(5.0), *d.stops.last().unwrap(), "clamped");
    }

    #[test]
    fn charts_are_well_formed_svg() {
        let h = Heatmap {
            title: "t <&>".into(),
            subtitle: String::new(),
            row_labels: vec!["a".into(), "b".into()],
            col_labels: vec!["x".into(), "y".into(), "z".into()],
            row_title: "rows".into(),
            col_title: "cols".into(),
            panels: vec![Panel {
                title: "p".into(),
                values: vec![vec![0.0, 0.5, 1.0], vec![f64::NAN, 0.2, 0.3]],
            }],
            scale: ColorScale::sequential(0.0, 1.0, "v"),
            cell: 30.0,
            annotate: true,
            highlight: vec![(0, 1, 2)],
        }
        .svg("h");
        assert!(h.starts_with("<svg") && h.trim_end().ends_with("</svg>"));
        assert!(h.contains("t &lt;&amp;&gt;"));
        assert_eq!(
            h.matches("<rect x=").count() - 1,
            6 + 1 + 1,
            "6 cells, outline, highlight (+legend)"
        );
        let b = BarChart {
            title: "b".into(),
            subtitle: "s".into(),
            labels: vec!["1".into(), "2".into()],
            values: vec![0.5, 1.0],
            dots: Some(("train".into(), vec![0.6, 1.0])),
            colors: vec![Rgb(1, 2, 3)],
            series: "test".into(),
            y_title: "acc".into(),
            x_title: "layer".into(),
            y_min: 0.0,
            y_max: 1.0,
            reference: Some((0.5, "chance".into())),
        }
        .svg();
        assert!(b.contains("chance") && b.contains("#010203"));
    }
}
