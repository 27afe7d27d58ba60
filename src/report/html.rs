//! HTML building blocks: escaping (every piece of user text goes through `esc`), the page
//! shell with its inline stylesheet, and PNG data URIs. Pages are self-contained: no
//! scripts or fonts are fetched from anywhere.

use std::fmt::Write;

/// Escapes text for HTML content and attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body { font-family: system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; margin: 24px auto; max-width: 1240px; color: #222; padding: 0 16px; }
h1 { font-size: 26px; margin-bottom: 4px; } h2 { font-size: 20px; margin-top: 32px; border-bottom: 1px solid #ddd; padding-bottom: 4px; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; font-size: 14px; }
td, th { padding: 4px 10px; border-bottom: 1px solid #eee; text-align: right; }
table[data-part="runs"] td.l { max-width: 230px; overflow-wrap: anywhere; }
table[data-part="runs"] td:not(.l) { white-space: nowrap; }
th { background: #f6f6f6; } td.l, th.l { text-align: left; }
.kv td:first-child { text-align: left; color: #555; } .kv td:last-child { text-align: left; font-family: ui-monospace, "DejaVu Sans Mono", monospace; }
.cols { display: flex; flex-wrap: wrap; gap: 32px; align-items: flex-start; }
.heat td { width: 46px; height: 30px; text-align: center; border: 1px solid #fff; }
.heat th { font-weight: normal; font-size: 12px; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; }
.gallery figure { margin: 0; width: 112px; text-align: center; font-size: 12px; }
.gallery img { width: 112px; height: 112px; image-rendering: pixelated; border: 1px solid #ccc; }
.note { color: #777; font-style: italic; }
svg text { font-family: "DejaVu Sans", sans-serif; }
"#;

/// A whole page. The inline script only measures what rendered (the curves, the diagram,
/// the heatmap) into `body[data-rendered]`, which the browser test reads back.
pub fn page(title: &str, body: &str) -> String {
    let mut out = String::new();
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n{CHECK}\n</body>\n</html>\n",
        esc(title)
    );
    out
}

const CHECK: &str = r#"<script>
window.addEventListener("load", () => {
  const seen = [];
  for (const el of document.querySelectorAll("[data-part]")) {
    const r = el.getBoundingClientRect();
    const marks = el.querySelectorAll("path, polyline, rect, line, circle, td, img").length;
    if (r.width > 50 && r.height > 50 && marks > 5) seen.push(el.dataset.part);
  }
  document.body.dataset.rendered = seen.join(" ");
});
</script>"#;

/// A PNG as a `data:` URI for an `<img src>`.
pub fn png_data_uri(png: &[u8]) -> String {
    format!("data:image/png;base64,{}", base64(png))
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// A 28x28 grayscale image as PNG bytes.
pub fn gray_png(pixels: &[u8], side: u32) -> Vec<u8> {
    let mut out = Vec::new();
    if let Some(img) = image::GrayImage::from_raw(side, side, pixels.to_vec()) {
        let _ = img.write_to(&mut std::io::Cursor::new(&mut out), image::ImageFormat::Png);
    }
    out
}

/// A two-column table of names and values.
pub fn key_values(rows: &[(&str, String)]) -> String {
    let mut out = String::from("<table class=\"kv\">\n");
    for (k, v) in rows {
        let _ = writeln!(out, "<tr><td>{}</td><td>{}</td></tr>", esc(k), esc(v));
    }
    out.push_str("</table>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_text_is_escaped_and_base64_is_standard() {
        assert_eq!(
            esc("<script>\"a\" & 'b'</script>"),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
