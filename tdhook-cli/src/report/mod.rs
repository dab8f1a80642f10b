//! The tour's report: SVG charts ([`svg`]) and one self-contained HTML page ([`Page`]).

pub mod svg;

use std::fmt::Write;
use svg::esc;

/// A self-contained HTML page: sections of prose, tables and inline SVG, no scripts, no network.
#[derive(Clone, Debug, Default)]
pub struct Page {
    title: String,
    body: String,
}

impl Page {
    /// A page with a title (also its first heading).
    pub fn new(title: &str) -> Self {
        Self {
            title: title.into(),
            body: String::new(),
        }
    }

    /// A section heading.
    pub fn heading(&mut self, text: &str) -> &mut Self {
        let _ = writeln!(self.body, "<h2>{}</h2>", esc(text));
        self
    }

    /// A paragraph; `html` is inserted as is (use [`esc`] on untrusted text).
    pub fn para_html(&mut self, html: &str) -> &mut Self {
        let _ = writeln!(self.body, "<p>{html}</p>");
        self
    }

    /// A paragraph of plain text.
    pub fn para(&mut self, text: &str) -> &mut Self {
        self.para_html(&esc(text))
    }

    /// An inline SVG figure with a caption.
    pub fn figure(&mut self, svg: &str, caption: &str) -> &mut Self {
        let _ = writeln!(
            self.body,
            "<figure>{svg}<figcaption>{}</figcaption></figure>",
            esc(caption)
        );
        self
    }

    /// A table; the first column is a header column.
    pub fn table(&mut self, header: &[&str], rows: &[Vec<String>]) -> &mut Self {
        self.body.push_str("<table><thead><tr>");
        for h in header {
            let _ = write!(self.body, "<th>{}</th>", esc(h));
        }
        self.body.push_str("</tr></thead><tbody>");
        for row in rows {
            self.body.push_str("<tr>");
            for (i, cell) in row.iter().enumerate() {
                let tag = if i == 0 { "th" } else { "td" };
                let _ = write!(self.body, "<{tag}>{}</{tag}>", esc(cell));
            }
            self.body.push_str("</tr>");
        }
        self.body.push_str("</tbody></table>\n");
        self
    }

    /// Raw HTML.
    pub fn raw(&mut self, html: &str) -> &mut Self {
        self.body.push_str(html);
        self
    }

    /// The whole document.
    pub fn html(&self) -> String {
        format!(
            "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
             <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
             <title>{title}</title><style>{STYLE}</style></head>\n<body><main>\n<h1>{title}</h1>\n{body}</main></body></html>\n",
            title = esc(&self.title),
            body = self.body
        )
    }
}

const STYLE: &str = "\
body{margin:0;background:#f6f6f4;color:#222;font:15px/1.5 Helvetica,Arial,sans-serif}\
main{max-width:1180px;margin:0 auto;padding:24px 32px 64px;background:#fff}\
h1{font-size:28px;margin:8px 0 4px}h2{font-size:21px;margin:36px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}\
p{max-width:900px}code{background:#f0f0ee;padding:1px 4px;border-radius:3px;font-size:13px}\
figure{margin:14px 0 22px}figure svg{max-width:100%;height:auto}figcaption{color:#555;font-size:13px;max-width:900px}\
table{border-collapse:collapse;margin:10px 0 18px;font-size:14px}\
th,td{border:1px solid #ddd;padding:5px 10px;text-align:left;vertical-align:top}\
thead th{background:#f0f0ee}tbody th{font-weight:normal;color:#333}\
.gen{font-family:Menlo,Consolas,monospace;font-size:13px}.pos{color:#b2182b;font-weight:bold}.neg{color:#2166ac;font-weight:bold}";
