//! A run's page, report.html: summary, curves, the confusion matrix as a heatmap,
//! per-class figures, the most confident mistakes and the architecture diagram.

use super::*;

/// A colour from white to blue for a share in [0, 1].
fn heat(share: f64) -> String {
    let s = share.clamp(0.0, 1.0).sqrt();
    let mix = |a: f64, b: f64| (a + (b - a) * s).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(255.0, 8.0),
        mix(255.0, 81.0),
        mix(255.0, 156.0)
    )
}

fn confusion_html(t: &TestReport) -> String {
    let mut s = String::from(
        "<table class=\"heat\" data-part=\"confusion\"><tr><th class=\"l\">true \\ predicted</th>",
    );
    for c in &t.classes {
        let _ = write!(s, "<th>{}</th>", esc(c));
    }
    s.push_str("</tr>\n");
    for (r, row) in t.confusion.iter().enumerate() {
        let total: usize = row.iter().sum::<usize>().max(1);
        let _ = write!(s, "<tr><th class=\"l\">{}</th>", esc(&t.classes[r]));
        for &n in row {
            let share = n as f64 / total as f64;
            let fg = if share > 0.45 { "#fff" } else { "#222" };
            let _ = write!(
                s,
                "<td style=\"background:{};color:{fg}\" title=\"{n} of {total}\">{n}</td>",
                heat(share)
            );
        }
        s.push_str("</tr>\n");
    }
    s.push_str("</table>\n");
    s
}

fn per_class_html(t: &TestReport) -> String {
    let mut s = String::from(
        "<table><tr><th class=\"l\">class</th><th>images</th><th>precision</th><th>recall</th><th>F1</th></tr>\n",
    );
    for c in &t.per_class {
        let _ = writeln!(
            s,
            "<tr><td class=\"l\">{}</td><td>{}</td><td>{:.3}</td><td>{:.3}</td><td>{:.3}</td></tr>",
            esc(&c.class),
            c.support,
            c.precision,
            c.recall,
            c.f1
        );
    }
    s.push_str("</table>\n");
    s
}

fn mistakes_html(t: &TestReport) -> String {
    if t.mistakes.is_empty() {
        return "<p class=\"note\">No mistakes on the test set.</p>\n".into();
    }
    let mut s = String::from("<div class=\"gallery\" data-part=\"mistakes\">\n");
    for m in &t.mistakes {
        let _ = writeln!(
            s,
            "<figure><img alt=\"test image {}\" src=\"{}\"><figcaption>#{}: <b>{}</b> taken for <b>{}</b> ({:.1} %)</figcaption></figure>",
            m.index,
            html::png_data_uri(&html::gray_png(&m.pixels, 28)),
            m.index,
            esc(t.classes.get(m.label).map_or("?", |c| c)),
            esc(t.classes.get(m.predicted).map_or("?", |c| c)),
            m.probability * 100.0
        );
    }
    s.push_str("</div>\n");
    s
}

