//! What `check` prints: one line per model, variant and batch, and the summary.

use std::io::{Result, Write};

/// One `check` line: pass or FAIL, what was checked, the worst error over the tolerance.
pub fn check_line(w: &mut dyn Write, line: &crate::check::Line, json: bool) -> Result<()> {
    if json {
        return writeln!(w, "{}", serde_json::to_string(line).unwrap_or_default());
    }
    let worst = line
        .worst_of_tolerance
        .map_or("-".to_string(), |x| format!("{x:.2}"));
    let batch = match line.batch {
        0 => String::new(),
        b => format!(" batch {b}"),
    };
    writeln!(
        w,
        "{:<4} {:<52} {:<8}{:<9} worst {:>5} of tolerance {:>6.2} s",
        if line.passed { "ok" } else { "FAIL" },
        line.case,
        line.variant,
        batch,
        worst,
        line.seconds
    )?;
    if let Some(why) = &line.failure {
        writeln!(w, "       {}: {why}", line.model)?;
    }
    Ok(())
}

pub fn check_summary(w: &mut dyn Write, s: &crate::check::Summary, json: bool) -> Result<()> {
    if json {
        let mut v = serde_json::to_value(s).unwrap_or_default();
        v["kind"] = "summary".into();
        return writeln!(w, "{v}");
    }
    writeln!(
        w,
        "{} checks, {} failed, on {} ({:.1} s)",
        s.lines, s.failed, s.adapter, s.seconds
    )
}
