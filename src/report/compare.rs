//! The comparison page of several runs: a row per run, their validation curves overlaid
//! and per-class test accuracy side by side.

use super::*;

/// The comparison page of several runs.
pub fn compare_page(runs: &[RunFolder]) -> Result<String, ReportError> {
    let mut b = String::from("<h1>Run comparison</h1>\n");
    let _ = writeln!(
        b,
        "<p class=\"sub\">{} runs · written {}</p>",
        runs.len(),
        utc_text(std::time::SystemTime::now())
    );
    b.push_str(
        "<table data-part=\"runs\"><tr><th class=\"l\">run</th><th class=\"l\">model</th><th class=\"l\">optimizer, lr</th>\
         <th class=\"l\">regularization</th><th class=\"l\">augmentation</th><th>epochs</th><th>best val</th>\
         <th>test accuracy</th><th>images/s</th><th title=\"training seconds until validation first reached 90, 91, 92, 93 and 94 %\">s to 90/91/92/93/94 %</th><th>time</th></tr>\n",
    );
    for r in runs {
        let best = r
            .history
            .best_epoch()
            .and_then(|e| e.val_accuracy)
            .map_or("–".into(), pct);
        let _ = writeln!(
            b,
            "<tr><td class=\"l\">{}</td><td class=\"l\" title=\"{}\">{}</td><td class=\"l\">{} {}</td><td class=\"l\">{}</td><td class=\"l\">{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0} s</td></tr>",
            esc(&r.name),
            esc(&r.config.spec),
            esc(&r.model_label()),
            r.config.optimizer,
            r.config.lr,
            esc(&r.regularization()),
            esc(&r.augmentation()),
            r.history.epochs.len(),
            best,
            r.test_accuracy().map_or("–".into(), pct),
            r.images_per_second().map_or("–".into(), |v| format!("{v:.0}")),
            r.history
                .time_to_accuracy(&crate::train::milestones::MILESTONES)
                .iter()
                .map(|(_, s)| s.map_or("–".into(), |s| format!("{s:.0}")))
                .collect::<Vec<_>>()
                .join(" / "),
            r.wall_seconds()
        );
    }
    b.push_str("</table>\n<h2>Validation curves</h2>\n<div data-part=\"curves\">\n");
    let named: Vec<(&str, &History)> = runs.iter().map(|r| (r.name.as_str(), &r.history)).collect();
    b.push_str(&curves::compare_svg(&named, (1200, 480)).map_err(ReportError::Draw)?);
    b.push_str("</div>\n<h2>Per-class test accuracy</h2>\n");
    let with_test: Vec<&RunFolder> = runs.iter().filter(|r| r.test.is_some()).collect();
    if with_test.is_empty() {
        b.push_str(
            "<p class=\"note\">None of these runs has a test evaluation (test.json) yet.</p>\n",
        );
    } else {
        b.push_str("<table data-part=\"per-class\"><tr><th class=\"l\">class</th>");
        for r in &with_test {
            let _ = write!(b, "<th>{}</th>", esc(&r.name));
        }
        b.push_str("</tr>\n");
        let classes = with_test[0]
            .test
            .as_ref()
            .map(|t| t.classes.clone())
            .unwrap_or_default();
        for (i, class) in classes.iter().enumerate() {
            let _ = write!(b, "<tr><td class=\"l\">{}</td>", esc(class));
            let values: Vec<Option<f64>> = with_test
                .iter()
                .map(|r| {
                    r.test
                        .as_ref()
                        .and_then(|t| t.per_class.get(i))
                        .map(|c| c.recall)
                })
                .collect();
            let top = values.iter().flatten().copied().fold(f64::MIN, f64::max);
            for v in values {
                match v {
                    Some(v) if v == top && with_test.len() > 1 => {
                        let _ = write!(b, "<td><b>{}</b></td>", pct(v));
                    }
                    Some(v) => {
                        let _ = write!(b, "<td>{}</td>", pct(v));
                    }
                    None => b.push_str("<td>–</td>"),
                }
            }
            b.push_str("</tr>\n");
        }
        b.push_str("</table>\n");
    }
    Ok(html::page("wgpu-fmnist run comparison", &b))
}