/// The run's page (report.html).
pub fn run_page(run: &RunFolder) -> Result<String, ReportError> {
    let c = &run.config;
    let h = &run.history;
    let mut b = String::new();
    let _ = writeln!(
        b,
        "<h1>{} <span class=\"sub\">({})</span></h1>",
        esc(&run.name),
        esc(&run.model_label())
    );
    let adapter = run
        .summary("adapter")
        .and_then(|v| v.as_str())
        .unwrap_or("unknown adapter");
    let _ = writeln!(
        b,
        "<p class=\"sub\">last written {} · {}</p>",
        esc(&run.updated),
        esc(adapter)
    );
    let best = h.best_epoch();
    let mut rows: Vec<(&str, String)> = vec![
        ("model", run.model_label()),
        ("spec", c.spec.clone()),
        (
            "data",
            run.summary("data")
                .and_then(|v| v.as_str())
                .map(str::to_string)
                .or_else(|| c.data.as_ref().map(|d| d.display().to_string()))
                .unwrap_or_else(|| "found automatically".into()),
        ),
        ("adapter", adapter.to_string()),
        ("epochs", format!("{} of {}", h.epochs.len(), c.epochs)),
        ("wall time", format!("{:.1} s", run.wall_seconds())),
    ];
    if let Some(ips) = run.images_per_second() {
        rows.push(("training speed", format!("{ips:.0} images/s")));
    }
    let milestones: Vec<f64> = crate::train::milestones::MILESTONES
        .into_iter()
        .chain(
            c.target_accuracy
                .filter(|t| !crate::train::milestones::MILESTONES.contains(t)),
        )
        .collect();
    let reached: Vec<String> = h
        .time_to_accuracy(&milestones)
        .into_iter()
        .map(|(m, s)| format!("{m} %: {}", s.map_or("–".into(), |s| format!("{s:.1} s"))))
        .collect();
    rows.push(("training time to val accuracy", reached.join(" · ")));
    if let Some(e) = best {
        rows.push((
            "best epoch",
            format!(
                "{} (validation accuracy {})",
                e.epoch,
                pct(e.val_accuracy.unwrap_or(0.0))
            ),
        ));
    }
    match (&run.test, run.test_accuracy()) {
        (Some(t), _) => rows.push((
            "test set",
            format!(
                "accuracy {}, loss {:.4} ({} images)",
                pct(t.accuracy),
                t.loss,
                t.count
            ),
        )),
        (None, Some(a)) => rows.push(("test accuracy", pct(a))),
        (None, None) => rows.push((
            "test set",
            "not evaluated yet (the run has not finished)".into(),
        )),
    }
    rows.push(("regularization", run.regularization()));
    rows.push(("augmentation", run.augmentation()));
    let weights = c.ema.map_or("the trained weights".to_string(), |d| {
        format!("their moving average (--ema {d})")
    });
    let views = match c.tta {
        crate::train::config::Tta::Flip => ", each image and its mirror (--tta flip)",
        crate::train::config::Tta::None => "",
    };
    rows.push(("evaluation", format!("{weights}{views}")));
    rows.push(("run folder", run.dir.display().to_string()));
    b.push_str("<h2>Overview</h2>\n");
    b.push_str(&html::key_values(&rows));

    b.push_str("<h2>Learning curves</h2>\n<div data-part=\"curves\">\n");
    let chart = curves::svg(h, &format!("{} ({})", c.model, run.name), (1200, 480))
        .map_err(ReportError::Draw)?;
    b.push_str(&chart);
    b.push_str("</div>\n");

    if let Some(t) = &run.test {
        let _ = writeln!(
            b,
            "<h2>Test set: {} of {} correct</h2>",
            pct(t.accuracy),
            t.count
        );
        b.push_str("<div class=\"cols\"><div>\n<h3>Confusion matrix</h3>\n");
        b.push_str(&confusion_html(t));
        b.push_str("</div><div>\n<h3>Per class</h3>\n");
        b.push_str(&per_class_html(t));
        b.push_str("</div></div>\n");
        let _ = writeln!(
            b,
            "<h2>The {} most confident mistakes</h2>",
            t.mistakes.len()
        );
        b.push_str(&mistakes_html(t));
    }

    b.push_str("<h2>Architecture</h2>\n<div data-part=\"diagram\">\n");
    b.push_str(&diagram::svg(&run.spec));
    b.push_str("</div>\n");

    b.push_str("<h2>Configuration</h2>\n");
    let table: toml::Table = toml::from_str(&c.to_toml()).unwrap_or_default();
    let cfg_rows: Vec<(&str, String)> = table
        .iter()
        .map(|(k, v)| {
            (
                k.as_str(),
                v.as_str().map_or_else(|| v.to_string(), str::to_string),
            )
        })
        .collect();
    b.push_str(&html::key_values(&cfg_rows));
    Ok(html::page(
        &format!("{} — wgpu-fmnist run report", run.name),
        &b,
    ))
}
